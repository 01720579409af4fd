"""Whole models checked through their training objective.

cs231n-style models (`loss, grads = model.loss(X, y)` over `model.params`), with batchnorm and
dropout dicts forced to training mode and restored, and the nnfs book's `Model`, whose backward
starts from its own loss object (regularisation included, accumulated sums restored).
"""

from __future__ import annotations

import pickle
from typing import Any

import cs231n_style as cs
import numpy as np
import pytest
from helpers import QUIET_PLUGINS, global_streams, rows

from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.options import MODES
from pytest_gradcheck.result import ERROR, FAIL, INTEGER_INPUT, NOT_DIFFERENTIATED, OK


def data(n: int = 6, d: int = 4, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, size=n)


def two_layer(cls: type[Any] = cs.TwoLayerNet) -> Any:
    return cls(input_dim=4, hidden_dim=5, num_classes=3, weight_scale=0.3, reg=0.1, seed=0)


def fc_net(cls: type[Any] = cs.FullyConnectedNet, seed: int | None = 3) -> Any:
    return cls([5, 4], input_dim=4, num_classes=3, dropout_keep_ratio=0.7,
               normalization="batchnorm", reg=0.1, weight_scale=0.5, dtype=np.float64,
               seed=seed)


def failing(result: Any) -> list[str]:
    return [e.name for e in result.entries if e.status == FAIL]


def frozen(obj: Any) -> bytes:
    return pickle.dumps(obj)


@pytest.mark.parametrize("mode", MODES)
def test_two_layer_net_with_l2(mode: str) -> None:
    X, y = data()
    good = check(two_layer(), X, y, mode=mode)
    bad = check(two_layer(cs.mutant_model(cs.TwoLayerNet, "W2")), X, y, mode=mode)
    assert rows(good) == {"X": NOT_DIFFERENTIATED, "y": INTEGER_INPUT, "W1": OK, "b1": OK,
                          "W2": OK, "b2": OK}
    assert failing(bad) == ["W2"]


@pytest.mark.parametrize("mode", MODES)
def test_fully_connected_net_with_batchnorm_dropout_and_l2(mode: str) -> None:
    X, y = data()
    net = fc_net()
    net.loss(X)  # leaves every batchnorm and dropout dict in test mode
    net.loss(X, y)
    net.loss(X)  # ... with running statistics in the batchnorm dicts
    assert all(p["mode"] == "test" for p in net.bn_params) and "running_mean" in net.bn_params[0]
    np.random.seed(11)
    before, streams = frozen(net), global_streams()

    good = check(net, X, y, mode=mode)
    bad = check(fc_net(cs.mutant_model(cs.FullyConnectedNet, "gamma1")), X, y, mode=mode)

    assert good.ok, good
    assert set(rows(good)) == {"X", "y", *net.params}
    assert failing(bad) == ["gamma1"]
    # The dicts were switched to training mode and the seed reseeded numpy's global stream:
    # all of it is as it was.
    assert frozen(net) == before
    assert global_streams() == streams


def test_dropout_without_a_seed_draws_from_the_reset_global_stream() -> None:
    X, y = data()
    np.random.seed(5)
    streams = global_streams()
    result = check(fc_net(seed=None), X, y)
    assert result.ok, result
    assert any("numpy global" in note for note in result.notes), result.notes
    assert global_streams() == streams


def test_parameter_dict_order_and_names_are_kept() -> None:
    X, y = data()
    net = fc_net()
    order = list(net.params)
    result = check(net, X, y, params=["W*", "gamma*"])
    assert list(net.params) == order
    assert [e.name for e in result.entries if e.kind == "param" and e.status == OK] == [
        k for k in order if k[0] in "Wg"
    ]


class MissingGradient(cs.TwoLayerNet):
    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        value, grads = super().loss(X, y)
        del grads["b2"]
        return value, grads


class BroadcastGradient(cs.TwoLayerNet):
    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        value, grads = super().loss(X, y)
        grads["b1"] = grads["b1"][None, :]  # (1, C) for a (C,) parameter
        return value, grads


def test_a_missing_gradient_is_an_error_row_and_the_others_are_judged() -> None:
    result = check(two_layer(MissingGradient), *data())
    assert not result.ok
    statuses = {e.name: e.status for e in result.entries}
    assert statuses["b2"] == ERROR
    assert {n: s for n, s in statuses.items() if n in ("W1", "b1", "W2")} == {
        "W1": "ok", "b1": "ok", "W2": "ok"}
    assert "'b2' has no gradient" in str(result)


def test_a_1_by_c_gradient_for_a_c_parameter_is_wrong_shaped_never_broadcast() -> None:
    result = check(two_layer(BroadcastGradient), *data())
    assert {e.name: e.status for e in result.entries}["b1"] == ERROR
    assert "'b1' has shape (1, 5), expected (5,)" in str(result)


class WithStatistics(cs.TwoLayerNet):
    """Keeps a running statistic in its parameter dict (last), with no gradient."""

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        stats = self.params.pop("running_mean")
        try:
            return super().loss(X, y)
        finally:
            self.params["running_mean"] = stats


