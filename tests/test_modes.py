"""The modes: full, sample, fast (directional, with group testing) and auto.

What each mode costs is a tested property, counted on a layer that counts its own forward and
backward calls (never timed: the machine is noisy). Each mode catches the classic bugs of
tests/buggy_layers.py on the right row; fast mode locates a single wrong element among 16,384 at
the index full mode reports, within 100 forward passes; and every guarantee of the core (state
restored bit for bit, random streams reset and given back) holds in fast mode too.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from buggy_layers import (
    CLASSIC_BUGS,
    BatchNormMeanConstant,
    LinearBiasGradMean,
)
from helpers import SETUP_FORWARDS, evaluations, global_streams

from example_nn import BatchNorm1d, Dropout, Linear, MaxPool2d, ReLU
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.calls import CONFIRMATIONS
from pytest_gradcheck.modes import (
    AUTO_FULL_OUTRIGHT,
    ELEMENT_NOISE_EVALUATIONS,
    FLOAT64_NOISE_EVALUATIONS,
    JOINT_NOISE_EVALUATIONS,
)
from pytest_gradcheck.search import MAX_LOCATED

MODES = ("full", "sample", "fast", "auto")
# When the first two forwards differ for a legitimate reason, one more confirms determinism.


def counting_linear(n_in: int, n_out: int, seed: int = 0) -> tuple[Any, Counter[str]]:
    """A Linear layer and the counter of its forward and backward calls.

    The counter lives in a closure, out of the checker's reach: as layer state it would be
    restored before every evaluation like any other attribute a forward pass changes.
    """
    calls: Counter[str] = Counter()

    class CountingLinear:
        def __init__(self) -> None:
            rng = np.random.default_rng(seed)
            self.params = {
                "W": rng.normal(size=(n_in, n_out)) / np.sqrt(n_in),
                "b": 0.1 * rng.normal(size=n_out),
            }
            self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

        def forward(self, x: np.ndarray) -> np.ndarray:
            calls["forward"] += 1
            self._x = x
            return x @ self.params["W"] + self.params["b"]

        def backward(self, dout: np.ndarray) -> np.ndarray:
            calls["backward"] += 1
            self.grads["W"] = self._x.T @ dout
            self.grads["b"] = dout.sum(axis=0)
            return dout @ self.params["W"].T

    return CountingLinear(), calls


# Evaluations a float64 check spends measuring its rounding noise: with one element of each
# array moving (full and sample mode, auto mode's full mode outright), or every element (auto).
MEASURED = ELEMENT_NOISE_EVALUATIONS
JOINT = JOINT_NOISE_EVALUATIONS


def x_of(shape: tuple[int, ...], seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# ---------------------------------------------------------------------------------------------
# Cost of each mode, counted
# ---------------------------------------------------------------------------------------------


def test_full_mode_costs_two_forwards_per_element_and_one_backward() -> None:
    layer, calls = counting_linear(5, 3)
    x = x_of((4, 5))
    n = x.size + 5 * 3 + 3
    result = check(layer, x, mode="full")
    assert result.ok
    # and the objective's rounding noise, measured once (`modes.joint_noise`)
    assert calls == {"forward": evaluations(MEASURED + 2 * n) + SETUP_FORWARDS, "backward": 1}
    assert (result.forward_calls, result.backward_calls) == (calls["forward"], 1)


@pytest.mark.parametrize("samples", [1, 4, 16])
def test_sample_mode_costs_two_forwards_per_sampled_element(samples: int) -> None:
    layer, calls = counting_linear(6, 4)
    x = x_of((5, 6))
    sizes = [x.size, 6 * 4, 4]
    result = check(layer, x, mode="sample", samples=samples)
    assert result.ok
    # every array is covered: min(k, size) elements of each
    assert calls["forward"] == SETUP_FORWARDS + evaluations(
        MEASURED + sum(2 * min(samples, s) for s in sizes))
    assert calls["backward"] == 1
    assert [e.checked for e in result.entries] == [min(samples, s) for s in sizes]


@pytest.mark.parametrize("directions", [1, 2, 5])
def test_fast_mode_costs_two_forwards_per_direction_whatever_the_size_and_arrays(
    directions: int,
) -> None:
    # x, W and b move together along each direction: two evaluations, not two per array; a
    # narrow pass (the tiny layer's, where few terms bring rounding near its bound) is confirmed
    # along one more direction (numeric.DIRECTIONAL_CONFIRM), the larger layer's is not.
    for n_in, n_out, batch in [(3, 2, 2), (64, 64, 32)]:
        layer, calls = counting_linear(n_in, n_out)
        result = check(layer, x_of((batch, n_in)), mode="fast", directions=directions)
        assert result.ok
        used = [directions] if n_in == 64 else [directions, directions + 1]
        assert calls["forward"] in [SETUP_FORWARDS + evaluations(2 * d) for d in used]
        assert calls["backward"] == 1
        # one row per array, as in full mode
        assert [e.name for e in result.entries] == ["x", "W", "b"]


def test_sample_and_fast_draws_are_seeded_and_reproducible() -> None:
    layer, _ = counting_linear(8, 8)
    x = x_of((6, 8))
    for mode in ("sample", "fast"):
        a = check(layer, x, mode=mode, seed=3, samples=3).entries
        b = check(layer, x, mode=mode, seed=3, samples=3).entries
        c = check(layer, x, mode=mode, seed=4, samples=3).entries
        assert [e.max_rel_error for e in a] == [e.max_rel_error for e in b]
        assert [e.max_rel_error for e in a] != [e.max_rel_error for e in c]


def test_auto_mode_checks_a_tiny_check_in_full_outright() -> None:
    layer, calls = counting_linear(4, 3)
    x = x_of((3, 4))  # 12 + 12 + 3 = 27 elements in all, under AUTO_FULL_OUTRIGHT
    result = check(layer, x)
    assert result.mode == "auto"
    assert result.ok
    assert calls["forward"] == SETUP_FORWARDS + evaluations(MEASURED + 2 * (12 + 12 + 3))
    assert [e.decided_by for e in result.entries] == ["elements"] * 3
    # one element more than the limit: fast mode's verdict first
    total = AUTO_FULL_OUTRIGHT + 1
    layer, calls = counting_linear(total - 1, 1)  # W: total - 1 elements, b: 1, x: inputs=False
    result = check(layer, x_of((2, total - 1)), inputs=False)
    assert result.ok
    assert calls["forward"] < SETUP_FORWARDS + evaluations(MEASURED + 2 * total)


def test_auto_mode_passes_a_larger_layer_at_fast_modes_cost() -> None:
    layer, calls = counting_linear(16, 8)  # W: 128 elements, b: 8
    x = x_of((4, 16))  # 64 elements
    result = check(layer, x)
    assert result.ok
    # the noise measured, then x, W and b along one joint direction (one more when it passes
    # narrowly), whatever auto_limit says
    assert calls["forward"] in [SETUP_FORWARDS + evaluations(JOINT + 2 * d) for d in (1, 2)]
    assert [e.decided_by for e in result.entries] == ["joint direction"] * 3
    again = check(layer, x, auto_limit=1_000_000)
    assert again.forward_calls == result.forward_calls


class WrongElements(Linear):
    """Linear whose weight gradient is off at the given flat indices by a factor each."""

    def __init__(self, slips: dict[int, float], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slips = slips

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        dW = self.grads["W"].copy()
        for i, factor in self.slips.items():
            dW.flat[i] *= factor
        self.grads["W"] = dW
        return dx


@pytest.mark.parametrize("seed", range(5))
def test_auto_mode_maps_a_wrong_array_element_by_element(seed: int) -> None:
    """A direction that disagrees on an array up to auto_limit elements is settled element by
    element: full mode's exact map, at far less than full mode's cost on the arrays that
    agree."""
    layer = WrongElements({5: 1.001, 40: 0.99, 77: 1.01}, 16, 8,
                          rng=np.random.default_rng(seed))
    x = x_of((32, 16), seed=seed)  # x: 512 elements, W: 128, b: 8
    auto = check(layer, x, seed=seed)
    full = check(layer, x, mode="full", seed=seed)
    a, f = auto.entry("W"), full.entry("W")
    assert a.status == f.status == "FAIL"
    assert a.decided_by == "settled"
    assert np.flatnonzero(a.failed_mask).tolist() == [5, 40, 77]
    assert np.array_equal(a.failed_mask, f.failed_mask)
    assert a.worst_index == f.worst_index
    assert a.numeric == f.numeric and a.analytic == f.analytic
    assert auto.entry("x").status == auto.entry("b").status == "ok"
    assert auto.forward_calls < full.forward_calls / 2
    assert any("judged element by element" in n and "W (128)" in n for n in auto.notes)
    # with auto_limit below W's size, the search locates the same elements
    searched = check(layer, x, seed=seed, auto_limit=100).entry("W")
    assert searched.status == "FAIL" and searched.decided_by == "search"
    assert set(np.flatnonzero(searched.failed_mask)) == {5, 40, 77}


# ---------------------------------------------------------------------------------------------
# Localisation: one wrong element among 16,384
# ---------------------------------------------------------------------------------------------


class OneWrongElement(Linear):
    """Linear whose weight gradient is wrong at `wrong` only (by 10% of the typical size)."""

    def __init__(self, wrong: list[tuple[int, int]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrong = wrong

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        dW = self.grads["W"].copy()
        for i, j in self.wrong:
            dW[i, j] += 0.1 * np.abs(dW).mean()
        self.grads["W"] = dW
        return dx


def big_layer(wrong: list[tuple[int, int]]) -> tuple[OneWrongElement, np.ndarray]:
    # 128x128 = 16,384 weights; a batch of 2 keeps the forward pass tiny for the full-mode run.
    layer = OneWrongElement(wrong, 128, 128, rng=np.random.default_rng(7))
    return layer, x_of((2, 128), seed=8)


def test_fast_mode_locates_one_wrong_element_among_16384_like_full_mode() -> None:
    layer, x = big_layer([(37, 101)])
    fast = check(layer, x, mode="fast", params=["W"], inputs=False)
    full = check(layer, x, mode="full", params=["W"], inputs=False)
    f, g = fast.entry("W"), full.entry("W")
    assert f.status == g.status == "FAIL"
    assert f.worst_index == g.worst_index == (37, 101)
    # the located element is judged exactly as full mode judges it
    assert f.analytic == pytest.approx(g.analytic, rel=1e-12)
    assert f.numeric == pytest.approx(g.numeric, rel=1e-12)
    assert f.max_rel_error == pytest.approx(g.max_rel_error, rel=1e-9)
    assert f.failed == g.failed == 1
    assert np.flatnonzero(f.failed_mask).tolist() == [37 * 128 + 101]
    # a direction at step h disagrees, and again at 2h (no truncation: the error is real);
    # group testing: ceil(log2 16384) = 14 probes of two passes, and two for the element; the
    # verification a failing verdict gets on top (the noise probe, the confirmations of the
    # unperturbed point) is the same in every mode and is counted apart
    search = fast.forward_calls - SETUP_FORWARDS - CONFIRMATIONS - FLOAT64_NOISE_EVALUATIONS
    assert search <= 2 + 2 + 2 * 14 + 2 + 8  # the direction twice, the halvings, the element,
    assert fast.forward_calls < full.forward_calls / 250  # and the repeats
    # a failing float64 check also measures the noise the array sees before blaming backward
    # (one step size: it reads float64's rounding)
    assert fast.forward_calls == SETUP_FORWARDS + CONFIRMATIONS + evaluations(
        2 + 2 + 2 * 14 + 2 + FLOAT64_NOISE_EVALUATIONS)
    # full mode measures the objective's rounding first, and its failing element again at a
    # smaller step (is it truncation?)
    assert full.forward_calls == SETUP_FORWARDS + CONFIRMATIONS + evaluations(
        MEASURED + 2 * 16384 + FLOAT64_NOISE_EVALUATIONS + 2)
    # the default mode (the array is over auto_limit: searched) finds it at the same index, and
    # both within 100 forward passes in all
    auto = check(layer, x, params=["W"], inputs=False)
    a = auto.entry("W")
    assert (a.status, a.worst_index, a.failed) == ("FAIL", (37, 101), 1)
    assert auto.forward_calls == SETUP_FORWARDS + CONFIRMATIONS + evaluations(
        JOINT + 2 + 2 + 2 * 14 + 2 + FLOAT64_NOISE_EVALUATIONS)
    assert fast.forward_calls <= auto.forward_calls <= 100


def test_fast_mode_locates_several_wrong_elements() -> None:
    wrong = [(3, 4), (64, 0), (127, 127)]
    layer, x = big_layer(wrong)
    result = check(layer, x, mode="fast", params=["W"], inputs=False)
    e = result.entry("W")
    assert e.status == "FAIL"
    assert sorted(np.flatnonzero(e.failed_mask).tolist()) == sorted(i * 128 + j for i, j in wrong)
    assert e.failed == 3
    assert result.forward_calls <= SETUP_FORWARDS + CONFIRMATIONS + evaluations(
        2 + 2 + len(wrong) * (2 * 14 + 2) + FLOAT64_NOISE_EVALUATIONS
    )
    assert len(wrong) < MAX_LOCATED


def test_fast_mode_on_a_wrong_bias_reports_the_index_in_the_session_report() -> None:
    layer = LinearBiasGradMean(64, 40, rng=np.random.default_rng(1))
    result = check(layer, x_of((8, 64)), mode="fast")
    assert [e.name for e in result.failed_entries] == ["b"]
    assert result.entry("b").worst_index is not None
    assert "where b is wrong" in str(result)


# ---------------------------------------------------------------------------------------------
# The classic bugs, caught in every mode
# ---------------------------------------------------------------------------------------------



@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("make", "shape", "row"), [c[1:] for c in CLASSIC_BUGS], ids=[c[0] for c in CLASSIC_BUGS]
)
def test_classic_bug_is_caught_in_every_mode(
    make: Callable[[], Any], shape: tuple[int, ...], row: str, mode: str
) -> None:
    for seed in (0, 1, 2):
        x = np.random.default_rng(seed).normal(size=shape)
        # samples=4: fewer than the 24 inputs, so sample mode really samples
        result = check(make(), x, seed=seed, mode=mode, samples=4)
        assert [e.name for e in result.failed_entries] == [row], str(result)
        assert result.entry(row).worst_index is not None


@pytest.mark.parametrize(
    ("make", "shape", "row"), [c[1:] for c in CLASSIC_BUGS], ids=[c[0] for c in CLASSIC_BUGS]
)
def test_classic_bug_is_caught_in_fast_mode_on_arrays_too_big_for_full(
    make: Callable[[], Any], shape: tuple[int, ...], row: str
) -> None:
    # auto with a tiny limit sends every array through fast mode and group testing
    result = check(make(), np.random.default_rng(3).normal(size=shape), mode="auto",
                   auto_limit=1)
    assert [e.name for e in result.failed_entries] == [row]


class TripledInputGradient(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        return 3.0 * super().backward(dout)


@pytest.mark.parametrize("mode", ["full", "sample", "fast"])
def test_a_step_that_vanishes_next_to_huge_inputs_is_an_error_in_every_mode(mode: str) -> None:
    # x + 1e-6 == x at 1e12 (an explicit eps is absolute): fast mode must not read the unmoved
    # input as a zero derivative
    layer = TripledInputGradient(4, 3, rng=np.random.default_rng(0))
    with pytest.raises(GradcheckUsageError) as info:
        check(layer, x_of((5, 4)) * 1e12, mode=mode, eps=1e-6)
    assert str(info.value).startswith(
        "TripledInputGradient: x: the step eps=1e-06 is so small next to its values")


# ---------------------------------------------------------------------------------------------
# The core's guarantees in fast mode: random sources, batchnorm, state
# ---------------------------------------------------------------------------------------------


class GlobalDropout(Dropout):
    """Dropout drawing its mask from numpy's global RNG."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training:
            self._mask = None
            return x
        self._mask = np.random.random(x.shape) >= self.p
        return x * self._mask * self.scale


