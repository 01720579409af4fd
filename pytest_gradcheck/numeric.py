"""The numerical core: finite differences, tolerances and the element-wise verdict.

Knows only arrays and callables, never layers or pytest, so it can be reused and tested alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np

from .errors import GradcheckUsageError

# Defaults per precision the objective is computed in: (step, rtol). Central differences have
# error ~ step**2 (truncation) + eps/step (rounding); the steps sit near that optimum, the
# tolerances well above what a correct layer reaches and below a 0.1% error in float64. Unless
# the caller gives a step, it is relative: each array's step is this times the array's scale.
PRECISION_DEFAULTS: dict[str, tuple[float, float]] = {
    "float64": (1e-6, 1e-5),
    "float32": (1e-3, 1e-2),
    "float16": (1e-1, 1e-1),
}

# How many multiples of the estimated rounding noise of the objective we tolerate. The estimate is
# a bound on the sum of |terms| already, so a small factor suffices.
NOISE_FACTOR = 8.0
# The same multiple for a noise the check measured (`modes.joint_noise`), where the noise is the
# standard deviation of the objective's rounding rather than a bound on it: an element's central
# difference then carries a rounding of sqrt(2)/2 noise/step (RMS). The reading comes from a few
# elements moving while the floor serves every element, and elements differ: on a conv net's
# 3,584-element weight one element's own noise read 2.2 times the reading, and its difference
# was off by 4 of its RMS roundings. 8 covers that with the worst of thousands of elements
# (`benchmarks/false_failures.py` and `bench_models.py` count what is left); the floor then sits
# near 7 times the measured rounding of an average element (`benchmarks/bench_rounding.py`).
MEASURED_NOISE_FACTOR = 8.0

# The scale of an array that is zero everywhere (a bias or a batchnorm shift initialised to zero)
# when nothing better is known. Such an array has no scale of its own, and the other arrays'
# scales say nothing about it (batchnorm's shift adds to values of order 1 whatever its input's
# scale; a linear layer's bias adds to values of the input's scale). What it adds to shows in the
# output: the checker passes the output's RMS as `zero_scale`, and this is only the fallback for
# an output that is zero everywhere too.
ZERO_ARRAY_SCALE = 1.0

# An explicit step larger than this fraction of an array's RMS dwarfs its values: the difference
# quotient then measures the function far away from the point, not its derivative there.
DWARFING_STEP = 0.1


def array_scale(values: np.ndarray, squares: float | None = None) -> float:
    """The RMS of an array's finite values (0.0 if none is nonzero), without overflow or
    underflow: values beyond 1e150 or all below 1e-150 are scaled by the largest first, so
    1e-170 and 1e200 keep their scale. One pass of BLAS otherwise: it runs for every array,
    none when the caller already has the sum of squares (`sum_of_squares`)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 0.0
    # The sum of squares first (one pass, no temporary): when it is finite and far from both
    # ends of the range, every |v_i| lies within (1e-150, 1e150) (n < 1e18), so the result is
    # the one the test on max |v| below would give, without reading the array twice more.
    if squares is None:
        squares = sum_of_squares(v)
    if 1e-280 < squares < 1e280:
        return math.sqrt(squares / v.size)
    big = float(np.max(np.abs(v)))
    if not math.isfinite(big):
        v = v[np.isfinite(v)]
        big = float(np.max(np.abs(v))) if v.size else 0.0
    if big == 0.0:
        return 0.0
    if 1e-150 < big < 1e150:
        return math.sqrt(float(np.dot(v, v)) / v.size)
    w = v / big
    return big * math.sqrt(float(np.dot(w, w)) / v.size)


