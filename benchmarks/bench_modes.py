"""Table B: every mode of check() on five layers, against the floor of full mode and torch.

The floor is the bare work of full mode written as a tight loop, with no state or random-stream
control at all: one forward and one backward, then for every checked element: perturb it up,
forward, the scalar objective float(np.vdot(g, out)), perturb it down, forward, objective, put it
back, store the difference quotient. Anything check(mode="full") spends above that is overhead.

The torch layers are the same functions in float64, with the same parameter values, checked
with torch.autograd.gradcheck over the input and every parameter, as a torch user would write
it: no wrapper in the timed runs; calls are counted in a separate untimed run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from _common import (
    fmt_s,
    fmt_x,
    measure,
    ratio,
    table,
    to_torch,
    torch,
    torch_calls,
    torch_gradcheck,
)

from example_nn import (
    BatchNorm1d,
    Conv2d,
    Dropout,
    Linear,
    ReLU,
    Sequential,
    iter_layers,
)
from pytest_gradcheck import CheckResult, Options, check
from pytest_gradcheck.directional import forget_kept_draws

if torch is not None:
    import torch.nn.functional as F

MODES = ("full", "sample", "fast", "auto")
EPS = 1e-6
QUICK_TORCH_SLOW_LIMIT = 5_000  # torch's slow mode at 25k elements takes ~25 s


@dataclass
class Case:
    """One benchmark layer: the numpy layer and its inputs, and the torch equivalent."""

    name: str
    layer: Any
    inputs: tuple[np.ndarray, ...]
    torch_fn: Callable[..., Any] | None = None
    torch_inputs: tuple[Any, ...] = ()

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


def linear_case(name: str, n_in: int, n_out: int, batch: int) -> Case:
    rng = np.random.default_rng(1)
    layer = Linear(n_in, n_out, rng=rng)
    layer.params["b"] = rng.standard_normal(n_out) * 0.1
    x = rng.standard_normal((batch, n_in))
    case = Case(name, layer, (x,))
    if torch is not None:
        # torch stores the weight as (out, in): the transpose of example_nn's W.
        case.torch_fn = F.linear
        p = layer.params
        case.torch_inputs = (to_torch(x), to_torch(p["W"].T), to_torch(p["b"]))
    return case


def conv_case() -> Case:
    rng = np.random.default_rng(2)
    layer = Conv2d(3, 8, 3, padding=1, rng=rng)
    layer.params["b"] = rng.standard_normal(8) * 0.1
    x = rng.standard_normal((4, 3, 16, 16))
    case = Case("conv2d 3->8 k3 on 4x3x16x16", layer, (x,))
    if torch is not None:
        case.torch_fn = lambda x, w, b: F.conv2d(x, w, b, padding=1)
        case.torch_inputs = (to_torch(x), to_torch(layer.params["W"]), to_torch(layer.params["b"]))
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
        p = layer.params
        case.torch_inputs = (to_torch(x), to_torch(p["gamma"]), to_torch(p["beta"]))
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
        arrays = (x, l1.params["W"].T, l1.params["b"], bn.params["gamma"], bn.params["beta"],
                  l2.params["W"].T, l2.params["b"])
        case.torch_inputs = tuple(to_torch(a) for a in arrays)
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


def _record(results: dict[str, CheckResult], case: Case, mode: str) -> None:
    results[mode] = check(case.layer, *case.inputs, mode=mode)


def run(
    quick: bool, repeats: int, budget: float, use_torch: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Measure every layer; return the printed tables and the raw rows."""
    time_rows, call_rows, raw, verdicts = [], [], [], []
    for case in cases():
        n = case.size
        jobs: dict[str, Callable[[], object]] = {"floor": partial(bare_loop, case)}
        # The timed runs give our call counts too: CheckResult counts them without a wrapper.
        results: dict[str, CheckResult] = {}
        for m in MODES:
            jobs[m] = partial(_record, results, case, m)
        # Each check timed as the first of its kind: kept draws dropped before it, untimed.
        setups: dict[str, Callable[[], object]] = dict.fromkeys(MODES, forget_kept_draws)
        calls: dict[str, tuple[int, int]] = {"floor": (2 * n + 1, 1)}
        skipped = ""
        if use_torch and case.torch_fn is not None:
            for key, fast in (("torch slow", False), ("torch fast", True)):
                if not fast and quick and n > QUICK_TORCH_SLOW_LIMIT:
                    skipped = "torch slow skipped (--quick)"
                    continue
                calls[key] = torch_calls(case.torch_fn, case.torch_inputs, fast)  # untimed
                jobs[key] = partial(torch_gradcheck, case.torch_fn, case.torch_inputs, fast)
        times = measure(jobs, repeats, budget, setups)
        best = {k: min(v) for k, v in times.items()}
        for m, r in results.items():
            if not r.ok:
                print(f"!! {case.name}: mode={m} reported a failure on a correct layer\n{r}")
            calls[m] = (r.forward_calls, r.backward_calls)
        floor, full, fast_t = best["floor"], best["full"], best["fast"]
        tfast, tslow = best.get("torch fast"), best.get("torch slow")
        raw.append({"table": "B", "layer": case.name, "elements": n, "best_s": best,
                    "times_s": times, "calls": {k: list(v) for k, v in calls.items()}})
        time_rows.append([
            case.name, f"{n:,}", fmt_s(floor), fmt_s(full), fmt_x(full / floor),
            fmt_s(best["sample"]), fmt_s(fast_t), fmt_s(best["auto"]), fmt_x(full / fast_t),
            fmt_s(tslow), fmt_s(tfast), fmt_x(ratio(tfast, fast_t)),
        ])
        call_rows.append([
            case.name, f"{n:,}", *(f"{calls[k][0]}/{calls[k][1]}" if k in calls else "n/a"
                                  for k in ("floor", *MODES, "torch slow", "torch fast")),
        ])
        limit = 1.25 if n >= 10_000 else 2.0
        verdict = (f"  {case.name} ({n:,}): full {full / floor:.2f}x its floor (target <= "
                   f"{limit}x: {'met' if full / floor <= limit else 'NOT met'})")
        verdicts.append(verdict + (f"; {skipped}" if skipped else ""))
    d = Options()
    text = "\n".join([
        "Table B: every mode against the floor of full mode (2N+1 forwards + 1 backward) "
        "and torch.autograd.gradcheck",
        table(["layer", "elements", "floor", "full", "full/floor", "sample", "fast", "auto",
               "full/fast", "torch slow", "torch fast", "torch fast/fast"], time_rows),
        "Wall time, best of the rounds; full/floor: full mode's overhead over the bare loop; "
        "torch fast/fast > 1 means ours is faster.",
        "",
        f"Calls made, forward/backward (sample: {d.samples} elements per array, fast: "
        f"{d.directions} direction(s), all arrays along each, auto: fast first, arrays a "
        f"direction disagrees on element by element up to {d.auto_limit:,} elements)",
        table(["layer", "elements", "floor", *MODES, "torch slow", "torch fast"], call_rows),
        "",
        "Full mode over its floor (targets: at most 2x at a few hundred elements, 1.25x from "
        "10,000 up)",
        *verdicts,
    ])
    return text, raw
