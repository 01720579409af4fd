"""Judging within the rounding a float64 check measures, not the worst-case bound.

The bound, epsilon times the sum of the objective's |terms|, assumes every rounding goes the same
way; the noise a check measures (`modes.joint_noise`) is one to three orders of magnitude lower,
and an element whose own gradient is small is judged against that floor: an error of 0.1% of
such an element hides under the bound and shows under the measured noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from example_nn import Linear
from pytest_gradcheck import check
from pytest_gradcheck.judging import Judge
from pytest_gradcheck.modes import ELEMENT_NOISE_EVALUATIONS

SEEDS = range(10)


class SmallElementSlip(Linear):
    """Linear whose dW[0, 3] is 0.1% off (of its own value) when `slip` is set."""

    def __init__(self, n: int, rng: np.random.Generator, slip: bool) -> None:
        super().__init__(n, n, rng=rng)
        self.slip = slip

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        if self.slip:
            self.grads["W"][0, 3] *= 1.001
        return dx


def case(seed: int, slip: bool) -> tuple[SmallElementSlip, np.ndarray]:
    """A 32x32 layer whose input's first column is 3e-4 of the others: row 0 of dW is that
    small, so its elements sit near the rounding floor."""
    rng = np.random.default_rng(seed)
    layer = SmallElementSlip(32, rng, slip)
    x = rng.normal(size=(8, 32))
    x[:, 0] *= 3e-4
    return layer, x


def bound_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker as it would judge with the bound alone (the rule disabled)."""
    monkeypatch.setattr(Judge, "measured_rounding",
                        lambda self, analytic, evaluate, judging: judging)


@pytest.mark.parametrize("mode", ["full", "auto"])
def test_a_small_gradient_element_off_by_a_tenth_of_a_percent_fails_under_measured_rounding(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    caught = []
    for seed in SEEDS:
        layer, x = case(seed, slip=True)
        w = check(layer, x, mode=mode, seed=seed).entry("W")
        if w.status == "FAIL":
            assert w.worst_index == (0, 3)
        caught.append(w.status == "FAIL")
    # at seed 5 the element's own gradient nearly cancels: 0.1% of it is below any rounding
    assert sum(caught) >= 9, caught
    # the same checks judged by the bound miss most of them: the test can tell the two apart
    bound_only(monkeypatch)
    missed = [check(*case(seed, slip=True), mode=mode, seed=seed).entry("W").status == "ok"
              for seed in SEEDS]
    assert sum(missed) >= 6, missed


@pytest.mark.parametrize("mode", ["full", "sample", "auto"])
def test_the_right_layer_passes_under_measured_rounding(mode: str) -> None:
    for seed in SEEDS:
        result = check(*case(seed, slip=False), mode=mode, seed=seed)
        assert result.ok, str(result)


def test_the_measured_floor_sits_well_below_the_bound_and_fast_mode_keeps_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer, x = case(0, slip=False)
    measured = check(layer, x, mode="full")
    fast = check(layer, x, mode="fast")
    bound_only(monkeypatch)
    bound = check(layer, x, mode="full")
    # the header's atol (the floor for an array of scale 1): at least 5 times lower
    assert measured.atol < bound.atol / 5
    assert fast.atol == bound.atol
    # the measurement costs ELEMENT_NOISE_EVALUATIONS (and a repeat among them)
    assert measured.forward_calls - bound.forward_calls in (ELEMENT_NOISE_EVALUATIONS,
                                                             ELEMENT_NOISE_EVALUATIONS + 1)


def test_given_eps_or_rtol_keeps_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    layer, x = case(1, slip=False)
    given = [check(layer, x, mode="full", eps=1e-6), check(layer, x, mode="full", rtol=1e-5)]
    bound_only(monkeypatch)
    assert [r.atol for r in given] == [check(layer, x, mode="full", eps=1e-6).atol,
                                       check(layer, x, mode="full", rtol=1e-5).atol]


# A loss whose internal terms are far larger than its value: the bound, epsilon times the loss,
# is blind to their rounding, which the check measures.
BIG = 1e2


def cancelling_case(slip: float = 0.0) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(0)
    x = 0.1 * rng.normal(size=(8, 6))  # a loss of about 0.5 beside internal terms of 100
    x[:, 0] *= 1e-3  # row 0 of dW is small: its elements sit near the rounding floor

    def loss_and_grad(W: np.ndarray) -> tuple[float, np.ndarray]:
        out = x @ W
        loss = 0.5 * float(np.sum(out**2)) + float(np.sum(BIG * W)) - float(np.sum(BIG * W))
        dW = x.T @ out
        dW[0, 2] += slip
        return loss, dW

    return loss_and_grad, rng.normal(size=(6, 4))


@pytest.mark.parametrize("mode", ["full", "sample", "auto"])
def test_a_loss_of_cancelling_terms_is_judged_within_the_rounding_it_measures(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    f, W = cancelling_case()
    result = check(f, W, mode=mode)
    assert result.ok, str(result)
    assert any("above the bound epsilon times the sum of its terms" in n for n in result.notes)
    assert (result.precision, result.rtol) == ("float64", 1e-5)
    # judged by the bound, row 0's rounding fails a right gradient
    bound_only(monkeypatch)
    assert not check(f, W, mode="full").ok


@pytest.mark.parametrize("mode", ["full", "auto"])
def test_a_wrong_element_beyond_the_measured_rounding_of_a_cancelling_loss_still_fails(
    mode: str,
) -> None:
    f, W = cancelling_case()
    floor = check(f, W, mode="full").atol / np.sqrt(np.mean(W**2))  # W's element floor
    wrong, _ = cancelling_case(slip=3 * floor)
    e = check(wrong, W, mode=mode).entries[0]
    assert (e.status, e.worst_index) == ("FAIL", (0, 2))
