"""What a run reports besides each check's table (`str(CheckResult)`, in result.py): the
options header, the session summary rows and the JSON file.

The summary and the JSON file are built from `CheckResult.to_dict()` dicts, which is what
reaches the controller under xdist.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .options import Options
from .result import ERROR
from .text import error, table


def options_header(opts: Options) -> str:
    """The options a run starts with, the seed first, so a run can be repeated."""
    return (
        f"gradcheck: seed={opts.seed} mode={opts.mode} eps={opts.eps or 'auto'} "
        f"rtol={opts.rtol or 'auto'} atol={opts.atol:g}"
    )


def summary_rows(results: Sequence[dict[str, Any]]) -> list[str]:
    """One line per check for the terminal summary (from `CheckResult.to_dict()` dicts)."""
    rows = []
    for r in results:
        worst = ", ".join(
            f"{e['name']}={ERROR if e['status'] == ERROR else error(e['max_rel_error'])}"
            for e in r["entries"]
            if e["max_rel_error"] is not None or e["status"] == ERROR
        )
        kinks = sum(e["kinks"] for e in r["entries"])
        rows.append(
            [
                r.get("nodeid") or r["label"],
                "ok" if r["ok"] else "FAIL",
                r["mode"],
                str(r["seed"]),
                error(r["max_rel_error"]),
                str(kinks),
                f"{r['elapsed'] * 1e3:.1f}ms",
                worst,
            ]
        )
    header = ["check", "result", "mode", "seed", "max rel err", "kinks", "time",
              "worst relative error per array"]
    return table(header, rows, indent="")


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