def fingerprint(obj: Any) -> dict[str, Any]:
    """Everything in a layer's __dict__, arrays by their bytes, generators by their state."""
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        if isinstance(v, np.ndarray):
            out[k] = (v.dtype.str, v.shape, v.tobytes())
        elif isinstance(v, np.random.Generator):
            out[k] = repr(v.bit_generator.state)
        elif isinstance(v, dict):
            out[k] = {kk: (vv.tobytes() if isinstance(vv, np.ndarray) else vv)
                      for kk, vv in v.items()}
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("mode", ["fast", "sample"])
@pytest.mark.parametrize("make", [
    lambda: Dropout(0.4, rng=np.random.default_rng(2)),
    lambda: GlobalDropout(0.4),
], ids=["private-generator", "global-rng"])
def test_dropout_passes_and_every_stream_is_given_back(make: Callable[[], Any], mode: str) -> None:
    layer = make()
    x = x_of((16, 40))  # 640 inputs
    np.random.seed(123)
    np.random.standard_normal()  # leaves a cached gaussian in the global state
    random.seed(9)
    before, streams = fingerprint(layer), global_streams()
    result = check(layer, x, mode=mode)
    assert result.ok, str(result)
    assert fingerprint(layer) == before
    assert global_streams() == streams


def test_dropout_without_scale_is_caught_in_fast_mode_with_a_global_rng() -> None:
    class GlobalDropoutNoScale(GlobalDropout):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            return dout * self._mask

    result = check(GlobalDropoutNoScale(0.5), x_of((16, 40)), mode="fast")
    assert [e.name for e in result.failed_entries] == ["x"]
    assert result.entry("x").worst_index is not None