def test_non_trainable_parameters_are_listed() -> None:
    net = two_layer(WithStatistics)
    net.non_trainable = ("b1",)
    net.params["running_mean"] = np.zeros(5)
    result = check(net, *data())
    assert rows(result)["b1"] == NOT_DIFFERENTIATED
    assert rows(result)["running_mean"] == NOT_DIFFERENTIATED
    assert result.ok, result


def test_extra_loss_receives_the_model() -> None:
    seen: list[Any] = []
    net = two_layer()
    check(net, *data(), extra_loss=lambda m: seen.append(m) or 0.0)
    assert seen and all(m is net for m in seen)


def test_a_model_without_targets_is_told_to_pass_them() -> None:
    X, _ = data()
    with pytest.raises(GradcheckUsageError, match=r"pass the targets too, check\(model, X, y\)"):
        check(two_layer(), X)


# -- nnfs Model -------------------------------------------------------------------------------


class DenseForgettingRegularizer(cs.Layer_Dense):
    def backward(self, dvalues: np.ndarray) -> None:
        super().backward(dvalues)
        self.dweights = self.dweights - 2.0 * self.weight_regularizer_l2 * self.weights


@pytest.mark.parametrize("mode", MODES)
def test_nnfs_model_through_its_own_loss(mode: str) -> None:
    X, y = data()
    model = cs.nnfs_model(dropout=0.1)  # straight after finalize(): no accumulated sums yet
    before, streams = frozen(model), global_streams()

    good = check(model, X, y, mode=mode)
    bad = check(cs.nnfs_model(first_layer=cs.mutant_layer(cs.Layer_Dense, "dweights")), X, y,
                mode=mode)

    assert rows(good) == {"X": OK, "y": INTEGER_INPUT, "layers.0.weights": OK,
                          "layers.0.biases": OK, "layers.3.weights": OK, "layers.3.biases": OK}
    assert failing(bad) == ["layers.0.weights"]
    assert frozen(model) == before
    assert not hasattr(model.loss, "accumulated_sum")
    assert global_streams() == streams


def test_nnfs_model_objective_includes_the_regularisation_loss() -> None:
    X, y = data()
    result = check(cs.nnfs_model(l2=0.05, first_layer=DenseForgettingRegularizer), X, y)
    assert failing(result) == ["layers.0.weights"]


def test_nnfs_model_after_training_keeps_its_accumulated_sums() -> None:
    X, y = data()
    model = cs.nnfs_model(softmax_shortcut=False)
    model.loss.new_pass()
    model.loss.calculate(model.forward(X, training=False), y)
    total, count = model.loss.accumulated_sum, model.loss.accumulated_count
    assert check(model, X, y).ok
    assert (model.loss.accumulated_sum, model.loss.accumulated_count) == (total, count)


MODELS_TEST = """
import cs231n_style as cs
import numpy as np

def net(cls):
    return cls(input_dim=4, hidden_dim=5, num_classes=3, weight_scale=0.3, reg=0.1, seed=0)

def test_model(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(net(cs.TwoLayerNet), rng.normal(size=(6, 4)), rng.integers(0, 3, size=6))

def test_model_wrong(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(net(cs.mutant_model(cs.TwoLayerNet, "b1")), rng.normal(size=(6, 4)),
              rng.integers(0, 3, size=6))

def test_nnfs(gradcheck):
    rng = np.random.default_rng(0)
    model = cs.nnfs_model(first_layer=cs.mutant_layer(cs.Layer_Dense, "dbiases"))
    gradcheck(model, rng.normal(size=(6, 4)), rng.integers(0, 3, size=6))
"""


def test_models_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_models=MODELS_TEST)
    result = pytester.runpytest(*QUIET_PLUGINS)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*gradcheck TwoLayerNet_wrong_b1: FAILED*",
        "*X*input*not differentiated*",
        "*W1*param*ok*",
        "*b1*param*FAIL*",
    ])
    result.stdout.fnmatch_lines(["*gradcheck Model: FAILED*", "*layers.0.biases*param*FAIL*"])


class ScaledModel:
    """A model whose trainable `moving_scale` has a statistic-like name and a gradient."""

    def __init__(self, wrong: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.params = {"W": rng.normal(size=(3, 2)), "moving_scale": 1.0 + rng.random(2)}
        self.wrong = wrong

    def loss(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        W, s = self.params["W"], self.params["moving_scale"]
        d = X @ W * s - y
        n = len(X)
        return float(np.sum(d**2) / n), {
            "W": 2 * X.T @ (d * s) / n,
            "moving_scale": self.wrong * 2 * np.sum(d * (X @ W), axis=0) / n,
        }


@pytest.mark.parametrize("mode", MODES)
def test_a_gradient_loss_returns_for_a_statistic_like_name_is_checked(mode: str) -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    assert rows(check(ScaledModel(), X, y, mode=mode))["moving_scale"] == OK
    assert rows(check(ScaledModel(1.5), X, y, mode=mode))["moving_scale"] == FAIL
