"""Group testing over one array: the elements behind a direction's mismatch, located by halving
the direction's support and judged as full mode judges them (`Search`), and the rules that
decide what a located element, or a mismatch none explains, means (`floor_cannot_excuse`,
`kink_in_reach`). Fast mode (`directional.fast`) runs them on its lines, which this module
knows only through `Probe`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import numeric


def writable(d: np.ndarray) -> np.ndarray:
    """d itself, or a copy of it when it is a kept (read-only, shared) direction."""
    return d if d.flags.writeable else d.copy()


class Probe(Protocol):
    """What the search asks of a line (`directional._Line`): a measurement over a range of the
    direction, an element judged as full mode judges it, and what a measurement costs."""

    rounding: float
    extrapolate: bool
    size: int  # elements along the line

    def measure(self, d: np.ndarray, lo: int, hi: int, detect: bool) -> numeric.Directional: ...

    def element(self, i: int, f_zero: float, tol: numeric.Tolerance) -> Element: ...

    @property
    def cost(self) -> int: ...


# At most this many wrong elements are located per array in fast mode (each costs
# 2*ceil(log2 n) + 2 evaluations); a map of more would need full mode anyway.
MAX_LOCATED = 4
# Elements that pass on their own (kinks: ReLU at 0, max-pool ties, where a direction's central
# difference mixes the one-sided slopes) are located to explain a directional mismatch away for
# up to MAX_EXPLAINED of them, or more while the search has cost under an eighth of full mode.
MAX_EXPLAINED = 16
@dataclass
class Element:
    error: float
    analytic: float
    numeric: float
    passed: bool
    kink: bool


def floor_cannot_excuse(e: Element, tol: numeric.Tolerance) -> Element:
    """Verdict rule "search": an element that passes its own difference only through the
    rounding floor (beyond rtol, not at a kink), while its share of the direction's mismatch is
    beyond what the direction's rounding explains, is wrong: the direction resolved it more
    finely than the floor (a bound) allows for, and it is not explained away as passing on its
    own. One within rtol, or at a kink, still passes: rtol stays the bound per element."""
    if e.kink or not (math.isfinite(e.analytic) and math.isfinite(e.numeric)):
        return e
    scale = max(abs(e.analytic), abs(e.numeric))
    raw = abs(e.analytic - e.numeric) / scale if scale > 0 else 0.0
    if raw <= tol.rtol:
        return e
    return Element(raw, e.analytic, e.numeric, False, False)


class Search:
    """Group testing over one array: the elements found so far, wrong and right."""

    def __init__(self, line: Probe, f_zero: float, tol: numeric.Tolerance) -> None:
        self.line = line
        self.f_zero = f_zero
        self.tol = tol
        self.wrong: dict[int, Element] = {}
        self.right: dict[int, Element] = {}  # passed on their own: kinks, mostly
        n = line.size
        one = 2 * max(n - 1, 1).bit_length() + 4  # evaluations to locate, judge, confirm
        self.budget = max(MAX_EXPLAINED * one, n // 4)  # evaluations, i.e. 2n / 8
        self.spent = 0

    def leave_out(self, d: np.ndarray) -> np.ndarray:
        """The direction with elements already judged zeroed, so it probes the others (a
        copy of a kept direction when there are any)."""
        if self.wrong or self.right:
            d = writable(d)
            d[[*self.wrong, *self.right]] = 0.0
        return d

    def explain(self, d: np.ndarray, value: numeric.Directional
                ) -> tuple[numeric.Directional, bool]:
        """Verdict rule "search": locate the elements behind the mismatch of direction d
        (updating `wrong`/`right`), 2*ceil(log2 n) + 2 evaluations per element found. A wrong
        element fails the array; elements that pass on their own (kinks) are left out of the
        direction, which can then pass: only when they account for the whole mismatch.

        Returns the direction measured without the elements found (what it reads once they
        are left out), and whether some of the mismatch is left unexplained: the budget ran
        out, or the search ended on an element that accounts for no more than the noise
        (it was following noise, or an error spread over many elements).
        """
        line = self.line
        while not value.within or value.unresolved:
            if len(self.wrong) >= MAX_LOCATED or self.spent >= self.budget:
                return value, True
            lo, hi, m = 0, d.size, value.mismatch
            while hi - lo > 1:
                mid = (lo + hi) // 2
                m_low = line.measure(d, lo, mid, detect=False).mismatch
                self.spent += line.cost
                if abs(m_low) >= abs(m - m_low):
                    hi, m = mid, m_low
                else:
                    lo, m = mid, m - m_low
            if d[lo] == 0.0:
                return value, True  # nothing left to probe: the mismatch is noise or non-additive
            e = line.element(lo, self.f_zero, self.tol)
            self.spent += 2
            # The element's own share of the mismatch, as its central difference reads it.
            line_d = d[lo]
            share = float(line_d) * (e.numeric - e.analytic)
            d[lo] = 0.0
            if e.passed and abs(share) > numeric.DIRECTIONAL_SAFETY * value.error:
                e = floor_cannot_excuse(e, self.tol)
            (self.right if e.passed else self.wrong)[lo] = e
            if e.passed and abs(share) <= numeric.DIRECTIONAL_SAFETY * value.error:
                return value, True  # it accounts for no more than noise: the search followed noise
            if line.extrapolate:
                # Extrapolated values do not subtract step-h shares: measure again.
                value = line.measure(d, 0, d.size, detect=False)
                self.spent += line.cost
            else:
                # The subtraction adds the element's own rounding to what is left.
                value = numeric.Directional(value.numeric - share, value.analytic,
                                            value.error + abs(float(line_d)) * line.rounding)
            if value.within and e.kink:
                # A kink's slopes depend on the step, and the direction stepped it by h*|d_i|,
                # not h: confirm what is left with a measurement of its own.
                value = line.measure(d, 0, d.size, detect=False)
                self.spent += line.cost
        return value, False


def kink_in_reach(search: Search, d: np.ndarray, value: numeric.Directional
                   ) -> tuple[numeric.Directional, bool]:
    """Verdict rule "kink in reach": whether a mismatch no element accounts for is a kink that
    only the combined step of many elements reaches. Can turn a failure into a pass, only when
    the mismatch vanishes from every part of the direction measured on its own.

    A step along d moves an intermediate value (a hidden unit's input) by the combined
    displacement of all elements, much further than one element's step does, and can carry it
    across a kink (ReLU at 0) that no element-wise difference crosses. A wrong gradient is
    additive: its share stays in whichever part of the direction holds the element, at any
    size of that part. A kink reached only by the combined step is not: moving half the
    elements moves the unit about 1/sqrt(2) as far. So the direction's two halves are measured
    on their own (4 evaluations), and each half that still disagrees is split again, down to
    single elements judged as full mode judges them: the mismatch is put down to a kink only
    when no part disagrees (more than MAX_LOCATED parts at one level is unexplained). A smaller
    step would not do: its larger rounding allowance (16 times at h/16) hides a wrong element's
    share as well as the kink's. Returns the value to judge and whether it is unexplained.
    """
    line = search.line
    ranges = [(0, d.size)]
    parts: list[numeric.Directional] = []
    while ranges:
        beyond: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if hi - lo == 1:
                e = line.element(lo, search.f_zero, search.tol)
                search.spent += 2
                (search.right if e.passed else search.wrong)[lo] = e
                continue
            mid = (lo + hi) // 2
            for a, b in ((lo, mid), (mid, hi)):
                if not d[a:b].any():
                    continue
                part = line.measure(d, a, b, detect=False)
                search.spent += line.cost
                if len(ranges) == 1 and (lo, hi) == (0, d.size):
                    parts.append(part)
                if not part.within:
                    beyond.append((a, b))
        if len(beyond) > MAX_EXPLAINED or search.spent >= search.budget:
            return value, True
        ranges = beyond
    if search.wrong:
        return value, False  # the caller fails the array at the elements found
    # What the halves read together: the direction without the kink's share.
    whole = numeric.Directional(sum(p.numeric for p in parts), sum(p.analytic for p in parts),
                                sum(p.error for p in parts))
    return whole, False
