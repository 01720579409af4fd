"""The objective `python -m example_nn.train` optimises, checked end to end through `loss=`:
the network (Linear-BatchNorm-ReLU-Dropout x2, Linear) with softmax cross-entropy and the L2
penalty of its Linear layers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import global_streams

from example_nn import Sequential, make_spirals, softmax_cross_entropy
from example_nn.train import build_model
from pytest_gradcheck import check


def training_batch(seed: int = 0, n: int = 12) -> tuple[Sequential, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X, y = make_spirals(n_per_class=n // 3, n_classes=3, noise=0.2, rng=rng)
    # A smaller hidden width than the script's 64 keeps full mode quick; same structure.
    return build_model(n_hidden=8, l2=0.05, p_drop=0.25, rng=rng), X, y


def objective_options(y: np.ndarray) -> dict[str, Any]:
    return {
        "loss": lambda out: softmax_cross_entropy(out, y),
        "extra_loss": lambda net: net.regularization_loss(),
    }


def state_of(net: Sequential) -> list[bytes]:
    out: list[bytes] = []
    for layer in net.layers:
        for value in vars(layer).values():
            if isinstance(value, np.ndarray):
                out.append(value.tobytes())
            elif isinstance(value, dict):
                out.extend(v.tobytes() for v in value.values() if isinstance(v, np.ndarray))
        rng = getattr(layer, "rng", None)
        if rng is not None:
            out.append(repr(rng.bit_generator.state).encode())
    return out


@pytest.mark.parametrize("mode", ["full", "sample", "fast", "auto"])
def test_the_training_objective_passes_and_leaves_everything_as_it_was(mode: str) -> None:
    net, X, y = training_batch()
    net.eval()  # as left by the script's accuracy(): the check still runs in training mode
    before, streams_before = state_of(net), global_streams()
    result = check(net, X, mode=mode, **objective_options(y))
    assert result.ok, str(result)
    names = [e.name for e in result.entries]
    assert names[0] == "x"
    assert {"layers.0.W", "layers.1.gamma", "layers.4.W", "layers.8.W", "layers.8.b"} <= set(names)
    assert not net.training
    assert state_of(net) == before
    assert global_streams() == streams_before


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_objective_without_its_l2_penalty_fails_on_the_weights_only(mode: str) -> None:
    net, X, y = training_batch()
    result = check(net, X, mode=mode, loss=lambda out: softmax_cross_entropy(out, y))
    failed = {e.name for e in result.failed_entries}
    assert failed == {"layers.0.W", "layers.4.W", "layers.8.W"}, str(result)


@pytest.mark.parametrize("mode", ["full", "fast", "auto"])
def test_a_loss_gradient_off_by_the_batch_size_fails(mode: str) -> None:
    net, X, y = training_batch()

    def unscaled(out: np.ndarray) -> tuple[float, np.ndarray]:
        loss, dout = softmax_cross_entropy(out, y)
        return loss, dout * len(y)  # forgot the 1/N of the mean

    result = check(net, X, mode=mode, loss=unscaled,
                   extra_loss=lambda n: n.regularization_loss())
    assert not result.ok
    assert "x" in {e.name for e in result.failed_entries}
