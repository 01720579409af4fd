"""Numerical properties of the verdict: kinks, exact zeros, scale, precision, and the classic bugs.

A gradient checker is only useful if it passes every correct layer (including at kinks, on exact
zeros and at large scale) and fails every wrong one (down to a 0.1% slip in one element).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from buggy_layers import (
    CLASSIC_BUGS,
    LinearWeightGradTransposed,
)
from helpers import x_batch

from example_nn import BatchNorm1d, Linear, MaxPool2d, ReLU, Sequential, Softmax, Tanh
from pytest_gradcheck import check

# ---------------------------------------------------------------------------------------------
# Kinks
# ---------------------------------------------------------------------------------------------


def relu_input_with_zeros() -> np.ndarray:
    x = x_batch(4, 5)
    x[0, 0] = x[1, 3] = x[2, 2] = x[3, 4] = 0.0
    return x


def test_relu_exactly_at_zero_passes_with_kinks_counted() -> None:
    result = check(ReLU(), relu_input_with_zeros())
    assert result.ok
    assert result.entry("x").kinks == 4
    assert result.entry("x").failed == 0
    assert "kinks" in str(result)


class ReluWrongAtZero:
    """Right everywhere except at x == 0, where it returns factor * dout (not a subgradient)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.maximum(x, 0.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self.x > 0, dout, np.where(self.x == 0, self.factor * dout, 0.0))


@pytest.mark.parametrize("factor", [0.5, 1.0, 0.0])
def test_relu_any_subgradient_at_zero_passes(factor: float) -> None:
    result = check(ReluWrongAtZero(factor), relu_input_with_zeros())
    assert result.ok
    # 0.5 is what the central difference itself gives at a ReLU kink; 0 and 1 are the
    # one-sided slopes, accepted by the kink rule and counted.
    assert result.entry("x").kinks == (0 if factor == 0.5 else 4)


@pytest.mark.parametrize("factor", [2.0, -1.0, 1.5])
def test_relu_wrong_value_at_zero_fails(factor: float) -> None:
    result = check(ReluWrongAtZero(factor), relu_input_with_zeros())
    x = result.entry("x")
    assert x.status == "FAIL"
    assert x.failed == 4
    assert x.worst_index in {(0, 0), (1, 3), (2, 2), (3, 4)}
    assert x.kinks == 0


def test_maxpool_ties_are_kinks() -> None:
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, 2:] = np.arange(4.0).reshape(2, 2)  # one window without ties
    result = check(MaxPool2d(2, 2), x)
    assert result.ok
    assert result.entry("x").kinks > 0


def test_abs_kink_with_wrong_sign_fails() -> None:
    class Abs:
        def __init__(self, at_zero: float) -> None:
            self.at_zero = at_zero

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return np.abs(x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return dout * np.where(self.x == 0, self.at_zero, np.sign(self.x))

    x = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, -0.3]])
    assert check(Abs(0.0), x).ok  # 0 lies in [-1, 1]
    assert check(Abs(-0.7), x).ok
    assert not check(Abs(3.0), x).ok


# ---------------------------------------------------------------------------------------------
# Exact zeros, scale, single-element errors
# ---------------------------------------------------------------------------------------------


def test_bias_in_front_of_batchnorm_has_exactly_zero_gradient_and_passes() -> None:
    lin = Linear(4, 3, rng=np.random.default_rng(1))
    lin.params["b"] = np.random.default_rng(2).normal(size=3)
    result = check(Sequential(lin, BatchNorm1d(3)), x_batch())
    assert result.ok
    b = result.entry("layers.0.b")
    assert b.status == "ok"
    assert abs(b.analytic or 0.0) < 1e-12  # the true gradient is zero; rounding is all there is


def test_bias_in_front_of_batchnorm_with_nonzero_gradient_fails() -> None:
    class BiasLeak(BatchNorm1d):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            return super().backward(dout) + 1e-3 * dout

    lin = Linear(4, 3, rng=np.random.default_rng(1))
    result = check(Sequential(lin, BiasLeak(3)), x_batch())
    assert result.entry("layers.0.b").status == "FAIL"


class Scaled:
    """A linear layer with outputs of magnitude ~scale."""

    def __init__(self, scale: float, bug: float = 1.0) -> None:
        self.scale = scale
        self.bug = bug
        self.W = np.random.default_rng(2).normal(size=(4, 5))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.tanh(x @ self.W) * self.scale + self.scale

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * self.scale * (1.0 - np.tanh(self.x @ self.W) ** 2)
        self.dW = self.x.T @ dz
        self.dW[0, 0] *= self.bug
        return dz @ self.W.T


@pytest.mark.parametrize("scale", [1e4, 1e-4])
def test_large_and_small_outputs_pass(scale: float) -> None:
    result = check(Scaled(scale), x_batch())
    assert result.ok, str(result)


