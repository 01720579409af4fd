"""Reference implementations in the shapes people gradient-check most, written for the tests.

Nothing here is the plugin: these are correct, hand-written numpy implementations in the
conventions of cs231n-style assignments and of the nnfs book, with which the plugin's
support for each shape is tested and demonstrated. tests/test_reference_material.py checks
every one of them against a plain central-difference loop, so a test of the checker can trust
them as ground truth. The mutant factories at the end return variants that are wrong in
exactly one gradient, for asserting that a check fails on the right row.

Shapes:

- function pairs ``out, cache = X_forward(...)`` / ``grads = X_backward(dout, cache)``,
  including a two-output LSTM step and an embedding with an integer input;
- value-and-gradient functions ``loss, grad = f(...)``;
- models with ``self.params`` and ``loss(X, y=None)`` returning scores, or ``(loss, grads)``;
- an nnfs-book ``Model`` whose backward starts from its own loss;
- layers with other method signatures: ``backward(x, dy)``, ``forward -> (out, cache)`` with
  ``backward(dout, cache)``, and ``backward -> (dx, grads)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Array = np.ndarray
Cache = Any

# --------------------------------------------------------------------------------------------
# Function pairs
# --------------------------------------------------------------------------------------------


def affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
    """``x`` of shape (N, d1, ..., dk) is flattened per sample to (N, D); ``w`` is (D, M)."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def affine_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    x, w = cache
    flat = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), flat.T @ dout, dout.sum(axis=0)


def relu_forward(x: Array) -> tuple[Array, Cache]:
    return np.maximum(x, 0.0), x


def relu_backward(dout: Array, cache: Cache) -> Array:
    return np.where(cache > 0, dout, 0.0)


def batchnorm_forward(
    x: Array, gamma: Array, beta: Array, bn_param: dict[str, Any]
) -> tuple[Array, Cache]:
    """Batch normalisation of (N, D) input.

    ``bn_param``: 'mode' ('train' or 'test', required), 'eps' (1e-5), 'momentum' (0.9),
    'running_mean' / 'running_var' (zeros when absent). In train mode the batch statistics
    are used and the running averages are updated and written back into ``bn_param``; in
    test mode the running statistics are used and nothing is written.
    """
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d, dtype=x.dtype))
    running_var = bn_param.get("running_var", np.zeros(d, dtype=x.dtype))
    if mode == "train":
        mean, var = x.mean(axis=0), x.var(axis=0)
        bn_param["running_mean"] = momentum * running_mean + (1.0 - momentum) * mean
        bn_param["running_var"] = momentum * running_var + (1.0 - momentum) * var
    elif mode == "test":
        mean, var = running_mean, running_var
    else:
        raise ValueError(f"invalid batchnorm mode {mode!r}")
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, (xhat, gamma, inv_std, mode)


def batchnorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    xhat, gamma, inv_std, mode = cache
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    dxhat = dout * gamma
    if mode == "test":  # the statistics are constants
        return dxhat * inv_std, dgamma, dbeta
    # The batch mean and variance depend on every sample: remove the shared shift and scale.
    dx = inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
    return dx, dgamma, dbeta


def layernorm_forward(
    x: Array, gamma: Array, beta: Array, ln_param: dict[str, Any]
) -> tuple[Array, Cache]:
    """Per-sample normalisation of (N, D) input over its D features, the same in train and
    test mode; ``ln_param``: 'eps' (1e-5). Nothing is written into ``ln_param``."""
    eps = ln_param.get("eps", 1e-5)
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv_std
    return gamma * xhat + beta, (xhat, gamma, inv_std)