def sum_of_squares(values: np.ndarray) -> float:
    """sum(x^2) of a flat float64 array in one BLAS pass: inf or NaN where it overflows or
    the array holds non-finite values (what `array_scale` needs to know)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return float(np.dot(values, values))


@dataclass(frozen=True)
class Tolerance:
    """What counts as agreement between an analytic and a numeric derivative."""

    rtol: float
    atol: float  # absolute slack, already including the finite-difference noise floor

    @property
    def floor(self) -> float:
        """Denominator floor that turns the absolute slack into the relative-error scale."""
        return self.atol / self.rtol if self.rtol > 0 else np.inf

    def relative_error(self, analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        """|a - n| / max(|a|, |n|, floor): <= rtol exactly when the element passes."""
        scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), self.floor)
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.abs(analytic - numeric) / scale
        # A zero scale means both values are exactly zero and the floor is zero: agreement.
        err = np.where(scale == 0, 0.0, err)
        # NaN/inf anywhere is a failure, never a silent pass.
        return np.where(np.isfinite(analytic) & np.isfinite(numeric), err, np.inf)


def is_float_array(x: Any) -> TypeGuard[np.ndarray]:
    """A numpy array of real floating-point numbers (what central differences can perturb)."""
    # dtype.kind "f" is exactly np.floating's subtypes, without np.issubdtype's dtype
    # conversion (this runs a few dozen times a check).
    return isinstance(x, np.ndarray) and x.dtype.kind == "f"


def precision_of(*dtypes: np.dtype[Any] | str) -> str:
    """The lowest floating precision among dtypes (float64 if none is a float)."""
    bits = [np.dtype(d).itemsize for d in dtypes if np.issubdtype(d, np.floating)]
    low = min(bits, default=8)
    return {2: "float16", 4: "float32"}.get(low, "float64")


def objective_noise(terms_abs_sum: float, precision: str) -> float:
    """Rounding noise bound of an objective sum(out * g) whose |terms| add up to terms_abs_sum."""
    info = np.finfo(precision)
    return float(info.eps) * max(float(terms_abs_sum), float(info.tiny))


def difference_noise(values: np.ndarray | list[float]) -> float:
    """Noise level of f from its values at equally spaced, closely spaced points.

    Fourth differences cancel the smooth part of f (up to the step**4 term) and leave the
    rounding noise, whose standard deviation they estimate: E[(D4 f)^2] = 70 sigma^2 for
    independent noise (the difference-table estimate of More and Wild).
    """
    d4 = np.diff(np.asarray(values, dtype=np.float64), 4)
    return float(np.sqrt(np.mean(d4**2) / 70.0)) if d4.size else 0.0


def precision_from_noise(noise: float, terms_abs_sum: float) -> str:
    """The precision whose rounding explains a measured objective noise.

    A float64 computation of sum(out * g) is noisy at ~1e-16 of the sum of |terms|; one that
    goes through float32 (or float16) inside, whatever dtype it returns, at up to ~1e-8 (~1e-4).
    Noise more than a thousand times float64's epsilon is not float64 rounding: it is put down
    to float32 unless it reaches float16's threshold (three orders of magnitude below float16's
    epsilon). Relative to the whole objective, a float32 part can sit far below float32's
    epsilon: x @ W computed in float32 under a float64 bias a hundred times larger.
    """
    relative = noise / max(terms_abs_sum, np.finfo(np.float64).tiny)
    if relative <= 1e3 * float(np.finfo(np.float64).eps):
        return "float64"
    if relative > 1e-3 * float(np.finfo(np.float16).eps):
        return "float16"
    return "float32"


# A mismatch up to this many multiples of the measured noise over the step can be put down to that
# noise: the difference of two noisy values over 2h deviates by ~0.7 noise/h, the worst of many
# elements by a few times that, and a noise measured from few differences can read low by a few.
NOISE_EXPLAINS = 4 * NOISE_FACTOR


def noise_explains(analytic: float, numeric: float, noise: float, step: float) -> bool:
    """Whether rounding noise `noise` of the objective explains a derivative's mismatch at
    step `step` (never a non-finite one)."""
    return abs(analytic - numeric) <= NOISE_EXPLAINS * noise / step


def make_tolerance(rtol: float, atol: float, noise: float, step: float,
                   measured: bool = False) -> Tolerance:
    """Tolerance for central differences with step `step` on an objective of noise `noise` (a
    bound, or with `measured` the standard deviation the check measured)."""
    factor = MEASURED_NOISE_FACTOR if measured else NOISE_FACTOR
    return Tolerance(rtol=rtol, atol=atol + factor * noise / step)


@dataclass(frozen=True)
class Judging:
    """How derivatives are judged: the precision the objective is computed in, the step of the
    central differences, and what counts as agreement."""

    precision: str  # float64, float32 or float16
    step: float
    rtol: float
    tolerance: Tolerance  # rtol, and atol with the objective's noise floor at this step
    noise: float = 0.0  # the objective's rounding noise that `tolerance` allows for
    atol: float = 0.0  # the caller's absolute tolerance, before the noise floor
    # True: `step` is relative, each array's step is step * array_scale(values) (the default);
    # False: `step` is the absolute step of every array (the caller's eps, or one array's own).
    relative: bool = False
    zero_scale: float = ZERO_ARRAY_SCALE  # the scale of an array that is zero everywhere
    # The caller gave the step or rtol: their judging stands, no measured noise replaces it.
    given: bool = False
    # `noise` is the rounding the check measured (`modes.joint_noise`), not the bound.
    measured: bool = False
    # The noise an element's own difference sees (one element moving), where measured apart
    # from `noise` (every array moving, what a direction sees): the element floor follows it.
    element_noise: float | None = None

    def for_array(self, values: np.ndarray, name: str | None = None,
                  squares: float | None = None) -> Judging:
        """The judging of one checked array: its step and the tolerance's noise floor at that
        step; the modes ask for it once per array (with the sum of squares of a float64 array
        when they have it: `array_scale`). A relative step becomes the array's own absolute
        step (so asking again returns the same judging). An absolute step that dwarfs the
        array's values is a `GradcheckUsageError` naming the array (`name`)."""
        scale = array_scale(values, squares)
        if not self.relative:
            if scale > 0.0:
                self._refuse_step_for(scale, name or "an array")
            return self
        step = self.step * (scale if scale > 0.0 else self.zero_scale)
        tolerance = make_tolerance(self.rtol, self.atol, self.element_floor_noise, step,
                                   self.measured)
        # Built directly: dataclasses.replace costs several times more, once per array.
        return Judging(self.precision, step, self.rtol, tolerance, self.noise, self.atol, False,
                       self.zero_scale, self.given, self.measured, self.element_noise)

    @property
    def element_floor_noise(self) -> float:
        """The noise the element floor follows."""
        return self.noise if self.element_noise is None else self.element_noise

    def with_element_noise(self, noise: float) -> Judging:
        """This judging with elements judged within `noise` (measured, one element moving)."""
        tolerance = make_tolerance(self.rtol, self.atol, noise, self.step, True)
        return Judging(self.precision, self.step, self.rtol, tolerance, self.noise, self.atol,
                       self.relative, self.zero_scale, self.given, True, noise)

    def _refuse_step_for(self, scale: float, name: str) -> None:
        """A given step that cannot measure the derivative of values of RMS `scale`: one that
        dwarfs them, or one so small that the objective's rounding swamps the differences (its
        noise floor, NOISE_FACTOR * epsilon / relative step, would exceed rtol: any gradient
        would pass)."""
        relative = self.step / scale
        advice = (f"pass eps of about {PRECISION_DEFAULTS[self.precision][0]:g} times the values' "
                  "scale, or leave eps unset (steps then follow each array's scale)")
        if relative > DWARFING_STEP:
            raise GradcheckUsageError(
                f"{name}: the step eps={self.step:g} dwarfs its values (RMS {scale:.3g}), so "
                f"the differences cannot measure the derivative there; {advice}"
            )
        if NOISE_FACTOR * float(np.finfo(self.precision).eps) / relative > self.rtol:
            raise GradcheckUsageError(
                f"{name}: the step eps={self.step:g} is so small next to its values (RMS "
                f"{scale:.3g}) that {self.precision} rounding cancels the differences: they "
                f"cannot resolve the gradient to rtol={self.rtol:g}; {advice}"
            )

    def array_steps(self, arrays: list[tuple[str, np.ndarray]]) -> list[tuple[str, float]]:
        """(name, step) of each array, as `for_array` sets them: what the report shows."""
        return [(name, self.for_array(values, name).step) for name, values in arrays]


