"""Sensitivity to one wrong element chosen uniformly, beside the rounding limit measured.

Run from the repository root:

    python benchmarks/bench_rounding.py                 # 100 seeds per cell
    python benchmarks/bench_rounding.py --quick         # 20 seeds, fewer rounding samples
    python benchmarks/bench_rounding.py --sizes 512 --seeds 50 --json rounding.json

Table 1, detection: an affine layer `x @ W + b` (`example_nn.Linear`, batch 8) with W of 64x64,
512x512 and 1024x1024 (4k, 262k and 1M elements), whose backward multiplies one element of dW by
1 + error (0.1% and 0.01% of that element's own value), the element drawn UNIFORMLY over dW (table
C of bench.py draws it from the upper half of |dW|, which hides the small-gradient elements).
x and W are checked (`params=("W",)`), as in table C; seed s draws the layer, the input and the
element, and is the check's seed. Per mode (default and fast; full only at 4k): checks whose W
row failed, how many of those located the wrong element, and false failures of the correct layer.

Table 2, the rounding limit: for a sample of elements of W, the float64 central difference at
the checker's step (h = 1e-6 x RMS(W), its default relative step) of the objective
sum(out * g), out = x @ W + b, with g a standard-normal cotangent of our own drawing (the
checker's is drawn inside it from its seed, from the same distribution), against the same two
points (the float64 numbers W +- h) evaluated in extended precision (np.longdouble forward and
objective); their difference is the float64 evaluation's actual rounding error. The same for
directional differences along +-(1 + u) directions (u uniform in [0, 1), the checker's kind),
each element moved by h times its direction entry. From the RMS rounding error sigma follow the
smallest relative error of one element that stands K sigma above rounding (K = 1 and --sigmas,
default 5): for an element of median |dW|, and the share of uniformly drawn elements whose 0.1%
and 0.01% errors clear K sigma, element by element and along a direction (where the wrong
element's entry weighs at least 1).
"""

from __future__ import annotations

import os

# numpy's BLAS reads its thread count once, when numpy is loaded: set before any numpy import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _common  # noqa: E402  (puts the repository root on sys.path)
import numpy as np  # noqa: E402

from example_nn import Linear  # noqa: E402
from pytest_gradcheck import check  # noqa: E402

try:  # the multiple of its estimated error a direction may disagree by (for display)
    from pytest_gradcheck.numeric import DIRECTIONAL_SAFETY
except ImportError:  # pragma: no cover - an older checker
    DIRECTIONAL_SAFETY = 4.0

SIZES = (64, 512, 1024)
BATCH = 8
ERRORS = (1e-3, 1e-4)
FULL_LIMIT = 5_000  # full mode only where W has at most this many elements
RELATIVE_STEP = 1e-6  # the checker's default float64 step, times each array's RMS
# Rounding samples per layer (elements, directions) by size, and with --quick.
SAMPLES = {64: (400, 40), 512: (200, 30), 1024: (100, 20)}
QUICK_SAMPLES = {64: (200, 20), 512: (100, 16), 1024: (50, 12)}
LD = np.longdouble


def checker_step() -> tuple[float, str]:
    """The checker's default relative float64 step, read from its numeric core where it is
    still there (not public API: the figure is only printed beside ours)."""
    try:
        from pytest_gradcheck.numeric import PRECISION_DEFAULTS

        return float(PRECISION_DEFAULTS["float64"][0]), "read from pytest_gradcheck.numeric"
    except (ImportError, KeyError, AttributeError, TypeError):
        return RELATIVE_STEP, "pytest_gradcheck.numeric.PRECISION_DEFAULTS not found"


class OneWrongElement(Linear):
    """Linear whose backward multiplies dW.flat[index] by 1 + error."""

    def __init__(self, n: int, rng: np.random.Generator, error: float) -> None:
        super().__init__(n, n, rng=rng)
        self.error = error
        self.index = 0

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"].flat[self.index] *= 1.0 + self.error
        return dx


