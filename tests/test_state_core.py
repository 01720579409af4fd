"""Unit tests of `state.Snapshot` and `state.Patch` on plain objects, outside any check."""

from __future__ import annotations

import array
import collections
import random
from typing import Any

import numpy as np

from pytest_gradcheck.state import Patch, Snapshot


class Box:
    """A plain object whose attributes the tests rebind, add and delete."""


class Slotted:
    __slots__ = ("__hidden", "unset", "x")

    def __init__(self, x: Any) -> None:
        self.x = x
        self.__hidden = 1


def special_floats(n: int) -> np.ndarray:
    """-0.0 and a NaN with a payload among ordinary values: equal under == only by bits."""
    a = np.linspace(-1.0, 1.0, n)
    a[0] = -0.0
    a[1] = np.frombuffer(np.uint64(0x7FF8_0000_0000_BEEF).tobytes(), dtype=np.float64)[0]
    return a


# ---------------------------------------------------------------------------------------------
# Snapshot.restore
# ---------------------------------------------------------------------------------------------


def test_restore_puts_arrays_back_bit_for_bit_in_place() -> None:
    # Small arrays are compared as bytes, large ones through integer views: both paths.
    for n in (8, 20000):
        arr = special_floats(n)
        original = arr.tobytes()
        obj = Box()
        obj.w = arr
        snap = Snapshot([obj])
        # Changes that == cannot see: +0.0 over -0.0, the default NaN over the payload.
        arr[0] = 0.0
        arr[1] = np.nan
        assert arr.tobytes() != original
        snap.restore()
        assert arr.tobytes() == original
        arr[2:] *= 2.0
        snap.restore()
        assert obj.w is arr
        assert arr.tobytes() == original


def test_restore_rebinds_removes_and_adds_back_attributes() -> None:
    obj = Box()
    w = np.ones(3)
    obj.w, obj.count, obj.name = w, 0, "layer"
    snap = Snapshot([obj])
    obj.w = np.zeros(3)
    obj.count = 5
    del obj.name
    obj.cache = np.arange(3)
    snap.restore()
    assert vars(obj).keys() == {"w", "count", "name"}
    assert obj.w is w and obj.count == 0 and obj.name == "layer"


def test_restore_reaches_nested_containers() -> None:
    inner = {"mean": np.zeros(2), "steps": 0}
    history: list[Any] = [1, 2]
    seen: set[int] = {1}
    queue: collections.deque[int] = collections.deque([1, 2], maxlen=3)
    buf, ints = bytearray(b"ab"), array.array("i", [1, 2])
    obj = Box()
    obj.state = {"bn": inner, "history": history, "seen": seen, "more": (queue, buf, ints)}
    mean = inner["mean"]
    snap = Snapshot([obj])

    mean += 1.0
    inner["steps"] = 1
    inner["extra"] = True
    history.append(3)
    history[0] = "x"
    seen.add(2)
    queue.append(3)
    buf[0:1] = b"z"
    ints.append(3)

    snap.restore()
    assert inner == {"mean": mean, "steps": 0} and inner["mean"] is mean
    assert mean.tolist() == [0.0, 0.0]
    assert history == [1, 2] and seen == {1}
    assert list(queue) == [1, 2] and buf == b"ab" and ints.tolist() == [1, 2]


def test_restore_puts_slots_back_including_unset_and_mangled_ones() -> None:
    obj = Slotted(np.ones(2))
    x = obj.x
    snap = Snapshot([obj])
    obj.x = None
    obj.unset = "now set"
    obj._Slotted__hidden = 2  # type: ignore[attr-defined]
    x[0] = 7.0
    snap.restore()
    assert obj.x is x and x.tolist() == [1.0, 1.0]
    assert not hasattr(obj, "unset")
    assert obj._Slotted__hidden == 1  # type: ignore[attr-defined]


def test_restore_keeps_shared_objects_shared() -> None:
    shared = np.ones(2)
    a, b = Box(), Box()
    a.w, b.w = shared, shared
    snap = Snapshot([a, b])
    a.w = shared.copy()
    shared[:] = 3.0
    snap.restore()
    assert a.w is shared and b.w is shared and shared.tolist() == [1.0, 1.0]


