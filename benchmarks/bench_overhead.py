"""Per-check overhead of fast mode on an affine layer x @ W + b, float64, one thread.

For each size: the check's time, its floor (the forward passes it makes, each at the cost of a
bare forward pass plus float(np.vdot(g, out)), and one backward), the ratio, the time in
forward-equivalents ((check - backward) / forward), and torch's
`torch.autograd.gradcheck(fn, inputs, fast_mode=True)` on the plain function (no wrapper, one
thread) when torch is installed, with torch's time over ours (above 1x: ours is faster, as in
table A). Rounds are interleaved and the best of each is kept.

With `--breakdown`, a second table splits a check's time (best of its own rounds, with the
layer's forward and backward timed from inside) into the time spent in the layer's forward
calls, in its backward, and everything else (the rest: state control, random draws, probes,
hooks, judging), beside the time the floor allows for that rest at 1.5x (half the floor). The
rest at the smallest size, where the arrays cost next to nothing, is the per-check fixed cost.
It also counts the check's minor page faults (memory the process gets from the kernel afresh:
where the allocator has handed freed memory back, each 4 KB page costs a fault and zeroing),
which the floor's passes, timed in a loop that reuses its memory, never pay.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_overhead.py [rounds] [--mode fast|auto]
        [--breakdown] [--no-torch] [--size N]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from collections.abc import Callable
from typing import Any, ClassVar

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads: one thread, as torch below

import numpy as np  # noqa: E402

from pytest_gradcheck import CheckResult, check  # noqa: E402
from pytest_gradcheck.directional import forget_kept_draws  # noqa: E402

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


class TimedAffine(Affine):
    """Affine whose forward and backward add the time spent inside them to `spent`."""

    spent: ClassVar[dict[str, float]] = {"forward": 0.0, "backward": 0.0}

    def forward(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return super().forward(x)
        finally:
            self.spent["forward"] += time.perf_counter() - start

    def backward(self, dout: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return super().backward(dout)
        finally:
            self.spent["backward"] += time.perf_counter() - start


def timed(f: Callable[[], Any], repeat: int = 1, setup: Callable[[], Any] | None = None) -> float:
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()  # untimed
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def _checked_once(layer: Affine, batch: int, mode: str
                  ) -> tuple[Affine, np.ndarray, np.ndarray, int, CheckResult]:
    """The layer, its input x, a cotangent g for the bare backward, the number of checked
    elements, and a first (untimed) check of it, which must pass."""
    width = layer.params["b"].size
    x = np.random.default_rng(1).normal(size=(batch, width))
    first = check(layer, x, mode=mode)
    assert first.ok, str(first)
    g = np.random.default_rng(2).normal(size=(batch, width))
    return layer, x, g, x.size + layer.params["W"].size + width, first


def breakdown(batch: int, width: int, mode: str, rounds: int) -> str:
    """One row of the breakdown table: where the time of the best of `rounds` checks went."""
    layer, x, g, size, first = _checked_once(TimedAffine(width, width), batch, mode)
    best = (float("inf"), 0.0, 0.0, 0)
    fwd, bwd = [], []
    gc.disable()  # as in bench.py's tables: a collection is not billed to one check
    try:
        for _ in range(rounds):
            forget_kept_draws()
            TimedAffine.spent.update(forward=0.0, backward=0.0)
            faults = _minor_faults()
            start = time.perf_counter()
            check(layer, x, mode=mode)
            total = time.perf_counter() - start
            faults = _minor_faults() - faults
            if total < best[0]:
                best = (total, TimedAffine.spent["forward"], TimedAffine.spent["backward"],
                        faults)
            fwd.append(timed(lambda: float(np.vdot(g, Affine.forward(layer, x))), 3))
            bwd.append(timed(lambda: Affine.backward(layer, g)))
    finally:
        gc.enable()
    total, in_fwd, in_bwd, faults = best
    floor = first.forward_calls * min(fwd) + min(bwd)
    rest = total - in_fwd - in_bwd
    return (f"{size:>10,} | {total * 1e3:7.2f}ms | {in_fwd * 1e3:7.2f}ms | "
            f"{first.forward_calls * min(fwd) * 1e3:7.2f}ms | {in_bwd * 1e3:7.2f}ms | "
            f"{min(bwd) * 1e3:7.2f}ms | {rest * 1e3:7.2f}ms | {0.5 * floor * 1e3:7.2f}ms | "
            f"{faults:>11,}")


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where `resource` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def measure(batch: int, width: int, mode: str, rounds: int, torch: Any) -> str:
    """One row of the table."""
    layer, x, g, size, first = _checked_once(Affine(width, width), batch, mode)

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
    parser.add_argument("--breakdown", action="store_true",
                        help="also split each check's time into forwards, backward and the rest")
    parser.add_argument("--no-torch", action="store_true",
                        help="leave torch out, even installed: a process with numpy alone")
    parser.add_argument("--size", type=int, choices=[b * w + w * w + w for b, w in SIZES],
                        help="only this size (checked elements), for a quicker run")
    args = parser.parse_args()
    sizes = [(b, w) for b, w in SIZES if args.size in (None, b * w + w * w + w)]
    torch: Any = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(1)
    print(f"mode={args.mode}, best of {args.rounds} interleaved rounds, one thread")
    print(f"{'elements':>10} | {'fwd':>4} | {'check':>9} | {'floor':>9} | {'check/floor':>11} | "
          f"{'fwd-equiv':>9} | {'torch fast':>10} | {'torch/check':>11}")
    for batch, width in sizes:
        print(measure(batch, width, args.mode, args.rounds, torch))
    if not args.breakdown:
        return
    print()
    print("where a check's time goes (best of the instrumented rounds; bare: timed outside a "
          "check)")
    print(f"{'elements':>10} | {'check':>9} | {'forwards':>9} | {'bare fwds':>9} | "
          f"{'backward':>9} | {'bare bwd':>9} | {'rest':>9} | {'1.5x floor leaves':>9} | "
          f"page faults")
    for batch, width in sizes:
        print(breakdown(batch, width, args.mode, args.rounds))


if __name__ == "__main__":
    main()
