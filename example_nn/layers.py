"""Layers with hand-written forward and backward passes.

Every layer follows one small protocol (the gradient-check plugin relies on it):

* ``forward(x)`` returns the output and stores whatever ``backward`` needs as
  private attributes (``self._x`` and friends).
* ``backward(dout)`` returns the gradient with respect to the input of the
  most recent ``forward`` call. It never modifies ``dout`` and always returns
  a fresh array.
* ``params`` and ``grads`` are dicts with the same keys; ``backward`` assigns
  (never accumulates) ``grads[k]``. Parameter-free layers have empty dicts.
* ``training`` is a bool toggled by ``train()`` / ``eval()``.
* Stochastic layers draw from their own ``rng`` (a ``np.random.Generator``),
  never from numpy's global RNG, so a caller can replay a forward pass.
* ``gradcheck_case(rng)`` (a classmethod) returns an example instance and its
  inputs, so ``python -m pytest_gradcheck example_nn`` can check every layer.
  The abstract bases ``Module`` and ``Layer`` have none: their ``forward`` is a
  stub, so discovery leaves them out.

Parameters are always read from ``self.params`` at call time (never cached in
another attribute), so code that perturbs ``params[k]`` in place, as a
finite-difference checker does, sees the perturbation on the next forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# What a ``gradcheck_case`` classmethod returns: an example instance and forward's inputs.
GradcheckCase = tuple["Module", tuple[np.ndarray, ...]]

__all__ = [
    "BatchNorm1d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "col2im",
    "im2col",
    "iter_layers",
]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Normalise an int-or-pair argument to a pair of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


class Module:
    """Base of everything with ``forward``/``backward`` and a train/eval switch."""

    def __init__(self) -> None:
        self.training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for input ``x`` and cache what backward needs."""
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Return d(loss)/d(input) given d(loss)/d(output) of the last forward."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self) -> Module:
        """Switch to training mode; returns ``self`` for chaining."""
        self.training = True
        return self

    def eval(self) -> Module:
        """Switch to evaluation mode; returns ``self`` for chaining."""
        self.training = False
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Layer(Module):
    """A leaf module owning its ``params`` and ``grads`` dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def _init_grads(self) -> None:
        # Zero grads up front so ``grads`` always has exactly the keys of
        # ``params``, even before the first backward pass.
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}


# --------------------------------------------------------------------------
# Dense layers
# --------------------------------------------------------------------------


class Linear(Layer):
    """Affine map ``x @ W + b`` over the last axis, with optional L1/L2 penalty.

    ``W`` has shape ``(in_features, out_features)`` and ``b`` ``(out_features,)``.
    When ``l2`` or ``l1`` is positive, ``backward`` adds the penalty's gradient
    to ``grads['W']`` and ``regularization_loss()`` returns the matching
    penalty, so that ``loss + regularization_loss()`` is what the grads describe.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        l2: float = 0.0,
        l1: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if l2 < 0 or l1 < 0:
            raise ValueError("regularisation strengths must be non-negative")
        rng = np.random.default_rng() if rng is None else rng
        self.in_features = in_features
        self.out_features = out_features
        self.l2 = float(l2)
        self.l1 = float(l1)
        # He scaling keeps activation variance roughly constant through ReLUs.
        scale = np.sqrt(2.0 / in_features)
        self.params = {
            "W": rng.normal(0.0, scale, size=(in_features, out_features)),
            "b": np.zeros(out_features),
        }
        self._init_grads()
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        W = self.params["W"]
        # Fold any leading batch axes together so one matmul covers them all.
        x2 = self._x.reshape(-1, self.in_features)
        d2 = dout.reshape(-1, self.out_features)
        dW = x2.T @ d2
        if self.l2:
            dW = dW + self.l2 * W
        if self.l1:
            dW = dW + self.l1 * np.sign(W)
        self.grads["W"] = dW
        self.grads["b"] = d2.sum(axis=0)
        return dout @ W.T

    def regularization_loss(self) -> float:
        """Penalty ``0.5*l2*sum(W**2) + l1*sum(|W|)`` (0.0 when both are off)."""
        W = self.params["W"]
        return float(0.5 * self.l2 * np.sum(W * W) + self.l1 * np.sum(np.abs(W)))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in (("l2", self.l2), ("l1", self.l1)) if v)
        return f"Linear({self.in_features}, {self.out_features}{extra})"

    @classmethod
    def gradcheck_case(
        cls, rng: np.random.Generator
    ) -> tuple[Linear, tuple[np.ndarray], dict[str, Any]]:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        layer = cls(4, 3, l2=0.1, l1=0.05, rng=rng)
        # backward adds the penalties' gradient, so the checked objective includes them.
        return layer, (rng.normal(size=(5, 4)),), {"extra_loss": cls.regularization_loss}


