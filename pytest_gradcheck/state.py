"""State control: snapshot and restore of layer state, random sources and reseeding.

A check runs hundreds of evaluations that must each start from the same state, and must leave
the user's objects and random streams bit for bit as they were. Two tools serve that:

- `Snapshot` records everything reachable from some roots once (big arrays made read-only
  rather than copied, on request), restores it all at the end, and `Snapshot.patch()` compiles
  the few pieces one forward pass really changes into a `Patch` that is cheap enough to apply
  before every evaluation (O(what changed), not a deep copy).
- `RandomSource` wraps each random stream (numpy's global RNG, Python's `random`, private
  Generators/RandomStates) with save/restore and a cheap reset for the global streams.
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

from .streams import global_seed

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


def _state_equal(a: Any, b: Any) -> bool:
    """Deep equality for RNG state objects (dicts and tuples holding arrays)."""
    if not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        # Fast path: Python's `random` state is a tuple of 625 ints and a PCG64 state a dict of
        # ints, which `==` compares in C; the element-wise recursion below costs ~1 ms for the
        # former. Containers holding arrays raise ValueError (ambiguous truth) and fall through.
        try:
            eq = a == b
        except (ValueError, TypeError):
            eq = None
        if type(eq) is bool:
            return eq
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
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
        # of a few hundred KB can cost ~0.2 ms through the allocator. Small arrays are compared
        # faster as bytes.
        return bool(np.array_equal(a.view(uint), b.view(uint)))
    return a.tobytes() == b.tobytes()


class RandomSource:
    """One random stream, with its state saved at construction."""

    def __init__(self, obj: Any, label: str) -> None:
        self.obj = obj
        self.label = label
        self.saved = self.get()

    def get(self) -> Any:
        o = self.obj
        if isinstance(o, np.random.Generator):
            return o.bit_generator.state
        if isinstance(o, np.random.BitGenerator):
            return o.state
        if isinstance(o, np.random.RandomState):
            # The legacy tuple exists only for MT19937; other bit generators give a dict (and
            # a RuntimeWarning when asked for the tuple).
            return o.get_state(legacy=bool(_legacy_mt19937(o)))  # type: ignore[call-overload]
        return o.getstate()  # random.Random, and custom sources registered through the hook

    def set(self, state: Any) -> None:
        o = self.obj
        if isinstance(o, np.random.Generator):
            o.bit_generator.state = state
        elif isinstance(o, np.random.BitGenerator):
            o.state = state
        elif isinstance(o, np.random.RandomState):
            o.set_state(state)
        else:
            o.setstate(state)

    def restore(self) -> None:
        self.set(self.saved)

    def changed(self) -> bool:
        return not _state_equal(self.get(), self.saved)

    def scramble(self, seed: int, k: int) -> None:
        """Move the stream to another state: legacy MT19937 RandomStates (numpy's global stream
        among them) reseeded with `seed`, other numpy streams and Python's advanced by `k`
        draws. Sources of unknown kinds (registered through the hook) are left alone."""
        o = self.obj
        if isinstance(o, np.random.Generator):
            o.bit_generator.random_raw(k)
        elif isinstance(o, np.random.BitGenerator):
            o.random_raw(k)
        elif isinstance(o, np.random.RandomState):
            if _legacy_mt19937(o):
                o.seed(seed)
            else:
                o.random_sample(k)
        elif isinstance(o, random.Random):
            o.getrandbits(32 * k)

    def resetter(self) -> Callable[[], None]:
        """A zero-argument callable that puts the stream back to `saved`, as cheaply as possible."""
        saved = self.saved
        o = self.obj
        if isinstance(o, np.random.Generator):
            bg = o.bit_generator
            return lambda: setattr(bg, "state", saved)
        return lambda: self.set(saved)


def _legacy_mt19937(rs: np.random.RandomState) -> bool:
    return type(getattr(rs, "_bit_generator", None)) is np.random.MT19937


class SeededGlobalNumpy(RandomSource):
    """numpy's global RNG, reset by reseeding: `np.random.seed(int)` costs ~1.5 us where
    `set_state` costs ~35 us, more than the forward pass of a small layer.

    Reseeding is an exact reset only for the default MT19937 bit generator (it also empties the
    gauss cache); after `np.random.set_bit_generator(...)` the state is saved and set instead.
    """

    def __init__(self, seed: int) -> None:
        self.seed = global_seed(seed)
        self.obj = np.random.mtrand._rand
        self._bit_generator = self.obj._bit_generator
        self.label = "numpy global RNG"
        self._reseed_resets = _legacy_mt19937(self.obj)
        # Raw MT19937 bytes (well under a microsecond to read or write) where that works.
        raw = _mt19937_raw(self.obj)
        self._raw = raw[0] if raw is not None else None
        self._write_raw = raw[1] if raw is not None else None
        self._user_raw = self._raw() if self._raw is not None else None
        # The user's state in full (~27 us) only where the raw bytes cannot give it back: with
        # a gauss cached, or without the raw path.
        gauss = _gauss_cache(self.obj) if self._user_raw is not None else None
        self._user_state: Any = None if gauss == (0, 0.0) else self.get()
        np.random.seed(self.seed)
        # Not RandomSource.__init__: its get() would cost another ~30 us.
        self._seeded_raw = self._raw() if self._raw is not None else None
        self._saved: Any = None if self._raw is not None else self.get()

    @property
    def saved(self) -> Any:
        """The state right after seeding (built on demand: only the slow paths need it)."""
        if self._saved is None:
            self._saved = np.random.RandomState(self.seed).get_state()
        return self._saved

    def _swapped(self) -> bool:
        return (np.random.mtrand._rand is not self.obj
                or self.obj._bit_generator is not self._bit_generator)

    def _put_back_generator(self) -> None:
        """Undo a forward that replaced numpy's global RandomState or its bit generator
        (`np.random.set_bit_generator`, `mtrand._rand = ...`): the saved states fit only the
        original generator, and `set_state` raises ValueError on another kind."""
        np.random.mtrand._rand = self.obj
        if self.obj._bit_generator is not self._bit_generator:
            # Acts on mtrand._rand, just put back; re-wires the C-level generator as well.
            _set_bit_generator(self._bit_generator)

    def restore(self) -> None:
        if self._swapped():
            self._put_back_generator()
        # Reseeding reproduces the saved state bit for bit (gauss cache included), ~20x cheaper
        # than set_state.
        if self._reseed_resets:
            self.obj.seed(self.seed)
        else:
            self.set(self.saved)

    def changed(self) -> bool:
        if self._swapped():
            return True
        if self._raw is None:
            return super().changed()
        # From a freshly seeded state any draw rewrites the key or moves `pos`; the gauss cache
        # starts empty, so a draw that fills it has moved the generator too.
        return self._raw() != self._seeded_raw

    def resetter(self) -> Callable[[], None]:
        if not self._reseed_resets:
            return self.restore
        seed, reseed, swapped, put_back = (
            self.seed, self.obj.seed, self._swapped, self._put_back_generator)

        def reset() -> None:
            if swapped():  # ~0.1 us; a forward that swaps the generator swaps it every time
                put_back()
            reseed(seed)

        return reset

    def give_back(self) -> None:
        """Put the user's generator and its state back, whatever forward did to them."""
        self._put_back_generator()
        if self._write_raw is not None and self._user_raw is not None:
            if self._user_state is None:  # no gauss cached: see __init__
                has_gauss, gauss = 0, 0.0
            else:
                has_gauss, gauss = self._user_state[3], self._user_state[4]
            if not has_gauss and gauss == 0.0:
                # Reseeding empties the gauss cache as the user's was; the generator itself is
                # then written back raw: ~2 us where set_state costs ~35 us.
                self.obj.seed(self.seed)
                self._write_raw(self._user_raw)
                return
        self.set(self.user_state)

    @property
    def user_state(self) -> Any:
        """The user's state as `get_state()` gives it (read at construction if needed)."""
        if self._user_state is None:
            raise AssertionError("the user's state was given back raw")  # never: see give_back
        return self._user_state


