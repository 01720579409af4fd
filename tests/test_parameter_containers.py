"""Parameters kept in any container learners use (lists, tuples, read-only mappings, nested dicts,
lists beside lists of gradients, scalars) are found, checked and put back; none is skipped
without a row saying why."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check


def affine_values(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 3)), rng.normal(size=3)


def x_batch() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(5, 4))


class ListParams:
    """params = [W, b], grads = [dW, db]: matched by position."""

    def __init__(self, wrong_b: bool = False, container: type = list) -> None:
        w, b = affine_values()
        self.params = container([w, b])
        self.grads: Any = container([np.zeros_like(w), np.zeros_like(b)])
        self.wrong_b = wrong_b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        w, b = self.params
        out: np.ndarray = x @ w + b
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        w, _ = self.params
        db = dout.mean(axis=0) if self.wrong_b else dout.sum(axis=0)
        self.grads = type(self.params)([self.x.T @ dout, db])
        dx: np.ndarray = dout @ w.T
        return dx


class ProxyParams(ListParams):
    """params a read-only mapping over the layer's own dict."""

    def __init__(self, wrong_b: bool = False) -> None:
        w, b = affine_values()
        self._store = {"W": w, "b": b}
        self.params = MappingProxyType(self._store)
        self.grads = {}
        self.wrong_b = wrong_b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        db = dout.mean(axis=0) if self.wrong_b else dout.sum(axis=0)
        self.grads = {"W": self.x.T @ dout, "b": db}
        dx: np.ndarray = dout @ self.params["W"].T
        return dx