# --------------------------------------------------------------------------
# Element-wise activations
# --------------------------------------------------------------------------


class ReLU(Layer):
    """``max(x, 0)``; the (sub)gradient at exactly 0 is taken as 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.where(self._mask, x, 0.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self._mask, dout, 0.0)

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(), (rng.normal(size=(4, 5)),)


class LeakyReLU(Layer):
    """``x`` for positive inputs, ``slope * x`` otherwise."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = float(slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.where(self._mask, x, self.slope * x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self._mask, dout, self.slope * dout)

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(slope=0.1), (rng.normal(size=(4, 5)),)


class Sigmoid(Layer):
    """Logistic function ``1 / (1 + exp(-x))``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        # The tanh identity is exact and never overflows, unlike exp(-x)
        # for large negative x.
        self._out = 0.5 * (1.0 + np.tanh(0.5 * x))
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out = self._out
        return dout * out * (1.0 - out)

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(), (rng.normal(size=(4, 5)),)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1.0 - self._out**2)

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(), (rng.normal(size=(4, 5)),)


class Softmax(Layer):
    """Softmax over the last axis.

    For classification prefer :func:`example_nn.losses.softmax_cross_entropy`
    on raw logits; this layer exists for models that need probabilities
    mid-network, and its backward is the full Jacobian-vector product.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        # Subtracting the row max leaves the result unchanged but keeps exp()
        # from overflowing.
        z = np.exp(x - x.max(axis=-1, keepdims=True))
        self._out = z / z.sum(axis=-1, keepdims=True)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        # J = diag(s) - s s^T per row, so J^T g = s * (g - <g, s>) without
        # ever materialising the (C, C) Jacobian.
        s = self._out
        return s * (dout - np.sum(dout * s, axis=-1, keepdims=True))

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(), (rng.normal(size=(4, 5)),)


# --------------------------------------------------------------------------
# Normalisation and regularisation
# --------------------------------------------------------------------------


class BatchNorm1d(Layer):
    """Batch normalisation over the batch axis of ``(N, num_features)`` inputs.

    Training mode normalises with the batch mean and (biased) variance and
    updates ``running_mean``/``running_var`` by an exponential moving average
    (``running_var`` tracks the unbiased variance, as PyTorch does). Eval mode
    normalises with the running statistics, making the layer a fixed affine
    map. ``backward`` differentiates whichever mode the last forward used.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.params = {"gamma": np.ones(num_features), "beta": np.zeros(num_features)}
        self._init_grads()
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected shape (N, {self.num_features}), got {x.shape}")
        self._used_batch_stats = self.training
        if self.training:
            n = x.shape[0]
            if n < 2:
                raise ValueError("BatchNorm1d needs at least 2 samples per batch in training")
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            m = self.momentum
            self.running_mean = (1.0 - m) * self.running_mean + m * mean
            self.running_var = (1.0 - m) * self.running_var + m * var * (n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._inv_std
        return self.params["gamma"] * self._xhat + self.params["beta"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._xhat, self._inv_std
        self.grads["gamma"] = np.sum(dout * xhat, axis=0)
        self.grads["beta"] = dout.sum(axis=0)
        dxhat = dout * self.params["gamma"]
        if not self._used_batch_stats:
            # Running statistics are constants, so this is just the scale.
            return dxhat * inv_std
        # Batch statistics depend on every sample: the mean term removes the
        # shared shift, the xhat term the shared rescaling.
        return inv_std * (dxhat - dxhat.mean(axis=0) - xhat * np.mean(dxhat * xhat, axis=0))

    def __repr__(self) -> str:
        return f"BatchNorm1d({self.num_features}, momentum={self.momentum}, eps={self.eps})"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(5), (rng.normal(size=(6, 5)),)


class LayerNorm(Layer):
    """Normalisation over the last axis of each sample (same in train and eval)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = float(eps)
        self.params = {"gamma": np.ones(num_features), "beta": np.zeros(num_features)}
        self._init_grads()

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected last axis {self.num_features}, got {x.shape}")
        mean = x.mean(axis=-1, keepdims=True)
        var = x.var(axis=-1, keepdims=True)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._inv_std
        return self.params["gamma"] * self._xhat + self.params["beta"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        xhat = self._xhat
        lead = tuple(range(dout.ndim - 1))  # gamma/beta are shared across these
        self.grads["gamma"] = np.sum(dout * xhat, axis=lead)
        self.grads["beta"] = np.sum(dout, axis=lead)
        dxhat = dout * self.params["gamma"]
        return self._inv_std * (
            dxhat
            - dxhat.mean(axis=-1, keepdims=True)
            - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True)
        )

    def __repr__(self) -> str:
        return f"LayerNorm({self.num_features}, eps={self.eps})"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(5), (rng.normal(size=(3, 5)),)


