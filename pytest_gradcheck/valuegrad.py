"""Value-and-gradient functions: `f(*args) -> (loss, grads)`, and the reading of what such code
returns that the other loss-shaped adapters (`shapes`) share: one real number, gradients scaled by
the cotangent, calls whose errors name the code the user wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .access import LayerAccess, _positional_names, callable_owner, is_float_scalar, layer_label
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .tree import is_container, leaves


def grad_like(name: str) -> bool:
    """`dout`, `dy`, `dvalues`, `grad_output`, `delta`: a parameter that receives a gradient."""
    low = name.lower()
    return "grad" in low or low.startswith("delta") or (
        low.startswith("d") and len(low) > 1 and low not in ("data", "dim", "dims", "dtype")
    )


def scalar(value: Any) -> np.ndarray | None:
    """`value` as a 0-d real float array (its own precision kept), or None if it is not one
    real number."""
    arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic)) else None
    if arr is None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return np.array(float(value))
        return None
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.floating)
                             or np.issubdtype(arr.dtype, np.integer)):
        return None
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


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


def describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


# -- value-and-gradient functions --------------------------------------------------------------


class ValueAndGradAccess(LayerAccess):
    """A function `f(*args) -> (loss, grads)`; the objective is `loss`.

    `grads` is one array (the gradient of the first float-array argument of its shape), a
    tuple/list (one per float-array argument, in order) or a dict keyed by argument name; `wrt`
    (positions or names) says which arguments a tuple's or a single array's gradients belong
    to. Float-array arguments without a gradient are held fixed (`fixed_inputs`).
    """

    def __init__(self, fn: Callable[..., Any], label: str | None = None) -> None:
        self.fn = fn
        self.label = label or layer_label(fn)
        self.wrt: tuple[int | str, ...] | None = None
        self._args: Sequence[Any] = ()
        self._returned: Any = None  # the gradients the latest call returned, as returned
        self._mapped: list[Any] | None = None  # the same, per argument (built when asked for)
        self._by_shape: str | None = None  # how a lone gradient was assigned, when ambiguous

    def input_names(self, n: int) -> list[str]:
        names = _positional_names(self.fn)
        return names[:n] if len(names) >= n else super().input_names(n)

    def state_roots(self) -> list[Any]:
        """The object behind a bound method or a callable instance: its state (counters,
        caches, its own generators) is reset before every evaluation and restored after."""
        owner = callable_owner(self.fn)
        return [] if owner is None else [owner]

    def forward(self, inputs: Sequence[Any]) -> Any:
        res = called(self.fn, inputs, self.label, f"{getattr(self.fn, '__name__', 'f')}()")
        loss, grads = self._loss_of(res)
        self._args = inputs
        # Mapped to the arguments only when backward or fixed_inputs asks, not on every
        # numeric evaluation.
        self._returned, self._mapped = grads, None
        return loss

    @property
    def _grads(self) -> list[Any]:
        """The latest call's gradients, one per argument (None where there is none)."""
        if self._mapped is None:
            self._mapped = self._per_argument(self._returned, self._args)
        return self._mapped

    def backward(self, dout: np.ndarray) -> Sequence[Any]:
        scale = float(dout)
        return [scaled(g, scale) for g in self._grads]

    def fixed_inputs(self) -> set[int]:
        grads = self._grads
        return {i for i, a in enumerate(self._args)
                if (is_float_array(a) or is_container(a)) and (i >= len(grads) or grads[i] is None)}

    def extra_loss_args(self, obj: Any) -> tuple[Any, ...]:
        return tuple(self._args)

    def notes(self) -> list[str]:
        return [self._by_shape] if self._by_shape else []

    def tree_inputs(self, args: Sequence[Any]) -> set[int]:
        """A parameters dict or list (`f(X, Y, parameters)`) and Python floats (`f(x, theta)`)
        are checked leaf by leaf."""
        return {i for i, a in enumerate(args)
                if is_float_scalar(a) or (is_container(a) and any(
                    is_float_array(v) or is_float_scalar(v) for _, v in leaves(a)))}

    def _loss_of(self, res: Any) -> tuple[np.ndarray, Any]:
        """(loss, gradients) from what the function returned: `(loss, grads)`, or
        `(grads, loss)` where the gradients (a dict, tuple or list) come first."""
        if (isinstance(res, (tuple, list)) and len(res) == 2 and scalar(res[0]) is None
                and isinstance(res[0], (dict, tuple, list)) and scalar(res[1]) is not None):
            return scalar(res[1]), res[0]  # type: ignore[return-value]
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise GradcheckUsageError(
                f"{self.label}: a function is checked as a value-and-gradient function and "
                f"must return (loss, gradients); it returned {describe(res)}. For a layer pass "
                "an object with forward() and backward(), for a cs231n-style pair pass "
                "(forward_fn, backward_fn)"
            )
        loss = scalar(res[0])
        if loss is None:
            hint = (" for a function returning (out, cache) pass the pair "
                    "(forward_fn, backward_fn)" if isinstance(res[0], np.ndarray) else
                    " return (loss, gradients) or (gradients, loss)")
            raise GradcheckUsageError(
                f"{self.label}: the loss (first value returned) must be one real number, got "
                f"{describe(res[0])};{hint}"
            )
        return loss, res[1]

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

    @staticmethod
    def _holder_of(grads: dict[Any, Any], args: Sequence[Any]) -> int | None:
        """The one dict argument whose keys the gradient dict's keys name (`W1`, or `dW1`
        for `W1`): its gradients, in its own structure."""
        holders = [i for i, a in enumerate(args) if isinstance(a, Mapping)]
        found = [i for i in holders
                 if all(k in args[i] or (isinstance(k, str) and k.startswith("d")
                                         and k[1:] in args[i]) for k in grads)]
        return found[0] if len(found) == 1 else None

    def _per_argument(self, grads: Any, args: Sequence[Any]) -> list[Any]:
        n = len(args)
        names = self.input_names(n)
        floats = [i for i, a in enumerate(args) if is_float_array(a)]
        wrt = self._wrt_positions(names, args) if self.wrt else None
        per: list[Any] = [None] * n
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
                raise GradcheckUsageError(
                    f"{self.label}: returned {len(grads)} gradient(s) for {len(targets)} "
                    f"float-array argument(s) ({listed}); pass wrt=[...] with the arguments "
                    "(positions or names) the gradients belong to, in order"
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
                raise GradcheckUsageError(
                    f"{self.label}: returned one gradient of shape {np.shape(grads)}, and no "
                    "float-array argument has that shape; pass wrt=<position or name> of the "
                    "argument it belongs to"
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
