"""How many evaluations to spend per array: full, sample, fast (directional) and auto modes.

- full: central differences at every element, 2 evaluations each (plus the checker's 3 setup
  forward passes and 1 backward): a verdict and a failure map per element.
- sample: the same at `samples` seeded elements of every array.
- fast: per array, the derivative along a seeded random direction against the analytic
  gradient's projection, 2 evaluations whatever the size; a disagreement is traced to its
  elements by group testing (2*ceil(log2 n) + 2 evaluations per element found), and the row
  reports the worst located element exactly as full mode would.
- auto (the default): full for arrays up to `auto_limit` elements, fast above.

Every mode turns (array, analytic gradient, an evaluate() callable) into an `ArrayVerdict`; the
checker does not care which ran. Only `numeric` does arithmetic on the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import numeric, streams
from .errors import GradcheckUsageError

# Evaluations the checker spends measuring the objective's noise per array that fails a float64
# check (`noise_probe` with its defaults: 2 step sizes, 2 directions, 5 points on either side).
NOISE_PROBE_EVALUATIONS = 40
# The noise probe's second step size, as a multiple of the first, and how far its two readings
# may differ and still be taken for rounding noise (a kink inside both spans reads
# NOISE_STEP_RATIO times more at the larger step; rounding noise reads the same up to sampling:
# four fourth differences per step size rarely differ by a factor of 3, let alone 10).
NOISE_STEP_RATIO = 100.0
STEADY_NOISE = 10.0
# At most this many wrong elements are located per array in fast mode (each costs
# 2*ceil(log2 n) + 2 evaluations); a map of more would need full mode anyway.
MAX_LOCATED = 4
# Elements that pass on their own (kinks: ReLU at 0, max-pool ties, where a direction's central
# difference mixes the one-sided slopes) are located to explain a directional mismatch away for
# up to MAX_EXPLAINED of them, or more while the search has cost under an eighth of full mode.
MAX_EXPLAINED = 16
# A direction that passes with a relative error above this fraction of rtol is followed by one
# more direction: agreement that close to the limit is how nearly cancelling errors look.
MARGINAL = 0.01
# A directional mismatch that neither wrong elements nor kinks explain is settled element by
# element (full mode's verdict, at full mode's cost) for arrays up to this size; above it, the
# array fails without an index and a note suggests full mode.
FALLBACK_LIMIT = 65536


class Checked(Protocol):
    name: str
    array: np.ndarray
    analytic: np.ndarray | None


@dataclass
class ArrayVerdict:
    """The outcome for one array, whatever the mode."""

    ok: bool
    worst: int | None  # flat index of the worst element; None when no element was singled out
    worst_error: float
    worst_analytic: float
    worst_numeric: float
    kinks: int
    failed: int
    checked: int
    failed_mask: np.ndarray | None  # flat bool over the whole array, where known
    note: str | None = None  # how the verdict was reached, when the report should say so


def _from_elements(v: numeric.Verdict, indices: np.ndarray | None, size: int) -> ArrayVerdict:
    """Summarise an element-wise verdict over `indices` (None: every element)."""
    k = v.worst
    flat_idx = None if k < 0 else int(k if indices is None else indices[k])
    mask = np.zeros(size, dtype=bool)
    if indices is None:
        mask[:] = ~v.passed
    else:
        mask[indices] = ~v.passed
    return ArrayVerdict(
        ok=v.ok,
        worst=flat_idx,
        worst_error=float(v.rel_error[k]) if k >= 0 else 0.0,
        worst_analytic=float(v.analytic[k]) if k >= 0 else 0.0,
        worst_numeric=float(v.numeric[k]) if k >= 0 else 0.0,
        kinks=int(v.kink.sum()),
        failed=int((~v.passed).sum()),
        checked=int(v.passed.size),
        failed_mask=mask,
    )


def _check_steps(t: Checked, h_plus: np.ndarray, h_minus: np.ndarray, eps: float) -> None:
    if np.any(h_plus <= 0) or np.any(h_minus <= 0):
        raise _vanishing_step(t, eps)


def _vanishing_step(t: Checked, eps: float) -> GradcheckUsageError:
    big = float(np.max(np.abs(t.array)))
    return GradcheckUsageError(
        f"{t.name}: the step eps={eps:g} vanishes next to values of magnitude {big:.3g} "
        f"in {t.array.dtype}; pass a larger eps, or rescale the inputs"
    )


@dataclass(frozen=True)
class Plan:
    """How evaluations are spent: the mode and its settings (see `Options`)."""

    mode: str  # full, sample, fast or auto
    seed: int  # fixes the elements sampled and the directions taken, per array
    samples: int  # sample mode: elements per array
    directions: int  # fast mode: random directions per array
    auto_limit: int  # auto mode: the largest array checked in full


def elementwise(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    indices: np.ndarray | None = None,
) -> ArrayVerdict:
    """Central differences at every element (or at `indices`)."""
    judging = judging.for_array(t.array, t.name)
    eps, tol = judging.step, judging.tolerance
    flat = t.array.reshape(-1)
    assert t.analytic is not None
    f_plus, f_minus, h_plus, h_minus = numeric.central_values(flat, evaluate, eps, indices)
    _check_steps(t, h_plus, h_minus, eps)
    analytic = t.analytic.reshape(-1)
    if indices is not None:
        analytic = analytic[indices]
    v = numeric.compare(analytic, f_plus, f_minus, f_zero, h_plus, h_minus, tol)
    return _from_elements(v, indices, flat.size)


def sample(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    k: int,
    rng: np.random.Generator,
) -> ArrayVerdict:
    """Central differences at k seeded elements of the array (all of them if it is smaller)."""
    n = t.array.size
    if k >= n:
        return elementwise(t, evaluate, f_zero, judging)
    indices = np.sort(rng.choice(n, size=k, replace=False))
    return elementwise(t, evaluate, f_zero, judging, indices)


def direction(rng: np.random.Generator, n: int) -> np.ndarray:
    """A seeded fast-mode direction: entries +-(1 + u), u uniform in [0, 1), random signs.

    Every element weighs at least 1, so no small random weight can hide a wrong element (as a
    Gaussian direction can), and at most 2. The magnitudes are continuous, so errors of equal
    size cannot cancel exactly: with plain +-1 directions two equal errors of opposite sign
    cancel for half of all sign patterns.
    """
    v = rng.random(n) * 2.0 - 1.0
    return v + np.copysign(1.0, v)


class _Line:
    """f along x + h*d for a direction d, restricted to a contiguous range: the fast-mode probe.

    Ranges rather than index arrays keep every probe on views (no fancy indexing), and the
    halving of group testing only ever needs ranges. Elements excluded from a direction (those
    already located) have d = 0, so they stay exactly at x.
    """

    def __init__(self, t: Checked, evaluate: Callable[[], float], eps: float) -> None:
        assert t.analytic is not None
        if not t.array.flags.c_contiguous:  # never: the checker promotes or refuses these
            raise GradcheckUsageError(f"{t.name}: cannot perturb a non-contiguous array")
        self.flat = t.array.reshape(-1)  # a view, so writes reach the layer
        self.base = self.flat.copy()
        self.analytic = t.analytic.reshape(-1).astype(np.float64, copy=False)
        self.evaluate = evaluate
        self.eps = eps
        self.cast = self.flat.dtype != np.float64

    def probe(self, d: np.ndarray, lo: int, hi: int) -> tuple[float, float, float]:
        """(f_plus, f_minus, analytic) for the step h*d on elements lo..hi-1.

        The analytic value is projected on the displacement actually stored, so the rounding of
        x + h*d in the array's dtype does not count as an error.
        """
        seg, x, h = self.flat[lo:hi], self.base[lo:hi], self.eps
        step = d[lo:hi] * h
        plus, minus = x + step, x - step
        if self.cast:
            plus, minus = plus.astype(seg.dtype), minus.astype(seg.dtype)
            disp = plus.astype(np.float64) - minus.astype(np.float64)
        else:
            disp = plus - minus
        analytic = float(np.dot(self.analytic[lo:hi], disp)) / (2.0 * h)
        try:
            seg[...] = plus
            f_plus = self.evaluate()
            seg[...] = minus
            f_minus = self.evaluate()
        finally:
            seg[...] = x
        return f_plus, f_minus, analytic

    def mismatch(self, d: np.ndarray, lo: int, hi: int) -> float:
        """numeric - analytic directional derivative over lo..hi-1 (additive over ranges)."""
        f_plus, f_minus, analytic = self.probe(d, lo, hi)
        return (f_plus - f_minus) / (2.0 * self.eps) - analytic

    def element(self, i: int, f_zero: float, tol: numeric.Tolerance) -> _Element:
        """Full mode's verdict at element i, from the same two evaluations full mode makes."""
        idx = np.array([i])
        f_plus, f_minus, h_plus, h_minus = numeric.central_values(self.flat, self.evaluate,
                                                                  self.eps, idx)
        v = numeric.compare(self.analytic[idx], f_plus, f_minus, f_zero, h_plus, h_minus, tol)
        return _Element(float(v.rel_error[0]), float(v.analytic[0]), float(v.numeric[0]),
                        bool(v.passed[0]), bool(v.kink[0]))


