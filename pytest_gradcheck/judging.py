"""The judging in force for one check, running the mode under it, and every pass that only
makes a verdict more trustworthy.

`Judge.judging` is the one place the options meet a precision's defaults. The passes here are
verdict rules (`docs/verdicts.md` lists each with the test that proves a real error still fails
through it):
- `measured_low_precision`: a layer computing in low precision is judged within the noise it
  measurably has, not the precision's worst-case bound (only ever stricter);
- `confirmed_verdicts`: verdicts with kinks or failures are given only after the unperturbed
  point repeats bit for bit (no verdict on noisy numbers);
- `recheck_unreset_streams`: a stream used by some evaluations only makes the numbers
  unreliable: everything is judged again with every stream reset;
- `rejudge_hidden_precision`: a failing array whose measured noise only low precision explains
  is judged again in that precision (the one rule here that can turn a failure into a pass,
  and only within the noise it measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import elements, modes, numeric, rules, streams
from .calls import Calls, Unrepeatable, preparer, repeating
from .errors import GradcheckUsageError
from .options import Options
from .phases import AnalyticPass, CheckedArray, ForwardRecord, NumericPasses, Setup


class Judge:
    """Judging and re-judging for one attempt of one check."""

    def __init__(self, calls: Calls, opts: Options, notes: list[str]) -> None:
        self.calls = calls
        self.opts = opts
        self.notes = notes  # the check's notes: a re-judging says there why it ran
        # auto mode: measures the element floor's noise when an element is first judged
        # (`measured_rounding`); the modes' first run takes it.
        self.sharpen: Callable[[numeric.Judging], numeric.Judging] | None = None

    def judging(
        self,
        precision: str,
        noise: float = 0.0,
        zero_scale: float | None = None,
        arrays: Sequence[CheckedArray] = (),
        measured: bool = False,
    ) -> numeric.Judging:
        """The one place the options meet a precision's defaults: step and rtol as given, else
        the precision's; the tolerance for an objective of rounding noise `noise`; `zero_scale`
        (the output's RMS) is the scale an all-zero array's relative step follows. A given eps
        that cannot measure the derivatives of one of `arrays` is a usage error naming it."""
        opts = self.opts
        j = numeric.judging(precision, noise, step=opts.eps, rtol=opts.rtol, atol=opts.atol,
                            zero_scale=zero_scale, measured=measured)
        for a in arrays if not j.relative else ():  # relative steps always fit
            try:
                j.for_array(a.array, a.name)
            except GradcheckUsageError as exc:
                raise self.calls.usage(str(exc)) from None
        return j

    @staticmethod
    def zero_scale(out: np.ndarray, arrays: Sequence[CheckedArray]) -> float:
        """The scale an all-zero array steps by: the output's, which the array feeds; for a
        one-number output (a loss, which can be 1e-10 near an optimum and says nothing about
        its arguments' scale), that of the checked arrays that are not zero, else 1."""
        if out.ndim:
            return numeric.array_scale(out)
        scales = [numeric.array_scale(a.array) for a in arrays]
        nonzero = [x for x in scales if x > 0.0 and math.isfinite(x)]
        return float(np.sqrt(np.mean(np.square(nonzero)))) if nonzero else 1.0

    # -- running the mode --------------------------------------------------------------------

    def run_modes(
        self,
        arrays: list[CheckedArray],
        evaluate: Callable[[], float],
        f_zero: float,
        judging: numeric.Judging,
        notes: list[str],
        sharpen: Callable[[numeric.Judging], numeric.Judging] | None = None,
    ) -> list[elements.ArrayVerdict]:
        """The mode's verdicts on `arrays` (`modes.run_mode`)."""
        try:
            return modes.run_mode(self.opts, arrays, evaluate, f_zero, judging, notes, sharpen)
        except GradcheckUsageError as exc:
            if exc.label is not None:
                raise
            # The modes' own errors (a vanishing step) name only the array.
            raise self.calls.usage(str(exc)) from None

    def confirmed_verdicts(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        once: Callable[[], float],
        judging: numeric.Judging,
        notes: list[str],
    ) -> list[elements.ArrayVerdict]:
        """Verdict rule "repeats": the mode's verdicts, given only once the
        evaluations proved repeatable. `evaluate` repeats some of its evaluations
        (`calls.repeating`), and verdicts with kinks or failures are confirmed by
        `calls.CONFIRMATIONS` evaluations of the unperturbed point (`once`); a difference
        raises `Unrepeatable`. Cannot turn a failure into a pass."""
        sharpen, self.sharpen = self.sharpen, None
        verdicts = self.run_modes(analytic.arrays, evaluate, analytic.f_zero, judging, notes,
                                  sharpen)
        if any(not v.ok or v.kinks for v in verdicts):
            self.calls.confirm_unperturbed(once, analytic.f_zero)
        return verdicts

    # -- the passes that judge again ---------------------------------------------------------

    def measured_rounding(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        judging: numeric.Judging,
    ) -> numeric.Judging:
        """Verdict rule "measured rounding": a float64 check is judged within the rounding
        noise the objective measurably has, where that is below the precision's bound,
        epsilon times the sum of the objective's |terms| (`modes.joint_noise`,
        JOINT_NOISE_EVALUATIONS per reading): in full and sample mode the noise one element's
        move sees, which sets the element floor; in auto mode the noise of every array moving,
        which sets the directional allowance, and the element one on the first element judged
        (`self.sharpen`, taken by the mode's first run): a passing check never pays for it.

        The bound assumes every term off by a full rounding in the same direction; real
        roundings mostly cancel, and on a 512x512 affine layer the bound stood three orders of
        magnitude above the rounding of an element's difference, hiding errors of 0.1% in
        elements with small gradients. Judged within the measured noise, the element floor
        sits at MEASURED_NOISE_FACTOR and the directional allowance at DIRECTIONAL_SAFETY
        times it. Not in fast mode, which keeps its evaluations to the direction's (its
        allowance stays the bound's); not where the caller gave eps or rtol; not when the
        reading is 0 (moves rounded away: a layer computing in lower precision inside, which
        the hidden-precision rule measures). Below the bound it only tightens the tolerance;
        above it (the "bound" of a loss is epsilon times the loss, blind to the rounding of
        cancelling internal terms) it is taken only when it reads the same with moves
        NOISE_STEP_RATIO times smaller (JOINT_NOISE_EVALUATIONS more), so a kink or curvature
        cannot loosen it: it can pass a mismatch only within the rounding measured at two step
        sizes. `benchmarks/false_failures.py` counts what it costs correct layers."""
        self.sharpen = None
        if (judging.given or self.opts.mode == "fast" or not analytic.arrays
                or not judging.noise > 0):
            return judging
        # Elements only (full, sample, and auto's full mode outright) or directions first.
        total = sum(a.array.size for a in analytic.arrays)
        sparse = self.opts.mode in ("full", "sample") or (
            self.opts.mode == "auto" and total <= modes.AUTO_FULL_OUTRIGHT)

        def reading(rel_step: float, one: bool) -> float:
            rng = streams.stream(self.opts.seed, streams.NOISE_PROBE)  # the same directions
            points = modes.ELEMENT_POINTS if one else modes.JOINT_POINTS
            return modes.joint_noise(analytic.arrays, evaluate, rng, judging.zero_scale,
                                     points=points, rel_step=rel_step, sparse=one)

        measured = reading(modes.NOISE_PROBE_STEP, sparse)
        if not measured > 0.0:
            return judging
        if measured >= judging.noise:
            # Above the bound: the objective sums internal terms far larger than its own (a
            # loss of cancelling terms, a regulariser), whose rounding the bound does not
            # see. Taken only when rounding it is: the same at moves NOISE_STEP_RATIO times
            # smaller (rounding does not depend on the move; a kink's or curvature's share
            # shrinks with it, and the smaller of the two readings is kept).
            # Only float64's rounding: noise that only a lower precision explains is a layer
            # computing in float32 or float16 inside, which the hidden-precision rule judges
            # at that precision's step and rtol (far finer than a float64 floor on its noise).
            if numeric.precision_from_noise(measured, analytic.terms_abs_sum) != "float64":
                return judging
            far = reading(modes.NOISE_PROBE_STEP / modes.NOISE_STEP_RATIO, sparse)
            steady = modes.NoiseReading(measured, far).rounding
            if steady is None or steady <= judging.noise:
                return judging
            self.notes.append(
                f"the objective's rounding noise, measured when the arrays move ({steady:.1e}, "
                "the same at two step sizes), is above the bound epsilon times the sum of its "
                f"terms ({judging.noise:.1e}): it sums internal terms larger than its result; "
                "judged within the measured noise"
            )
            measured = steady
        measured_judging = self.judging(judging.precision, measured, judging.zero_scale,
                                        measured=True)
        if not sparse:
            taken: list[float] = []  # measured once per check, whichever array asks first

            def sharpen(j: numeric.Judging) -> numeric.Judging:
                if not taken:
                    taken.append(reading(modes.NOISE_PROBE_STEP, True))
                one = taken[0]
                # Only ever stricter than what every array moving reads (a stray reading of 0
                # or above it keeps that).
                return j.with_element_noise(one) if 0.0 < one < j.noise else j

            self.sharpen = sharpen
        return measured_judging

    def measured_low_precision(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        judging: numeric.Judging,
        notes: list[str],
    ) -> numeric.Judging:
        """Verdict rule "measured noise": the judging of a layer that computes in float32 (or
        float16), within the objective's measured rounding noise where that is below the
        precision's bound.

        The bound, epsilon times the sum of the objective's |terms|, assumes every term off by
        a full rounding in the same direction; real rounding errors mostly cancel, so it can
        stand 100 times above the noise, and a tolerance built on it (atol = its multiple over
        the step) passed one weight gradient element 30% off on a 48x40 layer. Measured as the
        hidden-precision re-judging measures it (`modes.noise_probe`, NOISE_PROBE_EVALUATIONS
        per array, the same at two step sizes), the largest reading over the arrays, never
        above the bound; if any reading grows with the step (a kink), or the caller gave eps or
        rtol, the bound stays. Only ever tightens the tolerance: cannot pass a failure."""
        if judging.given or not analytic.arrays or not judging.noise > 0:
            return judging
        readings = self.measured_noise(analytic.arrays, evaluate, judging.zero_scale)
        if any(r is None for r in readings):
            return judging
        measured = max(r for r in readings if r is not None)
        if measured >= judging.noise:
            return judging
        notes.append(
            f"the objective's rounding noise in {judging.precision}, measured when each array "
            f"moves ({measured:.1e}, the same at two step sizes), is below the precision's "
            f"bound ({judging.noise:.1e}): judged within the measured noise"
        )
        return self.judging(judging.precision, measured, judging.zero_scale)

    def measured_noise(
        self, arrays: Sequence[CheckedArray], evaluate: Callable[[], float], zero_scale: float,
        rel_step: float = modes.NOISE_PROBE_STEP,
        enough: Sequence[Callable[[float], bool] | None] | None = None,
    ) -> list[float | None]:
        """The objective's rounding noise measured when each array moves (`modes.noise_probe`,
        NOISE_PROBE_EVALUATIONS each, from the check's noise-probe stream, each element moved
        by `rel_step` of its magnitude); None where the reading grows with the step (a kink,
        not rounding). `enough`: per array, as `modes.noise_probe` takes it."""
        rng = streams.stream(self.opts.seed, streams.NOISE_PROBE)
        enough = enough or [None] * len(arrays)
        return [modes.noise_probe(a, evaluate, rng, rel_step=rel_step,
                                  zero_scale=zero_scale, enough=e).rounding
                for a, e in zip(arrays, enough)]

    def _coarse_noise(self, a: CheckedArray, evaluate: Callable[[], float], zero_scale: float
                      ) -> float | None:
        """The noise measured with moves of float16's resolution, then ten times that where
        those were partly rounded away too (a reading that grows with the step)."""
        for rel_step in modes.COARSE_PROBE_STEPS:
            reading = self.measured_noise([a], evaluate, zero_scale, rel_step)[0]
            if reading:
                return reading
        return None

    def recheck_unreset_streams(
        self,
        setup: Setup,
        record: ForwardRecord,
        analytic: AnalyticPass,
        passes: NumericPasses,
    ) -> NumericPasses:
        """Verdict rule "unreset streams": a stream no forward drew from while setting up was
        left alone; if some evaluation drew from it after all, the numbers are unreliable: every
        verdict is given again with every stream reset before every evaluation (where a
        difference is nondeterminism). Costs one more run of the mode, only then."""
        if passes.every_stream_reset or not unreset_stream_changed(setup, record):
            return passes
        self.notes.append("a random stream was used only by some evaluations: rechecked "
                          "with every stream reset before every evaluation")
        once = self.calls.evaluator(
            preparer(record.patch, setup.sources),
            setup.work if not record.mutated else record.call_inputs,
            analytic.cotangent,
            record.loss_terms,
        )
        evaluate = repeating(once)
        try:
            notes: list[str] = []
            verdicts = self.confirmed_verdicts(analytic, evaluate, once, passes.judging, notes)
        except Unrepeatable as exc:
            raise self.calls.unrepeatable(exc) from None
        return NumericPasses(passes.judging, evaluate, verdicts, every_stream_reset=True,
                             notes=notes)

    def rejudge_hidden_precision(
        self, analytic: AnalyticPass, passes: NumericPasses
    ) -> NumericPasses:
        """Verdict rule "hidden precision": a layer can compute in float32 inside and still
        return float64 (x.astype(float32) @ W.astype(float32)), or only where one array enters
        (W.astype(float32) @ x). Its noise then fails a correct backward, so before blaming the
        backward, measure the noise each failing array sees (`modes.noise_probe`, spent on
        failures only) and judge that array again in a lower precision only when all of these
        hold: the noise is rounding (the same at two step sizes, where a kink's grows with the
        step), only that precision's rounding explains it, and it explains the array's
        mismatch. A wrong element far beyond the noise, or a kink read as noise, keeps its
        float64 verdict. Can turn a failure into a pass, within the measured noise only."""
        terms = analytic.terms_abs_sum
        if (
            all(v.ok for v in passes.verdicts)
            or passes.judging.precision != "float64"
            or passes.judging.given
            or not terms > 0  # an objective that is exactly zero has no rounding to measure
        ):
            return passes
        failing = [i for i, v in enumerate(passes.verdicts) if not v.ok]
        zero_scale = passes.judging.zero_scale

        def float64_rounding(near: float) -> bool:
            # The finest moves read float64's rounding: that array computes in float64, and
            # the failure stands whatever a second step size would add (half the probe).
            return near > 0.0 and numeric.precision_from_noise(near, terms) == "float64"

        def resolved(i: int) -> bool:
            # Its worst element's difference saw the move: a layer rounding the array's moves
            # away (float16 inside) reads 0 there, and can read a stray float64-sized noise.
            v = passes.verdicts[i]
            return v.worst_numeric != 0.0 and math.isfinite(v.worst_numeric)

        readings = self.measured_noise(
            [analytic.arrays[i] for i in failing], passes.evaluate, zero_scale,
            enough=[float64_rounding if resolved(i) else None for i in failing])
        # A layer computing in float16 inside rounds the probe's moves away (flat: 0), only
        # some of them (a reading that grows with the step), or enough of them to read low:
        # where the first reading is not float64's or float32's, measured again with moves of
        # float16's resolution. A kink grows with the step there too; curvature far faster.
        readings = [r if r and numeric.precision_from_noise(r, terms) != "float16" else
                    self._coarse_noise(analytic.arrays[i], passes.evaluate, zero_scale) or r
                    for i, r in zip(failing, readings)]
        found: dict[str, list[tuple[int, float]]] = {}  # precision: [(array index, noise)]
        for i, noise in zip(failing, readings):
            a, v = analytic.arrays[i], passes.verdicts[i]
            if noise is None:
                continue
            hidden = numeric.precision_from_noise(noise, terms)
            step = passes.judging.for_array(a.array, a.name).step
            if hidden != "float64" and numeric.noise_explains(
                v.worst_analytic, v.worst_numeric, noise, step
            ):
                found.setdefault(hidden, []).append((i, noise))
        verdicts, judging = list(passes.verdicts), passes.judging
        for hidden, probed in found.items():
            # Each array with the noise measured when it moves: a bound for the whole objective
            # computed in that precision (epsilon times the sum of its |terms|) can stand far
            # above what one float32 weight adds, and a tolerance built on it passes anything.
            agains = []
            for i, noise in probed:
                again = self.judging(hidden, noise, passes.judging.zero_scale)
                verdicts[i] = self.run_modes([analytic.arrays[i]], passes.evaluate,
                                             analytic.f_zero, again, [])[0]
                verdicts[i].decided_by = rules.HIDDEN_PRECISION.name
                agains.append(again)
            if len(probed) == len(analytic.arrays):
                # every array is judged in that precision: the header says so (the loosest)
                judging = max(agains, key=lambda j: j.tolerance.atol)
            names = ", ".join(analytic.arrays[i].name for i, _ in probed)
            noises = ", ".join(f"{noise:.1e}" for _, noise in probed)
            shares = ", ".join(f"{noise / terms:.0e}" for _, noise in probed)
            again = agains[0]
            self.notes.append(
                f"the objective's measured noise when {names} move(s) ({noises}, {shares} of "
                f"its terms, the same at two step sizes) shows the layer computes in {hidden} "
                f"inside although it returns float64: {names} judged again with step "
                f"{again.step:g}{' x scale' if again.relative else ''} and rtol {again.rtol:g}, "
                f"within that measured noise; errors below about {again.rtol:g} go unseen there"
            )
        # The re-judged arrays' notes are their final verdicts'; the others' are kept.
        rejudged = {analytic.arrays[i].name for i in [i for p in found.values() for i, _ in p]}
        notes = [n for n in passes.notes if not any(n.startswith(f"{a}: ") for a in rejudged)]
        notes += [v.note for i, v in enumerate(verdicts)
                  if v.note and analytic.arrays[i].name in rejudged]
        return NumericPasses(judging, passes.evaluate, verdicts, notes=notes)

    def report_steps(self, arrays: Sequence[CheckedArray], judging: numeric.Judging) -> None:
        """With relative steps (no eps given), the header's step is a multiple of each array's
        scale: a note gives each array's own step."""
        if not judging.relative:
            return
        # The step fast mode chose for an array under this judging, else measured again.
        steps = [(a.name, a.steps[judging]) if judging in a.steps else
                 judging.array_steps([(a.name, a.array)])[0] for a in arrays]
        self.notes.append(
            f"step {judging.step:g} relative to each array's scale (its RMS; for an all-zero "
            f"array the output's, {judging.zero_scale:.2g}): "
            + ", ".join(f"{name} {step:.2g}" for name, step in steps)
        )


def unreset_stream_changed(setup: Setup, record: ForwardRecord) -> bool:
    """Whether a stream that is not reset before every evaluation has been drawn from."""
    return any(s.changed() for s in setup.sources if s not in record.used)
