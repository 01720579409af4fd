"""How many evaluations to spend per array: full, sample, fast (directional) and auto modes.

- full: central differences at every element, 2 evaluations each (plus the checker's 3 setup
  forward passes and 1 backward): a verdict and a failure map per element.
- sample: the same at `samples` seeded elements of every array.
- fast: per array, the derivative along seeded random directions, judged within its estimated
  numerical error, several arrays moving together first; a disagreement is located by group
  testing (`directional`).
- auto (the default): fast first; an array of up to `auto_limit` elements that a direction
  disagrees on is judged element by element (full mode's exact map); a whole check of up to
  AUTO_FULL_OUTRIGHT elements is checked in full.

Every mode turns (array, analytic gradient, an evaluate() callable) into an `ArrayVerdict`; the
checker does not care which ran. Only `numeric` does arithmetic on the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import numeric, rules, streams
from .directional import direction, fast, fast_together
from .elements import ArrayVerdict, Checked, elementwise, sample

# Evaluations the checker spends measuring the objective's noise per array that fails a float64
# check (`noise_probe` with its defaults: 2 step sizes, 2 directions, 5 points on either side),
# and how many of them a first reading of float64's rounding spares (the first step size only).
NOISE_PROBE_EVALUATIONS = 40
FLOAT64_NOISE_EVALUATIONS = 20
# The noise probe's second step size, as a multiple of the first, and how far its two readings
# may differ and still be taken for rounding noise (a kink inside both spans reads
# NOISE_STEP_RATIO times more at the larger step; rounding noise reads the same up to sampling:
# four fourth differences per step size rarely differ by a factor of 3, let alone 10).
NOISE_STEP_RATIO = 100.0
STEADY_NOISE = 10.0
# The probe's first move, relative to each element's magnitude: far below float32's resolution
# of a float64 array's values, so a float64 objective reads its own rounding. COARSE_PROBE_STEPS,
# from about float16's resolution, are for a layer that rounds the finer moves away.
NOISE_PROBE_STEP = 1e-6
COARSE_PROBE_STEPS = (1e-3, 1e-2)

class Plan(Protocol):
    """How evaluations are spent: the mode and its settings, read where they are given
    (`Options` is one)."""

    @property
    def mode(self) -> str: ...  # full, sample, fast or auto
    @property
    def seed(self) -> int: ...  # fixes the elements sampled and the directions taken, per array
    @property
    def samples(self) -> int: ...  # sample mode: elements per array
    @property
    def directions(self) -> int: ...  # fast mode: random directions per array
    @property
    def auto_limit(self) -> int: ...  # auto mode: the largest array a disagreement maps in full

@dataclass(frozen=True)
class NoiseReading:
    """The objective's noise measured along the same directions at two step sizes."""

    near: float  # with each element moved by rel_step of its magnitude per point
    far: float  # with steps NOISE_STEP_RATIO times larger

    @property
    def rounding(self) -> float | None:
        """The rounding noise, or None when the readings disagree.

        Rounding noise does not depend on the step; what a kink or curvature adds to the
        fourth differences grows with it (a kink's in proportion). Only a reading that stays
        within STEADY_NOISE across the NOISE_STEP_RATIO is rounding, and the smaller of the two
        is kept so that the allowance can only err on the strict side.
        """
        lo, hi = sorted((self.near, self.far))
        if hi == 0.0:
            return 0.0
        return lo if hi <= STEADY_NOISE * lo else None