class Dropout(Layer):
    """Inverted dropout: zero each element with probability ``p`` (the DROP rate).

    Survivors are scaled by ``1/(1-p)`` during training so the expected
    activation is unchanged and eval mode can be the identity.
    """

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self._mask: np.ndarray | None = None

    @property
    def scale(self) -> float:
        """Factor applied to kept units in training (0 when everything is dropped)."""
        return 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            self._mask = None  # tells backward this pass was the identity
            return x
        # Read self.rng at call time so a caller may swap or reseed it to
        # replay the same mask.
        self._mask = self.rng.random(x.shape) >= self.p
        return x * self._mask * self.scale

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return dout.copy()
        return dout * self._mask * self.scale

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(0.3, rng=np.random.default_rng(rng.integers(2**63))), (rng.normal(size=(4, 5)),)


# --------------------------------------------------------------------------
# Convolution and pooling (NCHW)
# --------------------------------------------------------------------------


def _zero_pad(x: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pad the two spatial axes of (N, C, H, W); np.pad costs tens of microseconds in
    argument handling alone, more than the copy itself at these sizes."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    xp[:, :, padding : padding + h, padding : padding + w] = x
    return xp


def im2col(
    x: np.ndarray, kernel: tuple[int, int], stride: int, padding: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Unfold ``(N, C, H, W)`` into rows of patches.

    Returns ``(cols, (out_h, out_w))`` where ``cols`` has shape
    ``(N * out_h * out_w, C * kh * kw)``; row order is (n, i, j) and column
    order (c, ki, kj), matching ``W.reshape(out_ch, -1)``.
    """
    kh, kw = kernel
    n, c = x.shape[:2]
    xp = _zero_pad(x, padding)
    if xp.shape[2] < kh or xp.shape[3] < kw:
        raise ValueError(f"kernel {kernel} larger than padded input {xp.shape[2:]}")
    # A strided view of every window, (N, C, out_h, out_w, kh, kw); no copy yet.
    windows = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    out_h, out_w = windows.shape[2:4]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * out_h * out_w, c * kh * kw)
    return cols, (out_h, out_w)


def col2im(
    cols: np.ndarray,
    x_shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: int,
    padding: int,
) -> np.ndarray:
    """Adjoint of :func:`im2col`: scatter-add patch rows back into an image.

    Overlapping windows receive the sum of their contributions, which is
    exactly what the gradient of ``im2col`` requires.
    """
    kh, kw = kernel
    n, c, h, w = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    out_h = (hp - kh) // stride + 1
    out_w = (wp - kw) // stride + 1
    patches = cols.reshape(n, out_h, out_w, c, kh, kw)
    dxp = np.zeros((n, c, hp, wp), dtype=cols.dtype)
    # Loop over the kh*kw kernel offsets only: each iteration adds one whole
    # strided slice, so the pixel loops stay inside numpy.
    for i in range(kh):
        for j in range(kw):
            rows = slice(i, i + stride * out_h, stride)
            cols_ = slice(j, j + stride * out_w, stride)
            dxp[:, :, rows, cols_] += patches[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, padding : padding + h, padding : padding + w]


class Conv2d(Layer):
    """2-D cross-correlation on NCHW input, implemented with im2col.

    ``W`` has shape ``(out_channels, in_channels, kh, kw)`` and ``b``
    ``(out_channels,)``. Output spatial size is
    ``(H + 2*padding - kh) // stride + 1`` (likewise for width).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int = 1,
        padding: int = 0,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__()
        if stride < 1 or padding < 0:
            raise ValueError("stride must be >= 1 and padding >= 0")
        rng = np.random.default_rng() if rng is None else rng
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = stride
        self.padding = padding
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        self.params = {
            "W": rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(out_channels, in_channels, kh, kw)),
            "b": np.zeros(out_channels),
        }
        self._init_grads()

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected shape (N, {self.in_channels}, H, W), got {x.shape}")
        cols, (out_h, out_w) = im2col(x, self.kernel_size, self.stride, self.padding)
        self._x_shape = x.shape
        self._cols = cols
        w_rows = self.params["W"].reshape(self.out_channels, -1)
        out = cols @ w_rows.T + self.params["b"]  # (N*out_h*out_w, out_ch)
        return out.reshape(x.shape[0], out_h, out_w, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        W = self.params["W"]
        d2 = dout.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        self.grads["W"] = (d2.T @ self._cols).reshape(W.shape)
        self.grads["b"] = d2.sum(axis=0)
        dcols = d2 @ W.reshape(self.out_channels, -1)
        return col2im(dcols, self._x_shape, self.kernel_size, self.stride, self.padding)

    def __repr__(self) -> str:
        return (
            f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding})"
        )

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(2, 3, 3, stride=2, padding=1, rng=rng), (rng.normal(size=(2, 2, 5, 5)),)


