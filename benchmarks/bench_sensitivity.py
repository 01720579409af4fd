"""Table C: how often each mode catches one wrong element in a Linear layer's weight gradient.

For every seed s: a Linear layer (n x n weights, batch 8) with weights, bias and input drawn
from `default_rng(s)`, checked with `check(layer, x, mode=m, seed=s, params=("W",))`: the
input x and the weights W, so the seed moves the check's own random draws as well as the data.
The wrong layer's backward multiplies one element of dW by (1 + error): the element is drawn
(from the same seed) among those whose |dW| is at least the median |dW| of that backward pass,
so the error is relative to a gradient that is not tiny. A wrong row counts the checks whose W
row failed; the correct layer over the same seeds gives the false failures (any row failing).

x is checked beside W because fast and auto mode move every array they check along one joint
direction: the table then measures what a wrong element of W shows against the other array's
terms too. The bias is left out as it always was, so that the rows compare with earlier runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from _common import table

from example_nn import Linear
from pytest_gradcheck import check
from pytest_gradcheck.result import FAIL

WIDTHS = (8, 64, 256, 1000)  # n x n weights: 64, 4,096, 65,536 and 1,000,000 elements
BATCH = 8
ERRORS = (1e-2, 1e-3, 1e-4)
MODES = ("full", "sample", "fast", "auto")
FULL_LIMIT = 5_000  # full mode costs two forward passes per element


class OneWrongElement(Linear):
    """Linear whose backward scales one element of dW, picked from the upper half of |dW|."""

    # Flat index of the element changed by each backward call: kept on the class, outside
    # the instance state that check() snapshots and restores.
    picked: ClassVar[list[int]] = []

    def __init__(self, n: int, rng: np.random.Generator, error: float) -> None:
        super().__init__(n, n, rng=rng)
        self.error = error
        self.pick = 0.0

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        dW = self.grads["W"]
        mag = np.abs(dW).ravel()
        big = np.flatnonzero(mag >= np.median(mag))
        i = int(big[min(int(self.pick * big.size), big.size - 1)])
        dW.flat[i] *= 1.0 + self.error
        OneWrongElement.picked.append(i)
        return dx


def make(n: int, seed: int, error: float) -> tuple[Linear, np.ndarray]:
    """The layer (wrong when error > 0) and its input for one seed; same values for any error."""
    rng = np.random.default_rng(seed)
    layer: Linear = OneWrongElement(n, rng, error) if error else Linear(n, n, rng=rng)
    layer.params["b"] = 0.1 * rng.standard_normal(n)
    x = rng.standard_normal((BATCH, n))
    pick = rng.random()
    if isinstance(layer, OneWrongElement):
        layer.pick = pick
    return layer, x


def one_row(n: int, error: float, modes: list[str], seeds: dict[str, int]) -> list[dict[str, Any]]:
    """Check each seed's layer in every mode; count failures of the W row and where they point.

    `seeds[mode]` checks are run in each mode; the layer is built once per seed for all modes.
    """
    cells: dict[str, dict[str, Any]] = {
        m: {"table": "C", "weights": n * n, "error": error, "mode": m, "seeds": seeds[m],
            "failed": 0, "located": 0, "raised": 0}
        for m in modes
    }
    for s in range(max(seeds.values())):
        layer, x = make(n, s, error)
        for m in modes:
            if s >= seeds[m]:
                continue
            cell = cells[m]
            OneWrongElement.picked.clear()
            try:
                r = check(layer, x, mode=m, seed=s, params=("W",))
            except Exception as exc:  # counted and shown, never silently passed
                cell["raised"] += 1
                print(f"!! n={n} error={error} mode={m} seed={s}: {type(exc).__name__}: {exc}")
                continue
            row = r.entry("W")
            if not error:
                cell["failed"] += not r.ok  # a false failure on any row
                continue
            if row.status == FAIL:
                cell["failed"] += 1
                picked = OneWrongElement.picked[:1]
                if picked and row.worst_index is not None:
                    flat = int(np.ravel_multi_index(row.worst_index, row.shape))
                    cell["located"] += flat == picked[0]
    return list(cells.values())


def run(seeds: int, full_seeds: int) -> tuple[str, list[dict[str, Any]]]:
    raw: list[dict[str, Any]] = []
    rows: list[list[str]] = []
    for n in WIDTHS:
        modes = [m for m in MODES if not (m == "full" and n * n > FULL_LIMIT)]
        counts = {m: min(seeds, full_seeds) if m == "full" else seeds for m in modes}
        for error in (*ERRORS, 0.0):
            cells = {c["mode"]: c for c in one_row(n, error, modes, counts)}
            raw.extend(cells.values())
            texts = []
            for m in MODES:
                c = cells.get(m)
                if c is None:
                    texts.append("n/a")
                    continue
                texts.append(f"{c['failed']}/{c['seeds']}"
                             + (f" ({c['raised']} raised)" if c["raised"] else ""))
            what = f"{error:.2%} wrong" if error else "correct (false failures)"
            rows.append([f"{n}x{n}", f"{n * n:,}", what, *texts])
    text = "\n".join([
        f"Table C: sensitivity, one wrong element of dW in a Linear layer (batch {BATCH}), "
        "x and W checked",
        table(["W", "elements", "layer", *MODES], rows),
        "Cells: checks that failed on W / seeds run. Wrong rows: one element of dW (drawn from "
        "the upper half of |dW|)\nscaled by 1 + error; higher is better. Correct rows: checks "
        "with any row failed (false failures);\nlower is better. Full mode n/a above "
        f"{FULL_LIMIT:,} elements of W.",
    ])
    return text, raw
