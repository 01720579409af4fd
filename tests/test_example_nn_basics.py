"""Plain numpy tests for ``example_nn``: shapes, modes, and reference loops.

Gradient correctness is the plugin's job and is tested elsewhere; here the
backward passes are only compared against naive loop implementations.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

from example_nn import (
    SGD,
    BatchNorm1d,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    iter_layers,
    make_spirals,
    mse,
    softmax_cross_entropy,
)
from example_nn import train as train_script
from example_nn.layers import Layer, Module

# --------------------------------------------------------------------------
# Shapes and the layer protocol
# --------------------------------------------------------------------------

# (test id, factory, input shape, expected output shape)
SHAPE_CASES: list[tuple[str, Callable[[], Module], tuple[int, ...], tuple[int, ...]]] = [
    ("linear", lambda: Linear(5, 3, rng=np.random.default_rng(0)), (4, 5), (4, 3)),
    ("linear-3d", lambda: Linear(5, 3, rng=np.random.default_rng(0)), (2, 4, 5), (2, 4, 3)),
    ("relu", ReLU, (4, 5), (4, 5)),
    ("leaky-relu", LeakyReLU, (4, 5), (4, 5)),
    ("sigmoid", Sigmoid, (4, 5), (4, 5)),
    ("tanh", Tanh, (4, 5), (4, 5)),
    ("softmax", Softmax, (4, 5), (4, 5)),
    ("batchnorm", lambda: BatchNorm1d(5), (4, 5), (4, 5)),
    ("layernorm", lambda: LayerNorm(5), (2, 4, 5), (2, 4, 5)),
    ("dropout", lambda: Dropout(0.5, rng=np.random.default_rng(0)), (4, 5), (4, 5)),
    ("conv", lambda: Conv2d(3, 4, 3, rng=np.random.default_rng(0)), (2, 3, 7, 6), (2, 4, 5, 4)),
    (
        "conv-stride-pad",
        lambda: Conv2d(3, 4, (3, 2), stride=2, padding=1, rng=np.random.default_rng(0)),
        (2, 3, 7, 6),
        (2, 4, 4, 4),
    ),
    ("maxpool", MaxPool2d, (2, 3, 6, 5), (2, 3, 3, 2)),
    ("maxpool-overlap", lambda: MaxPool2d(3, 1), (2, 3, 6, 5), (2, 3, 4, 3)),
    ("flatten", Flatten, (2, 3, 4, 5), (2, 60)),
    (
        "sequential",
        lambda: Sequential(
            Conv2d(1, 2, 3, padding=1, rng=np.random.default_rng(0)),
            ReLU(),
            MaxPool2d(),
            Flatten(),
            Linear(2 * 4 * 4, 3, rng=np.random.default_rng(0)),
        ),
        (2, 1, 8, 8),
        (2, 3),
    ),
]


@pytest.mark.parametrize(
    ("make", "in_shape", "out_shape"),
    [case[1:] for case in SHAPE_CASES],
    ids=[case[0] for case in SHAPE_CASES],
)
def test_shapes_and_protocol(
    make: Callable[[], Module],
    in_shape: tuple[int, ...],
    out_shape: tuple[int, ...],
    rng: np.random.Generator,
) -> None:
    layer = make()
    x = rng.standard_normal(in_shape)
    out = layer.forward(x)
    assert out.shape == out_shape

    dout = rng.standard_normal(out_shape)
    dout_before = dout.copy()
    dx = layer.backward(dout)
    assert dx.shape == in_shape
    np.testing.assert_array_equal(dout, dout_before)  # backward must not touch dout
    assert not np.shares_memory(dx, dout)

    assert layer.training is True
    for leaf in iter_layers(layer):
        assert isinstance(leaf, Layer)
        assert set(leaf.grads) == set(leaf.params)
        for key, value in leaf.params.items():
            assert leaf.grads[key].shape == value.shape


def test_parameter_shapes_and_reproducible_init() -> None:
    lin = Linear(4, 3, rng=np.random.default_rng(7))
    assert lin.params["W"].shape == (4, 3)
    assert lin.params["b"].shape == (3,)
    np.testing.assert_array_equal(
        lin.params["W"], Linear(4, 3, rng=np.random.default_rng(7)).params["W"]
    )
    conv = Conv2d(2, 5, 3, rng=np.random.default_rng(7))
    assert conv.params["W"].shape == (5, 2, 3, 3)
    assert conv.params["b"].shape == (5,)
    np.testing.assert_array_equal(
        conv.params["W"], Conv2d(2, 5, 3, rng=np.random.default_rng(7)).params["W"]
    )
    for layer in (ReLU(), Sigmoid(), Tanh(), Softmax(), Flatten(), MaxPool2d(), Dropout()):
        assert layer.params == {}
        assert layer.grads == {}


def test_sequential_has_no_params_and_modes_recurse() -> None:
    inner = Sequential(BatchNorm1d(3), Dropout(0.2))
    model = Sequential(Linear(2, 3), inner, ReLU())
    assert not hasattr(model, "params")
    assert not hasattr(model, "grads")
    assert model.eval() is model
    assert all(not m.training for m in (model, inner, *iter_layers(model)))
    model.train()
    assert all(m.training for m in (model, inner, *iter_layers(model)))
    assert len(list(iter_layers(model))) == 4


# --------------------------------------------------------------------------
# Element-wise layers and Linear
# --------------------------------------------------------------------------


def test_linear_forward_and_regularisation(rng: np.random.Generator) -> None:
    lin = Linear(3, 2, l2=0.1, l1=0.01, rng=rng)
    x = rng.standard_normal((5, 3))
    W, b = lin.params["W"], lin.params["b"]
    np.testing.assert_allclose(lin.forward(x), x @ W + b)
    expected = 0.5 * 0.1 * np.sum(W**2) + 0.01 * np.sum(np.abs(W))
    assert lin.regularization_loss() == pytest.approx(expected)
    assert Linear(3, 2).regularization_loss() == 0.0

    dout = rng.standard_normal((5, 2))
    lin.backward(dout)
    np.testing.assert_allclose(lin.grads["W"], x.T @ dout + 0.1 * W + 0.01 * np.sign(W))
    np.testing.assert_allclose(lin.grads["b"], dout.sum(axis=0))

    model = Sequential(lin, ReLU(), Sequential(Linear(2, 2, l2=0.5, rng=rng)))
    nested = model.layers[2].layers[0].regularization_loss()
    assert model.regularization_loss() == pytest.approx(expected + nested)


def test_grads_are_assigned_not_accumulated(rng: np.random.Generator) -> None:
    lin = Linear(3, 2, rng=rng)
    x, dout = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    lin.forward(x)
    lin.backward(dout)
    first = lin.grads["W"].copy()
    lin.forward(x)
    lin.backward(dout)
    np.testing.assert_array_equal(lin.grads["W"], first)


def test_activation_values() -> None:
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 2.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0.0, 0.0, 0.0, 0.5, 2.0]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.2, -0.05, 0.0, 0.5, 2.0]])
    np.testing.assert_allclose(Sigmoid().forward(x), 1.0 / (1.0 + np.exp(-x)))
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x))
    # Extreme inputs must not overflow or produce NaN.
    with np.errstate(all="raise"):
        s = Sigmoid().forward(np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(s, [0.0, 1.0])


def test_softmax_rows_sum_to_one(rng: np.random.Generator) -> None:
    x = rng.standard_normal((6, 4)) * 10
    x[0] += 1000.0  # huge logits must not overflow
    probs = Softmax().forward(x)
    assert np.all(np.isfinite(probs))
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    np.testing.assert_allclose(
        Softmax().forward(x[1:]), np.exp(x[1:]) / np.exp(x[1:]).sum(1, keepdims=True)
    )


def test_softmax_backward_matches_explicit_jacobian(rng: np.random.Generator) -> None:
    x, dout = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    layer = Softmax()
    s = layer.forward(x)
    dx = layer.backward(dout)
    for row in range(3):
        jac = np.diag(s[row]) - np.outer(s[row], s[row])
        np.testing.assert_allclose(dx[row], jac.T @ dout[row])


# --------------------------------------------------------------------------
# BatchNorm1d, LayerNorm and Dropout: train vs eval
# --------------------------------------------------------------------------


def test_batchnorm_train_normalises_with_batch_stats(rng: np.random.Generator) -> None:
    bn = BatchNorm1d(4)
    x = rng.normal(3.0, 2.0, size=(64, 4))
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)


def test_batchnorm_running_stats_update_only_in_training(rng: np.random.Generator) -> None:
    bn = BatchNorm1d(3, momentum=0.1)
    x = rng.normal(5.0, 3.0, size=(20, 3))
    np.testing.assert_array_equal(bn.running_mean, 0.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)

    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=0, ddof=1))

    mean_after, var_after = bn.running_mean.copy(), bn.running_var.copy()
    bn.eval()
    bn.forward(x + 100.0)
    np.testing.assert_array_equal(bn.running_mean, mean_after)
    np.testing.assert_array_equal(bn.running_var, var_after)


def test_batchnorm_eval_uses_running_stats(rng: np.random.Generator) -> None:
    bn = BatchNorm1d(3)
    bn.params["gamma"][:] = [1.0, 2.0, 0.5]
    bn.params["beta"][:] = [0.0, -1.0, 1.0]
    for _ in range(200):  # converge running stats to the data distribution
        bn.forward(rng.normal(2.0, 3.0, size=(32, 3)))
    bn.eval()
    x = rng.normal(2.0, 3.0, size=(5, 3))
    expected = (x - bn.running_mean) / np.sqrt(bn.running_var + bn.eps)
    expected = expected * bn.params["gamma"] + bn.params["beta"]
    np.testing.assert_allclose(bn.forward(x), expected)
    # Eval is per-sample: a row's output does not depend on its batch-mates.
    np.testing.assert_allclose(bn.forward(x[:1]), expected[:1])
    # And the train-mode output differs (it uses the batch's own statistics).
    bn.train()
    assert not np.allclose(bn.forward(x), expected)


def test_batchnorm_eval_backward_is_elementwise_scale(rng: np.random.Generator) -> None:
    bn = BatchNorm1d(3).eval()
    bn.running_var = np.array([4.0, 1.0, 0.25])
    bn.forward(rng.standard_normal((5, 3)))
    dout = rng.standard_normal((5, 3))
    np.testing.assert_allclose(bn.backward(dout), dout / np.sqrt(bn.running_var + bn.eps))


def test_batchnorm_rejects_single_sample_in_training() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        BatchNorm1d(3).forward(np.ones((1, 3)))


def test_layernorm_normalises_each_row_in_both_modes(rng: np.random.Generator) -> None:
    ln = LayerNorm(6)
    x = rng.normal(4.0, 3.0, size=(5, 6))
    out = ln.forward(x)
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=-1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(ln.eval().forward(x), out)


def test_dropout_train_masks_and_scales(rng: np.random.Generator) -> None:
    drop = Dropout(p=0.25, rng=rng)
    x = np.ones((200, 100))
    out = drop.forward(x)
    kept = out != 0
    # Survivors are scaled by 1/(1-p); the drop fraction is close to p.
    np.testing.assert_allclose(out[kept], 1.0 / 0.75)
    assert abs((~kept).mean() - 0.25) < 0.01
    dx = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx, out)  # same mask and scale as forward


def test_dropout_eval_is_identity(rng: np.random.Generator) -> None:
    drop = Dropout(p=0.5, rng=rng).eval()
    x = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(drop.forward(x), x)
    dout = rng.standard_normal((4, 5))
    np.testing.assert_array_equal(drop.backward(dout), dout)


def test_dropout_reproducible_given_rng(rng: np.random.Generator) -> None:
    x = rng.standard_normal((8, 16))
    a = Dropout(0.5, rng=np.random.default_rng(42)).forward(x)
    b = Dropout(0.5, rng=np.random.default_rng(42)).forward(x)
    np.testing.assert_array_equal(a, b)
    # The layer draws from its own generator: reseeding it replays the mask,
    # and the global numpy RNG plays no part.
    drop = Dropout(0.5, rng=np.random.default_rng(3))
    state = drop.rng.bit_generator.state
    first = drop.forward(x)
    np.random.seed(0)
    drop.rng.bit_generator.state = state
    np.testing.assert_array_equal(drop.forward(x), first)


def test_dropout_edge_probabilities(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(Dropout(0.0, rng=rng).forward(x), x)
    np.testing.assert_array_equal(Dropout(1.0, rng=rng).forward(x), 0.0)
    with pytest.raises(ValueError):
        Dropout(1.5)


# --------------------------------------------------------------------------
# Conv2d and MaxPool2d against naive loops
# --------------------------------------------------------------------------


def naive_conv2d(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, padding: int
) -> np.ndarray:
    n, _, h, w = x.shape
    out_ch, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (h + 2 * padding - kh) // stride + 1
    out_w = (w + 2 * padding - kw) // stride + 1
    out = np.zeros((n, out_ch, out_h, out_w))
    for i in range(n):
        for o in range(out_ch):
            for r in range(out_h):
                for c in range(out_w):
                    patch = xp[i, :, r * stride : r * stride + kh, c * stride : c * stride + kw]
                    out[i, o, r, c] = np.sum(patch * W[o]) + b[o]
    return out


def naive_conv2d_backward(
    x: np.ndarray, W: np.ndarray, dout: np.ndarray, stride: int, padding: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, _, h, w = x.shape
    out_ch, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    for i in range(n):
        for o in range(out_ch):
            for r in range(dout.shape[2]):
                for c in range(dout.shape[3]):
                    rs, cs = r * stride, c * stride
                    g = dout[i, o, r, c]
                    dW[o] += g * xp[i, :, rs : rs + kh, cs : cs + kw]
                    dxp[i, :, rs : rs + kh, cs : cs + kw] += g * W[o]
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, padding : padding + h, padding : padding + w], dW, db


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"), [(3, 1, 0), (3, 2, 1), ((2, 3), 1, 2), (2, 2, 0)]
)
def test_conv2d_matches_naive_loops(
    kernel: int | tuple[int, int], stride: int, padding: int, rng: np.random.Generator
) -> None:
    conv = Conv2d(2, 3, kernel, stride=stride, padding=padding, rng=rng)
    conv.params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 5, 6))
    out = conv.forward(x)
    W, b = conv.params["W"], conv.params["b"]
    np.testing.assert_allclose(out, naive_conv2d(x, W, b, stride, padding), atol=1e-12)

    dout = rng.standard_normal(out.shape)
    dx = conv.backward(dout)
    dx_ref, dW_ref, db_ref = naive_conv2d_backward(x, W, dout, stride, padding)
    np.testing.assert_allclose(dx, dx_ref, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], dW_ref, atol=1e-12)
    np.testing.assert_allclose(conv.grads["b"], db_ref, atol=1e-12)


def naive_maxpool(x: np.ndarray, k: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward output and the (row, col) input position of each window's first max."""
    n, c, h, w = x.shape
    out_h, out_w = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, out_h, out_w))
    argmax = np.zeros((n, c, out_h, out_w, 2), dtype=int)
    for i in range(n):
        for ch in range(c):
            for r in range(out_h):
                for col in range(out_w):
                    window = x[i, ch, r * s : r * s + k, col * s : col * s + k]
                    a, bb = np.unravel_index(np.argmax(window), window.shape)
                    out[i, ch, r, col] = window[a, bb]
                    argmax[i, ch, r, col] = (r * s + a, col * s + bb)
    return out, argmax


