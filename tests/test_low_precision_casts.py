"""Layers that compute in float16 inside, and layers that re-cast a parameter on every forward,
are judged in the precision they compute in: a correct one passes, a wrong one still fails,
and the user's arrays come back bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check


class HiddenCast:
    """(x.astype(dt) @ W.astype(dt)).astype(float64) + b: float64 in and out, `dt` inside. The
    backward is right unless `wrong` names an array ("W": dW scaled, "x": dx scaled)."""

    def __init__(self, dt: Any = np.float16, wrong: str = "", factor: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.dt, self.wrong, self.factor = dt, wrong, factor
        self.params = {"W": rng.normal(size=(8, 4)), "b": rng.normal(size=4)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        p = self.params
        inner = x.astype(self.dt) @ p["W"].astype(self.dt)
        out: np.ndarray = inner.astype(np.float64) + p["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.params
        dw = self.x.T @ dout
        dx: np.ndarray = dout @ p["W"].T
        if self.wrong == "W":
            dw = dw * self.factor
        if self.wrong == "x":
            dx = dx * self.factor
        self.grads.update(W=dw, b=dout.sum(axis=0))
        return dx


def x_batch(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 5).normal(size=(5, 8))


@pytest.mark.parametrize("mode", ["auto", "full", "fast"])
def test_a_correct_layer_computing_in_float16_inside_passes(mode: str) -> None:
    for seed in range(4):
        result = check(HiddenCast(), x_batch(seed), seed=seed, mode=mode)
        assert result.ok, str(result)
        assert result.entry("W").decided_by == "hidden precision"
        assert any("computes in float16 inside" in n for n in result.notes), result.notes


@pytest.mark.parametrize(("wrong", "factor"), [("W", 1.5), ("W", 1.25), ("x", 1.25), ("x", -1.0)])
def test_a_wrong_float16_layer_still_fails_in_float16(wrong: str, factor: float) -> None:
    for seed in range(3):
        result = check(HiddenCast(wrong=wrong, factor=factor), x_batch(seed), seed=seed)
        assert not result.ok, str(result)
        assert result.entry(wrong).status == "FAIL"
        assert result.entry(wrong).decided_by == "hidden precision"
        assert result.entry("b").status == "ok"


def test_float32_inside_is_still_told_from_float16() -> None:
    result = check(HiddenCast(np.float32), x_batch(0))
    assert result.ok, str(result)
    assert any("computes in float32 inside" in n for n in result.notes), result.notes


class RecastEveryForward:
    """forward stores its float32 cast back into the parameter dict on every call."""

    def __init__(self, factor: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.params = {"W": rng.normal(size=(8, 4)), "b": rng.normal(size=4)}
        self.grads: dict[str, np.ndarray] = {}
        self.factor = factor

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.params["W"] = self.params["W"].astype(np.float32)
        self.x = x
        out: np.ndarray = x @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.params
        self.grads.update(W=self.x.T @ dout * self.factor, b=dout.sum(axis=0))
        dx: np.ndarray = dout @ p["W"].T
        return dx


def test_a_parameter_re_cast_on_every_forward_is_judged_in_its_precision() -> None:
    layer = RecastEveryForward()
    w = layer.params["W"]
    before = w.tobytes()
    result = check(layer, x_batch(0))
    assert result.ok, str(result)
    assert result.entry("W").numeric != 0.0
    assert any("replaces parameter(s) W with a new array" in n for n in result.notes)
    assert layer.params["W"] is w and w.tobytes() == before and w.dtype == np.float64


@pytest.mark.parametrize("mode", ["auto", "fast"])
def test_a_wrong_gradient_of_a_re_cast_parameter_still_fails(mode: str) -> None:
    result = check(RecastEveryForward(factor=1.1), x_batch(0), mode=mode)
    assert not result.ok and result.entry("W").status == "FAIL", str(result)
    assert result.entry("W").numeric != 0.0


class RecastBehindProperty:
    """W is a read-only property over `_w`, which forward replaces with its float32 cast: the
    checker can neither swap in its own array nor give it back."""

    def __init__(self) -> None:
        self._w = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
        self.dW: np.ndarray | None = None

    @property
    def W(self) -> np.ndarray:
        return self._w

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._w = self._w.astype(np.float32)
        self.x = x
        out: np.ndarray = x @ self._w
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        dx: np.ndarray = dout @ self._w.T
        return dx


def test_a_re_cast_parameter_that_cannot_be_given_back_is_refused_with_what_forward_does(
) -> None:
    layer = RecastBehindProperty()
    w = layer._w
    with pytest.raises(GradcheckUsageError, match="replaces parameter 'W' with a new array"):
        check(layer, x_batch(0))
    assert layer._w is w


@pytest.mark.parametrize("mode", ["auto", "fast"])
@pytest.mark.parametrize("seed", [46, 122, 222])
def test_float16_noise_the_finest_probe_reads_low_is_measured_again_coarser(
    seed: int, mode: str
) -> None:
    # At these seeds the probe's finest moves were partly rounded away in float16: W read as
    # flat, or its noise read low and the float16 tolerance built on it failed a right W.
    rng = np.random.default_rng([seed, 20260])
    layer = HiddenCast()
    layer.params = {"W": rng.normal(size=(8, 4)), "b": rng.normal(size=4)}
    result = check(layer, rng.normal(size=(5, 8)), seed=seed, mode=mode)
    assert result.ok, str(result)
