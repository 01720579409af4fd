"""Random sources: every random stream a check resets and gives back, and reseeding.

`RandomSource` wraps one stream (a private `np.random.Generator`, `RandomState`, bit generator
or `random.Random`) with save, restore, a cheap reset and a scramble (the decoy's other state).
`SeededGlobalNumpy` and `SeededGlobalPython` seed numpy's and Python's global streams from the
check seed for the check and give the user's states back afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np

from .state import state_equal
from .streams import global_seed


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
        return not state_equal(self.get(), self.saved)

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
    """numpy's global RNG, reset by reseeding: `np.random.seed(int)` costs a small fraction of
    `set_state`, which costs more than the forward pass of a small layer.

    Reseeding is an exact reset only for the default MT19937 bit generator (it also empties the
    gauss cache); after `np.random.set_bit_generator(...)` the state is saved and set instead.
    """

    def __init__(self, seed: int) -> None:
        self.seed = global_seed(seed)
        self.obj = np.random.mtrand._rand
        self._bit_generator = self.obj._bit_generator
        self.label = "numpy global RNG"
        self._reseed_resets = _legacy_mt19937(self.obj)
        # Raw MT19937 bytes (far cheaper to read or write than get_state) where that works.
        raw = _mt19937_raw(self.obj)
        self._raw = raw[0] if raw is not None else None
        self._write_raw = raw[1] if raw is not None else None
        self._user_raw = self._raw() if self._raw is not None else None
        # The user's state in full (get_state) only where the raw bytes cannot give it back: with
        # a gauss cached, or without the raw path.
        gauss = _gauss_cache(self.obj) if self._user_raw is not None else None
        self._user_state: Any = None if gauss == (0, 0.0) else self.get()
        np.random.seed(self.seed)
        # Not RandomSource.__init__: its get() would read the whole state once more.
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
        # Reseeding reproduces the saved state bit for bit (gauss cache included), far cheaper
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
            if swapped():  # an identity test; a forward that swaps the generator swaps it always
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
                # then written back raw, which costs a fraction of set_state.
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
    """(has_gauss, gauss) of a legacy RandomState read from the object's memory (without
    `get_state()`, which copies the whole state), or None where that cannot be trusted.

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
    state words), or None. getstate() builds a tuple of 625 ints (which `changed` then
    compares) and setstate() reads one back; the raw bytes are one copy of memory. The layout
    is CPython's, so it is verified once on private instances, reading and writing, against
    getstate(); on any mismatch or error the caller uses getstate() and
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
    `_python_mt_raw` allows (several times per check, without building tuples), else through
    getstate()."""

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
