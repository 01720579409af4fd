"""One gradient check from start to finish, in five phases (`Checker.run` calls them in order).

Before the phases, the layer is adapted (`LayerAccess`), everything reachable from it and the
inputs is recorded (`Snapshot`), the global random streams are seeded from the check seed and
the private ones recorded; all of it is put back at the end, every piece even if putting back
another one fails.

1. `prepare`: make float64 working copies of the inputs, force training mode, add the random
   streams hooks name, run a first forward (it may create parameters lazily), select the
   parameters and move low-precision ones to float64 copies: the checked arrays
   (`CheckedArray`).
2. `record_forward`: run a decoy forward from other random states on other inputs (so that
   state a backward wrongly takes from an earlier call differs from the evaluations'), take a
   baseline, run a forward from it to learn what a forward pass changes (the `Patch`), which
   random streams it draws from and which inputs it modifies in place.
3. `analytic_pass`: that forward must repeat the first output bit for bit (otherwise one
   more forward from the same state must, or an unreset random source is in use) and serves as
   the analytic pass's forward; then the single backward, whose changes (an optimizer step
   inside backward) are undone.
4. `numeric_passes`: the evaluations chosen by the mode (`modes.py`), each preceded by the patch
   and the resets of the random streams forward draws from, judged by one `numeric.Judging`.
5. `judge`: the passes that judge again when the first verdicts cannot be trusted (a stream used
   only by some evaluations; a layer computing in low precision inside), then the `CheckResult`.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any

import numpy as np

from . import modes, numeric, shapes, streams
from .access import (
    FunctionPairAccess,
    LayerAccess,
    Param,
    arm_gradients,
    layer_label,
    unwritten_gradient_message,
)
from .errors import GradcheckUsageError, NondeterministicLayerError
from .numeric import is_float_array
from .options import Options
from .result import (
    ERROR,
    FAIL,
    INTEGER_INPUT,
    NOT_DIFFERENTIATED,
    NOT_SELECTED,
    OK,
    PASSED_THROUGH,
    CheckResult,
    Entry,
)
from .state import (
    Patch,
    RandomSource,
    SeededGlobalNumpy,
    SeededGlobalPython,
    Snapshot,
    is_protection_fault,
    run_protected,
    same_bits,
)


@dataclass
class CheckedArray:
    """One array to check: a working float64 array perturbed in place, and its gradient."""

    name: str
    kind: str  # "input" or "param"
    array: np.ndarray  # the live array the layer reads
    orig_dtype: str  # the dtype the user's array had
    analytic: np.ndarray | None = None  # backward's gradient, once the analytic pass has run
    # Other names of the same array (tied weights): its gradient is the sum over all of them.
    aliases: list[str] = field(default_factory=list)
    # The step each judging chose for this array, as fast mode recorded it (`report_steps`).
    steps: dict[numeric.Judging, float] = field(default_factory=dict)
    # A read-only copy of the array's bits as the numeric passes start (the baseline's), which
    # fast mode restores from instead of copying the array again; None: the modes copy it.
    saved: np.ndarray | None = None


@dataclass
class Setup:
    """What `Checker.prepare` leaves for the later phases."""

    work: list[Any]  # the inputs forward is called with: float64 copies of the user's arrays
    input_names: list[str]
    sources: list[RandomSource]  # every random stream, reset before each setup forward
    first_out: np.ndarray  # the first forward's output
    params: list[Param]  # the selected, differentiable parameters
    param_arrays: list[np.ndarray]  # their live arrays after promotion, aligned with `params`
    low: list[str]  # dtypes below float64 that parameters kept (they could not be replaced)
    arrays: list[CheckedArray]  # inputs first, then one per distinct parameter array
    input_rows: list[Entry]  # inputs that are not checked: integer, passed through
    param_rows: list[Entry]  # parameters that are not checked: not differentiable, not selected


@dataclass
class ForwardRecord:
    """What one forward pass does, from a second forward from the baseline (`record_forward`)."""

    baseline: Snapshot  # the state before it; the analytic pass ends by restoring it
    out: np.ndarray  # its output
    patch: Patch  # what it changed
    used: list[RandomSource]  # the streams it drew from
    mutated: bool  # it modified an input in place
    prepare: Callable[[], None]  # applies the patch and resets the used streams
    call_inputs: Callable[[], list[Any]]  # one evaluation's inputs (fresh copies if mutated)
    loss_terms: list[Callable[[], float]]  # added to the objective sum(g * out)
    precision: str  # what the output and the parameters kept in low precision allow


@dataclass
class AnalyticPass:
    """The objective and backward's gradients (`analytic_pass`)."""

    cotangent: np.ndarray  # g: the objective is sum(g * out) plus the loss terms
    f_zero: float  # the objective at the unperturbed point
    terms_abs_sum: float  # sum of the objective's |terms|: the scale of its rounding noise
    arrays: list[CheckedArray]  # the arrays to check, each with its analytic gradient
    param_rows: list[Entry]  # `Setup.param_rows` and the parameters backward gave no gradient


@dataclass
class NumericPasses:
    """The verdicts of one run of the mode, and how they were reached."""

    judging: numeric.Judging
    evaluate: Callable[[], float]  # one evaluation of the objective
    verdicts: list[modes.ArrayVerdict]  # aligned with `AnalyticPass.arrays`
    every_stream_reset: bool = False  # every random stream was reset before every evaluation
    # How the modes reached these verdicts; only the final passes' notes reach the report.
    notes: list[str] = field(default_factory=list)


# A layer's nondeterminism can be rare (one call in eight) or small (one bit of one element), so
# two setup passes may agree by chance; the evaluations themselves are watched too:
# - the 1st, 2nd, 4th, 8th, ... evaluation of every run of the mode is made twice, and the two
#   values must be bit-identical (`repeats(n)` more forward passes for n evaluations);
# - before verdicts with kinks or failures are given (what noisy evaluations turn into), the
#   unperturbed point is evaluated CONFIRMATIONS more times, each bit-identical to the analytic
#   pass's objective. A layer noisy in one call out of eight passes them all by chance with
#   probability (7/8)**32 = 1.4%, on top of the repeats.
CONFIRMATIONS = 32


def repeats(evaluations: int) -> int:
    """The forward passes the repeated evaluations add to a run of `evaluations`."""
    return evaluations.bit_length()


class _Unrepeatable(Exception):
    """Two evaluations of the objective at the same point differed."""

    def __init__(self, first: float, second: float, when: str) -> None:
        super().__init__(first, second, when)
        self.first, self.second, self.when = first, second, when


class Restorer:
    """Undo steps, run in reverse order of registration when the block ends.

    Every step runs even if an earlier one raises, and the first error is the one that
    propagates: the check's own if it raised, else the first failing step's.
    """

    def __init__(self) -> None:
        self._steps: list[Callable[[], object]] = []

    def push(self, step: Callable[[], object]) -> None:
        self._steps.append(step)

    def __enter__(self) -> Restorer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        first: BaseException | None = None
        while self._steps:
            step = self._steps.pop()
            try:
                step()
            except BaseException as err:
                if first is None:
                    first = err
        if exc is None and first is not None:
            raise first


