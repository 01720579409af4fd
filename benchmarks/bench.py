"""pytest-gradcheck benchmark: speed against torch, mode overhead, sensitivity.

Run from the repository root:

    python benchmarks/bench.py                  # all three tables (~6-8 minutes)
    python benchmarks/bench.py --quick          # fewer repeats and seeds (under 2 minutes)
    python benchmarks/bench.py --tables A,C --json bench.json

Table A (bench_speed.py): fast and auto mode against torch.autograd.gradcheck(fast_mode=True)
on an affine layer from ~1.6k to ~1.3M elements. Table B (bench_modes.py): every mode on five
layers against the floor of full mode and torch. Table C (bench_sensitivity.py): detection
rate of one wrong element of a weight gradient, per mode and array size.

numpy's BLAS and torch both run on one thread: the thread variables are set below, before
numpy is imported, and torch.set_num_threads(1) before any torch work. Every timing is the best
of several rounds, with the jobs of one row interleaved in each round, so that load from other
processes hits all columns alike.
"""

from __future__ import annotations

import os

# numpy's BLAS reads its thread count once, when numpy is loaded (threadpoolctl is not a
# dependency), so this comes before any import that loads numpy.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _common  # noqa: E402
import bench_modes  # noqa: E402
import bench_sensitivity  # noqa: E402
import bench_speed  # noqa: E402

TABLES = ("A", "B", "C")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds and seeds; skips the slowest torch and auto runs")
    ap.add_argument("--tables", default="A,B,C", help="which tables, e.g. A,C (default all)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timing rounds per row, best taken (default 5; 2 with --quick)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="seeds per cell of table C (default 100; 20 with --quick)")
    ap.add_argument("--full-seeds", type=int, default=None,
                    help="cap on seeds for full mode in table C (default: --seeds)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = ap.parse_args(argv)
    tables = [t.strip().upper() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        ap.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(TABLES)}")
    repeats = args.repeats or (2 if args.quick else 5)
    budget = 4.0 if args.quick else 15.0  # seconds per job before it stops repeating
    seeds = args.seeds or (20 if args.quick else 100)
    full_seeds = args.full_seeds or seeds
    use_torch = _common.torch is not None and not args.no_torch
    if _common.torch is not None:
        _common.torch.set_num_threads(1)

    info = _common.environment()
    info.update(quick=args.quick, repeats=repeats, budget_s=budget, seeds=seeds,
                full_seeds=full_seeds, torch_used=use_torch)
    print(_common.header(info))
    print(f"best of up to {repeats} interleaved rounds (a job stops repeating after "
          f"{budget:.0f} s); table C: {seeds} seeds per cell, full mode at most {full_seeds}")
    start = time.perf_counter()
    raw: list[dict[str, Any]] = []
    for name in tables:
        t0 = time.perf_counter()
        if name == "A":
            text, rows = bench_speed.run(args.quick, repeats, budget, use_torch)
        elif name == "B":
            text, rows = bench_modes.run(args.quick, repeats, budget, use_torch)
        else:
            text, rows = bench_sensitivity.run(seeds, full_seeds)
        print()
        print(text)
        print(f"(table {name}: {time.perf_counter() - t0:.0f} s)", flush=True)
        raw.extend(rows)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s")
    if args.json is not None:
        info["total_s"] = total
        args.json.write_text(json.dumps({"environment": info, "rows": raw}, indent=1) + "\n")
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
