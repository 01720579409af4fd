"""What a run reports besides each check's table (`str(CheckResult)`, in result.py): the
options header, the session summary and the JSON file, for pytest runs and for
`python -m pytest_gradcheck` alike.

A run is a `RunRecord`: `CheckResult.to_dict()` dicts (what reaches the controller under
xdist), skipped targets and checks that errored (a usage error: no result at all), each with
its node id.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GradcheckUsageError
from .options import Options
from .result import ERROR
from .text import error, table


def options_header(opts: Options) -> str:
    """The options a run starts with, the seed first, so a run can be repeated."""
    return (
        f"gradcheck: seed={opts.seed} mode={opts.mode} eps={opts.eps or 'auto'} "
        f"rtol={opts.rtol or 'auto'} atol={opts.atol:g}"
    )


def drawn_seed_line(seed: int, flag: str) -> str:
    """The line every run that drew its seed (seed=random) prints, with how to repeat it."""
    return f"gradcheck: seed={seed} (drawn; reproduce with {flag}={seed})"


@dataclass
class RunRecord:
    """Everything a run checked: results (`CheckResult.to_dict()` plus "nodeid"), skipped
    targets ({"nodeid", "reason"}) and errored checks (`error_record`); `seed_drawn`: the run's
    seed was drawn (seed=random), not given."""

    seed: int
    seed_drawn: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["ok"]]

    def counts(self) -> str:
        """`N passed, N failed, N errored, N skipped`."""
        failed = len(self.failed)
        return (
            f"{len(self.results) - failed} passed, {failed} failed, {len(self.errors)} errored, "
            f"{len(self.skipped)} skipped"
        )

    def payload(self) -> dict[str, Any]:
        """The JSON file's content: {"seed", "seed_drawn", "results", "skipped", "errors"}."""
        return {
            "seed": self.seed,
            "seed_drawn": self.seed_drawn,
            "results": self.results,
            "skipped": self.skipped,
            "errors": self.errors,
        }

    def write_json(self, path: str | Path) -> None:
        write_json(path, self.payload())

    def write_report(self, path: str | Path, given: str) -> None:
        """`write_json`, a path it cannot be written to raising a usage error that names it
        (`given`: how the path was given, `--json out/run.json`) and says what to do."""
        try:
            self.write_json(path)
        except OSError as exc:
            reason = unwritable(Path(path)) or (
                f"{exc.strerror or exc}; check the path or choose another"
            )
            raise GradcheckUsageError(f"{given}: cannot write the JSON report: {reason}") from None

    def summary(self, full: bool) -> list[str]:
        """The terminal summary after the title: the table of every check (`full`) or of the
        failed and errored ones only, then (`full`) the skipped targets with their reasons."""
        shown = self.results if full else self.failed
        lines = summary_rows(shown, self.errors) if shown or self.errors else []
        if full:
            lines.extend(f"SKIPPED {s['nodeid']}: {s['reason']}" for s in self.skipped)
        elif len(shown) < len(self.results) or self.skipped:
            lines.append("(passed checks and skips listed with -v or --gradcheck-summary=full)")
        return lines


def unwritable(path: Path) -> str | None:
    """Why a JSON report cannot be written to `path`, and what to do; None if it can (as far
    as can be told before writing: the directory exists and is writable)."""
    if path.is_dir():
        return f"{path} is a directory; name a file in it, e.g. {path / 'gradcheck.json'}"
    directory = path.parent
    if not directory.exists():
        return f"the directory {directory} does not exist; create it first or choose another path"
    if not directory.is_dir():
        return f"{directory} is not a directory; choose another path"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"the directory {directory} is not writable; choose a writable path"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable; choose a writable path"
    return None


def check_report_path(path: str | Path, given: str) -> None:
    """Raise a usage error before a run if its JSON report could not be written to `path`
    (`given`: how the path was given), so a long run does not end in failing to write it."""
    reason = unwritable(Path(path))
    if reason:
        raise GradcheckUsageError(f"{given}: cannot write the JSON report: {reason}")


def error_record(nodeid: str, message: str) -> dict[str, str]:
    """A check that could not run (a usage error), as the JSON file and the summary hold it."""
    return {"nodeid": nodeid, "status": ERROR, "message": message}


def summary_rows(
    results: Sequence[dict[str, Any]], errors: Sequence[dict[str, str]] = ()
) -> list[str]:
    """One line per check for the terminal summary (from `CheckResult.to_dict()` dicts), then
    one per errored check (`error_record`s) with the first line of its message."""
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
    for e in errors:
        first = e["message"].splitlines()[0] if e["message"] else ""
        rows.append([e["nodeid"], "ERROR", "-", "-", "-", "-", "-", first])
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