def make(n: int, seed: int, error: float) -> tuple[Linear, np.ndarray, int]:
    """The seed's layer (wrong when error > 0), its input and the wrong element's flat index:
    the same values for every error."""
    rng = np.random.default_rng(seed)
    layer: Linear = OneWrongElement(n, rng, error) if error else Linear(n, n, rng=rng)
    layer.params["b"] = 0.1 * rng.standard_normal(n)
    x = rng.standard_normal((BATCH, n))
    index = int(rng.integers(n * n))
    if isinstance(layer, OneWrongElement):
        layer.index = index
    return layer, x, index


# -- table 1: detection ------------------------------------------------------------------------


def modes_for(n: int) -> list[str]:
    return ["auto", "fast"] + (["full"] if n * n <= FULL_LIMIT else [])


def detect(n: int, seeds: int) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = []
    for error in (*ERRORS, 0.0):
        for m in modes_for(n):
            cells.append({"weights": n * n, "error": error, "mode": m, "seeds": seeds,
                          "failed": 0, "located": 0, "raised": 0, "decided_by": Counter(),
                          "missed_decided_by": Counter(), "seconds": 0.0})
    by = {(c["error"], c["mode"]): c for c in cells}
    for s in range(seeds):
        for error in (*ERRORS, 0.0):
            layer, x, index = make(n, s, error)
            for m in modes_for(n):
                cell = by[(error, m)]
                t0 = time.perf_counter()
                try:
                    r = check(layer, x, mode=m, seed=s, params=("W",))
                except Exception as exc:  # counted and shown, never passed silently
                    cell["raised"] += 1
                    print(f"!! n={n} error={error} mode={m} seed={s}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    cell["seconds"] += time.perf_counter() - t0
                row = r.entry("W")
                decided = str(getattr(row, "decided_by", None))
                if not error:
                    cell["failed"] += not r.ok
                    continue
                if row.ok:
                    cell["missed_decided_by"][decided] += 1
                    continue
                cell["failed"] += 1
                cell["decided_by"][decided] += 1
                worst = getattr(row, "worst_index", None)
                if worst is not None and len(worst) == 2:
                    cell["located"] += int(np.ravel_multi_index(tuple(worst), (n, n))) == index
    return cells


def detection_table(cells: list[dict[str, Any]]) -> str:
    modes = ["auto", "fast", "full"]
    rows = []
    sizes = sorted({c["weights"] for c in cells})
    for w in sizes:
        n = math.isqrt(w)
        for error in (*ERRORS, 0.0):
            texts = []
            for m in modes:
                c = next((c for c in cells if c["weights"] == w and c["error"] == error
                          and c["mode"] == m), None)
                if c is None:
                    texts.append("n/a")
                    continue
                text = f"{c['failed']}/{c['seeds']}"
                if error:
                    text += f" ({c['located']} at index)"
                if c["raised"]:
                    text += f" ({c['raised']} raised)"
                texts.append(text)
            what = f"{error:.2%} wrong" if error else "correct (false failures)"
            rows.append([f"{n}x{n}", f"{w:,}", what, *texts])
    misses = []
    for c in cells:
        if c["error"] and c["missed_decided_by"]:
            how = ", ".join(f"{k} x{v}" for k, v in c["missed_decided_by"].most_common())
            misses.append(f"  {c['weights']:,} elements, {c['error']:.2%}, {c['mode']}: "
                          f"{sum(c['missed_decided_by'].values())} missed, W row decided by {how}")
    return "\n".join([
        f"Table 1: one element of dW, drawn uniformly, scaled by 1 + error; Linear, batch {BATCH}, "
        "x and W checked",
        _common.table(["W", "elements", "layer", "default", "fast", "full"], rows),
        "Cells: checks whose W row failed / seeds (of those, how many named the wrong element "
        "as the worst); correct rows:\nchecks with any row failed. Full mode only at "
        f"{FULL_LIMIT:,} elements of W or fewer.",
        *(["Misses, by the rule that decided the W row:", *misses] if misses else []),
    ])


# -- table 2: the rounding limit ---------------------------------------------------------------


def objective64(g: np.ndarray, x: np.ndarray, W: np.ndarray, b: np.ndarray) -> float:
    """The checker's objective in float64: float(vdot(g, forward(x)))."""
    return float(np.vdot(g, x @ W + b))


def rounding_one(n: int, seed: int, elements: int, directions: int, step_rel: float
                 ) -> dict[str, Any]:
    """Rounding errors of float64 central differences at one layer: per sampled element and
    per direction, float64 minus the long-double evaluation of the same points."""
    layer, x, _ = make(n, seed, 0.0)
    W, b = layer.params["W"], layer.params["b"]
    rng = np.random.default_rng((seed, 3))
    g = rng.standard_normal((BATCH, n))  # our own cotangent, distributed as the checker's
    rms = float(np.sqrt(np.mean(W * W)))
    h = step_rel * rms
    dW = x.T @ g
    xl, bl, gl = x.astype(LD), b.astype(LD), g.astype(LD)
    Wl = W.astype(LD)
    outl = xl @ Wl + bl
    terms = float(np.sum(np.abs(x @ W + b) * np.abs(g)))

    elem_err, elem_ref = [], []
    for i in rng.choice(n * n, size=min(elements, n * n), replace=False):
        r, c = divmod(int(i), n)
        w0 = W[r, c]
        wp, wm = w0 + h, w0 - h
        W[r, c] = wp
        fp = objective64(g, x, W, b)
        W[r, c] = wm
        fm = objective64(g, x, W, b)
        W[r, c] = w0
        d64 = (fp - fm) / (wp - wm)
        # The same two points in long double: the moved column of out recomputed, the other
        # columns are the base product's (the same numbers), the whole objective summed again.
        col = Wl[:, c].copy()
        values = []
        for w in (wp, wm):
            col[r] = LD(w)
            out = outl.copy()
            out[:, c] = xl @ col + bl[c]
            values.append(np.sum(out * gl))
        dld = (values[0] - values[1]) / (LD(wp) - LD(wm))
        elem_err.append(float(LD(d64) - dld))
        elem_ref.append(float(dld - LD(dW[r, c])))

    dir_err, dir_value = [], []
    for _ in range(directions):
        u = rng.choice([-1.0, 1.0], size=W.shape) * (1.0 + rng.random(W.shape))
        Wp, Wm = W + h * u, W - h * u
        d64 = (objective64(g, x, Wp, b) - objective64(g, x, Wm, b)) / (2 * h)
        fp = np.sum((xl @ Wp.astype(LD) + bl) * gl)
        fm = np.sum((xl @ Wm.astype(LD) + bl) * gl)
        dld = (fp - fm) / (2 * LD(h))
        dir_err.append(float(LD(d64) - dld))
        dir_value.append(float(dld))
    # What the checker allows on this (correct) layer: W's element floor as full mode and an
    # element-by-element settling judge it (sample mode measures the same noise, one element
    # moving, for 2 evaluations a sample: the header's atol is an array of scale 1's), and the
    # allowance of W's direction in the default mode.
    floor = check(layer, x, params=("W",), inputs=False, seed=seed, mode="sample",
                  samples=1).atol / rms
    result = check(layer, x, params=("W",), inputs=False, seed=seed)
    w = result.entry("W")
    allowance = (DIRECTIONAL_SAFETY * w.estimate * max(abs(w.analytic), abs(w.numeric))
                 if w.estimate is not None and w.analytic is not None and w.numeric is not None
                 else float("nan"))
    return {"seed": seed, "h": h, "rms_W": rms, "terms_abs_sum": terms,
            "abs_dW": np.abs(dW).ravel(), "elem_err": elem_err, "elem_ref": elem_ref,
            "dir_err": dir_err, "dir_value": dir_value, "floor": floor,
            "allowance": allowance}


def rms(values: Sequence[float] | np.ndarray) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.sqrt(np.mean(v * v))) if v.size else float("nan")


