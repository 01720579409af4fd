"""Function pairs whose functions take arguments that are not arrays (`activation="relu"`), and
whose backward asks for some of forward's arguments after (dout, cache), are checked as written."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check


def linear_activation_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray,
                              activation: str) -> tuple[np.ndarray, Any]:
    Z = W @ A_prev + b
    A = np.maximum(Z, 0.0) if activation == "relu" else 1.0 / (1.0 + np.exp(-Z))
    return A, (A_prev, W, Z)


def linear_activation_backward(dA: np.ndarray, cache: Any, activation: str, slip: float = 1.0
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A_prev, W, Z = cache
    if activation == "relu":
        dZ = dA * (Z > 0)
    else:
        s = 1.0 / (1.0 + np.exp(-Z))
        dZ = dA * s * (1 - s)
    return W.T @ dZ, dZ @ A_prev.T * slip, dZ.sum(axis=1, keepdims=True)


def wrong_backward(dA: np.ndarray, cache: Any, activation: str) -> Any:
    return linear_activation_backward(dA, cache, activation, slip=1.01)


def args(activation: str) -> tuple[Any, ...]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 4)), rng.normal(size=(2, 3)), rng.normal(size=(2, 1)), activation


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_backward_gets_forwards_argument_of_the_same_name(activation: str) -> None:
    result = check((linear_activation_forward, linear_activation_backward), *args(activation))
    assert {e.name: e.status for e in result.entries} == {
        "A_prev": "ok", "W": "ok", "b": "ok"}, str(result)
    wrong = check((linear_activation_forward, wrong_backward), *args(activation))
    assert [e.name for e in wrong.entries if not e.ok] == ["W"], str(wrong)


def test_backward_asking_for_what_forward_does_not_take_is_refused_with_the_fix() -> None:
    def backward(dA: np.ndarray, cache: Any, nonlinearity: str) -> Any:
        return linear_activation_backward(dA, cache, nonlinearity)

    with pytest.raises(GradcheckUsageError, match="backward takes 'nonlinearity' after"):
        check((linear_activation_forward, backward), *args("relu"))
