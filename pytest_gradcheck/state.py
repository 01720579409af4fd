"""State control: snapshot and restore of layer state.

A check runs hundreds of evaluations that must each start from the same state, and must leave
the user's objects and random streams bit for bit as they were. Two tools serve that:

- `Snapshot` records everything reachable from some roots once (big arrays made read-only
  rather than copied, on request), restores it all at the end, and `Snapshot.patch()` compiles
  the few pieces one forward pass really changes into a `Patch` that is cheap enough to apply
  before every evaluation (O(what changed), not a deep copy).
- `Restorer` runs a check's undo steps, every one of them even if another fails.

The random streams are put back by `sources`.
"""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import random
import types
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

_ATOMIC = (int, float, complex, str, bytes, bool, type(None), np.generic, range, slice)
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
)
_NOT_WALKED = (*_ATOMIC, *_OPAQUE)
# Types whose instances (of exactly that type, not subclasses) have neither a __dict__ nor slots.
_NO_ATTRIBUTES = frozenset({np.ndarray, dict, list, set, tuple, frozenset})
_RANDOM_TYPES = (np.random.Generator, np.random.RandomState, np.random.BitGenerator, random.Random)


def state_equal(a: Any, b: Any) -> bool:
    """Deep equality for RNG state objects (dicts and tuples holding arrays)."""
    if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        # Fast path: Python's `random` state is a tuple of 625 ints and a PCG64 state a dict of
        # ints, which `==` compares in C, where the element-wise recursion below walks 625
        # Python ints for the former. Containers holding arrays raise ValueError (ambiguous
        # truth) and fall through.
        try:
            eq = a == b
        except (ValueError, TypeError):
            eq = None
        if type(eq) is bool:
            return eq
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)


# Unsigned integer types by item size: comparing through them is a bit-for-bit comparison.
_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays hold the same shape, dtype and bits."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    uint = _UINT_OF_SIZE.get(a.dtype.itemsize)
    if a.nbytes > 65536 and uint is not None and a.dtype.kind in "biuf":
        # Integer views compare bits (NaN payloads, -0.0) without copying: two tobytes() copies
        # of a few hundred KB go through the allocator. Small arrays are compared faster as
        # bytes.
        return bool(np.array_equal(a.view(uint), b.view(uint)))
    return a.tobytes() == b.tobytes()


class Patch:
    """Restores only the pieces a forward pass changed; applied before every evaluation."""

    def __init__(self) -> None:
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.attrs: list[tuple[Any, str, Any]] = []
        self.added_attrs: list[tuple[Any, str]] = []
        self.slots: list[tuple[Any, Any, Any]] = []  # (object, slot descriptor, value)
        self.dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self.lists: list[tuple[list[Any], list[Any]]] = []
        self.sets: list[tuple[set[Any], set[Any]]] = []
        # deques, bytearrays and array.arrays: (object, how to put the saved contents back)
        self.sequences: list[tuple[Any, Callable[[], None]]] = []
        self.descriptions: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.descriptions)

    def compile(self) -> Callable[[], None]:
        """A closure doing the restoring with as little Python overhead as the patch allows."""
        if not self:
            return _noop
        arrays, attrs, added = tuple(self.arrays), tuple(self.attrs), tuple(self.added_attrs)
        slots = tuple(self.slots)
        dicts, lists, sets = tuple(self.dicts), tuple(self.lists), tuple(self.sets)
        sequences = tuple(put_back for _, put_back in self.sequences)
        copyto = np.copyto
        if not (arrays or added or slots or dicts or lists or sets or sequences):
            # The common patch: attributes a forward rebinds (its cached input). Full mode
            # applies it before every evaluation, so the empty loops are left out.
            def apply_attrs() -> None:
                for obj, name, value in attrs:
                    obj.__dict__[name] = value

            return apply_attrs

        def apply() -> None:
            for dst, src in arrays:
                copyto(dst, src)
            for obj, name, value in attrs:
                obj.__dict__[name] = value
            for obj, name in added:
                obj.__dict__.pop(name, None)
            for obj, desc, value in slots:
                _set_slot(obj, desc, value)
            for d, saved in dicts:
                dict.clear(d)
                dict.update(d, saved)
            for lst, saved_l in lists:
                list.__setitem__(lst, slice(None), saved_l)
            for s, saved_s in sets:
                set.clear(s)
                set.update(s, saved_s)
            for put_back in sequences:
                put_back()

        return apply


def _noop() -> None:
    return None