def noise_probe(
    t: Checked,
    evaluate: Callable[[], float],
    rng: np.random.Generator,
    directions: int = 2,
    points: int = 5,
    rel_step: float = NOISE_PROBE_STEP,
    zero_scale: float = numeric.ZERO_ARRAY_SCALE,
    enough: Callable[[float], bool] | None = None,
) -> NoiseReading:
    """Measured noise of the objective when `t` moves: f at x + k*s*d for k = 1..points and
    k = -1..-points along seeded directions d, each element moved by s = rel_step of its
    magnitude (or of the array's RMS, whichever is larger: zeros move too; `zero_scale` for an
    array that is zero everywhere), and again with
    s NOISE_STEP_RATIO times larger; fourth differences of each side's values
    (`numeric.difference_noise`) pooled per step size.

    Each side stays on one side of x, so a kink exactly at x (a ReLU input at 0, zero padding,
    the output of an earlier ReLU) lies in no probe's span; a kink nearby does, and shows as a
    reading that grows with the step (`NoiseReading.rounding`).

    Where `enough(near)` holds for the first reading, the larger steps are not taken (half the
    evaluations) and both readings are the first: for a caller whose decision a kink could
    only make more cautious (a reading of float64's rounding keeps a float64 verdict).
    """
    flat = t.array.reshape(-1)
    base = flat.copy()
    rms = numeric.array_scale(base)
    unit = np.maximum(np.abs(base), rms if rms > 0 else zero_scale) * rel_step
    dirs = [direction(rng, flat.size) * unit for _ in range(directions)]
    readings = []
    for factor in (1.0, NOISE_STEP_RATIO):
        estimates: list[float] = []
        for d in dirs:
            for side in (1.0, -1.0):
                values = []
                try:
                    for k in range(1, points + 1):
                        flat[...] = base + (side * k * factor) * d
                        values.append(evaluate())
                finally:
                    flat[...] = base
                estimates.append(numeric.difference_noise(values))
        # Equal-length series: the RMS of their estimates is the pooled estimate.
        readings.append(float(np.sqrt(np.mean(np.square(estimates)))))
        if enough is not None and enough(readings[0]):
            return NoiseReading(readings[0], readings[0])
    return NoiseReading(readings[0], readings[1])

# The joint probe of a float64 check (`joint_noise`): points per side of x, so 2 * JOINT_POINTS
# evaluations, and 2 * (JOINT_POINTS - 4) fourth differences pooled.
JOINT_POINTS = 8
JOINT_NOISE_EVALUATIONS = 2 * JOINT_POINTS
# The element floor's probe (one element of each array moving) takes more points: an error in
# its reading moves the floor of every element whose gradient is small (a bias in front of
# batchnorm: all of them), where a direction's allowance is one number checked once. 16 fourth
# differences instead of 8: a reading at half the noise goes from about 1 in 50 to 1 in 2,000.
ELEMENT_POINTS = 12
ELEMENT_NOISE_EVALUATIONS = 2 * ELEMENT_POINTS


def joint_noise(
    ts: Sequence[Checked],
    evaluate: Callable[[], float],
    rng: np.random.Generator,
    zero_scale: float = numeric.ZERO_ARRAY_SCALE,
    points: int = JOINT_POINTS,
    rel_step: float = NOISE_PROBE_STEP,
    sparse: bool = False,
) -> float:
    """The objective's rounding noise when every checked array moves at once: f at x + k*s*d
    for k = 1..points and k = -1..-points, each array along its own seeded direction with
    each element moved by `rel_step` of its magnitude (or of its array's RMS, whichever is
    larger; `zero_scale` for an array that is zero everywhere); the fourth differences of
    each side's values (`numeric.difference_noise`), pooled.

    One probe for the whole check (2 * points evaluations), where `noise_probe` spends 40 per
    array: rounding noise comes from the forward computation as a whole, which every move
    reshuffles. Each side stays on one side of x, so a kink exactly at x lies in no span; a
    kink or curvature inside a span only raises the reading, which the caller caps at the
    precision's bound: a reading can make the judging stricter than the bound, never looser.
    Every array is put back bit for bit, whatever `evaluate` does.

    `sparse`: one seeded element of each array moves, not all of them: the noise an element's
    own difference sees. Moving a whole array reshuffles the rounding of every term it
    touches, moving one element only that element's share: on a 1024x1024 affine layer the
    first read 20 times the second, which is what full mode's floor must follow.
    """
    flats = [t.array.reshape(-1) for t in ts]
    bases = [f.copy() for f in flats]
    steps = []
    for base in bases:
        rms = numeric.array_scale(base)
        unit = np.maximum(np.abs(base), rms if rms > 0 else zero_scale) * rel_step
        step = direction(rng, base.size) * unit
        if sparse and base.size > 1:
            keep = int(rng.integers(base.size))
            one = np.zeros_like(step)
            one[keep] = step[keep]
            step = one
        steps.append(step)
    estimates: list[float] = []
    try:
        for side in (1.0, -1.0):
            values = []
            for k in range(1, points + 1):
                for flat, base, step in zip(flats, bases, steps):
                    flat[...] = base + (side * k) * step
                values.append(evaluate())
            estimates.append(numeric.difference_noise(values))
    finally:
        for flat, base in zip(flats, bases):
            flat[...] = base
    return float(np.sqrt(np.mean(np.square(estimates))))


