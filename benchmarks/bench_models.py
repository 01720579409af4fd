"""Whole models: time and evaluations per mode against a notebook loop, and one wrong element.

Run from the repository root:

    python benchmarks/bench_models.py                  # 50 seeds, 3 timing rounds
    python benchmarks/bench_models.py --quick          # 10 seeds, 2 rounds
    python benchmarks/bench_models.py --seeds 100 --models fcn,rnn --json models.json

The models are `example_nn.models`' FullyConnectedNet (3 hidden layers, batchnorm, dropout from
numpy's global stream, L2), ThreeLayerConvNet and CaptioningRNN (LSTM), at the sizes of the
course notebooks' gradient-check cells, checked as a learner checks them: `check(model, X, y)`
through `loss(X, y) -> (loss, grads)`. Only the public API is used (`check`, `CheckResult.ok`,
`.entry(name)`, `.forward_calls`), so the script runs on any version of the checker.

Table 1, time: the median of interleaved rounds of one `model.loss` call, a check in each mode,
and the notebook loop: `eval_numerical_gradient` below, central differences with h = 1e-5 over
every element of every parameter, each through `model.loss`, as the assignments' notebooks
run it (the FullyConnectedNet there gets a dropout seed, as the notebooks give it, so that its
loss is a function at all).

Table 2, detection: for each seed a fresh model and data; the wrong model multiplies one
gradient element by 1.001 (0.1% of its own value) on every call, the element drawn uniformly
over all parameter elements. Per mode: picks caught (the wrong array's row fails), located (its
worst index is the wrong element), false failures (the correct model, any row failing), and
picks missed by the default mode but caught by full mode. An element whose true gradient is
zero (a bias in front of batchnorm, a unit every sample dropped) carries no error: such picks
are counted apart and left out of the caught column (zero means below 1e-10 of the model's
largest gradient element, under one dropout draw of numpy's stream seeded with the seed).
"""

from __future__ import annotations

import os

# numpy's BLAS reads its thread count once, when numpy is loaded: set before any numpy import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _common  # noqa: E402  (puts the repository root on sys.path)
import numpy as np  # noqa: E402

from example_nn.models import CaptioningRNN, FullyConnectedNet, ThreeLayerConvNet  # noqa: E402
from pytest_gradcheck import check  # noqa: E402

MODES = ("auto", "full", "fast")
ERROR = 1e-3  # the wrong element is off by 0.1% of its own value
NOTEBOOK_H = 1e-5
# A gradient element this small next to the model's largest is zero up to rounding (a bias in
# front of batchnorm): scaling it is no error.
ZERO_GRADIENT = 1e-10

Data = tuple[Any, ...]


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    model: Callable[..., Any]  # (seed, **options) -> model
    data: Callable[[np.random.Generator], Data]
    notebook_options: dict[str, Any]  # how the notebook builds its model (a dropout seed)


SPECS = {
    "fcn": Spec(
        "fcn", "FullyConnectedNet",
        lambda seed, **kw: FullyConnectedNet(seed=seed, **kw),
        lambda rng: (rng.standard_normal((4, 15)), rng.integers(0, 10, 4)),
        {"dropout_seed": 123},
    ),
    "conv": Spec(
        "conv", "ThreeLayerConvNet",
        lambda seed, **kw: ThreeLayerConvNet(seed=seed, **kw),
        lambda rng: (rng.standard_normal((2, 3, 16, 16)), rng.integers(0, 10, 2)),
        {},
    ),
    "rnn": Spec(
        "rnn", "CaptioningRNN (LSTM)",
        lambda seed, **kw: CaptioningRNN(seed=seed, **kw),
        lambda rng: (rng.standard_normal((2, 4)), rng.integers(0, 3, (2, 4))),
        {},
    ),
}


def data_for(spec: Spec, seed: int) -> Data:
    return spec.data(np.random.default_rng((seed, 1)))


def n_params(model: Any) -> int:
    return sum(int(p.size) for p in model.params.values())


# -- the notebook loop -------------------------------------------------------------------------


def eval_numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                            h: float = NOTEBOOK_H) -> np.ndarray:
    """Central differences of f over every element of x, moved in place and put back: the
    helper learners call on each parameter. f(x) is evaluated once first, as theirs does."""
    f(x)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fplus = f(x)
        flat[i] = old - h
        fminus = f(x)
        flat[i] = old
        gflat[i] = (fplus - fminus) / (2 * h)
    return grad


