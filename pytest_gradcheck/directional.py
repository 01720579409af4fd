"""Fast mode: directional derivatives judged by their estimated numerical error, and group
testing that locates what they disagree about.

Per array (`fast`), the derivative along a seeded random direction against the analytic
gradient's projection, 2 evaluations whatever the size, judged within the difference's estimated
numerical error (rounding noise, and truncation by Richardson extrapolation over steps h and 2h,
2 more evaluations, spent only when step h disagrees beyond its noise); a disagreement is traced
to its elements by group testing (2*ceil(log2 n) + 2 evaluations per element found), judged by
rtol, atol and the kink rule exactly as full mode would, and the row reports the worst located
element. Several arrays move together first (`fast_together`: each along its own direction by
its own step, 2 evaluations in all); only a joint disagreement costs the per-array directions,
which say where it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import numpy as np

from . import numeric, rules, streams
from .elements import (
    KINK_SHRINK,
    ArrayVerdict,
    Checked,
    elementwise,
    vanishing_step,
)
from .errors import GradcheckUsageError
from .search import Element, Search, kink_in_reach, writable

# A directional mismatch that neither wrong elements nor kinks explain is settled element by
# element (full mode's verdict, at full mode's cost) for arrays up to this size; above it, the
# array fails without an index and a note suggests full mode.
FALLBACK_LIMIT = 65536
# Elements per block of a probe's second half (`_Line.place_minus`): two temporaries of this
# many doubles (64 KB each) stay in cache.
_BLOCK = 1 << 13
def direction(rng: np.random.Generator, n: int) -> np.ndarray:
    """A seeded fast-mode direction: entries +-(1 + u), u uniform in [0, 1), random signs.

    Every element weighs at least 1, so no small random weight can hide a wrong element (as a
    Gaussian direction can), and at most 2. The magnitudes are continuous (2**23 values), so
    errors of equal size cannot cancel exactly: with plain +-1 directions two equal errors of
    opposite sign cancel for half of all sign patterns.

    Built from random bits as float32: a random sign bit and mantissa under the exponent of
    [1, 2). Several times cheaper than arithmetic on uniform doubles, which at a million
    elements costs about half a forward pass of a linear layer.
    """
    # Raw 64-bit draws split in two: the cheapest random bits a Generator gives.
    bits = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    bits &= np.uint32(0x807FFFFF)  # sign and mantissa
    bits |= np.uint32(0x3F800000)  # exponent of 1.0
    return bits.view(np.float32)


# Directions drawn lately, by the generator's state before the draw and the size: a direction
# is a pure function of both (a check at one seed gives each array the same one). Copying a kept
# one costs a fraction of drawing it again: (PCG64 state words, n) -> (direction, the
# generator's state after the draw). At most _DIRECTIONS_KEPT float32 elements are kept (16 MB).
_DIRECTIONS: dict[tuple[Any, ...], tuple[np.ndarray, Any]] = {}
_DIRECTIONS_KEPT = 1 << 22


def forget_kept_draws() -> None:
    """Drop the fast-mode directions (and the streams' draws) kept from earlier checks."""
    _DIRECTIONS.clear()
    streams.forget_kept_draws()


def _cached_direction(rng: np.random.Generator, n: int) -> np.ndarray:
    """`direction(rng, n)`, leaving `rng` where that leaves it, from a kept copy when the same
    draw was made before. A kept direction is returned read-only and shared: a caller that
    zeroes elements takes its own copy first (`_writable`), so no check pays for a copy of
    every direction (a pass over it, and page faults on a big one) to keep it."""
    bg = rng.bit_generator
    before = bg.state
    if before.get("bit_generator") != "PCG64" or n > _DIRECTIONS_KEPT:
        return direction(rng, n)
    inner = before["state"]
    key = (inner["state"], inner["inc"], before["has_uint32"], before["uinteger"], n)
    kept = _DIRECTIONS.get(key)
    if kept is not None:
        bg.state = kept[1]
        return kept[0]
    d = direction(rng, n)
    if sum(k[-1] for k in list(_DIRECTIONS)) + n > _DIRECTIONS_KEPT:  # list(): one atomic read
        _DIRECTIONS.clear()
    d.flags.writeable = False  # shared with later draws from the same state
    _DIRECTIONS[key] = (d, bg.state)
    return d


_D = TypeVar("_D")


class _Probing(Generic[_D]):
    """What the lines share: a probe (f at x + s*h*d and x - s*h*d, and the analytic projection)
    and the measurement built on it. `_D` is what a direction is: one array for `_Line`, one
    array per checked array for `_JointLine`."""

    evaluate: Callable[[], float]
    eps: float  # the step h the derivative is taken per
    rounding: float  # rounding bound of one measurement at step h
    size: int  # elements along the line
    # Set once a direction shows truncation above the noise: from then on every measurement
    # along this line is extrapolated (steps h and 2h).
    extrapolate: bool = False

    def probe(self, d: _D, lo: int, hi: int, scale: float = 1.0) -> tuple[float, float, float]:
        raise NotImplementedError

    def restore(self) -> None:
        raise NotImplementedError

    def measure(self, d: _D, lo: int, hi: int, detect: bool) -> numeric.Directional:
        """The directional derivative over lo..hi-1 against the analytic one, with its error.

        Step h alone (two evaluations) unless the line needs extrapolation. With `detect`, a
        mismatch beyond step h's rounding is measured again at 2h (two more): truncation then
        shows as D(h) - D(2h), and when it stands above the noise the extrapolated value is
        the one judged (and the line's later measurements are extrapolated too).
        """
        f_plus, f_minus, analytic = self.probe(d, lo, hi)
        value = numeric.Directional((f_plus - f_minus) / (2.0 * self.eps), analytic,
                                    self.rounding)
        if not self.extrapolate and (not detect or (value.within and not value.unresolved)):
            return value
        f2_plus, f2_minus, analytic_2 = self.probe(d, lo, hi, 2.0)
        ext = numeric.richardson(value.numeric, analytic, (f2_plus - f2_minus) / (4.0 * self.eps),
                                 analytic_2, self.rounding)
        if self.extrapolate or ext.truncation > numeric.DIRECTIONAL_SAFETY * self.rounding:
            self.extrapolate = True
            return ext
        return numeric.Directional(value.numeric, analytic, self.rounding, ext.truncation,
                                   ext.unresolved)

    @property
    def cost(self) -> int:
        """Evaluations one measurement costs."""
        return 4 if self.extrapolate else 2


class _Line(_Probing[np.ndarray]):
    """f along x + h*d for a direction d, restricted to a contiguous range: the fast-mode probe.

    Ranges rather than index arrays keep every probe on views (no fancy indexing), and the
    halving of group testing only ever needs ranges. Elements excluded from a direction (those
    already located) have d = 0, so they stay exactly at x. Two scratch arrays are allocated
    once per array and reused by every probe: at a million elements a fresh allocation costs
    about as much as the arithmetic.
    """

    def __init__(self, t: Checked, evaluate: Callable[[], float],
                 judging: numeric.Judging) -> None:
        assert t.analytic is not None
        if not t.array.flags.c_contiguous:  # never: the checker promotes or refuses these
            raise GradcheckUsageError(f"{t.name}: cannot perturb a non-contiguous array")
        self.flat = t.array.reshape(-1)  # a view, so writes reach the layer
        # x, read only: the caller's copy of the array's bits where it vouches for one (the
        # checker's baseline), else a copy of our own.
        saved = getattr(t, "saved", None)
        if (isinstance(saved, np.ndarray) and saved.shape == t.array.shape
                and saved.dtype == t.array.dtype and saved.flags.c_contiguous):
            self.base = saved.reshape(-1)
        else:
            self.base = self.flat.copy()
        self.analytic = t.analytic.reshape(-1).astype(np.float64, copy=False)
        self.evaluate = evaluate
        self.eps = judging.step
        n = self.size = self.flat.size
        # |d_i| <= 2: bounds on sum |g_i d_i| (by Cauchy-Schwarz, one read of g) and on the
        # 2-norm of any direction.
        # Finite unless some element is NaN or inf (or the squares overflow): `fast` then
        # needs no separate pass to find non-finite elements.
        self.g_squares = float(np.dot(self.analytic, self.analytic))
        g_l1 = math.sqrt(n * self.g_squares)
        self.rounding = numeric.directional_rounding(judging, self.eps, 2.0 * g_l1,
                                                     2.0 * math.sqrt(n))
        self._dirty = (0, 0)  # the range a probe left perturbed (`restore` puts it back)
        self.cast = self.flat.dtype != np.float64
        # The direction and step the last `place_plus` used, for `place_minus`.
        self._placed: tuple[np.ndarray, float] = (np.zeros(0, dtype=np.float32), 0.0)
        # Scratch arrays of n doubles only for an array of another dtype, which does not hold
        # x + h*d as computed (fresh, each costs page faults on its first write).
        self._step = np.empty(n) if self.cast else np.empty(0)
        self._disp = np.empty(n) if self.cast else np.empty(0)

    def probe(self, d: np.ndarray, lo: int, hi: int, scale: float = 1.0
              ) -> tuple[float, float, float]:
        """(f_plus, f_minus, analytic) for the step scale*h*d on elements lo..hi-1.

        The analytic value is projected on the displacement actually stored, so the rounding of
        x + h*d in the array's dtype does not count as an error. The range is left at x - h*d
        (the next probe overwrites it; `restore` puts it back); elements outside it are at x.
        """
        self._restore_outside(lo, hi)
        h = self.eps * scale
        try:
            self.place_plus(d, lo, hi, h)
            f_plus = self.evaluate()
            projected = self.place_minus(lo, hi)
            f_minus = self.evaluate()
        except BaseException:
            self.restore()
            raise
        return f_plus, f_minus, projected / (2.0 * h)

    def place_plus(self, d: np.ndarray, lo: int, hi: int, h: float) -> None:
        """Move elements lo..hi-1 to x + h*d, as the array stores it (the first half of a
        probe; `place_minus` is the second)."""
        seg, x = self.flat[lo:hi], self.base[lo:hi]
        self._dirty, self._placed = (lo, hi), (d, h)
        if not self.cast:
            # A float64 array holds x + h*d as computed: h*d (d is float32, h*d in float64)
            # straight into the array, then x added, with no scratch array. (Block by block, as
            # `place_minus` goes, measured no faster: two passes without temporaries.)
            np.multiply(d[lo:hi], h, out=seg, dtype=np.float64)
            seg += x
            return
        step, plus = self._step[lo:hi], self._disp[lo:hi]
        np.multiply(d[lo:hi], h, out=step, dtype=np.float64)
        np.add(x, step, out=plus)
        seg[...] = plus
        plus[...] = seg  # x + h*d as the array stores it

    def place_minus(self, lo: int, hi: int) -> float:
        """Move elements lo..hi-1 from x + h*d (`place_plus`) to x - h*d; returns g . (the
        displacement stored), (x + h*d) - (x - h*d) as the array holds them."""
        seg, x, g = self.flat[lo:hi], self.base[lo:hi], self.analytic[lo:hi]
        if self.cast:
            step, plus = self._step[lo:hi], self._disp[lo:hi]
            np.subtract(x, step, out=seg)
            return float(np.dot(g, np.subtract(plus, seg, out=plus)))
        d, h = self._placed
        d = d[lo:hi]
        # Block by block, so that h*d, x - h*d and the displacement live in two temporaries
        # that stay in cache: each element of x, d, g and the array is read once and the array
        # written once, where whole-range temporaries cost three more passes over memory.
        n = hi - lo
        size = min(n, _BLOCK)
        first, second = np.empty(size), np.empty(size)
        projected = 0.0
        for start in range(0, n, size):
            stop = min(start + size, n)
            k = stop - start
            step = np.multiply(d[start:stop], h, out=first[:k], dtype=np.float64)
            minus = np.subtract(x[start:stop], step, out=second[:k])
            disp = np.subtract(seg[start:stop], minus, out=first[:k])
            projected += float(np.dot(g[start:stop], disp))
            seg[start:stop] = minus
        return projected

    def _restore_outside(self, lo: int, hi: int) -> None:
        a, b = self._dirty
        if a < lo:
            self.flat[a:min(b, lo)] = self.base[a:min(b, lo)]
        if b > hi:
            self.flat[max(a, hi):b] = self.base[max(a, hi):b]

    def restore(self) -> None:
        """Put the range the last probe perturbed back to x, bit for bit."""
        a, b = self._dirty
        self.flat[a:b] = self.base[a:b]
        self._dirty = (0, 0)

    def element(self, i: int, f_zero: float, tol: numeric.Tolerance) -> Element:
        """Full mode's verdict at element i, from the same two evaluations full mode makes."""
        self.restore()
        idx = np.array([i])
        f_plus, f_minus, h_plus, h_minus = numeric.central_values(self.flat, self.evaluate,
                                                                  self.eps, idx)
        v = numeric.compare(self.analytic[idx], f_plus, f_minus, f_zero, h_plus, h_minus, tol)
        return Element(float(v.rel_error[0]), float(v.analytic[0]), float(v.numeric[0]),
                        bool(v.passed[0]), bool(v.kink[0]))


class _JointLine(_Probing[Sequence[np.ndarray]]):
    """Several arrays moved at once, each along its own direction d_a and by its own step h_a:
    f along x_a + t * m_a * d_a for every array a, differentiated in t at step h (the judging's
    step), where m_a = h_a / h (each array's scale, for the default relative step). One probe
    costs two evaluations however many arrays move, where a line per array costs two each.

    Only whole probes: a joint disagreement is followed array by array (`fast`), which also
    says which array it belongs to.
    """

    def __init__(self, lines: Sequence[_Line], judging: numeric.Judging) -> None:
        self.lines = list(lines)
        self.evaluate = self.lines[0].evaluate
        self.eps = judging.step
        self.size = sum(line.size for line in self.lines)
        # As for one line (|d_i| <= 2), with each array's terms weighted by its m_a.
        weights = [line.eps / self.eps for line in self.lines]
        analytic_abs = sum(2.0 * m * math.sqrt(line.size * line.g_squares)
                           for m, line in zip(weights, self.lines))
        norm = 2.0 * math.sqrt(sum(m * m * line.size for m, line in zip(weights, self.lines)))
        self.rounding = numeric.directional_rounding(judging, self.eps, analytic_abs, norm)

    def probe(self, d: Sequence[np.ndarray], lo: int, hi: int, scale: float = 1.0
              ) -> tuple[float, float, float]:
        """(f_plus, f_minus, analytic) with every array a stepped by scale*h_a*d_a, the
        analytic value per unit of t (projected on the displacements actually stored)."""
        if (lo, hi) != (0, self.size):
            raise ValueError("a joint line is only probed whole")
        try:
            for line, d_a in zip(self.lines, d):
                line.place_plus(d_a, 0, line.size, line.eps * scale)
            f_plus = self.evaluate()
            projected = math.fsum(line.place_minus(0, line.size) for line in self.lines)
            f_minus = self.evaluate()
        except BaseException:
            self.restore()
            raise
        # g_a . (stored displacement) ~ 2 * scale * h * m_a * (g_a . d_a): per unit of t.
        return f_plus, f_minus, projected / (2.0 * self.eps * scale)

    def restore(self) -> None:
        for line in self.lines:
            line.restore()


def fast(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    directions: int,
    rng: np.random.Generator,
    settle: int = 0,
    sharpen: Callable[[numeric.Judging], numeric.Judging] | None = None,
) -> ArrayVerdict:
    """Directional derivatives along seeded random directions, judged by their estimated
    numerical error; group testing locates what they disagree about.

    Verdict rule "settled" (auto mode's `settle` = auto_limit): an array of up to `settle`
    elements whose direction disagrees is judged element by element instead of searched, for
    full mode's exact map and kink rule whatever the direction's step crossed, by the judging
    `sharpen` gives (the element floor's own noise, measured on first need).

    Each direction costs two evaluations whatever the array's size, and two more (step 2h)
    when it disagrees beyond step h's rounding: Richardson extrapolation then cancels the
    O(h^2) truncation, so the derivative is compared within its estimated error, not within
    `rtol` of the whole direction (where one wrong element among n has only ~1/sqrt(n) of the
    say). A mismatch beyond `numeric.DIRECTIONAL_SAFETY` times the estimate is a sum of one term
    per element, so probing one half of the support tells how much of it sits in each half:
    following the larger half finds the element behind it among n in ceil(log2 n) probes, and
    that element is judged exactly as full mode judges it (by rtol, atol and the kink rule).
    A wrong element is reported; one that passes on its own (a kink such as ReLU at 0) is left
    out of the direction, which is measured again, until what is left is within the estimate.
    Later directions leave the elements found out.

    Verdict rule "fallback": a mismatch that neither wrong elements nor kinks explain is
    settled element by element (full mode's verdict, 2 evaluations per element) for arrays up
    to FALLBACK_LIMIT elements; a larger array fails without an index. It passes a failure
    only as the elements rule would.
    """
    given = judging
    judging, line = _line_for(t, evaluate, given)
    eps, tol = judging.step, judging.tolerance
    n = t.array.size
    if not math.isfinite(line.g_squares) and not np.isfinite(line.analytic).all():
        return _non_finite_analytic(line, f_zero, tol)
    search = Search(line, f_zero, tol)
    total = directions
    worst: numeric.Directional | None = None
    worst_error = -1.0
    unexplained = False
    reached = False  # a mismatch was put down to a kink the step reached (`kink_in_reach`)
    unresolved: numeric.Directional | None = None  # a measurement the step could not resolve
    try:
        k = 0
        while k < total:
            k += 1
            d = search.leave_out(_cached_direction(rng, n))
            value = line.measure(d, 0, n, detect=True)
            if not value.unresolved and value.within and _truncation_hides_rtol(value, tol):
                # The extrapolation's allowance is wider than rtol: confirm at a smaller step,
                # where truncation is KINK_SHRINK^2 times smaller (and a crossed kink's share
                # gone); a difference that does not settle there is not resolved.
                shorter = _at_smaller_step(line, d, value)
                value = shorter if shorter.within else replace(value, unresolved=True)
            if value.unresolved:
                unresolved = value
            elif k == directions and value.doubtful:
                total += 1  # the last planned one passed narrowly: one more direction
            if (not value.within or value.unresolved) and n <= settle:
                line.restore()
                # the element floor's own noise (a search needs none: an element its floor
                # excuses while the direction resolves it is wrong, `floor_cannot_excuse`)
                v = elementwise(t, evaluate, f_zero, given if sharpen is None else sharpen(given))
                v.decided_by = rules.SETTLED.name
                return v
            if not value.within or value.unresolved:
                d = writable(d)  # the search zeroes the elements it locates
                value, left = search.explain(d, value)
                if left and not search.wrong and not value.unresolved:
                    value, left = kink_in_reach(search, d, value)
                    reached |= not left and not search.wrong
                unexplained |= left
            err = numeric.relative_error_one(value.analytic, value.numeric, tol)
            if err > worst_error:
                worst, worst_error = value, err
    finally:
        line.restore()
    kinks = sum(e.kink for e in search.right.values())
    wrong = search.wrong
    estimate = None if worst is None else worst.relative_estimate
    advice = None
    if unresolved is not None:
        # Truncation is a sizeable part of the derivative: no expansion in h holds, element-wise
        # differences at the same step included, and a pass would mean nothing.
        low = min(abs(unresolved.numeric), abs(unresolved.analytic))
        share = float(unresolved.truncation) / max(float(low), float(np.finfo(np.float64).tiny))
        advice = (f"{t.name}: the finite difference cannot resolve the gradient: along a random "
                  f"direction its O(h^2) term, from steps {eps:g} and {2 * eps:g}, is {share:.0%} "
                  "of the derivative (the step dwarfs the scale on which the values change); "
                  "pass a smaller eps, or rescale the inputs")
    if unexplained and not wrong:
        assert worst is not None
        if advice is not None:
            return ArrayVerdict(False, None, worst_error, worst.analytic, worst.numeric, kinks,
                                0, n, None, note=advice, estimate=estimate,
                                decided_by=rules.UNRESOLVED.name)
        # Neither a wrong element nor kinks account for the mismatch: the
        # error is spread thin over many elements, or there are more kinks than the search
        # may chase. Full mode's verdict settles it, where affordable.
        if n <= FALLBACK_LIMIT:
            v = elementwise(t, evaluate, f_zero, given)
            fallback = (f"{t.name}: a random direction disagreed and no single element explained "
                        "it; the array was checked element by element")
            v.note = fallback if v.note is None else f"{fallback}; {v.note}"
            v.decided_by = rules.FALLBACK.name
            return v
        # Above it the array fails: errors each within rtol/atol can add up to such a
        # mismatch, but so can errors beyond it that no single element shows, and a gradient
        # checker does not pass what it cannot tell apart.
        return ArrayVerdict(False, None, worst_error, worst.analytic, worst.numeric, kinks, 0, n,
                            None, note=(
            f"{t.name}: a random direction disagrees (relative error {worst_error:.2e}, "
            f"{abs(worst.mismatch) / worst.error:.0f} times its estimated numerical error) but "
            "no single element stands out: the error is spread over many elements (or many "
            "kinks); mode='full' judges each element (errors all within rtol pass there)"),
            estimate=estimate, decided_by=rules.FALLBACK.name)
    # Rows count elements as in full mode: every element took part in the directional check
    # (checked = n) and `failed` is the number of wrong elements located.
    if wrong:
        idx = max(wrong, key=lambda i: wrong[i].error)
        w = wrong[idx]
        mask = np.zeros(n, dtype=bool)
        mask[list(wrong)] = True
        note = advice
        if unexplained and note is None:
            note = (f"{t.name}: fast mode stops after locating {len(wrong)} wrong elements; "
                    "mode='full' maps them all")
        return ArrayVerdict(False, idx, w.error, w.analytic, w.numeric, kinks, len(wrong), n,
                            mask, note=note, estimate=estimate,
                            decided_by=(rules.UNRESOLVED if advice else rules.SEARCH).name)
    # A pass: along the directions, unless elements passing on their own (kinks the search
    # left out) or a kink the step reached explained a disagreement away.
    passed_by = (rules.KINK_IN_REACH if reached else rules.SEARCH if kinks
                 else rules.DIRECTION).name
    if worst is None:
        return ArrayVerdict(True, None, 0.0, 0.0, 0.0, kinks, 0, n, None, decided_by=passed_by)
    return ArrayVerdict(True, None, worst_error, worst.analytic, worst.numeric, kinks, 0, n,
                        None, estimate=estimate, decided_by=passed_by)


@dataclass(frozen=True)
class JointOutcome:
    """What `fast_together` found: every array's verdict when the joint directions agreed,
    else None; and how many joint directions it took (up to the one that disagreed)."""

    verdicts: list[ArrayVerdict] | None
    directions: int


def fast_together(
    ts: Sequence[Checked],
    evaluate: Callable[[], float],
    judging: numeric.Judging,
    directions: int,
    keyed: streams.KeyedStreams,
) -> JointOutcome:
    """Verdict rule "joint direction": fast mode for several arrays at once: each direction
    moves every array along the direction `fast` would take for it (each by its own step), two
    evaluations in all, judged by the joint derivative's estimated numerical error exactly as
    `fast` judges one array's. It passes arrays only when every joint direction agrees.

    A single wrong element shows there as it does along its own array's direction: its share of
    the mismatch and the objective's rounding noise, which dominates the estimate, are the same
    evaluations' in both. Returns the verdicts when every direction agrees within its estimate,
    else no verdicts and the number of directions taken up to the one that disagreed: the caller
    then runs `fast` on each array along at least as many (the same directions, now one array at
    a time), which locates what disagrees and says in which array, so nothing is failed or
    explained away here. A step that vanishes next to an array's values raises as in `fast`.
    """
    if any(np.may_share_memory(a.array, b.array) for i, a in enumerate(ts) for b in ts[:i]):
        # one array a view into another: moving both at once would mix their steps
        return JointOutcome(None, 0)
    lines: list[_Line] = []
    for t in ts:
        line = _line_for(t, evaluate, judging)[1]
        if not math.isfinite(line.g_squares):
            return JointOutcome(None, 0)  # NaN or inf in a gradient: `fast` fails those elements
        lines.append(line)
    joint = _JointLine(lines, judging)
    tol = judging.tolerance
    worst: numeric.Directional | None = None
    worst_error = -1.0
    # Each array's directions come from its own stream, in order, as `fast` draws them: kept
    # (`_cached_direction`), so the arrays checked one at a time after a disagreement take
    # them without drawing again. Where each stream stands after its last draw:
    after: list[Any] = [None] * len(ts)

    def next_direction(i: int, t: Checked) -> np.ndarray:
        rng = keyed.stream(t.name)
        if after[i] is not None:
            rng.bit_generator.state = after[i]
        d = _cached_direction(rng, t.array.size)
        after[i] = rng.bit_generator.state
        return d

    total = directions
    try:
        k = 0
        while k < total:
            d = [next_direction(i, t) for i, t in enumerate(ts)]
            k += 1
            value = joint.measure(d, 0, joint.size, detect=True)
            if value.within and not value.unresolved and _truncation_hides_rtol(value, tol):
                value = _at_smaller_step(joint, d, value)  # as in `fast`
            if not value.within or value.unresolved:
                # The arrays' own directions up to this one hold the disagreement: a narrow
                # pass confirmed away by a later joint direction must not pass along the first
                # direction alone when each array is checked on its own.
                return JointOutcome(None, k)
            err = numeric.relative_error_one(value.analytic, value.numeric, tol)
            if err > worst_error:
                worst, worst_error = value, err
            if k == directions and value.doubtful:
                total += 1  # the last planned one passed narrowly: one more, as in `fast`
    finally:
        joint.restore()
    if worst is None:
        return JointOutcome(None, 0)
    return JointOutcome([ArrayVerdict(True, None, worst_error, worst.analytic, worst.numeric, 0,
                                      0, t.array.size, None, estimate=worst.relative_estimate,
                                      decided_by=rules.JOINT.name)
                         for t in ts], k)


def _line_for(t: Checked, evaluate: Callable[[], float], given: numeric.Judging
              ) -> tuple[numeric.Judging, _Line]:
    """The array's own judging (its step, recorded on `t`) and its line; an array where the
    step vanishes next to its values is refused. The array's sum of squares is read once for
    both its scale and that test."""
    flat = t.array.reshape(-1)
    squares = numeric.sum_of_squares(flat) if flat.dtype == np.float64 else None
    judging = given.for_array(t.array, squares=squares)
    _remember_step(t, given, judging.step)
    line = _Line(t, evaluate, judging)
    _refusevanishing_step(t, line, squares)
    return judging, line


def _refusevanishing_step(t: Checked, line: _Line, squares: float | None) -> None:
    """Refuse, as full mode does, an array where x + h == x: a direction would silently skip
    those elements. The spacing of floats grows with |x| and every |d_i| >= 1, so the largest
    magnitude is the one to try."""
    eps = line.eps
    if line.size and not _step_clears_every_element(squares, eps):
        big = np.maximum(line.base.max(), -line.base.min())  # max |x| without a temporary
        h = big.dtype.type(eps)
        if big + h == big or big - h == big:
            raise vanishing_step(t, eps)


def _step_clears_every_element(squares: float | None, eps: float) -> bool:
    """Whether x + h and x - h differ from x for every element of a float64 array whose sum
    of squares is `squares` (None: not a float64 array): 2 * sqrt(sum x^2) bounds every |x|
    (rounding of the sum included), the spacing of floats only grows with |x|, and a step
    over twice the spacing at the bound moves every element by at least one spacing. False
    means only "not shown": `fast` then finds the largest |x| (two passes) and tries the step
    there."""
    if squares is None or not squares >= 0.0:  # NaN or inf: not shown
        return False
    bound = 2.0 * math.sqrt(squares)
    return math.isfinite(bound) and eps > 2.0 * math.ulp(bound)


def _remember_step(t: Checked, given: numeric.Judging, step: float) -> None:
    """Record on `t` (when it keeps a `steps` dict, as the checker's arrays do) the step
    `given.for_array` chose for it, so the report need not measure the array's scale again
    (a pass or three over it). Judgings are frozen values and the step depends on them and the
    array's values alone, which every mode puts back bit for bit."""
    steps = getattr(t, "steps", None)
    if isinstance(steps, dict):
        steps[given] = step


def _truncation_hides_rtol(value: numeric.Directional, tol: numeric.Tolerance) -> bool:
    """Whether what is left of the truncation after extrapolation (about truncation^2 over the
    derivative) exceeds rtol of it: then the extrapolated derivative cannot tell an element off
    by more than rtol from a right one, and the step is too large for this array."""
    return value.truncation > math.sqrt(tol.rtol) * value.scale


def _at_smaller_step(line: _Probing[_D], d: _D, value: numeric.Directional
                     ) -> numeric.Directional:
    """The derivative along d measured again at step h/KINK_SHRINK (two evaluations), with
    that step's larger rounding and smaller truncation.

    Verdict rule "smaller step", where `_truncation_hides_rtol`: a pass whose extrapolation
    allowance is wider than rtol stands only if it holds here too, else the value is
    unresolved; it never passes a failure."""
    f_plus, f_minus, analytic = line.probe(d, 0, line.size, 1.0 / KINK_SHRINK)
    small = line.eps / KINK_SHRINK
    error = KINK_SHRINK * line.rounding + value.truncation / KINK_SHRINK**2
    return numeric.Directional((f_plus - f_minus) / (2.0 * small), analytic, error)


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
                        line.flat.size, mask, decided_by=rules.SEARCH.name)


