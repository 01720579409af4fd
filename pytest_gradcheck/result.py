"""What a check found: one `Entry` per checked array, gathered in a `CheckResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GradcheckError

OK = "ok"
FAIL = "FAIL"
NOT_DIFFERENTIATED = "not differentiated"
INTEGER_INPUT = "integer input"
NOT_SELECTED = "not selected"
PASSED_THROUGH = "passed through"  # an input that is not an array (list, number, object)


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
    # Per-element failure mask (full mode) or the failing flat indices found (fast mode);
    # kept for the failure maps, not serialised.
    failed_mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

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
        from .report import render_result

        return render_result(self)

    def raise_if_failed(self) -> CheckResult:
        """Raise `GradcheckError` with the report if any row failed; return self otherwise."""
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