@pytest.mark.parametrize("seed", range(6))
def test_kinks_crossed_by_a_direction_pass_in_fast_mode(seed: int) -> None:
    # Several ReLU inputs exactly at 0 and a max-pool tie: a direction crosses all of them at
    # once and its central difference mixes their one-sided slopes; group testing finds them
    # and the kink rule clears each one, as in full mode.
    x = np.random.default_rng(seed).normal(size=(6, 5))
    x[0, :3] = 0.0
    x[2, 1] = 0.0
    result = check(ReLU(), x, mode="fast", seed=seed)
    assert result.ok, str(result)
    # cheaper than full mode (which would confirm its kinks too)
    assert result.forward_calls < SETUP_FORWARDS + evaluations(2 * x.size) + CONFIRMATIONS

    p = np.random.default_rng(seed).normal(size=(1, 2, 4, 4))
    p[0, 0, 0, 1] = p[0, 0, 0, 0]
    assert check(MaxPool2d(2, 2), p, mode="fast", seed=seed).ok


def test_many_kinks_fall_back_to_full_mode_on_small_arrays() -> None:
    x = np.random.default_rng(0).normal(size=(20, 30))
    x[np.random.default_rng(1).random(x.shape) < 0.4] = 0.0  # ~240 kinks
    result = check(ReLU(), x, mode="fast")
    assert result.ok
    assert result.entry("x").kinks > 100
    assert any("element by element" in n for n in result.notes)