def rounding(n: int, layers: int, elements: int, directions: int, step_rel: float,
             sigmas: float) -> dict[str, Any]:
    """Pooled over `layers` layers (seeds 0..layers-1): each layer's errors are divided by its
    own median |dW| first, so layers of different gradient scale pool fairly."""
    parts = [rounding_one(n, s, elements, directions, step_rel) for s in range(layers)]
    rel_elem, rel_dir, rel_ref, shares = [], [], [], []
    for p in parts:
        med = float(np.median(p["abs_dW"]))
        rel_elem += [e / med for e in p["elem_err"]]
        rel_dir += [e / med for e in p["dir_err"]]
        rel_ref += [e / med for e in p["elem_ref"]]
        shares.append(p["abs_dW"] / med)
    mags = np.concatenate(shares)  # |dW_i| / median |dW| of all elements of all layers
    s_elem, s_dir = rms(rel_elem), rms(rel_dir)
    eps64 = float(np.finfo(np.float64).eps)
    bound = [8 * eps64 * p["terms_abs_sum"] / p["h"] / float(np.median(p["abs_dW"]))
             for p in parts]
    out: dict[str, Any] = {
        "weights": n * n, "layers": layers, "elements": len(rel_elem), "directions": len(rel_dir),
        "h_over_rms": step_rel,
        "sigma_elem": s_elem, "sigma_dir": s_dir,  # in units of median |dW|
        "sigma_dir_relative": rms([e / v for p in parts
                                   for e, v in zip(p["dir_err"], p["dir_value"])]),
        "reference_error": rms(rel_ref),  # long double vs the analytic dW, same units
        "element_floor_bound": float(np.mean(bound)),  # 8 eps sum|terms| / h, same units
        # the checker's own, with default options (measured noise), same units
        "element_floor": float(np.mean([p["floor"] / float(np.median(p["abs_dW"]))
                                        for p in parts])),
        "direction_allowance": float(np.mean([p["allowance"] / float(np.median(p["abs_dW"]))
                                              for p in parts])),
        "sigmas": sigmas,
    }
    for k in (1.0, sigmas):
        out[f"min_error_median_elem_{k:g}"] = k * s_elem
        out[f"min_error_median_dir_{k:g}"] = k * s_dir
        for error in ERRORS:
            out[f"share_elem_{error:g}_{k:g}"] = float(np.mean(error * mags > k * s_elem))
            out[f"share_dir_{error:g}_{k:g}"] = float(np.mean(error * mags > k * s_dir))
    return out


