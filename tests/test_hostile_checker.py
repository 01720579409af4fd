"""Hostile layers against the checker itself: non-finite gradients, empty arrays, outputs that
change shape or type, all-zero outputs, np.matrix parameters, non-finite inputs, bad loss terms.

Each case ends in a right verdict or a usage error naming the layer and the array, and leaves
the layer, the inputs and every random stream bit for bit as they were.
"""

from __future__ import annotations

import itertools
import pickle
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import global_streams, weights

from example_nn.layers import MaxPool2d
from pytest_gradcheck import CheckResult, GradcheckUsageError, NondeterministicLayerError, check

MODES = ("full", "sample", "fast", "auto")


def x_batch(n: int = 4, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


class Affine:
    """y = x @ W + b, gradients in dW/db; subclasses bend one thing."""

    def __init__(self, d_in: int = 3, d_out: int = 2) -> None:
        self.W = weights((d_in, d_out))
        self.b = weights((d_out,), 2)

    def forward(self, x: np.ndarray) -> Any:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        dx: np.ndarray = dout @ self.W.T
        return dx


def state_bytes(layer: Any) -> bytes:
    """The layer's attributes, pickled (classes made inside a test cannot be pickled)."""
    return pickle.dumps(vars(layer))


def untouched(layer: Any, *inputs: Any) -> Callable[[], None]:
    """Records the layer, the inputs and the global random streams; the returned function
    asserts they are bit for bit as recorded."""
    before = (state_bytes(layer), pickle.dumps(inputs), global_streams())

    def verify() -> None:
        assert state_bytes(layer) == before[0], "the layer was left changed"
        assert pickle.dumps(inputs) == before[1], "the inputs were left changed"
        assert global_streams() == before[2], "a global random stream was left changed"

    return verify


def usage_error(layer: Any, *inputs: Any, **options: Any) -> str:
    """The message of the usage error the check raises; the state is verified unchanged."""
    verify = untouched(layer, *inputs)
    with pytest.raises(GradcheckUsageError) as info:
        check(layer, *inputs, **options)
    verify()
    message = str(info.value)
    assert info.value.label is not None and message.startswith(info.value.label)
    return message


def checked(layer: Any, *inputs: Any, **options: Any) -> CheckResult:
    verify = untouched(layer, *inputs)
    result = check(layer, *inputs, **options)
    verify()
    return result


# ---------------------------------------------------------------------------------------------
# NaN or inf in a gradient
# ---------------------------------------------------------------------------------------------


class NonFiniteWeightGrad(Affine):
    def __init__(self, value: float, d_in: int = 3, d_out: int = 2) -> None:
        super().__init__(d_in, d_out)
        self.value = value

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.dW[1, 0] = self.value
        return dx


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", MODES)
def test_a_non_finite_gradient_element_fails_with_its_index_in_every_mode(
    mode: str, value: float
) -> None:
    layer, x = NonFiniteWeightGrad(value), x_batch()
    result = checked(layer, x, mode=mode, samples=100, auto_limit=4)
    w = result.entry("W")
    assert w.status == "FAIL" and not result.ok
    assert w.worst_index == (1, 0)
    assert w.max_rel_error == np.inf
    assert {e.name: e.status for e in result.entries}["x"] == "ok"


def test_fast_mode_reports_a_non_finite_gradient_in_a_large_array() -> None:
    layer, x = NonFiniteWeightGrad(np.nan, 64, 40), x_batch(3, 64)
    result = checked(layer, x, mode="auto")  # W: 2,560 elements, above auto_limit
    w = result.entry("W")
    assert w.status == "FAIL" and w.worst_index == (1, 0) and w.failed == 1


# ---------------------------------------------------------------------------------------------
# Empty arrays: nothing could fail
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_an_empty_batch_is_a_usage_error_naming_the_input(mode: str) -> None:
    message = usage_error(Affine(4, 2), np.zeros((0, 4)), mode=mode)
    assert "nothing to check" in message and "input 'x'" in message
    assert "(0, 4)" in message


def test_an_empty_batch_is_refused_even_when_only_parameters_are_checked() -> None:
    message = usage_error(Affine(4, 2), np.zeros((0, 4)), inputs=False)
    assert "nothing to check" in message and "'x'" in message


class EmptyParam(Affine):
    def __init__(self) -> None:
        super().__init__()
        self.c = np.zeros(0)

    def forward(self, x: np.ndarray) -> Any:
        return super().forward(x) + self.c.sum()

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dc = np.zeros(0)
        return super().backward(dout)


def test_an_empty_parameter_is_a_usage_error_naming_it() -> None:
    message = usage_error(EmptyParam(), x_batch())
    assert "nothing to check" in message and "parameter 'c'" in message
    assert "params=" in message


# ---------------------------------------------------------------------------------------------
# Outputs that change shape or type, or are exactly zero
# ---------------------------------------------------------------------------------------------


def growing_layer() -> Affine:
    calls = itertools.count()  # out of the checker's reach: a closure, not layer state

    class Growing(Affine):
        def forward(self, x: np.ndarray) -> Any:
            out = super().forward(x)
            if next(calls) >= 4:
                out = np.concatenate([out, out[:1]])
            return out

    return Growing()


def test_an_output_whose_shape_changes_after_the_setup_passes_is_a_usage_error() -> None:
    message = usage_error(growing_layer(), x_batch())
    assert "shape" in message and "(4, 2)" in message and "(5, 2)" in message


class MatrixOutput(Affine):
    def forward(self, x: np.ndarray) -> Any:
        return np.asmatrix(super().forward(x))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_an_np_matrix_output_is_a_usage_error() -> None:
    message = usage_error(MatrixOutput(), x_batch())
    assert "np.matrix" in message and "ndarray" in message


class ZeroOutput(Affine):
    """(x - 1) @ W without bias, fed ones: the output is exactly zero, but not nearby."""

    def __init__(self, wrong: bool) -> None:
        super().__init__()
        self.b = np.zeros(2)
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> Any:
        return super().forward(x - 1.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        if self.wrong:
            self.dW[0, 1] += 0.5
        return dx


@pytest.mark.parametrize("mode", MODES)
def test_an_output_of_exact_zeros_gets_a_verdict(mode: str) -> None:
    x = np.ones((4, 3))
    assert checked(ZeroOutput(False), x, mode=mode).ok
    result = checked(ZeroOutput(True), x, mode=mode, samples=100)
    assert {e.name: e.status for e in result.entries} == {"x": "ok", "W": "FAIL", "b": "ok"}
    assert result.entry("W").worst_index == (0, 1)
    assert "nan" not in str(result) and "inf" not in str(result)


class MatrixParam(Affine):
    def __init__(self) -> None:
        super().__init__()
        self.W = np.asmatrix(self.W)

    def forward(self, x: np.ndarray) -> Any:
        self.x = x
        return np.asarray(x @ self.W) + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = np.asarray(self.x.T @ dout)
        self.db = dout.sum(axis=0)
        return np.asarray(dout @ self.W.T)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.parametrize("mode", MODES)
def test_an_np_matrix_parameter_is_a_usage_error_naming_it(mode: str) -> None:
    message = usage_error(MatrixParam(), x_batch(), mode=mode)
    assert "parameter 'W'" in message and "np.matrix" in message and "ndarray" in message


# ---------------------------------------------------------------------------------------------
# Non-finite inputs and bad loss terms
# ---------------------------------------------------------------------------------------------


class FirstColumns(Affine):
    """Reads only the first three columns of its input."""

    def forward(self, x: np.ndarray) -> Any:
        return super().forward(x[:, :3])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = np.zeros((self.x.shape[0], 4))
        dx[:, :3] = super().backward(dout)
        return dx


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_non_finite_input_the_output_never_sees_is_a_usage_error(value: float) -> None:
    x = x_batch(4, 4)
    x[2, 3] = value
    message = usage_error(FirstColumns(), x)
    assert "input 'x'" in message and "non-finite" in message and "(2, 3)" in message


def test_a_non_finite_input_the_output_sees_is_named_too() -> None:
    x = x_batch()
    x[0, 0] = np.nan
    message = usage_error(Affine(), x)
    assert "input 'x'" in message and "non-finite" in message


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), "1.5", True, np.bool_(True), None, [1.0], 1 + 0j]
)
def test_extra_loss_must_return_a_finite_real_number(value: Any) -> None:
    message = usage_error(Affine(), x_batch(), extra_loss=lambda layer: value)
    assert "extra_loss" in message and "real number" in message


