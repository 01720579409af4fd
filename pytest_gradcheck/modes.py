"""How many evaluations to spend per array: full, sample, fast (directional) and auto modes.

Every mode turns (array, analytic gradient, an evaluate() callable) into an `ArrayVerdict`; the
checker does not care which ran. Only `numeric` does arithmetic on the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import numeric
from .errors import GradcheckUsageError

# At most this many wrong elements are located per array in fast mode (each costs ~2 log2 n
# evaluations); a map of more would need full mode anyway.
MAX_LOCATED = 4


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
        big = float(np.max(np.abs(t.array)))
        raise GradcheckUsageError(
            f"{t.name}: the step eps={eps:g} vanishes next to values of magnitude {big:.3g} "
            f"in {t.array.dtype}; pass a larger eps, or rescale the inputs"
        )


def elementwise(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    eps: float,
    tol: numeric.Tolerance,
    indices: np.ndarray | None = None,
) -> ArrayVerdict:
    """Central differences at every element (or at `indices`)."""
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
    eps: float,
    tol: numeric.Tolerance,
    k: int,
    rng: np.random.Generator,
) -> ArrayVerdict:
    """Central differences at k seeded elements of the array (all of them if it is smaller)."""
    n = t.array.size
    if k >= n:
        return elementwise(t, evaluate, f_zero, eps, tol)
    indices = np.sort(rng.choice(n, size=k, replace=False))
    return elementwise(t, evaluate, f_zero, eps, tol, indices)


class _Line:
    """f along x + s*d for a direction d supported on part of the array: the fast-mode probe."""

    def __init__(self, t: Checked, evaluate: Callable[[], float], eps: float) -> None:
        self.flat = t.array.reshape(-1)
        self.base = self.flat.copy()
        self.analytic = t.analytic.reshape(-1) if t.analytic is not None else None
        self.evaluate = evaluate
        self.eps = eps

    def probe(self, direction: np.ndarray, support: np.ndarray) -> tuple[float, float, float]:
        """(f_plus, f_minus, analytic) for the step eps*direction restricted to `support`.

        The analytic value is projected on the displacement actually stored, so rounding of
        x + h*d does not count as an error.
        """
        flat, base, h = self.flat, self.base, self.eps
        d = direction[support]
        x = base[support]
        plus = (x + h * d).astype(flat.dtype)
        minus = (x - h * d).astype(flat.dtype)
        assert self.analytic is not None
        disp = plus.astype(np.float64) - minus.astype(np.float64)
        analytic = float(np.dot(self.analytic[support], disp)) / (2 * h)
        try:
            flat[support] = plus
            f_plus = self.evaluate()
            flat[support] = minus
            f_minus = self.evaluate()
        finally:
            flat[support] = x
        return f_plus, f_minus, analytic


def _directional_verdict(
    line: _Line, direction: np.ndarray, support: np.ndarray, f_zero: float,
    tol: numeric.Tolerance,
) -> tuple[numeric.Verdict, float, float]:
    f_plus, f_minus, analytic = line.probe(direction, support)
    h = np.array([line.eps])
    v = numeric.compare(np.array([analytic]), np.array([f_plus]), np.array([f_minus]),
                        f_zero, h, h, tol)
    return v, analytic, float(v.numeric[0])


def fast(
    t: Checked,
    evaluate: Callable[[], float],
    f_zero: float,
    eps: float,
    tol: numeric.Tolerance,
    directions: int,
    rng: np.random.Generator,
) -> ArrayVerdict:
    """Directional derivatives along seeded random sign vectors, then group testing.

    A direction with entries +-1 makes a wrong element show up with its full error (no small
    random weight can hide it). When a direction disagrees, the mismatch is additive over
    disjoint supports, so halving the support and probing one half finds a single wrong element
    among n in about log2(n) probes of two evaluations each.
    """
    n = t.array.size
    line = _Line(t, evaluate, eps)
    everything = np.arange(n)
    failed_dirs = kinks = 0
    located: dict[int, tuple[float, float, float]] = {}
    worst_dir = (0.0, 0.0, 0.0)  # (rel error, analytic, numeric) of the worst direction
    for _ in range(directions):
        d = rng.choice(np.array([-1.0, 1.0]), size=n)
        v, an, nu = _directional_verdict(line, d, everything, f_zero, tol)
        kinks += int(v.kink[0])
        if v.rel_error[0] >= worst_dir[0]:
            worst_dir = (float(v.rel_error[0]), an, nu)
        if not v.passed[0]:
            failed_dirs += 1
            for idx, err, a_i, n_i in _locate(line, d, everything, nu - an, f_zero, tol, located):
                located[idx] = (err, a_i, n_i)
    if located:
        idx = max(located, key=lambda i: located[i][0])
        err, a_i, n_i = located[idx]
        mask = np.zeros(n, dtype=bool)
        mask[list(located)] = True
        return ArrayVerdict(False, idx, err, a_i, n_i, kinks, failed_dirs, directions, mask)
    # Passed, or failed with the error spread too thin over many elements to pin one down:
    # report the worst direction's numbers without an element index.
    err, an, nu = worst_dir
    return ArrayVerdict(failed_dirs == 0, None, err, an, nu, kinks, failed_dirs, directions,
                        None)


def _locate(
    line: _Line,
    d: np.ndarray,
    support: np.ndarray,
    mismatch: float,
    f_zero: float,
    tol: numeric.Tolerance,
    known: dict[int, Any],
) -> list[tuple[int, float, float, float]]:
    """Find up to MAX_LOCATED elements of `support` that explain a directional mismatch."""
    found: list[tuple[int, float, float, float]] = []
    residual = mismatch
    # Contributions of elements already located through another direction are known.
    for i, (_, a_i, n_i) in known.items():
        residual -= d[i] * (n_i - a_i)
    remaining = support[~np.isin(support, list(known))]
    while len(found) < MAX_LOCATED and remaining.size and not _negligible(residual, tol):
        s = remaining
        m = residual
        while s.size > 1:
            half = s[: s.size // 2]
            _, an, nu = _directional_verdict(line, d, half, f_zero, tol)
            m_half = nu - an
            if abs(m_half) >= abs(m - m_half):
                s, m = half, m_half
            else:
                s, m = s[s.size // 2 :], m - m_half
        i = int(s[0])
        v = elementwise_one(line, i, f_zero, tol)
        if v is None:
            break
        err, a_i, n_i, ok = v
        if ok:
            break  # the mismatch is spread over many small errors, or is a kink: stop here
        found.append((i, err, a_i, n_i))
        residual -= d[i] * (n_i - a_i)
        remaining = remaining[remaining != i]
    return found


def elementwise_one(
    line: _Line, i: int, f_zero: float, tol: numeric.Tolerance
) -> tuple[float, float, float, bool] | None:
    """The full-mode verdict at one element: (rel error, analytic, numeric, passed)."""
    assert line.analytic is not None
    idx = np.array([i])
    f_plus, f_minus, h_plus, h_minus = numeric.central_values(line.flat, line.evaluate,
                                                              line.eps, idx)
    v = numeric.compare(line.analytic[idx], f_plus, f_minus, f_zero, h_plus, h_minus, tol)
    return float(v.rel_error[0]), float(v.analytic[0]), float(v.numeric[0]), bool(v.passed[0])


def _negligible(residual: float, tol: numeric.Tolerance) -> bool:
    return abs(residual) <= tol.atol


def run_mode(
    opts: Any,
    targets: Sequence[Checked],
    evaluate: Callable[[], float],
    f_zero: float,
    eps: float,
    tol: numeric.Tolerance,
    notes: list[str],
) -> list[ArrayVerdict]:
    """Check every target in the mode `opts.mode`; per-array random choices come from the seed."""
    verdicts = []
    for i, t in enumerate(targets):
        rng = np.random.default_rng([opts.seed, i])
        mode = opts.mode
        if mode == "auto":
            mode = "full" if t.array.size <= opts.auto_limit else "fast"
        if mode == "full":
            verdicts.append(elementwise(t, evaluate, f_zero, eps, tol))
        elif mode == "sample":
            verdicts.append(sample(t, evaluate, f_zero, eps, tol, opts.samples, rng))
        else:
            verdicts.append(fast(t, evaluate, f_zero, eps, tol, opts.directions, rng))
    return verdicts
