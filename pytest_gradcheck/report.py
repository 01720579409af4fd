"""Rendering of results: the per-array table, failure maps, and the session summary rows.

Works on `CheckResult` objects and on their `to_dict()` form alike where it matters (the
session summary is built from dicts, which is what reaches the controller under xdist).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .result import FAIL, CheckResult, Entry

MAP_MAX_ROWS = 16
MAP_MAX_COLS = 64


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.3e}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.6g}"


def _err(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = []
    for row in (header, *rows):
        lines.append(indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return lines


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
                _err(e.max_rel_error),
                "-" if e.worst_index is None else str(tuple(e.worst_index)),
                _num(e.analytic),
                _num(e.numeric),
                str(e.kinks) if e.checked else "-",
                f"{e.failed}/{e.checked}" if e.checked else "-",
                e.status,
            ]
        )
    header = ["array", "kind", "shape", "max rel err", "worst index", "analytic", "numeric",
              "kinks", "failed", "status"]
    lines = [header_line(result), *_table(header, rows)]
    lines.extend(f"  note: {n}" for n in result.notes)
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


def summary_rows(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per check for the terminal summary (from `CheckResult.to_dict()` dicts)."""
    rows = []
    for r in results:
        worst = ", ".join(
            f"{e['name']}={_err(e['max_rel_error'])}"
            for e in r["entries"]
            if e["max_rel_error"] is not None
        )
        kinks = sum(e["kinks"] for e in r["entries"])
        rows.append(
            [
                r.get("nodeid") or r["label"],
                "ok" if r["ok"] else "FAIL",
                r["mode"],
                str(r["seed"]),
                _err(r["max_rel_error"]),
                str(kinks),
                f"{r['elapsed'] * 1e3:.1f}ms",
                worst,
            ]
        )
    header = ["check", "result", "mode", "seed", "max rel err", "kinks", "time",
              "worst relative error per array"]
    return _table(header, rows, indent="")


def _strict_json(value: Any) -> Any:
    """Non-finite floats (a NaN gradient, an infinite error) as the strings "nan", "inf" and
    "-inf": JSON has no such numbers, and strict parsers reject Python's NaN/Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    return value


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a results payload (builtin types, from `CheckResult.to_dict()`) as strict JSON."""
    Path(path).write_text(json.dumps(_strict_json(payload), indent=2, allow_nan=False))
