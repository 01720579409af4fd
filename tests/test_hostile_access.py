"""Layers that keep their parameters, sub-layers or names where a plain `__dict__` walk misses them.

Parameters in `__slots__` or behind properties, containers that subclass `list`/`dict`, layers
whose `__getattr__` answers every name, and `grads` dicts filled before backward: each must be
found (a wrong gradient fails on its row), named like any other row, and never turn into an
internal error or a verdict on stale values.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from helpers import weights

from example_nn import Linear
from pytest_gradcheck import CheckResult, GradcheckUsageError, check
from pytest_gradcheck.access import Param, arm_gradients, layer_label, unwritten_gradient_message
from pytest_gradcheck.conventions import (
    pytest_gradcheck_layer_parameters,
    pytest_gradcheck_sublayers,
    pytest_gradcheck_train_mode,
)

QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


def x_batch(n: int = 4, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def rows(result: CheckResult) -> dict[str, str]:
    return {e.name: e.status for e in result.entries}


# ---------------------------------------------------------------------------------------------
# parameters in __slots__
# ---------------------------------------------------------------------------------------------


class ScaledAffineMath:
    """x @ W + b with dW scaled by `scale`; the storage of W, b and their gradients is the
    subclasses' (no __dict__ of its own, so slotted subclasses stay slotted)."""

    __slots__ = ()
    W: np.ndarray
    b: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    scale: float
    x: np.ndarray

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.scale * (self.x.T @ dout)
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class SlotsAffine(ScaledAffineMath):
    __slots__ = ("W", "b", "dW", "db", "scale", "x")

    def __init__(self, scale: float = 1.0) -> None:
        self.W = weights((3, 2))
        self.b = weights((2,), 2)
        self.scale = scale


class SlotsBase:
    __slots__ = ("dweights", "weights")


class SlotsDerived(SlotsBase):
    """Slots spread over the class hierarchy, one of them private (name-mangled)."""

    __slots__ = ("__cache", "biases", "dbiases")

    def __init__(self) -> None:
        self.weights = weights((3, 2))
        self.biases = weights((2,), 2)
        self.dweights = np.zeros_like(self.weights)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.__cache = x
        return x @ self.weights + self.biases

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dweights = self.__cache.T @ dout
        self.dbiases = dout.sum(axis=0)
        return dout @ self.weights.T


def test_slots_parameters_are_found_and_checked() -> None:
    layer = SlotsAffine()
    before = layer.W.copy()
    result = check(layer, x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}
    assert np.array_equal(layer.W, before)


def test_slots_doubled_gradient_fails_on_its_row() -> None:
    result = check(SlotsAffine(scale=2.0), x_batch())
    assert rows(result) == {"x": "ok", "W": "FAIL", "b": "ok"}


def test_slots_from_base_classes_and_mangled_names() -> None:
    result = check(SlotsDerived(), x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "weights": "ok", "biases": "ok"}


# ---------------------------------------------------------------------------------------------
# parameters exposed as properties
# ---------------------------------------------------------------------------------------------


class PropertyAffine(ScaledAffineMath):
    """`W` is a property over `_W` (with a setter), `dW` a plain attribute set by backward."""

    def __init__(self, scale: float = 1.0) -> None:
        self._W = weights((3, 2))
        self.b = weights((2,), 2)
        self.scale = scale

    @property
    def W(self) -> np.ndarray:
        return self._W

    @W.setter
    def W(self, value: np.ndarray) -> None:
        self._W = value


class ReadOnlyPropertyAffine(PropertyAffine):
    """`W` has no setter: the checker must perturb the stored array in place."""

    @property  # type: ignore[override]
    def W(self) -> np.ndarray:
        return self._W


def test_property_parameter_is_found_and_checked() -> None:
    result = check(PropertyAffine(), x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}


def test_property_parameter_doubled_gradient_fails() -> None:
    result = check(PropertyAffine(scale=2.0), x_batch())
    assert rows(result) == {"x": "ok", "W": "FAIL", "b": "ok"}


def test_property_without_setter_is_perturbed_in_place() -> None:
    layer = ReadOnlyPropertyAffine()
    before = layer._W
    saved = before.copy()
    assert rows(check(layer, x_batch())) == {"x": "ok", "W": "ok", "b": "ok"}
    assert rows(check(ReadOnlyPropertyAffine(scale=2.0), x_batch()))["W"] == "FAIL"
    assert layer._W is before and np.array_equal(layer._W, saved)