def rounding_table(rows: list[dict[str, Any]], longdouble_ok: bool) -> str:
    k = rows[0]["sigmas"]
    body = []
    for r in rows:
        n = math.isqrt(r["weights"])
        body.append([
            f"{n}x{n}", f"{r['weights']:,}", f"{r['elements']}/{r['directions']}",
            f"{r['sigma_elem']:.1e}", f"{r['element_floor_bound']:.1e}",
            _common.fmt_x(r["element_floor_bound"] / r["sigma_elem"]),
            _common.fmt_x(r["element_floor"] / r["sigma_elem"]),
            f"{r['sigma_dir']:.1e}", f"{r['sigma_dir_relative']:.0e}",
            _common.fmt_x(r["direction_allowance"] / r["sigma_dir"]),
            f"{r['min_error_median_elem_1']:.1e} / {r[f'min_error_median_elem_{k:g}']:.1e}",
            f"{r['min_error_median_dir_1']:.1e} / {r[f'min_error_median_dir_{k:g}']:.1e}",
            " / ".join(f"{r[f'share_elem_{e:g}_{k:g}']:.1%}" for e in ERRORS),
            " / ".join(f"{r[f'share_dir_{e:g}_{k:g}']:.1%}" for e in ERRORS),
            f"{r['reference_error'] / r['sigma_elem']:.0e}",
        ])
    ld = np.finfo(LD)
    lines = [
        "Table 2: the rounding limit of float64 central differences at the checker's step, "
        "measured against long double",
        _common.table([
            "W", "elements", "samples el/dir", "sigma el", "8eps|t|/h", "bound/sigma",
            "floor/sigma", "sigma dir", "sigma dir/D", "allowance/sigma dir",
            "min err, median el (1/K sig)",
            "min err, median dir (1/K sig)", f"uniform el: 0.1%/0.01% > {k:g} sig",
            f"uniform dir: 0.1%/0.01% > {k:g} sig", "ref/sigma"], body),
        "sigma el: RMS rounding error of one element's central difference (float64 minus long "
        "double at the same points), in units\nof the layer's median |dW|, pooled over "
        f"{rows[0]['layers']} layer(s); 8eps|t|/h: the worst-case element floor 8 * eps * "
        "sum|out * g| / h in the same units,\nand its ratio to sigma; floor/sigma: the checker's "
        "element floor for W (full and sample mode's, and the default's when it judges elements:\n"
        "atol over W's scale, from the noise measured with one element moving) "
        "over sigma; allowance/sigma dir: what W's direction may disagree by (DIRECTIONAL_SAFETY "
        "x its estimated error) over sigma dir;\nsigma dir: the same for a "
        "difference along a +-(1+u) direction (same units: per unit of entry),\nsigma dir/D: "
        "relative to the directional derivative; min err: the smallest relative error of an "
        "element of median |dW|\nthat is 1 and K sigma above rounding; uniform: the share of "
        f"elements drawn uniformly whose 0.1% / 0.01% error is over {k:g} sigma\n(along a "
        "direction, with the element's entry at its least weight, 1); ref/sigma: RMS of long "
        "double minus the analytic dW,\nover sigma el (the reference is that much finer).",
        f"step h = {rows[0]['h_over_rms']:g} x RMS(W); cotangent g: our own standard normal draw "
        "(the checker draws its own, of the same distribution, from its seed); objective "
        "float(vdot(g, x @ W + b)).",
        f"long double: {ld.dtype} with a {ld.nmant + 1}-bit mantissa, eps {float(ld.eps):.2e} "
        f"(float64: 53 bits, eps {float(np.finfo(np.float64).eps):.2e})",
    ]
    if not longdouble_ok:
        lines.append("WARNING: np.longdouble is no wider than float64 on this machine: the "
                     "reference is not more precise than what it measures, so sigma reads 0 "
                     "or noise and the figures of this table mean nothing here.")
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="20 seeds and fewer rounding samples")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 100)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)),
                    help="n of the n x n weights, e.g. 64,512 (default 64,512,1024)")
    ap.add_argument("--layers", type=int, default=2,
                    help="layers the rounding is measured on per size (default 2)")
    ap.add_argument("--sigmas", type=float, default=5.0,
                    help="K: how many RMS rounding errors an error must clear (default 5)")
    ap.add_argument("--no-detection", action="store_true", help="table 2 only")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (20 if args.quick else 100)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    samples = QUICK_SAMPLES if args.quick else SAMPLES
    step_rel, step_source = checker_step()
    longdouble_ok = np.finfo(LD).nmant > np.finfo(np.float64).nmant

    info = _common.environment()
    print(_common.header(info))
    print(f"{seeds} seeds per cell; the checker's default relative step {step_rel:g} "
          f"({step_source})")
    if not longdouble_ok:
        print("WARNING: np.longdouble is float64 here: table 2 has no finer reference")
    print(flush=True)
    start = time.perf_counter()
    cells: list[dict[str, Any]] = []
    if not args.no_detection:
        for n in sizes:
            t0 = time.perf_counter()
            cells += detect(n, seeds)
            print(f"  ({n}x{n}: {time.perf_counter() - t0:.0f} s)", flush=True)
        print(detection_table(cells), f"\n(table 1: {time.perf_counter() - start:.0f} s)\n",
              flush=True)
    mid = time.perf_counter()
    rows = []
    for n in sizes:
        elements, directions = samples.get(n, samples[max(samples)])
        rows.append(rounding(n, args.layers, elements, directions, step_rel, args.sigmas))
    print(rounding_table(rows, longdouble_ok), f"\n(table 2: {time.perf_counter() - mid:.0f} s)")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        for c in cells:
            c["decided_by"] = dict(c["decided_by"])
            c["missed_decided_by"] = dict(c["missed_decided_by"])
        args.json.write_text(json.dumps(
            {"environment": info, "detection": cells, "rounding": rows}, indent=1))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
