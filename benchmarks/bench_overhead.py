"""Per-check overhead of fast mode on an affine layer x @ W + b, float64, one thread.

For each size: the check's time, its floor (the forward passes it makes, each at the cost of a
bare forward pass plus float(np.vdot(g, out)), and one backward), the ratio, the time in
forward-equivalents ((check - backward) / forward), and torch's
`torch.autograd.gradcheck(fn, inputs, fast_mode=True)` on the plain function (no wrapper, one
thread) when torch is installed, with torch's time over ours (above 1x: ours is faster, as in
table A). Rounds are interleaved and the best of each is kept.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_overhead.py [rounds] [--mode fast|auto]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one thread, as torch below

import numpy as np  # noqa: E402

from pytest_gradcheck import check  # noqa: E402
from pytest_gradcheck.modes import forget_kept_draws  # noqa: E402

# (batch, width): 1,568 / 24,704 / 328,192 / 1,311,744 checked elements (x, W and b).
SIZES = [(16, 32), (64, 128), (128, 512), (256, 1024)]


class Affine:
    def __init__(self, n_in: int, n_out: int) -> None:
        rng = np.random.default_rng(0)
        self.params = {"W": rng.normal(size=(n_in, n_out)) / np.sqrt(n_in),
                       "b": 0.1 * rng.normal(size=n_out)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self._x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T


def timed(f: Callable[[], Any], repeat: int = 1, setup: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()  # untimed
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def measure(batch: int, width: int, mode: str, rounds: int, torch: Any) -> str:
    """One row of the table."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(batch, width))
    layer = Affine(width, width)
    size = x.size + width * width + width
    first = check(layer, x, mode=mode)
    assert first.ok, str(first)
    g = np.random.default_rng(2).normal(size=(batch, width))

    def fn(x: Any, w: Any, b: Any) -> Any:
        return x @ w + b

    tensors = None
    if torch is not None:
        tensors = tuple(torch.tensor(a, requires_grad=True)
                        for a in (x, layer.params["W"], layer.params["b"]))
    ours, theirs, fwd, bwd = [], [], [], []
    for _ in range(rounds):
        # Timed as the first check of its kind: the draws kept from the previous round are
        # dropped first, untimed.
        ours.append(timed(lambda: check(layer, x, mode=mode), setup=forget_kept_draws))
        if tensors is not None:
            theirs.append(timed(lambda: torch.autograd.gradcheck(fn, tensors, fast_mode=True)))
        fwd.append(timed(lambda: float(np.vdot(g, layer.forward(x))), 3))
        bwd.append(timed(lambda: layer.backward(g)))
    o, f, b = min(ours), min(fwd), min(bwd)
    floor = first.forward_calls * f + b
    t_text = f"{min(theirs) * 1e3:8.2f}ms" if theirs else f"{'-':>10}"
    r_text = f"{min(theirs) / o:10.2f}x" if theirs else f"{'-':>11}"
    return (f"{size:>10,} | {first.forward_calls:>4} | {o * 1e3:7.2f}ms | {floor * 1e3:7.2f}ms | "
            f"{o / floor:10.2f}x | {(o - b) / f:9.1f} | {t_text} | {r_text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=7)
    parser.add_argument("--mode", default="fast", choices=["fast", "auto"])
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    else:
        torch.set_num_threads(1)
    print(f"mode={args.mode}, best of {args.rounds} interleaved rounds, one thread")
    print(f"{'elements':>10} | {'fwd':>4} | {'check':>9} | {'floor':>9} | {'check/floor':>11} | "
          f"{'fwd-equiv':>9} | {'torch fast':>10} | {'torch/check':>11}")
    for batch, width in SIZES:
        print(measure(batch, width, args.mode, args.rounds, torch))


if __name__ == "__main__":
    main()