def test_property_without_setter_has_no_set() -> None:
    found = {p.name: p for p in pytest_gradcheck_layer_parameters(ReadOnlyPropertyAffine(), "")}
    assert found["W"].set is None
    assert found["b"].set is not None
    with_setter = {p.name: p for p in pytest_gradcheck_layer_parameters(PropertyAffine(), "")}
    assert with_setter["W"].set is not None


def test_property_without_setter_that_cannot_be_perturbed_is_a_usage_error() -> None:
    layer = ReadOnlyPropertyAffine()
    layer._W = np.asfortranarray(weights((3, 2)))
    with pytest.raises(GradcheckUsageError, match=r"ReadOnlyPropertyAffine: parameter 'W'"):
        check(layer, x_batch())


class CopyingPropertyAffine(PropertyAffine):
    """A read-only `W` that hands out a fresh copy: perturbing it could never reach forward."""

    @property  # type: ignore[override]
    def W(self) -> np.ndarray:
        return self._W.copy()


def test_property_returning_a_fresh_copy_is_a_usage_error_not_a_false_failure() -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(CopyingPropertyAffine(), x_batch())
    message = str(info.value)
    assert message.startswith("CopyingPropertyAffine: ")
    assert "'W'" in message and "new array" in message


class GuardedProperties(SlotsAffine):
    """Properties the parameter search must not call, or must survive calling."""

    __slots__ = ("calls",)

    @property
    def everything(self) -> np.ndarray:  # not named like a parameter: never called
        self.calls += 1
        return np.zeros(10**6)

    @property
    def weight(self) -> np.ndarray:  # named like one, but raises: ignored
        raise RuntimeError("not built yet")

    @property
    def dbias(self) -> np.ndarray:  # a gradient spelling whose parameter does not exist
        raise RuntimeError("never")

    @classmethod
    def bias(cls) -> None:  # a method named like a parameter is not one
        return None

    def gamma(self) -> np.ndarray:
        return np.ones(2)


def test_search_does_not_call_unrelated_properties_nor_take_methods() -> None:
    layer = GuardedProperties()
    layer.calls = 0
    result = check(layer, x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}
    assert layer.calls == 0


def test_slots_train_flag_is_forced() -> None:
    class SlotsDropoutish:
        __slots__ = ("training",)

        def __init__(self) -> None:
            self.training = False

        def forward(self, x: np.ndarray) -> np.ndarray:
            return 2.0 * x if self.training else x

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return 2.0 * dout

    layer = SlotsDropoutish()
    result = check(layer, x_batch())
    assert result.ok
    assert any("training=True" in n for n in result.notes)
    assert layer.training is False


# ---------------------------------------------------------------------------------------------
# containers that subclass list or dict
# ---------------------------------------------------------------------------------------------


class BadBias(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["b"] = 2.0 * self.grads["b"]
        return dx


class Seq(list):  # type: ignore[type-arg]
    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self):
            dout = layer.backward(dout)
        return dout


class Blocks(dict):  # type: ignore[type-arg]
    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.values():
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(list(self.values())):
            dout = layer.backward(dout)
        return dout


def linear(n_in: int, n_out: int, cls: type[Linear] = Linear, seed: int = 1) -> Linear:
    return cls(n_in, n_out, rng=np.random.default_rng(seed))


def test_list_subclass_sublayers_are_found_and_named_by_index() -> None:
    result = check(Seq([linear(3, 4), linear(4, 2, seed=2)]), x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "0.W": "ok", "0.b": "ok", "1.W": "ok", "1.b": "ok"}


def test_list_subclass_wrong_inner_layer_fails() -> None:
    result = check(Seq([linear(3, 4), linear(4, 2, BadBias, seed=2)]), x_batch())
    assert rows(result) == {"x": "ok", "0.W": "ok", "0.b": "ok", "1.W": "ok", "1.b": "FAIL"}


