"""cs231n-style function pairs: `out, cache = f_forward(...)`, `grads = f_backward(dout, cache)`.

Array arguments are differentiated in order, dict arguments pass through with their `mode`
forced to 'train' and anything written into them restored, and a `seed` key is honoured
without touching the caller's global random state.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from helpers import QUIET_PLUGINS

from pytest_gradcheck import GradcheckUsageError, check

# Plugins of this environment that slow every in-process run down and play no part here.


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, Any]:
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    x, w, _ = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


def affine_backward_bias_mean(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    dx, dw, _ = affine_backward(dout, cache)
    return dx, dw, dout.mean(axis=0)  # bug: mean instead of sum


def affine_backward_column_bug(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    dx, dw, db = affine_backward(dout, cache)
    dw = dw.copy()
    dw[:, 2] *= 2.0  # bug: one whole output column doubled
    return dx, dw, db


def affine_backward_one_slip(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    dx, dw, db = affine_backward(dout, cache)
    dw = dw.copy()
    dw[1, 3] += 1.0  # bug: a single element
    return dx, dw, db


def batchnorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict[str, Any]
) -> tuple[np.ndarray, Any]:
    mode = bn_param["mode"]
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d))
    running_var = bn_param.get("running_var", np.zeros(d))
    if mode == "train":
        mu, var = x.mean(axis=0), x.var(axis=0)
        xhat = (x - mu) / np.sqrt(var + eps)
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
        cache = (xhat, gamma, var, eps)
    else:
        xhat = (x - running_mean) / np.sqrt(running_var + eps)
        cache = None  # the test-mode backward is not implemented, as in the assignment
    bn_param["running_mean"] = running_mean
    bn_param["running_var"] = running_var
    return gamma * xhat + beta, cache


def batchnorm_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    xhat, gamma, var, eps = cache
    n = dout.shape[0]
    dxhat = dout * gamma
    dx = (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (
        n * np.sqrt(var + eps)
    )
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


MASKS: list[np.ndarray] = []


def dropout_forward(x: np.ndarray, dropout_param: dict[str, Any]) -> tuple[np.ndarray, Any]:
    p, mode = dropout_param["p"], dropout_param["mode"]
    if "seed" in dropout_param:
        np.random.seed(dropout_param["seed"])
    mask = None
    out = x
    if mode == "train":
        mask = (np.random.rand(*x.shape) < p) / p
        out = x * mask
        MASKS.append(mask)
    return out, (dropout_param, mask)


def dropout_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
    dropout_param, mask = cache
    return dout * mask if dropout_param["mode"] == "train" else dout


def test_affine_pair_differentiates_every_array_argument_in_order(rng: np.random.Generator):
    x, w, b = rng.normal(size=(4, 2, 3)), rng.normal(size=(6, 5)), rng.normal(size=5)
    result = check((affine_forward, affine_backward), x, w, b)
    assert result.ok, result
    assert [(e.name, e.kind, e.shape) for e in result.entries] == [
        ("x", "input", (4, 2, 3)),
        ("w", "input", (6, 5)),
        ("b", "input", (5,)),
    ]
    assert result.label == "affine_forward/affine_backward"


def test_buggy_pair_fails_on_the_wrong_array_only(rng: np.random.Generator):
    x, w, b = rng.normal(size=(4, 6)), rng.normal(size=(6, 5)), rng.normal(size=5)
    result = check((affine_forward, affine_backward_bias_mean), x, w, b)
    assert not result.ok
    assert [e.name for e in result.failed_entries] == ["b"]
    assert "where b is wrong" in str(result)


def test_failure_map_tells_a_wrong_column_from_one_wrong_element(rng: np.random.Generator):
    x, w, b = rng.normal(size=(4, 6)), rng.normal(size=(6, 5)), rng.normal(size=5)
    column = check((affine_forward, affine_backward_column_bug), x, w, b, mode="full")
    slip = check((affine_forward, affine_backward_one_slip), x, w, b, mode="full")

    def w_map(result: Any) -> list[str]:
        lines = str(result).splitlines()
        start = next(i for i, line in enumerate(lines) if "where w is wrong" in line)
        return [line.strip() for line in lines[start + 1 : start + 7]]

    assert w_map(column) == ["..X.."] * 6
    assert w_map(slip) == [".....", "...X.", ".....", ".....", ".....", "....."]


def test_batchnorm_mode_forced_to_train_and_running_statistics_restored(
    rng: np.random.Generator,
):
    x = rng.normal(size=(8, 3)) * 2 + 1
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    running_mean, running_var = rng.normal(size=3), rng.uniform(0.5, 2, size=3)
    bn_param = {"mode": "test", "running_mean": running_mean, "running_var": running_var}
    saved = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in bn_param.items()}

    result = check((batchnorm_forward, batchnorm_backward), x, gamma, beta, bn_param)

    assert result.ok, result
    assert [e.name for e in result.entries] == ["bn_param", "x", "gamma", "beta"]
    assert result.entry("bn_param").status == "passed through"
    assert any("['mode']='train'" in note for note in result.notes), result.notes
    assert bn_param.keys() == saved.keys()
    assert bn_param["mode"] == "test"
    assert bn_param["running_mean"] is running_mean
    np.testing.assert_array_equal(bn_param["running_mean"], saved["running_mean"])
    np.testing.assert_array_equal(bn_param["running_var"], saved["running_var"])


def test_keys_a_forward_adds_to_the_dict_are_removed_again(rng: np.random.Generator):
    bn_param: dict[str, Any] = {"mode": "train"}
    x, gamma, beta = rng.normal(size=(6, 4)), np.ones(4), np.zeros(4)
    assert check((batchnorm_forward, batchnorm_backward), x, gamma, beta, bn_param).ok
    assert bn_param == {"mode": "train"}


def test_dropout_seed_key_is_honoured_without_clobbering_global_random_state(
    rng: np.random.Generator,
):
    x = rng.normal(size=(5, 4))
    dropout_param = {"p": 0.6, "mode": "test", "seed": 42}
    np.random.seed(7)
    random.seed(7)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    MASKS.clear()

    result = check((dropout_forward, dropout_backward), x, dropout_param)

    assert result.ok, result
    assert dropout_param == {"p": 0.6, "mode": "test", "seed": 42}
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and after[2:] == numpy_state[2:]
    np.testing.assert_array_equal(after[1], numpy_state[1])
    assert random.getstate() == python_state
    # Every evaluation used the mask the dict's seed gives, not one from the check's seed.
    np.random.seed(42)
    expected = (np.random.rand(5, 4) < 0.6) / 0.6
    np.random.set_state(numpy_state)
    assert MASKS and all(np.array_equal(m, expected) for m in MASKS)


def test_dropout_without_seed_draws_from_the_reset_global_stream(rng: np.random.Generator):
    x = rng.normal(size=(5, 4))
    np.random.seed(3)
    numpy_state = np.random.get_state()
    MASKS.clear()
    result = check((dropout_forward, dropout_backward), x, {"p": 0.5, "mode": "train"})
    assert result.ok, result
    # the same mask for every evaluation; another one only for the decoy forward (the second)
    assert len({m.tobytes() for m in MASKS[:1] + MASKS[2:]}) == 1
    assert MASKS[1].tobytes() != MASKS[0].tobytes()
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state[1])


def test_wrong_number_of_gradients_is_a_usage_error(rng: np.random.Generator):
    def backward_two(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
        return affine_backward(dout, cache)[:2]

    x, w, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)
    with pytest.raises(GradcheckUsageError, match="one gradient per array argument"):
        check((affine_forward, backward_two), x, w, b)


PAIR_TEST = """
import numpy as np

def scale_forward(x, w, param):
    param["calls"] = param.get("calls", 0) + 1
    return x * w, (x, w)

def scale_backward(dout, cache):
    x, w = cache
    return dout * w, (dout * x).sum(axis=0)

def scale_backward_bug(dout, cache):
    x, w = cache
    return dout * w, (dout * x).mean(axis=0)

def test_pair(gradcheck):
    rng = np.random.default_rng(0)
    param = {"mode": "test"}
    gradcheck((scale_forward, scale_backward), rng.normal(size=(4, 3)), rng.normal(size=3),
              param)
    assert param == {"mode": "test"}

def test_pair_bug(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck((scale_forward, scale_backward_bug), rng.normal(size=(4, 3)),
              rng.normal(size=3), {})
"""


def test_pairs_through_the_fixture(pytester: pytest.Pytester):
    pytester.makepyfile(test_pairs=PAIR_TEST)
    result = pytester.runpytest(*QUIET_PLUGINS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*gradcheck scale_forward/scale_backward_bug: FAILED*", "*w*input*FAIL*"]
    )
