"""State control: snapshot and restore of layer state, random sources and reseeding.

A check runs hundreds of evaluations that must each start from the same state, and must leave
the user's objects and random streams bit for bit as they were. Two tools serve that:

- `Snapshot` records everything reachable from some roots once, restores it all at the end, and
  `Snapshot.patch()` compiles the few pieces one forward pass really changes into a `Patch` that
  is cheap enough to apply before every evaluation (O(what changed), not a deep copy).
- `RandomSource` wraps each random stream (numpy's global RNG, Python's `random`, private
  Generators/RandomStates) with save/restore and a cheap reset for the global streams.
"""

from __future__ import annotations

import random
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
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
        if isinstance(o, (np.random.RandomState, random.Random)):
            return o.get_state() if isinstance(o, np.random.RandomState) else o.getstate()
        return o.getstate()  # custom sources registered through the hook

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

    def resetter(self) -> Callable[[], None]:
        """A zero-argument callable that puts the stream back to `saved`, as cheaply as possible."""
        saved = self.saved
        o = self.obj
        if isinstance(o, np.random.Generator):
            bg = o.bit_generator
            return lambda: setattr(bg, "state", saved)
        return lambda: self.set(saved)


class SeededGlobalNumpy(RandomSource):
    """numpy's global RNG, reset by reseeding: `np.random.seed(int)` costs ~1.5 us where
    `set_state` costs ~35 us, more than the forward pass of a small layer."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.obj = np.random.mtrand._rand
        self.label = "numpy global RNG"
        # Raw MT19937 bytes (well under a microsecond to read or write) where that works.
        raw = _mt19937_raw(self.obj)
        self._raw = raw[0] if raw is not None else None
        self._write_raw = raw[1] if raw is not None else None
        self.user_state = np.random.get_state()
        self._user_raw = self._raw() if self._raw is not None else None
        np.random.seed(seed)
        # Not RandomSource.__init__: its get() would cost another ~30 us.
        self._seeded_raw = self._raw() if self._raw is not None else None
        self._saved: Any = None if self._raw is not None else self.get()

    @property
    def saved(self) -> Any:  # type: ignore[override]
        """The state right after seeding (built on demand: only the slow paths need it)."""
        if self._saved is None:
            self._saved = np.random.RandomState(self.seed).get_state()
        return self._saved

    def restore(self) -> None:
        # Reseeding reproduces the saved state bit for bit (gauss cache included), ~20x cheaper
        # than set_state.
        np.random.seed(self.seed)

    def changed(self) -> bool:
        if self._raw is None:
            return super().changed()
        # From a freshly seeded state any draw rewrites the key or moves `pos`; the gauss cache
        # starts empty, so a draw that fills it has moved the generator too.
        return self._raw() != self._seeded_raw

    def resetter(self) -> Callable[[], None]:
        seed, reseed = self.seed, np.random.seed
        return lambda: reseed(seed)

    def give_back(self) -> None:
        has_gauss, gauss = self.user_state[3], self.user_state[4]
        if self._write_raw is not None and self._user_raw is not None and not has_gauss \
                and gauss == 0.0:
            # Reseeding empties the gauss cache as the user's was; the generator itself is then
            # written back raw: ~2 us where set_state costs ~35 us.
            np.random.seed(self.seed)
            self._write_raw(self._user_raw)
        else:
            np.random.set_state(self.user_state)


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


class SeededGlobalPython(RandomSource):
    """Python's global `random` stream, seeded from the check seed for the check's duration."""

    def __init__(self, seed: int) -> None:
        self.user_state = random.getstate()
        random.seed(seed)
        super().__init__(random._inst, "Python random")  # type: ignore[attr-defined]

    def give_back(self) -> None:
        random.setstate(self.user_state)


class Patch:
    """Restores only the pieces a forward pass changed; applied before every evaluation."""

    def __init__(self) -> None:
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.attrs: list[tuple[Any, str, Any]] = []
        self.added_attrs: list[tuple[Any, str]] = []
        self.dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self.lists: list[tuple[list[Any], list[Any]]] = []
        self.sets: list[tuple[set[Any], set[Any]]] = []
        self.descriptions: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.descriptions)

    def compile(self) -> Callable[[], None]:
        """A closure doing the restoring with as little Python overhead as the patch allows."""
        if not self:
            return _noop
        arrays, attrs, added = tuple(self.arrays), tuple(self.attrs), tuple(self.added_attrs)
        dicts, lists, sets = tuple(self.dicts), tuple(self.lists), tuple(self.sets)
        copyto = np.copyto

        def apply() -> None:
            for dst, src in arrays:
                copyto(dst, src)
            for obj, name, value in attrs:
                obj.__dict__[name] = value
            for obj, name in added:
                obj.__dict__.pop(name, None)
            for d, saved in dicts:
                d.clear()
                d.update(saved)
            for lst, saved_l in lists:
                lst[:] = saved_l
            for s, saved_s in sets:
                s.clear()
                s.update(saved_s)

        return apply


def _noop() -> None:
    return None


class Snapshot:
    """Everything reachable from `roots`: containers' shallow contents and arrays' bits.

    Arrays in `exclude` (by identity) are recorded for the final restore but left out of
    patches, because the checker itself perturbs and puts them back.
    """

    def __init__(
        self,
        roots: Iterable[Any],
        exclude: Iterable[np.ndarray] = (),
        names: Sequence[str] = (),
    ) -> None:
        self.exclude = {id(a) for a in exclude}
        self.arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.objects: list[tuple[Any, dict[str, Any]]] = []
        self.slotted: list[tuple[Any, dict[str, Any]]] = []
        self.dicts: list[tuple[dict[Any, Any], dict[Any, Any]]] = []
        self.lists: list[tuple[list[Any], list[Any]]] = []
        self.sets: list[tuple[set[Any], set[Any]]] = []
        self.random_objects: list[tuple[Any, str]] = []
        self._seen: set[int] = set()
        self._keep: list[Any] = []  # keeps visited objects alive so ids stay unique
        for i, root in enumerate(roots):
            self._visit(root, names[i] if i < len(names) else f"root{i}")

    def _visit(self, obj: Any, path: str) -> None:
        if isinstance(obj, (*_ATOMIC, *_OPAQUE)):
            return
        if id(obj) in self._seen:
            return
        self._seen.add(id(obj))
        self._keep.append(obj)
        if isinstance(obj, np.ndarray):
            if obj.dtype != object and obj.flags.writeable:
                self.arrays.append((obj, obj.copy()))
            return
        if isinstance(obj, _RANDOM_TYPES):
            self.random_objects.append((obj, path))
            return
        if isinstance(obj, dict):
            self.dicts.append((obj, dict(obj)))
            for k, v in list(obj.items()):
                self._visit(v, f"{path}[{k!r}]")
            return
        if isinstance(obj, list):
            self.lists.append((obj, list(obj)))
            for i, v in enumerate(list(obj)):
                self._visit(v, f"{path}[{i}]")
            return
        if isinstance(obj, set):
            self.sets.append((obj, set(obj)))
            return
        if isinstance(obj, (tuple, frozenset)):
            for i, v in enumerate(obj):
                self._visit(v, f"{path}[{i}]")
            return
        d = getattr(obj, "__dict__", None)
        if isinstance(d, dict):
            self.objects.append((obj, dict(d)))
            for k, v in list(d.items()):
                self._visit(v, f"{path}.{k}")
        slots = _slot_values(obj)
        if slots:
            self.slotted.append((obj, slots))
            for k, v in slots.items():
                self._visit(v, f"{path}.{k}")

    def saved_array(self, arr: np.ndarray) -> np.ndarray | None:
        """The recorded copy of `arr` (by identity), or None if it was not reachable."""
        for a, saved in self.arrays:
            if a is arr:
                return saved
        return None

    def restore(self) -> None:
        """Put every recorded container and array back as it was (identity and bits)."""
        for obj, saved in self.objects:
            d = obj.__dict__
            if d.keys() != saved.keys() or any(d[k] is not v for k, v in saved.items()):
                d.clear()
                d.update(saved)
        for obj, saved in self.slotted:
            for k, v in saved.items():
                object.__setattr__(obj, k, v)
        for dct, saved_d in self.dicts:
            if dct.keys() != saved_d.keys() or any(dct[k] is not v for k, v in saved_d.items()):
                dct.clear()
                dct.update(saved_d)
        for lst, saved_l in self.lists:
            if len(lst) != len(saved_l) or any(a is not b for a, b in zip(lst, saved_l)):
                lst[:] = saved_l
        for st, saved_s in self.sets:
            if st != saved_s:
                st.clear()
                st.update(saved_s)
        for arr, saved_a in self.arrays:
            if arr.shape == saved_a.shape and not _same_bits(arr, saved_a):
                np.copyto(arr, saved_a, casting="unsafe")

    def patch(self) -> Patch:
        """What differs now from the snapshot, as a Patch that undoes exactly that."""
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
        for arr, saved_a in self.arrays:
            if id(arr) not in self.exclude and not _same_bits(arr, saved_a):
                p.arrays.append((arr, saved_a))
                p.descriptions.append(f"array {arr.shape} changed in place")
        return p

    def differs(self) -> list[str]:
        """Human-readable list of what is not as recorded (empty when all is restored)."""
        return self.patch().descriptions


def _slot_values(obj: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name in ("__dict__", "__weakref__"):
                continue
            if hasattr(obj, name):
                values[name] = getattr(obj, name)
    return values