def notebook_loop(model: Any, data: Data) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(analytic, numeric) gradients of every parameter, as the notebooks' check cells get them."""
    _, grads = model.loss(*data)

    def f(_: np.ndarray) -> float:
        return float(model.loss(*data)[0])

    return grads, {k: eval_numerical_gradient(f, p) for k, p in model.params.items()}


def notebook_evaluations(model: Any) -> int:
    """model.loss calls of one notebook loop: one analytic, then 1 + 2n per parameter."""
    return 1 + sum(1 + 2 * int(p.size) for p in model.params.values())


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """The notebooks' relative error: max |a - b| / max(1e-8, |a| + |b|)."""
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


# -- table 1: time and evaluations -------------------------------------------------------------


def time_model(spec: Spec, rounds: int) -> dict[str, Any]:
    model, data = spec.model(0), data_for(spec, 0)
    book = spec.model(0, **spec.notebook_options)
    results: dict[str, Any] = {}

    def checker(mode: str) -> Callable[[], None]:
        def job() -> None:
            results[mode] = check(model, *data, mode=mode, seed=0)
        return job

    bare, loops = _common.looped(lambda: model.loss(*data))
    jobs: dict[str, Callable[[], object]] = {"loss": bare}
    jobs.update({m: checker(m) for m in MODES})
    jobs["notebook"] = lambda: notebook_loop(book, data)
    times = _common.measure(jobs, rounds, budget=float("inf"))
    medians = {k: statistics.median(v) for k, v in times.items()}
    medians["loss"] /= loops

    # Untimed: the notebook loop's own verdict on the correct model, and its call count.
    calls = 0
    inner = book.loss

    def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return inner(*args)

    book.loss = counted
    grads, numeric = notebook_loop(book, data)
    del book.loss
    assert calls == notebook_evaluations(book), (calls, notebook_evaluations(book))
    return {
        "model": spec.label, "params": n_params(model), "rounds": rounds,
        "times": times, "median": medians,
        "evaluations": {**{m: results[m].forward_calls for m in MODES}, "notebook": calls},
        "backward_calls": {m: results[m].backward_calls for m in MODES},
        "ok": {m: results[m].ok for m in MODES},
        "notebook_rel_error": max(rel_error(grads[k], numeric[k]) for k in grads),
    }


def timing_table(rows: list[dict[str, Any]]) -> str:
    fmt, x = _common.fmt_s, _common.fmt_x
    body = []
    for r in rows:
        t, e = r["median"], r["evaluations"]
        body.append([
            f"{r['model']} ({r['params']:,})", fmt(t["loss"]), fmt(t["auto"]), fmt(t["full"]),
            fmt(t["fast"]), fmt(t["notebook"]),
            f"{e['auto']:,} / {e['full']:,} / {e['fast']:,} / {e['notebook']:,}",
            x(_common.ratio(t["notebook"], t["auto"])), x(_common.ratio(t["notebook"], t["fast"])),
            " ".join(f"{m}={'ok' if r['ok'][m] else 'FAIL'}" for m in MODES),
        ])
    return "\n".join([
        "Table 1: one check of a correct model per mode against the notebook loop "
        f"(median of {rows[0]['rounds']} interleaved rounds)",
        _common.table(["model (parameters)", "loss call", "default", "full", "fast",
                       "notebook", "evaluations default/full/fast/notebook",
                       "notebook/default", "notebook/fast", "verdicts"], body),
        "loss call: one model.loss(X, y); notebook: eval_numerical_gradient (h=1e-5) over every "
        "element of every parameter;\nevaluations: model.loss calls (the checks' forward_calls); "
        "notebook/default > 1 means the default check is faster.",
        "notebook loop's max relative error on the correct models: "
        + ", ".join(f"{r['model']} {r['notebook_rel_error']:.1e}" for r in rows),
    ])


# -- table 2: detection ------------------------------------------------------------------------


def wrong_model(spec: Spec, seed: int, key: str, index: int) -> Any:
    """The seed's model with grads[key].flat[index] multiplied by 1 + ERROR on every call."""
    base = type(spec.model(seed))

    class OneWrongElement(base):  # type: ignore[misc, valid-type]
        def loss(self, *args: Any) -> Any:
            out = super().loss(*args)
            if isinstance(out, tuple):
                out[1][key].flat[index] *= 1.0 + ERROR
            return out

    OneWrongElement.__name__ = f"Wrong{base.__name__}"
    model = spec.model(seed)
    model.__class__ = OneWrongElement
    return model


