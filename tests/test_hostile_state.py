"""State control against hostile layers: deep object graphs, a forward that swaps numpy's
global bit generator, containers that subclass list or dict, and large arrays the forward
never touches. Whatever the layer does, the check leaves it and every random stream bit for
bit as it found them.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check, state
from pytest_gradcheck.sources import SeededGlobalNumpy
from pytest_gradcheck.state import Snapshot


def x_batch(n: int = 5, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


class Small:
    """A minimal linear layer: `y = x @ W`, gradients in dW."""

    def __init__(self) -> None:
        self.W: np.ndarray = np.random.default_rng(1).normal(size=(4, 3))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self.W
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        dx: np.ndarray = dout @ self.W.T
        return dx


# ---------------------------------------------------------------------------------------------
# Deep object graphs
# ---------------------------------------------------------------------------------------------


class Node:
    def __init__(self, value: int, next: Node | None) -> None:
        self.value = value
        self.next = next


def chain(n: int) -> Node:
    head = None
    for i in reversed(range(n)):
        head = Node(i, head)
    assert head is not None
    return head


def chain_picture(head: Node | None) -> list[tuple[int, int]]:
    out = []
    while head is not None:
        out.append((id(head), head.value))
        head = head.next
    return out


class ChainLayer(Small):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.chain = chain(n)

    def forward(self, x: np.ndarray) -> np.ndarray:
        # Touches the far end of the chain: bumps the last value, cuts the second to last link.
        node = self.chain
        while node.next is not None and node.next.next is not None:
            node = node.next
        assert node.next is not None
        node.next.value += 1
        node.next = Node(-1, None)
        return super().forward(x)


def test_snapshot_of_a_deep_chain_restores_it() -> None:
    head = chain(20_000)
    before = chain_picture(head)
    snap = Snapshot([head])
    node = head
    for _ in range(15_000):
        node = node.next  # type: ignore[assignment]
    node.value = 99
    node.next = None
    snap.restore()
    assert chain_picture(head) == before


def test_check_of_a_layer_holding_a_deep_chain() -> None:
    layer = ChainLayer(5_000)
    before = chain_picture(layer.chain)
    result = check(layer, x_batch())
    assert result.ok, str(result)
    assert chain_picture(layer.chain) == before


def test_paths_of_random_objects_are_kept() -> None:
    class Holder:
        pass

    rng = np.random.default_rng(0)
    rs = np.random.RandomState(0)
    py = random.Random(0)
    h = Holder()
    h.sub = Holder()  # type: ignore[attr-defined]
    h.sub.rng = rng  # type: ignore[attr-defined]
    h.d = {"k": [1, rs]}  # type: ignore[attr-defined]
    h.t = (py,)  # type: ignore[attr-defined]
    snap = Snapshot([h], names=["L"])
    assert snap.random_objects == [(rng, "L.sub.rng"), (rs, "L.d['k'][1]"), (py, "L.t[0]")]


# ---------------------------------------------------------------------------------------------
# A forward that swaps numpy's global bit generator
# ---------------------------------------------------------------------------------------------


def _swap_set_bit_generator() -> None:
    np.random.mtrand.set_bit_generator(np.random.PCG64(1))


def _swap_rand_attribute() -> None:
    np.random.mtrand._rand._bit_generator = np.random.PCG64(1)


def _swap_rand_object() -> None:
    np.random.mtrand._rand = np.random.RandomState(np.random.PCG64(1))


def _swap_seed_sfc64() -> None:
    np.random.mtrand.set_bit_generator(np.random.SFC64(7))
    np.random.seed(3)


SWAPS = {
    "set_bit_generator": _swap_set_bit_generator,
    "rand._bit_generator": _swap_rand_attribute,
    "mtrand._rand": _swap_rand_object,
    "SFC64 then seed": _swap_seed_sfc64,
}


class SwappingLayer(Small):
    def __init__(self, swap: str) -> None:
        super().__init__()
        self.swap = swap
        self.calls = 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        SWAPS[self.swap]()
        np.random.random()
        return super().forward(x)


def global_picture() -> tuple[Any, ...]:
    """The global RandomState, its bit generator, and its full state (gauss cache included)."""
    rand = np.random.mtrand._rand
    return (rand, rand._bit_generator, pickle.dumps(rand.get_state(legacy=False)))


@pytest.fixture
def keep_global_generator() -> Any:
    """Puts numpy's global generator back even if the code under test does not."""
    rand = np.random.mtrand._rand
    bg = rand._bit_generator
    yield
    np.random.mtrand._rand = rand
    np.random.mtrand.set_bit_generator(bg)