class MaxPool2d(Layer):
    """Max pooling over NCHW input; trailing rows/columns that do not fill a
    window are dropped. The gradient of each window goes to its first maximum.
    """

    def __init__(self, kernel_size: int = 2, stride: int = 2) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError("kernel_size and stride must be >= 1")
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise ValueError(f"expected NCHW input, got shape {x.shape}")
        k, s = self.kernel_size, self.stride
        windows = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
        flat = windows.reshape(*windows.shape[:4], k * k)
        self._x_shape = x.shape
        self._argmax = flat.argmax(axis=-1)  # (N, C, out_h, out_w), index into k*k
        return np.take_along_axis(flat, self._argmax[..., None], axis=-1)[..., 0]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        k, s = self.kernel_size, self.stride
        out_h, out_w = dout.shape[2:]
        dx = np.zeros(self._x_shape, dtype=dout.dtype)
        # Loop over the k*k window offsets: route dout to every window whose
        # max sat at that offset. Accumulating handles overlapping windows.
        for offset in range(k * k):
            i, j = divmod(offset, k)
            dx[:, :, i : i + s * out_h : s, j : j + s * out_w : s] += np.where(
                self._argmax == offset, dout, 0.0
            )
        return dx

    def __repr__(self) -> str:
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride})"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(kernel_size=3, stride=2), (rng.normal(size=(2, 2, 5, 5)),)


class Flatten(Layer):
    """Reshape ``(N, ...)`` to ``(N, prod(...))``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        # Copy so the returned gradient never aliases the caller's dout.
        return dout.reshape(self._x_shape).copy()

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        return cls(), (rng.normal(size=(2, 3, 2, 2)),)


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


class Sequential(Module):
    """Chain of modules applied in order.

    Deliberately has no ``params``/``grads`` of its own: tools walk
    ``self.layers`` (see :func:`iter_layers`) to reach the parameters.
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        self.layers: list[Module] = list(layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def train(self) -> Sequential:
        self.training = True
        for layer in self.layers:
            layer.train()
        return self

    def eval(self) -> Sequential:
        self.training = False
        for layer in self.layers:
            layer.eval()
        return self

    def regularization_loss(self) -> float:
        """Sum of ``regularization_loss()`` over sub-layers that define one."""
        return float(
            sum(
                layer.regularization_loss()
                for layer in self.layers
                if hasattr(layer, "regularization_loss")
            )
        )

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __repr__(self) -> str:
        # Indent nested reprs so containers inside containers stay readable.
        inner = "".join(
            f"\n  ({i}): " + repr(layer).replace("\n", "\n  ")
            for i, layer in enumerate(self.layers)
        )
        return f"Sequential({inner}\n)" if inner else "Sequential()"

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> GradcheckCase:
        """An example instance and input for ``python -m pytest_gradcheck example_nn``."""
        model = cls(
            Linear(4, 6, rng=rng),
            BatchNorm1d(6),
            Tanh(),
            Dropout(0.2, rng=np.random.default_rng(rng.integers(2**63))),
            Linear(6, 3, rng=rng),
        )
        return model, (rng.normal(size=(8, 4)),)


def iter_layers(model: Module | list[Module] | tuple[Module, ...]) -> Iterator[Module]:
    """Yield the leaf modules of ``model``, descending into ``.layers`` recursively.

    Accepts a single module, a container, or a list/tuple of either.
    """
    if isinstance(model, (list, tuple)):
        for item in model:
            yield from iter_layers(item)
    elif isinstance(getattr(model, "layers", None), list):
        yield from iter_layers(model.layers)
    else:
        yield model