class Snapshot:
    """Everything reachable from `roots`: containers' shallow contents and arrays' bits.

    Arrays in `exclude` (by identity) are recorded for the final restore but left out of
    patches, because the checker itself perturbs and puts them back.

    With `protect_bytes`, writeable arrays of at least that many bytes are not copied but made
    read-only until `restore()` (a layer holding its training data must not cost a copy of it).
    A write into one then raises numpy's read-only ValueError instead of going unrestored; see
    `is_protection_fault`, `run_protected`, and `release` for the arrays the caller itself
    writes into. Views made before the snapshot keep their own flag: reachable ones are
    protected or copied with the rest, but a write through a view reachable from nowhere the
    walk goes (a closure cell, a module global) is not caught, as no state there is restored.
    """

    def __init__(
        self,
        roots: Iterable[Any],
        exclude: Iterable[np.ndarray] = (),
        names: Sequence[str] = (),
        protect_bytes: int | None = None,
        known: Iterable[tuple[np.ndarray, np.ndarray]] = (),
        protect: Iterable[np.ndarray] = (),
        reuse: Iterable[tuple[np.ndarray, np.ndarray]] = (),
    ) -> None:
        self.exclude = {id(a) for a in exclude}
        # Arrays made read-only rather than copied whatever their size (see `protect_bytes`).
        self._protect_ids = {id(a) for a in protect}
        # (array, copy of its current bits) the caller can vouch for: taken as they are rather
        # than copied again. Saved copies are only ever read, so two snapshots may share one.
        self._known = {id(a): (a, saved) for a, saved in known}
        # (array, copy of its bits at some earlier time), e.g. from an earlier snapshot: taken
        # if the array still holds those bits. Comparing allocates nothing, where a fresh copy
        # of a mid-sized array costs page faults on top of the pass over it.
        self._reuse = {id(a): (a, saved) for a, saved in reuse}
        # (array, copy) recorded by `release`: the bits the caller writes into from then on.
        self.released: list[tuple[np.ndarray, np.ndarray]] = []
        self.protect_bytes = protect_bytes
        self.copied_bytes = 0
        # Read-only until restore(): arrays owning their data first, then views of them.
        self.protected: list[np.ndarray] = []
        self._big: list[np.ndarray] = []
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.objects: list[tuple[Any, dict[str, Any]]] = []
        self.slotted: list[tuple[Any, list[tuple[Any, Any]]]] = []
        self.dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self.lists: list[tuple[list[Any], list[Any]]] = []
        self.sets: list[tuple[set[Any], set[Any]]] = []
        self.sequences: list[_Sequence] = []  # deques, bytearrays, array.arrays
        self.random_objects: list[tuple[Any, str]] = []
        self._seen: set[int] = set()
        self._keep: list[Any] = []  # keeps visited objects alive so ids stay unique
        self._walk([(root, names[i] if i < len(names) else f"root{i}")
                    for i, root in enumerate(roots)])
        self._protect(self._big)
        del self._big

    def _record(self, arr: np.ndarray, first: bool = False) -> None:
        entry = self._known.get(id(arr))
        if entry is None or entry[0] is not arr:
            entry = self._reuse.get(id(arr))
            if entry is not None and (entry[0] is not arr or not same_bits(arr, entry[1])):
                entry = None
        if entry is None:
            entry = (arr, arr.copy())
            self.copied_bytes += arr.nbytes
            _count_copy(arr.nbytes)
        if first:
            self.arrays.insert(0, entry)
        else:
            self.arrays.append(entry)

    def _protect(self, big: list[np.ndarray]) -> None:
        """Make `big` read-only, or copy those that cannot be protected soundly.

        Setting an array read-only leaves views made earlier writeable, so a view is protected
        only together with the array owning its memory (views made from then on are read-only
        too). Memory owned by something else (a bytearray, an mmap) is copied as before.
        """
        owners: dict[int, np.ndarray] = {}
        views: list[np.ndarray] = []
        for arr in big:
            owner = arr if arr.base is None else arr.base
            if not isinstance(owner, np.ndarray) or owner.base is not None:
                self._record(arr)
                continue
            owners.setdefault(id(owner), owner)
            if owner is not arr:
                views.append(arr)
        for owner in owners.values():
            if owner.flags.writeable:
                owner.flags.writeable = False
                self.protected.append(owner)
        mine = {id(a) for a in self.protected}
        for view in views:
            if id(view.base) not in mine:
                # A writeable view of memory its owner was told not to write: other views may
                # write it too, so only a copy is safe.
                self._record(view)
                continue
            view.flags.writeable = False
            self.protected.append(view)

    def release(self, arrays: Iterable[Any]) -> None:
        """Make protected arrays writeable again, recording a copy to restore them from: for
        the arrays the caller itself writes into (the parameters it perturbs, the gradients
        zeroed before backward). A view is released with the array owning its memory and every
        protected view of it."""
        for arr in arrays:
            if not isinstance(arr, np.ndarray) or not self.protected:
                continue
            owner = arr if arr.base is None else arr.base
            if not any(owner is p for p in self.protected):
                continue
            group = [p for p in self.protected if p is owner or p.base is owner]
            self.protected = [p for p in self.protected if all(p is not g for g in group)]
            for p in group:  # owner first: a view can be made writeable only after its base
                p.flags.writeable = True
            # Restored before the copies taken at construction: a small view copied then may
            # have been written through since, and its bits from then must win.
            self._record(owner, first=True)
            self.released.append(self.arrays[0])

    def unprotect(self, keep: Iterable[np.ndarray] = ()) -> None:
        """End the protection of big arrays without restoring anything; the arrays in `keep`
        (owners of their memory) and their protected views stay protected until the next
        call."""
        ids = {id(a) for a in keep}
        kept = [p for p in self.protected if id(p) in ids or id(p.base) in ids]
        mine = {id(p) for p in kept}
        protected = [p for p in self.protected if id(p) not in mine]
        self.protected = kept
        for arr in protected:  # owners first
            arr.flags.writeable = True

    def _walk(self, roots: list[tuple[Any, _Path]]) -> None:
        """Depth-first, in the order a recursive walk would take, with an explicit stack: a
        linked chain of many thousand nodes must not exhaust Python's recursion limit. Paths
        stay (parent, suffix) pairs until one is needed, so a deep chain costs no quadratic
        string building."""
        stack = roots[::-1]
        visit = self._visit
        # The walk allocates a few objects per node and frees none: on a large graph the
        # cyclic collector would run again and again over everything kept so far.
        collecting = gc.isenabled()
        gc.disable()
        try:
            while stack:
                obj, path = stack.pop()
                children = visit(obj, path)
                if children:
                    stack.extend(reversed(children))
        finally:
            if collecting:
                gc.enable()

    def _visit(self, obj: Any, path: _Path) -> list[tuple[Any, _Path]]:
        """Records obj; returns the objects it holds, to be visited next."""
        if type(obj) not in _NO_ATTRIBUTES and isinstance(obj, _NOT_WALKED):
            return []  # (instances of exactly those types are never atomic or opaque)
        if id(obj) in self._seen:
            return []
        self._seen.add(id(obj))
        self._keep.append(obj)
        children: list[tuple[Any, _Path]] = []
        if isinstance(obj, np.ndarray):
            if not obj.flags.writeable:
                if id(obj) in self._known:  # read-only for now, the caller vouches for its bits
                    self._record(obj)
            elif (self.protect_bytes is not None and obj.nbytes >= self.protect_bytes
                  and obj.dtype != object and id(obj) not in self.exclude):
                self._big.append(obj)
            elif id(obj) in self._protect_ids and obj.dtype != object:
                self._big.append(obj)  # protected whatever its size, as the caller asked
            else:
                self._record(obj)
            if obj.dtype == object:  # a container: its elements are recorded too
                children += [(v, (path, ".flat[{}]", i)) for i, v in enumerate(obj.flat)]
        elif isinstance(obj, random.SystemRandom):
            return []  # the operating system's entropy: no state to record or restore
        elif isinstance(obj, _RANDOM_TYPES):
            self.random_objects.append((obj, _render(path)))
            return []
        elif isinstance(obj, dict):
            self.dicts.append((obj, dict(obj)))
            for k, v in list(obj.items()):
                if not isinstance(k, _ATOMIC):  # objects hashed by identity can change
                    children.append((k, (path, " key {!r}", k)))
                children.append((v, (path, "[{!r}]", k)))
        elif isinstance(obj, list):
            self.lists.append((obj, list(obj)))
            children += [(v, (path, "[{}]", i)) for i, v in enumerate(list(obj))]
        elif isinstance(obj, set):
            self.sets.append((obj, set(obj)))
            children += [(v, (path, " element", None)) for v in list(obj)]
        elif isinstance(obj, (collections.deque, bytearray, array.array)):
            self.sequences.append(_Sequence(obj))
            if isinstance(obj, collections.deque):
                children += [(v, (path, "[{}]", i)) for i, v in enumerate(list(obj))]
        elif isinstance(obj, (tuple, frozenset)):
            children += [(v, (path, "[{}]", i)) for i, v in enumerate(obj)]
        if type(obj) in _NO_ATTRIBUTES:
            return children  # exactly these types: no __dict__, no slots to look for
        # Attributes and slots, of plain objects and of container subclasses alike (a dict
        # subclass with a counter attribute).
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict):
            self.objects.append((obj, dict(d)))
            children += [(v, (path, ".{}", k)) for k, v in list(d.items())]
        slots = _slot_values(obj)
        if slots:
            self.slotted.append((obj, slots))
            children += [(v, (path, ".{}", desc.__name__))
                         for desc, v in slots if v is not _UNSET_SLOT]
        return children

    def saved_array(self, arr: np.ndarray) -> np.ndarray | None:
        """The recorded copy of `arr` (by identity), or None if it was not reachable."""
        for a, saved in self.arrays:
            if a is arr:
                return saved
        return None

    def restore(self, written: Iterable[np.ndarray] = ()) -> list[np.ndarray]:
        """Put every recorded container and array back as it was (identity and bits), and end
        the protection of big arrays (whatever else fails: a read-only array left behind would
        be a changed user array). Returns the recorded arrays whose bits had changed: the
        comparison restoring needs anyway, so callers need not compare them again. Arrays in
        `written` (that the caller wrote into itself) are copied back without comparing, and
        left out of the list."""
        try:
            return self._put_back({id(a) for a in written})
        finally:
            self.unprotect()

    def put_back(self) -> list[np.ndarray]:
        """`restore` without ending the protection of big arrays: for another attempt at what
        the protection guards (they cannot have been written, being read-only)."""
        return self._put_back(set())

    def _put_back(self, written: set[int]) -> list[np.ndarray]:
        # Containers through the base class methods: a subclass's clear/update/__setitem__
        # may have side effects (a write counter) on state already put back.
        for obj, saved in self.objects:
            d = obj.__dict__
            if d.keys() != saved.keys() or any(d[k] is not v for k, v in saved.items()):
                d.clear()
                d.update(saved)
        for obj, saved_slots in self.slotted:
            for desc, v in saved_slots:
                _set_slot(obj, desc, v)
        for dct, saved_d in self.dicts:
            if dct.keys() != saved_d.keys() or any(dct[k] is not v for k, v in saved_d.items()):
                dict.clear(dct)
                dict.update(dct, saved_d)
        for lst, saved_l in self.lists:
            if len(lst) != len(saved_l) or any(a is not b for a, b in zip(lst, saved_l)):
                list.__setitem__(lst, slice(None), saved_l)
        for st, saved_s in self.sets:
            if st != saved_s:
                set.clear(st)
                set.update(st, saved_s)
        for seq in self.sequences:
            if seq.changed():
                seq.put_back()
        rewritten = []
        for arr, saved_a in self.arrays:
            if arr.shape != saved_a.shape:
                continue
            if id(arr) in written:
                np.copyto(arr, saved_a, casting="unsafe")
            elif not same_bits(arr, saved_a):
                np.copyto(arr, saved_a, casting="unsafe")
                rewritten.append(arr)
        return rewritten

    def patch(self, protected: Iterable[np.ndarray] = ()) -> Patch:
        """What differs now from the snapshot, as a Patch that undoes exactly that. Arrays in
        `protected` were read-only all along (the caller's protection): not compared."""
        unchanged = {id(a) for a in protected}
        p = Patch()
        for obj, saved in self.objects:
            d = obj.__dict__
            for k, v in saved.items():
                if k not in d or d[k] is not v:
                    p.attrs.append((obj, k, v))
                    p.descriptions.append(f"{type(obj).__name__}.{k}")
            for k in d.keys() - saved.keys():
                p.added_attrs.append((obj, k))
                p.descriptions.append(f"{type(obj).__name__}.{k} (added)")
        for obj, saved_slots in self.slotted:
            for desc, v in saved_slots:
                try:
                    now = desc.__get__(obj, type(obj))
                except AttributeError:
                    now = _UNSET_SLOT
                if now is not v:
                    p.slots.append((obj, desc, v))
                    p.descriptions.append(f"{type(obj).__name__}.{desc.__name__} (slot)")
        for dct, saved_d in self.dicts:
            if dct.keys() != saved_d.keys() or any(dct[k] is not v for k, v in saved_d.items()):
                p.dicts.append((dct, saved_d))
                p.descriptions.append("dict entries")
        for lst, saved_l in self.lists:
            if len(lst) != len(saved_l) or any(a is not b for a, b in zip(lst, saved_l)):
                p.lists.append((lst, saved_l))
                p.descriptions.append("list contents")
        for st, saved_s in self.sets:
            if st != saved_s:
                p.sets.append((st, saved_s))
                p.descriptions.append("set contents")
        for seq in self.sequences:
            if seq.changed():
                p.sequences.append((seq.obj, seq.put_back))
                p.descriptions.append(f"{type(seq.obj).__name__} contents")
        for arr, saved_a in self.arrays:
            if (id(arr) not in self.exclude and id(arr) not in unchanged
                    and not same_bits(arr, saved_a)):
                p.arrays.append((arr, saved_a))
                p.descriptions.append(f"array {arr.shape} changed in place")
        return p