@pytest.mark.parametrize("scale", [1e4, 1e-4])
def test_large_and_small_outputs_still_catch_small_errors(scale: float) -> None:
    result = check(Scaled(scale, bug=1.001), x_batch())
    assert [e.name for e in result.failed_entries] == ["W"]
    assert result.entry("W").worst_index == (0, 0)


class OneSlip:
    """Correct dense layer except one gradient element, off by `rel`."""

    def __init__(self, where: tuple[int, int], rel: float) -> None:
        self.where = where
        self.rel = rel
        self.W = np.random.default_rng(2).normal(size=(4, 5))
        self.b = np.random.default_rng(3).normal(size=5)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.tanh(x @ self.W + self.b)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * (1.0 - np.tanh(self.x @ self.W + self.b) ** 2)
        self.dW = self.x.T @ dz
        self.dW[self.where] *= 1.0 + self.rel
        self.db = dz.sum(axis=0)
        return dz @ self.W.T


@pytest.mark.parametrize("where", [(0, 0), (2, 3), (3, 4)])
def test_single_element_off_by_a_tenth_of_a_percent_is_caught_at_its_index(
    where: tuple[int, int],
) -> None:
    result = check(OneSlip(where, 1e-3), x_batch())
    assert [e.name for e in result.failed_entries] == ["W"]
    w = result.entry("W")
    assert w.worst_index == where
    assert w.failed == 1
    assert w.max_rel_error == pytest.approx(1e-3, rel=0.05)
    assert f"{where}" in str(result)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_element_fails_at_its_index(bad: float) -> None:
    class Poisoned(Tanh):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            dx[1, 2] = bad
            return dx

    x = check(Poisoned(), x_batch()).entry("x")
    assert (x.status, x.failed, x.worst_index) == ("FAIL", 1, (1, 2))


def test_correct_layer_is_far_below_the_tolerance() -> None:
    result = check(OneSlip((0, 0), 0.0), x_batch())
    assert result.ok
    assert result.max_rel_error < result.rtol / 10


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


class Dense32:
    """Parameters stored as float32 (as after `.astype(np.float32)`), plain numpy math."""

    def __init__(self, bug: float = 1.0) -> None:
        self.W = np.random.default_rng(2).normal(size=(4, 5)).astype(np.float32)
        self.b = np.zeros(5, dtype=np.float32)
        self.bug = bug

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.tanh(x @ self.W + self.b)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * (1.0 - np.tanh(self.x @ self.W + self.b) ** 2)
        self.dW = self.x.T @ dz
        self.dW[1, 1] *= self.bug
        self.db = dz.sum(axis=0)
        return dz @ self.W.T


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
def test_float32_parameters_checked_on_float64_copies(input_dtype: type) -> None:
    layer = Dense32()
    w = layer.W
    result = check(layer, x_batch().astype(input_dtype))
    assert result.ok, str(result)
    assert result.precision == "float64"
    assert result.rtol == 1e-5  # the tight float64 tolerance still applies
    assert result.entry("W").dtype == "float32"  # the report shows the layer's own dtype
    assert any("float64 copies" in n for n in result.notes)
    assert "float64 copies" in str(result)
    assert layer.W is w and layer.W.dtype == np.float32


def test_float32_parameters_small_error_still_caught() -> None:
    result = check(Dense32(bug=1.001), x_batch().astype(np.float32))
    assert [e.name for e in result.failed_entries] == ["W"]
    assert result.entry("W").worst_index == (1, 1)


class Internal32:
    """Casts to float32 inside forward: finite differences only see float32 resolution."""

    def __init__(self, bug: float = 1.0) -> None:
        self.W = np.random.default_rng(2).normal(size=(4, 5))
        self.bug = bug

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return np.tanh(x.astype(np.float32) @ self.W.astype(np.float32))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * (1.0 - np.tanh(self.x @ self.W) ** 2)
        self.dW = self.x.T @ dz * self.bug
        return dz @ self.W.T


def test_layer_computing_in_float32_gets_float32_step_and_tolerance() -> None:
    result = check(Internal32(), x_batch())
    assert result.ok, str(result)
    assert result.precision == "float32"
    assert result.eps == pytest.approx(1e-3)
    assert result.rtol == pytest.approx(1e-2)
    assert any("computes in float32" in n for n in result.notes)
    assert "float32" in str(result).splitlines()[0]


def test_layer_computing_in_float32_still_catches_large_errors() -> None:
    result = check(Internal32(bug=1.2), x_batch())
    assert [e.name for e in result.failed_entries] == ["W"]


def test_explicit_tolerance_overrides_precision_default() -> None:
    result = check(Internal32(), x_batch(), rtol=0.05, eps=1e-2)
    assert (result.rtol, result.eps) == (0.05, 1e-2)
    assert result.ok


# ---------------------------------------------------------------------------------------------
# The classic bugs from tests/buggy_layers.py, each caught by default, on the right row
# ---------------------------------------------------------------------------------------------