# auto mode checks a whole check of up to this many elements (every array together) in full
# outright: 2 evaluations per element then cost about what the fast verdict's setup, noise
# probe and confirmations cost, and every element is judged.
AUTO_FULL_OUTRIGHT = 64


def array_mode(mode: str, total: int) -> str:
    """The mode the arrays of a check of `total` elements are checked in: auto means full for a
    whole check of up to AUTO_FULL_OUTRIGHT elements, else fast first (with `settle` up to
    auto_limit)."""
    if mode == "auto":
        return "full" if total <= AUTO_FULL_OUTRIGHT else "fast"
    return mode


def run_mode(
    plan: Plan,
    arrays: Sequence[Checked],
    evaluate: Callable[[], float],
    f_zero: float,
    judging: numeric.Judging,
    notes: list[str],
    sharpen: Callable[[numeric.Judging], numeric.Judging] | None = None,
) -> list[ArrayVerdict]:
    """Check every array in the mode `plan.mode`, judged by `judging`; per-array random choices
    come from the seed and the array's name (see `streams.KeyedStreams`). Notes on how verdicts
    were reached are appended to `notes`.

    auto mode is fast mode first for every array (the joint direction, then each array's own
    where it disagrees), with each array of up to `auto_limit` elements whose own direction
    disagrees judged element by element (`fast`'s `settle`): a pass costs fast mode's
    evaluations, a failure gets full mode's exact map. A whole check of up to
    AUTO_FULL_OUTRIGHT elements is checked in full outright.

    `sharpen` gives the judging an array settled element by element is judged by, measured
    only when one is (`fast`'s settle): a passing direction never needs it.

    A step that vanishes next to an array's values is a `GradcheckUsageError` naming the array
    only (its `label` is None): the caller knows the layer.
    """
    total = sum(t.array.size for t in arrays)
    modes = [array_mode(plan.mode, total)] * len(arrays)
    settle = plan.auto_limit if plan.mode == "auto" else 0
    fast_ones = [t for t, mode in zip(arrays, modes) if mode == "fast"]
    keyed: streams.KeyedStreams | None = None
    if any(mode != "full" for mode in modes):
        keyed = streams.KeyedStreams(plan.seed, streams.ARRAY_CHOICES)
    together = None
    directions = plan.directions
    if len(fast_ones) > 1:
        assert keyed is not None
        outcome = fast_together(fast_ones, evaluate, judging, plan.directions, keyed)
        together = outcome.verdicts
        directions = max(directions, outcome.directions)
        if together is not None:
            v0 = together[0]
            notes.append(
                f"fast mode: {', '.join(t.name for t in fast_ones)} were moved together, each "
                "along its own random direction by its own step: the derivative along that "
                f"joint direction, {v0.worst_analytic:.6g} analytic against "
                f"{v0.worst_numeric:.6g} numeric (each of their rows shows it), agreed within "
                f"its estimated numerical error ({v0.estimate:.1e} of it)"
            )
    joint_verdicts = {id(t): v for t, v in zip(fast_ones, together or [])}
    verdicts = []
    settled = []
    for t, mode in zip(arrays, modes):
        if mode in ("full", "sample"):
            if mode == "full":
                v = elementwise(t, evaluate, f_zero, judging)
            else:
                assert keyed is not None
                v = sample(t, evaluate, f_zero, judging, plan.samples, keyed.stream(t.name))
            if v.note:
                notes.append(v.note)
            verdicts.append(v)
            continue
        assert keyed is not None
        joint = joint_verdicts.get(id(t))
        if joint is None:
            v = fast(t, evaluate, f_zero, judging, directions, keyed.stream(t.name), settle,
                     sharpen)
            if v.decided_by == rules.SETTLED.name:
                settled.append(f"{t.name} ({t.array.size})")
            if v.note:
                notes.append(v.note)
        else:
            v = joint
        verdicts.append(v)
    if settled:
        notes.append(
            "mode=auto: a random direction disagreed on "
            f"{', '.join(settled)}: judged element by element (arrays up to auto_limit, "
            f"{plan.auto_limit} elements, get full mode's exact map)"
        )
    return verdicts