# Captured at import: a forward may rebind the module attribute too.
_set_bit_generator = np.random.mtrand.set_bit_generator

# (bit generator, state address, size) of the global RandomState, once its layout is verified.
_MT_RAW: tuple[Any, int, int] | None = None


def _mt19937_raw(rs: Any) -> tuple[Callable[[], bytes], Callable[[bytes], None]] | None:
    """Reader and writer of the raw MT19937 state (key[624] then pos) of a RandomState, or None.

    Goes through the bit generator's documented ctypes interface. The struct layout is a numpy
    internal, so it is checked once against the `state` property; on any mismatch or error the
    caller falls back to `get_state()`/`set_state()`.
    """
    global _MT_RAW
    import ctypes

    bg = getattr(rs, "_bit_generator", None)
    if bg is None or type(bg) is not np.random.MT19937:
        return None
    if _MT_RAW is None or _MT_RAW[0] is not bg:
        try:
            addr = int(bg.ctypes.state_address)
            st = bg.state["state"]
            expect = (np.ascontiguousarray(st["key"], dtype=np.uint32).tobytes()
                      + np.array(st["pos"], dtype=np.intc).tobytes())
            if ctypes.string_at(addr, len(expect)) != expect:
                return None
        except Exception:
            return None
        _MT_RAW = (bg, addr, len(expect))
    _, addr, size = _MT_RAW
    string_at, memmove = ctypes.string_at, ctypes.memmove

    def write(data: bytes) -> None:
        assert len(data) == size
        memmove(addr, data, size)

    return (lambda: string_at(addr, size)), write


