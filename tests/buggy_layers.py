"""Deliberately wrong layers, for testing that gradient checks catch bugs.

Each class changes exactly one thing in its parent's backward pass; the
forward pass is inherited unchanged, so only the gradient is wrong. The bug is
named in each docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from example_nn import BatchNorm1d, Dropout, Linear, Sigmoid, Tanh

__all__ = [
    "CLASSIC_BUGS",
    "BatchNormMeanConstant",
    "BatchNormVarConstant",
    "DropoutNoScale",
    "LinearBiasGradMean",
    "LinearWeightGradTransposed",
    "SigmoidGradOut",
    "SigmoidGradPlus",
    "TanhGradLinear",
]


class BatchNormMeanConstant(BatchNorm1d):
    """Bug: backward treats the batch mean as a constant (drops the -mean(dxhat) term)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._xhat, self._inv_std
        self.grads["gamma"] = np.sum(dout * xhat, axis=0)
        self.grads["beta"] = dout.sum(axis=0)
        dxhat = dout * self.params["gamma"]
        return inv_std * (dxhat - xhat * np.mean(dxhat * xhat, axis=0))


class BatchNormVarConstant(BatchNorm1d):
    """Bug: backward treats the batch variance as a constant (drops the xhat term)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._xhat, self._inv_std
        self.grads["gamma"] = np.sum(dout * xhat, axis=0)
        self.grads["beta"] = dout.sum(axis=0)
        dxhat = dout * self.params["gamma"]
        return inv_std * (dxhat - dxhat.mean(axis=0))


class DropoutNoScale(Dropout):
    """Bug: backward applies the mask but forgets the 1/(1-p) scale."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return dout.copy()
        return dout * self._mask


class SigmoidGradPlus(Sigmoid):
    """Bug: backward uses out*(1+out) instead of out*(1-out)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._out * (1.0 + self._out)


class SigmoidGradOut(Sigmoid):
    """Bug: backward uses out instead of out*(1-out)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._out


class TanhGradLinear(Tanh):
    """Bug: backward uses 1 - out instead of 1 - out**2."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1.0 - self._out)


class LinearWeightGradTransposed(Linear):
    """Bug: grads['W'] is transposed (use a square W so the shape still fits)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"].T.copy()
        return dx


class LinearBiasGradMean(Linear):
    """Bug: grads['b'] is the mean over the batch instead of the sum."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["b"] = dout.reshape(-1, self.out_features).mean(axis=0)
        return dx


# (id, layer factory, input shape, the row that must fail) for each classic bug above.
CLASSIC_BUGS: list[tuple[str, Callable[[], Any], tuple[int, ...], str]] = [
    ("batchnorm-mean-constant", lambda: BatchNormMeanConstant(4), (6, 4), "x"),
    ("batchnorm-var-constant", lambda: BatchNormVarConstant(4), (6, 4), "x"),
    ("dropout-no-scale", lambda: DropoutNoScale(0.5, rng=np.random.default_rng(0)), (6, 4), "x"),
    ("sigmoid-grad-plus", SigmoidGradPlus, (6, 4), "x"),
    ("sigmoid-grad-out", SigmoidGradOut, (6, 4), "x"),
    ("tanh-grad-linear", TanhGradLinear, (6, 4), "x"),
    (
        "linear-weight-grad-transposed",
        lambda: LinearWeightGradTransposed(4, 4, rng=np.random.default_rng(1)),
        (6, 4),
        "W",
    ),
    (
        "linear-bias-grad-mean",
        lambda: LinearBiasGradMean(4, 3, rng=np.random.default_rng(1)),
        (6, 4),
        "b",
    ),
]
