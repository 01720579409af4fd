"""Whole models checked through their loss: ``loss, grads = model.loss(*data)``.

Three models in the style of the classic course assignments, written from scratch for the
benchmarks of whole-model checks (``benchmarks/bench_models.py``):

* :class:`FullyConnectedNet`: ``{affine - batchnorm - relu - dropout} x L - affine - softmax``
  with L2 regularisation;
* :class:`ThreeLayerConvNet`: ``conv - relu - 2x2 max pool - affine - relu - affine - softmax``;
* :class:`CaptioningRNN`: image features projected to the LSTM's first hidden state, word
  embeddings, an LSTM over the caption, a temporal affine layer and a masked temporal softmax
  loss.

Unlike the layers of :mod:`example_nn.layers`, these follow the assignments' conventions, not
this package's layer protocol: parameters in one ``params`` dict, ``loss(X, y)`` returning
``(loss, grads)`` with ``grads`` keyed like ``params``, batchnorm's running statistics in
``bn_params`` dicts (``{'mode': 'train' | 'test', 'running_mean', 'running_var'}``) and a
``dropout_param`` dict whose mask is drawn from **numpy's global random stream**, reseeded
only when the dict holds a ``seed``. A checker has to replay that stream for every evaluation.

The building blocks are private module functions (``_affine_forward``, ...): tests plant bugs
in them with ``monkeypatch``. The models declare no ``gradcheck_case`` and the module defines no
public layer or function pair, so discovery (``python -m pytest_gradcheck example_nn``) leaves
them out: a full check of a whole model costs thousands of evaluations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import col2im, im2col

__all__ = ["CaptioningRNN", "FullyConnectedNet", "ThreeLayerConvNet"]

Array = np.ndarray
Grads = dict[str, np.ndarray]


# -- building blocks -----------------------------------------------------------------------


def _affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Any]:
    """``x`` (N, d1, ..., dk) flattened per sample to (N, D), times ``w`` (D, M), plus ``b``."""
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w)


def _affine_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    x, w = cache
    flat = x.reshape(x.shape[0], -1)
    return (dout @ w.T).reshape(x.shape), flat.T @ dout, dout.sum(axis=0)


def _relu_forward(x: Array) -> tuple[Array, Any]:
    return np.maximum(x, 0.0), x > 0


def _relu_backward(dout: Array, cache: Any) -> Array:
    return dout * cache


def _batchnorm_forward(
    x: Array, gamma: Array, beta: Array, bn_param: dict[str, Any]
) -> tuple[Array, Any]:
    """Batch normalisation over the first axis of (N, D); in train mode the batch statistics
    normalise and the running statistics in ``bn_param`` are updated."""
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d))
    running_var = bn_param.get("running_var", np.zeros(d))
    if bn_param["mode"] == "train":
        mu = x.mean(axis=0)
        xc = x - mu
        var = (xc * xc).mean(axis=0)
        inv_std = 1.0 / np.sqrt(var + eps)
        xhat = xc * inv_std
        out = gamma * xhat + beta
        bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mu
        bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
        return out, (xhat, gamma, inv_std)
    xhat = (x - running_mean) / np.sqrt(running_var + eps)
    return gamma * xhat + beta, None


def _batchnorm_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    xhat, gamma, inv_std = cache
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    # d/dx of (x - mean) / std through the batch mean and variance, in one line.
    dx = inv_std * (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0))
    return dx, dgamma, dbeta


def _dropout_forward(x: Array, dropout_param: dict[str, Any]) -> tuple[Array, Any]:
    """Inverted dropout keeping each unit with probability ``p``; the mask comes from numpy's
    global stream, reseeded first when ``dropout_param`` holds a ``seed``."""
    p = dropout_param["p"]
    if dropout_param["mode"] != "train" or p >= 1.0:
        return x, None
    if dropout_param.get("seed") is not None:
        np.random.seed(dropout_param["seed"])
    mask = (np.random.rand(*x.shape) < p) / p
    return x * mask, mask


def _dropout_backward(dout: Array, cache: Any) -> Array:
    return dout if cache is None else dout * cache


def _softmax_loss(scores: Array, y: Array) -> tuple[float, Array]:
    """Mean cross-entropy of integer labels ``y`` under softmax(scores), and its gradient."""
    n = scores.shape[0]
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float(log_p[np.arange(n), y].mean())
    dscores = np.exp(log_p)
    dscores[np.arange(n), y] -= 1.0
    return loss, dscores / n


def _conv_forward(x: Array, w: Array, b: Array, pad: int) -> tuple[Array, Any]:
    """Stride-1 cross-correlation of (N, C, H, W) with filters (F, C, k, k), zero padding."""
    n = x.shape[0]
    f, _, kh, kw = w.shape
    cols, (oh, ow) = im2col(x, (kh, kw), 1, pad)
    out = cols @ w.reshape(f, -1).T + b  # (N * oh * ow, F)
    return out.reshape(n, oh, ow, f).transpose(0, 3, 1, 2), (x.shape, cols, w, pad)


def _conv_backward(
    dout: Array, cache: Any, need_dx: bool = True
) -> tuple[Array | None, Array, Array]:
    """(dx, dw, db); dx is None when not needed (a first layer: the images are data)."""
    x_shape, cols, w, pad = cache
    f, _, kh, kw = w.shape
    d2 = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    dw = (d2.T @ cols).reshape(w.shape)
    db = d2.sum(axis=0)
    if not need_dx:
        return None, dw, db
    dx = col2im(d2 @ w.reshape(f, -1), x_shape, (kh, kw), 1, pad)
    return dx, dw, db


def _max_pool_forward(x: Array) -> tuple[Array, Any]:
    """2x2 max pooling with stride 2 of (N, C, H, W), H and W even; the gradient goes to the
    first maximum of each window."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)[..., None]
    return np.take_along_axis(win, arg, axis=-1)[..., 0], (x.shape, arg)


