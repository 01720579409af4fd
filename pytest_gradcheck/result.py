"""What a check found: one `Entry` per checked array, gathered in a `CheckResult`, and its text:
the per-array table with the maps of wrong elements (`str(result)`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GradcheckError
from .text import error, number, table

OK = "ok"
FAIL = "FAIL"
# The array could not be judged: its gradient is missing, has the wrong shape or is not a real
# array (the row's `message` says which). The check fails; the other rows are still judged.
ERROR = "error"
NOT_DIFFERENTIATED = "not differentiated"
INTEGER_INPUT = "integer input"
NOT_SELECTED = "not selected"
FROZEN = "frozen"  # declared frozen by the user (`frozen=`): never perturbed, no gradient asked
PASSED_THROUGH = "passed through"  # an input that is not an array (list, number, object)

# Failure maps larger than this are drawn in blocks.
MAP_MAX_ROWS = 16
MAP_MAX_COLS = 64


@dataclass
class Entry:
    """One row of the report: an input or a parameter of the checked layer."""

    name: str
    kind: str  # "input" or "param"
    shape: tuple[int, ...]
    dtype: str
    status: str
    max_rel_error: float | None = None
    worst_index: tuple[int, ...] | None = None
    analytic: float | None = None
    numeric: float | None = None
    kinks: int = 0
    failed: int = 0
    checked: int = 0
    size: int = 0
    # Fast mode: the estimated numerical error of the directional finite difference relative to
    # the derivative (rounding, and truncation where Richardson extrapolation was needed); the
    # smallest disagreement along the direction the check could see. None in other modes.
    estimate: float | None = None
    # Per-element failure mask (full mode) or the failing flat indices found (fast mode);
    # kept for the failure maps, not serialised.
    failed_mask: np.ndarray | None = field(default=None, repr=False)
    message: str | None = None  # why an `error` row could not be judged
    # The verdict rule that decided a judged row (`rules`; docs/verdicts.md), else None.
    decided_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.status not in (FAIL, ERROR)

    def to_dict(self) -> dict[str, Any]:
        """Builtin types only, so the row survives JSON and xdist's execnet."""
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "status": self.status,
            "max_rel_error": _f(self.max_rel_error),
            "worst_index": None if self.worst_index is None else [int(i) for i in self.worst_index],
            "analytic": _f(self.analytic),
            "numeric": _f(self.numeric),
            "kinks": int(self.kinks),
            "failed": int(self.failed),
            "checked": int(self.checked),
            "size": int(self.size),
            "message": self.message,
            "estimate": _f(self.estimate),
            "decided_by": self.decided_by,
        }


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


@dataclass
class CheckResult:
    """The outcome of one check; `str()` is the report table."""

    label: str
    seed: int
    mode: str
    precision: str
    eps: float
    rtol: float
    atol: float
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    forward_calls: int = 0
    backward_calls: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    @property
    def failed_entries(self) -> list[Entry]:
        return [e for e in self.entries if not e.ok]

    @property
    def max_rel_error(self) -> float:
        errs = [e.max_rel_error for e in self.entries if e.max_rel_error is not None]
        return max(errs, default=0.0)

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no row {name!r}; rows: {', '.join(e.name for e in self.entries)}")

    def __str__(self) -> str:
        return render_result(self)

    def raise_if_failed(self) -> CheckResult:
        """Raise `GradcheckError` with the report if any row failed or could not be judged (an
        `error` row); return self otherwise."""
        if not self.ok:
            raise GradcheckError(str(self))
        return self

    def to_dict(self) -> dict[str, Any]:
        """Builtin types only (JSON, xdist)."""
        return {
            "label": self.label,
            "ok": self.ok,
            "seed": int(self.seed),
            "mode": self.mode,
            "precision": self.precision,
            "eps": float(self.eps),
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "max_rel_error": float(self.max_rel_error),
            "forward_calls": int(self.forward_calls),
            "backward_calls": int(self.backward_calls),
            "elapsed": float(self.elapsed),
            "notes": list(self.notes),
            "entries": [e.to_dict() for e in self.entries],
        }


def header_line(result: CheckResult) -> str:
    return (
        f"gradcheck {result.label}: {'ok' if result.ok else 'FAILED'}  seed={result.seed}  "
        f"mode={result.mode}  {result.precision} step={result.eps:g} rtol={result.rtol:g} "
        f"atol={result.atol:.1e}  forward x{result.forward_calls} backward x{result.backward_calls}"
    )


def render_result(result: CheckResult) -> str:
    """The report: header with the seed, one row per array, notes, then maps of failures."""
    rows = []
    for e in result.entries:
        rows.append(
            [
                e.name,
                e.kind,
                "x".join(map(str, e.shape)) or "scalar",
                error(e.max_rel_error),
                "-" if e.worst_index is None else str(tuple(e.worst_index)),
                number(e.analytic),
                number(e.numeric),
                str(e.kinks) if e.checked else "-",
                f"{e.failed}/{e.checked}" if e.checked else "-",
                e.decided_by or "-",
                e.status,
            ]
        )
    header = ["array", "kind", "shape", "max rel err", "worst index", "analytic", "numeric",
              "kinks", "failed", "decided by", "status"]
    lines = [header_line(result), *table(header, rows)]
    lines.extend(f"  note: {n}" for n in result.notes)
    lines.extend(f"  error: {e.message}" for e in result.entries if e.status == ERROR)
    for e in result.entries:
        if e.status == FAIL:
            lines.extend(failure_map(e))
    if not result.ok:
        lines.append(
            f"  reproduce with seed={result.seed} (--gradcheck-seed={result.seed} or "
            f"@pytest.mark.gradcheck(seed={result.seed}))"
        )
    return "\n".join(lines)


def failure_map(entry: Entry) -> list[str]:
    """A compact picture of where the wrong elements of a 1-D or 2-D array are.

    `X` marks a wrong element, `.` a correct one; large arrays are shown in blocks, a block
    marked `X` if any element in it is wrong. A whole wrong column reads as a vertical line,
    a transposed gradient as a scatter, a single slip as one mark.
    """
    if entry.failed_mask is None or len(entry.shape) not in (1, 2) or entry.size == 0:
        return []
    # 1-D arrays are drawn as one row.
    rows, cols = (1, entry.shape[0]) if len(entry.shape) == 1 else entry.shape
    mask = np.asarray(entry.failed_mask, dtype=bool).reshape(rows, cols)
    br = -(-rows // MAP_MAX_ROWS)
    bc = -(-cols // MAP_MAX_COLS)
    pr, pc = -(-rows // br), -(-cols // bc)
    padded = np.zeros((pr * br, pc * bc), dtype=bool)
    padded[:rows, :cols] = mask
    blocks = np.asarray(padded.reshape(pr, br, pc, bc).any(axis=(1, 3)))
    scale = "" if br == bc == 1 else f", each mark a {br}x{bc} block"
    lines = [f"  where {entry.name} is wrong ({entry.failed} of {entry.checked} elements{scale}):"]
    lines.extend("    " + "".join("X" if b else "." for b in row) for row in blocks)
    return lines