@pytest.mark.usefixtures("keep_global_generator")
@pytest.mark.parametrize("gauss", [False, True], ids=["plain", "gauss-cached"])
@pytest.mark.parametrize("swap", list(SWAPS))
def test_forward_swapping_the_global_bit_generator(swap: str, gauss: bool) -> None:
    np.random.seed(11)
    if gauss:
        np.random.standard_normal()  # the cached second normal takes the set_state path
    before = global_picture()
    expected_next = np.random.RandomState()
    expected_next.set_state(np.random.get_state())
    layer = SwappingLayer(swap)
    W = layer.W.copy()
    try:
        result = check(layer, x_batch())
        assert result.ok, str(result)
    except GradcheckUsageError:
        pass  # a verdict either way; what matters is what is left behind
    after = global_picture()
    assert after[0] is before[0] and after[1] is before[1]
    assert after[2:] == before[2:]
    assert np.random.random() == expected_next.random()
    assert np.array_equal(layer.W, W)
    assert layer.calls == 0
    assert not hasattr(layer, "x") and not hasattr(layer, "dW")


@pytest.mark.usefixtures("keep_global_generator")
@pytest.mark.parametrize("swap", list(SWAPS))
def test_seeded_global_numpy_gives_back_after_a_swap(swap: str) -> None:
    np.random.seed(5)
    np.random.standard_normal()
    before = global_picture()
    g = SeededGlobalNumpy(1234)
    SWAPS[swap]()
    g.restore()  # reset between evaluations: the seeded generator again
    assert np.random.mtrand._rand._bit_generator is before[1]
    assert np.random.random() == np.random.RandomState(1234).random()
    SWAPS[swap]()
    g.resetter()()
    assert np.random.random() == np.random.RandomState(1234).random()
    SWAPS[swap]()
    g.give_back()
    after = global_picture()
    assert after[0] is before[0] and after[1] is before[1] and after[2:] == before[2:]


# ---------------------------------------------------------------------------------------------
# Containers that subclass list or dict
# ---------------------------------------------------------------------------------------------


class Stats(dict):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__(mean=np.zeros(3))
        self.count = 0


class History(list):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__([1, 2])
        self.total = 0


class ContainerLayer(Small):
    def __init__(self) -> None:
        super().__init__()
        self.stats = Stats()
        self.history = History()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.stats.count += 1
        self.stats.x = 1  # type: ignore[attr-defined]
        self.stats["mean"] += 1.0
        self.stats["n"] = self.stats.count
        self.history.total = 42
        self.history.added = "x"  # type: ignore[attr-defined]
        self.history.append(len(self.history))
        return super().forward(x)


def container_picture(layer: ContainerLayer) -> tuple[Any, ...]:
    return (
        dict(vars(layer.stats)),
        {k: (v.tobytes() if isinstance(v, np.ndarray) else v) for k, v in layer.stats.items()},
        dict(vars(layer.history)),
        list(layer.history),
    )


def test_snapshot_restores_attributes_of_container_subclasses() -> None:
    layer = ContainerLayer()
    before = container_picture(layer)
    snap = Snapshot([layer])
    layer.forward(x_batch())
    patch = snap.patch()
    assert any("Stats.count" in d for d in patch.descriptions)
    assert any("History.added" in d for d in patch.descriptions)
    patch.compile()()
    assert container_picture(layer) == before
    layer.forward(x_batch())
    snap.restore()
    assert container_picture(layer) == before


def test_check_restores_attributes_of_container_subclasses() -> None:
    layer = ContainerLayer()
    before = container_picture(layer)
    result = check(layer, x_batch())
    assert result.ok, str(result)
    assert container_picture(layer) == before


# ---------------------------------------------------------------------------------------------
# Large arrays: protected (read-only for the check) rather than copied
# ---------------------------------------------------------------------------------------------

MB = 1 << 20
BIG_SHAPE = (512, 512)  # 2 MB of float64: above the protection threshold, cheap to make
# 40 MB: stands for a model holding its training data where the bytes copied are counted.
COUNTED_SHAPE = (5000, 1000)


def big_array(seed: int = 0, shape: tuple[int, int] = BIG_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).random(shape)


class DataLayer(Small):
    """Keeps a reference to a large array that forward never touches."""

    def __init__(self, shape: tuple[int, int] = BIG_SHAPE) -> None:
        super().__init__()
        self.data = big_array(shape=shape)


