"""Recurrent layers: one time step with several inputs and several outputs.

An LSTM step takes the input and the previous hidden and cell states and returns the next two
states, so its ``forward`` and ``backward`` take and return several arrays. Otherwise it
follows the protocol of :mod:`example_nn.layers` (``params``/``grads`` dicts assigned by
``backward``, ``training`` flag, ``gradcheck_case``). It is not a ``Module``: a module maps
one array to one array, which is what lets ``Sequential`` chain them; a step is unrolled over
time by the caller instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LSTMCell"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))  # exact, and never overflows
    return out


class LSTMCell:
    """One LSTM step: ``h, c = cell.forward(x, h_prev, c_prev)``.

    ``x`` is ``(N, input_dim)``, the states ``(N, hidden_dim)``. Parameters: ``Wx``
    ``(input_dim, 4H)``, ``Wh`` ``(H, 4H)``, ``b`` ``(4H,)``, with the gates in the order
    input, forget, output, candidate along the last axis. The forget gate's bias starts at 1
    so that a fresh cell keeps its memory. ``backward(dh, dc)`` takes the gradients of both
    outputs and returns ``(dx, dh_prev, dc_prev)``.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, rng: np.random.Generator | None = None
    ) -> None:
        rng = np.random.default_rng() if rng is None else rng
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.training = True
        h = hidden_dim
        b = np.zeros(4 * h)
        b[h : 2 * h] = 1.0
        self.params: dict[str, np.ndarray] = {
            "Wx": rng.normal(0.0, 1.0 / np.sqrt(input_dim), size=(input_dim, 4 * h)),
            "Wh": rng.normal(0.0, 1.0 / np.sqrt(h), size=(h, 4 * h)),
            "b": b,
        }
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(
        self, x: np.ndarray, h_prev: np.ndarray, c_prev: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected x of shape (N, {self.input_dim}), got {x.shape}")
        state_shape = (x.shape[0], self.hidden_dim)
        if h_prev.shape != state_shape or c_prev.shape != state_shape:
            raise ValueError(
                f"expected states of shape {state_shape}, got {h_prev.shape} and {c_prev.shape}"
            )
        p = self.params
        a = x @ p["Wx"] + h_prev @ p["Wh"] + p["b"]
        i, f, o, g = np.split(a, 4, axis=1)
        i, f, o, g = _sigmoid(i), _sigmoid(f), _sigmoid(o), np.tanh(g)
        c = f * c_prev + i * g
        tanh_c = np.tanh(c)
        self._cache = (x, h_prev, c_prev, i, f, o, g, tanh_c)
        return o * tanh_c, c

    def backward(self, dh: np.ndarray, dc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, h_prev, c_prev, i, f, o, g, tanh_c = self._cache
        p = self.params
        # The cell state reaches the loss directly (dc) and through h = o * tanh(c).
        dc_total = dc + dh * o * (1.0 - tanh_c**2)
        da = np.concatenate(
            [
                dc_total * g * i * (1.0 - i),
                dc_total * c_prev * f * (1.0 - f),
                dh * tanh_c * o * (1.0 - o),
                dc_total * i * (1.0 - g**2),
            ],
            axis=1,
        )
        self.grads["Wx"] = x.T @ da
        self.grads["Wh"] = h_prev.T @ da
        self.grads["b"] = da.sum(axis=0)
        return da @ p["Wx"].T, da @ p["Wh"].T, dc_total * f

    def train(self) -> LSTMCell:
        """Switch to training mode (the cell behaves the same in both); returns ``self``."""
        self.training = True
        return self

    def eval(self) -> LSTMCell:
        """Switch to evaluation mode; returns ``self``."""
        self.training = False
        return self

    def __repr__(self) -> str:
        return f"LSTMCell({self.input_dim}, {self.hidden_dim})"

    @classmethod
    def gradcheck_case(
        cls, rng: np.random.Generator
    ) -> tuple[LSTMCell, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """An example instance and inputs for ``python -m pytest_gradcheck example_nn``."""
        cell = cls(4, 3, rng=rng)
        n = 5
        inputs = (rng.normal(size=(n, 4)), rng.normal(size=(n, 3)), rng.normal(size=(n, 3)))
        return cell, inputs