# Offset of `has_gauss` (a C int, followed by the double `gauss`) inside a RandomState object,
# once verified; -1 if the layout could not be verified.
_GAUSS_OFFSET: int | None = None


def _gauss_cache(rs: Any) -> tuple[int, float] | None:
    """(has_gauss, gauss) of a legacy RandomState read from the object's memory (well under a
    microsecond, where `get_state()` costs ~27 us), or None where that cannot be trusted.

    RandomState keeps them in a C struct after a pointer to its own bit generator struct, which
    lies inside the object: the first word pointing inside the object. That is a numpy
    internal, so the offset is verified once on two private RandomStates, without and with a
    gauss cached, against `get_state()`; any mismatch or error disables it.
    """
    global _GAUSS_OFFSET
    import ctypes

    if type(rs) is not np.random.RandomState:
        return None
    if _GAUSS_OFFSET is None:
        _GAUSS_OFFSET = -1
        try:
            probe = np.random.RandomState(12345)
            base, size = id(probe), type(probe).__basicsize__
            words = np.frombuffer(ctypes.string_at(base, size - size % 8), dtype=np.uintp)
            inside = [8 * i for i, w in enumerate(words.tolist()) if base <= w < base + size]
            offset = inside[0] + 8
            if offset + 16 > size:
                return None

            def read(obj: Any) -> tuple[int, float]:
                return (ctypes.c_int.from_address(id(obj) + offset).value,
                        ctypes.c_double.from_address(id(obj) + offset + 8).value)

            other = np.random.RandomState(54321)
            other.standard_normal()  # leaves a gauss cached
            states: list[Any] = [r.get_state() for r in (probe, other)]
            if all(read(r) == tuple(st[3:]) for r, st in zip((probe, other), states)):
                _GAUSS_OFFSET = offset
        except Exception:
            return None
    if _GAUSS_OFFSET < 0:
        return None
    return (ctypes.c_int.from_address(id(rs) + _GAUSS_OFFSET).value,
            ctypes.c_double.from_address(id(rs) + _GAUSS_OFFSET + 8).value)


# Offset of the Mersenne Twister (int index, then uint32 state[624]) inside a random.Random,
# once verified; -1 if the layout could not be verified.
_PY_MT_OFFSET: int | None = None
_PY_MT_SIZE = 4 + 4 * 624


