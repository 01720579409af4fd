"""Hostile layers against the checker itself: non-finite gradients, empty arrays, outputs that
change shape or type, all-zero outputs, np.matrix parameters, non-finite inputs, bad loss terms.

Each case ends in a right verdict or a usage error naming the layer and the array, and leaves
the layer, the inputs and every random stream bit for bit as they were.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import global_streams

from pytest_gradcheck import CheckResult, GradcheckUsageError, check

MODES = ("full", "sample", "fast", "auto")


def weights(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def x_batch(n: int = 4, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


class Affine:
    """y = x @ W + b, gradients in dW/db; subclasses bend one thing."""

    def __init__(self, d_in: int = 3, d_out: int = 2) -> None:
        self.W = weights((d_in, d_out))
        self.b = weights((d_out,), 2)

    def forward(self, x: np.ndarray) -> Any:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        dx: np.ndarray = dout @ self.W.T
        return dx


def untouched(layer: Any, *inputs: Any) -> Callable[[], None]:
    """Records the layer, the inputs and the global random streams; the returned function
    asserts they are bit for bit as recorded."""
    before = (pickle.dumps(layer), pickle.dumps(inputs), global_streams())

    def verify() -> None:
        assert pickle.dumps(layer) == before[0], "the layer was left changed"
        assert pickle.dumps(inputs) == before[1], "the inputs were left changed"
        assert global_streams() == before[2], "a global random stream was left changed"

    return verify


def usage_error(layer: Any, *inputs: Any, **options: Any) -> str:
    """The message of the usage error the check raises; the state is verified unchanged."""
    verify = untouched(layer, *inputs)
    with pytest.raises(GradcheckUsageError) as info:
        check(layer, *inputs, **options)
    verify()
    message = str(info.value)
    assert info.value.label is not None and message.startswith(info.value.label)
    return message


def checked(layer: Any, *inputs: Any, **options: Any) -> CheckResult:
    verify = untouched(layer, *inputs)
    result = check(layer, *inputs, **options)
    verify()
    return result


# ---------------------------------------------------------------------------------------------
# NaN or inf in a gradient
# ---------------------------------------------------------------------------------------------


class NonFiniteWeightGrad(Affine):
    def __init__(self, value: float, d_in: int = 3, d_out: int = 2) -> None:
        super().__init__(d_in, d_out)
        self.value = value

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.dW[1, 0] = self.value
        return dx


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_gradient_element_fails_with_its_index_in_every_mode(
    mode: str, value: float
) -> None:
    layer, x = NonFiniteWeightGrad(value), x_batch()
    result = checked(layer, x, mode=mode, samples=100, auto_limit=4)
    w = result.entry("W")
    assert w.status == "FAIL" and not result.ok
    assert w.worst_index == (1, 0)
    assert w.max_rel_error == np.inf
    assert {e.name: e.status for e in result.entries}["x"] == "ok"


def test_fast_mode_reports_a_non_finite_gradient_in_a_large_array() -> None:
    layer, x = NonFiniteWeightGrad(np.nan, 64, 40), x_batch(3, 64)
    result = checked(layer, x, mode="auto")  # W: 2,560 elements, above auto_limit
    w = result.entry("W")
    assert w.status == "FAIL" and w.worst_index == (1, 0) and w.failed == 1


# ---------------------------------------------------------------------------------------------
# Empty arrays: nothing could fail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_batch_is_a_usage_error_naming_the_input(mode: str) -> None:
    message = usage_error(Affine(4, 2), np.zeros((0, 4)), mode=mode)
    assert "nothing to check" in message and "input 'x'" in message
    assert "(0, 4)" in message


def test_an_empty_batch_is_refused_even_when_only_parameters_are_checked() -> None:
    message = usage_error(Affine(4, 2), np.zeros((0, 4)), inputs=False)
    assert "nothing to check" in message and "'x'" in message


class EmptyParam(Affine):
    def __init__(self) -> None:
        super().__init__()
        self.c = np.zeros(0)

    def forward(self, x: np.ndarray) -> Any:
        return super().forward(x) + self.c.sum()

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dc = np.zeros(0)
        return super().backward(dout)


def test_an_empty_parameter_is_a_usage_error_naming_it() -> None:
    message = usage_error(EmptyParam(), x_batch())
    assert "nothing to check" in message and "parameter 'c'" in message
    assert "params=" in message