def test_dict_subclass_sublayers_are_found_and_named_by_key() -> None:
    good = check(Blocks(first=linear(3, 4), second=linear(4, 2, seed=2)), x_batch())
    assert good.ok
    assert rows(good) == {
        "x": "ok", "first.W": "ok", "first.b": "ok", "second.W": "ok", "second.b": "ok",
    }
    bad = check(Blocks(first=linear(3, 4, BadBias), second=linear(4, 2, seed=2)), x_batch())
    assert rows(bad)["first.b"] == "FAIL"
    assert not bad.ok


def test_nested_list_subclass_inside_a_layers_attribute_keeps_path_names() -> None:
    class Net:
        def __init__(self) -> None:
            self.body = Seq([linear(3, 4), linear(4, 2, BadBias, seed=2)])

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.body.forward(x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return self.body.backward(dout)

    result = check(Net(), x_batch())
    assert rows(result) == {
        "x": "ok", "body.0.W": "ok", "body.0.b": "ok", "body.1.W": "ok", "body.1.b": "FAIL",
    }


def test_list_subclass_items_that_are_not_layers_are_ignored() -> None:
    seq = Seq([linear(3, 4)])
    children = pytest_gradcheck_sublayers(seq)
    assert [name for name, _ in children] == ["0"]
    assert pytest_gradcheck_sublayers([linear(3, 4)]) == []  # a plain list is no layer


class CountingSeq(Seq):
    def forward(self, x: np.ndarray) -> np.ndarray:
        self.count = getattr(self, "count", 0) + 1
        self.x = x
        return super().forward(x)


def test_list_subclass_own_attributes_are_restored() -> None:
    seq = CountingSeq([linear(3, 4)])
    seq.count = 41
    before = dict(seq.__dict__)
    assert check(seq, x_batch()).ok
    assert seq.__dict__ == before


# ---------------------------------------------------------------------------------------------
# a __getattr__ that answers every name
# ---------------------------------------------------------------------------------------------


class AnswersEverything:
    """Any attribute it does not have comes back as a function (a proxy, a Mock-like object)."""

    def __init__(self) -> None:
        self.W = weights((3, 2))

    def __getattr__(self, name: str) -> Any:
        def anything(*args: Any, **kwargs: Any) -> None:
            return None

        return anything

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        return dout @ self.W.T


def test_label_of_an_object_answering_every_name_is_its_class_name() -> None:
    assert layer_label(AnswersEverything()) == "AnswersEverything"

    def f() -> None: ...

    f.__name__ = "renamed"
    assert layer_label(f) == "renamed"

    class CallableAnything(AnswersEverything):
        def __call__(self, *args: Any) -> None: ...

    assert layer_label((CallableAnything(), f)) == "CallableAnything/renamed"


def test_object_answering_every_name_is_checked_with_a_str_label() -> None:
    result = check(AnswersEverything(), x_batch())
    assert result.ok
    assert result.label == "AnswersEverything"
    assert rows(result) == {"x": "ok", "W": "ok"}


def test_conventions_ignore_names_answered_by_getattr() -> None:
    layer = AnswersEverything()
    assert pytest_gradcheck_train_mode(layer) == []
    assert [p.name for p in pytest_gradcheck_layer_parameters(layer, "")] == ["W"]
    assert pytest_gradcheck_sublayers(layer) == []


def test_backward_returning_none_reads_only_real_attributes() -> None:
    class NnfsStyle(AnswersEverything):
        def forward(self, x: np.ndarray) -> None:  # type: ignore[override]
            self.inputs = x
            self.output = x @ self.W

        def backward(self, dvalues: np.ndarray) -> None:  # type: ignore[override]
            self.dW = self.inputs.T @ dvalues
            self.dx = dvalues @ self.W.T

    result = check(NnfsStyle(), x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok"}


def test_json_report_of_an_object_answering_every_name(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np

        class Anything:
            def __init__(self):
                self.W = np.random.default_rng(1).normal(size=(3, 2))

            def __getattr__(self, name):
                return lambda *args, **kwargs: None

            def forward(self, x):
                self.x = x
                return x @ self.W

            def backward(self, dout):
                self.dW = self.x.T @ dout
                return dout @ self.W.T

        def test_anything(gradcheck):
            gradcheck(Anything(), np.random.default_rng(0).normal(size=(4, 3)))
        """
    )
    json_path = pytester.path / "out.json"
    result = pytester.runpytest(*QUIET_PLUGINS, f"--gradcheck-json={json_path}")
    result.assert_outcomes(passed=1)
    payload = json.loads(json_path.read_text())
    (entry,) = payload["results"]
    assert entry["label"] == "Anything"
    assert {e["name"] for e in entry["entries"]} == {"x", "W"}


# ---------------------------------------------------------------------------------------------
# gradients backward never writes
# ---------------------------------------------------------------------------------------------


def grad_param(name: str, holder: dict[str, Any]) -> Param:
    return Param(name, lambda: None, None, lambda: holder.get(name))


def test_arm_gradients_reports_arrays_backward_never_touched() -> None:
    grads: dict[str, Any] = {"W": np.zeros((3, 2)), "b": np.zeros(2), "n": None}
    params = [grad_param(k, grads) for k in ("W", "b", "n", "missing")]
    unwritten = arm_gradients(params)
    assert np.all(np.signbit(grads["W"])) and not np.any(grads["W"])
    grads["W"] += np.ones((3, 2))  # accumulated: written
    assert unwritten() == ["b"]


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda g: g.__setitem__("b", np.zeros(2)), []),  # rebound to a new array of zeros
        (lambda g: g["b"].__iadd__(np.zeros(2)), []),  # accumulated an exact +0.0
        (lambda g: g["b"].__setitem__(Ellipsis, 0.0), []),  # assigned in place
        # Writing -0.0 over -0.0 cannot be seen: the documented (unlikely) false report.
        (lambda g: g["b"].__setitem__(1, -0.0), ["b"]),
    ],
    ids=["rebound", "accumulated-zero", "assigned-zero", "negative-zero-everywhere"],
)
def test_arm_gradients_counts_every_write_of_a_zero(write: Any, expected: list[str]) -> None:
    grads = {"b": np.ones(2)}
    unwritten = arm_gradients([grad_param("b", grads)])
    write(grads)
    assert unwritten() == expected


def test_arm_gradients_leaves_other_arrays_alone() -> None:
    ints = np.arange(3)
    frozen = np.ones(2)
    frozen.flags.writeable = False
    holder = {"i": ints, "f": frozen, "x": [1.0, 2.0]}
    unwritten = arm_gradients([grad_param(k, holder) for k in holder])
    assert ints.tolist() == [0, 1, 2] and frozen.tolist() == [1.0, 1.0]
    assert unwritten() == []


def test_unwritten_gradient_error_names_where_the_gradient_lives() -> None:
    params = pytest_gradcheck_layer_parameters(PrefilledGrads(forget_b=True), "")
    params += pytest_gradcheck_layer_parameters(SlotsAffine(), "inner")
    where = {p.name: p.grad_source for p in params}
    assert unwritten_gradient_message("b", where["b"]).startswith(
        "backward never wrote the gradient of 'b' (grads['b'] still holds the value it had "
        "before backward)")
    message = unwritten_gradient_message("inner.W", where["inner.W"])
    assert message.startswith("backward never wrote the gradient of 'inner.W' (dW still holds")
    assert "params=[...]" in message


class PrefilledGrads:
    """`grads` filled with zeros in __init__; backward accumulates W and forgets b."""

    def __init__(self, forget_b: bool) -> None:
        self.params = {"W": weights((3, 2)), "b": weights((2,), 2)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.forget_b = forget_b

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] += self.x.T @ dout
        if not self.forget_b:
            self.grads["b"] += dout.sum(axis=0)
        return dout @ self.params["W"].T


def test_prefilled_grads_that_backward_writes_pass() -> None:
    result = check(PrefilledGrads(forget_b=False), x_batch())
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}


def test_prefilled_gradient_backward_never_writes_is_an_error_row() -> None:
    layer = PrefilledGrads(forget_b=True)
    before = {k: v.copy() for k, v in layer.grads.items()}
    result = check(layer, x_batch())
    assert rows(result) == {"x": "ok", "W": "ok", "b": "error"}
    assert str(result.entry("b").message).startswith(
        "backward never wrote the gradient of 'b' (grads['b'] still holds"
    )
    for k, v in before.items():
        assert np.array_equal(layer.grads[k], v) and not np.any(np.signbit(layer.grads[k]))
