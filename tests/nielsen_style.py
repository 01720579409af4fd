"""A network as Nielsen's book writes it (our own version): lists `weights` and `biases`,
`feedforward(a)`, and `backprop(x, y) -> (nabla_b, nabla_w)` for the quadratic cost; and the
network2 variant whose `cost` object has `fn(a, y)` and `delta(z, a, y)`."""

from __future__ import annotations

from typing import Any

import numpy as np


def sigmoid(z: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_prime(z: Any) -> Any:
    return sigmoid(z) * (1 - sigmoid(z))


class Network:
    def __init__(self, sizes: list[int], seed: int = 0, slip: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.num_layers = len(sizes)
        self.sizes = sizes
        self.biases = [rng.standard_normal((y, 1)) for y in sizes[1:]]
        self.weights = [rng.standard_normal((y, x)) for x, y in zip(sizes[:-1], sizes[1:])]  # noqa: RUF007
        self.slip = slip

    def feedforward(self, a: Any) -> Any:
        for b, w in zip(self.biases, self.weights):
            a = sigmoid(np.dot(w, a) + b)
        return a

    def backprop(self, x: Any, y: Any) -> tuple[list[Any], list[Any]]:
        nabla_b = [np.zeros(b.shape) for b in self.biases]
        nabla_w = [np.zeros(w.shape) for w in self.weights]
        activation = x
        activations = [x]
        zs = []
        for b, w in zip(self.biases, self.weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sigmoid(z)
            activations.append(activation)
        delta = self.output_delta(zs[-1], activations[-1], y)
        if self.slip:
            nabla_b[-1] = delta * sigmoid_prime(zs[-1])  # bug: sigmoid_prime applied again
        else:
            nabla_b[-1] = delta
        nabla_w[-1] = np.dot(delta, activations[-2].transpose())
        for l in range(2, self.num_layers):  # noqa: E741 (the book's name)
            z = zs[-l]
            sp = sigmoid_prime(z)
            delta = np.dot(self.weights[-l + 1].transpose(), delta) * sp
            nabla_b[-l] = delta
            nabla_w[-l] = np.dot(delta, activations[-l - 1].transpose())
        return (nabla_b, nabla_w)

    def output_delta(self, z: Any, a: Any, y: Any) -> Any:
        return self.cost_derivative(a, y) * sigmoid_prime(z)

    def cost_derivative(self, output_activations: Any, y: Any) -> Any:
        return output_activations - y


class CrossEntropyCost:
    @staticmethod
    def fn(a: Any, y: Any) -> float:
        return float(np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a))))

    @staticmethod
    def delta(z: Any, a: Any, y: Any) -> Any:
        return a - y


class Network2(Network):
    """network2 style: the cost is an object; backprop's output delta is cost.delta."""

    def __init__(self, sizes: list[int], seed: int = 0, slip: bool = False) -> None:
        super().__init__(sizes, seed, slip)
        self.cost = CrossEntropyCost

    def output_delta(self, z: Any, a: Any, y: Any) -> Any:
        return self.cost.delta(z, a, y)