def layernorm_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    xhat, gamma, inv_std = cache
    dxhat = dout * gamma
    mean_dxhat = dxhat.mean(axis=1, keepdims=True)
    dx = inv_std * (dxhat - mean_dxhat - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def dropout_forward(x: Array, dropout_param: dict[str, Any]) -> tuple[Array, Cache]:
    """Inverted dropout; ``dropout_param``: 'p' (probability of KEEPING a unit), 'mode',
    optional 'seed', which reseeds numpy's global generator (so masks are reproducible)."""
    p, mode = dropout_param["p"], dropout_param["mode"]
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    if mode == "train":
        mask = (np.random.rand(*x.shape) < p) / p
        return x * mask, (mode, mask)
    if mode == "test":
        return x.copy(), (mode, None)
    raise ValueError(f"invalid dropout mode {mode!r}")


def dropout_backward(dout: Array, cache: Cache) -> Array:
    mode, mask = cache
    dx: Array = dout * mask if mode == "train" else dout.copy()
    return dx


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # exact, and never overflows


def lstm_step_forward(
    x: Array, prev_h: Array, prev_c: Array, Wx: Array, Wh: Array, b: Array
) -> tuple[Array, Array, Cache]:
    """One LSTM step. x (N, D), prev_h and prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,).

    Gate order in the 4H axis: input, forget, output, candidate.
    """
    a = x @ Wx + prev_h @ Wh + b
    i, f, o, g = np.split(a, 4, axis=1)
    i, f, o, g = _sigmoid(i), _sigmoid(f), _sigmoid(o), np.tanh(g)
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(
    dnext_h: Array, dnext_c: Array, cache: Cache
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """Returns (dx, dprev_h, dprev_c, dWx, dWh, db)."""
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    dc = dnext_c + dnext_h * o * (1.0 - tanh_c**2)
    da = np.concatenate(
        [
            dc * g * i * (1.0 - i),
            dc * prev_c * f * (1.0 - f),
            dnext_h * tanh_c * o * (1.0 - o),
            dc * i * (1.0 - g**2),
        ],
        axis=1,
    )
    return da @ Wx.T, da @ Wh.T, dc * f, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def word_embedding_forward(x: Array, W: Array) -> tuple[Array, Cache]:
    """Look up rows of ``W`` (V, D) for integer indices ``x`` of any shape."""
    return W[x], (x, W.shape)


def word_embedding_backward(dout: Array, cache: Cache) -> Array:
    x, w_shape = cache
    dW = np.zeros(w_shape, dtype=dout.dtype)
    np.add.at(dW, x, dout)  # repeated indices accumulate, which fancy-index `+=` would not
    return dW


# --------------------------------------------------------------------------------------------
# Value-and-gradient losses
# --------------------------------------------------------------------------------------------


def _log_softmax(x: Array) -> Array:
    shifted = x - x.max(axis=-1, keepdims=True)
    out: Array = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return out


def softmax_loss(x: Array, y: Array) -> tuple[float, Array]:
    """Mean cross-entropy of softmax(x) for scores x (N, C) and integer labels y (N,)."""
    n = x.shape[0]
    log_p = _log_softmax(x)
    loss = -log_p[np.arange(n), y].mean()
    dx = np.exp(log_p)
    dx[np.arange(n), y] -= 1.0
    return float(loss), dx / n


def svm_loss(x: Array, y: Array) -> tuple[float, Array]:
    """Mean multiclass hinge loss with margin 1, scores x (N, C), labels y (N,)."""
    n = x.shape[0]
    rows = np.arange(n)
    margins = np.maximum(0.0, x - x[rows, y][:, None] + 1.0)
    margins[rows, y] = 0.0
    active = (margins > 0).astype(x.dtype)
    dx = active.copy()
    dx[rows, y] = -active.sum(axis=1)
    return float(margins.sum() / n), dx / n


def softmax_loss_naive(W: Array, X: Array, y: Array, reg: float) -> tuple[float, Array]:
    """Softmax classifier loss with explicit loops: W (D, C), X (N, D), y (N,), L2 penalty
    ``reg * sum(W**2)`` (no 0.5, as in the linear-classifier assignments)."""
    n, c = X.shape[0], W.shape[1]
    loss = 0.0
    dW = np.zeros_like(W)
    for k in range(n):
        scores = X[k] @ W
        scores = scores - scores.max()
        probs = np.exp(scores) / np.exp(scores).sum()
        loss -= np.log(probs[y[k]])
        for j in range(c):
            dW[:, j] += (probs[j] - (j == y[k])) * X[k]
    loss = loss / n + reg * np.sum(W * W)
    return float(loss), dW / n + 2.0 * reg * W


def temporal_softmax_loss(x: Array, y: Array, mask: Array) -> tuple[float, Array]:
    """Softmax loss over a sequence: x (N, T, V), y (N, T) ints, mask (N, T) bool.

    Masked-out steps contribute nothing; the sum is divided by N (not by the number of
    unmasked steps).
    """
    n, t, v = x.shape
    log_p = _log_softmax(x.reshape(n * t, v))
    flat_y, flat_mask = y.reshape(n * t), mask.reshape(n * t)
    rows = np.arange(n * t)
    loss = -(flat_mask * log_p[rows, flat_y]).sum() / n
    dx = np.exp(log_p)
    dx[rows, flat_y] -= 1.0
    dx *= flat_mask[:, None] / n
    return float(loss), dx.reshape(n, t, v)


# --------------------------------------------------------------------------------------------
# Models with a loss method
# --------------------------------------------------------------------------------------------


class TwoLayerNet:
    """affine - relu - affine - softmax, with L2 penalty ``0.5 * reg * sum(W**2)`` on W1, W2."""

    def __init__(
        self,
        input_dim: int = 3 * 32 * 32,
        hidden_dim: int = 100,
        num_classes: int = 10,
        weight_scale: float = 1e-3,
        reg: float = 0.0,
        seed: int | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)  # never touches numpy's global generator
        self.reg = reg
        self.params: dict[str, Array] = {
            "W1": weight_scale * rng.standard_normal((input_dim, hidden_dim)),
            "b1": np.zeros(hidden_dim),
            "W2": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b2": np.zeros(num_classes),
        }

    def loss(self, X: Array, y: Array | None = None) -> Any:
        """Scores (N, C) when ``y`` is None, else ``(loss, grads)`` keyed like ``params``."""
        p = self.params
        hidden, cache1 = affine_forward(X, p["W1"], p["b1"])
        hidden, relu_cache = relu_forward(hidden)
        scores, cache2 = affine_forward(hidden, p["W2"], p["b2"])
        if y is None:
            return scores
        loss, dscores = softmax_loss(scores, y)
        loss += 0.5 * self.reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
        grads: dict[str, Array] = {}
        dhidden, grads["W2"], grads["b2"] = affine_backward(dscores, cache2)
        dhidden = relu_backward(dhidden, relu_cache)
        _, grads["W1"], grads["b1"] = affine_backward(dhidden, cache1)
        grads["W1"] = grads["W1"] + self.reg * p["W1"]
        grads["W2"] = grads["W2"] + self.reg * p["W2"]
        return float(loss), {name: grads[name] for name in p}


_NORMALIZATIONS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "batchnorm": (batchnorm_forward, batchnorm_backward),
    "layernorm": (layernorm_forward, layernorm_backward),
}


class FullyConnectedNet:
    """{affine - [batchnorm or layernorm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Parameters ``W1..WL``, ``b1..bL`` and, with ``normalization`` 'batchnorm' or 'layernorm',
    ``gamma1..gamma(L-1)`` / ``beta1..beta(L-1)``, all cast to ``dtype``. ``bn_params`` holds
    one dict per hidden layer (``{'mode': 'train'}`` for batchnorm, ``{}`` for layernorm,
    empty list without normalization); ``dropout_param`` is
    ``{'mode', 'p'}`` (plus 'seed' when ``seed`` is given) when ``dropout_keep_ratio < 1``,
    else empty. ``loss`` switches every mode to 'test' when ``y`` is None, 'train' otherwise.
    """

    def __init__(
        self,
        hidden_dims: list[int],
        input_dim: int = 3 * 32 * 32,
        num_classes: int = 10,
        dropout_keep_ratio: float = 1,
        normalization: str | None = None,
        reg: float = 0.0,
        weight_scale: float = 1e-2,
        dtype: type[np.floating[Any]] = np.float32,
        seed: int | None = None,
    ) -> None:
        if normalization not in (None, *_NORMALIZATIONS):
            raise ValueError(f"unsupported normalization {normalization!r}")
        self.normalization = normalization
        self.use_dropout = dropout_keep_ratio != 1
        self.reg = reg
        self.num_layers = 1 + len(hidden_dims)
        self.dtype = dtype
        rng = np.random.default_rng(seed)
        dims = [input_dim, *hidden_dims, num_classes]
        self.params: dict[str, Array] = {}
        for k in range(1, self.num_layers + 1):
            fan_in, fan_out = dims[k - 1], dims[k]
            self.params[f"W{k}"] = weight_scale * rng.standard_normal((fan_in, fan_out))
            self.params[f"b{k}"] = np.zeros(fan_out)
            if normalization and k < self.num_layers:
                self.params[f"gamma{k}"] = np.ones(fan_out)
                self.params[f"beta{k}"] = np.zeros(fan_out)
        for name, value in self.params.items():
            self.params[name] = value.astype(dtype)
        self.dropout_param: dict[str, Any] = {}
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": dropout_keep_ratio}
            if seed is not None:
                self.dropout_param["seed"] = seed
        self.bn_params: list[dict[str, Any]] = []
        if normalization == "batchnorm":
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]
        elif normalization == "layernorm":
            self.bn_params = [{} for _ in range(self.num_layers - 1)]

    def loss(self, X: Array, y: Array | None = None) -> Any:
        """Scores (N, C) when ``y`` is None, else ``(loss, grads)`` keyed like ``params``."""
        X = X.astype(self.dtype)
        mode = "test" if y is None else "train"
        if self.use_dropout:
            self.dropout_param["mode"] = mode
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        p = self.params
        caches = []
        h = X
        for k in range(1, self.num_layers):
            h, affine_cache = affine_forward(h, p[f"W{k}"], p[f"b{k}"])
            bn_cache = drop_cache = None
            if self.normalization:
                norm_forward = _NORMALIZATIONS[self.normalization][0]
                h, bn_cache = norm_forward(h, p[f"gamma{k}"], p[f"beta{k}"], self.bn_params[k - 1])
            h, relu_cache = relu_forward(h)
            if self.use_dropout:
                h, drop_cache = dropout_forward(h, self.dropout_param)
            caches.append((affine_cache, bn_cache, relu_cache, drop_cache))
        last = self.num_layers
        scores, last_cache = affine_forward(h, p[f"W{last}"], p[f"b{last}"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads: dict[str, Array] = {}
        dh, grads[f"W{last}"], grads[f"b{last}"] = affine_backward(dscores, last_cache)
        for k in range(self.num_layers - 1, 0, -1):
            affine_cache, bn_cache, relu_cache, drop_cache = caches[k - 1]
            if drop_cache is not None:
                dh = dropout_backward(dh, drop_cache)
            dh = relu_backward(dh, relu_cache)
            if self.normalization:
                norm_backward = _NORMALIZATIONS[self.normalization][1]
                dh, grads[f"gamma{k}"], grads[f"beta{k}"] = norm_backward(dh, bn_cache)
            dh, grads[f"W{k}"], grads[f"b{k}"] = affine_backward(dh, affine_cache)
        for k in range(1, self.num_layers + 1):
            W = p[f"W{k}"]
            loss += 0.5 * self.reg * np.sum(W * W)
            grads[f"W{k}"] = grads[f"W{k}"] + self.reg * W
        # Report gradients in the order of params, as the optimiser loop walks them.
        return float(loss), {name: grads[name] for name in p}


# --------------------------------------------------------------------------------------------
# nnfs-book style: layers set attributes, the model's backward starts from its own loss
# --------------------------------------------------------------------------------------------


class Layer_Input:
    def forward(self, inputs: Array, training: bool) -> None:
        self.output = inputs


class Layer_Dense:
    """``inputs @ weights + biases`` with biases of shape (1, n_neurons), as in the book."""

    def __init__(
        self,
        n_inputs: int,
        n_neurons: int,
        *,
        weight_regularizer_l2: float = 0.0,
        bias_regularizer_l2: float = 0.0,
        seed: int | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.weights = 0.1 * rng.standard_normal((n_inputs, n_neurons))
        self.biases = np.zeros((1, n_neurons))
        self.weight_regularizer_l2 = weight_regularizer_l2
        self.bias_regularizer_l2 = bias_regularizer_l2

    def forward(self, inputs: Array, training: bool) -> None:
        self.inputs = inputs
        self.output = inputs @ self.weights + self.biases

    def backward(self, dvalues: Array) -> None:
        self.dweights = self.inputs.T @ dvalues
        self.dbiases = dvalues.sum(axis=0, keepdims=True)
        # The regulariser is part of the objective, so its gradient goes into dweights.
        if self.weight_regularizer_l2 > 0:
            self.dweights += 2.0 * self.weight_regularizer_l2 * self.weights
        if self.bias_regularizer_l2 > 0:
            self.dbiases += 2.0 * self.bias_regularizer_l2 * self.biases
        self.dinputs = dvalues @ self.weights.T


class Layer_Dropout:
    """``rate`` is the DROP rate; masks come from numpy's global generator, as in the book."""

    def __init__(self, rate: float) -> None:
        self.rate = 1.0 - rate

    def forward(self, inputs: Array, training: bool) -> None:
        self.inputs = inputs
        if not training:
            self.output = inputs.copy()
            return
        self.binary_mask = np.random.binomial(1, self.rate, size=inputs.shape) / self.rate
        self.output = inputs * self.binary_mask

    def backward(self, dvalues: Array) -> None:
        self.dinputs = dvalues * self.binary_mask


class Activation_ReLU:
    def forward(self, inputs: Array, training: bool) -> None:
        self.inputs = inputs
        self.output = np.maximum(0.0, inputs)

    def backward(self, dvalues: Array) -> None:
        self.dinputs = dvalues.copy()
        self.dinputs[self.inputs <= 0] = 0.0


class Activation_Softmax:
    def forward(self, inputs: Array, training: bool) -> None:
        exp = np.exp(inputs - inputs.max(axis=1, keepdims=True))
        self.output = exp / exp.sum(axis=1, keepdims=True)

    def backward(self, dvalues: Array) -> None:
        s = self.output  # J^T g = s * (g - <g, s>) per row
        self.dinputs = s * (dvalues - (dvalues * s).sum(axis=1, keepdims=True))


class Loss:
    """Base loss. As in the book, ``accumulated_sum``/``accumulated_count`` only exist after
    ``new_pass()``: calling ``calculate`` on a fresh loss raises AttributeError."""

    accumulated_sum: float
    accumulated_count: int

    def forward(self, output: Array, y: Array) -> Array:
        raise NotImplementedError

    def remember_trainable_layers(self, trainable_layers: list[Layer_Dense]) -> None:
        self.trainable_layers = trainable_layers

    def regularization_loss(self) -> float:
        total = 0.0
        for layer in self.trainable_layers:
            total += layer.weight_regularizer_l2 * np.sum(layer.weights * layer.weights)
            total += layer.bias_regularizer_l2 * np.sum(layer.biases * layer.biases)
        return float(total)

    def calculate(
        self, output: Array, y: Array, *, include_regularization: bool = False
    ) -> float | tuple[float, float]:
        sample_losses = self.forward(output, y)
        data_loss = float(np.mean(sample_losses))
        self.accumulated_sum += float(np.sum(sample_losses))
        self.accumulated_count += len(sample_losses)
        if not include_regularization:
            return data_loss
        return data_loss, self.regularization_loss()

    def calculate_accumulated(self) -> float:
        return self.accumulated_sum / self.accumulated_count

    def new_pass(self) -> None:
        self.accumulated_sum = 0.0
        self.accumulated_count = 0


class Loss_CategoricalCrossentropy(Loss):
    """Integer labels (N,) or one-hot (N, C); predictions are clipped away from 0 and 1."""

    def forward(self, output: Array, y: Array) -> Array:
        clipped = np.clip(output, 1e-7, 1 - 1e-7)
        confidences: Array
        if y.ndim == 1:
            confidences = clipped[np.arange(len(clipped)), y]
        else:
            confidences = np.sum(clipped * y, axis=1)
        losses: Array = -np.log(confidences)
        return losses

    def backward(self, dvalues: Array, y: Array) -> None:
        samples, labels = dvalues.shape
        one_hot = np.eye(labels)[y] if y.ndim == 1 else y
        self.dinputs = -one_hot / dvalues / samples


class Activation_Softmax_Loss_CategoricalCrossentropy:
    """The book's shortcut for softmax followed by cross-entropy: backward in one step."""

    def backward(self, dvalues: Array, y: Array) -> None:
        samples = len(dvalues)
        labels = np.argmax(y, axis=1) if y.ndim == 2 else y
        self.dinputs = dvalues.copy()
        self.dinputs[np.arange(samples), labels] -= 1.0
        self.dinputs = self.dinputs / samples


_Shortcut = Activation_Softmax_Loss_CategoricalCrossentropy


class Model:
    """``add`` layers, ``set(loss=...)``, ``finalize()``; then ``forward(X, training)`` and
    ``backward(output, y)``, which starts from the loss and leaves every layer's gradients in
    its ``dweights``/``dbiases``/``dinputs``. The objective those describe is
    ``sum(loss.calculate(output, y, include_regularization=True))``."""

    def __init__(self) -> None:
        self.layers: list[Any] = []
        # Set by finalize() when the model ends in softmax + cross-entropy.
        self.softmax_classifier_output: _Shortcut | None = None

    def add(self, layer: Any) -> None:
        self.layers.append(layer)

    def set(self, *, loss: Loss) -> None:
        self.loss = loss

    def finalize(self) -> None:
        self.input_layer = Layer_Input()
        chain = [self.input_layer, *self.layers, self.loss]
        for i, layer in enumerate(self.layers, start=1):
            layer.prev, layer.next = chain[i - 1], chain[i + 1]
        self.trainable_layers = [layer for layer in self.layers if hasattr(layer, "weights")]
        self.loss.remember_trainable_layers(self.trainable_layers)
        if isinstance(self.layers[-1], Activation_Softmax) and isinstance(
            self.loss, Loss_CategoricalCrossentropy
        ):
            self.softmax_classifier_output = Activation_Softmax_Loss_CategoricalCrossentropy()

    def forward(self, X: Array, training: bool) -> Array:
        self.input_layer.forward(X, training)
        for layer in self.layers:
            layer.forward(layer.prev.output, training)
        return self.layers[-1].output  # type: ignore[no-any-return]

    def backward(self, output: Array, y: Array) -> None:
        if self.softmax_classifier_output is not None:
            self.softmax_classifier_output.backward(output, y)
            self.layers[-1].dinputs = self.softmax_classifier_output.dinputs
            rest = self.layers[:-1]
        else:
            self.loss.backward(output, y)  # type: ignore[attr-defined]
            rest = self.layers
        for layer in reversed(rest):
            layer.backward(layer.next.dinputs)


def nnfs_model(
    n_inputs: int = 4,
    n_hidden: int = 6,
    n_classes: int = 3,
    *,
    l2: float = 5e-3,
    dropout: float = 0.0,
    softmax_shortcut: bool = True,
    seed: int = 0,
    first_layer: type[Layer_Dense] = Layer_Dense,
) -> Model:
    """A finalized Dense(L2) - ReLU - [Dropout] - Dense(L2) - Softmax classifier.

    ``softmax_shortcut=False`` drops the book's softmax/cross-entropy shortcut after
    ``finalize``, so that backward goes through the loss's and the softmax's own backward.
    ``first_layer`` is the class of the first Dense layer (a :func:`mutant_layer`, say).
    """
    model = Model()
    model.add(first_layer(n_inputs, n_hidden, weight_regularizer_l2=l2, seed=seed))
    model.add(Activation_ReLU())
    if dropout:
        model.add(Layer_Dropout(dropout))
    model.add(Layer_Dense(n_hidden, n_classes, weight_regularizer_l2=l2, seed=seed + 1))
    model.add(Activation_Softmax())
    model.set(loss=Loss_CategoricalCrossentropy())
    model.finalize()
    if not softmax_shortcut:
        model.softmax_classifier_output = None
    return model


# --------------------------------------------------------------------------------------------
# Other method signatures, each an affine layer ``x @ W + b`` on (N, D) input
# --------------------------------------------------------------------------------------------


class AffineInputBack:
    """``backward(x, dy)``: the caller hands the input back; gradients land in ``dW``/``db``."""

    def __init__(self, W: Array, b: Array) -> None:
        self.W, self.b = W, b

    def forward(self, x: Array) -> Array:
        out: Array = x @ self.W + self.b
        return out

    def backward(self, x: Array, dy: Array) -> Array:
        self.dW = x.T @ dy
        self.db = dy.sum(axis=0)
        dx: Array = dy @ self.W.T
        return dx


class AffineCacheMethods:
    """Methods in the function-pair shape: ``forward(x) -> (out, cache)``,
    ``backward(dout, cache) -> dx``; gradients land in ``grads`` keyed like ``params``."""

    def __init__(self, W: Array, b: Array) -> None:
        self.params = {"W": W, "b": b}
        self.grads: dict[str, Array] = {}

    def forward(self, x: Array) -> tuple[Array, Cache]:
        return x @ self.params["W"] + self.params["b"], x

    def backward(self, dout: Array, cache: Cache) -> Array:
        self.grads["W"] = cache.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        dx: Array = dout @ self.params["W"].T
        return dx


class AffineGradsReturned:
    """``backward(dout) -> (dx, grads)``: the parameter gradients are returned in a dict keyed
    like ``params``, never stored on the layer."""

    def __init__(self, W: Array, b: Array) -> None:
        self.params = {"W": W, "b": b}

    def forward(self, x: Array) -> Array:
        self._x = x
        out: Array = x @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: Array) -> tuple[Array, dict[str, Array]]:
        grads = {"W": self._x.T @ dout, "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T, grads


# --------------------------------------------------------------------------------------------
# Mutants: each wrong in exactly one gradient
# --------------------------------------------------------------------------------------------

MUTANT_SCALE = 2.0


def mutant_backward(
    backward: Callable[..., Any], which: int, scale: float = MUTANT_SCALE
) -> Callable[..., Any]:
    """A pair's backward whose ``which``-th returned gradient is multiplied by ``scale``
    (``which=0`` for a backward that returns a single array)."""

    def wrong(*args: Any) -> Any:
        grads = backward(*args)
        if not isinstance(grads, tuple):
            if which != 0:
                raise IndexError(f"{backward.__name__} returns one gradient; which must be 0")
            return grads * scale
        return tuple(g * scale if i == which else g for i, g in enumerate(grads))

    wrong.__name__ = backward.__name__
    wrong.__qualname__ = f"mutant_backward({backward.__name__}, {which})"
    return wrong


def mutant_value_and_grad(
    fn: Callable[..., tuple[float, Any]], which: int = 0, scale: float = MUTANT_SCALE
) -> Callable[..., tuple[float, Any]]:
    """A value-and-gradient function whose loss is unchanged and whose ``which``-th gradient
    (the only one when it returns a single array) is multiplied by ``scale``."""

    def wrong(*args: Any) -> tuple[float, Any]:
        loss, grads = fn(*args)
        if isinstance(grads, tuple):
            return loss, tuple(g * scale if i == which else g for i, g in enumerate(grads))
        if which != 0:
            raise IndexError(f"{fn.__name__} returns one gradient; which must be 0")
        return loss, grads * scale

    wrong.__name__ = fn.__name__
    wrong.__qualname__ = f"mutant_value_and_grad({fn.__name__}, {which})"
    return wrong


def mutant_model(cls: type[Any], key: str, scale: float = MUTANT_SCALE) -> type[Any]:
    """A subclass of a ``loss``-method model class whose ``grads[key]`` is multiplied by
    ``scale`` (loss and every other gradient unchanged). Build it with the class's arguments."""

    def loss(self: Any, X: Array, y: Array | None = None) -> Any:
        result = cls.loss(self, X, y)
        if y is None:
            return result
        value, grads = result
        return value, {k: g * scale if k == key else g for k, g in grads.items()}

    return type(f"{cls.__name__}_wrong_{key}", (cls,), {"loss": loss})


def mutant_layer(
    cls: type[Any], which: str | int | tuple[int, str], scale: float = MUTANT_SCALE
) -> type[Any]:
    """A subclass of a layer class whose backward gets one gradient wrong by ``scale``.

    ``which``: an attribute backward sets (``'dweights'``), a key of a gradient dict
    attribute (``'grads.Wh'``), an index into backward's returned tuple (``1``), or an index
    and a key into a dict in that tuple (``(1, 'W')`` for ``return dx, {'W': dW, ...}``).
    """

    def backward(self: Any, *args: Any) -> Any:
        result = cls.backward(self, *args)
        if isinstance(which, int):
            return tuple(g * scale if i == which else g for i, g in enumerate(result))
        if isinstance(which, tuple):
            index, name = which
            scaled = {k: g * scale if k == name else g for k, g in result[index].items()}
            return tuple(scaled if i == index else g for i, g in enumerate(result))
        attr, _, key = which.partition(".")
        if key:
            getattr(self, attr)[key] = getattr(self, attr)[key] * scale
        else:
            setattr(self, attr, getattr(self, attr) * scale)
        return result

    suffix = "_".join(map(str, which)) if isinstance(which, tuple) else which
    return type(f"{cls.__name__}_wrong_{suffix}", (cls,), {"backward": backward})