def _python_mt_raw(obj: Any) -> tuple[Callable[[], bytes], Callable[[bytes], None]] | None:
    """Reader and writer of the raw generator state of a `random.Random` (index, then the 624
    state words), or None. getstate() builds a tuple of 625 ints (~6 us, ~11 us with the
    comparison `changed` makes) and setstate() costs ~2.5 us; the raw bytes take well under a
    microsecond. The layout is CPython's, so it is verified once on private instances, reading
    and writing, against getstate(); on any mismatch or error the caller uses getstate() and
    setstate(). `gauss_next` is a plain attribute, handled by the caller."""
    global _PY_MT_OFFSET
    import ctypes

    if type(obj) is not random.Random:
        return None
    if _PY_MT_OFFSET is None:
        _PY_MT_OFFSET = -1
        try:
            offset = object.__basicsize__  # right after the object header
            if offset + _PY_MT_SIZE > random.Random.__basicsize__:
                return None

            def raw_of(state: tuple[Any, ...]) -> bytes:
                words = state[1]
                return (np.array([words[-1]], dtype=np.intc).tobytes()
                        + np.array(words[:-1], dtype=np.uint32).tobytes())

            probe, other = random.Random(12345), random.Random(54321)
            probe.random()
            if ctypes.string_at(id(probe) + offset, _PY_MT_SIZE) != raw_of(probe.getstate()):
                return None
            ctypes.memmove(id(other) + offset, raw_of(probe.getstate()), _PY_MT_SIZE)
            if other.getstate()[1] != probe.getstate()[1] or other.random() != probe.random():
                return None
            _PY_MT_OFFSET = offset
        except Exception:
            return None
    if _PY_MT_OFFSET < 0:
        return None
    addr = id(obj) + _PY_MT_OFFSET
    string_at, memmove = ctypes.string_at, ctypes.memmove

    def write(data: bytes) -> None:
        assert len(data) == _PY_MT_SIZE
        memmove(addr, data, _PY_MT_SIZE)

    return (lambda: string_at(addr, _PY_MT_SIZE)), write


class SeededGlobalPython(RandomSource):
    """Python's global `random` stream, seeded from the check seed for the check's duration.

    Read, compared and reset through its raw state bytes and `gauss_next` where
    `_python_mt_raw` allows (several times per check, ~5x cheaper), else through getstate()."""

    def __init__(self, seed: int) -> None:
        obj = random._inst
        raw = _python_mt_raw(obj)
        if raw is None:
            self._raw: Callable[[], bytes] | None = None
            self.user_state = random.getstate()
            random.seed(global_seed(seed))
            super().__init__(obj, "Python random")
            return
        self._raw, self._write_raw = raw
        self._user_raw, self._user_gauss = self._raw(), obj.gauss_next  # type: ignore[attr-defined]
        random.seed(global_seed(seed))  # leaves gauss_next None
        self.obj, self.label, self._seed = obj, "Python random", global_seed(seed)
        self._seeded_raw = self._raw()
        self._saved: Any = None

    @property
    def saved(self) -> Any:
        """The state right after seeding, as getstate() gives it (built on demand)."""
        if self._raw is None:
            return self.__dict__["saved"]
        if self._saved is None:
            self._saved = random.Random(self._seed).getstate()
        return self._saved

    @saved.setter
    def saved(self, value: Any) -> None:
        self.__dict__["saved"] = value

    def restore(self) -> None:
        if self._raw is None:
            super().restore()
            return
        self._write_raw(self._seeded_raw)
        self.obj.gauss_next = None

    def changed(self) -> bool:
        if self._raw is None:
            return super().changed()
        return self._raw() != self._seeded_raw or self.obj.gauss_next is not None

    def resetter(self) -> Callable[[], None]:
        return self.restore if self._raw is not None else super().resetter()

    def give_back(self) -> None:
        if self._raw is None:
            self.obj.setstate(self.user_state)  # not random.setstate: forward may rebind it
            return
        self._write_raw(self._user_raw)
        self.obj.gauss_next = self._user_gauss


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
            return children  # exactly these types: no __dict__, no slots (~1.5 us a visit)
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
