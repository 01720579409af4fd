"""Shared pieces of the benchmark tables: timing, torch call counts, the header, formatting.

Imported by the table modules after `bench.py` has pinned numpy's BLAS to one thread.
"""

from __future__ import annotations

import ctypes
import datetime
import gc
import glob
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Runnable from a checkout without installing the package first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    import torch
except ImportError:  # torch is the benchmark-only extra, never a runtime dependency
    torch = None  # type: ignore[assignment]

__all__ = [
    "KERNEL_VARS", "THREAD_VARS", "TorchCounter", "environment", "fmt_s", "fmt_x", "header",
    "looped", "measure", "ratio", "table", "to_torch", "torch", "torch_calls", "torch_gradcheck",
]

# Variables that set BLAS threads or kernels; bench.py sets the first three before numpy loads.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- timing ----------------------------------------------------------------------------------


def measure(
    jobs: dict[str, Callable[[], object]], repeats: int, budget: float,
    setups: dict[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Interleaved timings: every round runs each job once, in the same order.

    A job stops repeating once it has had `repeats` runs or spent `budget` seconds, so a 20 s
    job is timed once while a 2 ms one gets every round. As in `timeit`, the garbage collector
    is off while a job is timed (it runs between rounds), so a collection triggered by one
    job's garbage is not billed to another. `setups[name]`, when given, runs untimed right
    before each run of that job.
    """
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        gc.collect()
        for name, job in jobs.items():
            if times[name] and sum(times[name]) >= budget:
                continue
            if setups and name in setups:
                setups[name]()
            gc.disable()
            try:
                start = time.perf_counter()
                job()
                times[name].append(time.perf_counter() - start)
            finally:
                gc.enable()
    return times


def looped(fn: Callable[[], object], target: float = 0.02) -> tuple[Callable[[], None], int]:
    """`fn` repeated n times in one job, n chosen so one job takes about `target` seconds.

    For bare forward and backward passes, whose single calls are too short to time alone;
    divide the job's time by n.
    """
    fn()  # warm up caches and lazy set-up
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    n = max(1, min(100_000, round(target / once)))

    def job() -> None:
        for _ in range(n):
            fn()

    return job, n


# -- torch -----------------------------------------------------------------------------------


class TorchCounter:
    """Counts calls of a torch function and backward passes through its output.

    Used only in an untimed run: the wrapper's Python overhead would otherwise be billed to
    torch's side.
    """

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


def torch_gradcheck(fn: Callable[..., Any], inputs: Sequence[Any], fast: bool) -> None:
    """torch.autograd.gradcheck as a torch user calls it: no wrapper around `fn`."""
    assert torch is not None
    if not torch.autograd.gradcheck(fn, tuple(inputs), fast_mode=fast):
        raise RuntimeError("torch.autograd.gradcheck failed on a correct function")


def torch_calls(fn: Callable[..., Any], inputs: Sequence[Any], fast: bool) -> tuple[int, int]:
    """(forward calls, backward passes) of one torch.autograd.gradcheck, counted untimed."""
    counter = TorchCounter(fn)
    torch_gradcheck(counter, inputs, fast)
    return counter.forward, counter.backward


def to_torch(a: np.ndarray) -> Any:
    """A float64 leaf tensor holding a copy of `a`, requiring grad (gradcheck's inputs)."""
    assert torch is not None
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=True)


# -- header ----------------------------------------------------------------------------------


def _blas() -> dict[str, Any]:
    """numpy's OpenBLAS: the kernel it picked and its thread count, where it can be asked."""
    info: dict[str, Any] = {"library": "unknown", "core": "unknown", "threads": None}
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)  # the copy numpy already loaded: dlopen hands it back
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    core = getattr(lib, f"{prefix}get_corename{suffix}", None)
                    threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    if core is None or threads is None:
                        continue
                    core.restype = ctypes.c_char_p
                    threads.restype = ctypes.c_int
                    info = {"library": Path(path).name, "core": core().decode(),
                            "threads": int(threads())}
                    return info
        except OSError:
            continue
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What the figures were measured with, for the header and the JSON file."""
    blas = _blas()
    env = {k: os.environ.get(k) for k in (*THREAD_VARS, *KERNEL_VARS)}
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "env": env,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


def header(info: dict[str, Any]) -> str:
    blas, env = info["blas"], info["env"]
    set_vars = ", ".join(f"{k}={v}" for k, v in env.items() if v is not None)
    unset = ", ".join(k for k in KERNEL_VARS if env.get(k) is None)
    load = info["load_average"]
    return "\n".join([
        f"pytest-gradcheck benchmark, {info['date']}",
        f"python {info['python']}, numpy {info['numpy']} (BLAS {blas['library']}, kernel "
        f"{blas['core']}, {blas['threads']} thread(s)), torch {info['torch'] or 'not installed'}"
        + (f" ({info['torch_threads']} thread(s), set_num_threads(1))" if info["torch"] else ""),
        f"environment: {set_vars}" + (f"; not set: {unset}" if unset else "")
        + " (thread variables set by this script before numpy was imported)",
        f"machine: {info['machine']}, {info['cpu']}, {info['cpus']} cpus, {info['platform']}"
        + (f", load average {load[0]:.2f} at start" if load else ""),
    ])


# -- formatting ------------------------------------------------------------------------------


def fmt_s(t: float | None) -> str:
    if t is None:
        return "n/a"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"


def fmt_x(r: float | None) -> str:
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(c) for c in col) for col in zip(columns, *rows)]
    lines = [
        " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in (columns, *rows)
    ]
    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([lines[0], rule, *lines[1:]])
