"""Cost of each gradcheck mode, against the bare-loop floor and torch.autograd.gradcheck.

Run from the repository root:

    python benchmarks/bench_modes.py            # best of several interleaved repeats
    python benchmarks/bench_modes.py --quick    # fewer repeats; torch slow mode on small layers

Every figure is measured in this one run and process, so the ratios compare like with like on
whatever the machine is doing right now. Each timing is the best of several repeats, and the
repeats of one layer are interleaved (floor, full, sample, ... floor, full, ...) so that a burst of
load from other processes on a shared machine hits all columns alike rather than one.

The floor is the bare work of full mode written as a tight loop, with no state or random-stream
control at all: one forward and one backward, then for every checked element: perturb it up,
forward, the scalar objective float(np.vdot(g, out)), perturb it down, forward, objective, put it
back, store the difference quotient. Anything check(mode="full") spends above that is overhead.

torch is optional (`pip install -e .[bench]`); without it the torch columns read n/a. The torch
layers are the same functions in float64, with the same parameter values, checked with
torch.autograd.gradcheck over the input and every parameter, as a torch user would write it.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Runnable as a plain script from a checkout, without installing the package first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from example_nn import (
    BatchNorm1d,
    Conv2d,
    Dropout,
    Linear,
    ReLU,
    Sequential,
    iter_layers,
)
from pytest_gradcheck import Options, check

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is a benchmark-only extra, never a runtime dependency
    torch = None
    F = None

MODES = ("full", "sample", "fast", "auto")
EPS = 1e-6


@dataclass
class Case:
    """One benchmark layer: the numpy layer and its inputs, and the torch equivalent."""

    name: str
    layer: Any
    inputs: tuple[np.ndarray, ...]
    torch_fn: Callable[..., Any] | None = None
    torch_inputs: tuple[Any, ...] = ()
    torch_prepare: Callable[[], None] | None = None

    def arrays(self) -> list[np.ndarray]:
        """The arrays check() perturbs: float inputs, then every layer's params."""
        out = [x for x in self.inputs if np.issubdtype(x.dtype, np.floating)]
        for leaf in iter_layers(self.layer):
            out.extend(getattr(leaf, "params", {}).values())
        return out

    @property
    def size(self) -> int:
        return sum(a.size for a in self.arrays())


# -- the layers ------------------------------------------------------------------------------


def _t(a: np.ndarray) -> Any:
    """A float64 leaf tensor with a copy of `a`, requiring grad (gradcheck's inputs)."""
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=True)


def linear_case(name: str, n_in: int, n_out: int, batch: int) -> Case:
    rng = np.random.default_rng(1)
    layer = Linear(n_in, n_out, rng=rng)
    layer.params["b"] = rng.standard_normal(n_out) * 0.1
    x = rng.standard_normal((batch, n_in))
    case = Case(name, layer, (x,))
    if torch is not None:
        # torch stores the weight as (out, in): the transpose of example_nn's W.
        case.torch_fn = F.linear
        case.torch_inputs = (_t(x), _t(layer.params["W"].T), _t(layer.params["b"]))
    return case


def conv_case() -> Case:
    rng = np.random.default_rng(2)
    layer = Conv2d(3, 8, 3, padding=1, rng=rng)
    layer.params["b"] = rng.standard_normal(8) * 0.1
    x = rng.standard_normal((4, 3, 16, 16))
    case = Case("conv2d 3->8 k3 on 4x3x16x16", layer, (x,))
    if torch is not None:
        case.torch_fn = lambda x, w, b: F.conv2d(x, w, b, padding=1)
        case.torch_inputs = (_t(x), _t(layer.params["W"]), _t(layer.params["b"]))
    return case


def batchnorm_case() -> Case:
    rng = np.random.default_rng(3)
    layer = BatchNorm1d(64)
    layer.params["gamma"] = 1.0 + 0.1 * rng.standard_normal(64)
    layer.params["beta"] = 0.1 * rng.standard_normal(64)
    x = rng.standard_normal((32, 64))
    case = Case("batchnorm1d 64, batch 32", layer, (x,))
    if torch is not None:
        # Training mode (batch statistics), as check() forces; the running buffers are updated
        # by every call, which does not change the output in training mode.
        rm, rv = torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)
        case.torch_fn = lambda x, g, b: F.batch_norm(x, rm, rv, g, b, training=True,
                                                     momentum=0.1, eps=1e-5)
        case.torch_inputs = (_t(x), _t(layer.params["gamma"]), _t(layer.params["beta"]))
    return case