@pytest.mark.parametrize(("k", "s"), [(2, 2), (3, 2), (2, 1), (3, 3)])
def test_maxpool_matches_naive_loops(k: int, s: int, rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 7, 6))
    pool = MaxPool2d(k, s)
    out = pool.forward(x)
    out_ref, argmax = naive_maxpool(x, k, s)
    np.testing.assert_array_equal(out, out_ref)

    dout = rng.standard_normal(out.shape)
    dx_ref = np.zeros_like(x)
    for idx in np.ndindex(out.shape):
        i, ch = idx[:2]
        r, col = argmax[idx]
        dx_ref[i, ch, r, col] += dout[idx]
    np.testing.assert_allclose(pool.backward(dout), dx_ref, atol=1e-12)


def test_flatten_roundtrip(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4))
    flat = Flatten()
    np.testing.assert_array_equal(flat.forward(x), x.reshape(2, 12))
    np.testing.assert_array_equal(flat.backward(x.reshape(2, 12)), x)


# --------------------------------------------------------------------------
# Losses, optimiser and data
# --------------------------------------------------------------------------


def test_softmax_cross_entropy() -> None:
    loss, dlogits = softmax_cross_entropy(np.zeros((4, 5)), np.array([0, 1, 2, 3]))
    assert loss == pytest.approx(np.log(5))
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)
    assert dlogits.shape == (4, 5)

    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    loss, _ = softmax_cross_entropy(logits, np.array([1, 1]))
    assert loss == pytest.approx(500.0)  # finite despite a confidently wrong row
    with pytest.raises(ValueError):
        softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))


