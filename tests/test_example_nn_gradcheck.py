"""Every example_nn layer, gradient-checked the way a user of the plugin would: the `gradcheck`
fixture, with options from `@pytest.mark.gradcheck` where a layer needs them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import rows

from example_nn import (
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
)

pytestmark = pytest.mark.gradcheck(seed=3)


def regularization(layer: Any) -> float:
    return float(layer.regularization_loss())


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def distinct(*shape: int, seed: int = 0) -> np.ndarray:
    """Values at least 0.01 apart, in random order: no max-pool ties, no ReLU kinks."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n / 2) * 0.01 + 0.005
    return np.random.default_rng(seed).permutation(values).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Dense layers and activations
# ---------------------------------------------------------------------------------------------


def test_linear(gradcheck: Any) -> None:
    result = gradcheck(Linear(5, 3, rng=np.random.default_rng(1)), normal(4, 5))
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}
    assert result.seed == 3  # from the module marker


def test_linear_with_leading_batch_axes(gradcheck: Any) -> None:
    result = gradcheck(Linear(5, 3, rng=np.random.default_rng(1)), normal(2, 4, 5))
    assert result.entry("x").shape == (2, 4, 5)


@pytest.mark.gradcheck(extra_loss=regularization)
@pytest.mark.parametrize(
    ("l2", "l1"), [(0.1, 0.0), (0.0, 0.05), (0.1, 0.05)], ids=["l2", "l1", "l1+l2"]
)
def test_linear_regularized(gradcheck: Any, l2: float, l1: float) -> None:
    layer = Linear(5, 3, l2=l2, l1=l1, rng=np.random.default_rng(1))
    result = gradcheck(layer, normal(4, 5))
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}


@pytest.mark.parametrize(("l2", "l1"), [(0.1, 0.0), (0.0, 0.05)], ids=["l2", "l1"])
def test_linear_regularized_without_extra_loss_fails_on_w(
    gradcheck: Any, l2: float, l1: float
) -> None:
    # backward adds the penalty's gradient, so the objective must include the penalty
    layer = Linear(5, 3, l2=l2, l1=l1, rng=np.random.default_rng(1))
    result = gradcheck.check(layer, normal(4, 5))
    assert [e.name for e in result.failed_entries] == ["W"]


@pytest.mark.parametrize(
    "make",
    [ReLU, lambda: LeakyReLU(0.1), Sigmoid, Tanh, Softmax],
    ids=["relu", "leaky-relu", "sigmoid", "tanh", "softmax"],
)
def test_activation(gradcheck: Any, make: Any) -> None:
    result = gradcheck(make(), distinct(4, 5) * 30)  # in [-3, 3], 0.3 apart, no zeros
    assert rows(result) == {"x": "ok"}
    assert result.entry("x").kinks == 0


def test_softmax_large_logits(gradcheck: Any) -> None:
    gradcheck(Softmax(), normal(4, 6) * 5)


# ---------------------------------------------------------------------------------------------
# Normalisation and dropout
# ---------------------------------------------------------------------------------------------


def batchnorm(trained: bool) -> BatchNorm1d:
    bn = BatchNorm1d(4, momentum=0.2)
    rng = np.random.default_rng(5)
    bn.params["gamma"] = 1.0 + 0.3 * rng.normal(size=4)
    bn.params["beta"] = rng.normal(size=4)
    if trained:
        for _ in range(3):
            bn.forward(rng.normal(1.0, 2.0, size=(8, 4)))
    return bn


def test_batchnorm_train(gradcheck: Any) -> None:
    bn = batchnorm(trained=False)
    result = gradcheck(bn, normal(6, 4))
    assert rows(result) == {"x": "ok", "gamma": "ok", "beta": "ok"}
    assert bn.training is True


def test_batchnorm_left_in_eval(gradcheck: Any) -> None:
    bn = batchnorm(trained=True).eval()
    running = bn.running_mean.copy(), bn.running_var.copy()
    result = gradcheck(bn, normal(6, 4))
    assert rows(result) == {"x": "ok", "gamma": "ok", "beta": "ok"}
    assert any("training=True" in n for n in result.notes)
    assert bn.training is False
    assert np.array_equal(bn.running_mean, running[0])
    assert np.array_equal(bn.running_var, running[1])


def test_layernorm(gradcheck: Any) -> None:
    ln = LayerNorm(5)
    ln.params["gamma"] = 1.0 + 0.3 * normal(5, seed=2)
    ln.params["beta"] = normal(5, seed=3)
    result = gradcheck(ln, normal(2, 3, 5))
    assert rows(result) == {"x": "ok", "gamma": "ok", "beta": "ok"}


