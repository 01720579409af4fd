"""Element-wise central differences (full and sample modes) and the verdict every mode returns.

`elementwise` judges each element (or the sampled ones) by rtol, atol and the kink rule
(`numeric.compare`); a failure that shrinks at a smaller step gets a note on truncation. Fast
mode (`directional`) falls back on it where a direction's mismatch stays unexplained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import numeric, rules
from .errors import GradcheckUsageError

# Failing elements (and fast mode's passes that truncation could hide) are measured again at
# step h / KINK_SHRINK, where truncation is KINK_SHRINK^2 times smaller.
KINK_SHRINK = 16.0

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
    # Fast mode: the estimated numerical error of the worst direction's finite difference,
    # relative to its derivative (the smallest relative disagreement it could see).
    estimate: float | None = None
    decided_by: str = rules.ELEMENTS.name  # the rule that decided it (`rules`)


def from_elements(v: numeric.Verdict, indices: np.ndarray | None, size: int) -> ArrayVerdict:
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
        decided_by=(rules.KINKS if v.ok and v.kink.any() else rules.ELEMENTS).name,
    )


def check_steps(t: Checked, h_plus: np.ndarray, h_minus: np.ndarray, eps: float) -> None:
    if np.any(h_plus <= 0) or np.any(h_minus <= 0):
        raise vanishing_step(t, eps)


def vanishing_step(t: Checked, eps: float) -> GradcheckUsageError:
    big = float(np.max(np.abs(t.array)))
    return GradcheckUsageError(
        f"{t.name}: the step eps={eps:g} vanishes next to values of magnitude {big:.3g} "
        f"in {t.array.dtype}; pass a larger eps, or rescale the inputs"
    )

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
    check_steps(t, h_plus, h_minus, eps)
    analytic = t.analytic.reshape(-1)
    if indices is not None:
        analytic = analytic[indices]
    v = numeric.compare(analytic, f_plus, f_minus, f_zero, h_plus, h_minus, tol)
    verdict = from_elements(v, indices, flat.size)
    verdict.note = _truncation_advice(t.name, flat, evaluate, v, eps, indices)
    return verdict


# Failing elements measured again at step h/KINK_SHRINK to tell truncation from a wrong value.
TRUNCATION_PROBES = 8


def _truncation_advice(
    name: str,
    flat: np.ndarray,
    evaluate: Callable[[], float],
    v: numeric.Verdict,
    step: float,
    indices: np.ndarray | None,
) -> str | None:
    """Advice when the worst failing elements' mismatch shrinks at least fourfold at step
    h/KINK_SHRINK (two evaluations each): truncation, which falls as h^2, rather than a wrong
    value, which stays. The verdict stands (a failure is never explained away here): the step
    is too large for the values and may hide a wrong gradient as well as mimic one."""
    failing = np.flatnonzero(~v.passed & np.isfinite(v.numeric) & np.isfinite(v.analytic))
    if failing.size == 0:
        return None
    worst = failing[np.argsort(v.rel_error[failing])[::-1][:TRUNCATION_PROBES]]
    where = worst if indices is None else np.asarray(indices, dtype=np.intp)[worst]
    small = step / KINK_SHRINK
    f_plus, f_minus, h_plus, h_minus = numeric.central_values(flat, evaluate, small, where)
    if not (np.all(h_plus > 0) and np.all(h_minus > 0)):
        return None
    at_small = (f_plus - f_minus) / (h_plus + h_minus)
    before = np.abs(v.numeric[worst] - v.analytic[worst])
    after = np.abs(at_small - v.analytic[worst])
    if not np.all(after <= before / 4.0):
        return None
    shrink = float(np.min(before / np.maximum(after, np.finfo(np.float64).tiny)))
    return (f"{name}: the failing elements' mismatch shrank {shrink:.0f}x or more at a "
            f"{KINK_SHRINK:g}x smaller step: truncation, as the step {step:g} is large next to "
            "the scale on which the values change (steps follow each array's RMS, which an "
            "offset far larger than the spread inflates); such failures can hide a wrong "
            "gradient as well as mimic one: pass a smaller eps, or normalise the inputs")


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