class NestedParams:
    """Two affine layers' parameters in one nested dict; gradients keyed d<name>."""

    def __init__(self, wrong_b: bool = False) -> None:
        w1, b1 = affine_values(0)
        w2, b2 = affine_values(1)
        self.params = {"layer1": {"W": w1, "b": b1}, "layer2": {"W": w2[:3], "b": b2}}
        self.grads: dict[str, Any] = {}
        self.wrong_b = wrong_b

    def forward(self, x: np.ndarray) -> np.ndarray:
        p1, p2 = self.params["layer1"], self.params["layer2"]
        self.x = x
        self.h = x @ p1["W"] + p1["b"]
        out: np.ndarray = self.h @ p2["W"] + p2["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p1, p2 = self.params["layer1"], self.params["layer2"]
        dh = dout @ p2["W"].T
        db2 = dout.mean(axis=0) if self.wrong_b else dout.sum(axis=0)
        self.grads = {"layer1": {"dW": self.x.T @ dh, "db": dh.sum(axis=0)},
                      "layer2": {"dW": self.h.T @ dout, "db": db2}}
        dx: np.ndarray = dh @ p1["W"].T
        return dx


class WeightLists:
    """weights and biases lists beside dweights and dbiases lists (one hidden layer)."""

    def __init__(self, wrong_b: bool = False) -> None:
        w1, b1 = affine_values(0)
        w2, b2 = affine_values(1)
        self.weights, self.biases = [w1, w2[:3]], [b1, b2]
        self.dweights = [np.zeros_like(w) for w in self.weights]
        self.dbiases = [np.zeros_like(b) for b in self.biases]
        self.wrong_b = wrong_b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.h = x @ self.weights[0] + self.biases[0]
        out: np.ndarray = self.h @ self.weights[1] + self.biases[1]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dh = dout @ self.weights[1].T
        self.dweights = [self.x.T @ dh, self.h.T @ dout]
        self.dbiases = [dh.sum(axis=0), dout.mean(axis=0) if self.wrong_b else dout.sum(axis=0)]
        dx: np.ndarray = dh @ self.weights[0].T
        return dx


class PReLU:
    """max(x, 0) + alpha * min(x, 0) with alpha a float scalar beside its gradient dalpha."""

    def __init__(self, alpha: Any = 0.25, wrong: bool = False) -> None:
        self.alpha = alpha
        self.dalpha = 0.0
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = np.maximum(x, 0.0) + self.alpha * np.minimum(x, 0.0)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        neg = np.minimum(self.x, 0.0)
        self.dalpha = float((dout * neg).sum()) * (1.5 if self.wrong else 1.0)
        dx: np.ndarray = dout * np.where(self.x > 0, 1.0, self.alpha)
        return dx


class DictScalar:
    """params holds an array and a float scalar with gradients under the same keys."""

    def __init__(self, wrong: bool = False) -> None:
        w, _ = affine_values()
        self.params: dict[str, Any] = {"W": w, "scale": 1.5}
        self.grads: dict[str, Any] = {}
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.z = x @ self.params["W"]
        out: np.ndarray = self.params["scale"] * self.z
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        s = self.params["scale"]
        dscale = float((dout * self.z).sum()) * (1.1 if self.wrong else 1.0)
        self.grads = {"W": s * self.x.T @ dout, "scale": dscale}
        dx: np.ndarray = s * dout @ self.params["W"].T
        return dx


CASES: dict[str, tuple[Callable[..., Any], str, set[str]]] = {
    # name: (layer factory taking wrong=..., the row that fails, every row expected)
    "list": (lambda wrong: ListParams(wrong), "params[1]", {"x", "params[0]", "params[1]"}),
    "tuple": (lambda wrong: ListParams(wrong, tuple), "params[1]",
              {"x", "params[0]", "params[1]"}),
    "mapping proxy": (lambda wrong: ProxyParams(wrong), "b", {"x", "W", "b"}),
    "nested dict": (lambda wrong: NestedParams(wrong), "layer2.b",
                    {"x", "layer1.W", "layer1.b", "layer2.W", "layer2.b"}),
    "attribute lists": (lambda wrong: WeightLists(wrong), "biases[1]",
                        {"x", "weights[0]", "weights[1]", "biases[0]", "biases[1]"}),
    "Python float": (lambda wrong: PReLU(0.25, wrong), "alpha", {"x", "alpha"}),
    "numpy float": (lambda wrong: PReLU(np.float64(0.25), wrong), "alpha", {"x", "alpha"}),
    "float in a dict": (lambda wrong: DictScalar(wrong), "scale", {"x", "W", "scale"}),
}


def canonical(value: Any) -> Any:
    """A value as nested tuples of types, keys and bytes: equal exactly when the bits are."""
    if isinstance(value, (dict, MappingProxyType)):
        return (type(value).__name__, tuple((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canonical(v) for v in value))
    if isinstance(value, np.ndarray):
        return ("ndarray", str(value.dtype), value.shape, value.tobytes())
    return (type(value).__name__, pickle.dumps(value))


def state(layer: Any) -> Any:
    """Everything the layer holds, values and types."""
    return canonical(vars(layer))


@pytest.mark.parametrize("kind", CASES)
@pytest.mark.parametrize("mode", ["auto", "full", "fast"])
def test_every_container_kind_is_checked_and_put_back(kind: str, mode: str) -> None:
    make, wrong_row, rows = CASES[kind]
    x = x_batch()
    right = make(False)
    x_before = x.copy()
    right.forward(x)  # caches as a user's notebook would leave them
    before = state(right)
    containers = {k: v for k, v in vars(right).items() if isinstance(v, (list, tuple, dict))}
    result = check(right, x, mode=mode)
    assert result.ok, str(result)
    assert {e.name for e in result.entries} == rows, str(result)
    assert all(e.status == "ok" for e in result.entries), str(result)
    assert state(right) == before
    assert all(getattr(right, k) is v for k, v in containers.items())
    assert x.tobytes() == x_before.tobytes()
    wrong = check(make(True), x, mode=mode)
    assert not wrong.ok
    assert [e.name for e in wrong.entries if e.status == "FAIL"] == [wrong_row], str(wrong)


def test_a_scalar_is_perturbed_where_it_lives_and_comes_back_as_the_same_object() -> None:
    alpha = 0.25
    layer = PReLU(alpha)
    result = check(layer, x_batch())
    assert result.ok and result.entry("alpha").dtype == "float", str(result)
    assert type(layer.alpha) is float and layer.alpha is alpha
    assert any("scalar parameters were checked as 0-d float64 arrays" in n for n in result.notes)


class Hyper(ListParams):
    """A layer with hyperparameters beside its parameters: floats without a gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.lr, self.momentum, self.eps = 0.01, 0.9, 1e-5


def test_float_attributes_without_a_gradient_are_hyperparameters_not_rows() -> None:
    result = check(Hyper(), x_batch())
    assert result.ok
    assert {e.name for e in result.entries} == {"x", "params[0]", "params[1]"}


class PrefilledSome:
    """grads prefilled with W only, and backward writes W only: b has no gradient."""

    def __init__(self) -> None:
        w, b = affine_values()
        self.params = {"W": w, "b": b}
        self.grads = {"W": np.zeros_like(w)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.x.T @ dout
        dx: np.ndarray = dout @ self.params["W"].T
        return dx


def test_a_parameter_the_prefilled_gradients_leave_out_is_an_error_row() -> None:
    result = check(PrefilledSome(), x_batch())
    assert not result.ok
    assert result.entry("b").status == "error", str(result)
    assert "no gradient after backward" in (result.entry("b").message or "")


def test_a_parameter_left_out_with_params_is_listed_as_not_selected() -> None:
    result = check(PrefilledSome(), x_batch(), params=["W"])
    assert result.ok and result.entry("b").status == "not selected"


class ObjectParam(ListParams):
    def __init__(self) -> None:
        super().__init__()
        self.params = [self.params[0], np.array([1.0, 2.0, 3.0], dtype=object)]


def test_an_object_array_parameter_is_refused_by_name() -> None:
    with pytest.raises(GradcheckUsageError, match=r"parameter 'params\[1\]'.*object array"):
        check(ObjectParam(), x_batch())


def test_an_object_array_input_is_refused_by_name() -> None:
    x = x_batch().astype(object)
    with pytest.raises(GradcheckUsageError, match="input 'x' is an object array"):
        check(ListParams(), x)


class TupleScalar(ListParams):
    """A scalar inside a tuple cannot be rebound where it lives."""

    def __init__(self) -> None:
        super().__init__(container=tuple)
        self.params = (*self.params, 2.0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        w, b, s = self.params
        out: np.ndarray = s * (x @ w + b)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        w, _, s = self.params
        self.grads = (s * self.x.T @ dout, s * dout.sum(axis=0), 0.0)
        dx: np.ndarray = s * dout @ w.T
        return dx


def test_a_scalar_in_a_tuple_is_refused_with_what_to_do() -> None:
    layer = TupleScalar()
    before = copy.deepcopy(layer.params)
    with pytest.raises(GradcheckUsageError, match=r"'params\[2\]' is a float held where it cannot"):
        check(layer, x_batch())
    assert layer.params[2] == before[2] and layer.params[0].tobytes() == before[0].tobytes()


def float_leaves(node: Any) -> int:
    if isinstance(node, (dict, MappingProxyType)):
        return sum(float_leaves(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(float_leaves(v) for v in node)
    return int(isinstance(node, (np.ndarray, float)))


def test_no_float_array_reachable_from_a_parameter_container_is_missing_from_the_table() -> None:
    for kind, (make, _, _) in CASES.items():
        layer = make(False)
        held = sum(float_leaves(getattr(layer, a)) for a in ("params", "weights", "biases", "alpha")
                   if hasattr(layer, a))
        rows = [e.name for e in check(layer, x_batch()).entries if e.kind == "param"]
        assert len(rows) == held, (kind, rows)
