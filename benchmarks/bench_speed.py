"""Table A: fast and auto mode on an affine layer from ~1.6k to ~1.3M elements, against torch.

Ours: `check(Linear, x, mode=...)` with default options over x, W and b. Torch:
`torch.autograd.gradcheck(lambda x, W, b: x @ W + b, (x, W, b), fast_mode=True)` on float64
tensors holding the same values, with no wrapper in the timed run (calls are counted in a
separate untimed run). The floor of a mode is the forward passes it made, each at the cost of
a bare `layer.forward(x)`, plus one bare `layer.backward(g)`.
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
    looped,
    measure,
    ratio,
    table,
    to_torch,
    torch_calls,
    torch_gradcheck,
)

from example_nn import Linear
from pytest_gradcheck import CheckResult, check
from pytest_gradcheck.directional import forget_kept_draws

# (batch, in, out): x, W and b together hold about 1.6k, 25k, 330k and 1.3M elements.
SIZES = ((16, 32, 32), (64, 128, 128), (128, 512, 512), (256, 1024, 1024))
MODES = ("fast", "auto")
TORCH_SLOW_LIMIT = 5_000  # torch's slow mode builds the full Jacobian: small layers only


def affine(x: Any, W: Any, b: Any) -> Any:
    return x @ W + b


@dataclass
class Case:
    batch: int
    n_in: int
    n_out: int

    def __post_init__(self) -> None:
        rng = np.random.default_rng(1)
        self.layer = Linear(self.n_in, self.n_out, rng=rng)
        self.layer.params["b"] = 0.1 * rng.standard_normal(self.n_out)
        self.x = rng.standard_normal((self.batch, self.n_in))
        self.cotangent = rng.standard_normal((self.batch, self.n_out))

    @property
    def name(self) -> str:
        return f"{self.batch}x{self.n_in} -> {self.n_out}"

    @property
    def size(self) -> int:
        return self.x.size + self.n_in * self.n_out + self.n_out

    def torch_inputs(self) -> tuple[Any, ...]:
        p = self.layer.params
        return (to_torch(self.x), to_torch(p["W"]), to_torch(p["b"]))


def one_size(
    case: Case, quick: bool, repeats: int, budget: float, use_torch: bool
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Time one size: bare passes, our modes and torch interleaved; one table row per mode."""
    n = case.size
    layer, x, g = case.layer, case.x, case.cotangent
    layer.forward(x)
    fwd_job, fwd_n = looped(lambda: layer.forward(x))
    bwd_job, bwd_n = looped(lambda: layer.backward(g))
    jobs: dict[str, Callable[[], object]] = {"forward": fwd_job, "backward": bwd_job}
    # The timed runs give the call counts too: CheckResult counts them without a wrapper.
    results: dict[str, CheckResult] = {}
    # Timed as the first check of its kind: the draws kept from the previous round are
    # dropped first, untimed (dropping them is the previous check's clean-up, not this one's).
    setups: dict[str, Callable[[], object]] = {}
    for m in MODES:
        def job(m: str = m) -> None:
            results[m] = check(layer, x, mode=m)

        jobs[m] = job
        setups[m] = forget_kept_draws
    torch_counts: dict[str, tuple[int, int]] = {}
    if use_torch:
        t_inputs = case.torch_inputs()
        kinds = [("torch fast", True)] + ([("torch slow", False)] if n <= TORCH_SLOW_LIMIT else [])
        for key, fast in kinds:
            torch_counts[key] = torch_calls(affine, t_inputs, fast)  # untimed, wrapped
            jobs[key] = partial(torch_gradcheck, affine, t_inputs, fast)
    times = measure(jobs, repeats, budget, setups)
    best = {k: min(v) for k, v in times.items()}
    t_fwd, t_bwd = best["forward"] / fwd_n, best["backward"] / bwd_n
    t_torch, t_slow = best.get("torch fast"), best.get("torch slow")
    tf_calls = torch_counts.get("torch fast")
    rows: list[list[str]] = []
    raw: list[dict[str, Any]] = []
    for m in MODES:
        rec: dict[str, Any] = {
            "table": "A", "layer": case.name, "elements": n, "mode": m,
            "bare_forward_s": t_fwd, "bare_backward_s": t_bwd,
            "torch_fast_s": t_torch, "torch_slow_s": t_slow,
            "torch_fast_calls": tf_calls, "torch_slow_calls": torch_counts.get("torch slow"),
            "times_s": times.get(m, []), "torch_fast_times_s": times.get("torch fast", []),
        }
        raw.append(rec)
        r = results[m]
        if not r.ok:
            print(f"!! {case.name}: mode={m} reported a failure on a correct layer\n{r}")
        t = best[m]
        floor = r.forward_calls * t_fwd + t_bwd
        rec.update(best_s=t, ok=r.ok, forward_calls=r.forward_calls,
                   backward_calls=r.backward_calls, floor_s=floor)
        rows.append([
            case.name, f"{n:,}", m, fmt_s(t), f"{r.forward_calls}/{r.backward_calls}",
            f"{t / t_fwd:,.0f}", f"{floor / t_fwd:,.1f}", fmt_x(t / floor),
            fmt_s(t_fwd), fmt_s(t_torch),
            "n/a" if tf_calls is None else f"{tf_calls[0]}/{tf_calls[1]}",
            fmt_x(ratio(t_torch, t)), fmt_s(t_slow),
        ])
    return rows, raw


def run(
    quick: bool, repeats: int, budget: float, use_torch: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Measure every size; return the printed table and the raw rows."""
    rows: list[list[str]] = []
    raw: list[dict[str, Any]] = []
    for batch, n_in, n_out in SIZES:
        r, w = one_size(Case(batch, n_in, n_out), quick, repeats, budget, use_torch)
        rows.extend(r)
        raw.extend(w)
    text = "\n".join([
        "Table A: speed per check, affine layer x @ W + b (example_nn.Linear vs the same "
        "function in torch, float64)",
        table(["batch x in -> out", "elements", "mode", "time", "calls f/b", "fwd-eq",
               "floor fwd-eq", "time/floor", "bare fwd", "torch fast", "torch f/b",
               "torch fast/ours", "torch slow"], rows),
        "time: best wall time of one check; calls f/b: forward/backward calls it made; fwd-eq: "
        "time / bare forward;\nfloor fwd-eq: (forward calls x bare forward + 1 bare backward) / "
        "bare forward; time/floor: time over that floor;\ntorch fast/ours > 1 means ours is "
        f"faster; torch slow (fast_mode=False) timed up to {TORCH_SLOW_LIMIT:,} elements only.",
    ])
    return text, raw
