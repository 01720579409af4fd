"""Cost of state control for a layer that holds a large array it never changes.

Run from the repository root:

    python benchmarks/bench_state.py              # a 200 MB array, best of 7 rounds
    python benchmarks/bench_state.py --mb 40 --rounds 3

A small Linear-like layer is checked with `check(layer, x)` (default options) twice: as it is,
and holding a reference to a large float64 array (a model keeping its training data) that
forward never reads or writes. The cost of state control must follow what forward changes, so
the two should cost about the same. Reported per case:

- time: the best of several interleaved rounds (plain, with data, plain, ...), garbage
  collector off while timed, as in `timeit`;
- peak: the peak of memory traced by tracemalloc during one more check, above what was
  allocated before it (numpy reports its array buffers to tracemalloc);
- copied: array bytes the state snapshots copied during that check
  (`pytest_gradcheck.state.copied_bytes()`).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Runnable as a plain script from a checkout, without installing the package first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_gradcheck import check, state

MB = 1 << 20


class Affine:
    """`x @ W + b`, gradients in dW and db."""

    def __init__(self, n_in: int = 8, n_out: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.W = rng.normal(size=(n_in, n_out))
        self.b = rng.normal(size=n_out)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self.W + self.b
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        dx: np.ndarray = dout @ self.W.T
        return dx


class AffineWithData(Affine):
    def __init__(self, data: np.ndarray) -> None:
        super().__init__()
        self.data = data


def timed(fn: Callable[[], Any]) -> float:
    gc.disable()
    try:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    finally:
        gc.enable()


def traced(fn: Callable[[], Any]) -> tuple[float, float]:
    """(peak MB above the start, MB copied by snapshots) of one call."""
    copied = state.copied_bytes()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak / MB, (state.copied_bytes() - copied) / MB


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=200.0, help="size of the untouched array (MB)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per case")
    args = ap.parse_args(argv)

    n = int(args.mb * MB / 8)
    side = int(np.sqrt(n))
    data = np.full((side, n // side), 0.5)  # filled, so its pages are really there
    x = np.random.default_rng(1).normal(size=(16, 8))
    cases: dict[str, Callable[[], Any]] = {
        "plain": lambda: check(Affine(), x),
        f"with {data.nbytes / MB:.0f} MB array": lambda: check(AffineWithData(data), x),
    }
    for fn in cases.values():  # warm-up; every check must pass
        assert fn().ok
    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            best[name] = min(best[name], timed(fn))
    mem = {name: traced(fn) for name, fn in cases.items()}

    print(f"numpy {np.__version__}, Python {sys.version.split()[0]}, "
          f"best of {args.rounds} rounds")
    print(f"{'case':<22} | {'time ms':>9} | {'peak MB':>9} | {'copied MB':>9}")
    print("-" * 22 + "-+-" + "-+-".join(["-" * 9] * 3))
    for name in cases:
        peak, copied = mem[name]
        print(f"{name:<22} | {best[name] * 1e3:>9.2f} | {peak:>9.2f} | {copied:>9.3f}")
    (plain, with_data) = cases
    t_ratio = best[with_data] / best[plain]
    d_peak, d_copied = (mem[with_data][i] - mem[plain][i] for i in (0, 1))
    print(f"{'ratio / difference':<22} | {t_ratio:>8.2f}x | {d_peak:>+9.2f} | {d_copied:>+9.3f}")


if __name__ == "__main__":
    main()
