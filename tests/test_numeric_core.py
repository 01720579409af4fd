"""Unit tests of the numerical core (`pytest_gradcheck.numeric`) on plain arrays and callables.

The end-to-end tests pin these rules through `check()`; here each rule is pinned alone, with
inputs whose right answer is known in closed form.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from pytest_gradcheck import numeric
from pytest_gradcheck.numeric import Tolerance

# ---------------------------------------------------------------------------------------------
# Relative error and the noise floor
# ---------------------------------------------------------------------------------------------


def test_floor_turns_the_absolute_slack_into_the_relative_scale() -> None:
    assert Tolerance(rtol=1e-5, atol=1e-8).floor == pytest.approx(1e-3)
    assert Tolerance(rtol=0.0, atol=1e-8).floor == math.inf


def test_relative_error_of_large_values_is_relative_to_the_larger_one() -> None:
    tol = Tolerance(rtol=1e-5, atol=1e-12)
    err = tol.relative_error(np.array([100.0, -3.0]), np.array([101.0, -2.0]))
    np.testing.assert_allclose(err, [1.0 / 101.0, 1.0 / 3.0])
    # Symmetric in its two arguments.
    swapped = tol.relative_error(np.array([101.0, -2.0]), np.array([100.0, -3.0]))
    np.testing.assert_array_equal(err, swapped)


def test_values_below_the_floor_pass_within_the_absolute_slack() -> None:
    tol = Tolerance(rtol=1e-5, atol=1e-8)  # floor 1e-3
    analytic = np.array([1e-9, 1e-6, 0.0])
    numeric_ = np.array([0.0, 0.0, 5e-9])
    err = tol.relative_error(analytic, numeric_)
    # Without the floor each of these would be a relative error of 1.
    np.testing.assert_allclose(err, [1e-6, 1e-3, 5e-6])
    assert list(err <= tol.rtol) == [True, False, True]


def test_pass_means_within_rtol_relative_or_within_atol_absolute() -> None:
    """err <= rtol exactly when |a - n| <= max(rtol * max(|a|, |n|), atol)."""
    rng = np.random.default_rng(0)
    tol = Tolerance(rtol=1e-3, atol=1e-6)
    scale = 10.0 ** rng.uniform(-9, 2, size=5000)
    a = rng.normal(size=5000) * scale
    n = a * (1 + rng.normal(size=5000) * 10.0 ** rng.uniform(-5, -1, size=5000))
    n += rng.normal(size=5000) * 10.0 ** rng.uniform(-8, -4, size=5000)
    diff = np.abs(a - n)
    bound = np.maximum(tol.rtol * np.maximum(np.abs(a), np.abs(n)), tol.atol)
    clear = np.abs(diff - bound) > 1e-9 * bound  # leave out exact ties at the boundary
    passed = tol.relative_error(a, n) <= tol.rtol
    np.testing.assert_array_equal(passed[clear], (diff <= bound)[clear])
    assert passed.any() and not passed.all()


def test_exact_zeros_agree_without_a_floor_and_non_finite_values_fail() -> None:
    tol = Tolerance(rtol=1e-5, atol=0.0)
    with np.errstate(all="raise"):
        err = tol.relative_error(
            np.array([0.0, np.nan, 1.0, np.inf, np.inf]),
            np.array([0.0, 1.0, np.nan, 1.0, np.inf]),
        )
    assert err[0] == 0.0
    assert np.all(err[1:] == np.inf)


def test_make_tolerance_adds_the_noise_of_a_central_difference_to_the_slack() -> None:
    base = numeric.make_tolerance(1e-5, 1e-9, noise=0.0, step=1e-6)
    assert (base.rtol, base.atol) == (1e-5, 1e-9)
    one = numeric.make_tolerance(1e-5, 0.0, noise=1e-12, step=1e-6)
    assert numeric.make_tolerance(1e-5, 0.0, noise=2e-12, step=1e-6).atol == pytest.approx(
        2 * one.atol
    )
    assert numeric.make_tolerance(1e-5, 0.0, noise=1e-12, step=2e-6).atol == pytest.approx(
        one.atol / 2
    )
    # At least the noise-to-step ratio, which is how far noise moves a difference quotient.
    assert one.atol >= 1e-12 / 1e-6


def test_noise_floor_accepts_a_zero_derivative_measured_through_noise() -> None:
    """f is constant plus rounding-like noise of size `noise`: the true derivative is 0, the
    central differences are noise/step in size, and the noise-aware tolerance accepts them."""
    rng = np.random.default_rng(1)
    noise, step = 1e-10, 1e-6
    f_plus = 3.0 + rng.normal(scale=noise, size=2000)
    f_minus = 3.0 + rng.normal(scale=noise, size=2000)
    numeric_ = (f_plus - f_minus) / (2 * step)
    analytic = np.zeros_like(numeric_)

    aware = numeric.make_tolerance(1e-5, 0.0, noise, step)
    assert np.all(aware.relative_error(analytic, numeric_) <= aware.rtol)
    blind = numeric.make_tolerance(1e-5, 0.0, 0.0, step)
    assert not np.any(blind.relative_error(analytic, numeric_) <= blind.rtol)
    # A real 1% error of a derivative of size 1 is still seen through that floor.
    wrong = aware.relative_error(np.full(3, 1.01), np.ones(3))
    assert np.all(wrong > aware.rtol)


# ---------------------------------------------------------------------------------------------
# compare: central differences, then the kink rule
# ---------------------------------------------------------------------------------------------

H = 1e-6
TOL = numeric.make_tolerance(1e-5, 0.0, numeric.objective_noise(1.0, "float64"), H)


def judge(f: Callable[[float], float], x: float, analytic: list[float]) -> numeric.Verdict:
    """compare() for the scalar function f at x against several candidate analytic values."""
    k = len(analytic)
    return numeric.compare(
        np.array(analytic),
        np.full(k, f(x + H)),
        np.full(k, f(x - H)),
        f(x),
        np.full(k, H),
        np.full(k, H),
        TOL,
    )


def test_smooth_function_right_value_passes_wrong_value_fails() -> None:
    v = judge(lambda x: x**3, 2.0, [12.0, 12.0 * (1 + 1e-3), 11.0])
    assert list(v.passed) == [True, False, False]
    assert not v.kink.any()
    np.testing.assert_allclose(v.numeric, 12.0, rtol=1e-8)
    assert v.rel_error[1] == pytest.approx(1e-3, rel=1e-3)
    assert not v.ok
    assert v.worst == 2


def test_abs_at_zero_any_subgradient_between_the_one_sided_slopes_passes_as_a_kink() -> None:
    # |x| at 0: one-sided slopes -1 and +1, central difference 0.
    v = judge(abs, 0.0, [0.0, 0.5, -1.0, 1.0, 1.5, -2.0, float("nan")])
    assert list(v.passed) == [True, True, True, True, False, False, False]
    # 0 passes on the central difference alone; the others inside [-1, 1] only as kinks.
    assert list(v.kink) == [False, True, True, True, False, False, False]
    assert list(v.rel_error[:4]) == [0.0, 0.0, 0.0, 0.0]
    assert np.all(v.rel_error[4:] > TOL.rtol)


def test_relu_at_zero_passes_with_either_convention_and_fails_outside() -> None:
    # max(x, 0) at 0: slopes 0 (left) and 1 (right), central difference 1/2.
    v = judge(lambda x: max(x, 0.0), 0.0, [0.0, 1.0, 0.5, -0.5, 2.0])
    assert list(v.passed) == [True, True, True, False, False]
    assert list(v.kink) == [True, True, False, False, False]
    assert v.worst in (3, 4)


def test_compare_uses_the_steps_it_is_given() -> None:
    # Unequal actual steps (as rounding produces): the quotient divides by their sum.
    def f(x: float) -> float:
        return 3.0 * x

    hp, hm = 1.5e-6, 0.5e-6
    v = numeric.compare(
        np.array([3.0]), np.array([f(1 + hp)]), np.array([f(1 - hm)]), f(1.0),
        np.array([hp]), np.array([hm]), Tolerance(rtol=1e-8, atol=0.0),
    )
    assert v.passed[0]
    assert v.numeric[0] == pytest.approx(3.0, rel=1e-9)


def test_verdict_worst_counts_nan_as_the_worst() -> None:
    v = numeric.Verdict(
        analytic=np.zeros(3), numeric=np.zeros(3), rel_error=np.array([0.5, np.nan, 2.0]),
        passed=np.array([False, False, False]), kink=np.zeros(3, dtype=bool),
    )
    assert v.worst == 1
    none, no = np.zeros(0), np.zeros(0, dtype=bool)
    empty = numeric.Verdict(analytic=none, numeric=none, rel_error=none, passed=no, kink=no)
    assert empty.worst == -1 and empty.ok


# ---------------------------------------------------------------------------------------------
# Noise estimation
# ---------------------------------------------------------------------------------------------


def test_difference_noise_of_smooth_values_is_negligible() -> None:
    t = np.linspace(0.0, 1e-3, 41)
    assert numeric.difference_noise(np.sin(1.0 + t)) < 1e-15
    assert numeric.difference_noise(list(2.0 + 3.0 * t - t**2 + 5.0 * t**3)) < 1e-15
    assert numeric.difference_noise([1.0, 2.0, 3.0, 4.0]) == 0.0  # too few points for D4


@pytest.mark.parametrize("sigma", [1e-12, 1e-8, 1e-4])
def test_difference_noise_recovers_injected_noise(sigma: float) -> None:
    rng = np.random.default_rng(3)
    t = np.linspace(-1e-3, 1e-3, 4001)
    smooth = np.exp(t) + 7.0 * t
    estimate = numeric.difference_noise(smooth + rng.normal(scale=sigma, size=t.size))
    assert estimate == pytest.approx(sigma, rel=0.1)


def test_objective_noise_scales_with_the_terms_and_the_precision() -> None:
    assert numeric.objective_noise(10.0, "float64") == pytest.approx(10.0 * 2.0**-52)
    assert numeric.objective_noise(10.0, "float32") == pytest.approx(10.0 * 2.0**-23)
    assert numeric.objective_noise(10.0, "float16") == pytest.approx(10.0 * 2.0**-10)
    # A zero objective still gets a positive floor: no division by zero downstream.
    assert numeric.objective_noise(0.0, "float64") > 0.0


def test_precision_from_noise_thresholds() -> None:
    assert numeric.precision_from_noise(0.0, 0.0) == "float64"
    assert numeric.precision_from_noise(1e-16, 1.0) == "float64"
    assert numeric.precision_from_noise(float(np.finfo(np.float32).eps), 1.0) == "float32"
    assert numeric.precision_from_noise(float(np.finfo(np.float16).eps), 1.0) == "float16"
    # Relative to the terms: the same noise on a larger objective is higher precision.
    assert numeric.precision_from_noise(1e-8, 1.0) == "float32"
    assert numeric.precision_from_noise(1e-8, 1e9) == "float64"
    # Beyond a thousand times float64's epsilon it is no float64 rounding: a float32 part
    # far smaller than the whole objective.
    assert numeric.precision_from_noise(1e-14, 1.0) == "float64"
    assert numeric.precision_from_noise(1e-11, 1.0) == "float32"


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_measured_rounding_noise_names_the_precision_computed_in(dtype: str) -> None:
    """sum(out * g) computed in `dtype`, returned as float64, sampled along a direction:
    the measured noise identifies the precision, as the checker's noise probe relies on."""
    rng = np.random.default_rng(4)
    x, w, g = rng.normal(size=64), rng.normal(size=(64, 32)), rng.normal(size=32)
    u = rng.normal(size=64)

    def objective(xv: np.ndarray) -> float:
        out = xv.astype(dtype) @ w.astype(dtype)
        return float(np.sum(out * g.astype(dtype)))

    # The objective is linear along u, so every fourth difference is rounding alone.
    values = [objective(x + k * 1e-2 * u) for k in range(-20, 21)]
    terms_abs_sum = float(np.sum(np.abs((x @ w) * g)))
    noise = numeric.difference_noise(values)
    assert numeric.precision_from_noise(noise, terms_abs_sum) == dtype