class DataWritingLayer(DataLayer):
    """Writes into its large array in place on every forward (a running sum of inputs)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.data[: x.shape[0], : x.shape[1]] += x
        return super().forward(x)


def test_snapshot_protects_a_big_array_instead_of_copying_it() -> None:
    layer = DataLayer(COUNTED_SHAPE)
    data = layer.data.copy()
    start = state.copied_bytes()
    snap = Snapshot([layer], protect_bytes=state.PROTECT_BYTES)
    assert snap.copied_bytes < MB and state.copied_bytes() - start == snap.copied_bytes
    assert not layer.data.flags.writeable and layer.W.flags.writeable
    with pytest.raises(ValueError, match="read-only") as info:
        layer.data[0, 0] = 1.0
    assert state.is_protection_fault(info.value)
    snap.restore()
    assert layer.data.flags.writeable
    assert np.array_equal(layer.data, data)


def test_without_protection_the_big_array_is_copied() -> None:
    # The counter counts: without protect_bytes the snapshot pays for the whole array.
    snap = Snapshot([DataLayer()])
    assert snap.copied_bytes >= big_array().nbytes
    snap = Snapshot([DataLayer()], protect_bytes=big_array().nbytes + 1)
    assert snap.copied_bytes >= big_array().nbytes


def wrapped_fault(write: Any, suppress_context: bool) -> GradcheckUsageError:
    """The usage error a checker raises when forward raised, around whatever `write` raises."""
    try:
        try:
            write()
        except ValueError as exc:
            if suppress_context:
                raise GradcheckUsageError("L: forward raised an error") from None
            raise GradcheckUsageError(f"L: forward raised ValueError: {exc}") from exc
    except GradcheckUsageError as wrapped:
        return wrapped
    raise AssertionError("no error")


@pytest.mark.parametrize("suppress_context", [False, True], ids=["from-exc", "from-None"])
def test_protection_fault_is_recognised_through_the_checker_wrapping(
    suppress_context: bool,
) -> None:
    ro = np.zeros(4)
    ro.flags.writeable = False

    def setitem() -> None:
        ro[0] = 1.0

    def ufunc_out() -> None:
        np.add(ro, 1.0, out=ro)

    for write in (setitem, ufunc_out):
        assert state.is_protection_fault(wrapped_fault(write, suppress_context))
    unrelated = wrapped_fault(lambda: np.ones(3) @ np.ones(4), suppress_context)
    assert not state.is_protection_fault(unrelated)


def test_release_gives_a_protected_array_back_with_a_copy() -> None:
    layer = DataLayer()
    data = layer.data.copy()
    snap = Snapshot([layer], protect_bytes=state.PROTECT_BYTES)
    snap.release([layer.data, layer.W, "not an array"])
    assert layer.data.flags.writeable and snap.copied_bytes >= data.nbytes
    layer.data[7] = -1.0
    snap.restore()
    assert np.array_equal(layer.data, data) and layer.data.flags.writeable


class ViewsLayer(Small):
    """A big owner, a big view and a small view of it, and a big view of an owner the layer
    does not reach."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = big_array()
        self.half = self.owner[:2500]
        self.row = self.owner[3]
        self.orphan = big_array(1)[:, :500]


def test_views_stay_consistent_under_protection() -> None:
    layer = ViewsLayer()
    owner, orphan_owner = layer.owner.copy(), layer.orphan.base.copy()  # type: ignore[union-attr]
    snap = Snapshot([layer], protect_bytes=state.PROTECT_BYTES)
    assert snap.copied_bytes < MB
    for arr in (layer.owner, layer.half, layer.orphan, layer.orphan.base):
        assert not arr.flags.writeable  # type: ignore[union-attr]
    assert not layer.owner[10:20].flags.writeable  # views made during the check
    # The small view stays writeable: it was copied, so a write through it is restored.
    layer.row[:] = 5.0
    assert layer.owner[3, 0] == 5.0
    # A released view takes its owner and the owner's other views along.
    snap.release([layer.half])
    assert layer.owner.flags.writeable and layer.half.flags.writeable
    assert not layer.orphan.flags.writeable
    layer.half[0] = -2.0
    snap.restore()
    assert np.array_equal(layer.owner, owner)
    assert np.array_equal(layer.orphan.base, orphan_owner)  # type: ignore[arg-type]
    for arr in (layer.owner, layer.half, layer.row, layer.orphan, layer.orphan.base):
        assert arr.flags.writeable  # type: ignore[union-attr]


