"""Forward and backward propagation as a deeplearning.ai learner writes them (our own version):
`forward_propagation_n(X, Y, parameters) -> (cost, cache)` and
`backward_propagation_n(X, Y, cache) -> gradients`, keyed `dW1`, `db1`, ... for `W1`, `b1`,
with the intermediate `dZ1`, `dA1` among them."""

from __future__ import annotations

from typing import Any

import numpy as np


def relu(x: Any) -> Any:
    return np.maximum(0, x)


def sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-x))


def initialize(seed: int = 1) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4, 3))
    Y = np.array([[1.0, 0.0, 1.0]])
    parameters = {"W1": rng.normal(size=(5, 4)) * 0.5, "b1": rng.normal(size=(5, 1)) * 0.1,
                  "W2": rng.normal(size=(3, 5)) * 0.5, "b2": rng.normal(size=(3, 1)) * 0.1,
                  "W3": rng.normal(size=(1, 3)) * 0.5, "b3": rng.normal(size=(1, 1)) * 0.1}
    return X, Y, parameters


def forward_propagation_n(X: Any, Y: Any, parameters: dict[str, Any]) -> tuple[float, Any]:
    m = X.shape[1]
    W1, b1 = parameters["W1"], parameters["b1"]
    W2, b2 = parameters["W2"], parameters["b2"]
    W3, b3 = parameters["W3"], parameters["b3"]
    Z1 = np.dot(W1, X) + b1
    A1 = relu(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = relu(Z2)
    Z3 = np.dot(W3, A2) + b3
    A3 = sigmoid(Z3)
    logprobs = np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y)
    cost = 1.0 / m * np.sum(logprobs)
    cache = (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)
    return cost, cache


def backward_propagation_n(X: Any, Y: Any, cache: Any, slip: bool = False) -> dict[str, Any]:
    m = X.shape[1]
    (_, A1, _, _, _, A2, W2, _, _, A3, W3, _) = cache
    dZ3 = A3 - Y
    dW3 = 1.0 / m * np.dot(dZ3, A2.T)
    db3 = 1.0 / m * np.sum(dZ3, axis=1, keepdims=True)
    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1.0 / m * np.dot(dZ2, A1.T)
    if slip:
        db2 = np.sum(dZ2, axis=1, keepdims=True)  # bug: the 1/m is missing
    else:
        db2 = 1.0 / m * np.sum(dZ2, axis=1, keepdims=True)
    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1.0 / m * np.dot(dZ1, X.T)
    db1 = 1.0 / m * np.sum(dZ1, axis=1, keepdims=True)
    return {"dZ3": dZ3, "dW3": dW3, "db3": db3, "dA2": dA2, "dZ2": dZ2, "dW2": dW2,
            "db2": db2, "dA1": dA1, "dZ1": dZ1, "dW1": dW1, "db1": db1}


def backward_propagation_n_wrong(X: Any, Y: Any, cache: Any) -> dict[str, Any]:
    return backward_propagation_n(X, Y, cache, slip=True)
