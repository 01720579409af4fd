"""Which inputs and parameters a check judges, and the rows of the arrays it judges or not.

`Arrays` selects them (`params=`, `inputs=`), gives parameters float64 arrays the checker can
perturb in place, and refuses what no verdict could be given on (empty, non-finite, complex,
object or `np.matrix` arrays, an empty output). Every array the layer holds is either checked
or has a row saying why not. Backward's gradient for each is read by `gradients`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

from . import elements, tree
from .access import LayerAccess, Param, is_float_scalar
from .calls import Calls
from .errors import GradcheckUsageError
from .numeric import is_float_array
from .options import Options
from .phases import CheckedArray
from .pointers import PointedParams
from .result import (
    ERROR,
    FAIL,
    FROZEN,
    INTEGER_INPUT,
    NOT_DIFFERENTIATED,
    NOT_SELECTED,
    OK,
    PASSED_THROUGH,
    Entry,
)


class Arrays:
    """The arrays of one attempt: the working inputs and the parameters to check."""

    def __init__(self, calls: Calls, opts: Options, user_inputs: Sequence[Any],
                 notes: list[str]) -> None:
        self.calls = calls
        self.access: LayerAccess = calls.access
        self.opts = opts
        self.user_inputs = list(user_inputs)
        self.notes = notes  # the check's notes: what was done to the arrays is said there
        self.param_dtypes: dict[str, str] = {}  # parameter dtypes as the layer had them
        self.input_arrays: list[np.ndarray] = []  # the working copies of the array inputs
        self.trees: set[int] = set()  # positions of structured inputs (`tree_inputs`)
        self.work: list[Any] = []  # the working inputs
        self.listed: list[str] = []  # every parameter and input name seen, for `frozen=`
        # `params=` as names or patterns (None: all); pointers at weights select them all.
        self.patterns = None if isinstance(opts.params, PointedParams) else opts.params

    def is_frozen(self, name: str) -> bool:
        return any(fnmatchcase(name, pat) for pat in self.opts.frozen)

    def refuse_unknown_frozen(self) -> None:
        """`frozen=` names that match no parameter or input are a usage error naming them."""
        unknown = [pat for pat in self.opts.frozen
                   if not any(fnmatchcase(n, pat) for n in self.listed)]
        if unknown:
            raise self.calls.usage(
                f"frozen={list(self.opts.frozen)!r}: {', '.join(map(repr, unknown))} "
                f"match{'es' if len(unknown) == 1 else ''} no parameter or input; they are: "
                f"{', '.join(self.listed) or 'none'}"
            )

    # -- inputs ------------------------------------------------------------------------------

    def working_inputs(self) -> list[Any]:
        """Float64 copies of the float inputs (copies of other arrays; the rest as given)."""
        names = self.access.input_names(len(self.user_inputs))
        for name, x in zip(names, self.user_inputs):
            if isinstance(x, np.ndarray) and x.dtype == object:
                raise self.calls.usage(
                    f"input {name!r} is an object array, which the checker can neither perturb "
                    "nor pass through as data: pass a float array (np.asarray(x, dtype=float)) "
                    "or, for data, an integer array"
                )
            if isinstance(x, np.ndarray) and x.dtype.kind == "c":
                raise self.calls.usage(
                    f"input {name!r} is {x.dtype}; complex arrays are not "
                    "supported (the check differentiates real functions): pass the real and "
                    "imaginary parts as separate float inputs"
                )
        self._refuse_empty_inputs(names)
        self.trees = set(self.access.tree_inputs(self.user_inputs))
        work = []
        for i, x in enumerate(self.user_inputs):
            if i in self.trees:
                work.append(_working_tree(x))
            elif is_float_array(x):
                work.append(np.array(x, dtype=np.float64, order="C", copy=True))
            elif isinstance(x, np.ndarray):
                work.append(x.copy())
            else:
                work.append(x)
        if any(is_float_array(x) and x.dtype.itemsize < 8 for x in self.user_inputs):
            self.notes.append("low-precision inputs were checked on float64 copies")
        self.work = work
        self.input_arrays = [a for x in work for _, a in tree.leaves(x)
                             if isinstance(a, np.ndarray)]
        return work

    def _refuse_empty_inputs(self, names: list[str]) -> None:
        """An empty float input (a batch of shape (0, 4)) makes every gradient trivially zero:
        no backward could fail, so the check would pass anything."""
        for name, x in zip(names, self.user_inputs):
            if is_float_array(x) and x.size == 0:
                raise self.calls.usage(
                    f"nothing to check: input {name!r} has no elements (shape {x.shape}); "
                    "on an empty batch every gradient is zero and no backward could fail: "
                    "pass inputs with at least one element"
                )

    def refuse_non_finite_inputs(self, names: list[str], held_fixed: Collection[int]) -> None:
        """NaN or inf in a checked input: x + h is NaN too, so its row could only fail with a
        numeric NaN, blaming backward for the input. Inputs the access holds fixed (data such
        as a target with NaN marking missing values) are never perturbed, so they may."""
        if not self.opts.inputs:
            return
        for i, (name, x) in enumerate(zip(names, self.user_inputs)):
            if i not in held_fixed and is_float_array(x) and not np.isfinite(x).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
                raise self.calls.usage(
                    f"input {name!r} holds non-finite values ({x[where]} at {where}); "
                    "central differences need finite inputs: replace them, or pass "
                    "inputs=False to check the parameters only"
                )

    def refuse_object_params(self) -> None:
        """Raise the usage error that names an object-array parameter, if there is one (the
        conventions refuse them as they list them)."""
        try:
            self.access.parameters()
        except GradcheckUsageError as exc:
            raise self.calls.usage(str(exc)) from None
        except Exception:
            return  # not what this asks about: the forward's own error stands

    def refuse_empty_output(self, out: np.ndarray) -> None:
        """An empty output: every gradient is zero, nothing could fail."""
        if out.size == 0:
            raise self.calls.usage(
                f"nothing to check: forward returned an empty output (shape {out.shape}), "
                "so every gradient is zero and no backward could fail: pass inputs that give "
                "at least one output element"
            )

    def refuse_empty_arrays(self, arrays: list[CheckedArray]) -> None:
        """A checked array without elements (a parameter of shape (0,)): its row would pass
        without a single element checked."""
        for a in arrays:
            if a.array.size == 0:
                raise self.calls.usage(
                    f"nothing to check: {'input' if a.kind == 'input' else 'parameter'} "
                    f"{a.name!r} has no elements (shape {a.array.shape}); leave it out with "
                    "params=[...] (or inputs=False), or give it at least one element"
                )

    def checked_inputs(
        self, work: list[Any], names: list[str]
    ) -> tuple[list[CheckedArray], list[Entry]]:
        """The float inputs to check (unless inputs=False); rows for the others."""
        arrays: list[CheckedArray] = []
        rows: list[Entry] = []
        fixed = self.access.fixed_inputs()
        for i, (name, x, user_x) in enumerate(zip(names, work, self.user_inputs)):
            if i not in self.trees:
                self.listed.append(name)
            if i in self.trees:
                # Every float leaf on its own row, named by its path in the argument.
                for path, leaf in tree.leaves(x):
                    row = tree.path_name(name, path, False)
                    if isinstance(leaf, np.ndarray) and leaf.dtype.kind in "iub":
                        rows.append(Entry(row, "input", tuple(leaf.shape), str(leaf.dtype),
                                          INTEGER_INPUT, size=leaf.size))
                    if not is_float_array(leaf):
                        continue
                    user_leaf = tree.lookup(user_x, path)
                    self.listed.append(row)
                    if self.is_frozen(row):
                        rows.append(Entry(row, "input", tuple(leaf.shape),
                                          _dtype_name(user_leaf), FROZEN, size=leaf.size))
                    elif i in fixed:
                        rows.append(Entry(row, "input", tuple(leaf.shape),
                                          _dtype_name(user_leaf), NOT_DIFFERENTIATED,
                                          size=leaf.size))
                    elif self.opts.inputs:
                        arrays.append(CheckedArray(row, "input", leaf, _dtype_name(user_leaf),
                                                   path=path))
            elif is_float_array(x) and self.is_frozen(name):
                rows.append(Entry(name, "input", tuple(x.shape), str(user_x.dtype), FROZEN,
                                  size=x.size))
            elif is_float_array(x) and i in fixed:
                rows.append(Entry(name, "input", tuple(x.shape), str(user_x.dtype),
                                  NOT_DIFFERENTIATED, size=x.size))
            elif is_float_array(x):
                if self.opts.inputs:
                    arrays.append(CheckedArray(name, "input", x, str(user_x.dtype)))
            elif isinstance(x, np.ndarray) and x.dtype.kind in "iub":  # integer or bool
                rows.append(Entry(name, "input", tuple(x.shape), str(x.dtype), INTEGER_INPUT,
                                  size=x.size))
            elif isinstance(x, (list, tuple, Mapping, float, int, complex)) and not isinstance(
                    x, bool):
                # Values the checker cannot perturb (a configuration dict such as bn_param
                # among them): say so rather than skip them silently.
                shape = (len(x),) if isinstance(x, (list, tuple, Mapping)) else ()
                rows.append(Entry(name, "input", shape, type(x).__name__, PASSED_THROUGH))
        return arrays, rows

    # -- parameters --------------------------------------------------------------------------

    def checked_params(
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

    def select_params(
        self, params: list[Param], validate: bool = True
    ) -> tuple[list[Param], list[Entry]]:
        """Differentiable, selected parameters; rows for the others."""
        checked, rows = [], []
        for p in params:
            value = p.get()
            if is_float_scalar(value):
                value = np.asarray(value)  # shape (), its dtype; rebound by `promote`
            elif not isinstance(value, np.ndarray):
                continue
            shape, dtype = tuple(value.shape), str(value.dtype)
            # dtype kinds: np.issubdtype costs several times more, twice per parameter
            complex_ = value.dtype.kind == "c"
            self.listed.append(p.name)
            if self.is_frozen(p.name):
                rows.append(Entry(p.name, "param", shape, dtype, FROZEN, size=value.size))
            elif not p.differentiable or not (complex_ or value.dtype.kind == "f"):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_DIFFERENTIATED,
                                  size=value.size))
            elif self.patterns is not None and not any(
                fnmatchcase(p.name, pat) for pat in self.patterns
            ):
                rows.append(Entry(p.name, "param", shape, dtype, NOT_SELECTED, size=value.size))
            elif complex_:
                raise self.calls.usage(
                    f"parameter {p.name!r} is {value.dtype}; complex parameters "
                    "are not supported (the check differentiates real functions): store the "
                    "real and imaginary parts as separate float parameters, or leave it out "
                    "with params=[...]"
                )
            else:
                checked.append(p)
        if self.patterns is not None and validate:
            names = [p.name for p in params]
            for pat in self.patterns:
                if not any(fnmatchcase(n, pat) for n in names):
                    raise self.calls.usage(
                        f"params={list(self.patterns)!r}: {pat!r} matches no "
                        f"parameter; parameters are: {', '.join(names) or 'none'}"
                    )
        return checked, rows

    def not_inputs(self, params: list[Param]) -> list[Param]:
        """Leave out "parameters" that are the inputs forward cached (`self.b = b` in a layer
        taking an input named b): the checker's working inputs are its own copies, so an array
        sharing memory with one of them is that input, already checked as such."""
        inputs = self.input_arrays

        def is_input(p: Param) -> bool:
            value = p.get()
            return isinstance(value, np.ndarray) and any(
                np.may_share_memory(value, a) for a in inputs
            )

        return [p for p in params if not is_input(p)] if inputs else params

    def promote(self, params: list[Param]) -> tuple[list[np.ndarray], list[str]]:
        """Give each checked parameter a writeable, contiguous float64 array where possible;
        returns the arrays and the dtypes below float64 that some had to keep."""
        arrays, low, promoted, scalars = [], [], [], []
        copies: dict[int, np.ndarray] = {}  # one copy per original array keeps tied weights tied
        self.param_dtypes = {p.name: _dtype_name(p.get()) for p in params}
        for p in params:
            value = p.get()
            if is_float_scalar(value):
                if p.set is None:
                    raise self.calls.usage(
                        f"parameter {p.name!r} is a {type(value).__name__} held where it cannot "
                        "be rebound (a tuple or a read-only mapping), and a scalar is perturbed "
                        "by rebinding it: keep it in a list, a dict or an attribute, or leave "
                        "it out with params=[...]"
                    )
                p.set(np.array(value, dtype=np.float64))
                scalars.append(p.name)
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
                raise self.calls.usage(
                    f"parameter {p.name!r} is not a writeable contiguous array, so "
                    "it cannot be perturbed in place; store it as a plain numpy array"
                )
            arrays.append(value)
        if promoted:
            self.notes.append("low-precision parameters were checked on float64 copies: "
                              + ", ".join(promoted))
        if scalars:
            self.notes.append("scalar parameters were checked as 0-d float64 arrays put where "
                              "they live, and put back after the check: " + ", ".join(scalars))
        return arrays, low

    def _refuse_matrix(self, name: str, value: np.ndarray) -> None:
        if isinstance(value, np.matrix):
            raise self.calls.usage(
                f"parameter {name!r} is an np.matrix, which the checker cannot perturb "
                "element by element (its indexing keeps two dimensions); store a plain "
                "ndarray (np.asarray(...)) and use @ for matrix products"
            )

    def rebind(self, params: list[Param], param_arrays: list[np.ndarray]) -> None:
        """Give back to each parameter the array the checker perturbs, where a forward replaced
        it (`self.params["W"] = W.astype(np.float32)` on every call): the layer would otherwise
        read an array no step moves, and every derivative would read 0. The baseline then holds
        the checked array, so every evaluation starts from it, and the forward's cast is judged
        as the precision it computes in. A parameter that cannot be given back is refused."""
        rebound = []
        for p, a in zip(params, param_arrays):
            if p.get() is a:
                continue
            if p.set is None:
                raise self.calls.usage(
                    f"forward replaces parameter {p.name!r} with a new array on every call, "
                    "and the checker cannot give it back; keep the parameter's array and cast "
                    "a local copy in forward (w = self.W.astype(np.float32))"
                )
            p.set(a)
            rebound.append(p.name)
        if rebound:
            self.notes.append(
                f"forward replaces parameter(s) {', '.join(rebound)} with a new array on every "
                "call (a cast such as W = W.astype(np.float32)?): each evaluation starts from "
                "the checked array again"
            )

    def late_params(self, params: list[Param], rows: list[Entry]) -> list[Param]:
        """Parameters recognisable only once backward has created their gradient (`w`/`dw`);
        one that cannot be perturbed as it is gets an `error` row in `rows` instead."""
        known = {p.name for p in params}
        late, _ = self.select_params(
            self.not_inputs([p for p in self.access.parameters() if p.name not in known]),
            validate=False,
        )
        usable = []
        for p in late:
            value = p.get()
            if not isinstance(value, np.ndarray):  # a float scalar: rebound before the baseline
                rows.append(Entry(
                    p.name, "param", (), type(value).__name__, ERROR,
                    message=f"parameter {p.name!r} ({type(value).__name__}) was recognised only "
                    "after backward created its gradient: create the gradient in __init__ "
                    f"(d{p.name.rpartition('.')[2]} = 0.0) so the check finds the parameter "
                    "before it runs",
                ))
                continue
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


# -- rows ------------------------------------------------------------------------------------


def _working_tree(x: Any) -> Any:
    """A structured input's working copy: containers rebuilt (a read-only mapping as a dict),
    float arrays as float64 copies and float scalars as 0-d float64 arrays, which the checker
    perturbs in place; other leaves (strings, integers) as they are."""
    if isinstance(x, Mapping):
        return {k: _working_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_working_tree(v) for v in x) if type(x) in (list, tuple) else [
            _working_tree(v) for v in x]
    if is_float_array(x):
        return np.array(x, dtype=np.float64, order="C", copy=True)
    if is_float_scalar(x):
        return np.array(x, dtype=np.float64)
    return x


def _dtype_name(value: Any) -> str:
    """What the report calls a parameter's type: its dtype, or a scalar's Python type."""
    return str(value.dtype) if isinstance(value, np.ndarray) else type(value).__name__


def error_entry(a: CheckedArray, message: str) -> Entry:
    """The row of an array that could not be judged, with the reason."""
    return Entry(a.name, a.kind, tuple(a.array.shape), a.orig_dtype, ERROR,
                 size=a.array.size, message=message)


def verdict_entry(a: CheckedArray, v: elements.ArrayVerdict) -> Entry:
    """The row of a judged array."""
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
        decided_by=v.decided_by,
    )