def test_memory_owned_elsewhere_is_copied_and_read_only_arrays_left_alone() -> None:
    class Holder:
        pass

    h = Holder()
    h.buffer = np.frombuffer(bytearray(2 * MB), dtype=np.float64)  # type: ignore[attr-defined]
    frozen = big_array()
    h.view = frozen[:100]  # type: ignore[attr-defined]
    frozen.flags.writeable = False
    h.frozen = frozen  # type: ignore[attr-defined]
    snap = Snapshot([h], protect_bytes=state.PROTECT_BYTES)
    assert h.buffer.flags.writeable  # type: ignore[attr-defined]
    assert snap.copied_bytes >= 2 * MB
    h.buffer[0] = 3.0  # type: ignore[attr-defined]
    snap.restore()
    assert h.buffer[0] == 0.0  # type: ignore[attr-defined]
    assert not frozen.flags.writeable and h.view.flags.writeable  # type: ignore[attr-defined]


def protocol_check(layer: Small, x: np.ndarray, attempts: list[int | None]) -> np.ndarray:
    """What a check does with state.py: one protected attempt, and an unprotected one if the
    first stumbled on a protected array. Each attempt perturbs the parameter it checks."""

    def attempt(protect: int | None) -> np.ndarray:
        attempts.append(protect)
        snap = Snapshot([layer, x], protect_bytes=protect)
        try:
            snap.release([layer.W])
            layer.forward(x)
            layer.W[0, 0] += 1e-6
            out = layer.forward(x)
            layer.backward(np.ones_like(out))
            return out
        finally:
            snap.restore()

    return state.run_protected(attempt)


@pytest.mark.parametrize("make", [DataLayer, DataWritingLayer], ids=["untouched", "written"])
def test_protected_attempt_falls_back_to_copies_when_forward_writes(make: type[Small]) -> None:
    layer = make()
    x = x_batch()
    data, W = layer.data.copy(), layer.W.copy()  # type: ignore[attr-defined]
    attempts: list[int | None] = []
    start = state.copied_bytes()
    protocol_check(layer, x, attempts)
    copied = state.copied_bytes() - start
    if make is DataLayer:
        assert attempts == [state.PROTECT_BYTES] and copied < MB
    else:
        assert attempts == [state.PROTECT_BYTES, None] and copied >= data.nbytes
    assert np.array_equal(layer.data, data) and layer.data.flags.writeable  # type: ignore[attr-defined]
    assert np.array_equal(layer.W, W)
    assert not hasattr(layer, "x") and not hasattr(layer, "dW")


def test_check_restores_a_big_array_forward_writes_into() -> None:
    layer = DataWritingLayer()
    data = layer.data.copy()
    result = check(layer, x_batch())
    assert result.ok, str(result)
    assert layer.data.tobytes() == data.tobytes() and layer.data.flags.writeable


def test_check_does_not_copy_a_big_array_forward_never_touches() -> None:
    x = x_batch()
    start = state.copied_bytes()
    assert check(Small(), x).ok
    without = state.copied_bytes() - start
    start = state.copied_bytes()
    layer = DataLayer(COUNTED_SHAPE)
    assert check(layer, x).ok
    with_data = state.copied_bytes() - start
    assert with_data - without < 4 * MB, (with_data, without)
    assert layer.data.flags.writeable


class CountingDict(dict):  # type: ignore[type-arg]
    """Counts writes into its own attribute, including the ones a restore would make."""

    def __init__(self) -> None:
        super().__init__(a=1)
        self.writes = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)

    def clear(self) -> None:
        self.writes += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.writes += 1
        super().update(*args, **kwargs)


class CountingList(list):  # type: ignore[type-arg]
    def __init__(self) -> None:
        super().__init__([1])
        self.writes = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


class CountingLayer(Small):
    def __init__(self) -> None:
        super().__init__()
        self.d = CountingDict()
        self.lst = CountingList()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.d["b"] = 2
        self.lst[0] = 2
        return super().forward(x)


def counted(layer: CountingLayer) -> tuple[Any, ...]:
    return dict(layer.d), layer.d.writes, list(layer.lst), layer.lst.writes


def test_restoring_container_subclasses_bypasses_their_overrides() -> None:
    layer = CountingLayer()
    snap = Snapshot([layer])
    layer.forward(x_batch())
    snap.patch().compile()()
    assert counted(layer) == ({"a": 1}, 0, [1], 0)
    layer.forward(x_batch())
    snap.restore()
    assert counted(layer) == ({"a": 1}, 0, [1], 0)
    result = check(layer, x_batch())
    assert result.ok, str(result)
    assert counted(layer) == ({"a": 1}, 0, [1], 0)