class Checker:
    """Runs one check; see the module docstring for the phases."""

    access: LayerAccess
    _protect_bytes: int | None = None  # the attempt's: arrays that big are protected, not copied

    def __init__(self, layer: Any, inputs: Sequence[Any], opts: Options, hook: Any) -> None:
        self.layer = layer
        self.user_inputs = list(inputs)
        self.opts = opts
        self.hook = hook
        self.label: str = opts.label or layer_label(layer)
        self.forward_calls = 0
        self.backward_calls = 0
        self.notes: list[str] = []
        self.param_dtypes: dict[str, str] = {}  # parameter dtypes as the layer had them
        self._input_arrays: list[np.ndarray] = []  # the working copies of the array inputs
        self.plan = modes.Plan(opts.mode, opts.seed, opts.samples, opts.directions,
                               opts.auto_limit)

    # -- the check --------------------------------------------------------------------------

    def run(self) -> CheckResult:
        """The five phases, with the layer, the inputs and every random stream put back."""
        start = time.perf_counter()
        result = run_protected(self._attempt)
        result.elapsed = time.perf_counter() - start
        return result

    def _attempt(self, protect_bytes: int | None) -> CheckResult:
        """One whole check. With `protect_bytes`, arrays that big are made read-only rather
        than copied; a forward that writes into one makes `run_protected` try again without."""
        self.notes, self.forward_calls, self.backward_calls = [], 0, 0
        self._protect_bytes = protect_bytes
        self._untouched: list[tuple[np.ndarray, np.ndarray]] = []
        self._baseline: Snapshot | None = None  # set by record_forward: gradients may be lent
        # Set by the decoy forward for the baseline: its inputs to protect, and earlier copies.
        self._decoy_arrays: list[np.ndarray] = []
        self._decoy_before: Snapshot | None = None  # what protects `_untouched` still
        self._earlier_copies: list[tuple[np.ndarray, np.ndarray]] = []
        try:
            self.access = self._adapt()
            with Restorer() as undo:
                self._undo = undo
                roots = self.access.state_roots()
                original = Snapshot([*roots, *self.user_inputs],
                                    names=[self.label] * len(roots),
                                    protect_bytes=protect_bytes)
                self._original = original
                undo.push(original.restore)
                np_global = SeededGlobalNumpy(self.opts.seed)
                undo.push(np_global.give_back)
                py_global = SeededGlobalPython(self.opts.seed)
                undo.push(py_global.give_back)
                private = self._private_sources(original)
                for src in private:
                    undo.push(src.restore)
                setup = self.prepare([np_global, py_global], private, undo)
                record = self.record_forward(setup)
                analytic = self.analytic_pass(setup, record)
                passes = self.numeric_passes(setup, record, analytic)
                result = self.judge(setup, record, analytic, passes)
        except GradcheckUsageError as exc:
            self._claim(exc)  # every usage error raised during a check concerns this layer
            raise
        return result

    def prepare(
        self,
        global_streams: Sequence[RandomSource],
        private: Sequence[RandomSource],
        undo: Restorer,
    ) -> Setup:
        """Working inputs, training mode, the random streams (those a hook names join the
        private ones, with their restore registered with `undo`), the first forward, and the
        arrays to check."""
        access = self.access
        work = self._working_inputs()
        if isinstance(access, (FunctionPairAccess, shapes.LossOnOutputAccess)):
            access.bind(work)
        forced = access.force_train_mode()
        if forced:
            self.notes.append("forced training mode: " + ", ".join(forced))
        private = list(private)
        for obj in access.random_sources():
            if all(obj is not s.obj for s in private):
                src = RandomSource(obj, "hook")
                undo.push(src.restore)
                private.append(src)
        sources = [*global_streams, *private]

        # First forward: lazily created parameters come to exist.
        _reset(sources)
        try:
            first_out = np.array(self._output(self._forward(work)), copy=True)
        except GradcheckUsageError:
            # A non-finite output from non-finite inputs: name the input, not the output.
            self._refuse_non_finite_inputs(access.input_names(len(work)), held_fixed=())
            raise
        self._input_arrays = [a for a in work if isinstance(a, np.ndarray)]
        params, param_rows = self._select_params(self._not_inputs(access.parameters()))
        # The checker perturbs parameters and zeroes gradients in place: no protection there.
        self._original.release(
            [a for p in params for a in (p.get(), p.grad() if p.grad is not None else None)]
        )
        param_arrays, low = self._promote(params)
        input_names = access.input_names(len(work))
        self._refuse_non_finite_inputs(input_names, held_fixed=access.fixed_inputs())
        arrays, input_rows = self._checked_inputs(work, input_names)
        arrays += self._checked_params(params, param_arrays)
        self._refuse_empty_output(first_out)
        return Setup(work, input_names, sources, first_out, params, param_arrays, low, arrays,
                     input_rows, param_rows)

    def record_forward(self, setup: Setup) -> ForwardRecord:
        """What one forward pass changes, and which random streams it draws from; before it,
        the decoy forward (`_decoy_forward`), whose leftovers the baseline then holds."""
        self._decoy_forward(setup)
        work = setup.work
        loss_terms = self._loss_terms()
        live = [a for a in work if isinstance(a, np.ndarray)]
        # Optional entries (running statistics) that forward updates in place must be patched.
        required = [a for p, a in zip(setup.params, setup.param_arrays) if p.required]
        # Copies the earlier snapshots took are reused where the bits still match; the decoy's
        # input arrays (the checker's own, which the baseline holds only as the decoy's
        # leftovers) are protected rather than copied, whatever their size, as the working
        # inputs were for the decoy: a later forward writing into one faults.
        baseline = Snapshot([*self.access.state_roots(), *work], exclude=[*required, *live],
                            known=self._untouched, reuse=self._earlier_copies,
                            protect=self._decoy_arrays)
        self._undo.push(baseline.unprotect)  # restored by `_undo_backward`, unless one raises
        # The baseline already holds a copy of each working input (a root it records).
        saved_inputs = [_saved_or_copy(baseline, a) for a in live]
        self._baseline = baseline
        _reset(setup.sources)
        out = np.array(self._output(self._forward(work)), copy=True)
        # The arrays the decoy's snapshot still protects cannot have changed.
        before = self._decoy_before
        patch = baseline.patch(before.protected if before is not None else ())
        if before is not None:
            before.unprotect()  # the later phases write into these arrays
        used = [s for s in setup.sources if s.changed()]
        # Bit for bit (NaN payloads and -0.0 count as changes): as cheap as a copy, where an
        # equal_nan comparison costs ~7x that.
        mutated = [i for i, (a, b) in enumerate(zip(live, saved_inputs)) if not same_bits(a, b)]
        if mutated:
            self.notes.append(
                "forward modifies its input in place: every evaluation got its own copy"
            )
            for a, b in zip(live, saved_inputs):
                np.copyto(a, b)
        prepare = self._preparer(patch, used)
        call_inputs = self._input_feeder(work, {id(live[i]) for i in mutated})
        if used:
            self.notes.append(
                "random streams reset before every evaluation: "
                + ", ".join(s.label for s in used)
            )
        precision = numeric.precision_of(out.dtype, *setup.low)
        if precision != "float64":
            j = self.judging(precision)
            self.notes.append(
                f"the layer computes in {precision} even on float64 arrays: step {j.step:g} and "
                f"rtol {j.rtol:g} follow that precision; errors below about {j.rtol:g} go unseen"
            )
        return ForwardRecord(baseline, out, patch, used, bool(mutated), prepare, call_inputs,
                             loss_terms, precision)

    def _decoy_forward(self, setup: Setup) -> None:
        """One forward from other random states and on other inputs, so that the baseline,
        which every evaluation starts from, holds what it left behind: a backward that uses
        state from an earlier call (the previous call's dropout mask or input) then disagrees
        with the evaluations, which all replay the check's own random state and inputs.

        A probe, not a requirement: if it raises or gives a non-finite or differently shaped
        output, everything it changed is put back and the check goes on without it."""
        # Big arrays (at ~1 ms per 8 MB copy), and whatever their size the required
        # parameters (a forward never writes them: the patch leaves them out) and the working
        # inputs (the checker's own; the decoy runs on other inputs), are made read-only for
        # the decoy rather than copied, as in the first snapshot: a decoy writing into one in
        # place faults, and `run_protected` runs the check again with copies everywhere.
        # Optional parameters (running statistics) are copied: forwards update them in place.
        mine = ([a for p, a in zip(setup.params, setup.param_arrays) if p.required]
                + [a for a in setup.work if isinstance(a, np.ndarray)]
                if self._protect_bytes is not None else [])
        before = Snapshot([*self.access.state_roots(), *setup.work],
                          protect_bytes=self._protect_bytes, protect=mine,
                          reuse=self._original.arrays)
        self._undo.push(before.unprotect)  # should anything below raise
        rng = streams.stream(self.opts.seed, streams.DECOY)
        # The first snapshot's copy of a user's input holds the bits of its working copy too
        # (when that is no float64 conversion); the later entries win.
        user_copies = [(w, self._original.saved_array(u))
                       for w, u in zip(setup.work, self.user_inputs)
                       if isinstance(w, np.ndarray) and isinstance(u, np.ndarray)]
        self._earlier_copies = [*[(w, c) for w, c in user_copies if c is not None],
                                *self._original.arrays, *before.arrays]
        # Samples shifted by one place first; a forward that cannot take them (inputs whose
        # order matters: increasing knots) gets the inputs in their own order, scaled by up to
        # 10%, then, for a domain that 10% leaves (probabilities near 1), by up to 0.1%.
        attempts = ((True, 0.1), (False, 0.1), (False, 1e-3))
        for attempt, (shift, spread) in enumerate(attempts, 1):
            inputs = _decoy_inputs(setup.work, rng, shift=shift, spread=spread)
            self._decoy_arrays = ([x for x in inputs if isinstance(x, np.ndarray)]
                                  if self._protect_bytes is not None else [])
            _reset(setup.sources)  # puts back a global generator the first forward swapped
            _scramble(setup.sources, rng)
            self.forward_calls += 1
            try:
                out = np.asarray(self.access.forward(inputs))
                kept = (not isinstance(out, np.matrix) and out.shape == setup.first_out.shape
                        and out.dtype.kind == "f" and bool(np.isfinite(out).all()))
            except Exception as exc:
                if is_protection_fault(exc):
                    raise  # a write into a protected array: `run_protected` tries again
                kept = False
            if kept or attempt == len(attempts):
                break
            before.put_back()  # what the failed attempt changed, the protection kept
        # Protected all through the decoy, so still as the first snapshot copied them when it
        # released them (nothing writes them in between): the baseline reuses those copies.
        protected = {id(a) for a in before.protected}
        self._untouched = [(a, saved) for a, saved in self._original.released
                           if id(a) in protected]
        # The streams are reset by `record_forward`, right before its forward.
        if not kept:
            before.restore()
        # The arrays the baseline reuses untouched stay protected through its forward, which
        # then need not compare them (a big gradient: one pass over it); the others are
        # written from now on.
        before.unprotect(keep=[a for a, _ in self._untouched])
        self._decoy_before = before

    def analytic_pass(self, setup: Setup, record: ForwardRecord) -> AnalyticPass:
        """The objective at the unperturbed point and backward's gradients; what backward
        changed is undone."""
        # Not default_rng(seed) itself: inputs drawn with default_rng(0) would equal the
        # cotangent, making x.T @ g symmetric and hiding transposed gradients (the purpose is
        # mixed into the seed sequence; see `streams`).
        # A 0-d output is a loss: its cotangent is 1.0, so the objective is the loss itself.
        g = (np.ones(()) if record.out.ndim == 0 else
             streams.cotangent(self.opts.seed, record.out.shape))

        # The forward just made from the baseline serves as the analytic pass's forward when it
        # agrees bit for bit with the first one (same random state, so an unreset random source
        # would show). Otherwise (lazy creation drew random numbers, parameters were promoted,
        # inputs are modified in place) one more forward from the same state must agree with it.
        out = record.out
        # Both outputs passed `_output` (finite): a plain comparison, ~7x cheaper than equal_nan.
        if record.mutated or not np.array_equal(setup.first_out, record.out):
            record.prepare()
            out = np.asarray(self._output(self._forward(record.call_inputs())))
            if out.shape != record.out.shape:
                raise self._shape_changed(record.out.shape, out.shape, "at the next call")
            if not np.array_equal(record.out, out):
                self._nondeterministic(record.out, out)
        f_zero = _objective(g, out, record.loss_terms)
        zeroed = self._zero_grads(setup.params)
        unwritten = arm_gradients(setup.params)
        dins = self._backward(g.copy())
        stale = unwritten()
        self._collect_input_grads(setup.arrays, dins, setup.input_names, setup.input_rows)
        param_rows = list(setup.param_rows)
        late = self._late_params(setup.params, param_rows)
        arrays = self._collect_param_grads(
            [*setup.arrays,
             *(CheckedArray(p.name, "param", p.get(), str(p.get().dtype)) for p in late)],
            [*setup.params, *late],
            param_rows,
            stale,
        )
        self._undo_backward(record.baseline, [a for a in arrays if a.kind == "param"], zeroed)
        # Every recorded array now holds the baseline's bits again, and the evaluations put
        # back what a forward changes: the baseline's copies are the arrays' bits from here on.
        for a in arrays:
            a.saved = record.baseline.saved_array(a.array)
        self._refuse_empty_arrays(arrays)
        if not arrays and not any(r.status == ERROR for r in [*setup.input_rows, *param_rows]):
            raise self._usage(
                "nothing to check: no floating-point input (or inputs=False) and "
                "no parameter with a gradient was found; see the supported conventions in the "
                "README, or teach yours with a pytest_gradcheck_layer_parameters hook"
            )
        terms = np.asarray(out * g)  # |out * g| in one temporary: at 1.3M elements each
        terms_abs_sum = (float(np.abs(terms, out=terms).sum())  # costs ~0.3 ms
                         + sum(abs(t()) for t in record.loss_terms))
        return AnalyticPass(g, f_zero, terms_abs_sum, arrays, param_rows)

    @staticmethod
    def _zero_scale(out: np.ndarray, arrays: Sequence[CheckedArray]) -> float:
        """The scale an all-zero array steps by: the output's, which the array feeds; for a
        one-number output (a loss, which can be 1e-10 near an optimum and says nothing about
        its arguments' scale), that of the checked arrays that are not zero, else 1."""
        if out.ndim:
            return numeric.array_scale(out)
        scales = [numeric.array_scale(a.array) for a in arrays]
        nonzero = [x for x in scales if x > 0.0 and math.isfinite(x)]
        return float(np.sqrt(np.mean(np.square(nonzero)))) if nonzero else 1.0

    def numeric_passes(
        self, setup: Setup, record: ForwardRecord, analytic: AnalyticPass
    ) -> NumericPasses:
        """The mode's evaluations, judged with the noise the objective's precision implies
        (for a layer computing in low precision, the noise measured where that is lower)."""
        judging = self.judging(
            record.precision, numeric.objective_noise(analytic.terms_abs_sum, record.precision),
            zero_scale=self._zero_scale(record.out, analytic.arrays), arrays=analytic.arrays,
        )
        once = self._evaluator(
            record.prepare if (record.patch or record.used) else None,
            setup.work if not record.mutated else record.call_inputs,
            analytic.cotangent,
            record.loss_terms,
        )
        evaluate = _repeating(once)
        notes: list[str] = []
        try:
            if record.precision != "float64":
                judging = self.measured_low_precision(analytic, evaluate, judging, notes)
            verdicts = self._judged_modes(analytic, evaluate, once, judging, notes)
        except _Unrepeatable as exc:
            if not self._unreset_stream_changed(setup, record):
                raise self._unrepeatable(exc) from None
            # A stream no setup forward drew from explains it: judged again with every stream
            # reset before every evaluation (where a difference is nondeterminism).
            return self.recheck_unreset_streams(setup, record, analytic,
                                                NumericPasses(judging, evaluate, []))
        return NumericPasses(judging, evaluate, verdicts, notes=notes)

    def measured_low_precision(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        judging: numeric.Judging,
        notes: list[str],
    ) -> numeric.Judging:
        """The judging of a layer that computes in float32 (or float16), within the objective's
        measured rounding noise where that is below the precision's bound.

        The bound, epsilon times the sum of the objective's |terms|, assumes every term off by
        a full rounding in the same direction; real rounding errors mostly cancel, so it can
        stand 100 times above the noise, and a tolerance built on it (atol = its multiple over
        the step) passed one weight gradient element 30% off on a 48x40 layer. Measured as the
        hidden-precision re-judging measures it (`modes.noise_probe`, 40 evaluations per array,
        the same at two step sizes), the largest reading over the arrays, never above the
        bound; if any reading grows with the step (a kink), or an eps or rtol was given, the
        bound stays."""
        if (self.opts.eps is not None or self.opts.rtol is not None
                or not analytic.arrays or not judging.noise > 0):
            return judging
        readings = self._measured_noise(analytic.arrays, evaluate, judging.zero_scale)
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

    def _measured_noise(
        self, arrays: Sequence[CheckedArray], evaluate: Callable[[], float], zero_scale: float
    ) -> list[float | None]:
        """The objective's rounding noise measured when each array moves (`modes.noise_probe`,
        NOISE_PROBE_EVALUATIONS each, from the check's noise-probe stream); None where the
        reading grows with the step (a kink, not rounding)."""
        rng = streams.stream(self.opts.seed, streams.NOISE_PROBE)
        return [modes.noise_probe(a, evaluate, rng, zero_scale=zero_scale).rounding
                for a in arrays]

    def _judged_modes(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        once: Callable[[], float],
        judging: numeric.Judging,
        notes: list[str],
    ) -> list[modes.ArrayVerdict]:
        """The mode's verdicts, given only once the evaluations proved repeatable: `evaluate`
        repeats some of its evaluations (`_repeating`), and verdicts with kinks or failures
        are confirmed by CONFIRMATIONS evaluations of the unperturbed point (`once`)."""
        verdicts = self._run_modes(analytic, evaluate, judging, notes)
        if any(not v.ok or v.kinks for v in verdicts):
            for _ in range(CONFIRMATIONS):
                value = once()
                if not _same_value(value, analytic.f_zero):
                    raise _Unrepeatable(analytic.f_zero, value,
                                        "at the unperturbed point, in the analytic pass and later")
        return verdicts

    def judge(
        self,
        setup: Setup,
        record: ForwardRecord,
        analytic: AnalyticPass,
        passes: NumericPasses,
    ) -> CheckResult:
        """Judge again where the verdicts cannot be trusted, then the result."""
        passes = self.recheck_unreset_streams(setup, record, analytic, passes)
        passes = self.rejudge_hidden_precision(analytic, passes)
        self.notes.extend(passes.notes)
        self.report_steps(analytic, passes.judging)
        j = passes.judging
        entries = [self._entry(a, v) for a, v in zip(analytic.arrays, passes.verdicts)]
        return CheckResult(
            label=self.label,
            seed=self.opts.seed,
            mode=self.opts.mode,
            precision=j.precision,
            eps=j.step,
            rtol=j.rtol,
            atol=j.tolerance.atol,
            entries=[*setup.input_rows, *entries, *analytic.param_rows],
            notes=self.notes,
            forward_calls=self.forward_calls,
            backward_calls=self.backward_calls,
        )

    def recheck_unreset_streams(
        self,
        setup: Setup,
        record: ForwardRecord,
        analytic: AnalyticPass,
        passes: NumericPasses,
    ) -> NumericPasses:
        """A stream no forward drew from while setting up was left alone; if some evaluation
        drew from it after all, the numbers are unreliable: redo with every stream reset."""
        if passes.every_stream_reset or not self._unreset_stream_changed(setup, record):
            return passes
        self.notes.append("a random stream was used only by some evaluations: rechecked "
                          "with every stream reset before every evaluation")
        once = self._evaluator(
            self._preparer(record.patch, setup.sources),
            setup.work if not record.mutated else record.call_inputs,
            analytic.cotangent,
            record.loss_terms,
        )
        evaluate = _repeating(once)
        try:
            notes: list[str] = []
            verdicts = self._judged_modes(analytic, evaluate, once, passes.judging, notes)
        except _Unrepeatable as exc:
            raise self._unrepeatable(exc) from None
        return NumericPasses(passes.judging, evaluate, verdicts, every_stream_reset=True,
                             notes=notes)

    @staticmethod
    def _unreset_stream_changed(setup: Setup, record: ForwardRecord) -> bool:
        """Whether a stream that is not reset before every evaluation has been drawn from."""
        return any(s.changed() for s in setup.sources if s not in record.used)

    def rejudge_hidden_precision(
        self, analytic: AnalyticPass, passes: NumericPasses
    ) -> NumericPasses:
        """A layer can compute in float32 inside and still return float64 (x.astype(float32)
        @ W.astype(float32)), or only where one array enters (W.astype(float32) @ x). Its noise
        then fails a correct backward, so before blaming the backward, measure the noise each
        failing array sees (`modes.noise_probe`, spent on failures only) and judge that array
        again in a lower precision only when all of these hold: the noise is rounding (the same
        at two step sizes, where a kink's grows with the step), only that precision's rounding
        explains it, and it explains the array's mismatch. A wrong element far beyond the
        noise, or a kink read as noise, keeps its float64 verdict."""
        terms = analytic.terms_abs_sum
        if (
            all(v.ok for v in passes.verdicts)
            or passes.judging.precision != "float64"
            or self.opts.eps is not None
            or self.opts.rtol is not None
            or not terms > 0  # an objective that is exactly zero has no rounding to measure
        ):
            return passes
        failing = [i for i, v in enumerate(passes.verdicts) if not v.ok]
        readings = self._measured_noise([analytic.arrays[i] for i in failing], passes.evaluate,
                                        passes.judging.zero_scale)
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
                subset = replace(analytic, arrays=[analytic.arrays[i]])
                verdicts[i] = self._run_modes(subset, passes.evaluate, again, [])[0]
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

    def report_steps(self, analytic: AnalyticPass, judging: numeric.Judging) -> None:
        """With relative steps (no eps given), the header's step is a multiple of each array's
        scale: a note gives each array's own step."""
        if not judging.relative:
            return
        # The step fast mode chose for an array under this judging, else measured again.
        steps = [(a.name, a.steps[judging]) if judging in a.steps else
                 judging.array_steps([(a.name, a.array)])[0] for a in analytic.arrays]
        self.notes.append(
            f"step {judging.step:g} relative to each array's scale (its RMS; for an all-zero "
            f"array the output's, {judging.zero_scale:.2g}): "
            + ", ".join(f"{name} {step:.2g}" for name, step in steps)
        )

    # -- judging ----------------------------------------------------------------------------

    def judging(
        self,
        precision: str,
        noise: float = 0.0,
        zero_scale: float | None = None,
        arrays: Sequence[CheckedArray] = (),
    ) -> numeric.Judging:
        """The one place the options meet a precision's defaults: step and rtol as given, else
        the precision's; the tolerance for an objective of rounding noise `noise`; `zero_scale`
        (the output's RMS) is the scale an all-zero array's relative step follows. A given eps
        that cannot measure the derivatives of one of `arrays` is a usage error naming it."""
        opts = self.opts
        j = numeric.judging(precision, noise, step=opts.eps, rtol=opts.rtol, atol=opts.atol,
                            zero_scale=zero_scale)
        for a in arrays if not j.relative else ():  # relative steps always fit
            try:
                j.for_array(a.array, a.name)
            except GradcheckUsageError as exc:
                raise self._usage(str(exc)) from None
        return j

    def _run_modes(
        self,
        analytic: AnalyticPass,
        evaluate: Callable[[], float],
        judging: numeric.Judging,
        notes: list[str],
    ) -> list[modes.ArrayVerdict]:
        try:
            return modes.run_mode(self.plan, analytic.arrays, evaluate, analytic.f_zero, judging,
                                  notes)
        except GradcheckUsageError as exc:
            if exc.label is not None:
                raise
            # The modes' own errors (a vanishing step) name only the array.
            raise self._usage(str(exc)) from None

    # -- running the layer ------------------------------------------------------------------

    def _usage(self, message: str) -> GradcheckUsageError:
        """A usage error about this layer: the message after its label."""
        return GradcheckUsageError(f"{self.label}: {message}", label=self.label)

    def _claim(self, exc: GradcheckUsageError) -> None:
        """Give `exc` (raised by an adapter or a hook while running this layer) its label, so
        `_run_modes` does not take it for one of the modes' own."""
        if exc.label is None:
            exc.label = self.label

    def _forward(self, inputs: Sequence[Any]) -> Any:
        self.forward_calls += 1
        return self._user_call("forward", self.access.forward, inputs)

    def _backward(self, dout: np.ndarray) -> Sequence[Any]:
        self.backward_calls += 1
        grads: Sequence[Any] = self._user_call("backward", self.access.backward, dout)
        return grads

    def _user_call(self, what: str, fn: Callable[[Any], Any], arg: Any) -> Any:
        """`fn(arg)`, with anything it raises other than a usage error as one naming `what`."""
        try:
            return fn(arg)
        except GradcheckUsageError:
            raise
        except Exception as exc:
            raise self._usage(f"{what} raised {type(exc).__name__}: {exc}") from exc

    def _output(self, out: Any) -> np.ndarray:
        self._refuse_matrix_output(out)
        arr = np.asarray(out)
        if arr.dtype.kind != "f":  # not np.floating (np.issubdtype costs ~6x)
            raise self._usage(
                f"forward returned {arr.dtype} values; the output must be a floating-point array"
            )
        if not np.all(np.isfinite(arr)):
            raise self._usage(
                "forward produced non-finite values (nan or inf) on the given inputs; check the "
                "inputs' scale or the layer's numerics"
            )
        return arr

    def _loss_terms(self) -> list[Callable[[], float]]:
        terms = [(t, "a pytest_gradcheck_loss_terms term") for t in self.access.loss_terms()]
        if self.opts.extra_loss is not None:
            fn = self.opts.extra_loss
            subject = getattr(self.access, "layer", self.layer)
            args = getattr(self.access, "extra_loss_args", lambda: (subject,))
            terms.append(((lambda: fn(*args())), "extra_loss"))
        return [self._guarded_term(t, what) for t, what in terms]

    def _guarded_term(self, term: Callable[[], Any], what: str) -> Callable[[], float]:
        """`term` as a float, with a usage error naming the layer if it raises or returns
        something that is not one number."""
        usage, claim = self._usage, self._claim

        def call() -> float:
            try:
                value = term()
            except GradcheckUsageError as exc:
                claim(exc)
                raise
            except Exception as exc:
                raise usage(
                    f"{what} raised {type(exc).__name__}: {exc}; it must take the layer and "
                    "return one float"
                ) from exc
            return _loss_value(value, what, usage)

        return call

    @staticmethod
    def _preparer(patch: Patch, used: Sequence[RandomSource]) -> Callable[[], None]:
        steps = [patch.compile()] if patch else []
        steps += [s.resetter() for s in used]
        if not steps:
            return lambda: None
        if len(steps) == 1:
            return steps[0]
        tup = tuple(steps)

        def prepare() -> None:
            for f in tup:
                f()

        return prepare

    def _evaluator(
        self,
        prepare: Callable[[], None] | None,
        inputs: list[Any] | Callable[[], list[Any]],
        g: np.ndarray,
        loss_terms: list[Callable[[], float]],
    ) -> Callable[[], float]:
        """One numeric evaluation: undo what forward changes, forward, the scalar objective.

        Full mode calls this 2N times, so everything above the bare forward pass and
        float(np.vdot(g, out)) is overhead: this is `_forward` and `_objective` inlined, with
        no call at all for an empty patch (prepare=None) or for inputs that need no fresh copy
        (`inputs` a list rather than a feeder).
        """
        forward = self.access.forward
        vdot = np.vdot
        terms = tuple(loss_terms)
        feeder = inputs if callable(inputs) else None
        fixed: list[Any] = [] if callable(inputs) else inputs
        ndarray, shape, later_output = np.ndarray, g.shape, self._later_output

        def evaluate() -> float:
            if prepare is not None:
                prepare()
            self.forward_calls += 1
            try:
                out = forward(fixed if feeder is None else feeder())
            except GradcheckUsageError as exc:
                self._claim(exc)
                raise
            except Exception as exc:
                raise self._usage(f"forward raised {type(exc).__name__}: {exc}") from exc
            if type(out) is not ndarray or out.shape != shape:
                out = later_output(out, shape)
            total = float(vdot(g, out))
            for term in terms:
                total += term()
            return total

        return evaluate

    def _later_output(self, out: Any, shape: tuple[int, ...]) -> np.ndarray:
        """An evaluation's output that is not an ndarray of the setup passes' shape: a plain
        number or sequence is taken as an array; a changed shape or an np.matrix is refused
        (non-finite values are left to the verdict, as in an ndarray output)."""
        self._refuse_matrix_output(out)
        arr = np.asarray(out)
        if arr.shape != shape:
            raise self._shape_changed(shape, arr.shape, "during the numeric evaluations")
        return arr

    def _refuse_matrix_output(self, out: Any) -> None:
        if isinstance(out, np.matrix):
            raise self._usage(
                "forward returned an np.matrix; return a plain ndarray (np.asarray(...)): "
                "a matrix keeps two dimensions under indexing and reduction, so the checker "
                "cannot treat it as the layer's output"
            )

    def _shape_changed(
        self, before: tuple[int, ...], after: tuple[int, ...], when: str
    ) -> GradcheckUsageError:
        return self._usage(
            f"forward's output changed shape from {before} to {after} {when}, on inputs of "
            "the same shape; the check compares the outputs of repeated calls, so the output's "
            "shape must depend only on the inputs' shapes (not on a call counter or a cache)"
        )

    @staticmethod
    def _input_feeder(work: list[Any], mutated: set[int]) -> Callable[[], list[Any]]:
        if not mutated:
            return lambda: work
        return lambda: [x.copy() if id(x) in mutated else x for x in work]

    # -- preparing --------------------------------------------------------------------------

    def _adapt(self) -> LayerAccess:
        access: LayerAccess | None = self.hook.pytest_gradcheck_adapt(
            obj=self.layer, label=self.opts.label, hook=self.hook
        )
        if access is None and isinstance(self.layer, type) and callable(
            getattr(self.layer, "forward", None)
        ):
            raise self._usage(
                f"got the class {self.layer.__name__}, not a layer: pass an "
                f"instance, e.g. {self.layer.__name__}(...)"
            )
        if access is None:
            raise self._usage(
                f"cannot check a {type(self.layer).__name__}: a layer needs "
                "forward() and backward() methods, a cs231n-style pair is passed as "
                "(forward_fn, backward_fn); for other shapes implement the "
                "pytest_gradcheck_adapt hook"
            )
        access = shapes.apply_options(access, self.opts.loss, self.opts.wrt)
        if self.opts.label:
            access.label = self.opts.label
        self.label = access.label
        return access

    def _private_sources(self, snap: Snapshot) -> list[RandomSource]:
        seen: set[int] = set()
        sources = []
        extra = [(o, "registered") for o in self.opts.random_sources]
        for obj, label in [*snap.random_objects, *extra]:
            if id(obj) not in seen:
                seen.add(id(obj))
                sources.append(RandomSource(obj, label))
        return sources

    def _working_inputs(self) -> list[Any]:
        names = self.access.input_names(len(self.user_inputs))
        for name, x in zip(names, self.user_inputs):
            if isinstance(x, np.ndarray) and x.dtype.kind == "c":
                raise self._usage(
                    f"input {name!r} is {x.dtype}; complex arrays are not "
                    "supported (the check differentiates real functions): pass the real and "
                    "imaginary parts as separate float inputs"
                )
        self._refuse_empty_inputs(names)
        work = []
        for x in self.user_inputs:
            if is_float_array(x):
                work.append(np.array(x, dtype=np.float64, order="C", copy=True))
            elif isinstance(x, np.ndarray):
                work.append(x.copy())
            else:
                work.append(x)
        if any(is_float_array(x) and x.dtype.itemsize < 8 for x in self.user_inputs):
            self.notes.append("low-precision inputs were checked on float64 copies")
        return work

    def _refuse_empty_inputs(self, names: list[str]) -> None:
        """An empty float input (a batch of shape (0, 4)) makes every gradient trivially zero:
        no backward could fail, so the check would pass anything."""
        for name, x in zip(names, self.user_inputs):
            if is_float_array(x) and x.size == 0:
                raise self._usage(
                    f"nothing to check: input {name!r} has no elements (shape {x.shape}); "
                    "on an empty batch every gradient is zero and no backward could fail: "
                    "pass inputs with at least one element"
                )

    def _refuse_non_finite_inputs(self, names: list[str], held_fixed: Collection[int]) -> None:
        """NaN or inf in a checked input: x + h is NaN too, so its row could only fail with a
        numeric NaN, blaming backward for the input. Inputs the access holds fixed (data such
        as a target with NaN marking missing values) are never perturbed, so they may."""
        if not self.opts.inputs:
            return
        for i, (name, x) in enumerate(zip(names, self.user_inputs)):
            if i not in held_fixed and is_float_array(x) and not np.isfinite(x).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
                raise self._usage(
                    f"input {name!r} holds non-finite values ({x[where]} at {where}); "
                    "central differences need finite inputs: replace them, or pass "
                    "inputs=False to check the parameters only"
                )

    def _refuse_empty_output(self, out: np.ndarray) -> None:
        """An empty output: every gradient is zero, nothing could fail."""
        if out.size == 0:
            raise self._usage(
                f"nothing to check: forward returned an empty output (shape {out.shape}), "
                "so every gradient is zero and no backward could fail: pass inputs that give "
                "at least one output element"
            )

    def _refuse_empty_arrays(self, arrays: list[CheckedArray]) -> None:
        """A checked array without elements (a parameter of shape (0,)): its row would pass
        without a single element checked."""
        for a in arrays:
            if a.array.size == 0:
                raise self._usage(
                    f"nothing to check: {'input' if a.kind == 'input' else 'parameter'} "
                    f"{a.name!r} has no elements (shape {a.array.shape}); leave it out with "
                    "params=[...] (or inputs=False), or give it at least one element"
                )

    def _checked_inputs(
        self, work: list[Any], names: list[str]
    ) -> tuple[list[CheckedArray], list[Entry]]:
        """The float inputs to check (unless inputs=False); rows for the others."""
        arrays: list[CheckedArray] = []
        rows: list[Entry] = []
        fixed = self.access.fixed_inputs()
        for i, (name, x, user_x) in enumerate(zip(names, work, self.user_inputs)):
            if is_float_array(x) and i in fixed:
                rows.append(Entry(name, "input", tuple(x.shape), str(user_x.dtype),
                                  NOT_DIFFERENTIATED, size=x.size))
            elif is_float_array(x):
                if self.opts.inputs:
                    arrays.append(CheckedArray(name, "input", x, str(user_x.dtype)))
            elif isinstance(x, np.ndarray) and x.dtype.kind in "iub":  # integer or bool
                rows.append(Entry(name, "input", tuple(x.shape), str(x.dtype), INTEGER_INPUT,
                                  size=x.size))
            elif isinstance(x, (list, tuple, float, int, complex)) and not isinstance(x, bool):
                # Values the checker cannot perturb: say so rather than skip them silently.
                shape = (len(x),) if isinstance(x, (list, tuple)) else ()
                rows.append(Entry(name, "input", shape, type(x).__name__, PASSED_THROUGH))
        return arrays, rows

    def _checked_params(
        self, params: list[Param], param_arrays: list[np.ndarray]
    ) -> list[CheckedArray]:
        """One checked array per distinct parameter array: tied weights are checked once."""
        by_array: dict[int, CheckedArray] = {}
        for p, a in zip(params, param_arrays):
            if id(a) in by_array:
                by_array[id(a)].aliases.append(p.name)
                continue
            by_array[id(a)] = CheckedArray(p.name, "param", a, self.param_dtypes[p.name])
        for c in by_array.values():
            if c.aliases:
                self.notes.append(
                    f"{', '.join(c.aliases)} share the array of {c.name} (tied weights): "
                    "checked once, against the sum of their gradients"
                )
        return list(by_array.values())

    def _select_params(
        self, params: list[Param], validate: bool = True
    ) -> tuple[list[Param], list[Entry]]:
        """Differentiable, selected parameters; rows for the others."""
        checked, rows = [], []
        for p in params:
            value = p.get()
            if not isinstance(value, np.ndarray):
                continue
            shape, dtype = tuple(value.shape), str(value.dtype)
            # dtype kinds: np.issubdtype costs ~6x, for each parameter twice a check
            complex_ = value.dtype.kind == "c"
            if not p.differentiable or not (complex_ or value.dtype.kind == "f"):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_DIFFERENTIATED,
                                  size=value.size))
            elif self.opts.params is not None and not any(
                fnmatchcase(p.name, pat) for pat in self.opts.params
            ):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_SELECTED, size=value.size))
            elif complex_:
                raise self._usage(
                    f"parameter {p.name!r} is {value.dtype}; complex parameters "
                    "are not supported (the check differentiates real functions): store the "
                    "real and imaginary parts as separate float parameters, or leave it out "
                    "with params=[...]"
                )
            else:
                checked.append(p)
        if self.opts.params is not None and validate:
            names = [p.name for p in params]
            for pat in self.opts.params:
                if not any(fnmatchcase(n, pat) for n in names):
                    raise self._usage(
                        f"params={list(self.opts.params)!r}: {pat!r} matches no "
                        f"parameter; parameters are: {', '.join(names) or 'none'}"
                    )
        return checked, rows

    def _not_inputs(self, params: list[Param]) -> list[Param]:
        """Leave out "parameters" that are the inputs forward cached (`self.b = b` in a layer
        taking an input named b): the checker's working inputs are its own copies, so an array
        sharing memory with one of them is that input, already checked as such."""
        inputs = self._input_arrays

        def is_input(p: Param) -> bool:
            value = p.get()
            return isinstance(value, np.ndarray) and any(
                np.may_share_memory(value, a) for a in inputs
            )

        return [p for p in params if not is_input(p)] if inputs else params

    def _promote(self, params: list[Param]) -> tuple[list[np.ndarray], list[str]]:
        """Give each checked parameter a writeable, contiguous float64 array where possible."""
        arrays, low, promoted = [], [], []
        copies: dict[int, np.ndarray] = {}  # one copy per original array keeps tied weights tied
        self.param_dtypes = {p.name: str(p.get().dtype) for p in params}
        for p in params:
            value = p.get()
            self._refuse_matrix(p.name, value)
            want = (value.dtype != np.float64 or not value.flags.c_contiguous
                    or not value.flags.writeable)
            if want and p.set is not None:
                if id(value) not in copies:
                    copies[id(value)] = np.array(value, dtype=np.float64, order="C", copy=True)
                p.set(copies[id(value)])
                value = p.get()
                if value.dtype != np.float64:
                    low.append(str(value.dtype))
                elif self.param_dtypes[p.name] != "float64":
                    promoted.append(f"{p.name} ({self.param_dtypes[p.name]})")
            elif want and value.dtype != np.float64:
                low.append(str(value.dtype))
            if not value.flags.writeable or not value.flags.c_contiguous:
                raise self._usage(
                    f"parameter {p.name!r} is not a writeable contiguous array, so "
                    "it cannot be perturbed in place; store it as a plain numpy array"
                )
            arrays.append(value)
        if promoted:
            self.notes.append("low-precision parameters were checked on float64 copies: "
                              + ", ".join(promoted))
        return arrays, low

    def _refuse_matrix(self, name: str, value: np.ndarray) -> None:
        if isinstance(value, np.matrix):
            raise self._usage(
                f"parameter {name!r} is an np.matrix, which the checker cannot perturb "
                "element by element (its indexing keeps two dimensions); store a plain "
                "ndarray (np.asarray(...)) and use @ for matrix products"
            )

    # -- the analytic pass ------------------------------------------------------------------

    def _nondeterministic(self, a: np.ndarray, b: np.ndarray) -> None:
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
        raise self._nondeterminism(f"max difference {diff:.3g}")

    def _unrepeatable(self, exc: _Unrepeatable) -> NondeterministicLayerError:
        return self._nondeterminism(
            f"the objective was {exc.first!r}, then {exc.second!r}, {exc.when}; no verdict is "
            "given on such numbers"
        )

    def _nondeterminism(self, detail: str) -> NondeterministicLayerError:
        return NondeterministicLayerError(
            f"{self.label}: two forward passes from the same state gave different outputs "
            f"({detail}). The layer draws from a random source the checker "
            "cannot reset (for example a module-level generator or one created inside "
            "forward). Keep the generator on the layer (self.rng = np.random.default_rng()), "
            "pass it as random_sources=[gen], or return it from a "
            "pytest_gradcheck_random_sources hook implementation in conftest.py.",
            label=self.label,
        )

    def _zero_grads(self, params: list[Param]) -> list[np.ndarray]:
        """Zero the gradients before backward; returns the arrays this or `arm_gradients`
        writes into (every writeable gradient array)."""
        # Layers that accumulate (+=) need zeros; layers that assign are unaffected. Float
        # gradients are left to `arm_gradients`, which fills them with -0.0 right after (a zero
        # to += into): zeroing them first too cost one more pass over each.
        written = []
        for p in params:
            grad = p.grad() if p.grad is not None else None
            if isinstance(grad, np.ndarray) and grad.flags.writeable:
                written.append(grad)
                if not (grad.dtype.kind == "f" and grad.size):
                    grad[...] = 0
        return written

    def _collect_input_grads(
        self,
        arrays: list[CheckedArray],
        dins: Sequence[Any],
        names: list[str],
        rows: list[Entry],
    ) -> None:
        """Attach backward's input gradients. An input whose gradient is missing or unusable
        gets an `error` row in `rows` and no gradient, so it is left out of the numeric passes
        while the other arrays are still judged."""
        if len(dins) > len(names):
            raise self._usage(
                f"backward returned {len(dins)} input gradients for "
                f"{len(names)} input(s); return one gradient per forward input, in order "
                "(None for an input without one)"
            )
        by_name = {n: i for i, n in enumerate(names)}
        for a in arrays:
            if a.kind != "input":
                continue
            i = by_name[a.name]
            grad = dins[i] if i < len(dins) else None
            if grad is None:
                rows.append(self._error_entry(
                    a,
                    f"backward returned no gradient for input {a.name!r}; return "
                    "it from backward (a tuple for several inputs), set self.dinputs, or pass "
                    "inputs=False to check parameters only",
                ))
                continue
            found = self._grad_array(grad, a, "input")
            if isinstance(found, str):
                rows.append(self._error_entry(a, found))
            else:
                a.analytic = found

    def _late_params(self, params: list[Param], rows: list[Entry]) -> list[Param]:
        """Parameters recognisable only once backward has created their gradient (`w`/`dw`);
        one that cannot be perturbed as it is gets an `error` row in `rows` instead."""
        known = {p.name for p in params}
        late, _ = self._select_params(
            self._not_inputs([p for p in self.access.parameters() if p.name not in known]),
            validate=False,
        )
        usable = []
        for p in late:
            value = p.get()
            self._refuse_matrix(p.name, value)
            if value.dtype != np.float64 or not value.flags.c_contiguous:
                rows.append(Entry(
                    p.name, "param", tuple(value.shape), str(value.dtype), ERROR,
                    size=value.size,
                    message=f"parameter {p.name!r} was recognised only after backward "
                    f"created its gradient, and is {value.dtype}: create the gradient in "
                    "__init__, or name the pair W/dW, b/db, weights/dweights, ...",
                ))
            else:
                usable.append(p)
        return usable

    def _undo_backward(
        self, baseline: Snapshot, params: list[CheckedArray], zeroed: list[np.ndarray]
    ) -> None:
        """Put back whatever backward changed (an optimizer step inside backward, caches), so
        the numeric evaluations see the same parameters as the analytic pass; the gradients
        zeroed before backward (`zeroed`) are copied back without a comparison."""
        # Restoring compares every recorded array bit for bit anyway: the parameters it had to
        # rewrite are the ones backward changed (an equal_nan comparison beforehand cost ~7x
        # a bitwise one, twice the check's backward on a big layer).
        rewritten = {id(arr) for arr in baseline.restore(
            [g for g in zeroed if all(g is not a.array for a in params)])}
        stepped = [a.name for a in params if id(a.array) in rewritten]
        if stepped:
            self.notes.append(
                "backward changed parameter(s) " + ", ".join(stepped) + " in place (an "
                "optimizer step?); they were put back before the numeric evaluations"
            )

    def _collect_param_grads(
        self,
        arrays: list[CheckedArray],
        params: list[Param],
        rows: list[Entry],
        unwritten: Collection[str] = (),
    ) -> list[CheckedArray]:
        """Attach gradients; returns the arrays left to check. Optional gradient-less entries
        (running statistics in a parameter dict) move to `rows` as not differentiated; a
        parameter whose gradient is missing, never written (`unwritten`: names from
        `arm_gradients`), unreadable or unusable moves there as an `error` row. Inputs without
        a gradient (`_collect_input_grads` gave them an error row) are left out too."""
        by_name = {p.name: p for p in params}
        kept = []
        for a in arrays:
            if a.kind != "param":
                if a.analytic is not None:
                    kept.append(a)
                continue
            p = by_name[a.name]
            try:
                grad = p.grad() if p.grad is not None else None
                extras = [(n, by_name[n].grad) for n in a.aliases]
                tied = [(n, read() if read is not None else None) for n, read in extras]
            except Exception as exc:  # a gradient behind a property or hook that raises
                rows.append(self._error_entry(
                    a, f"reading the gradient of parameter {a.name!r} raised "
                    f"{type(exc).__name__}: {exc}",
                ))
                continue
            stale = [n for n in (a.name, *a.aliases) if n in unwritten]
            if stale:
                rows.append(self._error_entry(
                    a, unwritten_gradient_message(stale[0], by_name[stale[0]].grad_source)))
                continue
            if grad is None and not p.required:
                rows.append(Entry(a.name, "param", tuple(a.array.shape), a.orig_dtype,
                                  NOT_DIFFERENTIATED, size=a.array.size))
                continue
            if grad is None:
                rows.append(self._error_entry(
                    a, f"parameter {a.name!r} has no gradient after backward; "
                    "backward must store it (grads[name] or d<name>), or exclude the parameter "
                    "with params=[...]",
                ))
                continue
            total = self._grad_array(grad, a, "parameter")
            for alias, extra in tied:
                if isinstance(total, str) or extra is None:
                    continue
                more = self._grad_array(extra, a, "parameter", alias)
                total = more if isinstance(more, str) else total + more
            if isinstance(total, str):
                rows.append(self._error_entry(a, total))
                continue
            a.analytic = total
            kept.append(a)
        return kept

    def _grad_array(
        self, grad: Any, a: CheckedArray, what: str, name: str | None = None
    ) -> np.ndarray | str:
        """`grad` as a float64 array of `a`'s shape, or why it is not one: the message of the
        array's `error` row. A gradient of another shape is never broadcast: a (1, C)
        gradient for a (C,) parameter is an error. `name` is the tied parameter the gradient
        belongs to, when not `a`'s own name."""
        name = name or a.name
        try:
            complex_ = np.iscomplexobj(grad)
        except (TypeError, ValueError, AttributeError):  # a ragged list: no dtype at all
            complex_ = False
        if complex_:
            return (f"gradient of {what} {name!r} is complex; backward must return a real "
                    "floating-point array")
        lent = self._lent(grad, a.array.shape)
        if lent is not None:
            return lent
        try:
            arr = np.array(grad, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            return (f"gradient of {what} {name!r} is a {type(grad).__name__} that is not an "
                    f"array of numbers ({exc}); backward must return (or store) one float "
                    "array per input and parameter")
        if arr.shape != a.array.shape:
            return (f"gradient of {what} {name!r} has shape {arr.shape}, expected "
                    f"{a.array.shape}; backward must return one gradient element per element "
                    "(gradients are never broadcast)")
        return arr

    def _lent(self, grad: Any, shape: tuple[int, ...]) -> np.ndarray | None:
        """`grad` itself rather than a copy, where that is sound: a float64 array backward
        created (it owns its memory, and no snapshot had recorded it, so no restore writes
        into it), made read-only until the check ends. A later write into it (by a forward
        holding it where no snapshot looks) then faults like a write into a protected array,
        and `run_protected` runs the check again, copying every gradient. Saves one copy per
        checked array: ~1 ms at a million elements."""
        if (self._protect_bytes is None or self._baseline is None
                or type(grad) is not np.ndarray or grad.dtype != np.float64
                or grad.shape != shape
                or grad.base is not None or not grad.flags.writeable
                or not grad.flags.c_contiguous
                or self._baseline.saved_array(grad) is not None
                or self._original.saved_array(grad) is not None):
            return None
        grad.flags.writeable = False
        self._undo.push(lambda: setattr(grad.flags, "writeable", True))
        return grad

    # -- the result -------------------------------------------------------------------------

    def _error_entry(self, a: CheckedArray, message: str) -> Entry:
        """The row of an array that could not be judged, with the reason."""
        return Entry(a.name, a.kind, tuple(a.array.shape), a.orig_dtype, ERROR,
                     size=a.array.size, message=message)

    def _entry(self, a: CheckedArray, v: modes.ArrayVerdict) -> Entry:
        shape = tuple(a.array.shape)
        worst_index = None
        if v.worst is not None:
            worst_index = tuple(int(i) for i in np.unravel_index(v.worst, shape))
        return Entry(
            name=a.name,
            kind=a.kind,
            shape=shape,
            dtype=a.orig_dtype,
            status=OK if v.ok else FAIL,
            max_rel_error=float(v.worst_error),
            worst_index=worst_index,
            analytic=float(v.worst_analytic),
            numeric=float(v.worst_numeric),
            kinks=v.kinks,
            failed=v.failed,
            checked=v.checked,
            size=a.array.size,
            failed_mask=v.failed_mask,
            estimate=v.estimate,
        )


def _loss_value(
    value: Any, what: str, usage: Callable[[str], GradcheckUsageError]
) -> float:
    """A loss term's value as a float: one finite real number, nothing that merely converts
    (a string "1.5", a bool, a list of one)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(value, np.ndarray):
        real = value.ndim == 0 and value.dtype.kind in "iuf"
    if not real:
        desc = (f"an array of shape {value.shape} and dtype {value.dtype}"
                if isinstance(value, np.ndarray) else f"{value!r} ({type(value).__name__})")
        raise usage(f"{what} returned {desc}; it must take the layer and return one real "
                    "number (a float)")
    number = float(value)
    if not math.isfinite(number):
        raise usage(f"{what} returned {number}; it must return a finite real number (check "
                    "the terms it adds at these parameter values)")
    return number


def _repeating(once: Callable[[], float]) -> Callable[[], float]:
    """`once`, made twice at its 1st, 2nd, 4th, 8th, ... call: a difference between the two
    values raises `_Unrepeatable`."""
    calls, due = 0, 1

    def evaluate() -> float:
        nonlocal calls, due
        value = once()
        calls += 1
        if calls == due:
            due *= 2
            again = once()
            if not _same_value(value, again):
                raise _Unrepeatable(value, again, "at the same point, during the evaluations")
        return value

    return evaluate


def _same_value(a: float, b: float) -> bool:
    """Bit for bit equal, as far as a comparison of floats can tell (NaN equals NaN)."""
    return a == b or (a != a and b != b)


def _decoy_inputs(work: Sequence[Any], rng: np.random.Generator, shift: bool = True,
                  spread: float = 0.1) -> list[Any]:
    """The decoy forward's inputs: float arrays shifted by one place along their first axis of
    two or more (with `shift`: each sample takes its neighbour's values, so a mask or cache
    computed from the values, such as a ReLU's signs or a max-pool's winners, differs from the
    check's own) and moved by up to `spread` of each element's value; the values stay those of
    the inputs, signs and zeros included. Other arrays are copied, everything else is passed as
    it is."""
    inputs: list[Any] = []
    for x in work:
        if is_float_array(x):
            # Factors drawn in [1 - spread, 1 + spread) and multiplied in place: no temporary.
            moved = rng.uniform(1.0 - spread, 1.0 + spread, x.shape)
            axis = next((i for i, n in enumerate(x.shape) if n > 1), None) if shift else None
            if axis is None:
                np.multiply(moved, x, out=moved)
            else:
                m, v = np.moveaxis(moved, axis, 0), np.moveaxis(x, axis, 0)  # views
                np.multiply(m[1:], v[:-1], out=m[1:])
                np.multiply(m[:1], v[-1:], out=m[:1])
            inputs.append(moved)
        elif isinstance(x, np.ndarray):
            inputs.append(x.copy())
        else:
            inputs.append(x)
    return inputs


def _scramble(sources: Sequence[RandomSource], rng: np.random.Generator) -> None:
    """Move every random stream to another state derived from `rng` (`RandomSource.scramble`).
    Each source takes its two draws from `rng` whatever its kind, so the states the others
    reach do not depend on which kinds are present."""
    for s in sources:
        seed, k = int(rng.integers(2**32)), int(rng.integers(1, 64))
        s.scramble(seed, k)


def _saved_or_copy(snapshot: Snapshot, arr: np.ndarray) -> np.ndarray:
    """The copy of `arr` that `snapshot` recorded, else a fresh one."""
    saved = snapshot.saved_array(arr)
    return arr.copy() if saved is None else saved


def _reset(sources: Sequence[RandomSource]) -> None:
    for s in sources:
        s.restore()


def _objective(g: np.ndarray, out: Any, loss_terms: Sequence[Callable[[], float]]) -> float:
    """sum(g * out) plus the loss terms: the scalar whose gradient backward computes."""
    total = float(np.vdot(g, out))
    for term in loss_terms:
        total += term()
    return total
