"""Optimisers that update layer ``params`` in place from their ``grads``."""

from __future__ import annotations

import numpy as np

from .layers import Module, iter_layers

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent with (heavy-ball) momentum.

    Per parameter ``p`` with gradient ``g``: ``v = momentum * v + g`` then
    ``p -= lr * v``. ``momentum=0`` gives plain SGD. Parameters are updated in
    place, so references held elsewhere (e.g. by a checker) stay valid.
    """

    def __init__(
        self,
        layers_or_model: Module | list[Module] | tuple[Module, ...],
        lr: float,
        momentum: float = 0.9,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr = float(lr)
        self.momentum = float(momentum)
        # Collected once: (layer, key, velocity). Only layers with a params
        # dict take part, so activations and containers are skipped.
        self._slots: list[tuple[Module, str, np.ndarray]] = [
            (layer, key, np.zeros_like(value))
            for layer in iter_layers(layers_or_model)
            for key, value in getattr(layer, "params", {}).items()
        ]

    def step(self) -> None:
        """Apply one update using the grads left by the latest backward pass."""
        for layer, key, velocity in self._slots:
            velocity *= self.momentum
            velocity += layer.grads[key]
            layer.params[key] -= self.lr * velocity