@dataclass
class _Element:
    error: float
    analytic: float
    numeric: float
    passed: bool
    kink: bool


def fast(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    directions: int,
    rng: np.random.Generator,
) -> ArrayVerdict:
    """Directional derivatives along seeded random directions, then group testing.

    Each direction costs two evaluations whatever the array's size. When one disagrees, the
    mismatch (numeric - analytic) is a sum of one term per element, so probing one half of the
    support tells how much of it sits in each half: following the larger half finds the element
    behind it among n in ceil(log2 n) probes of two evaluations, and that element is judged
    exactly as full mode judges it (two more). A wrong element is reported; an element that
    passes on its own (a kink such as ReLU at 0, where the central difference is the average of
    the one-sided slopes) has its share taken out of the mismatch, and the search goes on until
    what is left is within tolerance. Later directions leave the elements found out.
    """
    judging = judging.for_array(t.array)
    eps, tol = judging.step, judging.tolerance
    n = t.array.size
    line = _Line(t, evaluate, eps)
    if n:
        # Refuse, as full mode does, an array where x + h == x: the direction would silently
        # skip those elements. The spacing of floats grows with |x| and every |d_i| >= 1, so
        # the largest magnitude is the one to try.
        big = np.max(np.abs(line.base))
        h = big.dtype.type(eps)
        if big + h == big or big - h == big:
            raise _vanishing_step(t, eps)
    if not np.isfinite(line.analytic).all():
        return _non_finite_analytic(line, f_zero, tol)
    search = _Search(line, f_zero, tol)
    worst_dir = (0.0, 0.0, 0.0)  # (rel error, analytic, numeric) of the worst direction
    unexplained = False
    probes = 0
    while probes < directions or (
        # A pass close to the tolerance is what errors that happen to nearly cancel along this
        # direction look like (a correct layer agrees to ~1e-8 of rtol's 1e-5): one more
        # direction, drawn independently, settles it.
        probes == directions and not search.wrong and worst_dir[0] > MARGINAL * tol.rtol
    ):
        probes += 1
        d = direction(rng, n)
        search.leave_out(d)
        f_plus, f_minus, analytic = search.line.probe(d, 0, n)
        # No kink rule for a whole direction: kinks are judged one element at a time below.
        passed, err, num = numeric.compare_one(analytic, f_plus, f_minus, eps, eps, tol)
        if not passed:
            num, unexplained_now = search.explain(d, num, analytic)
            unexplained |= unexplained_now
            err = float(tol.relative_error(np.array(analytic), np.array(num)))
        if err >= worst_dir[0]:
            worst_dir = (err, analytic, num)
    kinks = sum(e.kink for e in search.right.values())
    wrong = search.wrong
    if unexplained and not wrong:
        # Neither a wrong element nor kinks account for the mismatch: the error is spread thin
        # over many elements, or there are more kinks than the search may chase. Full mode's
        # verdict settles it, where affordable.
        if n <= FALLBACK_LIMIT:
            v = elementwise(t, evaluate, f_zero, judging)
            v.note = (f"{t.name}: a random direction disagreed and no single element explained "
                      "it; the array was checked element by element")
            return v
        err, an, nu = worst_dir
        return ArrayVerdict(False, None, err, an, nu, kinks, 0, n, None, note=(
            f"{t.name}: a random direction disagrees (relative error {err:.2e}) but no single "
            "element stands out: the error is spread over many elements (or many kinks); "
            "mode='full' maps them"))
    # Rows count elements as in full mode: every element took part in the directional check
    # (checked = n) and `failed` is the number of wrong elements located.
    if wrong:
        idx = max(wrong, key=lambda i: wrong[i].error)
        w = wrong[idx]
        mask = np.zeros(n, dtype=bool)
        mask[list(wrong)] = True
        note = None
        if unexplained:
            note = (f"{t.name}: fast mode stops after locating {len(wrong)} wrong elements; "
                    "mode='full' maps them all")
        return ArrayVerdict(False, idx, w.error, w.analytic, w.numeric, kinks, len(wrong), n,
                            mask, note=note)
    err, an, nu = worst_dir
    return ArrayVerdict(True, None, err, an, nu, kinks, 0, n, None)


