"""Weights that live outside the call (module globals, closure cells, dicts, lists, objects),
pointed at with `params=`: perturbed where they live, and put back (the very same object, the
same bits) after a pass, a failure and a raise; min-char-rnn's `lossFun` checked as written."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import charrnn_style as rnn
import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check

MODES = ["full", "fast", "sample", "auto"]
RNN_NAMES = ["Wxh", "Whh", "Why", "bh", "by"]
INPUTS, TARGETS = [0, 1, 2, 3, 1], [1, 2, 3, 0, 2]


def bound(places: list[tuple[Any, Any]]) -> list[tuple[Any, Any, bytes]]:
    """What each place holds now: the object and its bits."""
    out = []
    for container, key in places:
        value = read(container, key)
        out.append((value, value, np.asarray(value).tobytes()))
    return out


def read(container: Any, key: Any) -> Any:
    if isinstance(container, types.FunctionType):
        names = container.__code__.co_freevars
        if key in names and container.__closure__ is not None:
            return container.__closure__[names.index(key)].cell_contents
        return container.__globals__[key]
    if isinstance(container, (dict, list)):
        return container[key]
    return getattr(container, key)


def assert_restored(places: list[tuple[Any, Any]], before: list[tuple[Any, Any, bytes]]) -> None:
    for (container, key), (obj, _, bits) in zip(places, before):
        now = read(container, key)
        assert now is obj, f"{key!r} rebound"
        assert np.asarray(now).tobytes() == bits, f"{key!r} changed"
        if isinstance(obj, np.ndarray):
            assert np.array_equal(now, obj)


@pytest.mark.parametrize("mode", MODES)
def test_min_char_rnn_loss_fun_over_module_globals(mode: str) -> None:
    hprev = np.full((rnn.hidden_size, 1), 0.1)
    places = [(rnn, n) for n in RNN_NAMES]
    before = bound(places)
    result = check(rnn.lossFun, INPUTS, TARGETS, hprev, params={n: (rnn, n) for n in RNN_NAMES},
                   mode=mode)
    assert result.ok, str(result)
    assert [e.name for e in result.entries if e.kind == "param"] == RNN_NAMES
    assert result.entry("hprev").status == "not differentiated"
    assert any("position 6" in n and "left out of the check" in n for n in result.notes)
    assert_restored(places, before)
    failed = check(rnn.lossFun_wrong, INPUTS, TARGETS, hprev, params=places, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["by"], str(failed)
    assert_restored(places, before)


def make_closure(dtype: Any, slip: float) -> tuple[Callable[..., Any], list[tuple[Any, str]]]:
    """A loss over weights held in closure cells (float32 ones are checked on float64 copies
    put in the cell, and the float32 array put back)."""
    rng = np.random.default_rng(5)
    W = rng.normal(size=(3, 2)).astype(dtype)
    b = rng.normal(size=2).astype(dtype)

    def loss(X: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        r = X @ W + b
        return float(0.5 * np.sum(r**2)), X.T @ r, r.sum(axis=0) * slip

    return loss, [(loss, "W"), (loss, "b")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", MODES)
def test_closure_cells(mode: str, dtype: Any) -> None:
    X = np.random.default_rng(0).normal(size=(4, 3))
    for slip, bad in ((1.0, []), (1.02, ["b"])):
        loss, places = make_closure(dtype, slip)
        before = bound(places)
        result = check(loss, X, params=places, mode=mode)
        assert [e.name for e in result.entries if not e.ok] == bad, str(result)
        assert [e.status for e in result.entries if e.kind == "param"] == [
            "ok", "ok" if not bad else "FAIL"]
        assert_restored(places, before)


class Holder:
    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        self.W, self.b = W, b


def container_cases() -> dict[str, Callable[[np.ndarray, np.ndarray], list[tuple[Any, Any]]]]:
    return {
        "dict": lambda W, b: [({"W": W, "b": b}, "W"), ({"W": W, "b": b}, "b")],
        "list": lambda W, b: [([W, b], 0), ([W, b], 1)],
        "object": lambda W, b: [(Holder(W, b), "W"), (Holder(W, b), "b")],
    }


@pytest.mark.parametrize("kind", sorted(container_cases()))
@pytest.mark.parametrize("mode", MODES)
def test_any_container(mode: str, kind: str) -> None:
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    places = container_cases()[kind](W, b)
    places = [(places[0][0], places[0][1]), (places[0][0], places[1][1])]  # one container
    X = rng.normal(size=(4, 3))

    def make(slip: float) -> Callable[..., Any]:
        def loss(X: np.ndarray) -> Any:
            w, c = (read(*p) for p in places)
            r = X @ w + c
            return 0.5 * np.sum(r**2), {"dW": (X.T @ r) * slip, "db": r.sum(axis=0)}
        return loss

    before = bound(places)
    named = {"W": places[0], "b": places[1]}
    assert check(make(1.0), X, params=named, mode=mode).ok
    failed = check(make(1.03), X, params=named, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["W"], str(failed)
    assert_restored(places, before)


ALPHA = 0.7  # a Python float global, perturbed by rebinding it, and the same object put back


def scaled_loss(x: np.ndarray) -> tuple[float, float]:
    return float(ALPHA * np.sum(x**2)), float(np.sum(x**2))


def scaled_loss_wrong(x: np.ndarray) -> tuple[float, float]:
    return float(ALPHA * np.sum(x**2)), float(np.sum(x))


@pytest.mark.parametrize("mode", MODES)
def test_a_python_float_global_through_the_function(mode: str) -> None:
    x = np.array([0.5, -1.5, 2.0])
    places = [(scaled_loss, "ALPHA")]
    before = bound(places)
    assert check(scaled_loss, x, params=places, mode=mode).ok
    failed = check(scaled_loss_wrong, x, params=places, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["ALPHA"], str(failed)
    assert globals()["ALPHA"] is before[0][0]


def test_weights_are_put_back_when_the_function_raises() -> None:
    hprev = np.zeros((rnn.hidden_size, 1))
    places = [(rnn, n) for n in RNN_NAMES]
    before = bound(places)
    calls = []

    def breaks(inputs: Any, targets: Any, hprev: Any) -> Any:
        calls.append(1)
        if len(calls) > 20:
            raise RuntimeError("out of memory")
        return rnn.lossFun(inputs, targets, hprev)

    with pytest.raises(GradcheckUsageError, match="out of memory"):
        check(breaks, INPUTS, TARGETS, hprev, params=places)
    assert_restored(places, before)


def test_pointers_at_nothing_or_on_a_layer_are_usage_errors() -> None:
    hprev = np.zeros((rnn.hidden_size, 1))
    with pytest.raises(GradcheckUsageError, match=r"'Wxy'.*does not exist"):
        check(rnn.lossFun, INPUTS, TARGETS, hprev, params=[(rnn, "Wxy")])

    class Layer:
        W = np.ones((2, 2))

        def forward(self, x: Any) -> Any:
            return x @ self.W

        def backward(self, d: Any) -> Any:
            return d @ self.W.T

    with pytest.raises(GradcheckUsageError, match="value-and-gradient functions only"):
        check(Layer(), np.ones((1, 2)), params=[(rnn, "Wxh")])
    with pytest.raises(GradcheckUsageError, match="mixture"):
        check(rnn.lossFun, INPUTS, TARGETS, hprev, params=["Wxh", (rnn, "Whh")])


def test_gradients_of_the_wrong_shape_name_the_weight_and_grads_option() -> None:
    hprev = np.zeros((rnn.hidden_size, 1))
    with pytest.raises(GradcheckUsageError, match=r"gradient of bh.*grads=\[1, 2, 4, 3, 5\]"):
        check(rnn.lossFun, INPUTS, TARGETS, hprev,
              params=[(rnn, n) for n in ["Wxh", "Whh", "bh", "Why", "by"]])
    # Said where they are, they are checked whatever the order they are returned in.
    result = check(rnn.lossFun, INPUTS, TARGETS, hprev,
                   params=[(rnn, n) for n in ["Wxh", "Whh", "bh", "Why", "by"]],
                   grads=[1, 2, 4, 3, 5])
    assert result.ok, str(result)


SCALE = 1.5  # rebound during the check as a 0-d float64 array
TABLE = np.linspace(0.1, 0.6, 6).reshape(3, 2).astype(np.float32)  # rebound to a float64 copy


def raising_after(limit: int) -> Callable[..., Any]:
    calls: list[int] = []

    def loss(x: np.ndarray) -> Any:
        calls.append(1)
        if len(calls) > limit:
            raise ValueError("diverged")
        r = SCALE * (x @ TABLE)
        return float(0.5 * np.sum(r**2)), SCALE * (x.T @ r), float(np.sum(r * (x @ TABLE)))
    return loss


def test_rebound_weights_are_put_back_when_the_function_raises() -> None:
    places: list[tuple[Any, Any]] = [(globals(), "TABLE"), (globals(), "SCALE")]
    before = bound(places)
    x = np.random.default_rng(0).normal(size=(4, 3))
    result = check(raising_after(10**6), x, params=places, inputs=False)
    assert result.ok, str(result)
    assert_restored(places, before)
    with pytest.raises(GradcheckUsageError, match="diverged"):
        check(raising_after(6), x, params=places, inputs=False)
    assert_restored(places, before)
    assert TABLE.dtype == np.float32 and type(SCALE) is float


def test_a_pointer_at_no_float_is_refused_by_name() -> None:
    hprev = np.zeros((rnn.hidden_size, 1))
    holder = {"W": np.array([1, 2, 3]), "names": np.array(["a"], dtype=object)}
    with pytest.raises(GradcheckUsageError, match=r"'W' at dict\['W'\], which holds a int64"):
        check(rnn.lossFun, INPUTS, TARGETS, hprev, params=[(holder, "W")])
    with pytest.raises(GradcheckUsageError, match=r"'names'.*object array"):
        check(rnn.lossFun, INPUTS, TARGETS, hprev, params=[(holder, "names")])


def test_a_float_in_a_tuple_cannot_be_rebound() -> None:
    box = (0.5,)

    def loss(x: np.ndarray) -> Any:
        return float(box[0] * np.sum(x)), float(np.sum(x))

    with pytest.raises(GradcheckUsageError, match="cannot be rebound"):
        check(loss, np.ones(3), params={"w": (box, 0)})
    assert box == (0.5,)


def test_without_params_the_refusal_names_the_pointers_that_work() -> None:
    hprev = np.zeros((rnn.hidden_size, 1))
    with pytest.raises(GradcheckUsageError) as info:
        check(rnn.lossFun, INPUTS, TARGETS, hprev)
    message = str(info.value)
    wanted = ("params=[(lossFun, 'Wxh'), (lossFun, 'Whh'), (lossFun, 'Why'), (lossFun, 'bh'), "
              "(lossFun, 'by')]")
    assert wanted in message, message
    # ... and the call it names works as written.
    lossFun = rnn.lossFun
    result = check(lossFun, INPUTS, TARGETS, hprev, params=eval(wanted.split("=", 1)[1]))
    assert result.ok, str(result)


def test_closure_weights_are_suggested_too() -> None:
    rng = np.random.default_rng(8)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)

    def loss(rows: list[int]) -> Any:
        X = np.eye(3)[rows]
        r = X @ W + b
        return 0.5 * float(np.sum(r**2)), X.T @ r, r.sum(axis=0)

    with pytest.raises(GradcheckUsageError, match=r"params=\[\(loss, 'W'\), \(loss, 'b'\)\]"):
        check(loss, [0, 2])
    assert check(loss, [0, 2], params=[(loss, "W"), (loss, "b")]).ok

    def no_outside() -> Any:
        return 1.0, np.ones(2)

    with pytest.raises(GradcheckUsageError, match=r"params=\{\"W\": \(module_or_container"):
        check(no_outside)


@pytest.mark.parametrize("mode", MODES)
def test_pointed_weights_and_an_argument_named_by_wrt(mode: str) -> None:
    rng = np.random.default_rng(9)
    weights = {"W": rng.normal(size=(3, 2))}

    def make(slip: float) -> Callable[..., Any]:
        def loss(x: np.ndarray) -> Any:
            r = x @ weights["W"]
            return 0.5 * float(np.sum(r**2)), x.T @ r, (r @ weights["W"].T) * slip
        return loss

    x = rng.normal(size=(4, 3))
    places = [(weights, "W")]
    result = check(make(1.0), x, params=places, wrt=["x"], mode=mode)
    assert {e.name: e.status for e in result.entries} == {"x": "ok", "W": "ok"}, str(result)
    failed = check(make(1.1), x, params=places, wrt=["x"], mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["x"], str(failed)
    assert check(make(1.0), x, params=places, mode=mode).entry("x").status == (
        "not differentiated")