def test_a_wrong_element_next_to_kinks_is_still_found_in_fast_mode() -> None:
    class LeakyBug(ReLU):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            dx[4, 4] += 0.5  # one wrong element (x[4, 4] > 0 below)
            return dx

    x = np.abs(np.random.default_rng(0).normal(size=(6, 5))) + 0.1
    x[0, :3] = 0.0
    result = check(LeakyBug(), x, mode="fast")
    assert result.entry("x").worst_index == (4, 4)
    assert result.entry("x").failed == 1


@pytest.mark.parametrize("mode", ["fast", "sample", "full"])
def test_batchnorm_left_in_eval_mode_is_checked_in_training_and_left_as_it_was(
    mode: str,
) -> None:
    bn = BatchNorm1d(48)
    bn.params["gamma"] = 1.0 + 0.1 * x_of((48,), seed=1)
    for _ in range(3):
        bn.forward(x_of((16, 48), seed=2))  # some running statistics
    bn.eval()
    before = fingerprint(bn)
    x = x_of((16, 48), seed=3)
    result = check(bn, x, mode=mode)
    assert result.ok, str(result)
    assert any("training" in n for n in result.notes)
    assert fingerprint(bn) == before
    assert bn.training is False

    bad = BatchNormMeanConstant(48)
    bad.eval()
    assert not check(bad, x, mode=mode).ok