def _max_pool_backward(dout: Array, cache: Any) -> Array:
    (n, c, h, w), arg = cache
    dwin = np.zeros((n, c, h // 2, w // 2, 4))
    np.put_along_axis(dwin, arg, dout[..., None], axis=-1)
    dwin = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return dwin.reshape(n, c, h, w)


def _sigmoid(x: Array) -> Array:
    out: Array = 0.5 * (1.0 + np.tanh(0.5 * x))  # exact, and never overflows
    return out


def _lstm_step_forward(
    x: Array, h_prev: Array, c_prev: Array, wx: Array, wh: Array, b: Array
) -> tuple[Array, Array, Any]:
    """One LSTM step; gates along the last axis in the order input, forget, output, candidate."""
    a = x @ wx + h_prev @ wh + b
    hd = h_prev.shape[1]
    i = _sigmoid(a[:, :hd])
    f = _sigmoid(a[:, hd : 2 * hd])
    o = _sigmoid(a[:, 2 * hd : 3 * hd])
    g = np.tanh(a[:, 3 * hd :])
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return h, c, (x, h_prev, c_prev, wx, wh, i, f, o, g, tanh_c)


def _lstm_step_backward(
    dh: Array, dc: Array, cache: Any
) -> tuple[Array, Array, Array, Array, Array, Array]:
    """(dx, dh_prev, dc_prev, dWx, dWh, db) of one step, given the gradients of h and c."""
    x, h_prev, c_prev, wx, wh, i, f, o, g, tanh_c = cache
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    da = np.concatenate(
        [
            dc_total * g * i * (1.0 - i),
            dc_total * c_prev * f * (1.0 - f),
            dh * tanh_c * o * (1.0 - o),
            dc_total * i * (1.0 - g * g),
        ],
        axis=1,
    )
    return da @ wx.T, da @ wh.T, dc_total * f, x.T @ da, h_prev.T @ da, da.sum(axis=0)


def _lstm_forward(x: Array, h0: Array, wx: Array, wh: Array, b: Array) -> tuple[Array, Any]:
    """An LSTM over x (N, T, D) from hidden state h0 and a zero cell; all hidden states."""
    n, t_steps, _ = x.shape
    h, c = h0, np.zeros_like(h0)
    hs = np.empty((n, t_steps, h0.shape[1]))
    caches = []
    for t in range(t_steps):
        h, c, cache = _lstm_step_forward(x[:, t], h, c, wx, wh, b)
        hs[:, t] = h
        caches.append(cache)
    return hs, caches


def _lstm_backward(dhs: Array, caches: Any) -> tuple[Array, Array, Array, Array, Array]:
    """(dx, dh0, dWx, dWh, db) from the gradients of all hidden states."""
    n, t_steps, hd = dhs.shape
    x0, _, _, wx, wh = caches[0][:5]
    dx = np.empty((n, t_steps, x0.shape[1]))
    dh, dc = np.zeros((n, hd)), np.zeros((n, hd))
    dwx, dwh, db = np.zeros_like(wx), np.zeros_like(wh), np.zeros(wx.shape[1])
    for t in reversed(range(t_steps)):
        dx[:, t], dh, dc, dwx_t, dwh_t, db_t = _lstm_step_backward(dh + dhs[:, t], dc, caches[t])
        dwx += dwx_t
        dwh += dwh_t
        db += db_t
    return dx, dh, dwx, dwh, db


def _embedding_forward(words: Array, w: Array) -> tuple[Array, Any]:
    return w[words], (words, w.shape)


def _embedding_backward(dout: Array, cache: Any) -> Array:
    words, shape = cache
    dw = np.zeros(shape)
    np.add.at(dw, words.ravel(), dout.reshape(-1, shape[1]))
    return dw


def _temporal_affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Any]:
    n, t, d = x.shape
    return (x.reshape(n * t, d) @ w + b).reshape(n, t, -1), (x, w)


def _temporal_affine_backward(dout: Array, cache: Any) -> tuple[Array, Array, Array]:
    x, w = cache
    n, t, d = x.shape
    d2 = dout.reshape(n * t, -1)
    return (d2 @ w.T).reshape(n, t, d), x.reshape(n * t, d).T @ d2, d2.sum(axis=0)


def _temporal_softmax_loss(x: Array, y: Array, mask: Array) -> tuple[float, Array]:
    """Cross-entropy summed over the time steps where ``mask`` is true, averaged over the
    batch, of scores x (N, T, V) against labels y (N, T)."""
    n, t, v = x.shape
    flat, yf, mf = x.reshape(n * t, v), y.reshape(n * t), mask.reshape(n * t)
    shifted = flat - flat.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -float((mf * log_p[np.arange(n * t), yf]).sum()) / n
    dx = np.exp(log_p)
    dx[np.arange(n * t), yf] -= 1.0
    dx *= mf[:, None] / n
    return loss, dx.reshape(n, t, v)


# -- models ----------------------------------------------------------------------------------


class FullyConnectedNet:
    """``{affine - batchnorm - relu - dropout} x L - affine - softmax`` with L2 regularisation.

    Parameters ``W1, b1, gamma1, beta1, ..., W{L+1}, b{L+1}``; ``bn_params`` holds one dict
    per batchnorm layer, ``dropout_param`` the keep probability ``p`` (and a ``seed`` when
    one is given: the assignments' way of making dropout repeatable; without it every call
    draws a fresh mask from numpy's global stream). ``loss(X)`` returns the class scores in
    test mode, ``loss(X, y)`` the training loss and its gradients.
    """

    def __init__(
        self,
        hidden_dims: tuple[int, ...] = (20, 30, 20),
        input_dim: int = 15,
        num_classes: int = 10,
        keep_prob: float = 0.75,
        reg: float = 0.1,
        weight_scale: float = 5e-2,
        seed: int = 0,
        dropout_seed: int | None = None,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.reg = reg
        self.num_layers = len(hidden_dims) + 1
        dims = [input_dim, *hidden_dims, num_classes]
        self.params: dict[str, np.ndarray] = {}
        for k in range(self.num_layers):
            self.params[f"W{k + 1}"] = weight_scale * rng.standard_normal((dims[k], dims[k + 1]))
            self.params[f"b{k + 1}"] = np.zeros(dims[k + 1])
            if k < len(hidden_dims):
                self.params[f"gamma{k + 1}"] = np.ones(dims[k + 1])
                self.params[f"beta{k + 1}"] = np.zeros(dims[k + 1])
        self.bn_params: list[dict[str, Any]] = [{"mode": "train"} for _ in hidden_dims]
        self.dropout_param: dict[str, Any] = {"mode": "train", "p": keep_prob}
        if dropout_seed is not None:
            self.dropout_param["seed"] = dropout_seed

    def loss(self, X: Array, y: Array | None = None) -> Any:
        mode = "test" if y is None else "train"
        self.dropout_param["mode"] = mode
        for bn_param in self.bn_params:
            bn_param["mode"] = mode
        p = self.params
        caches = []
        h = X
        for k in range(1, self.num_layers):
            h, fc = _affine_forward(h, p[f"W{k}"], p[f"b{k}"])
            h, bc = _batchnorm_forward(h, p[f"gamma{k}"], p[f"beta{k}"], self.bn_params[k - 1])
            h, rc = _relu_forward(h)
            h, dc = _dropout_forward(h, self.dropout_param)
            caches.append((fc, bc, rc, dc))
        last = self.num_layers
        scores, last_cache = _affine_forward(h, p[f"W{last}"], p[f"b{last}"])
        if y is None:
            return scores

        loss, dscores = _softmax_loss(scores, y)
        grads: Grads = {}
        for k in range(1, last + 1):
            w = p[f"W{k}"]
            loss += 0.5 * self.reg * float(np.sum(w * w))
        dh, grads[f"W{last}"], grads[f"b{last}"] = _affine_backward(dscores, last_cache)
        grads[f"W{last}"] += self.reg * p[f"W{last}"]
        for k in reversed(range(1, last)):
            fc, bc, rc, dc = caches[k - 1]
            dh = _dropout_backward(dh, dc)
            dh = _relu_backward(dh, rc)
            dh, grads[f"gamma{k}"], grads[f"beta{k}"] = _batchnorm_backward(dh, bc)
            dh, grads[f"W{k}"], grads[f"b{k}"] = _affine_backward(dh, fc)
            grads[f"W{k}"] += self.reg * p[f"W{k}"]
        return loss, grads


class ThreeLayerConvNet:
    """``conv - relu - 2x2 max pool - affine - relu - affine - softmax`` on (N, C, H, W).

    The convolution has stride 1 and keeps the spatial size (padding (k - 1) / 2); parameters
    ``W1, b1`` (filters), ``W2, b2`` (hidden affine), ``W3, b3`` (output affine), with L2
    regularisation of the weights.
    """

    def __init__(
        self,
        input_dim: tuple[int, int, int] = (3, 16, 16),
        num_filters: int = 8,
        filter_size: int = 3,
        hidden_dim: int = 7,
        num_classes: int = 10,
        weight_scale: float = 1e-2,
        reg: float = 0.05,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        c, h, w = input_dim
        self.reg = reg
        self.pad = (filter_size - 1) // 2
        pooled = num_filters * (h // 2) * (w // 2)
        self.params: dict[str, np.ndarray] = {
            "W1": weight_scale * rng.standard_normal((num_filters, c, filter_size, filter_size)),
            "b1": np.zeros(num_filters),
            "W2": weight_scale * rng.standard_normal((pooled, hidden_dim)),
            "b2": np.zeros(hidden_dim),
            "W3": weight_scale * rng.standard_normal((hidden_dim, num_classes)),
            "b3": np.zeros(num_classes),
        }

    def loss(self, X: Array, y: Array | None = None) -> Any:
        p = self.params
        a, conv_cache = _conv_forward(X, p["W1"], p["b1"], self.pad)
        a, relu1_cache = _relu_forward(a)
        a, pool_cache = _max_pool_forward(a)
        a, aff2_cache = _affine_forward(a, p["W2"], p["b2"])
        a, relu2_cache = _relu_forward(a)
        scores, aff3_cache = _affine_forward(a, p["W3"], p["b3"])
        if y is None:
            return scores

        loss, dscores = _softmax_loss(scores, y)
        loss += 0.5 * self.reg * sum(float(np.sum(p[k] * p[k])) for k in ("W1", "W2", "W3"))
        grads: Grads = {}
        da, grads["W3"], grads["b3"] = _affine_backward(dscores, aff3_cache)
        da = _relu_backward(da, relu2_cache)
        da, grads["W2"], grads["b2"] = _affine_backward(da, aff2_cache)
        da = _max_pool_backward(da, pool_cache)
        da = _relu_backward(da, relu1_cache)
        _, grads["W1"], grads["b1"] = _conv_backward(da, conv_cache, need_dx=False)
        for k in ("W1", "W2", "W3"):
            grads[k] += self.reg * p[k]
        return loss, grads


class CaptioningRNN:
    """An LSTM captioning model: ``h0 = features @ W_proj + b_proj``, captions embedded by
    ``W_embed``, an LSTM (``Wx, Wh, b``) over all but the last word, scores over the vocabulary
    (``W_vocab, b_vocab``) for all but the first, and a softmax loss masked where the target is
    the null token (index 0).

    ``loss(features, captions)``: features (N, D), captions (N, T + 1) of word indices.
    """

    null = 0

    def __init__(
        self,
        vocab_size: int = 3,
        input_dim: int = 4,
        wordvec_dim: int = 5,
        hidden_dim: int = 6,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        v, d, w, h = vocab_size, input_dim, wordvec_dim, hidden_dim
        self.params: dict[str, np.ndarray] = {
            "W_embed": rng.standard_normal((v, w)) / 100,
            "W_proj": rng.standard_normal((d, h)) / np.sqrt(d),
            "b_proj": np.zeros(h),
            "Wx": rng.standard_normal((w, 4 * h)) / np.sqrt(w),
            "Wh": rng.standard_normal((h, 4 * h)) / np.sqrt(h),
            "b": np.zeros(4 * h),
            "W_vocab": rng.standard_normal((h, v)) / np.sqrt(h),
            "b_vocab": np.zeros(v),
        }

    def loss(self, features: Array, captions: Array) -> tuple[float, Grads]:
        p = self.params
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        mask = captions_out != self.null
        h0, proj_cache = _affine_forward(features, p["W_proj"], p["b_proj"])
        words, embed_cache = _embedding_forward(captions_in, p["W_embed"])
        hs, lstm_cache = _lstm_forward(words, h0, p["Wx"], p["Wh"], p["b"])
        scores, vocab_cache = _temporal_affine_forward(hs, p["W_vocab"], p["b_vocab"])
        loss, dscores = _temporal_softmax_loss(scores, captions_out, mask)

        grads: Grads = {}
        dhs, grads["W_vocab"], grads["b_vocab"] = _temporal_affine_backward(dscores, vocab_cache)
        dwords, dh0, grads["Wx"], grads["Wh"], grads["b"] = _lstm_backward(dhs, lstm_cache)
        grads["W_embed"] = _embedding_backward(dwords, embed_cache)
        _, grads["W_proj"], grads["b_proj"] = _affine_backward(dh0, proj_cache)
        return loss, grads
