"""Weights that live outside the call: `params=` pointing at them where they are.

`check(lossFun, inputs, targets, hprev, params={"Wxh": (module, "Wxh"), ...})` or
`params=[(module, "Wxh"), ...]`: each pointer is a `(container, key)` pair, and the check reads,
perturbs and puts back the value at that place:

- a module or any other object: the attribute `key` (`module.Wxh`);
- a function: its closure variable `key` (a cell), else its global `key` (the function's module);
- a dict or other mapping, a list: the item `key` (a read-only mapping or a tuple cannot be
  rebound: its array is perturbed in place, and a Python float there is refused).

The pointed values are float arrays or float scalars; the check restores every binding (the very
same object) and every array's bits afterwards.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GradcheckUsageError

MISSING = object()


@dataclass(frozen=True, eq=False)
class Pointer:
    """One weight outside the call: `container[key]`, `container.key` or a closure cell."""

    name: str
    container: Any
    key: Any

    def _cell(self) -> Any:
        """The closure cell of a function's free variable `key`, or None."""
        fn = self.container
        if isinstance(fn, types.FunctionType) and fn.__closure__ is not None:
            names = fn.__code__.co_freevars
            if self.key in names:
                return fn.__closure__[names.index(self.key)]
        return None

    def _where(self) -> tuple[str, Any]:
        """How the value is reached: ("cell", cell), ("item", mapping or list) or
        ("attr", object)."""
        c = self.container
        if isinstance(c, types.FunctionType):
            cell = self._cell()
            if cell is not None:
                return "cell", cell
            return "item", c.__globals__
        if isinstance(c, (Mapping, list, tuple)):
            return "item", c
        return "attr", c

    def describe(self) -> str:
        """Where the value lives, for messages: `module rnn, attribute 'Wxh'`."""
        c = self.container
        how, _ = self._where()
        if isinstance(c, types.FunctionType):
            fn = getattr(c, "__qualname__", "function")
            return (f"closure variable {self.key!r} of {fn}" if how == "cell"
                    else f"global {self.key!r} of {fn}'s module")
        if isinstance(c, types.ModuleType):
            return f"{c.__name__}.{self.key}"
        if how == "item":
            return f"{type(c).__name__}[{self.key!r}]"
        return f"{type(c).__name__}.{self.key}"

    def get(self) -> Any:
        how, holder = self._where()
        try:
            if how == "cell":
                return holder.cell_contents
            if how == "item":
                return holder[self.key]
            return getattr(holder, self.key)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            return MISSING

    def settable(self) -> bool:
        how, holder = self._where()
        return how in ("cell", "attr") or isinstance(holder, (MutableMapping, list))

    def set(self, value: Any) -> None:
        how, holder = self._where()
        if how == "cell":
            holder.cell_contents = value
        elif how == "item":
            holder[self.key] = value
        else:
            setattr(holder, self.key, value)

    def put_back(self, value: Any) -> None:
        """Bind `value` (the object found before the check) again, if another is bound now."""
        if self.get() is not value and self.settable():
            self.set(value)


class PointedParams(tuple[Pointer, ...]):
    """The `params=` option when it points at weights rather than naming parameters."""

    __slots__ = ()

    def names(self) -> list[str]:
        return [p.name for p in self]


def _pair(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and not isinstance(item[0], str)


def pointed(value: Any) -> PointedParams | None:
    """`value` read as pointers: a dict `{name: (container, key)}`, or a list of
    `(container, key)` pairs (each named by its key); None when it holds no pointer at all.
    Raises ValueError for a mixture or a malformed entry."""
    if isinstance(value, PointedParams):
        return value
    if isinstance(value, Mapping):
        out = []
        for name, item in value.items():
            if not (isinstance(name, str) and _pair(item)):
                raise ValueError(
                    "as a dict must map parameter names to (container, key) pairs, e.g. "
                    "{'Wxh': (module, 'Wxh')}"
                )
            out.append(Pointer(name, item[0], item[1]))
        return PointedParams(out)
    if isinstance(value, (list, tuple)) and any(_pair(v) for v in value):
        if not all(_pair(v) for v in value):
            raise ValueError(
                "must be names or glob patterns, or (container, key) pairs pointing at the "
                "weights, not a mixture of both"
            )
        return PointedParams(Pointer(str(k), c, k) for c, k in value)
    return None


def resolve(pointers: Sequence[Pointer], label: str) -> None:
    """Refuse a pointer at nothing, at a duplicate name or twice at the same place."""
    seen: dict[str, Pointer] = {}
    for p in pointers:
        if p.name in seen:
            raise GradcheckUsageError(
                f"{label}: params= names {p.name!r} twice; give each weight its own name"
            )
        seen[p.name] = p
        value = p.get()
        if value is MISSING:
            raise GradcheckUsageError(
                f"{label}: params= points {p.name!r} at {p.describe()}, which does not exist: "
                "point at (module_or_object, 'attribute'), (dict_or_list, key) or "
                "(function, 'closure_or_global_name')"
            )
        floats = (isinstance(value, np.ndarray) and value.dtype.kind == "f") or (
            isinstance(value, (float, np.floating)) and not isinstance(value, bool))
        if not floats:
            what = (f"a {value.dtype} array" if isinstance(value, np.ndarray)
                    else f"a {type(value).__name__}")
            raise GradcheckUsageError(
                f"{label}: params= points {p.name!r} at {p.describe()}, which holds {what}; "
                "a weight pointed at must be a float array or a float (store it as "
                "np.asarray(..., dtype=float)), or leave it out of params="
            )


def outside_arrays(fn: Any) -> list[tuple[str, tuple[int, ...]]]:
    """The float arrays a plain function reads from outside: its closure variables, then the
    globals its code names, in the order its code names them, with their shapes."""
    if not isinstance(fn, types.FunctionType):
        return []
    found: list[tuple[str, tuple[int, ...]]] = []
    cells = zip(fn.__code__.co_freevars, fn.__closure__ or ())
    for name, cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            found.append((name, value.shape))
    for name in fn.__code__.co_names:
        value = fn.__globals__.get(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            found.append((name, value.shape))
    return found


def suggest(fn: Any, shapes: Sequence[tuple[int, ...]]) -> str | None:
    """`params=[(fn, "Wxh"), ...]` for the leading returned values whose shapes are those of
    arrays the function reads from outside, matched in order; None if the first matches none."""
    outside = outside_arrays(fn)
    names: list[str] = []
    for shape in shapes:
        found = next((n for n, s in outside if s == shape and n not in names), None)
        if found is None:
            break
        names.append(found)
    if not names:
        return None
    fn_name = getattr(fn, "__name__", "f")
    return "params=[" + ", ".join(f"({fn_name}, {n!r})" for n in names) + "]"