def network_case() -> Case:
    rng = np.random.default_rng(4)
    l1, bn, l2 = Linear(20, 32, rng=rng), BatchNorm1d(32), Linear(32, 10, rng=rng)
    l1.params["b"] = 0.1 * rng.standard_normal(32)
    l2.params["b"] = 0.1 * rng.standard_normal(10)
    layer = Sequential(l1, bn, ReLU(), Dropout(0.25, rng=np.random.default_rng(5)), l2)
    x = rng.standard_normal((16, 20))
    case = Case("net lin-bn-relu-drop-lin, batch 16", layer, (x,))
    if torch is not None:
        rm, rv = torch.zeros(32, dtype=torch.float64), torch.ones(32, dtype=torch.float64)

        def net(x: Any, w1: Any, b1: Any, g: Any, be: Any, w2: Any, b2: Any) -> Any:
            h = F.linear(x, w1, b1)
            h = F.batch_norm(h, rm, rv, g, be, training=True, momentum=0.1, eps=1e-5)
            h = F.relu(h)
            # The same dropout mask on every call, as check() gets by resetting the stream.
            torch.manual_seed(0)
            h = F.dropout(h, 0.25, training=True)
            return F.linear(h, w2, b2)

        case.torch_fn = net
        case.torch_inputs = (
            _t(x), _t(l1.params["W"].T), _t(l1.params["b"]), _t(bn.params["gamma"]),
            _t(bn.params["beta"]), _t(l2.params["W"].T), _t(l2.params["b"]),
        )
    return case


def cases() -> list[Case]:
    return [
        linear_case("linear 16->8, batch 16", 16, 8, 16),
        network_case(),
        batchnorm_case(),
        conv_case(),
        linear_case("linear 128->128, batch 64", 128, 128, 64),
    ]


# -- what is measured ------------------------------------------------------------------------


def bare_loop(case: Case) -> int:
    """The floor: 2N+1 forwards with the scalar objective and one backward; nothing else.

    Returns the number of forward calls, for the table.
    """
    layer = case.layer
    fwd, inputs = layer.forward, case.inputs
    out = fwd(*inputs)
    g = np.random.default_rng(0).standard_normal(out.shape)
    vdot = np.vdot
    float(vdot(g, out))
    layer.backward(g)
    calls = 1
    for a in case.arrays():
        flat = a.reshape(-1)
        base = flat.copy()
        numeric = np.empty(flat.size)
        # Python floats: writing them into the array is several times cheaper than numpy
        # scalars, so the floor is as low as a hand-written loop gets.
        rows = zip(range(flat.size), base.tolist(), (base + EPS).tolist(), (base - EPS).tolist())
        for i, orig, up, down in rows:
            flat[i] = up
            f_plus = float(vdot(g, fwd(*inputs)))
            flat[i] = down
            f_minus = float(vdot(g, fwd(*inputs)))
            flat[i] = orig
            numeric[i] = (f_plus - f_minus) / (2 * EPS)
        calls += 2 * flat.size
    return calls


def run_check(case: Case, mode: str) -> Any:
    return check(case.layer, *case.inputs, mode=mode)