@pytest.mark.parametrize("p", [0.0, 0.3, 0.8])
def test_dropout(gradcheck: Any, p: float) -> None:
    result = gradcheck(Dropout(p, rng=np.random.default_rng(0)), normal(6, 5))
    assert rows(result) == {"x": "ok"}


def test_dropout_left_in_eval_is_checked_with_its_mask(gradcheck: Any) -> None:
    layer = Dropout(0.5, rng=np.random.default_rng(0)).eval()
    result = gradcheck(layer, normal(6, 5))
    assert any("training=True" in n for n in result.notes)
    assert any("Dropout.rng" in n for n in result.notes)
    assert layer.training is False


# ---------------------------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(3, 1, 0), (3, 2, 1), ((3, 2), 2, 1), (2, 1, 2)],
    ids=["3x3", "3x3-stride2-pad1", "3x2-stride2-pad1", "2x2-pad2"],
)
def test_conv2d(gradcheck: Any, kernel: Any, stride: int, padding: int) -> None:
    conv = Conv2d(2, 3, kernel, stride=stride, padding=padding, rng=np.random.default_rng(1))
    conv.params["b"] = normal(3, seed=2)
    result = gradcheck(conv, normal(2, 2, 5, 6))
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}


@pytest.mark.parametrize(
    ("kernel", "stride"), [(2, 2), (3, 1), (2, 3)], ids=["2-2", "3-1-overlap", "2-3-gaps"]
)
def test_maxpool2d(gradcheck: Any, kernel: int, stride: int) -> None:
    result = gradcheck(MaxPool2d(kernel, stride), distinct(2, 2, 6, 7))
    assert rows(result) == {"x": "ok"}
    assert result.entry("x").kinks == 0


def test_flatten(gradcheck: Any) -> None:
    result = gradcheck(Flatten(), normal(2, 3, 4))
    assert rows(result) == {"x": "ok"}


# ---------------------------------------------------------------------------------------------
# Containers and whole networks
# ---------------------------------------------------------------------------------------------


def test_sequential_cnn(gradcheck: Any) -> None:
    net = Sequential(
        Conv2d(1, 2, 3, padding=1, rng=np.random.default_rng(0)),
        Tanh(),
        MaxPool2d(2, 2),
        Flatten(),
        Linear(2 * 3 * 3, 3, rng=np.random.default_rng(1)),
        Softmax(),
    )
    result = gradcheck(net, distinct(2, 1, 6, 6))
    assert rows(result) == {
        "x": "ok",
        "layers.0.W": "ok",
        "layers.0.b": "ok",
        "layers.4.W": "ok",
        "layers.4.b": "ok",
    }


@pytest.mark.gradcheck(extra_loss=regularization)
def test_whole_network_with_batchnorm_dropout_and_regularization(gradcheck: Any) -> None:
    net = Sequential(
        Linear(5, 8, l2=0.05, rng=np.random.default_rng(1)),
        BatchNorm1d(8),
        ReLU(),
        Dropout(0.3, rng=np.random.default_rng(2)),
        Linear(8, 6, l2=0.05, l1=0.01, rng=np.random.default_rng(3)),
        LayerNorm(6),
        Tanh(),
        Linear(6, 3, l1=0.02, rng=np.random.default_rng(4)),
    )
    net.eval()  # left in eval mode after some evaluation: the check still runs in training
    before = {
        "running_mean": net.layers[1].running_mean.copy(),
        "dropout": net.layers[3].rng.bit_generator.state,
    }
    result = gradcheck(net, normal(10, 5))
    assert [e.name for e in result.entries] == [
        "x",
        "layers.0.W",
        "layers.0.b",
        "layers.1.gamma",
        "layers.1.beta",
        "layers.4.W",
        "layers.4.b",
        "layers.5.gamma",
        "layers.5.beta",
        "layers.7.W",
        "layers.7.b",
    ]
    notes = " ".join(result.notes)
    assert "layers.1.training=True" in notes and "layers.3.training=True" in notes
    assert "layers[3].rng" in notes  # the dropout mask is replayed for every evaluation
    assert all(not layer.training for layer in net.layers)
    assert np.array_equal(net.layers[1].running_mean, before["running_mean"])
    assert net.layers[3].rng.bit_generator.state == before["dropout"]


def test_whole_network_without_the_regularizer_fails_on_regularized_weights(
    gradcheck: Any,
) -> None:
    net = Sequential(
        Linear(5, 8, l2=0.05, rng=np.random.default_rng(1)),
        BatchNorm1d(8),
        ReLU(),
        Dropout(0.3, rng=np.random.default_rng(2)),
        Linear(8, 3, rng=np.random.default_rng(3)),
    )
    result = gradcheck.check(net, normal(10, 5))
    assert [e.name for e in result.failed_entries] == ["layers.0.W"]