def _non_finite_analytic(line: _Line, f_zero: float, tol: numeric.Tolerance) -> ArrayVerdict:
    """An analytic gradient holding NaN or inf fails at those elements, whatever the numeric
    side says (a finite objective has finite differences). A direction would hide them: every
    comparison with NaN is false, so the search would never start. The first such element is
    judged as full mode judges it (two evaluations), for the numeric value in the row."""
    bad = np.flatnonzero(~np.isfinite(line.analytic))
    first = int(bad[0])
    e = line.element(first, f_zero, tol)
    mask = np.zeros(line.flat.size, dtype=bool)
    mask[bad] = True
    return ArrayVerdict(False, first, math.inf, e.analytic, e.numeric, 0, int(bad.size),
                        line.flat.size, mask)


class _Search:
    """Group testing over one array: the elements found so far, wrong and right."""

    def __init__(self, line: _Line, f_zero: float, tol: numeric.Tolerance) -> None:
        self.line = line
        self.f_zero = f_zero
        self.tol = tol
        self.wrong: dict[int, _Element] = {}
        self.right: dict[int, _Element] = {}  # passed on their own: kinks, mostly
        n = line.flat.size
        one = 2 * max(n - 1, 1).bit_length() + 2  # evaluations to locate and judge one element
        self.budget = max(MAX_EXPLAINED * one, n // 4)  # evaluations, i.e. 2n / 8
        self.spent = 0

    def leave_out(self, d: np.ndarray) -> None:
        """Zero the direction on elements already judged, so it probes the others."""
        if self.wrong or self.right:
            d[[*self.wrong, *self.right]] = 0.0

    def explain(self, d: np.ndarray, num: float, analytic: float) -> tuple[float, bool]:
        """Locate the elements behind the mismatch of direction d (updating `wrong`/`right`).

        Returns the direction's numeric value without the share of the elements found right
        (what the direction would read if they agreed exactly), and whether some of the
        mismatch is left unexplained within the search's budget.
        """
        tol, line = self.tol, self.line
        residual = num - analytic
        # What is left passes when it would have let the direction pass.
        allowed = tol.rtol * max(abs(num), abs(analytic), tol.floor)
        while abs(residual) > allowed:
            if len(self.wrong) >= MAX_LOCATED or self.spent >= self.budget:
                return num, True
            lo, hi, m = 0, d.size, residual
            while hi - lo > 1:
                mid = (lo + hi) // 2
                m_low = line.mismatch(d, lo, mid)
                self.spent += 2
                if abs(m_low) >= abs(m - m_low):
                    hi, m = mid, m_low
                else:
                    lo, m = mid, m - m_low
            if d[lo] == 0.0:
                return num, True  # nothing left to probe: the mismatch is noise or non-additive
            e = line.element(lo, self.f_zero, tol)
            self.spent += 2
            share = float(d[lo]) * (e.numeric - e.analytic)
            residual -= share
            d[lo] = 0.0
            if e.passed:
                self.right[lo] = e
                num -= share
            else:
                self.wrong[lo] = e
        return num, False


@dataclass(frozen=True)
class NoiseReading:
    """The objective's noise measured along the same directions at two step sizes."""

    near: float  # with each element moved by rel_step of its magnitude per point
    far: float  # with steps NOISE_STEP_RATIO times larger

    @property
    def rounding(self) -> float | None:
        """The rounding noise, or None when the readings disagree.

        Rounding noise does not depend on the step; what a kink or curvature adds to the
        fourth differences grows with it (a kink's in proportion). Only a reading that stays
        within STEADY_NOISE across the NOISE_STEP_RATIO is rounding, and the smaller of the two
        is kept so that the allowance can only err on the strict side.
        """
        lo, hi = sorted((self.near, self.far))
        if hi == 0.0:
            return 0.0
        return lo if hi <= STEADY_NOISE * lo else None


def noise_probe(
    t: Checked,
    evaluate: Callable[[], float],
    rng: np.random.Generator,
    directions: int = 2,
    points: int = 5,
    rel_step: float = 1e-6,
    zero_scale: float = numeric.ZERO_ARRAY_SCALE,
) -> NoiseReading:
    """Measured noise of the objective when `t` moves: f at x + k*s*d for k = 1..points and
    k = -1..-points along seeded directions d, each element moved by s = rel_step of its
    magnitude (or of the array's RMS, whichever is larger: zeros move too; `zero_scale` for an
    array that is zero everywhere), and again with
    s NOISE_STEP_RATIO times larger; fourth differences of each side's values
    (`numeric.difference_noise`) pooled per step size.

    Each side stays on one side of x, so a kink exactly at x (a ReLU input at 0, zero padding,
    the output of an earlier ReLU) lies in no probe's span; a kink nearby does, and shows as a
    reading that grows with the step (`NoiseReading.rounding`).
    """
    flat = t.array.reshape(-1)
    base = flat.copy()
    rms = numeric.array_scale(base)
    unit = np.maximum(np.abs(base), rms if rms > 0 else zero_scale) * rel_step
    dirs = [direction(rng, flat.size) * unit for _ in range(directions)]
    readings = []
    for factor in (1.0, NOISE_STEP_RATIO):
        estimates: list[float] = []
        for d in dirs:
            for side in (1.0, -1.0):
                values = []
                try:
                    for k in range(1, points + 1):
                        flat[...] = base + (side * k * factor) * d
                        values.append(evaluate())
                finally:
                    flat[...] = base
                estimates.append(numeric.difference_noise(values))
        # Equal-length series: the RMS of their estimates is the pooled estimate.
        readings.append(float(np.sqrt(np.mean(np.square(estimates)))))
    return NoiseReading(readings[0], readings[1])


def array_mode(mode: str, size: int, auto_limit: int) -> str:
    """The mode one array is checked in: auto means full up to auto_limit elements, else fast."""
    if mode == "auto":
        return "full" if size <= auto_limit else "fast"
    return mode


def run_mode(
    plan: Plan,
    arrays: Sequence[Checked],
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    notes: list[str],
) -> list[ArrayVerdict]:
    """Check every array in the mode `plan.mode`, judged by `judging`; per-array random choices
    come from the seed and the array's name (see `streams.KeyedStreams`). Notes on how verdicts
    were reached are appended to `notes`.

    A step that vanishes next to an array's values is a `GradcheckUsageError` naming the array
    only (its `label` is None): the caller knows the layer.
    """
    verdicts = []
    directional = []
    keyed: streams.KeyedStreams | None = None
    for t in arrays:
        mode = array_mode(plan.mode, t.array.size, plan.auto_limit)
        if mode == "full":
            verdicts.append(elementwise(t, evaluate, f_zero, judging))
            continue
        keyed = keyed or streams.KeyedStreams(plan.seed, streams.ARRAY_CHOICES)
        rng = keyed.stream(t.name)
        if mode == "sample":
            verdicts.append(sample(t, evaluate, f_zero, judging, plan.samples, rng))
        else:
            directional.append(f"{t.name} ({t.array.size})")
            v = fast(t, evaluate, f_zero, judging, plan.directions, rng)
            verdicts.append(v)
            if v.note:
                notes.append(v.note)
    if plan.mode == "auto" and directional:
        notes.append(
            f"mode=auto: arrays over {plan.auto_limit} elements were checked along "
            f"{plan.directions} random direction(s) each, with group testing to locate wrong "
            f"elements: {', '.join(directional)}; the others element by element"
        )
    return verdicts
