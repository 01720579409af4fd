"""Every call into the user's code during a check: counted, validated, and turned into usage
errors that name the layer; the numeric evaluations, and the checks that they repeat.

A layer's nondeterminism can be rare (one call in eight) or small (one bit of one element), so
two setup passes may agree by chance; the evaluations themselves are watched too (a verdict
rule, `docs/verdicts.md`):
- the 1st, 2nd, 4th, 8th, ... evaluation of every run of the mode is made twice, and the two
  values must be bit-identical (`repeats(n)` more forward passes for n evaluations);
- before verdicts with kinks or failures are given (what noisy evaluations turn into), the
  unperturbed point is evaluated CONFIRMATIONS more times, each bit-identical to the analytic
  pass's objective. A layer noisy in one call out of eight passes them all by chance with
  probability (7/8)**32 = 1.4%, on top of the repeats.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .access import LayerAccess
from .errors import GradcheckUsageError, NondeterministicLayerError
from .sources import RandomSource
from .state import Patch

# Evaluations of the unperturbed point that confirm a verdict with kinks or failures before it
# is given: a layer whose output varies on a fraction p of calls shows with probability
# 1 - (1 - p)^16 (every call's variation shows at the first).
CONFIRMATIONS = 16


def repeats(evaluations: int) -> int:
    """The forward passes the repeated evaluations add to a run of `evaluations`."""
    return evaluations.bit_length()


class Unrepeatable(Exception):
    """Two evaluations of the objective at the same point differed."""

    def __init__(self, first: float, second: float, when: str) -> None:
        super().__init__(first, second, when)
        self.first, self.second, self.when = first, second, when


class Calls:
    """The check's calls into one layer (through its `LayerAccess`): forward and backward
    counted, outputs validated, and anything the user's code raises turned into a usage error
    that names the layer (`usage`)."""

    def __init__(self, access: LayerAccess) -> None:
        self.access = access
        self.label = access.label
        self.forward_calls = 0
        self.backward_calls = 0

    # -- errors ------------------------------------------------------------------------------

    def usage(self, message: str) -> GradcheckUsageError:
        """A usage error about this layer: the message after its label."""
        return usage_error(self.label, message)

    def claim(self, exc: GradcheckUsageError) -> None:
        """Give `exc` (raised by an adapter or a hook while running this layer) its label, so
        it is not taken for one of the modes' own (which name only an array)."""
        if exc.label is None:
            exc.label = self.label

    def nondeterministic(self, a: np.ndarray, b: np.ndarray) -> NondeterministicLayerError:
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
        return self._nondeterminism(f"max difference {diff:.3g}")

    def unrepeatable(self, exc: Unrepeatable) -> NondeterministicLayerError:
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

    def shape_changed(
        self, before: tuple[int, ...], after: tuple[int, ...], when: str
    ) -> GradcheckUsageError:
        return self.usage(
            f"forward's output changed shape from {before} to {after} {when}, on inputs of "
            "the same shape; the check compares the outputs of repeated calls, so the output's "
            "shape must depend only on the inputs' shapes (not on a call counter or a cache)"
        )

    # -- forward and backward ----------------------------------------------------------------

    def forward(self, inputs: Sequence[Any]) -> np.ndarray:
        """One setup forward: its output validated (`output`)."""
        self.forward_calls += 1
        return self.output(self._user_call("forward", self.access.forward, inputs))

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
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
            raise self.usage(f"{what} raised {type(exc).__name__}: {exc}") from exc

    def output(self, out: Any) -> np.ndarray:
        """A setup forward's output: a finite floating-point array, else a usage error."""
        self._refuse_matrix_output(out)
        arr = np.asarray(out)
        if arr.dtype.kind != "f":  # not np.floating (np.issubdtype costs several times more)
            raise self.usage(
                f"forward returned {arr.dtype} values; the output must be a floating-point array"
            )
        if not np.all(np.isfinite(arr)):
            raise self.usage(
                "forward produced non-finite values (nan or inf) on the given inputs; check the "
                "inputs' scale or the layer's numerics"
            )
        return arr

    def _later_output(self, out: Any, shape: tuple[int, ...]) -> np.ndarray:
        """An evaluation's output that is not an ndarray of the setup passes' shape: a plain
        number or sequence is taken as an array; a changed shape or an np.matrix is refused
        (non-finite values are left to the verdict, as in an ndarray output)."""
        self._refuse_matrix_output(out)
        arr = np.asarray(out)
        if arr.shape != shape:
            raise self.shape_changed(shape, arr.shape, "during the numeric evaluations")
        return arr

    def _refuse_matrix_output(self, out: Any) -> None:
        if isinstance(out, np.matrix):
            raise self.usage(
                "forward returned an np.matrix; return a plain ndarray (np.asarray(...)): "
                "a matrix keeps two dimensions under indexing and reduction, so the checker "
                "cannot treat it as the layer's output"
            )

    # -- the objective -----------------------------------------------------------------------

    def loss_terms(self, extra_loss: Callable[..., Any] | None, obj: Any
                   ) -> list[Callable[[], float]]:
        """The objective's terms besides sum(g * out): the hooks' and `extra_loss`'s (which
        receives `access.extra_loss_args(obj)`), each guarded (`_guarded_term`)."""
        terms = [(t, "a pytest_gradcheck_loss_terms term") for t in self.access.loss_terms()]
        if extra_loss is not None:
            args = self.access.extra_loss_args
            terms.append(((lambda: extra_loss(*args(obj))), "extra_loss"))
        return [self._guarded_term(t, what) for t, what in terms]

    def _guarded_term(self, term: Callable[[], Any], what: str) -> Callable[[], float]:
        """`term` as a float, with a usage error naming the layer if it raises or returns
        something that is not one number."""
        usage, claim = self.usage, self.claim

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

    def evaluator(
        self,
        prepare: Callable[[], None] | None,
        inputs: list[Any] | Callable[[], list[Any]],
        g: np.ndarray,
        loss_terms: list[Callable[[], float]],
    ) -> Callable[[], float]:
        """One numeric evaluation: undo what forward changes, forward, the scalar objective.

        Full mode calls this 2N times, so everything above the bare forward pass and
        float(np.vdot(g, out)) is overhead: this is `forward` and `objective` inlined, with
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
                self.claim(exc)
                raise
            except Exception as exc:
                raise self.usage(f"forward raised {type(exc).__name__}: {exc}") from exc
            if type(out) is not ndarray or out.shape != shape:
                out = later_output(out, shape)
            total = float(vdot(g, out))
            for term in terms:
                total += term()
            return total

        return evaluate

    def confirm_unperturbed(self, once: Callable[[], float], f_zero: float) -> None:
        """CONFIRMATIONS evaluations of the unperturbed point, each bit-identical to the
        analytic pass's objective `f_zero`, else `Unrepeatable`."""
        for _ in range(CONFIRMATIONS):
            value = once()
            if not same_value(value, f_zero):
                raise Unrepeatable(f_zero, value,
                                   "at the unperturbed point, in the analytic pass and later")


