"""Value-and-gradient functions: `f(*args) -> (loss, grads)`, whose gradients belong to the
arguments or to weights pointed at outside the call; and what the other loss-shaped adapters
(`shapes`, `pairs`, `backprop`) share with them: gradients scaled by the cotangent, calls whose
errors name the code the user wrote. Reading the loss and the gradients out of what was returned
is `returns`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .access import (
    STATISTIC_MARKERS,
    LayerAccess,
    Param,
    _positional_names,
    callable_owner,
    is_float_scalar,
    layer_label,
)
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .pointers import Pointer, suggest
from .returns import Trailing, describe, read
from .tree import is_container, leaves


def grad_like(name: str) -> bool:
    """`dout`, `dy`, `dvalues`, `grad_output`, `delta`: a parameter that receives a gradient."""
    low = name.lower()
    return "grad" in low or low.startswith("delta") or (
        low.startswith("d") and len(low) > 1 and low not in ("data", "dim", "dims", "dtype")
    )


def scaled(grad: Any, scale: float) -> Any:
    """A returned gradient times the objective's cotangent; anything that is not an array of
    real numbers (a string, a ragged list, complex values) is passed on as it is, for the
    checker to give its array an error row that says what is wrong."""
    if grad is None:
        return None
    try:
        arr = np.asarray(grad)
    except ValueError:
        return grad
    return arr * scale if arr.dtype.kind in "fiub" else grad


def called(fn: Callable[..., Any], args: Sequence[Any], label: str, what: str) -> Any:
    """`fn(*args)`, an exception it raises named after `what` (the code the user wrote is a
    loss function or method, not a forward)."""
    try:
        return fn(*args)
    except GradcheckUsageError:
        raise
    except Exception as exc:
        raise GradcheckUsageError(f"{label}: {what} raised {type(exc).__name__}: {exc}") from exc


def is_parameter_tree(value: Any) -> bool:
    """A structure of parameters to check leaf by leaf (`parameters` with `W1`, `b1`, ...;
    `[W, b]`), as opposed to a configuration dict passed along (cs231n's `bn_param`,
    `dropout_param`): it holds at least one float array, and, if a dict, has no `mode` key and
    no float array named like a statistic (`running_mean`)."""
    if not is_container(value):
        return False
    found = [(path, v) for path, v in leaves(value) if is_float_array(v) or is_float_scalar(v)]
    if not found:
        return False
    if isinstance(value, Mapping):
        if "mode" in value:
            return False
        if all(path and any(m in str(path[-1]).lower() for m in STATISTIC_MARKERS)
               for path, _ in found):
            return False
    return True


def _by_shapes(have: list[tuple[int, ...]], want: list[tuple[int, ...]]) -> list[int] | None:
    """For each wanted shape in order, the first value not taken yet that has it; None if one
    has none."""
    taken: list[int] = []
    for shape in want:
        found = next((i for i, h in enumerate(have) if h == shape and i not in taken), None)
        if found is None:
            return None
        taken.append(found)
    return taken


# -- value-and-gradient functions --------------------------------------------------------------


class ValueAndGradAccess(LayerAccess):
    """A function `f(*args) -> (loss, grads)`; the objective is `loss`.

    `grads` is one array (the gradient of the first float-array argument of its shape), a
    tuple/list (one per float-array argument, in order) or a dict keyed by argument name; `wrt`
    (positions or names) says which arguments a tuple's or a single array's gradients belong
    to. Float-array arguments without a gradient are held fixed (`fixed_inputs`).

    What is returned may hold more than the loss and the gradients (`returns.read`): the loss
    first or last, then the gradients as one structure or as values one after another, and
    values that are no gradient (state such as `hs[-1]`) after them; `grad_positions` (the
    `grads=` option) says where the gradients are when that reading cannot tell.

    `pointers` (the `params=` option pointing at weights outside the call) are parameters:
    the gradients returned belong to them, in their order (or keyed by their names), and the
    arguments are data, held fixed unless `wrt` names them.
    """

    def __init__(self, fn: Callable[..., Any], label: str | None = None) -> None:
        self.fn = fn
        self.label = label or layer_label(fn)
        self.wrt: tuple[int | str, ...] | None = None
        self.grad_positions: tuple[int, ...] | None = None
        self.pointers: tuple[Pointer, ...] = ()
        self._args: Sequence[Any] = ()
        self._returned: Any = None  # the gradients the latest call returned, as returned
        self._count = 0  # how many values the latest call returned (0: not a tuple)
        self._mapped: list[Any] | None = None  # the same, per argument (built when asked for)
        self._pointed: list[Any] = []  # the same, per pointer (built with `_mapped`)
        self._scaled: list[Any] = []  # per pointer, times the cotangent (set by backward)
        self._by_shape: str | None = None  # how a lone gradient was assigned, when ambiguous
        self._layout: str | None = None  # how a long tuple was read, when values were left over

    def input_names(self, n: int) -> list[str]:
        names = _positional_names(self.fn)
        return names[:n] if len(names) >= n else super().input_names(n)

    def state_roots(self) -> list[Any]:
        """The object behind a bound method or a callable instance: its state (counters,
        caches, its own generators) is reset before every evaluation and restored after; and
        the weights pointed at outside the call."""
        owner = callable_owner(self.fn)
        pointed = [v for v in (p.get() for p in self.pointers) if isinstance(v, np.ndarray)]
        return ([] if owner is None else [owner]) + pointed

    def outside_bindings(self) -> Sequence[Pointer]:
        return self.pointers

    def forward(self, inputs: Sequence[Any]) -> Any:
        res = called(self.fn, inputs, self.label, f"{getattr(self.fn, '__name__', 'f')}()")
        reading = read(res, self.label, self.grad_positions)
        loss, grads = reading.loss, reading.grads
        if reading.note:
            self._layout = reading.note
        self._args = inputs
        # Mapped to the arguments only when backward or fixed_inputs asks, not on every
        # numeric evaluation.
        self._returned, self._mapped = grads, None
        self._count = len(res) if isinstance(res, (tuple, list)) else 0
        return loss

    @property
    def _grads(self) -> list[Any]:
        """The latest call's gradients, one per argument (None where there is none)."""
        if self._mapped is None:
            returned = self._gradients()
            if self.pointers:
                self._mapped = self._per_pointer(returned, self._args)
            else:
                self._mapped = self._per_argument(returned, self._args)
        return self._mapped

    def _gradients(self) -> Any:
        """The gradients the latest call returned, as returned."""
        return self._returned

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        scale = float(dout)
        per_argument = [scaled(g, scale) for g in self._grads]
        self._scaled = [scaled(g, scale) for g in self._pointed]
        return per_argument

    def parameters(self) -> list[Param]:
        """One parameter per weight pointed at; its gradient is the one returned for it."""
        return [Param(p.name, p.get, p.set if p.settable() else None,
                      functools.partial(self._pointer_grad, j), self.label,
                      grad_source=f"the gradient returned for {p.name}")
                for j, p in enumerate(self.pointers)]

    def _pointer_grad(self, j: int) -> Any:
        return self._scaled[j] if j < len(self._scaled) else None

    def fixed_inputs(self) -> set[int]:
        grads = self._grads
        return {i for i, a in enumerate(self._args)
                if (is_float_array(a) or is_container(a)) and (i >= len(grads) or grads[i] is None)}

    def extra_loss_args(self, obj: Any) -> tuple[Any, ...]:
        return tuple(self._args)

    def notes(self) -> list[str]:
        return [n for n in (self._layout, self._by_shape) if n]

    def tree_inputs(self, args: Sequence[Any]) -> set[int]:
        """A parameters dict or list (`f(X, Y, parameters)`) and Python floats (`f(x, theta)`)
        are checked leaf by leaf; a configuration dict (`bn_param`) is not."""
        return {i for i, a in enumerate(args) if is_float_scalar(a) or is_parameter_tree(a)}

    def _trim(self, values: Trailing, owners: list[str], shapes: list[tuple[int, ...]]) -> tuple[
            Any, ...]:
        """Of values returned one after another, the gradients: the first one per owner (the
        pointed weights or arguments they belong to), each of its owner's shape; the rest are
        reported as left out of the check."""
        k, n, start = len(owners), len(values), values.start
        outside = None if self.pointers else suggest(self.fn, [np.shape(v) for v in values])
        if k == 0 and any(isinstance(v, np.ndarray) for v in values):
            raise GradcheckUsageError(
                f"{self.label}: returned {n} value(s) besides the loss, and no argument is a "
                "float array for them to be the gradients of; "
                + self._point_at([np.shape(v) for v in values])
            )
        if n < k:
            raise GradcheckUsageError(
                f"{self.label}: returned {n} value(s) besides the loss for {k} gradient(s) "
                f"({', '.join(owners)}); return one gradient per parameter in that order, or "
                "pass grads=[their positions]"
            )
        for j in range(k):
            if np.shape(values[j]) != shapes[j]:
                fit = _by_shapes([np.shape(v) for v in values], shapes)
                fix = (f"grads={[start + i for i in fit]!r} (the first values of those "
                       "shapes, in order)" if fit is not None
                       else "grads=[their positions] in what is returned")
                if outside:
                    fix = (f"{outside} if they are the gradients of the weights the function "
                           "reads from outside (globals, closure cells), whose shapes they "
                           f"have in that order; if they are the arguments', {fix}")
                raise GradcheckUsageError(
                    f"{self.label}: the value at position {start + j} ({describe(values[j])}) "
                    f"was taken as the gradient of {owners[j]}, of shape {shapes[j]}; the "
                    "gradients are read in the order of the parameters right after the loss "
                    "(or before it, when the loss is last): return them in that order, or "
                    f"pass {fix}"
                )
        if n > k:
            loss_at = 0 if start == 1 else self._count - 1
            extra = [f"position {start + j} ({describe(values[j])})" for j in range(k, n)]
            self._layout = (
                f"returned {self._count} values: the loss at position {loss_at}, the gradients "
                f"of {', '.join(owners)} at positions {start} to {start + k - 1}, and "
                f"{', '.join(extra)} left out of the check as no gradient; if that is one, "
                "pass grads=[the gradients' positions]"
            )
        return tuple(values[:k])

    # -- whose gradients ---------------------------------------------------------------------

    def _per_pointer(self, grads: Any, args: Sequence[Any]) -> list[Any]:
        """Gradients for the pointed weights (and the arguments `wrt` names, after them):
        values one after another or a tuple in that order, a dict keyed by their names (or
        `d<name>`), or one array for one weight. Arguments without a gradient are data."""
        n = len(args)
        names = self.input_names(n)
        wrt = self._wrt_positions(names, args) if self.wrt else []
        owners = [p.name for p in self.pointers] + [names[i] for i in wrt]
        shapes = [np.shape(p.get()) for p in self.pointers] + [np.shape(args[i]) for i in wrt]
        k = len(self.pointers)
        per: list[Any] = [None] * n
        if isinstance(grads, Trailing):
            grads = self._trim(grads, owners, shapes)
        if isinstance(grads, dict):
            known = {**{o: j for j, o in enumerate(owners)},
                     **{f"d{o}": j for j, o in enumerate(owners)}}
            unknown = [key for key in grads if key not in known]
            if unknown:
                raise GradcheckUsageError(
                    f"{self.label}: the gradient dict has key(s) {', '.join(map(repr, unknown))}"
                    f", which name(s) no weight pointed at with params= (nor d<name>); keys "
                    f"must be among {', '.join(owners)}"
                )
            ordered: list[Any] = [None] * len(owners)
            for key, g in grads.items():
                ordered[known[key]] = g
            grads = ordered
        elif isinstance(grads, np.ndarray) or np.isscalar(grads):
            grads = [grads]
        if not isinstance(grads, (tuple, list)) or len(grads) != len(owners):
            got = (f"{len(grads)} gradient(s)" if isinstance(grads, (tuple, list))
                   else describe(grads))
            raise GradcheckUsageError(
                f"{self.label}: returned {got} for the {len(owners)} weight(s) pointed at "
                f"with params= ({', '.join(owners)}); return one per weight in that order, or "
                "a dict keyed by their names"
            )
        self._pointed = list(grads[:k])
        for i, g in zip(wrt, grads[k:]):
            per[i] = g
        return per

    def _point_at(self, shapes: list[tuple[int, ...]]) -> str:
        """The fix for gradients with no argument to belong to: point at the weights."""
        found = suggest(self.fn, shapes)
        return ("if they are the gradients of weights the function reads from outside "
                "(globals, closure cells), point at them: "
                + (found or 'params={"W": (module_or_container, "W"), ...}'))

    def _position(self, key: int | str, names: list[str], n: int) -> int:
        if isinstance(key, int) and -n <= key < n:
            return key % n
        if isinstance(key, str) and key in names[:n]:
            return names.index(key)
        raise GradcheckUsageError(
            f"{self.label}: wrt={list(self.wrt or ())!r}: {key!r} is no argument; arguments "
            f"are {', '.join(names[:n])} (positions 0 to {n - 1})"
        )

    def _wrt_positions(self, names: list[str], args: Sequence[Any]) -> list[int]:
        """`wrt` as argument positions: each a distinct float-array argument."""
        n = len(args)
        wrt = [self._position(k, names, n) for k in self.wrt or ()]
        given = list(self.wrt or ())
        for j, i in enumerate(wrt):
            if i in wrt[:j]:
                raise GradcheckUsageError(
                    f"{self.label}: wrt={given!r} names argument {names[i]!r} twice; "
                    "name each argument a gradient belongs to once, in the order the "
                    "gradients are returned"
                )
            if not (is_float_array(args[i]) or is_container(args[i])):
                what = (f"a {args[i].dtype} array" if isinstance(args[i], np.ndarray)
                        else describe(args[i]))
                raise GradcheckUsageError(
                    f"{self.label}: wrt={given!r}: {names[i]!r} is {what}, not a float "
                    "array or a structure of them: only those have gradients to check"
                )
        return wrt

    def _holder_of(self, grads: dict[Any, Any], args: Sequence[Any]) -> int | None:
        """The one dict argument whose entries the gradient dict's keys name (`W1`, or `dW1`
        for `W1`): its gradients, in its own structure. Failing one whose entries every key
        names, the one dict argument some keys name (a backward that also returns the
        gradients of intermediate values, `dZ1`, `dA1`): those other keys are reported as not
        checked."""
        holders = [i for i, a in enumerate(args) if isinstance(a, Mapping)]

        def names_entry(k: Any, arg: Mapping[Any, Any]) -> bool:
            return k in arg or (isinstance(k, str) and k.startswith("d") and k[1:] in arg)

        found = [i for i in holders if all(names_entry(k, args[i]) for k in grads)]
        if len(found) == 1:
            return found[0]
        some = [i for i in holders if any(names_entry(k, args[i]) for k in grads)]
        if len(some) != 1:
            return None
        other = [str(k) for k in grads if not names_entry(k, args[some[0]])]
        names = self.input_names(len(args))
        self._layout = (
            f"gradient entries {', '.join(other)} name no entry of {names[some[0]]}: left out "
            "of the check (gradients of intermediate values?)"
        )
        return some[0]
    def _per_argument(self, grads: Any, args: Sequence[Any]) -> list[Any]:
        n = len(args)
        names = self.input_names(n)
        floats = [i for i, a in enumerate(args) if is_float_array(a)]
        wrt = self._wrt_positions(names, args) if self.wrt else None
        per: list[Any] = [None] * n
        if isinstance(grads, Trailing):
            owners = wrt if wrt is not None else floats
            grads = self._trim(grads, [names[i] for i in owners],
                               [np.shape(args[i]) for i in owners])
        if wrt is not None and len(wrt) == 1 and is_container(args[wrt[0]]):
            per[wrt[0]] = grads  # a structure's gradients, in its own structure
            return per
        if wrt is None and n == 1 and is_container(args[0]):
            per[0] = grads  # f(params) -> (loss, grads): the universal form
            return per
        if isinstance(grads, dict) and not set(grads) <= set(names[:n]):
            holder = self._holder_of(grads, args)
            if holder is not None and (wrt is None or holder in wrt):
                per[holder] = grads
                return per
        if isinstance(grads, dict):
            for key, g in grads.items():
                if key not in names and isinstance(key, str) and key[1:] in names[:n] and (
                        key.startswith("d")):
                    key = key[1:]  # `dw` for argument `w`
                if key not in names:
                    dicts = [names[i] for i in range(n) if isinstance(args[i], Mapping)]
                    raise GradcheckUsageError(
                        f"{self.label}: the gradient dict has key {key!r}, which is no argument "
                        f"name (nor d<name>); keys must be among {', '.join(names[:n])}"
                        + (f", or name the entries of {', '.join(dicts)}" if dicts else "")
                    )
                i = names.index(key)
                if wrt is None or i in wrt:
                    per[i] = g
            return per
        if isinstance(grads, (tuple, list)):
            targets = wrt if wrt is not None else floats
            if len(grads) != len(targets):
                listed = ", ".join(names[i] for i in targets) or "none"
                fix = ("pass wrt=[...] with the arguments (positions or names) the gradients "
                       "belong to, in order")
                if not targets:
                    fix = self._point_at([np.shape(g) for g in grads])
                raise GradcheckUsageError(
                    f"{self.label}: returned {len(grads)} gradient(s) for {len(targets)} "
                    f"float-array argument(s) ({listed}); {fix}"
                )
            for i, g in zip(targets, grads):
                per[i] = g
            return per
        if isinstance(grads, np.ndarray) or np.isscalar(grads):
            if wrt is not None:
                if len(wrt) != 1:
                    raise GradcheckUsageError(
                        f"{self.label}: returned one gradient but wrt names {len(wrt)} "
                        "arguments; name the one it belongs to"
                    )
                per[wrt[0]] = grads
                return per
            same = [i for i in floats if np.shape(args[i]) == np.shape(grads)]
            if not same:
                fix = ("pass wrt=<position or name> of the argument it belongs to" if floats
                       else self._point_at([np.shape(grads)]))
                raise GradcheckUsageError(
                    f"{self.label}: returned one gradient of shape {np.shape(grads)}, and no "
                    f"float-array argument has that shape; {fix}"
                )
            per[same[0]] = grads
            if len(same) > 1:
                first, other = names[same[0]], names[same[1]]
                self._by_shape = (
                    f"the one gradient returned was taken as {first}'s, the first float "
                    f"argument of its shape {np.shape(grads)}; if it belongs to {other}, pass "
                    f"wrt=[{other!r}]"
                )
            return per
        raise GradcheckUsageError(
            f"{self.label}: the gradients (second value returned) must be an array, a "
            f"tuple/list of arrays or a dict keyed by argument name, got {describe(grads)}"
        )