# ---------------------------------------------------------------------------------------------
# Steps and central values
# ---------------------------------------------------------------------------------------------


def test_actual_steps_are_the_rounded_differences() -> None:
    big = np.array([1e8, 1.0, -3e9])
    plus, minus = numeric.perturbed_values(big, 1e-6)
    hp, hm = numeric.actual_steps(big, plus, minus)
    np.testing.assert_array_equal(hp, plus - big)
    np.testing.assert_array_equal(hm, big - minus)
    assert hp[0] != 1e-6 and hp[2] != 1e-6  # large |x|: the stored step is not h
    assert hp[1] == pytest.approx(1e-6, rel=1e-9)

    low = np.array([1.0, 100.0], dtype=np.float32)
    plus32, minus32 = numeric.perturbed_values(low, 1e-3)
    assert plus32.dtype == np.float32
    hp32, hm32 = numeric.actual_steps(low, plus32, minus32)
    assert hp32.dtype == np.float64
    np.testing.assert_array_equal(hp32, plus32.astype(np.float64) - low.astype(np.float64))
    assert np.all(hp32 != 1e-3) and np.all(hm32 != 1e-3)  # float32 cannot store x +- h exactly


def test_central_values_match_the_function_at_the_perturbed_points() -> None:
    w = np.array([1.0, -2.0, 0.5])
    x = np.array([0.3, -1.2, 2.0])
    flat = x.copy()
    calls: list[int] = []

    def evaluate() -> float:
        calls.append(1)
        return float(np.sum(w * flat**2))

    fp, fm, hp, hm = numeric.central_values(flat, evaluate, 1e-6)
    assert len(calls) == 2 * x.size
    assert flat.tobytes() == x.tobytes()
    for i in range(x.size):
        up, down = x.copy(), x.copy()
        up[i] += hp[i]
        down[i] -= hm[i]
        assert fp[i] == np.sum(w * up**2)
        assert fm[i] == np.sum(w * down**2)
    np.testing.assert_allclose((fp - fm) / (hp + hm), 2 * w * x, rtol=1e-6)


