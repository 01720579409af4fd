"""One gradient check from start to finish: the conductor of its five phases.

Before the phases, the layer is adapted (`LayerAccess`), everything reachable from it and the
inputs is recorded (`Snapshot`), the global random streams are seeded from the check seed and
the private ones recorded; all of it is put back at the end, every piece even if putting back
another one fails.

1. `prepare`: float64 working copies of the inputs, training mode forced, the random streams
   hooks name, a first forward (it may create parameters lazily), the parameters selected and
   moved to float64 where needed: the checked arrays (`arrays.Arrays`).
2. `record_forward`: the decoy forward (`decoy`), so that state a backward wrongly takes from
   an earlier call differs from the evaluations'; the baseline; a forward from it that shows
   what a forward pass changes (the `Patch`), which random streams it draws from and which
   inputs it modifies in place.
3. `analytic_pass`: that forward must repeat the first output bit for bit (otherwise one more
   forward from the same state must, or an unreset random source is in use) and serves as the
   analytic pass's forward; then the single backward, whose changes are undone.
4. `numeric_passes`: the evaluations chosen by the mode (`modes`), each preceded by the patch
   and the resets of the random streams forward draws from, judged by one `numeric.Judging`
   (`judging.Judge`).
5. `judge`: the passes that judge again when the first verdicts cannot be trusted, then the
   `CheckResult`.

The phases hand each other the records of `phases`; every call into the user's code goes
through `calls.Calls`. The rules that can change a verdict are listed in `docs/verdicts.md`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import numeric, shapes, streams
from .access import LayerAccess, arm_gradients, layer_label
from .arrays import Arrays, verdict_entry
from .calls import Calls, Unrepeatable, input_feeder, objective, preparer, repeating, reset
from .calls import usage_error as _usage_error
from .decoy import decoy_forward
from .errors import GradcheckUsageError
from .gradients import Gradients
from .judging import Judge, unreset_stream_changed
from .options import Options
from .phases import (
    AnalyticPass,
    Attempt,
    CheckedArray,
    ForwardRecord,
    NumericPasses,
    Setup,
)
from .result import ERROR, CheckResult
from .sources import RandomSource, SeededGlobalNumpy, SeededGlobalPython
from .state import Restorer, Snapshot, run_protected, same_bits


class Checker:
    """Runs one check; see the module docstring for the phases."""

    # Set for each attempt by `_attempt`.
    calls: Calls
    arrays: Arrays
    jury: Judge
    attempt: Attempt

    def __init__(self, layer: Any, inputs: Sequence[Any], opts: Options, hook: Any) -> None:
        self.layer = layer
        self.user_inputs = list(inputs)
        self.opts = opts
        self.hook = hook
        self.label: str = opts.label or layer_label(layer)
        self.notes: list[str] = []

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
        self.notes = []
        calls: Calls | None = None
        try:
            access = self._adapt()
            self.calls = calls = Calls(access)
            with Restorer() as undo:
                roots = access.state_roots()
                # Weights outside the code (params= pointers): the objects bound there now
                # are bound again at the end, with their bits (recorded as roots).
                outside = [(b, b.get()) for b in access.outside_bindings()]
                roots = [*roots, *(v for _, v in outside)]
                original = Snapshot([*roots, *self.user_inputs],
                                    names=[self.label] * len(roots),
                                    protect_bytes=protect_bytes)
                self.attempt = Attempt(protect_bytes, undo, original)
                undo.push(original.restore)
                for binding, value in outside:
                    undo.push(functools.partial(binding.put_back, value))
                np_global = SeededGlobalNumpy(self.opts.seed)
                undo.push(np_global.give_back)
                py_global = SeededGlobalPython(self.opts.seed)
                undo.push(py_global.give_back)
                private = self._private_sources(original)
                for src in private:
                    undo.push(src.restore)
                self.arrays = Arrays(calls, self.opts, self.user_inputs, self.notes)
                self.jury = Judge(calls, self.opts, self.notes)
                setup = self.prepare([np_global, py_global], private)
                record = self.record_forward(setup)
                analytic = self.analytic_pass(setup, record)
                passes = self.numeric_passes(setup, record, analytic)
                result = self.judge(setup, record, analytic, passes)
        except GradcheckUsageError as exc:
            if exc.label is None:  # every usage error raised during a check concerns this layer
                exc.label = self.label
            raise
        return result

    def prepare(
        self, global_streams: Sequence[RandomSource], private: Sequence[RandomSource]
    ) -> Setup:
        """Working inputs, training mode, the random streams (those a hook names join the
        private ones, their restore registered), the first forward, and the arrays to check."""
        access, arrays = self.calls.access, self.arrays
        work = arrays.working_inputs()
        access.bind(work)
        forced = access.force_train_mode()
        if forced:
            self.notes.append("forced training mode: " + ", ".join(forced))
        private = list(private)
        for obj in access.random_sources():
            if all(obj is not s.obj for s in private):
                src = RandomSource(obj, "hook")
                self.attempt.undo.push(src.restore)
                private.append(src)
        sources = [*global_streams, *private]

        # First forward: lazily created parameters come to exist.
        reset(sources)
        try:
            first_out = np.array(self.calls.forward(work), copy=True)
        except GradcheckUsageError:
            # A non-finite output from non-finite inputs, or an object output from an object
            # parameter: name the input or the parameter, not the output.
            arrays.refuse_non_finite_inputs(access.input_names(len(work)), held_fixed=())
            arrays.refuse_object_params()
            raise
        params, param_rows = arrays.select_params(arrays.not_inputs(access.parameters()))
        # The checker perturbs parameters and zeroes gradients in place: no protection there.
        self.attempt.original.release(
            [a for p in params for a in (p.get(), p.grad() if p.grad is not None else None)]
        )
        param_arrays, low = arrays.promote(params)
        input_names = access.input_names(len(work))
        arrays.refuse_non_finite_inputs(input_names, held_fixed=access.fixed_inputs())
        checked, input_rows = arrays.checked_inputs(work, input_names)
        checked += arrays.checked_params(params, param_arrays)
        arrays.refuse_unknown_frozen()
        arrays.refuse_empty_output(first_out)
        return Setup(work, input_names, sources, first_out, params, param_arrays, low, checked,
                     input_rows, param_rows)

    def record_forward(self, setup: Setup) -> ForwardRecord:
        """What one forward pass changes, and which random streams it draws from; before it,
        the decoy forward, whose leftovers the baseline then holds."""
        calls, attempt = self.calls, self.attempt
        decoy = decoy_forward(calls, setup, self.user_inputs, attempt, self.opts.seed)
        self.arrays.rebind(setup.params, setup.param_arrays)
        work = setup.work
        loss_terms = calls.loss_terms(self.opts.extra_loss, self.layer)
        live = [a for a in work if isinstance(a, np.ndarray)]
        # Optional entries (running statistics) that forward updates in place must be patched.
        required = [a for p, a in zip(setup.params, setup.param_arrays) if p.required]
        # Copies the earlier snapshots took are reused where the bits still match; the decoy's
        # input arrays (the checker's own, which the baseline holds only as the decoy's
        # leftovers) are protected rather than copied, whatever their size, as the working
        # inputs were for the decoy: a later forward writing into one faults.
        baseline = Snapshot([*calls.access.state_roots(), *work], exclude=[*required, *live],
                            known=decoy.untouched, reuse=decoy.earlier_copies,
                            protect=decoy.arrays)
        attempt.undo.push(baseline.unprotect)  # restored by `undo_backward`, unless one raises
        # The baseline already holds a copy of each working input (a root it records).
        saved_inputs = [_saved_or_copy(baseline, a) for a in live]
        attempt.baseline = baseline
        reset(setup.sources)
        out = np.array(calls.forward(work), copy=True)
        # The arrays the decoy's snapshot still protects cannot have changed.
        patch = baseline.patch(decoy.before.protected)
        decoy.before.unprotect()  # the later phases write into these arrays
        used = [s for s in setup.sources if s.changed()]
        # Bit for bit (NaN payloads and -0.0 count as changes): as cheap as a copy, where an
        # equal_nan comparison costs several times more.
        mutated = [i for i, (a, b) in enumerate(zip(live, saved_inputs)) if not same_bits(a, b)]
        if mutated:
            self.notes.append(
                "forward modifies its input in place: every evaluation got its own copy"
            )
            for a, b in zip(live, saved_inputs):
                np.copyto(a, b)
        if used:
            self.notes.append(
                "random streams reset before every evaluation: "
                + ", ".join(s.label for s in used)
            )
        precision = numeric.precision_of(out.dtype, *setup.low)
        if precision != "float64":
            j = self.jury.judging(precision)
            self.notes.append(
                f"the layer computes in {precision} even on float64 arrays: step {j.step:g} and "
                f"rtol {j.rtol:g} follow that precision; errors below about {j.rtol:g} go unseen"
            )
        return ForwardRecord(baseline, out, patch, used, bool(mutated), preparer(patch, used),
                             input_feeder(work, {id(live[i]) for i in mutated}), loss_terms,
                             precision)

    def analytic_pass(self, setup: Setup, record: ForwardRecord) -> AnalyticPass:
        """The objective at the unperturbed point and backward's gradients; what backward
        changed is undone."""
        calls, arrays = self.calls, self.arrays
        # A 0-d output is a loss: its cotangent is 1.0, so the objective is the loss itself.
        # Otherwise drawn from the check's cotangent stream (see `streams`).
        g = (np.ones(()) if record.out.ndim == 0 else
             streams.cotangent(self.opts.seed, record.out.shape))

        # The forward just made from the baseline serves as the analytic pass's forward when it
        # agrees bit for bit with the first one (same random state, so an unreset random source
        # would show). Otherwise (lazy creation drew random numbers, parameters were promoted,
        # inputs are modified in place) one more forward from the same state must agree with it.
        out = record.out
        # Both outputs passed `Calls.output` (finite): a plain comparison suffices.
        if record.mutated or not np.array_equal(setup.first_out, record.out):
            record.prepare()
            out = np.asarray(calls.forward(record.call_inputs()))
            if out.shape != record.out.shape:
                raise calls.shape_changed(record.out.shape, out.shape, "at the next call")
            if not np.array_equal(record.out, out):
                raise calls.nondeterministic(record.out, out)
        f_zero = objective(g, out, record.loss_terms)
        gradients = Gradients(arrays, self.attempt)
        zeroed = gradients.zero_grads(setup.params)
        unwritten = arm_gradients(setup.params)
        dins = calls.backward(g.copy())
        stale = unwritten()
        gradients.collect_input_grads(setup.arrays, dins, setup.input_names, setup.input_rows)
        param_rows = list(setup.param_rows)
        late = arrays.late_params(setup.params, param_rows)
        checked = gradients.collect_param_grads(
            [*setup.arrays,
             *(CheckedArray(p.name, "param", p.get(), str(p.get().dtype)) for p in late)],
            [*setup.params, *late],
            param_rows,
            stale,
        )
        gradients.undo_backward(record.baseline, [a for a in checked if a.kind == "param"],
                                zeroed)
        # Every recorded array now holds the baseline's bits again, and the evaluations put
        # back what a forward changes: the baseline's copies are the arrays' bits from here on.
        for a in checked:
            a.saved = record.baseline.saved_array(a.array)
        arrays.refuse_empty_arrays(checked)
        if not checked and not any(r.status == ERROR for r in [*setup.input_rows, *param_rows]):
            raise calls.usage(
                "nothing to check: no floating-point input (or inputs=False) and "
                "no parameter with a gradient was found; see the supported conventions in the "
                "README, or teach yours with a pytest_gradcheck_layer_parameters hook"
            )
        terms = np.asarray(out * g)  # |out * g| in one temporary, taken in place
        terms_abs_sum = (float(np.abs(terms, out=terms).sum())
                         + sum(abs(t()) for t in record.loss_terms))
        return AnalyticPass(g, f_zero, terms_abs_sum, checked, param_rows)

    def numeric_passes(
        self, setup: Setup, record: ForwardRecord, analytic: AnalyticPass
    ) -> NumericPasses:
        """The mode's evaluations, judged with the noise the objective's precision implies
        (for a layer computing in low precision, the noise measured where that is lower)."""
        jury = self.jury
        judging = jury.judging(
            record.precision, numeric.objective_noise(analytic.terms_abs_sum, record.precision),
            zero_scale=jury.zero_scale(record.out, analytic.arrays), arrays=analytic.arrays,
        )
        once = self.calls.evaluator(
            record.prepare if (record.patch or record.used) else None,
            setup.work if not record.mutated else record.call_inputs,
            analytic.cotangent,
            record.loss_terms,
        )
        evaluate = repeating(once)
        notes: list[str] = []
        try:
            if record.precision != "float64":
                judging = jury.measured_low_precision(analytic, evaluate, judging, notes)
            else:
                judging = jury.measured_rounding(analytic, evaluate, judging)
            verdicts = jury.confirmed_verdicts(analytic, evaluate, once, judging, notes)
        except Unrepeatable as exc:
            if not unreset_stream_changed(setup, record):
                raise self.calls.unrepeatable(exc) from None
            # A stream no setup forward drew from explains it: judged again with every stream
            # reset before every evaluation (where a difference is nondeterminism).
            return jury.recheck_unreset_streams(setup, record, analytic,
                                                 NumericPasses(judging, evaluate, []))
        return NumericPasses(judging, evaluate, verdicts, notes=notes)

    def judge(
        self,
        setup: Setup,
        record: ForwardRecord,
        analytic: AnalyticPass,
        passes: NumericPasses,
    ) -> CheckResult:
        """Judge again where the verdicts cannot be trusted, then the result."""
        jury = self.jury
        passes = jury.recheck_unreset_streams(setup, record, analytic, passes)
        passes = jury.rejudge_hidden_precision(analytic, passes)
        self.notes.extend(passes.notes)
        self.notes.extend(self.calls.access.notes())
        jury.report_steps(analytic.arrays, passes.judging)
        j = passes.judging
        entries = [verdict_entry(a, v) for a, v in zip(analytic.arrays, passes.verdicts)]
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
            forward_calls=self.calls.forward_calls,
            backward_calls=self.calls.backward_calls,
        )

    # -- before the phases ------------------------------------------------------------------

    def _adapt(self) -> LayerAccess:
        access: LayerAccess | None = self.hook.pytest_gradcheck_adapt(
            obj=self.layer, label=self.opts.label, hook=self.hook
        )
        if access is None and isinstance(self.layer, type) and callable(
            getattr(self.layer, "forward", None)
        ):
            raise _usage_error(
                self.label,
                f"got the class {self.layer.__name__}, not a layer: pass an "
                f"instance, e.g. {self.layer.__name__}(...)",
            )
        if access is None:
            raise _usage_error(self.label, shapes.refusal(self.layer))
        access = shapes.apply_options(access, self.opts)
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


def _saved_or_copy(snapshot: Snapshot, arr: np.ndarray) -> np.ndarray:
    """The copy of `arr` that `snapshot` recorded, else a fresh one."""
    saved = snapshot.saved_array(arr)
    return arr.copy() if saved is None else saved