# A path in messages, built only when needed: a name, or (parent path, format of the suffix,
# the key or index it formats); most paths are never rendered.
_Path = str | tuple[Any, str, Any]


def _render(path: _Path) -> str:
    parts = []
    while isinstance(path, tuple):
        path, suffix, key = path
        parts.append(suffix.format(key))
    return path + "".join(reversed(parts))


# Arrays from this size on are protected rather than copied by the checker's first snapshot.
PROTECT_BYTES = 1 << 20

_copied_total = 0


def _count_copy(nbytes: int) -> None:
    global _copied_total
    _copied_total += nbytes


def copied_bytes() -> int:
    """Bytes of array data all snapshots have copied since import: lets tests pin the cost of
    state control by counting rather than timing."""
    return _copied_total


# What numpy (and buffer consumers such as Cython memoryviews) say on a write into a
# read-only array.
_READ_ONLY_MESSAGES = ("read-only", "readonly", "not writeable", "not writable")


def is_protection_fault(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a write into a read-only array."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        text = str(e).lower()
        if any(m in text for m in _READ_ONLY_MESSAGES):
            return True
        todo += [e.__cause__, e.__context__]
    return False


_T = TypeVar("_T")


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


def run_protected(attempt: Callable[[int | None], _T]) -> _T:
    """`attempt(PROTECT_BYTES)`; if it stumbled on a protected array (a forward or backward
    that writes into a big array in place), `attempt(None)`, which copies every array instead.

    `attempt(protect_bytes)` is one whole check: it snapshots with
    `Snapshot(..., protect_bytes=protect_bytes)`, releases what it writes into itself, and
    restores in `finally`, so the second attempt starts from the user's state.
    """
    try:
        return attempt(PROTECT_BYTES)
    except Exception as exc:
        if not is_protection_fault(exc):
            raise
    return attempt(None)


class _Sequence:
    """A deque, bytearray or array.array and a copy of its contents."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj
        self.saved: Any = list(obj) if isinstance(obj, collections.deque) else obj[:]

    def changed(self) -> bool:
        obj, saved = self.obj, self.saved
        if isinstance(obj, collections.deque):  # elements by identity, as for lists
            return len(obj) != len(saved) or any(a is not b for a, b in zip(obj, saved))
        return bool(obj != saved)

    def put_back(self) -> None:
        if isinstance(self.obj, collections.deque):
            self.obj.clear()
            self.obj.extend(self.saved)
        else:
            self.obj[:] = self.saved


# The value recorded for a slot that was not set: restoring it deletes the slot again.
_UNSET_SLOT = object()


def _slot_values(obj: Any) -> list[tuple[Any, Any]]:
    """(slot descriptor, value or _UNSET_SLOT) for every slot of obj's class hierarchy.

    Read and written through the descriptors themselves: `__slots__` may be a single string,
    private names are mangled (`__n` is stored as `_Cls__n`), and a subclass may shadow a slot
    with a property.
    """
    values: list[tuple[Any, Any]] = []
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{cls.__name__.lstrip('_')}{name}"
            desc = cls.__dict__.get(name)
            if not isinstance(desc, types.MemberDescriptorType):
                continue  # __dict__, __weakref__
            try:
                values.append((desc, desc.__get__(obj, cls)))
            except AttributeError:
                values.append((desc, _UNSET_SLOT))
    return values


def _set_slot(obj: Any, desc: Any, value: Any) -> None:
    if value is _UNSET_SLOT:
        with contextlib.suppress(AttributeError):  # already unset
            desc.__delete__(obj)
    else:
        desc.__set__(obj, value)