def pick(model: Any, seed: int) -> tuple[str, int]:
    """(parameter, flat index): one element uniform over all parameter elements."""
    sizes = [(k, int(p.size)) for k, p in model.params.items()]
    g = int(np.random.default_rng((seed, 2)).integers(sum(s for _, s in sizes)))
    for k, s in sizes:
        if g < s:
            return k, g
        g -= s
    raise AssertionError("unreachable")


def true_gradient(model: Any, data: Data, seed: int) -> dict[str, np.ndarray]:
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        grads: dict[str, np.ndarray] = model.loss(*data)[1]
        return grads
    finally:
        np.random.set_state(state)


def detect_model(spec: Spec, seeds: int) -> dict[str, Any]:
    per_seed: list[dict[str, Any]] = []
    start = time.perf_counter()
    for s in range(seeds):
        model, data = spec.model(s), data_for(spec, s)
        key, index = pick(model, s)
        grads = true_gradient(model, data, s)
        biggest = max(float(np.max(np.abs(g))) for g in grads.values())
        value = float(grads[key].flat[index])
        wrong = wrong_model(spec, s, key, index)
        shape = model.params[key].shape
        array_rms = float(np.sqrt(np.mean(grads[key] ** 2)))
        row: dict[str, Any] = {"seed": s, "key": key, "index": index, "gradient": value,
                               "gradient_over_rms": abs(value) / array_rms if array_rms else 0.0,
                               "zero": abs(value) <= ZERO_GRADIENT * biggest, "modes": {}}
        for m in MODES:
            cell: dict[str, Any] = {}
            for which, obj in (("correct", model), ("wrong", wrong)):
                t0 = time.perf_counter()
                try:
                    r = check(obj, *data, mode=m, seed=s)
                except Exception as exc:  # counted and shown, never passed silently
                    cell[which] = {"raised": f"{type(exc).__name__}: {exc}"}
                    print(f"!! {spec.label} seed={s} mode={m} {which}: {type(exc).__name__}: {exc}")
                    continue
                entry = r.entry(key)
                worst = getattr(entry, "worst_index", None)
                located = (worst is not None and len(worst) == len(shape)
                           and int(np.ravel_multi_index(tuple(worst), shape)) == index)
                cell[which] = {
                    "ok": r.ok, "row_ok": entry.ok, "located": located,
                    "failed_rows": [e.name for e in r.failed_entries],
                    "decided_by": getattr(entry, "decided_by", None),
                    "forward_calls": r.forward_calls, "seconds": time.perf_counter() - t0,
                }
            row["modes"][m] = cell
        per_seed.append(row)
    shapes = {k: list(p.shape) for k, p in spec.model(0).params.items()}
    return {"model": spec.label, "params": n_params(spec.model(0)), "seeds": seeds,
            "shapes": shapes,
            "seconds": time.perf_counter() - start, "per_seed": per_seed}


def summarise(d: dict[str, Any]) -> dict[str, Any]:
    rows = d["per_seed"]
    counted = [r for r in rows if not r["zero"]]
    out: dict[str, Any] = {"picks": len(rows), "zero_picks": len(rows) - len(counted)}
    for m in MODES:
        wrong = [r["modes"][m].get("wrong", {}) for r in counted]
        correct = [r["modes"][m].get("correct", {}) for r in rows]
        out[m] = {
            "caught": sum(1 for w in wrong if w.get("row_ok") is False),
            "located": sum(1 for w in wrong if w.get("row_ok") is False and w.get("located")),
            "false_failures": sum(1 for c in correct if c.get("ok") is False),
            "raised": sum(1 for r in rows for c in r["modes"][m].values() if "raised" in c),
            "missed": Counter(r["key"] for r, w in zip(counted, wrong) if w.get("row_ok")),
            "mean_forward_wrong": statistics.mean(w["forward_calls"] for w in wrong
                                                  if "forward_calls" in w) if wrong else 0,
        }
    out["default_missed_full_caught"] = [
        (r["seed"], r["key"], r["index"]) for r in counted
        if r["modes"]["auto"].get("wrong", {}).get("row_ok")
        and r["modes"]["full"].get("wrong", {}).get("row_ok") is False
    ]
    out["full_missed_default_caught"] = [
        (r["seed"], r["key"], r["index"]) for r in counted
        if r["modes"]["full"].get("wrong", {}).get("row_ok")
        and r["modes"]["auto"].get("wrong", {}).get("row_ok") is False
    ]
    return out


