"""Checks at several points (`points` option): one check per point, merged into one result.

Point 0 is the check at the run's seed, exactly as with points=1; point k > 0 runs at a seed
derived from the run's seed and k (`point_seed`), so it draws a fresh cotangent, fresh directions
and samples, and, for discovered layers, a fresh case from `gradcheck_case(rng)`. Every point is a
whole check (the layer and the random streams are put back after each), so the points run above
the checker and the merge only reads results: per row the worst point, a failure if any point
fails, and a note naming the point (and its seed) that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from . import streams
from .options import SEED_LIMIT, Options
from .result import CheckResult, Entry


def point_seed(seed: int, point: int) -> int:
    """The seed point `point` of a check at `seed` runs at (`seed` itself for point 0)."""
    if point == 0:
        return int(seed)
    return int(streams.stream(seed, streams.POINT, point).integers(SEED_LIMIT))


def run_points(check_at: Callable[[Options], CheckResult], opts: Options) -> CheckResult:
    """`check_at` once per point, with the point's seed; the results merged."""
    if opts.points == 1:
        return check_at(opts)
    results = [check_at(replace(opts, seed=point_seed(opts.seed, k), points=1))
               for k in range(opts.points)]
    return merge(results, opts.seed)


def _worse(a: Entry, b: Entry) -> bool:
    """Whether row `a` is worse than row `b`: failing beats passing, then the larger error."""
    if a.ok != b.ok:
        return not a.ok
    return (a.max_rel_error or 0.0) > (b.max_rel_error or 0.0)


def merge(results: list[CheckResult], seed: int) -> CheckResult:
    """One result for the points' results: each row its worst point, the failing points noted.

    Rows are matched by kind and name (a discovered layer's case may differ per point; a row missing
    at some points is kept from the points that have it). Header fields come from point 0,
    call counts and time add up.
    """
    rows: dict[tuple[str, str], tuple[int, Entry]] = {}
    for k, r in enumerate(results):
        for e in r.entries:
            key = (e.kind, e.name)  # an input and a parameter may share a name
            if key not in rows or _worse(e, rows[key][1]):
                rows[key] = (k, e)
    notes: list[str] = []
    for r in results:
        notes.extend(n for n in r.notes if n not in notes)
    failing = [(k, r) for k, r in enumerate(results) if not r.ok]
    for k, r in failing:
        names = ", ".join(e.name for e in r.failed_entries)
        notes.append(f"point {k} of {len(results)} failed (seed={r.seed}): {names}; "
                     f"alone: seed={r.seed} points=1")
    first = results[0]
    return replace(
        first,
        seed=seed,
        entries=[e for _, e in rows.values()],
        notes=notes,
        forward_calls=sum(r.forward_calls for r in results),
        backward_calls=sum(r.backward_calls for r in results),
        elapsed=sum(r.elapsed for r in results),
    )
