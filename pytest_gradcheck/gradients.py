"""Backward's gradients: read for every checked array, and what backward changed put back.

A missing, never-written or unusable gradient becomes an `error` row for its array while the
other arrays are still judged; a gradient that can be used is taken as it is (lent, read-only)
rather than copied where that is sound (`Gradients._lent`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from . import tree
from .access import Param, unwritten_gradient_message
from .arrays import Arrays, error_entry
from .phases import Attempt, CheckedArray
from .result import NOT_DIFFERENTIATED, Entry
from .state import Snapshot


class Gradients:
    """Backward's gradients for the arrays `Arrays` chose, in one attempt."""

    def __init__(self, arrays: Arrays, attempt: Attempt) -> None:
        self.arrays = arrays
        self.calls = arrays.calls
        self.attempt = attempt
        self.notes = arrays.notes

    @staticmethod
    def zero_grads(params: list[Param]) -> list[np.ndarray]:
        """Zero the gradients before backward; returns the arrays this or `arm_gradients`
        writes into (every writeable gradient array)."""
        # Layers that accumulate (+=) need zeros; layers that assign are unaffected. Float
        # gradients are left to `arm_gradients`, which fills them with -0.0 right after (a zero
        # to += into): zeroing them first too would cost one more pass over each.
        written = []
        for p in params:
            grad = p.grad() if p.grad is not None else None
            if isinstance(grad, np.ndarray) and grad.flags.writeable:
                written.append(grad)
                if not (grad.dtype.kind == "f" and grad.size):
                    grad[...] = 0
        return written

    def collect_input_grads(
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
            raise self.calls.usage(
                f"backward returned {len(dins)} input gradients for "
                f"{len(names)} input(s); return one gradient per forward input, in order "
                "(None for an input without one)"
            )
        by_name = {n: i for i, n in enumerate(names)}
        work = self.arrays.work
        by_array = {id(leaf): i for i in self.arrays.trees for _, leaf in tree.leaves(work[i])}
        for a in arrays:
            if a.kind != "input":
                continue
            i = by_name[a.name] if a.path is None else by_array[id(a.array)]
            grad = dins[i] if i < len(dins) else None
            if grad is not None and a.path:
                grad = tree.gradient_at(grad, a.path)
            if grad is None:
                rows.append(error_entry(
                    a,
                    f"backward returned no gradient for input {a.name!r}; return "
                    "it from backward (a tuple for several inputs), set self.dinputs, or pass "
                    "inputs=False to check parameters only",
                ))
                continue
            found = self._grad_array(grad, a, "input")
            if isinstance(found, str):
                rows.append(error_entry(a, found))
            else:
                a.analytic = found

    def collect_param_grads(
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
        a gradient (`collect_input_grads` gave them an error row) are left out too."""
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
                rows.append(error_entry(
                    a, f"reading the gradient of parameter {a.name!r} raised "
                    f"{type(exc).__name__}: {exc}",
                ))
                continue
            stale = [n for n in (a.name, *a.aliases) if n in unwritten]
            if stale:
                rows.append(error_entry(
                    a, unwritten_gradient_message(stale[0], by_name[stale[0]].grad_source)))
                continue
            if grad is None and not p.required:
                rows.append(Entry(a.name, "param", tuple(a.array.shape), a.orig_dtype,
                                  NOT_DIFFERENTIATED, size=a.array.size))
                continue
            if grad is None:
                where = (f"none came as {p.grad_source}" if p.grad_source.startswith(
                    ("the gradient returned", "backprop()")) else
                    "backward must store it (grads[name] or d<name>)")
                rows.append(error_entry(
                    a, f"parameter {a.name!r} has no gradient after backward; {where}; if it "
                    f"has none on purpose, declare it with frozen=[{a.name!r}], or leave it "
                    "out with params=[...]",
                ))
                continue
            total = self._grad_array(grad, a, "parameter")
            for alias, extra in tied:
                if isinstance(total, str) or extra is None:
                    continue
                more = self._grad_array(extra, a, "parameter", alias)
                total = more if isinstance(more, str) else total + more
            if isinstance(total, str):
                rows.append(error_entry(a, total))
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
        checked array."""
        attempt = self.attempt
        baseline = attempt.baseline
        if (attempt.protect_bytes is None or baseline is None
                or type(grad) is not np.ndarray or grad.dtype != np.float64
                or grad.shape != shape
                or grad.base is not None or not grad.flags.writeable
                or not grad.flags.c_contiguous
                or baseline.saved_array(grad) is not None
                or attempt.original.saved_array(grad) is not None):
            return None
        grad.flags.writeable = False
        attempt.undo.push(lambda: setattr(grad.flags, "writeable", True))
        return grad

    def undo_backward(
        self, baseline: Snapshot, params: list[CheckedArray], zeroed: list[np.ndarray]
    ) -> None:
        """Put back whatever backward changed (an optimizer step inside backward, caches), so
        the numeric evaluations see the same parameters as the analytic pass; the gradients
        zeroed before backward (`zeroed`) are copied back without a comparison."""
        # Restoring compares every recorded array bit for bit anyway: the parameters it had to
        # rewrite are the ones backward changed (an equal_nan comparison beforehand would cost
        # several times a bitwise one).
        rewritten = {id(arr) for arr in baseline.restore(
            [g for g in zeroed if all(g is not a.array for a in params)])}
        stepped = [a.name for a in params if id(a.array) in rewritten]
        if stepped:
            self.notes.append(
                "backward changed parameter(s) " + ", ".join(stepped) + " in place (an "
                "optimizer step?); they were put back before the numeric evaluations"
            )