def judging(
    precision: str,
    noise: float = 0.0,
    *,
    step: float | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    zero_scale: float | None = None,
    measured: bool = False,
) -> Judging:
    """The judging for an objective computed in `precision` with rounding noise `noise` (with
    `measured`, the noise the check measured rather than the precision's bound): the
    precision's default step and rtol (PRECISION_DEFAULTS) unless given, and the tolerance.

    A given step is absolute; the default one is relative to each array's scale (`for_array`),
    and `tolerance` is then the one of an array of scale 1. `zero_scale` stands for the scale of
    an array that is zero everywhere (the output's RMS; ZERO_ARRAY_SCALE if None or 0)."""
    default_step, default_rtol = PRECISION_DEFAULTS[precision]
    relative, given = step is None, step is not None or rtol is not None
    step = default_step if step is None else step
    rtol = default_rtol if rtol is None else rtol
    zero = zero_scale if zero_scale and math.isfinite(zero_scale) else ZERO_ARRAY_SCALE
    return Judging(precision, step, rtol, make_tolerance(rtol, atol, noise, step, measured),
                   noise, atol, relative, zero, given, measured)


def perturbed_values(values: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """x + h and x - h as stored in the array's own dtype (rounding included)."""
    h = np.asarray(step, dtype=values.dtype)
    return values + h, values - h


def actual_steps(
    values: np.ndarray, plus: np.ndarray, minus: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The steps really taken: they differ from h for large |x| or in low precision."""
    v = values.astype(np.float64)
    return plus.astype(np.float64) - v, v - minus.astype(np.float64)


def central_values(
    flat: np.ndarray,
    evaluate: Callable[[], float],
    step: float,
    indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate f at x + h*e_i and x - h*e_i for each index i of the 1-D view `flat`.

    `flat` is perturbed in place and every element is put back bit for bit, also when
    `evaluate` raises. Returns (f_plus, f_minus, h_plus, h_minus) aligned with `indices`
    (default: every element), where h_plus/h_minus are the steps actually taken.
    """
    base = flat.copy() if indices is None else flat[np.asarray(indices, dtype=np.intp)]
    plus, minus = perturbed_values(base, step)
    h_plus, h_minus = actual_steps(base, plus, minus)
    ups: list[float] = []
    downs: list[float] = []
    up_append, down_append = ups.append, downs.append
    # This loop is full mode's whole overhead over the bare forward passes, so it is kept lean:
    # Python scalars make the element writes several times cheaper than numpy scalars, and
    # list appends are cheaper than item assignment into an array.
    idx = range(flat.size) if indices is None else np.asarray(indices, dtype=np.intp).tolist()
    for i, orig, up, down in zip(idx, base.tolist(), plus.tolist(), minus.tolist()):
        try:
            flat[i] = up
            up_append(evaluate())
            flat[i] = down
            down_append(evaluate())
        finally:
            flat[i] = orig
    return np.array(ups, dtype=np.float64), np.array(downs, dtype=np.float64), h_plus, h_minus


@dataclass
class Verdict:
    """Element-wise comparison of one array's analytic and numeric derivatives."""

    analytic: np.ndarray  # flat
    numeric: np.ndarray  # flat
    rel_error: np.ndarray  # flat; kink elements that pass are set to 0
    passed: np.ndarray  # flat bool
    kink: np.ndarray  # flat bool: passed only as a valid subgradient at a kink

    @property
    def ok(self) -> bool:
        return bool(self.passed.all())

    @property
    def worst(self) -> int:
        """Flat index of the element with the largest relative error (first on ties)."""
        if self.rel_error.size == 0:
            return -1
        err = np.where(np.isnan(self.rel_error), np.inf, self.rel_error)
        return int(np.argmax(err))


def compare(
    analytic: np.ndarray,
    f_plus: np.ndarray,
    f_minus: np.ndarray,
    f_zero: float,
    h_plus: np.ndarray,
    h_minus: np.ndarray,
    tol: Tolerance,
) -> Verdict:
    """Judge every element: central difference first, then the kink rule for those that fail.

    Verdict rule "elements": an element passes within rtol of its scale, or within atol plus the
    objective's rounding floor over the step (`Tolerance`); 2 evaluations per element, made by
    the caller. Can pass a failure only within those bounds.

    Verdict rule "kinks": at a kink (ReLU at 0, a max-pool tie, |x| at 0) the one-sided slopes
    disagree; any value between them is a valid subgradient, so an element that fails rtol
    passes if its slopes differ by more than the tolerance and the analytic value lies between
    them. No evaluation of its own (the same f(x+h), f(x), f(x-h)); it turns a failure into a
    pass only for a value between the slopes, and the row counts such elements (`kinks`).
    """
    a = np.asarray(analytic, dtype=np.float64).ravel()
    numeric = (f_plus - f_minus) / (h_plus + h_minus)
    err = tol.relative_error(a, numeric)
    passed = err <= tol.rtol
    kink = np.zeros_like(passed)
    failing = ~passed
    if failing.any():
        s_plus = (f_plus - f_zero) / h_plus
        s_minus = (f_zero - f_minus) / h_minus
        lo, hi = np.minimum(s_plus, s_minus), np.maximum(s_plus, s_minus)
        mag = np.maximum(np.abs(lo), np.abs(hi))
        # One-sided differences carry twice the noise of a central one.
        slack = tol.rtol * mag + 2.0 * tol.atol
        is_kink = (hi - lo) > 2.0 * slack
        valid = is_kink & (a >= lo - slack) & (a <= hi + slack) & np.isfinite(a)
        kink = failing & valid
        passed = passed | kink
        err = np.where(kink, 0.0, err)
    return Verdict(analytic=a, numeric=numeric, rel_error=err, passed=passed, kink=kink)


# -- directional differences judged by their estimated error (fast mode) -------------------------

# A directional mismatch (numeric - analytic) larger than this multiple of the difference's
# estimated numerical error is looked into element by element. The estimate is a bound (sums of
# |terms|), so a small factor keeps correct layers from setting off searches.
DIRECTIONAL_SAFETY = 4.0
# A direction that passes with a mismatch above this multiple of its estimated error (a
# sixteenth of what passes) is confirmed along one more direction. Correct layers stay far
# below it (their mismatch is rounding, inside a bound built from sums of |terms|: at most 0.15
# measured over 80 checks of float64 layers), while errors spread over many elements that
# happen to cancel along one direction land anywhere below the bound; a second direction
# cancels them again only by a second chance.
DIRECTIONAL_CONFIRM = 0.25
# Rounding of the analytic projection sum(g * d) and of backward's own sums, in multiples of
# eps * sum(|g * d|): generous, and still far below a central difference's rounding noise.
ANALYTIC_ROUNDING = 64.0
# Truncation above this fraction of the derivative means the step is too large for the values:
# the O(h^4) terms Richardson extrapolation leaves are then no longer small.
UNRESOLVED_TRUNCATION = 0.25


@dataclass(frozen=True)
class Directional:
    """One directional derivative, numeric against analytic, with its estimated error.

    `numeric` is the central difference at step h, or when truncation shows the Richardson
    extrapolation (4 D(h) - D(2h)) / 3, which cancels the O(h^2) term. `error` estimates the
    numeric value's numerical error: rounding (the objective's noise over the step, the
    analytic projection's rounding, the caller's atol spread over the direction) plus, after
    extrapolation, the O(h^4) term it leaves. `truncation` is |D(h) - D(2h)| / 3, the O(h^2)
    term at step h (0 when only step h was evaluated).
    """

    numeric: float
    analytic: float
    error: float
    truncation: float = 0.0
    # The step dwarfs the values: truncation stands above the noise and is a sizeable part of
    # the derivative, so no expansion in h (and no extrapolation) can be trusted.
    unresolved: bool = False

    @property
    def mismatch(self) -> float:
        return self.numeric - self.analytic

    @property
    def scale(self) -> float:
        return max(abs(self.numeric), abs(self.analytic))

    @property
    def within(self) -> bool:
        """Verdict rule "direction": the mismatch is what the numerical error explains (never
        for NaN/inf): at most DIRECTIONAL_SAFETY times the estimate. Costs the direction's 2
        evaluations (4 with extrapolation); passes the whole direction, so one wrong element
        is judged by its share of it, which fast mode's sensitivity tables measure."""
        m = self.mismatch
        return math.isfinite(m) and abs(m) <= DIRECTIONAL_SAFETY * self.error

    @property
    def doubtful(self) -> bool:
        """Verdict rule "narrow pass": within the estimate, but by less of a margin than
        rounding alone leaves (above DIRECTIONAL_CONFIRM of it): the caller takes one more
        direction (2 evaluations). It can only turn a pass into a failure."""
        return self.within and abs(self.mismatch) > DIRECTIONAL_CONFIRM * self.error

    @property
    def relative_estimate(self) -> float:
        """The estimated error relative to the derivative: what the difference can resolve."""
        scale = self.scale
        return self.error / scale if scale > 0 else math.inf


def directional_rounding(judging: Judging, step: float, analytic_abs: float,
                         direction_norm: float) -> float:
    """Rounding bound of a directional central difference at `step`: the objective's noise
    bound over the step (f(x+hd) and f(x-hd) each off by at most `judging.noise`), the analytic
    projection's rounding (`analytic_abs` = sum |g_i d_i|), and the caller's atol per element
    spread over a direction of 2-norm `direction_norm`."""
    info = np.finfo(np.float64)
    return (judging.noise / step + ANALYTIC_ROUNDING * float(info.eps) * analytic_abs
            + judging.atol * direction_norm)


def richardson(numeric_h: float, analytic_h: float, numeric_2h: float, analytic_2h: float,
               rounding: float) -> Directional:
    """The extrapolation (4 D(h) - D(2h)) / 3 with its error estimate.

    Verdict rule "unresolved": truncation above DIRECTIONAL_SAFETY times the rounding and above
    UNRESOLVED_TRUNCATION of the derivative marks the value unresolved, and the array fails with
    advice (a smaller eps); no evaluation beyond the two steps'. It never passes a failure.

    The analytic values differ only by the rounding of the displacements actually stored, and
    are combined the same way. Rounding: 4/3 of step h's plus 1/3 of step 2h's (half of h's).
    The O(h^4) term left is estimated as the O(h^2) term times its own ratio to the derivative
    (successive terms of the expansion shrink by about that much).
    """
    numeric = (4.0 * numeric_h - numeric_2h) / 3.0
    analytic = (4.0 * analytic_h - analytic_2h) / 3.0
    truncation = abs(numeric_h - numeric_2h) / 3.0
    scale = max(abs(numeric_h), abs(analytic_h))
    left = truncation * truncation / scale if scale > 0 else truncation
    # Against the smaller of the two: a step that dwarfs the values shrinks the difference
    # (sin(k x) reads sinc(k h) of its slope), and the analytic side does not shrink with it.
    unresolved = (truncation > DIRECTIONAL_SAFETY * rounding
                  and truncation > UNRESOLVED_TRUNCATION * min(abs(numeric_h), abs(analytic_h)))
    return Directional(numeric, analytic, 1.5 * rounding + left, truncation, unresolved)


def relative_error_one(analytic: float, numeric: float, tol: Tolerance) -> float:
    """`Tolerance.relative_error` for one pair of Python floats (no numpy call overhead)."""
    if not (math.isfinite(analytic) and math.isfinite(numeric)):
        return math.inf
    scale = max(abs(analytic), abs(numeric), tol.floor)
    return 0.0 if scale == 0 else abs(analytic - numeric) / scale
