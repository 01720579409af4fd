"""Pairs whose backward takes no gradient, only the cache and some of forward's arguments
(deeplearning.ai's `forward_propagation_n(X, Y, parameters) -> (cost, cache)` with
`backward_propagation_n(X, Y, cache)`): checked through the cost, one line; a `parameters`
dict is checked leaf by leaf while a `bn_param` dict passes through."""

from __future__ import annotations

from typing import Any

import dlai_style as dl
import numpy as np
import pytest

from pytest_gradcheck import check

MODES = ["full", "fast", "sample", "auto"]
PARAMS = ["W1", "b1", "W2", "b2", "W3", "b3"]


@pytest.mark.parametrize("mode", MODES)
def test_forward_and_backward_propagation_n(mode: str) -> None:
    X, Y, parameters = dl.initialize()
    before = {k: (v, v.tobytes()) for k, v in parameters.items()}
    x_bits = X.tobytes()
    result = check((dl.forward_propagation_n, dl.backward_propagation_n), X, Y, parameters,
                   mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "X": "not differentiated", "Y": "not differentiated",
        **{f"parameters.{k}": "ok" for k in PARAMS}}, str(result)
    assert any("dZ3, dA2, dZ2, dA1, dZ1" in n and "left out" in n for n in result.notes)
    failed = check((dl.forward_propagation_n, dl.backward_propagation_n_wrong), X, Y,
                   parameters, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["parameters.b2"], str(failed)
    assert all(parameters[k] is v and v.tobytes() == b for k, (v, b) in before.items())
    assert X.tobytes() == x_bits


def bn_loss_forward(x: Any, gamma: Any, beta: Any, bn_param: dict[str, Any]) -> Any:
    """Batchnorm then a quadratic cost; in train mode the running mean is updated in
    bn_param, as cs231n's batchnorm does."""
    if bn_param["mode"] == "train":
        mu, var = x.mean(axis=0), x.var(axis=0)
        bn_param["running_mean"] = 0.9 * bn_param["running_mean"] + 0.1 * mu
    else:
        mu, var = bn_param["running_mean"], np.ones(x.shape[1])
    xhat = (x - mu) / np.sqrt(var + 1e-5)
    out = gamma * xhat + beta
    return 0.5 * float(np.sum(out**2)), (xhat, out)


def bn_loss_backward(x: Any, cache: Any, slip: float = 1.0) -> dict[str, Any]:
    xhat, out = cache
    return {"dgamma": (out * xhat).sum(axis=0), "dbeta": out.sum(axis=0) * slip}


@pytest.mark.parametrize("mode", MODES)
def test_a_bn_param_dict_passes_through_and_is_put_back(mode: str) -> None:
    rng = np.random.default_rng(3)
    x, gamma, beta = rng.normal(size=(6, 3)), rng.normal(size=3), rng.normal(size=3)
    running = np.zeros(3)
    bn_param = {"mode": "test", "running_mean": running}
    result = check((bn_loss_forward, bn_loss_backward), x, gamma, beta, bn_param, mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "x": "not differentiated", "gamma": "ok", "beta": "ok", "bn_param": "passed through"
    }, str(result)
    assert any("bn_param['mode']='train'" in n for n in result.notes)

    def wrong(x: Any, cache: Any) -> Any:
        return bn_loss_backward(x, cache, slip=2.0)

    failed = check((bn_loss_forward, wrong), x, gamma, beta, bn_param, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["beta"], str(failed)
    assert bn_param == {"mode": "test", "running_mean": running}
    assert bn_param["running_mean"] is running and not running.any()


def affine_forward(x: Any, params: dict[str, Any]) -> Any:
    return x @ params["W"] + params["b"], (x, params["W"])


def affine_backward(dout: Any, cache: Any, slip: float = 1.0) -> Any:
    x, W = cache
    return dout @ W.T, {"dW": x.T @ dout, "db": dout.sum(axis=0) * slip}


@pytest.mark.parametrize("mode", MODES)
def test_a_pair_over_a_parameters_dict(mode: str) -> None:
    rng = np.random.default_rng(5)
    x, params = rng.normal(size=(4, 3)), {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    before = {k: (v, v.tobytes()) for k, v in params.items()}
    result = check((affine_forward, affine_backward), x, params, mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "x": "ok", "params.W": "ok", "params.b": "ok"}, str(result)

    def wrong(dout: Any, cache: Any) -> Any:
        return affine_backward(dout, cache, slip=0.5)

    failed = check((affine_forward, wrong), x, params, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["params.b"], str(failed)
    assert all(params[k] is v and v.tobytes() == b for k, (v, b) in before.items())