def test_fast_mode_inputs_and_parameters_are_restored_bit_for_bit() -> None:
    layer, x = big_layer([(1, 2)])
    w = layer.params["W"].copy()
    x_before = x.copy()
    check(layer, x, mode="fast")
    assert layer.params["W"].tobytes() == w.tobytes()
    assert x.tobytes() == x_before.tobytes()


# ---------------------------------------------------------------------------------------------
# Fast mode through the pytest marker
# ---------------------------------------------------------------------------------------------


def test_fast_mode_from_the_marker_in_a_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fast="""
        import numpy as np
        import pytest
        from example_nn import Linear


        class OneWrong(Linear):
            def backward(self, dout):
                dx = super().backward(dout)
                self.grads["W"] = self.grads["W"].copy()
                self.grads["W"][5, 7] *= 3.0
                return dx


        def x():
            return np.random.default_rng(0).normal(size=(4, 64))


        @pytest.mark.gradcheck(mode="fast")
        def test_good(gradcheck):
            result = gradcheck(Linear(64, 64, rng=np.random.default_rng(1)), x())
            assert result.mode == "fast"
            # 3 setup passes, 2 for x, W and b moved together, both of them made twice
            assert result.forward_calls == 3 + 2 + 2


        @pytest.mark.gradcheck(mode="fast")
        def test_bad(gradcheck):
            gradcheck(OneWrong(64, 64, rng=np.random.default_rng(1)), x())
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*gradcheck OneWrong: FAILED*mode=fast*",
        "*W *param*64x64*(5, 7)*1/4096*FAIL",
    ])


def test_one_more_setup_forward_when_lazy_creation_draws_from_the_layers_stream() -> None:
    """Creating W draws from the layer's generator on the first forward only, so the first
    output's dropout mask differs from later ones: a third forward confirms determinism."""
    calls = {"forward": 0, "backward": 0}

    class LazyNoisy:
        def __init__(self) -> None:
            self.rng = np.random.default_rng(5)
            self.params: dict[str, np.ndarray] = {}
            self.grads: dict[str, np.ndarray] = {}

        def forward(self, x: np.ndarray) -> np.ndarray:
            calls["forward"] += 1
            if "W" not in self.params:
                self.params["W"] = self.rng.normal(size=(x.shape[1], 2))
            self.x = x
            self.mask = self.rng.random((x.shape[0], 2)) < 0.5
            return (x @ self.params["W"]) * self.mask

        def backward(self, dout: np.ndarray) -> np.ndarray:
            calls["backward"] += 1
            d = dout * self.mask
            self.grads["W"] = self.x.T @ d
            return d @ self.params["W"].T

    x = np.random.default_rng(1).normal(size=(4, 3))
    result = check(LazyNoisy(), x, mode="full")
    assert result.ok, str(result)
    assert calls == {"forward": SETUP_FORWARDS + 1 + evaluations(MEASURED + 2 * (12 + 6)),
                     "backward": 1}


def test_sampled_elements_depend_on_seed_and_array_name_not_on_other_arrays() -> None:
    """Leaving other arrays out (params=, inputs=False) keeps an array's sample, so a failure
    narrowed down with params= shows the same elements."""

    class AllWrong(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * 2.0
            return dx

    layer = AllWrong(8, 8, rng=np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(3, 8))
    every = check(layer, x, mode="sample", samples=5).entry("W")
    only = check(layer, x, mode="sample", samples=5, params=["W"], inputs=False).entry("W")
    other_seed = check(layer, x, mode="sample", samples=5, seed=1).entry("W")
    assert every.failed == only.failed == 5
    assert np.array_equal(every.failed_mask, only.failed_mask)
    assert not np.array_equal(every.failed_mask, other_seed.failed_mask)