def shape_of(d: dict[str, Any], key: str) -> tuple[int, ...]:
    shape: tuple[int, ...] = tuple(d["shapes"][key])
    return shape


def detection_table(details: list[dict[str, Any]]) -> str:
    body, notes = [], []
    for d in details:
        s = summarise(d)
        d["summary"] = {k: (dict(v, missed=dict(v["missed"])) if isinstance(v, dict) else v)
                        for k, v in s.items()}
        n = s["picks"] - s["zero_picks"]
        for m in MODES:
            c = s[m]
            body.append([
                f"{d['model']} ({d['params']:,})" if m == MODES[0] else "",
                "default" if m == "auto" else m,
                f"{c['caught']}/{n}", f"{c['located']}/{n}", f"{c['false_failures']}/{s['picks']}",
                f"{c['mean_forward_wrong']:,.0f}",
                str(len(s["default_missed_full_caught"])) if m == "auto" else "",
                str(c["raised"]) if c["raised"] else "",
            ])
            if c["missed"]:
                missed = ", ".join(f"{k} x{v}" for k, v in sorted(c["missed"].items()))
                notes.append(f"{d['model']}, {m}: missed picks by array: {missed}")
        for r in d["per_seed"]:
            if r["zero"]:
                continue
            verdicts = {m: r["modes"][m].get("wrong", {}) for m in MODES}
            if all(v.get("row_ok") is False for v in verdicts.values()):
                continue
            how = ", ".join(
                f"{'default' if m == 'auto' else m} "
                f"{'caught' if v.get('row_ok') is False else 'missed'} ({v.get('decided_by')})"
                for m, v in verdicts.items())
            where = tuple(int(i) for i in np.unravel_index(r["index"], shape_of(d, r["key"])))
            notes.append(f"  {d['model']} seed {r['seed']}: {r['key']}{list(where)}, |g|/RMS "
                         f"{r['gradient_over_rms']:.2g}: {how}")
        if s["zero_picks"]:
            notes.append(f"{d['model']}: {s['zero_picks']} of {s['picks']} picks had a zero "
                         "gradient (no error to catch), left out of caught/located")
        if s["default_missed_full_caught"]:
            notes.append(f"{d['model']}: missed by default, caught by full (seed, array, index): "
                         + ", ".join(map(str, s["default_missed_full_caught"])))
        if s["full_missed_default_caught"]:
            notes.append(f"{d['model']}: missed by full, caught by default (seed, array, index): "
                         + ", ".join(map(str, s["full_missed_default_caught"])))
        notes.append(f"{d['model']}: {d['seconds']:.0f} s for {d['seeds']} seeds")
    return "\n".join([
        f"Table 2: one gradient element off by {ERROR:.1%} of its own value, drawn uniformly over "
        "all parameter elements; a fresh model and data per seed",
        _common.table(["model (parameters)", "mode", "caught", "located", "false failures",
                       "evals (wrong)", "missed by default, caught by full", "raised"], body),
        "caught: checks whose wrong array's row failed; located: its worst index was the wrong "
        "element; false failures: the correct\nmodel at the same seed, any row failing; evals: "
        "mean forward calls of the checks of the wrong model. Below, each pick some mode missed: "
        "the element, its\ntrue gradient over the RMS of its array's, and each mode's verdict on "
        "the array (the rule that decided it).",
        *notes,
    ])


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 seeds and 2 timing rounds")
    ap.add_argument("--seeds", type=int, default=None, help="detection seeds (default 50)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 3)")
    ap.add_argument("--models", default="fcn,conv,rnn", help="subset of fcn,conv,rnn")
    ap.add_argument("--no-timing", action="store_true", help="detection table only")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (10 if args.quick else 50)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SPECS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; pick from {', '.join(SPECS)}")
    specs = [SPECS[k] for k in keys]

    info = _common.environment()
    print(_common.header(info))
    print(f"whole models through loss(X, y); {rounds} timing rounds, {seeds} detection seeds\n",
          flush=True)
    start = time.perf_counter()
    timing: list[dict[str, Any]] = []
    if not args.no_timing:
        timing = [time_model(spec, rounds) for spec in specs]
        print(timing_table(timing), f"\n(table 1: {time.perf_counter() - start:.0f} s)\n",
              flush=True)
    mid = time.perf_counter()
    details = [detect_model(spec, seeds) for spec in specs]
    print(detection_table(details), f"\n(table 2: {time.perf_counter() - mid:.0f} s)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(
            {"environment": info, "timing": timing, "detection": details}, indent=1,
            default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