class TorchCounter:
    """Wraps a torch function to count forward calls and backward passes through its output."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.forward = 0
        self.backward = 0

    def _hook(self, grad: Any) -> None:
        self.backward += 1

    def __call__(self, *args: Any) -> Any:
        self.forward += 1
        out = self.fn(*args)
        if out.requires_grad:
            out.register_hook(self._hook)
        return out


def run_torch(case: Case, fast: bool) -> TorchCounter:
    counter = TorchCounter(case.torch_fn)
    ok = torch.autograd.gradcheck(counter, case.torch_inputs, fast_mode=fast)
    if not ok:  # gradcheck raises by default; this is belt and braces
        raise RuntimeError(f"torch gradcheck failed on {case.name}")
    return counter


@dataclass
class Timing:
    times: list[float] = field(default_factory=list)
    calls: str = ""
    note: str = ""

    @property
    def best(self) -> float | None:
        return min(self.times) if self.times else None


def measure(
    jobs: dict[str, Callable[[], Any]], repeats: int, budget: float
) -> dict[str, list[float]]:
    """Best-of timings, interleaved: every round runs each job once, in the same order.

    A job stops repeating once it has had `repeats` runs or spent `budget` seconds, so a 30 s
    torch run is timed once while a 2 ms one gets every repeat. As in `timeit`, the garbage
    collector is off while a job is timed (and runs between rounds), so a collection
    triggered by one job's garbage is not billed to another.
    """
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        gc.collect()
        for name, job in jobs.items():
            if times[name] and sum(times[name]) >= budget:
                continue
            gc.disable()
            try:
                start = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - start)
            finally:
                gc.enable()
    return times


# -- the table -------------------------------------------------------------------------------


def _s(t: float | None) -> str:
    if t is None:
        return "n/a"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def _x(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    line = "  ".join("-" * w for w in widths)
    fmt = [" | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                      enumerate(zip(row, widths))) for row in (header, *rows)]
    return "\n".join([fmt[0], line.replace("  ", "-+-"), *fmt[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer repeats; torch slow mode only on layers under 5,000 elements")
    ap.add_argument("--repeats", type=int, default=None, help="rounds per layer (default 5, 2)")
    ap.add_argument("--no-torch", action="store_true", help="skip torch even if installed")
    args = ap.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    budget = 4.0 if args.quick else 15.0
    use_torch = torch is not None and not args.no_torch

    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"torch {torch.__version__ if use_torch else 'n/a'}"
          f"{f' ({torch.get_num_threads()} threads)' if use_torch else ''}, "
          f"{os.cpu_count()} cpus; best of up to {repeats} interleaved rounds")
    time_rows, call_rows, summary = [], [], []
    for case in cases():
        n = case.size
        jobs: dict[str, Callable[[], Any]] = {"floor": lambda c=case: bare_loop(c)}
        for m in MODES:
            jobs[m] = lambda c=case, m=m: run_check(c, m)
        calls: dict[str, str] = {"floor": f"{2 * n + 1}/1"}
        for m in MODES:
            r = run_check(case, m)
            if not r.ok:
                print(f"!! {case.name}: mode={m} reported a failure on a correct layer\n{r}")
            calls[m] = f"{r.forward_calls}/{r.backward_calls}"
        skipped = ""
        if use_torch and case.torch_fn is not None:
            for fast in (False, True):
                key = "torch fast" if fast else "torch slow"
                if not fast and args.quick and n > 5000:
                    skipped = "torch slow skipped (--quick)"
                    continue
                c = run_torch(case, fast)
                calls[key] = f"{c.forward}/{c.backward}"
                jobs[key] = lambda c=case, f=fast: run_torch(c, f)
        times = measure(jobs, repeats, budget)
        best = {k: min(v) for k, v in times.items()}
        floor, full, fast_t = best["floor"], best["full"], best["fast"]
        tfast, tslow = best.get("torch fast"), best.get("torch slow")
        time_rows.append([
            case.name, f"{n:,}", _s(floor), _s(full), _x(full / floor), _s(best["sample"]),
            _s(fast_t), _s(best["auto"]), _x(full / fast_t), _s(tslow), _s(tfast),
            _x(_ratio(tfast, fast_t)),
        ])
        call_rows.append([
            case.name, f"{n:,}", calls["floor"], *(calls[m] for m in MODES),
            calls.get("torch slow", "n/a"), calls.get("torch fast", "n/a"),
        ])
        summary.append((case, n, full / floor, full / fast_t, _ratio(tfast, fast_t), skipped))

    print()
    print("Wall time (best of the rounds); full/floor: overhead over the bare loop; "
          "full/fast: speed-up of fast mode; torch fast/fast: >1x means ours is faster")
    print(_table(["layer", "elements", "floor", "full", "full/floor", "sample", "fast", "auto",
                  "full/fast", "torch slow", "torch fast", "torch fast/fast"], time_rows))
    print()
    d = Options()
    print(f"Calls made, forward/backward (sample: {d.samples} elements per array, fast: "
          f"{d.directions} direction(s) per array, auto: full up to {d.auto_limit:,} elements "
          "per array, fast above; floor: 2N+1 forward and 1 backward)")
    print(_table(["layer", "elements", "floor", *MODES, "torch slow", "torch fast"], call_rows))
    print()
    print("Targets")
    for case, n, r_floor, r_fast, r_torch, skipped in summary:
        limit = 1.25 if n >= 10_000 else 2.0
        verdicts = [f"full {r_floor:.2f}x floor (target <= {limit}x): "
                    f"{'met' if r_floor <= limit else 'NOT met'}"]
        if n >= 10_000:
            verdicts.append(f"fast {r_fast:.0f}x faster than full (target >= 100x): "
                            f"{'met' if r_fast >= 100 else 'NOT met'}")
        if r_torch is not None:
            verdicts.append(f"fast vs torch fast_mode {r_torch:.2f}x: "
                            f"{'faster' if r_torch > 1 else 'NOT faster'}")
        if skipped:
            verdicts.append(skipped)
        print(f"  {case.name} ({n:,}): " + "; ".join(verdicts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