def test_random_streams_and_recorded_arrays_are_found_by_path() -> None:
    obj = Box()
    obj.rng = np.random.default_rng(0)
    obj.py = random.Random(1)
    obj.w = np.ones(2)
    obj.ro = np.ones(2)
    obj.ro.flags.writeable = False
    snap = Snapshot([obj], names=["layer"])
    assert snap.random_objects == [(obj.rng, "layer.rng"), (obj.py, "layer.py")]
    saved = snap.saved_array(obj.w)
    assert saved is not None and saved is not obj.w and saved.tolist() == [1.0, 1.0]
    assert snap.saved_array(np.ones(2)) is None
    assert snap.saved_array(obj.ro) is None  # read-only: nothing can change it


# ---------------------------------------------------------------------------------------------
# Snapshot.patch and Patch
# ---------------------------------------------------------------------------------------------


class RunningMean:
    """A forward that changes state: running statistics in place, a counter rebound, a cache
    added, a history appended to."""

    def __init__(self) -> None:
        self.running = special_floats(4)
        self.steps = 0
        self.history: list[int] = []
        self.w = np.ones(4)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.running *= 0.9
        self.running += 0.1 * x
        self.steps += 1
        self.history.append(self.steps)
        self.cache = x
        return x * self.w


def test_an_unchanged_state_gives_an_empty_patch() -> None:
    layer = RunningMean()
    patch = Snapshot([layer]).patch()
    assert not patch
    assert patch.descriptions == []
    apply = patch.compile()
    apply()  # a no-op, callable all the same
    assert layer.steps == 0 and vars(layer).keys() == {"running", "steps", "history", "w"}


def test_patch_reapplies_exactly_what_the_forward_changed() -> None:
    layer = RunningMean()
    x = np.arange(4.0)
    running_bits = layer.running.tobytes()
    baseline = Snapshot([layer])
    layer.forward(x)
    patch = baseline.patch()
    assert patch
    assert sorted(patch.descriptions) == sorted([
        "RunningMean.steps",
        "RunningMean.cache (added)",
        "list contents",
        "array (4,) changed in place",
    ])

    apply = patch.compile()
    for _ in range(3):  # every evaluation starts from the baseline again
        layer.forward(x)
        apply()
        assert layer.running.tobytes() == running_bits
        assert layer.steps == 0 and layer.history == [] and not hasattr(layer, "cache")


def test_patch_leaves_alone_what_the_forward_did_not_change() -> None:
    layer = RunningMean()
    w = layer.w
    baseline = Snapshot([layer])
    layer.forward(np.ones(4))
    apply = baseline.patch().compile()
    # Changes the recorded forward never made are not part of the patch (O(what changed)).
    w[0] = 5.0
    layer.extra = 1
    apply()
    assert w[0] == 5.0 and layer.extra == 1
    # restore() of the snapshot itself puts back everything.
    baseline.restore()
    assert w[0] == 1.0 and not hasattr(layer, "extra")


def test_patch_leaves_out_excluded_arrays_that_restore_still_covers() -> None:
    layer = RunningMean()
    baseline = Snapshot([layer], exclude=[layer.w])
    layer.w[1] = 3.0  # the checker perturbs and puts back its own arrays
    patch = baseline.patch()
    assert not patch
    baseline.restore()
    assert layer.w.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_patch_restores_slots_and_nested_dicts() -> None:
    obj = Slotted({"count": 0})
    table = obj.x
    baseline = Snapshot([obj])
    table["count"] = 1
    obj.unset = "set by forward"
    patch = baseline.patch()
    assert sorted(patch.descriptions) == ["Slotted.unset (slot)", "dict entries"]
    apply = patch.compile()
    table["count"] = 2
    apply()
    assert table == {"count": 0} and obj.x is table and not hasattr(obj, "unset")


def test_a_patch_built_by_hand_applies_its_pieces() -> None:
    dst, src = np.zeros(2), np.array([1.0, -0.0])
    obj = Box()
    obj.a = 1
    patch = Patch()
    assert not patch
    patch.arrays.append((dst, src))
    patch.attrs.append((obj, "a", 2))
    patch.descriptions.append("two pieces")
    assert patch
    patch.compile()()
    assert dst.tobytes() == src.tobytes() and obj.a == 2