def usage_error(label: str, message: str) -> GradcheckUsageError:
    """A usage error about the layer `label`: the message after its label."""
    return GradcheckUsageError(f"{label}: {message}", label=label)


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


def repeating(once: Callable[[], float]) -> Callable[[], float]:
    """`once`, made twice at its 1st, 2nd, 4th, 8th, ... call: a difference between the two
    values raises `Unrepeatable`."""
    calls, due = 0, 1

    def evaluate() -> float:
        nonlocal calls, due
        value = once()
        calls += 1
        if calls == due:
            due *= 2
            again = once()
            if not same_value(value, again):
                raise Unrepeatable(value, again, "at the same point, during the evaluations")
        return value

    return evaluate


def same_value(a: float, b: float) -> bool:
    """Bit for bit equal, as far as a comparison of floats can tell (NaN equals NaN)."""
    return a == b or (a != a and b != b)


def preparer(patch: Patch, used: Sequence[RandomSource]) -> Callable[[], None]:
    """One callable that applies `patch` and resets the streams `used`, before an evaluation."""
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


def input_feeder(work: list[Any], mutated: set[int]) -> Callable[[], list[Any]]:
    """One evaluation's inputs: fresh copies of those forward modifies in place (ids)."""
    if not mutated:
        return lambda: work
    return lambda: [x.copy() if id(x) in mutated else x for x in work]


def reset(sources: Sequence[RandomSource]) -> None:
    for s in sources:
        s.restore()


def objective(g: np.ndarray, out: Any, loss_terms: Sequence[Callable[[], float]]) -> float:
    """sum(g * out) plus the loss terms: the scalar whose gradient backward computes."""
    total = float(np.vdot(g, out))
    for term in loss_terms:
        total += term()
    return total
