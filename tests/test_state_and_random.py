"""State and randomness: every evaluation starts from the same state, and the check leaves the
layer, the inputs and every random stream bit for bit as it found them.

Random layers must pass whichever stream they draw from, as long as the checker can reach and
reset it; an unreachable stream must be diagnosed (with the way out), not misreported as a wrong
gradient. Training mode is forced for the check and undone afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import random
import textwrap
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import global_streams, x_batch

from example_nn import BatchNorm1d, Dropout, Linear, ReLU, Sequential
from pytest_gradcheck import (
    CheckResult,
    GradcheckUsageError,
    NondeterministicLayerError,
    check,
)

# A module-level generator: reachable only if registered (random_sources=[...] or the hook).
MODULE_RNG = np.random.default_rng(2024)


def deep_state(obj: Any, _seen: set[int] | None = None) -> Any:
    """A comparable picture of everything reachable from obj: array bytes and identities,
    container contents, attribute dicts, generator states."""
    seen = set() if _seen is None else _seen
    if isinstance(obj, (int, float, complex, str, bytes, bool, type(None), np.generic)):
        return ("atom", type(obj).__name__, repr(obj))
    if id(obj) in seen:
        return ("seen", id(obj))
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return ("array", id(obj), obj.dtype.str, obj.shape, obj.strides, obj.tobytes())
    if isinstance(obj, np.random.Generator):
        return ("generator", id(obj), repr(obj.bit_generator.state))
    if isinstance(obj, random.Random):
        return ("random", id(obj), obj.getstate())
    if isinstance(obj, dict):
        return ("dict", id(obj), [(k, deep_state(v, seen)) for k, v in obj.items()])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, id(obj), [deep_state(v, seen) for v in obj])
    if isinstance(obj, set):
        return ("set", id(obj), sorted(map(repr, obj)))
    if hasattr(obj, "__dict__"):
        return ("object", id(obj), type(obj).__name__, deep_state(vars(obj), seen))
    return ("other", id(obj), repr(obj))


# ---------------------------------------------------------------------------------------------
# Random layers pass whichever reachable stream they draw from
# ---------------------------------------------------------------------------------------------


class MaskLayer:
    """Inverted dropout with a learnable scale; `draw` makes the keep-mask."""

    def __init__(self, draw: Callable[[tuple[int, ...]], np.ndarray], p: float = 0.4) -> None:
        self.draw = draw
        self.p = p
        self.W = np.random.default_rng(1).normal(size=(4,))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.mask = (self.draw(x.shape) >= self.p) / (1 - self.p)
        return x * self.mask * self.W

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = (dout * self.x * self.mask).sum(axis=0)
        return dout * self.mask * self.W


class PrivateGeneratorMask(MaskLayer):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(5)
        super().__init__(lambda shape: self.rng.random(shape))


class PrivateRandomStateMask(MaskLayer):
    def __init__(self) -> None:
        self.rs = np.random.RandomState(5)
        super().__init__(lambda shape: self.rs.random_sample(shape))


class PrivatePythonRandomMask(MaskLayer):
    def __init__(self) -> None:
        self.r = random.Random(5)
        super().__init__(
            lambda shape: np.array([self.r.random() for _ in range(int(np.prod(shape)))]).reshape(
                shape
            )
        )


def global_numpy_mask() -> MaskLayer:
    return MaskLayer(lambda shape: np.random.rand(*shape))


def global_python_mask() -> MaskLayer:
    return MaskLayer(
        lambda shape: np.array([random.random() for _ in range(int(np.prod(shape)))]).reshape(shape)
    )


RANDOM_LAYERS: list[tuple[str, Callable[[], Any], str]] = [
    ("numpy-global", global_numpy_mask, "numpy global RNG"),
    ("python-random", global_python_mask, "Python random"),
    ("private-generator", PrivateGeneratorMask, "PrivateGeneratorMask.rng"),
    ("private-randomstate", PrivateRandomStateMask, "PrivateRandomStateMask.rs"),
    ("private-python-random", PrivatePythonRandomMask, "PrivatePythonRandomMask.r"),
    ("example-nn-dropout", lambda: Dropout(0.5, rng=np.random.default_rng(3)), "Dropout.rng"),
]


@pytest.mark.parametrize(
    ("make", "stream"), [c[1:] for c in RANDOM_LAYERS], ids=[c[0] for c in RANDOM_LAYERS]
)
def test_random_layer_passes(make: Callable[[], Any], stream: str) -> None:
    result = check(make(), x_batch())
    assert result.ok, str(result)
    notes = " ".join(result.notes)
    assert "random streams reset before every evaluation" in notes
    assert stream in notes


def test_random_layer_with_wrong_backward_still_fails() -> None:
    class NoScale(PrivateGeneratorMask):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            super().backward(dout)
            return dout * (self.mask > 0) * self.W

    result = check(NoScale(), x_batch())
    assert [e.name for e in result.failed_entries] == ["x"]


def test_the_mask_really_is_random() -> None:
    # Guard for the tests above: two plain forward passes draw different masks.
    layer = PrivateGeneratorMask()
    a = layer.forward(x_batch())
    b = layer.forward(x_batch())
    assert not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Unreachable random sources
# ---------------------------------------------------------------------------------------------


class FreshGeneratorMask(MaskLayer):
    """Creates an unseeded generator inside every forward: nothing can reset it."""

    def __init__(self) -> None:
        super().__init__(lambda shape: np.random.default_rng().random(shape))


class ModuleGeneratorMask(MaskLayer):
    def __init__(self) -> None:
        super().__init__(lambda shape: MODULE_RNG.random(shape))


@pytest.mark.parametrize(
    "make", [FreshGeneratorMask, ModuleGeneratorMask], ids=["fresh-in-forward", "module-level"]
)
def test_unreachable_random_source_is_diagnosed(make: Callable[[], Any]) -> None:
    with pytest.raises(NondeterministicLayerError) as info:
        check(make(), x_batch())
    message = str(info.value)
    assert isinstance(info.value, GradcheckUsageError)
    assert message.startswith(make.__name__)
    assert "two forward passes from the same state gave different outputs" in message
    assert "random_sources=[gen]" in message
    assert "pytest_gradcheck_random_sources" in message


def test_registering_the_module_generator_fixes_it() -> None:
    state = MODULE_RNG.bit_generator.state
    result = check(ModuleGeneratorMask(), x_batch(), random_sources=[MODULE_RNG])
    assert result.ok
    assert MODULE_RNG.bit_generator.state == state


def test_registering_through_marker_and_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import numpy as np
        import pytest

        HOOK_RNG = np.random.default_rng(7)

        def pytest_gradcheck_random_sources(layer):
            if type(layer).__name__ == "HookMask":
                return [HOOK_RNG]
            return []
        """
    )
    pytester.makepyfile(
        test_streams=textwrap.dedent(
            """
            import numpy as np
            import pytest
            from conftest import HOOK_RNG

            GEN = np.random.default_rng(3)

            class Mask:
                def __init__(self, draw):
                    self.draw = draw
                def forward(self, x):
                    self.mask = self.draw(x.shape) > 0.5
                    return x * self.mask
                def backward(self, dout):
                    return dout * self.mask

            class HookMask(Mask):
                pass

            def x():
                return np.random.default_rng(0).normal(size=(5, 3))

            def test_unregistered(gradcheck):
                gradcheck(Mask(lambda s: GEN.random(s)), x())

            @pytest.mark.gradcheck(random_sources=[GEN])
            def test_marker(gradcheck):
                state = GEN.bit_generator.state
                gradcheck(Mask(lambda s: GEN.random(s)), x())
                assert GEN.bit_generator.state == state

            def test_hook(gradcheck):
                gradcheck(HookMask(lambda s: HOOK_RNG.random(s)), x())
            """
        )
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*Mask: two forward passes from the same state gave different outputs*random_sources*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


# ---------------------------------------------------------------------------------------------
# The caller's random streams are bit-identical afterwards: pass, fail, raise
# ---------------------------------------------------------------------------------------------


class AllStreams:
    """Draws from numpy's global RNG, Python's random, a private generator and MODULE_RNG."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.rng = np.random.default_rng(11)
        self.W = np.random.default_rng(1).normal(size=(4,))

    def forward(self, x: np.ndarray) -> np.ndarray:
        shift = np.random.rand() + random.random() + MODULE_RNG.random()
        self.mask = self.rng.random(x.shape) > 0.3
        if self.mode == "nondeterministic":
            shift += np.random.default_rng().random()
        self.x = x
        return (x * self.W + shift) * self.mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.mode == "raise":
            raise FloatingPointError("backward blew up")
        self.dW = (dout * self.x * self.mask).sum(axis=0)
        factor = 1.01 if self.mode == "fail" else 1.0
        return dout * self.W * self.mask * factor


@pytest.mark.parametrize("mode", ["pass", "fail", "raise", "nondeterministic"])
def test_random_streams_restored_bit_for_bit(mode: str) -> None:
    np.random.seed(123)
    np.random.normal(size=7)  # somewhere mid-stream, with a cached gaussian
    random.seed(456)
    random.random()
    layer = AllStreams(mode)
    layer.rng.random(3)
    MODULE_RNG.random(2)
    before = (global_streams(), layer.rng.bit_generator.state, MODULE_RNG.bit_generator.state)

    outcome: CheckResult | Exception
    try:
        outcome = check(layer, x_batch(), random_sources=[MODULE_RNG])
    except GradcheckUsageError as exc:
        outcome = exc
    after = (global_streams(), layer.rng.bit_generator.state, MODULE_RNG.bit_generator.state)

    expected = {
        "pass": lambda o: isinstance(o, CheckResult) and o.ok,
        "fail": lambda o: isinstance(o, CheckResult) and not o.ok,
        "raise": lambda o: isinstance(o, GradcheckUsageError) and "blew up" in str(o),
        "nondeterministic": lambda o: isinstance(o, NondeterministicLayerError),
    }
    assert expected[mode](outcome), outcome
    assert after == before
    # and the streams continue exactly where the caller left them
    np.random.seed(123)
    np.random.normal(size=7)
    assert global_streams() == before[0]


@pytest.mark.parametrize("seed", [0, 99])
def test_global_stream_continues_where_the_caller_left_it(seed: int) -> None:
    np.random.seed(99)
    expected = np.random.rand(3)
    np.random.seed(99)
    # The layer draws from the global stream hundreds of times; the caller sees none of it,
    # neither the draws nor the check's own seeding (also when the seeds coincide).
    check(global_numpy_mask(), x_batch(), seed=seed)
    assert np.array_equal(np.random.rand(3), expected)


def test_global_stream_with_another_bit_generator_is_reset_and_restored() -> None:
    # np.random.set_bit_generator swaps MT19937 out; reseeding a PCG64 keeps the gauss cache.
    original = np.random.get_bit_generator()
    try:
        np.random.set_bit_generator(np.random.PCG64(5))
        np.random.standard_normal()  # a gaussian cached in the caller's state
        before = repr(np.random.get_state(legacy=False))
        # An odd number of gaussians: each evaluation leaves one cached for the next.
        layer = MaskLayer(lambda shape: np.random.standard_normal(shape[0] * 4 + 1)[1:].reshape(
            shape) > -0.5)
        held = PrivateRandomStateMask()
        held.rs = np.random.RandomState(np.random.PCG64(3))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no get_state(legacy=True) warning either
            assert check(layer, x_batch(n=5, d=4)).ok
            assert check(held, x_batch(n=5, d=4)).ok
        assert repr(np.random.get_state(legacy=False)) == before
    finally:
        np.random.set_bit_generator(original)


# ---------------------------------------------------------------------------------------------
# Training mode forced, everything put back
# ---------------------------------------------------------------------------------------------


def trained_batchnorm(cls: type[BatchNorm1d] = BatchNorm1d) -> BatchNorm1d:
    bn = cls(4, momentum=0.3)
    rng = np.random.default_rng(9)
    for _ in range(3):
        bn.forward(rng.normal(2.0, 3.0, size=(8, 4)))
    bn.params["gamma"] = 1.0 + 0.2 * rng.normal(size=4)
    bn.params["beta"] = rng.normal(size=4)
    return bn.eval()


def test_batchnorm_left_in_eval_is_checked_in_train_and_restored() -> None:
    bn = trained_batchnorm()
    x = x_batch(6, 4)
    before = deep_state(bn)
    running = (bn.running_mean.copy(), bn.running_var.copy())
    result = check(bn, x)
    assert result.ok
    assert any("training=True" in n for n in result.notes)
    assert bn.training is False
    assert bn.running_mean.tobytes() == running[0].tobytes()
    assert bn.running_var.tobytes() == running[1].tobytes()
    assert deep_state(bn) == before


def test_batchnorm_left_in_eval_really_runs_in_train_mode() -> None:
    class EvalOnlyBackward(BatchNorm1d):
        """Always differentiates the eval-mode formula: right in eval, wrong in train."""

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.grads["gamma"] = np.sum(dout * self._xhat, axis=0)
            self.grads["beta"] = dout.sum(axis=0)
            return dout * self.params["gamma"] * self._inv_std

    bn = trained_batchnorm(EvalOnlyBackward)
    result = check(bn, x_batch(6, 4))
    assert [e.name for e in result.failed_entries] == ["x"]
    assert bn.training is False


def test_network_left_in_eval_is_restored() -> None:
    net = Sequential(
        Linear(4, 5, rng=np.random.default_rng(1)),
        BatchNorm1d(5),
        ReLU(),
        Dropout(0.3, rng=np.random.default_rng(2)),
        Linear(5, 2, rng=np.random.default_rng(3)),
    )
    net.forward(x_batch(6, 4, seed=5))
    net.eval()
    before = deep_state(net)
    result = check(net, x_batch(6, 4))
    assert result.ok
    assert [lay.training for lay in net.layers] == [False] * 5
    assert deep_state(net) == before


def test_state_restored_after_failure_and_error() -> None:
    class Bad(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * 2
            return dx

    class Raising(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            super().backward(dout)
            raise ValueError("late failure, after the gradients were written")

    for layer in (
        Bad(4, 3, rng=np.random.default_rng(1)),
        Raising(4, 3, rng=np.random.default_rng(1)),
    ):
        layer.forward(x_batch())
        before = deep_state(layer)
        with contextlib.suppress(GradcheckUsageError):
            assert not check(layer, x_batch()).ok
        assert deep_state(layer) == before


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


class InPlaceShift:
    """forward modifies its input in place (x += b) before using it."""

    def __init__(self) -> None:
        self.b = np.random.default_rng(1).normal(size=(4,))

    def forward(self, x: np.ndarray) -> np.ndarray:
        x += self.b
        self.t = np.tanh(x)
        return self.t

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * (1.0 - self.t**2)
        self.db = dz.sum(axis=0)
        return dz


def test_layer_mutating_its_input_in_place_is_checked_correctly() -> None:
    x = x_batch()
    x_before = x.copy()
    result = check(InPlaceShift(), x)
    assert result.ok
    assert {e.name: e.status for e in result.entries} == {"x": "ok", "b": "ok"}
    assert any("modifies its input in place" in n for n in result.notes)
    assert x.tobytes() == x_before.tobytes()


def test_mutating_layer_with_wrong_gradient_still_fails() -> None:
    class Wrong(InPlaceShift):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            return super().backward(dout) * 1.01

    assert [e.name for e in check(Wrong(), x_batch()).failed_entries] == ["x"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_user_inputs_unchanged(dtype: type) -> None:
    x = x_batch().astype(dtype)
    x_before = x.copy()
    layer = Linear(4, 3, rng=np.random.default_rng(1))
    check(layer, x)
    assert x.dtype == dtype
    assert x.tobytes() == x_before.tobytes()
    assert layer._x is None  # the layer holds no reference to a working copy afterwards


# ---------------------------------------------------------------------------------------------
# Counters and lists that forward changes
# ---------------------------------------------------------------------------------------------


class Counting:
    """Output depends on how often forward ran; forward also appends to a history list."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(1).normal(size=(4, 3))
        self.calls = 0
        self.history: list[float] = []
        self.seen_shapes: set[tuple[int, ...]] = set()
        self.stats = {"count": 0}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.stats["count"] += 1
        self.history.append(float(x.sum()))
        self.seen_shapes.add(x.shape)
        self.scale = 1.0 + 0.5 * self.calls + 0.1 * len(self.history)
        self.x = x
        return (x @ self.W) * self.scale

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout * self.scale
        return dout @ self.W.T * self.scale


def test_counters_and_lists_do_not_leak_between_evaluations() -> None:
    layer = Counting()
    layer.forward(x_batch())  # the caller has used the layer before
    history = layer.history
    before = deep_state(layer)
    result = check(layer, x_batch(seed=1))
    assert result.ok, str(result)
    assert result.forward_calls > 20
    assert layer.calls == 1
    assert layer.stats == {"count": 1}
    assert layer.history is history and len(history) == 1
    assert deep_state(layer) == before


class StepCounter:
    __slots__ = ("steps",)  # a tuple; the subclasses below spell their slots otherwise

    def __init__(self) -> None:
        self.steps = 0


class Warmup(StepCounter):
    __slots__ = "__factor"  # a single string, and a private (mangled) name

    def tick(self) -> float:
        self.steps += 1
        self.__factor = 1.0 + 0.1 * self.steps
        return self.__factor


class Unset:
    __slots__ = ("last",)  # not set until the first forward


class SlottedState:
    """Output depends on a step counter kept in objects with __slots__ (a warm-up schedule)."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(1).normal(size=(4, 3))
        self.schedule = Warmup()
        self.seen = Unset()

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.k = self.schedule.tick()
        self.seen.last = x.shape
        self.x = x
        return (x @ self.W) * self.k

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout * self.k
        return dout @ self.W.T * self.k


def test_slot_attributes_are_reset_between_evaluations_and_restored() -> None:
    layer = SlottedState()
    result = check(layer, x_batch())  # not misreported as nondeterministic
    assert result.ok, str(result)
    assert layer.schedule.steps == 0
    assert not hasattr(layer.schedule, "_Warmup__factor")
    assert not hasattr(layer.seen, "last")


class ObjectArrayHistory:
    """Keeps its history in an object-dtype array: a container numpy holds."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(1).normal(size=(4, 3))
        self.log = np.empty(2, dtype=object)
        self.log[0], self.log[1] = np.zeros(3), 0

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.log[0] += 1.0  # in place, inside an element
        self.log[1] = self.log[1] + 1  # rebinding an element
        self.x = x
        return x @ self.W * self.log[1]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout * self.log[1]
        return dout @ self.W.T * self.log[1]


def test_object_array_contents_are_reset_and_restored() -> None:
    layer = ObjectArrayHistory()
    first = layer.log[0]
    assert check(layer, x_batch()).ok
    assert layer.log[0] is first and np.array_equal(first, np.zeros(3)) and layer.log[1] == 0


def test_layer_holding_a_system_random_is_checked() -> None:
    layer = global_numpy_mask()
    layer.entropy = random.SystemRandom()  # no state to record: must not crash the snapshot
    assert check(layer, x_batch()).ok


class Visits:
    def __init__(self) -> None:
        self.count = 0


class WindowedHistory:
    """Output depends on a deque of recent batches; also counts visits in objects used as dict
    keys and fills a bytearray log."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(1).normal(size=(4, 3))
        self.window: collections.deque[float] = collections.deque(maxlen=3)
        self.by_visitor = {Visits(): "a"}
        self.log = bytearray(b"start")

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.window.append(1.0)
        for visitor in self.by_visitor:
            visitor.count += 1
        self.log += b"."
        self.k = float(len(self.window))
        self.x = x
        return x @ self.W * self.k

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout * self.k
        return dout @ self.W.T * self.k


def test_deques_bytearrays_and_dict_key_objects_are_reset_and_restored() -> None:
    layer = WindowedHistory()
    layer.window.append(0.5)
    result = check(layer, x_batch())  # not misreported as nondeterministic
    assert result.ok, str(result)
    assert list(layer.window) == [0.5]
    assert [v.count for v in layer.by_visitor] == [0]
    assert layer.log == b"start"