@pytest.mark.parametrize(
    ("make", "shape", "row"), [c[1:] for c in CLASSIC_BUGS], ids=[c[0] for c in CLASSIC_BUGS]
)
def test_classic_bug_is_caught_on_the_right_row(
    make: Callable[[], Any], shape: tuple[int, ...], row: str
) -> None:
    result = check(make(), x_batch(*shape))
    assert not result.ok
    assert [e.name for e in result.failed_entries] == [row]
    assert result.entry(row).max_rel_error > 1e-2
    assert f"where {row} is wrong" in str(result)


@pytest.mark.parametrize(
    ("make", "shape", "row"), [c[1:] for c in CLASSIC_BUGS], ids=[c[0] for c in CLASSIC_BUGS]
)
def test_classic_bug_is_caught_whatever_the_seed(
    make: Callable[[], Any], shape: tuple[int, ...], row: str
) -> None:
    for seed in (1, 2, 3):
        assert not check(make(), x_batch(*shape, seed=seed), seed=seed).ok


# ---------------------------------------------------------------------------------------------
# The cotangent is random, not all ones, and not the user's own random numbers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("draw", ["standard_normal", "normal"])
def test_transposed_gradient_caught_with_inputs_from_the_check_seed(seed: int, draw: str) -> None:
    # The most common way to make test inputs is default_rng(0).standard_normal(shape). If the
    # cotangent came from the same stream it would equal x for shape-preserving layers, x.T @ g
    # would be symmetric and a transposed weight gradient would pass.
    x = getattr(np.random.default_rng(seed), draw)(size=(6, 4))
    layer = LinearWeightGradTransposed(4, 4, rng=np.random.default_rng(1))
    result = check(layer, x, seed=seed)
    assert [e.name for e in result.failed_entries] == ["W"]


class SoftmaxZeroGrad(Softmax):
    """sum(softmax(x)) is constant, so zeros is right for dout = ones and wrong otherwise."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.zeros_like(dout)


class TanhIgnoresDout(Tanh):
    """Returns the local derivative without multiplying by dout."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return 1.0 - self._out**2


class BiasCountsRows(Linear):
    """db = number of rows: right only for dout = ones."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["b"] = np.full(self.out_features, float(dout.shape[0]))
        return dx


def ones_backward_is_right(layer: Any, x: np.ndarray) -> bool:
    """Guard: with dout = ones (objective sum(out)) these backward passes are right."""
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(out))
    if isinstance(layer, Softmax):
        return bool(np.allclose(dx, 0.0))  # sum(softmax) == 1 per row
    if isinstance(layer, Tanh):
        return bool(np.allclose(dx, 1.0 - np.tanh(x) ** 2))
    return bool(np.allclose(layer.grads["b"], out.shape[0]))


@pytest.mark.parametrize(
    ("make", "row"),
    [
        (SoftmaxZeroGrad, "x"),
        (TanhIgnoresDout, "x"),
        (lambda: BiasCountsRows(4, 3, rng=np.random.default_rng(1)), "b"),
    ],
    ids=["softmax-zeros", "tanh-ignores-dout", "bias-counts-rows"],
)
def test_backward_right_only_for_ones_cotangent_fails(make: Callable[[], Any], row: str) -> None:
    x = x_batch()
    assert ones_backward_is_right(make(), x)
    result = check(make(), x)
    assert [e.name for e in result.failed_entries] == [row]


# ---------------------------------------------------------------------------------------------
# Low precision hidden inside a float64 layer
# ---------------------------------------------------------------------------------------------


class Float32Inside(Linear):
    """Computes in float32 and returns float64: only the measured noise can tell."""

    def __init__(self, *args: Any, slip: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slip = slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        w32, b32 = self.params["W"].astype(np.float32), self.params["b"].astype(np.float32)
        return (x.astype(np.float32) @ w32 + b32).astype(np.float64)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self._x.T @ dout * self.slip
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T


def test_float32_inside_a_float64_layer_is_measured_and_judged_in_float32() -> None:
    x = np.random.default_rng(0).normal(size=(6, 5))
    result = check(Float32Inside(5, 4, rng=np.random.default_rng(1)), x)
    assert result.ok, str(result)
    assert result.precision == "float32"
    assert any("computes in float32 inside" in n for n in result.notes)


def test_float32_inside_still_catches_a_large_error() -> None:
    x = np.random.default_rng(0).normal(size=(6, 5))
    result = check(Float32Inside(5, 4, rng=np.random.default_rng(1), slip=1.3), x)
    assert result.entry("W").status == "FAIL"
    assert result.entry("b").status == "ok"


def test_a_wrong_float64_relu_network_is_not_mistaken_for_low_precision() -> None:
    class SlightlyWrongBias(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"] * 1.002
            return dx

    rng = np.random.default_rng(3)
    net = Sequential(Linear(6, 32, rng=rng), ReLU(), SlightlyWrongBias(32, 4, rng=rng))
    x = rng.normal(size=(16, 6))
    x[0, 0] = 0.0
    result = check(net, x)
    assert result.precision == "float64"
    assert result.entry("layers.2.b").status == "FAIL"
