"""False failures on correct layers: how often a right backward is judged wrong.

Run from the repository root:

    python benchmarks/false_failures.py                 # 1,000 seeds per layer and mode
    python benchmarks/false_failures.py --seeds 100 --modes full auto --jobs 2

Every layer of `example_nn` is checked through its `gradcheck_case` (as discovery builds it:
fresh inputs and weights per seed), together with cases the declarations do not cover: ReLU,
leaky ReLU and a ReLU network at inputs of exactly 0 (kinks at the point), max-pool with ties
and near-ties, float32 inputs and parameters, layers computing in float32 inside, batchnorm at
scales 1e-6 and 1e4. Each is checked with seeds 0..N-1 in every mode. A failed check or a usage
error on any of them is a false failure; the table counts them per layer and mode, with the time
taken.

The suite runs `count_false_failures` on a small sample of seeds (tests/test_properties.py).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Runnable as a plain script from a checkout, without installing the package first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from example_nn import (
    BatchNorm1d,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
)
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.discovery import (
    DiscoveredTarget,
    build_case,
    find_targets,
)
from pytest_gradcheck.manager import default_hook

MODES = ("full", "sample", "fast", "auto")

# A case: (layer, inputs, options) built from a seed.
Case = tuple[Any, tuple[Any, ...], dict[str, Any]]


def with_zeros(x: np.ndarray, rng: np.random.Generator, share: float = 0.3) -> np.ndarray:
    """x with about `share` of its elements set to exactly 0 (zero padding, ReLU outputs)."""
    x = x.copy()
    x[rng.random(x.shape) < share] = 0.0
    return x


def relu_at_zero(rng: np.random.Generator) -> Case:
    return ReLU(), (with_zeros(rng.normal(size=(4, 5)), rng),), {}


def leaky_at_zero(rng: np.random.Generator) -> Case:
    return LeakyReLU(0.1), (with_zeros(rng.normal(size=(4, 5)), rng),), {}


def relu_net_at_zero(rng: np.random.Generator) -> Case:
    """ReLUs whose inputs are exactly 0: a zero-padded column in front of the first, a zero row
    meeting a zero bias in front of the second."""
    x = rng.normal(size=(6, 4))
    x[0] = 0.0
    x[:, 0] = 0.0
    net = Sequential(ReLU(), Linear(4, 5, rng=rng), ReLU(), Linear(5, 3, rng=rng))
    return net, (x,), {}


def maxpool_ties(rng: np.random.Generator) -> Case:
    """Exact ties (windows of zeros from an earlier ReLU) and near-ties 1e-9 apart."""
    x = np.maximum(rng.normal(size=(2, 2, 4, 4)), 0.0)
    x[:, :, 0, 1] = x[:, :, 0, 0] + 1e-9
    return MaxPool2d(2, 2), (x,), {}


def linear_float32(rng: np.random.Generator) -> Case:
    layer = Linear(6, 4, rng=rng)
    layer.params = {k: v.astype(np.float32) for k, v in layer.params.items()}
    return layer, (rng.normal(size=(5, 6)).astype(np.float32),), {}


def batchnorm_float32(rng: np.random.Generator) -> Case:
    return BatchNorm1d(5), (rng.normal(size=(8, 5)).astype(np.float32),), {}


class Float32Inside:
    """tanh(x @ W + b) computed in float32 whatever the inputs' dtype, with a float32 output
    (a layer written for speed): the objective's rounding is float32's."""

    def __init__(self, rng: np.random.Generator, n_in: int, n_out: int) -> None:
        self.params = {"W": (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
                       "b": (0.1 * rng.normal(size=n_out)).astype(np.float32)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x.astype(np.float32)
        self.y = np.tanh(self.x @ self.params["W"].astype(np.float32)
                         + self.params["b"].astype(np.float32))
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout.astype(np.float32) * (1 - self.y**2)
        self.grads["W"] = self.x.T @ dz
        self.grads["b"] = dz.sum(axis=0)
        out: np.ndarray = dz @ self.params["W"].T.astype(np.float32)
        return out


def float32_inside(n_in: int, n_out: int, batch: int) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        return Float32Inside(rng, n_in, n_out), (rng.normal(size=(batch, n_in)),), {}

    return make


class HiddenFloat16:
    """(x.astype(float16) @ W.astype(float16)).astype(float64) + b: float64 in and out, float16
    inside (where the checker's finest moves are rounded away)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.params = {"W": rng.normal(size=(8, 4)), "b": rng.normal(size=4)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        inner = x.astype(np.float16) @ self.params["W"].astype(np.float16)
        out: np.ndarray = inner.astype(np.float64) + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads.update(W=self.x.T @ dout, b=dout.sum(axis=0))
        out: np.ndarray = dout @ self.params["W"].T
        return out


def hidden_float16(rng: np.random.Generator) -> Case:
    return HiddenFloat16(rng), (rng.normal(size=(5, 8)),), {}


class RecastEveryForward(Linear):
    """A Linear whose forward stores its weight's float32 cast back on every call."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.params["W"] = self.params["W"].astype(np.float32)
        out: np.ndarray = super().forward(x)
        return out


def recast_every_forward(rng: np.random.Generator) -> Case:
    return RecastEveryForward(6, 4, rng=rng), (rng.normal(size=(5, 6)),), {}


def batchnorm_scaled(scale: float) -> Callable[[np.random.Generator], Case]:
    def make(rng: np.random.Generator) -> Case:
        return BatchNorm1d(5), (rng.normal(size=(8, 5)) * scale,), {}

    return make


EXTRA: dict[str, Callable[[np.random.Generator], Case]] = {
    "ReLU at exact zeros": relu_at_zero,
    "LeakyReLU at exact zeros": leaky_at_zero,
    "ReLU net at exact zeros": relu_net_at_zero,
    "MaxPool2d ties and near-ties": maxpool_ties,
    "Linear float32": linear_float32,
    "BatchNorm1d float32 inputs": batchnorm_float32,
    "tanh layer in float32, 6x4": float32_inside(6, 4, 5),
    "tanh layer in float32, 48x40": float32_inside(48, 40, 16),
    "float16 inside, 8x4": hidden_float16,
    "Linear re-casting W to float32 in forward": recast_every_forward,
    "BatchNorm1d at 1e-6": batchnorm_scaled(1e-6),
    "BatchNorm1d at 1e4": batchnorm_scaled(1e4),
}


@functools.cache
def discovered() -> dict[str, DiscoveredTarget]:
    """example_nn's layers by class name (discovery scans sources: once per process)."""
    return {t.short_name: t for t in find_targets(["example_nn"])}


def layer_names() -> list[str]:
    """Every discovered example_nn layer, then the extra cases."""
    return [*discovered(), *EXTRA]


def build(name: str, seed: int) -> Case:
    """The case `name` for `seed`: discovered layers as discovery builds them."""
    if name in EXTRA:
        return EXTRA[name](np.random.default_rng([seed, 20260]))
    case = build_case(discovered()[name], default_hook(), seed)
    return case.layer, case.inputs, case.options


@dataclass
class Count:
    """False failures of one layer in one mode."""

    checks: int = 0
    failed: int = 0
    errors: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)  # first failures: "seed: first line"

    def add(self, other: Count) -> None:
        self.checks += other.checks
        self.failed += other.failed
        self.errors += other.errors
        self.seconds += other.seconds
        self.examples += other.examples[: max(0, 3 - len(self.examples))]


