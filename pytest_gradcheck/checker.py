"""One gradient check from start to finish: setup, analytic pass, numeric passes, verdict.

The order of events, and why:
1. Record everything reachable from the layer and the inputs (`Snapshot`) and the random
   streams, so all of it is put back in `finally`, whatever happens.
2. Seed the global streams from the check seed, force training mode, run a first forward (it
   may create parameters lazily), then list the parameters and move low-precision ones to
   float64 copies.
3. Take a baseline, run a second forward to learn what a forward pass changes (the `Patch`) and
   which random streams it draws from; it must repeat the first output bit for bit (otherwise
   one more forward from the same state must, or an unreset random source is in use), and it
   serves as the analytic pass's forward.
4. The single backward; whatever it changed (an optimizer step inside backward) is undone.
5. The numeric evaluations chosen by the mode (`modes.py`), each preceded by the patch and the
   resets of the random streams forward draws from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import modes, numeric, streams
from .access import FunctionPairAccess, LayerAccess, Param, layer_label
from .errors import GradcheckUsageError, NondeterministicLayerError
from .options import Options
from .result import (
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
)


def _is_float_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)


@dataclass
class Target:
    """One array to check: a working float64 array perturbed in place, and its gradient."""

    name: str
    kind: str
    array: np.ndarray  # the live array the layer reads
    orig_dtype: str
    analytic: np.ndarray | None = None
    # Other names of the same array (tied weights): its gradient is the sum over all of them.
    aliases: list[str] = field(default_factory=list)


class Checker:
    """Runs one check; see the module docstring for the order of events."""

    def __init__(self, target: Any, inputs: Sequence[Any], opts: Options, hook: Any) -> None:
        self.target = target
        self.user_inputs = list(inputs)
        self.opts = opts
        self.hook = hook
        self.label = opts.label or layer_label(target)
        self.forward_calls = 0
        self.backward_calls = 0
        self.notes: list[str] = []
        self.param_dtypes: dict[str, str] = {}  # parameter dtypes as the layer had them
        self._input_arrays: list[np.ndarray] = []  # the working copies of the array inputs

    # -- running the layer ------------------------------------------------------------------

    def _forward(self, inputs: Sequence[Any]) -> Any:
        self.forward_calls += 1
        try:
            return self.access.forward(inputs)
        except GradcheckUsageError:
            raise
        except Exception as exc:
            raise GradcheckUsageError(
                f"{self.label}: forward raised {type(exc).__name__}: {exc}"
            ) from exc

    def _backward(self, dout: np.ndarray) -> Sequence[Any]:
        self.backward_calls += 1
        try:
            return self.access.backward(dout)
        except GradcheckUsageError:
            raise
        except Exception as exc:
            raise GradcheckUsageError(
                f"{self.label}: backward raised {type(exc).__name__}: {exc}"
            ) from exc

    # -- setup ------------------------------------------------------------------------------

    def _adapt(self) -> LayerAccess:
        access = self.hook.pytest_gradcheck_adapt(obj=self.target, label=self.opts.label,
                                                  hook=self.hook)
        if access is None and isinstance(self.target, type) and callable(
            getattr(self.target, "forward", None)
        ):
            raise GradcheckUsageError(
                f"{self.label}: got the class {self.target.__name__}, not a layer: pass an "
                f"instance, e.g. {self.target.__name__}(...)"
            )
        if access is None:
            raise GradcheckUsageError(
                f"{self.label}: cannot check a {type(self.target).__name__}: a layer needs "
                "forward() and backward() methods, a cs231n-style pair is passed as "
                "(forward_fn, backward_fn); for other shapes implement the "
                "pytest_gradcheck_adapt hook"
            )
        if self.opts.label:
            access.label = self.opts.label
        self.label = access.label
        return access

    def _working_inputs(self) -> list[Any]:
        names = self.access.input_names(len(self.user_inputs))
        for name, x in zip(names, self.user_inputs):
            if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.complexfloating):
                raise GradcheckUsageError(
                    f"{self.label}: input {name!r} is {x.dtype}; complex arrays are not "
                    "supported (the check differentiates real functions): pass the real and "
                    "imaginary parts as separate float inputs"
                )
        work = []
        for x in self.user_inputs:
            if _is_float_array(x):
                work.append(np.array(x, dtype=np.float64, order="C", copy=True))
            elif isinstance(x, np.ndarray):
                work.append(x.copy())
            else:
                work.append(x)
        if any(_is_float_array(x) and x.dtype.itemsize < 8 for x in self.user_inputs):
            self.notes.append("low-precision inputs were checked on float64 copies")
        return work

    def _select_params(
        self, params: list[Param], validate: bool = True
    ) -> tuple[list[Param], list[Entry]]:
        """Differentiable, selected parameters; rows for the others."""
        from fnmatch import fnmatchcase

        checked, rows = [], []
        for p in params:
            value = p.get()
            if not isinstance(value, np.ndarray):
                continue
            shape, dtype = tuple(value.shape), str(value.dtype)
            complex_ = np.issubdtype(value.dtype, np.complexfloating)
            if not p.differentiable or not (complex_ or np.issubdtype(value.dtype, np.floating)):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_DIFFERENTIATED,
                                  size=value.size))
            elif self.opts.params is not None and not any(
                fnmatchcase(p.name, pat) for pat in self.opts.params
            ):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_SELECTED, size=value.size))
            elif complex_:
                raise GradcheckUsageError(
                    f"{self.label}: parameter {p.name!r} is {value.dtype}; complex parameters "
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
                    raise GradcheckUsageError(
                        f"{self.label}: params={list(self.opts.params)!r}: {pat!r} matches no "
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
                raise GradcheckUsageError(
                    f"{self.label}: parameter {p.name!r} is not a writeable contiguous array, so "
                    "it cannot be perturbed in place; store it as a plain numpy array"
                )
            arrays.append(value)
        if promoted:
            self.notes.append("low-precision parameters were checked on float64 copies: "
                              + ", ".join(promoted))
        return arrays, low

    # -- the check --------------------------------------------------------------------------

    def run(self) -> CheckResult:
        start = time.perf_counter()
        self.access = self._adapt()
        roots = self.access.state_roots()
        original = Snapshot([*roots, *self.user_inputs], names=[self.label] * len(roots))
        np_global = SeededGlobalNumpy(self.opts.seed)
        try:
            py_global = SeededGlobalPython(self.opts.seed)
            try:
                private = self._private_sources(original)
                try:
                    result = self._run(np_global, py_global, private)
                finally:
                    for src in private:
                        src.restore()
            finally:
                py_global.give_back()
        finally:
            np_global.give_back()
            original.restore()
        result.elapsed = time.perf_counter() - start
        return result

    def _private_sources(self, snap: Snapshot) -> list[RandomSource]:
        seen: set[int] = set()
        sources = []
        extra = [(o, "registered") for o in self.opts.random_sources]
        for obj, label in [*snap.random_objects, *extra]:
            if id(obj) not in seen:
                seen.add(id(obj))
                sources.append(RandomSource(obj, label))
        return sources

    def _run(
        self,
        np_global: SeededGlobalNumpy,
        py_global: SeededGlobalPython,
        private: list[RandomSource],
    ) -> CheckResult:
        opts = self.opts
        access = self.access
        work = self._working_inputs()
        if isinstance(access, FunctionPairAccess):
            access.bind(work)
        forced = access.force_train_mode()
        if forced:
            self.notes.append("forced training mode: " + ", ".join(forced))

        for obj in access.random_sources():
            if all(obj is not s.obj for s in private):
                private.append(RandomSource(obj, "hook"))
        sources: list[RandomSource] = [np_global, py_global, *private]

        def reset_all() -> None:
            for s in sources:
                s.restore()

        # First forward: lazily created parameters come to exist.
        reset_all()
        out_w = np.array(self._output(self._forward(work)), copy=True)
        self._input_arrays = [a for a in work if isinstance(a, np.ndarray)]
        params, rows = self._select_params(self._not_inputs(access.parameters()))
        param_arrays, low = self._promote(params)
        input_names = access.input_names(len(work))

        targets: list[Target] = []
        input_rows: list[Entry] = []
        for name, x, user_x in zip(input_names, work, self.user_inputs):
            if _is_float_array(x):
                if opts.inputs:
                    targets.append(Target(name, "input", x, str(user_x.dtype)))
            elif isinstance(x, np.ndarray) and (
                np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_)
            ):
                input_rows.append(Entry(name, "input", tuple(x.shape), str(x.dtype),
                                        INTEGER_INPUT, size=x.size))
            elif isinstance(x, (list, tuple, float, int, complex)) and not isinstance(x, bool):
                # Values the checker cannot perturb: say so rather than skip them silently.
                shape = (len(x),) if isinstance(x, (list, tuple)) else ()
                input_rows.append(Entry(name, "input", shape, type(x).__name__, PASSED_THROUGH))
        by_array: dict[int, Target] = {}
        for p, a in zip(params, param_arrays):
            if id(a) in by_array:
                by_array[id(a)].aliases.append(p.name)
                continue
            by_array[id(a)] = Target(p.name, "param", a, self.param_dtypes[p.name])
            targets.append(by_array[id(a)])
        for t in by_array.values():
            if t.aliases:
                self.notes.append(
                    f"{', '.join(t.aliases)} share the array of {t.name} (tied weights): "
                    "checked once, against the sum of their gradients"
                )

        # What one forward pass changes, and which random streams it draws from.
        loss_terms = self._loss_terms()
        live = [a for a in work if isinstance(a, np.ndarray)]
        # Optional entries (running statistics) that forward updates in place must be patched.
        required = [a for p, a in zip(params, param_arrays) if p.required]
        baseline = Snapshot([*access.state_roots(), *work], exclude=[*required, *live])
        saved_inputs = [a.copy() for a in live]
        reset_all()
        out1 = np.array(self._output(self._forward(work)), copy=True)
        patch = baseline.patch()
        used = [s for s in sources if s.changed()]
        mutated = [i for i, (a, b) in enumerate(zip(live, saved_inputs)) if not
                   np.array_equal(a, b, equal_nan=True)]
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

        precision = numeric.precision_of(out1.dtype, *low)
        eps_default, rtol_default = numeric.PRECISION_DEFAULTS[precision]
        eps = opts.eps if opts.eps is not None else eps_default
        rtol = opts.rtol if opts.rtol is not None else rtol_default
        if precision != "float64":
            self.notes.append(
                f"the layer computes in {precision} even on float64 arrays: step {eps:g} and "
                f"rtol {rtol:g} follow that precision; errors below about {rtol:g} go unseen"
            )

        # Not default_rng(seed) itself: inputs drawn with default_rng(0) would equal the
        # cotangent, making x.T @ g symmetric and hiding transposed gradients (the purpose is
        # mixed into the seed sequence; see `streams`).
        g = streams.stream(opts.seed, streams.COTANGENT).standard_normal(out1.shape)

        def objective(out: Any) -> float:
            total = float(np.vdot(g, out))
            for term in loss_terms:
                total += term()
            return total

        # Analytic pass. The forward just made from the baseline serves as its forward when it
        # agrees bit for bit with the first one (same random state, so an unreset random source
        # would show). Otherwise (lazy creation drew random numbers, parameters were promoted,
        # inputs are modified in place) one more forward from the same state must agree with it.
        out_a = out1
        if mutated or not np.array_equal(out_w, out1, equal_nan=True):
            prepare()
            out_a = np.asarray(self._output(self._forward(call_inputs())))
            if not np.array_equal(out1, out_a, equal_nan=True):
                self._nondeterministic(out1, out_a)
        f_zero = objective(out_a)
        self._zero_grads(params)
        dins = self._backward(g.copy())
        self._collect_input_grads(targets, dins, input_names)
        late = self._late_params(params)
        targets = self._collect_param_grads(
            [*targets, *(Target(p.name, "param", p.get(), str(p.get().dtype)) for p in late)],
            [*params, *late],
            rows,
        )
        self._undo_backward(baseline, [t for t in targets if t.kind == "param"])
        if not targets:
            raise GradcheckUsageError(
                f"{self.label}: nothing to check: no floating-point input (or inputs=False) and "
                "no parameter with a gradient was found; see the supported conventions in the "
                "README, or teach yours with a pytest_gradcheck_layer_parameters hook"
            )
        terms_abs_sum = float(np.sum(np.abs(out_a * g))) + sum(abs(t()) for t in loss_terms)
        noise = numeric.objective_noise(terms_abs_sum, precision)
        tol = numeric.make_tolerance(rtol, opts.atol, noise, eps)

        evaluate = self._evaluator(
            prepare if (patch or used) else None, work if not mutated else call_inputs, g,
            loss_terms,
        )
        verdicts = self._run_mode(opts, targets, evaluate, f_zero, eps, tol, self.notes)
        # A stream no forward drew from while setting up was left alone; if some evaluation did
        # draw from it after all, the numbers are unreliable: redo with every stream reset.
        if any(s.changed() for s in sources if s not in used):
            self.notes.append("a random stream was used only by some evaluations: rechecked "
                              "with every stream reset before every evaluation")
            prepare = self._preparer(patch, sources)
            evaluate = self._evaluator(prepare, work if not mutated else call_inputs, g,
                                       loss_terms)
            verdicts = self._run_mode(opts, targets, evaluate, f_zero, eps, tol, [])

        # A layer can compute in float32 inside and still return float64 (x.astype(float32) @
        # W.astype(float32)). Its noise then fails a correct backward, so before blaming the
        # backward, measure the noise (a few evaluations, spent on failures only) and, if only
        # low precision explains it, judge again with that precision's step and tolerance.
        if (
            not all(v.ok for v in verdicts)
            and precision == "float64"
            and opts.eps is None
            and opts.rtol is None
        ):
            measured = modes.noise_probe(
                targets[0], evaluate, f_zero, streams.stream(opts.seed, streams.NOISE_PROBE)
            )
            hidden = numeric.precision_from_noise(measured, terms_abs_sum)
            if hidden != "float64":
                precision = hidden
                eps, rtol = numeric.PRECISION_DEFAULTS[hidden]
                noise = max(measured, numeric.objective_noise(terms_abs_sum, hidden))
                tol = numeric.make_tolerance(rtol, opts.atol, noise, eps)
                self.notes.append(
                    f"the objective's measured noise ({measured:.1e}, "
                    f"{measured / terms_abs_sum:.0e}"
                    f" of its terms) shows the layer computes in {hidden} inside although it "
                    f"returns float64: judged again with step {eps:g} and rtol {rtol:g}; errors "
                    f"below about {rtol:g} go unseen"
                )
                verdicts = self._run_mode(opts, targets, evaluate, f_zero, eps, tol, [])

        entries = [self._entry(t, v) for t, v in zip(targets, verdicts)]
        result = CheckResult(
            label=self.label,
            seed=opts.seed,
            mode=opts.mode,
            precision=precision,
            eps=eps,
            rtol=rtol,
            atol=tol.atol,
            entries=[*input_rows, *entries, *rows],
            notes=self.notes,
            forward_calls=self.forward_calls,
            backward_calls=self.backward_calls,
        )
        return result

    # -- helpers ----------------------------------------------------------------------------

    def _run_mode(self, *args: Any) -> list[modes.ArrayVerdict]:
        """`modes.run_mode`, whose own usage errors (a vanishing step) name only the array:
        they get the layer's name in front, as every other usage error has."""
        try:
            return modes.run_mode(*args)
        except GradcheckUsageError as exc:
            if str(exc).startswith(f"{self.label}: "):
                raise
            raise GradcheckUsageError(f"{self.label}: {exc}") from None

    def _output(self, out: Any) -> np.ndarray:
        arr = np.asarray(out)
        if not np.issubdtype(arr.dtype, np.floating):
            raise GradcheckUsageError(
                f"{self.label}: forward returned {arr.dtype} values; the output must be a "
                "floating-point array"
            )
        if not np.all(np.isfinite(arr)):
            raise GradcheckUsageError(
                f"{self.label}: forward produced non-finite values (nan or inf) on the given "
                "inputs; check the inputs' scale or the layer's numerics"
            )
        return arr

    def _loss_terms(self) -> list[Callable[[], float]]:
        terms = [(t, "a pytest_gradcheck_loss_terms term") for t in self.access.loss_terms()]
        if self.opts.extra_loss is not None:
            fn = self.opts.extra_loss
            subject = getattr(self.access, "layer", self.target)
            terms.append(((lambda: fn(subject)), "extra_loss"))
        return [self._guarded_term(t, what) for t, what in terms]

    def _guarded_term(self, term: Callable[[], Any], what: str) -> Callable[[], float]:
        """`term` as a float, with a usage error naming the layer if it raises or returns
        something that is not one number."""
        label = self.label

        def call() -> float:
            try:
                return float(term())
            except GradcheckUsageError:
                raise
            except Exception as exc:
                raise GradcheckUsageError(
                    f"{label}: {what} raised {type(exc).__name__}: {exc}; it must take the "
                    "layer and return one float"
                ) from exc

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
        float(np.vdot(g, out)) is overhead: this is `_forward` and `objective` inlined, with no
        call at all for an empty patch (prepare=None) or for inputs that need no fresh copy
        (`inputs` a list rather than a feeder).
        """
        forward = self.access.forward
        vdot = np.vdot
        terms = tuple(loss_terms)
        feeder = inputs if callable(inputs) else None
        fixed: list[Any] = [] if callable(inputs) else inputs

        def evaluate() -> float:
            if prepare is not None:
                prepare()
            self.forward_calls += 1
            try:
                out = forward(fixed if feeder is None else feeder())
            except GradcheckUsageError:
                raise
            except Exception as exc:
                raise GradcheckUsageError(
                    f"{self.label}: forward raised {type(exc).__name__}: {exc}"
                ) from exc
            total = float(vdot(g, out))
            for term in terms:
                total += term()
            return total

        return evaluate

    @staticmethod
    def _input_feeder(work: list[Any], mutated: set[int]) -> Callable[[], list[Any]]:
        if not mutated:
            return lambda: work
        return lambda: [x.copy() if id(x) in mutated else x for x in work]

    def _nondeterministic(self, a: np.ndarray, b: np.ndarray) -> None:
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
        raise NondeterministicLayerError(
            f"{self.label}: two forward passes from the same state gave different outputs "
            f"(max difference {diff:.3g}). The layer draws from a random source the checker "
            "cannot reset (for example a module-level generator or one created inside "
            "forward). Keep the generator on the layer (self.rng = np.random.default_rng()), "
            "pass it as random_sources=[gen], or return it from a "
            "pytest_gradcheck_random_sources hook implementation in conftest.py."
        )

    def _zero_grads(self, params: list[Param]) -> None:
        # Layers that accumulate (+=) need zeros; layers that assign are unaffected.
        for p in params:
            grad = p.grad() if p.grad is not None else None
            if isinstance(grad, np.ndarray) and grad.flags.writeable:
                grad[...] = 0

    def _collect_input_grads(
        self, targets: list[Target], dins: Sequence[Any], names: list[str]
    ) -> None:
        if len(dins) > len(names):
            raise GradcheckUsageError(
                f"{self.label}: backward returned {len(dins)} input gradients for "
                f"{len(names)} input(s); return one gradient per forward input, in order "
                "(None for an input without one)"
            )
        by_name = {n: i for i, n in enumerate(names)}
        for t in targets:
            if t.kind != "input":
                continue
            i = by_name[t.name]
            grad = dins[i] if i < len(dins) else None
            if grad is None:
                raise GradcheckUsageError(
                    f"{self.label}: backward returned no gradient for input {t.name!r}; return "
                    "it from backward (a tuple for several inputs), set self.dinputs, or pass "
                    "inputs=False to check parameters only"
                )
            t.analytic = self._grad_array(grad, t, "input")

    def _late_params(self, params: list[Param]) -> list[Param]:
        """Parameters recognisable only once backward has created their gradient (`w`/`dw`)."""
        known = {p.name for p in params}
        late, _ = self._select_params(
            self._not_inputs([p for p in self.access.parameters() if p.name not in known]),
            validate=False,
        )
        for p in late:
            value = p.get()
            if value.dtype != np.float64 or not value.flags.c_contiguous:
                raise GradcheckUsageError(
                    f"{self.label}: parameter {p.name!r} was recognised only after backward "
                    f"created its gradient, and is {value.dtype}: create the gradient in "
                    "__init__, or name the pair W/dW, b/db, weights/dweights, ..."
                )
        return late

    def _undo_backward(self, baseline: Snapshot, params: list[Target]) -> None:
        """Put back whatever backward changed (an optimizer step inside backward, caches), so
        the numeric evaluations see the same parameters as the analytic pass."""
        before = [baseline.saved_array(t.array) for t in params]
        stepped = [
            t.name for t, b in zip(params, before) if b is not None and not np.array_equal(
                t.array, b, equal_nan=True)
        ]
        if stepped:
            self.notes.append(
                "backward changed parameter(s) " + ", ".join(stepped) + " in place (an "
                "optimizer step?); they were put back before the numeric evaluations"
            )
        baseline.restore()

    def _collect_param_grads(
        self, targets: list[Target], params: list[Param], rows: list[Entry]
    ) -> list[Target]:
        """Attach gradients; returns the targets left once optional gradient-less entries
        (running statistics in a parameter dict) have moved to `rows` as not differentiated."""
        by_name = {p.name: p for p in params}
        kept = []
        for t in targets:
            if t.kind != "param":
                kept.append(t)
                continue
            p = by_name[t.name]
            grad = p.grad() if p.grad is not None else None
            for alias in t.aliases:
                q = by_name[alias]
                extra = q.grad() if q.grad is not None else None
                if grad is not None and extra is not None:
                    grad = np.asarray(grad, dtype=np.float64) + self._grad_array(extra, t, alias)
            if grad is None and not p.required:
                rows.append(Entry(t.name, "param", tuple(t.array.shape), t.orig_dtype,
                                  NOT_DIFFERENTIATED, size=t.array.size))
                continue
            if grad is None:
                raise GradcheckUsageError(
                    f"{self.label}: parameter {t.name!r} has no gradient after backward; "
                    "backward must store it (grads[name] or d<name>), or exclude the parameter "
                    "with params=[...]"
                )
            t.analytic = self._grad_array(grad, t, "parameter")
            kept.append(t)
        return kept

    def _grad_array(self, grad: Any, t: Target, what: str) -> np.ndarray:
        if np.iscomplexobj(grad):
            raise GradcheckUsageError(
                f"{self.label}: gradient of {what} {t.name!r} is complex; backward must return "
                "a real floating-point array"
            )
        try:
            arr = np.array(grad, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            raise GradcheckUsageError(
                f"{self.label}: gradient of {what} {t.name!r} is a {type(grad).__name__} that "
                f"is not an array of numbers ({exc}); backward must return (or store) one "
                "float array per input and parameter"
            ) from None
        if arr.shape != t.array.shape:
            raise GradcheckUsageError(
                f"{self.label}: gradient of {what} {t.name!r} has shape {arr.shape}, expected "
                f"{t.array.shape}; backward must return one gradient element per element"
            )
        return arr

    def _entry(self, t: Target, v: modes.ArrayVerdict) -> Entry:
        shape = tuple(t.array.shape)
        worst_index = None
        if v.worst is not None:
            worst_index = tuple(int(i) for i in np.unravel_index(v.worst, shape))
        return Entry(
            name=t.name,
            kind=t.kind,
            shape=shape,
            dtype=t.orig_dtype,
            status=OK if v.ok else FAIL,
            max_rel_error=float(v.worst_error),
            worst_index=worst_index,
            analytic=float(v.worst_analytic),
            numeric=float(v.worst_numeric),
            kinks=v.kinks,
            failed=v.failed,
            checked=v.checked,
            size=t.array.size,
            failed_mask=v.failed_mask,
        )