def test_mse() -> None:
    pred, target = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    loss, grad = mse(pred, target)
    assert loss == pytest.approx((4.0 + 9.0) / 4)
    np.testing.assert_allclose(grad, 2 * (pred - target) / 4)
    with pytest.raises(ValueError):
        mse(pred, target[0])


def test_sgd_momentum_update(rng: np.random.Generator) -> None:
    lin = Linear(2, 2, rng=rng)
    model = Sequential(lin, ReLU(), Sequential(BatchNorm1d(2)))
    w0 = lin.params["W"].copy()
    w_ref = lin.params["W"]  # updates must be in place
    opt = SGD(model, lr=0.1, momentum=0.5)
    lin.grads["W"] = np.ones((2, 2))
    opt.step()
    np.testing.assert_allclose(lin.params["W"], w0 - 0.1)
    opt.step()  # velocity = 0.5 * 1 + 1
    np.testing.assert_allclose(lin.params["W"], w0 - 0.1 - 0.15)
    assert lin.params["W"] is w_ref


def test_sgd_reduces_loss(rng: np.random.Generator) -> None:
    X = rng.standard_normal((64, 3))
    target = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    model = Sequential(Linear(3, 1, rng=rng))
    opt = SGD(model, lr=0.05, momentum=0.9)
    first = None
    for _ in range(100):
        loss, grad = mse(model.forward(X), target)
        first = loss if first is None else first
        model.backward(grad)
        opt.step()
    assert loss < 1e-3 * first