def test_central_values_report_the_steps_that_make_the_quotient_right() -> None:
    # At 1e7 a float64 step of 1e-6 is stored as a multiple of the spacing 2**-29: dividing by
    # the nominal 2h would be off by ~1e-4, dividing by the actual steps is exact for a line.
    flat = np.array([1e7])
    fp, fm, hp, hm = numeric.central_values(flat, lambda: 3.0 * (float(flat[0]) - 1e7), 1e-6)
    assert abs((fp[0] - fm[0]) / 2e-6 - 3.0) > 1e-5
    assert (fp[0] - fm[0]) / (hp[0] + hm[0]) == pytest.approx(3.0, rel=1e-12)


def test_central_values_on_a_subset_of_indices_are_aligned_with_them() -> None:
    x = np.arange(6, dtype=np.float64) + 0.5
    flat = x.copy()
    indices = np.array([4, 1])
    fp, fm, hp, hm = numeric.central_values(flat, lambda: float(np.sum(flat**3)), 1e-6, indices)
    assert fp.shape == fm.shape == hp.shape == hm.shape == (2,)
    np.testing.assert_allclose((fp - fm) / (hp + hm), 3 * x[[4, 1]] ** 2, rtol=1e-6)
    assert flat.tobytes() == x.tobytes()


def test_central_values_put_every_element_back_when_evaluate_raises() -> None:
    x = np.array([np.float32(-0.0), np.float32(1.5), np.float32(np.nan)], dtype=np.float32)
    flat = x.copy()
    seen: list[bytes] = []

    def evaluate() -> float:
        seen.append(flat.tobytes())
        if len(seen) == 3:
            raise RuntimeError("boom")
        return 0.0

    with pytest.raises(RuntimeError, match="boom"):
        numeric.central_values(flat, evaluate, 1e-3)
    assert flat.tobytes() == x.tobytes()  # -0.0 and NaN bits included
    assert seen[0] != x.tobytes() and seen[2] != x.tobytes()  # it did perturb


def test_precision_of_picks_the_lowest_float() -> None:
    assert numeric.precision_of(np.dtype(np.float64), np.dtype(np.float32)) == "float32"
    assert numeric.precision_of("float16", "float64") == "float16"
    assert numeric.precision_of(np.dtype(np.int64)) == "float64"
    assert numeric.precision_of() == "float64"
