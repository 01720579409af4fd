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

from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.state import SeededGlobalNumpy, Snapshot


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