@pytest.mark.parametrize("value", [1.5, 2, np.float32(0.25), np.int64(3), np.array(0.5)])
def test_extra_loss_may_return_any_real_number(value: Any) -> None:
    assert checked(Affine(), x_batch(), extra_loss=lambda layer: value).ok


def test_extra_loss_turning_nan_at_a_perturbed_point_is_a_usage_error() -> None:
    layer = Affine()
    start = float(layer.W[0, 0])

    def sqrt_loss(lay: Affine) -> float:
        # the square root of how far W[0, 0] is above its start: nan once stepped below it
        with np.errstate(invalid="ignore"):
            return float(np.sqrt(lay.W[0, 0] - start))

    message = usage_error(layer, x_batch(), extra_loss=sqrt_loss, params=["W"], inputs=False)
    assert "extra_loss" in message and "nan" in message


# ---------------------------------------------------------------------------------------------
# Stale state: a backward using what an earlier forward call left behind
# ---------------------------------------------------------------------------------------------


def draw(source: str, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    if source == "private":
        return rng.random(shape)
    if source == "numpy":
        return np.random.random(shape)
    return np.array([random.random() for _ in range(int(np.prod(shape)))]).reshape(shape)


class StaleMaskDropout:
    """Inverted dropout whose backward applies the mask of the PREVIOUS forward call."""

    def __init__(self, source: str, p: float = 0.5) -> None:
        self.source = source
        self.p = p
        self.rng = np.random.default_rng(3)
        self.mask: np.ndarray | None = None
        self.previous: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        mask = (draw(self.source, self.rng, x.shape) >= self.p) / (1.0 - self.p)
        self.previous = mask if self.mask is None else self.mask
        self.mask = mask
        return x * mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.previous is not None
        out: np.ndarray = dout * self.previous
        return out


class Dropout(StaleMaskDropout):
    """The same dropout, right."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.mask is not None
        out: np.ndarray = dout * self.mask
        return out


@pytest.mark.parametrize("source", ["private", "numpy", "python"])
@pytest.mark.parametrize("mode", MODES)
def test_a_dropout_applying_the_previous_mask_in_backward_fails(mode: str, source: str) -> None:
    x = x_batch(6, 5)
    result = checked(StaleMaskDropout(source), x, mode=mode, auto_limit=8)
    assert result.entry("x").status == "FAIL"
    assert checked(Dropout(source), x, mode=mode, auto_limit=8).ok


class StaleCache(Affine):
    """Backward computes dW from the input of the previous forward call."""

    def forward(self, x: np.ndarray) -> Any:
        self.previous = getattr(self, "x", x)
        return super().forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.dW = self.previous.T @ dout
        return dx


@pytest.mark.parametrize("mode", MODES)
def test_a_backward_using_the_previous_calls_input_fails(mode: str) -> None:
    result = checked(StaleCache(), x_batch(), mode=mode, auto_limit=3)
    assert {e.name: e.status for e in result.entries} == {"x": "ok", "W": "FAIL", "b": "ok"}


class StaleReLU:
    """ReLU whose backward applies the mask of the PREVIOUS forward call: a mask that depends on
    the input's signs alone, which inputs merely scaled by the decoy would keep."""

    def __init__(self) -> None:
        self.mask: np.ndarray | None = None
        self.previous: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.previous = self.mask
        self.mask = x > 0
        return np.where(self.mask, x, 0.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mask = self.previous if self.previous is not None else self.mask
        assert mask is not None
        return np.where(mask, dout, 0.0)


class StaleMaxPool(MaxPool2d):
    """Max-pool whose backward routes the gradient by the previous call's winners."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.previous = getattr(self, "_argmax", None)
        return super().forward(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.previous is not None:
            self._argmax = self.previous
        return super().backward(dout)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_backward_using_the_previous_calls_relu_mask_fails(mode: str, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(8, 16))
    result = checked(StaleReLU(), x, mode=mode, seed=seed, auto_limit=64)
    assert result.entry("x").status == "FAIL"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch", [1, 3])
def test_a_backward_routing_by_the_previous_calls_max_pool_winners_fails(
    mode: str, batch: int
) -> None:
    # A batch of one: the decoy moves the channels instead of the samples.
    x = np.random.default_rng(batch).normal(size=(batch, 3, 6, 6))
    result = checked(StaleMaxPool(2, 2), x, mode=mode, auto_limit=64)
    assert result.entry("x").status == "FAIL"
    assert checked(MaxPool2d(2, 2), x, mode=mode, auto_limit=64).ok


class StaleKnots:
    """Forward valid only on increasing knots along axis 0 (it raises otherwise); backward uses
    the previous call's input. Shifted samples break the order: the decoy falls back to the
    inputs in their own order."""

    def __init__(self, stale: bool = True) -> None:
        self.stale = stale
        self.previous: np.ndarray | None = None
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if np.any(np.diff(x[:, 0]) <= 0):
            raise ValueError("knots must increase")
        self.previous, self.x = self.x, x.copy()
        out: np.ndarray = np.cumsum(x**2, axis=0)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        x = self.previous if self.stale and self.previous is not None else self.x
        assert x is not None
        dx: np.ndarray = 2 * x * np.cumsum(dout[::-1], axis=0)[::-1]
        return dx


class StaleCrossEntropy:
    """Binary cross-entropy on probabilities, one of them 0.995 (scaled by 10% it leaves (0, 1)
    and the loss turns NaN); backward uses the previous call's probabilities."""

    def __init__(self, targets: np.ndarray, stale: bool = True) -> None:
        self.t, self.stale = targets, stale
        self.previous: np.ndarray | None = None
        self.p: np.ndarray | None = None

    def forward(self, p: np.ndarray) -> np.ndarray:
        self.previous, self.p = self.p, p
        with np.errstate(invalid="ignore", divide="ignore"):
            out: np.ndarray = -(self.t * np.log(p) + (1 - self.t) * np.log(1 - p))
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.previous if self.stale and self.previous is not None else self.p
        assert p is not None
        dp: np.ndarray = dout * (-(self.t / p) + (1 - self.t) / (1 - p))
        return dp


@pytest.mark.parametrize("mode", MODES)
def test_a_stale_cache_is_caught_where_the_inputs_order_or_domain_is_narrow(mode: str) -> None:
    rng = np.random.default_rng(0)
    knots = np.sort(rng.normal(size=(10, 3)), axis=0)
    p = rng.uniform(0.01, 0.99, (8, 4))
    p[0, 0] = 0.995
    t = (rng.random((8, 4)) < 0.5).astype(float)
    for seed in range(4):
        for make, x in [(StaleKnots, knots), (lambda stale=True: StaleCrossEntropy(t, stale), p)]:
            assert not checked(make(), x, mode=mode, seed=seed, auto_limit=64).ok
            assert checked(make(stale=False), x, mode=mode, seed=seed, auto_limit=64).ok


def test_decoy_inputs_are_the_inputs_values_moved_one_sample_and_scaled_by_at_most_ten_percent(
) -> None:
    from pytest_gradcheck.decoy import decoy_inputs as _decoy_inputs

    rng = np.random.default_rng(0)
    batch = rng.normal(size=(4, 3))
    batch[1, 2] = 0.0
    single = rng.normal(size=(1, 5))  # one sample: moved along the next axis
    scalar = np.array(2.5)
    labels = np.array([0, 2, 1, 1])
    got = _decoy_inputs([batch, single, scalar, labels, 7], np.random.default_rng(1))
    for decoy, shifted in [(got[0], np.roll(batch, 1, axis=0)),
                           (got[1], np.roll(single, 1, axis=1)), (got[2], scalar)]:
        ratio = np.divide(decoy, shifted, out=np.ones_like(decoy), where=shifted != 0)
        assert np.all((ratio >= 0.9) & (ratio < 1.1))
        assert np.array_equal(decoy == 0, shifted == 0)  # zeros and signs kept
    assert got[3] is not labels and np.array_equal(got[3], labels)
    assert got[4] == 7


def flaky_layer(fault: str) -> Affine:
    """A correct layer whose second forward call (the decoy) fails after changing its state."""
    calls = itertools.count()  # out of the checker's reach

    class Flaky(Affine):
        def forward(self, x: np.ndarray) -> Any:
            self.count = getattr(self, "count", 0) + 1
            self.log = [*getattr(self, "log", []), float(x[0, 0])]
            out = super().forward(x)
            if next(calls) == 1:
                if fault == "raises":
                    raise FloatingPointError("overflow on these inputs")
                out = out * np.nan
            return out

    return Flaky()


@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_a_decoy_forward_that_fails_is_skipped_and_leaves_no_trace(fault: str) -> None:
    layer = flaky_layer(fault)
    result = checked(layer, x_batch())
    assert result.ok
    assert not hasattr(layer, "count") and not hasattr(layer, "log")


def logging_layer(log: list[str], x0: np.ndarray) -> Affine:
    """Logs whether each forward call sees the check's inputs (in a closure: layer state
    would be put back after the check)."""

    class Logging(Affine):
        def forward(self, x: np.ndarray) -> Any:
            log.append("same" if np.array_equal(x, x0) else "other")
            return super().forward(x)

    return Logging()


def test_one_decoy_forward_runs_on_other_inputs_before_the_analytic_forward() -> None:
    log: list[str] = []
    x = x_batch()
    result = check(logging_layer(log, x), x, mode="fast")
    assert log[:3] == ["same", "other", "same"]
    # then the probes along x (each evaluation made twice as scheduled): every forward but the
    # two on the check's own inputs saw others
    assert log.count("other") == result.forward_calls - 2 >= 1 + 2 + 2


# ---------------------------------------------------------------------------------------------
# Low-entropy nondeterminism: rare, tiny or few random changes
# ---------------------------------------------------------------------------------------------


def noisy_layer(seed: int) -> Affine:
    """A correct layer that, in one call out of eight, adds 1e-9 to one output element, drawn
    from a generator the checker cannot reach (a closure; seeded, for a reproducible test)."""
    noise = np.random.default_rng(seed)

    class RarelyNoisy(Affine):
        def forward(self, x: np.ndarray) -> Any:
            out = super().forward(x)
            if noise.random() < 1 / 8:
                out = out.copy()
                out.flat[noise.integers(out.size)] += 1e-9
            return out

    return RarelyNoisy()


def test_rare_tiny_noise_is_reported_as_nondeterminism() -> None:
    caught = 0
    for seed in range(40):
        layer, x = noisy_layer(seed), x_batch()
        verify = untouched(layer, x)
        try:
            check(layer, x, seed=seed)
        except NondeterministicLayerError as exc:
            assert "random source the checker cannot reset" in str(exc)
            caught += 1
        verify()
    assert caught >= 38


@pytest.mark.parametrize("mode", MODES)
def test_rare_tiny_noise_never_passes_through_the_kink_rule(mode: str) -> None:
    for seed in range(10):
        try:
            result = check(noisy_layer(seed), x_batch(), seed=seed, mode=mode)
        except NondeterministicLayerError:
            continue
        assert result.ok and all(e.kinks == 0 for e in result.entries), str(result)


def fresh_generator_dropout(start: int) -> Any:
    """Dropout drawing its mask from a generator created inside forward (a new seed per call,
    as default_rng() would take one from the operating system)."""
    seeds = itertools.count(start)

    class FreshDropout:
        def forward(self, x: np.ndarray) -> np.ndarray:
            self.mask = (np.random.default_rng(next(seeds)).random(x.shape) < 0.5) / 0.5
            return x * self.mask

        def backward(self, dout: np.ndarray) -> np.ndarray:
            out: np.ndarray = dout * self.mask
            return out

    return FreshDropout()


@pytest.mark.parametrize("mode", MODES)
def test_a_generator_created_inside_forward_on_a_tiny_input_is_caught(mode: str) -> None:
    caught = 0
    for seed in range(40):
        layer, x = fresh_generator_dropout(1000 * seed), x_batch(1, 1, seed)
        verify = untouched(layer, x)
        try:
            result = check(layer, x, seed=seed, mode=mode)
        except NondeterministicLayerError:
            caught += 1
        else:
            # every evaluation happened to draw the same mask: a verdict on repeatable numbers
            assert result.ok and all(e.kinks == 0 for e in result.entries), str(result)
        verify()
    assert caught >= 38


class DrawsAboveThreshold:
    """out = 2x, plus a draw from numpy's global stream in one element once x[0, 0] exceeds
    its starting value: only perturbed evaluations draw, so the setup passes do not see the
    stream in use and the first run of the mode does not reset it."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def forward(self, x: np.ndarray) -> np.ndarray:
        out: np.ndarray = 2.0 * x
        if x[0, 0] > self.threshold:
            out[1, 1] += 1e-3 * np.random.standard_normal()
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out: np.ndarray = 2.0 * dout
        return out


def test_an_unrepeatable_evaluation_explained_by_an_unreset_stream_is_judged_again() -> None:
    x = x_batch()
    result = checked(DrawsAboveThreshold(float(x[0, 0])), x, mode="full")
    assert result.ok, str(result)
    assert any("random stream was used only by some evaluations" in n for n in result.notes)


class WrongDrawsAboveThreshold(DrawsAboveThreshold):
    """The same forward, and a backward wrong by 1% in one element."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out = super().backward(dout)
        out[0, 1] *= 1.01
        return out


@pytest.mark.parametrize("mode", ["full", "sample", "fast"])
def test_a_wrong_gradient_still_fails_when_judged_again_with_every_stream_reset(
    mode: str,
) -> None:
    # The recheck redoes the evaluations; it must never be a way for a real error to pass.
    x = x_batch()
    result = checked(WrongDrawsAboveThreshold(float(x[0, 0])), x, mode=mode, samples=24)
    assert not result.ok, str(result)
    assert any("random stream was used only by some evaluations" in n for n in result.notes)