def test_make_spirals(rng: np.random.Generator) -> None:
    X, y = make_spirals(n_per_class=50, n_classes=4, rng=rng)
    assert X.shape == (200, 2) and X.dtype == np.float64
    assert y.shape == (200,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [50, 50, 50, 50])
    assert np.all(np.linalg.norm(X, axis=1) <= 1.0 + 1e-12)
    X2, y2 = make_spirals(n_per_class=50, n_classes=4, rng=np.random.default_rng(1234))
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


# --------------------------------------------------------------------------
# The training script
# --------------------------------------------------------------------------


def test_train_main_short_run(capsys: pytest.CaptureFixture[str]) -> None:
    code = train_script.main(["--epochs", "2", "--seed", "1"])
    assert isinstance(code, int) and code in (0, 1)
    out = capsys.readouterr().out
    assert "epoch    2/2" in out
    assert "held-out accuracy" in out


def test_train_main_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    train_script.main(["--epochs", "1", "--quiet"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("final train accuracy")


# The full default run takes about a second; it runs by default, and can be
# skipped with EXAMPLE_NN_SKIP_TRAINING=1 on very slow machines.
@pytest.mark.skipif(
    os.environ.get("EXAMPLE_NN_SKIP_TRAINING") == "1",
    reason="EXAMPLE_NN_SKIP_TRAINING=1",
)
def test_default_training_run_reaches_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_script.main(["--quiet"]) == 0
    assert "PASS" in capsys.readouterr().out