def count_one(name: str, mode: str, seeds: Iterable[int]) -> Count:
    """Check the correct layer `name` in `mode` once per seed; count what does not pass."""
    count = Count()
    start = time.perf_counter()
    for seed in seeds:
        layer, inputs, options = build(name, seed)
        count.checks += 1
        try:
            result = check(layer, *inputs, **{**options, "seed": seed, "mode": mode})
        except GradcheckUsageError as exc:
            count.errors += 1
            if len(count.examples) < 3:
                count.examples.append(f"{seed}: {exc}")
            continue
        if not result.ok:
            count.failed += 1
            if len(count.examples) < 3:
                count.examples.append(f"{seed}: {result}")
    count.seconds = time.perf_counter() - start
    return count


def _job(args: tuple[str, str, list[int]]) -> tuple[str, str, Count]:
    name, mode, seeds = args
    return name, mode, count_one(name, mode, seeds)


def count_false_failures(
    seeds: Sequence[int],
    modes: Sequence[str] = MODES,
    names: Sequence[str] | None = None,
    jobs: int = 1,
) -> dict[tuple[str, str], Count]:
    """{(layer, mode): Count} over `seeds` for every layer (or `names`) and mode."""
    names = layer_names() if names is None else list(names)
    chunk = max(1, len(seeds) // 8) if jobs > 1 else len(seeds)
    work = [
        (name, mode, list(seeds[i : i + chunk]))
        for name in names
        for mode in modes
        for i in range(0, len(seeds), chunk)
    ]
    counts = {(name, mode): Count() for name in names for mode in modes}
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            done = list(pool.map(_job, work))
    else:
        done = [_job(w) for w in work]
    for name, mode, count in done:
        counts[name, mode].add(count)
    return counts


def table(counts: dict[tuple[str, str], Count], modes: Sequence[str]) -> str:
    names = list(dict.fromkeys(name for name, _ in counts))
    width = max(len(n) for n in names)
    head = f"{'layer':<{width}} | " + " | ".join(f"{m:>16}" for m in modes)
    lines = [head, "-" * len(head)]
    for name in names:
        cells = []
        for m in modes:
            c = counts[name, m]
            cells.append(f"{c.failed + c.errors:>4}/{c.checks:<5} {c.seconds:6.1f}s")
        lines.append(f"{name:<{width}} | " + " | ".join(cells))
    total = [sum(counts[n, m].failed + counts[n, m].errors for n in names) for m in modes]
    checks = [sum(counts[n, m].checks for n in names) for m in modes]
    lines.append("-" * len(head))
    lines.append(f"{'total':<{width}} | " + " | ".join(
        f"{t:>4}/{c:<5}        " for t, c in zip(total, checks)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per layer and mode")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--layers", nargs="+", default=None, help="layer names (default all)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    counts = count_false_failures(range(args.seeds), args.modes, args.layers, args.jobs)
    print(f"false failures (failed checks + usage errors) / checks, and check time, over seeds "
          f"0..{args.seeds - 1}\n")
    print(table(counts, args.modes))
    print(f"\ntotal time {time.perf_counter() - start:.1f}s")
    examples = [(k, e) for k, c in counts.items() for e in c.examples]
    for (name, mode), example in examples[:10]:
        print(f"\n{name} [{mode}] seed {example}")
    return 1 if examples else 0


if __name__ == "__main__":
    raise SystemExit(main())
