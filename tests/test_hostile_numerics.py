"""Hostile numerics: kinks that look like rounding noise, arrays of very small and very large
scale, and low precision hidden where only one array enters.

A kink crossed by the noise probe must never be read as float32 rounding (a wrong gradient
would then be judged at float32's tolerance and pass); steps must follow each array's scale;
low precision hidden behind one parameter must be found for that parameter alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from example_nn import BatchNorm1d, LeakyReLU, Linear, MaxPool2d, ReLU, Sequential
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.numeric import array_scale

SEEDS = range(30)


class SlipLinear(Linear):
    """Linear whose weight gradient is 0.1% off at its largest element (or exact: slip=1)."""

    def __init__(self, *args: Any, slip: float = 1.001, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slip = slip

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        g = self.grads["W"]
        g[np.unravel_index(np.argmax(np.abs(g)), g.shape)] *= self.slip
        return dx


def relu_at_zero_net(seed: int, slip: float) -> tuple[Sequential, np.ndarray]:
    """A weight behind ReLUs whose inputs are exactly 0: zero padding in front of the first,
    a zero-padded row meeting a zero bias in front of the second."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 4))
    x[0] = 0.0
    x[:, 0] = 0.0
    net = Sequential(ReLU(), SlipLinear(4, 5, rng=rng, slip=slip), ReLU(), Linear(5, 3, rng=rng))
    return net, x


def no_low_precision_claim(result: Any) -> bool:
    return result.precision == "float64" and not any("computes in" in n for n in result.notes)


# ---------------------------------------------------------------------------------------------
# Kinks are not rounding noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "auto"])
def test_a_small_weight_error_behind_a_relu_at_zero_fails_for_every_seed(mode: str) -> None:
    # Before steps and noise were told apart, the noise probe crossed the kink, read it as
    # float32 rounding and judged again at rtol 1e-2: this passed in nearly every seed.
    for seed in SEEDS:
        net, x = relu_at_zero_net(seed, slip=1.001)
        result = check(net, x, seed=seed, mode=mode)
        assert result.entry("layers.1.W").status == "FAIL", (seed, str(result))
        assert no_low_precision_claim(result), (seed, str(result))


def test_the_same_network_without_the_error_passes_for_every_seed() -> None:
    for seed in SEEDS:
        net, x = relu_at_zero_net(seed, slip=1.0)
        result = check(net, x, seed=seed, mode="full")
        assert result.ok, (seed, str(result))
        assert no_low_precision_claim(result)


class LeakySlopeSlip(LeakyReLU):
    """Leaky ReLU whose backward uses a negative slope 0.1% off."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return np.where(self._mask, dout, self.slope * 1.001 * dout)


class MaxRouteSlip(MaxPool2d):
    """Max-pool whose backward routes 1.001 times the gradient to each window's maximum."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return super().backward(dout * 1.001)


@pytest.mark.parametrize(
    ("make", "shape"),
    [(lambda: LeakySlopeSlip(slope=0.1), (6, 5)), (lambda: MaxRouteSlip(2, 2), (2, 2, 4, 4))],
    ids=["leaky-relu-slope", "max-pool-route"],
)
def test_mutants_on_inputs_with_exact_zeros_fail(make: Any, shape: tuple[int, ...]) -> None:
    # Exact zeros among the inputs (zero padding, an earlier ReLU): kinks at the unperturbed
    # point (ReLU at 0, max-pool ties among zeros), and negative inputs for the leaky slope.
    for seed in range(10):
        x = np.random.default_rng(seed).normal(size=shape)
        x[np.abs(x) < 0.3] = 0.0
        result = check(make(), x, seed=seed, mode="full")
        assert result.entry("x").status == "FAIL", (seed, str(result))
        assert no_low_precision_claim(result)


# ---------------------------------------------------------------------------------------------
# Low precision hidden behind one parameter
# ---------------------------------------------------------------------------------------------


class Float32Weight(Linear):
    """Casts only its weight to float32 inside forward; input and output stay float64."""

    def __init__(self, *args: Any, w_slip: float = 1.0, x_slip: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.w_slip, self.x_slip = w_slip, x_slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        out: np.ndarray = x @ self.params["W"].astype(np.float32) + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"] * self.w_slip
        return dx * self.x_slip


def float32_weight_case(**slips: float) -> tuple[Float32Weight, np.ndarray]:
    return Float32Weight(5, 4, rng=np.random.default_rng(1), **slips), x_rows(6, 5)


def x_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_parameter_cast_to_float32_inside_is_judged_in_float32_alone(mode: str) -> None:
    layer, x = float32_weight_case()
    result = check(layer, x, mode=mode)
    assert result.ok, str(result)
    note = next(n for n in result.notes if "computes in float32 inside" in n)
    assert "when W move" in note and "x" not in note.split("when ")[1].split(" move")[0]
    assert result.precision == "float64"  # x and b are still judged in float64


def test_a_parameter_cast_to_float32_still_fails_a_large_error_there() -> None:
    layer, x = float32_weight_case(w_slip=1.3)
    result = check(layer, x)
    assert result.entry("W").status == "FAIL"
    assert result.entry("x").status == result.entry("b").status == "ok"


def test_a_small_input_error_beside_a_float32_parameter_is_judged_in_float64() -> None:
    # Only W's noise shows float32: x keeps float64's sensitivity.
    layer, x = float32_weight_case(x_slip=1.001)
    result = check(layer, x)
    assert result.entry("x").status == "FAIL"
    assert result.entry("W").status == "ok"


class Float32ProductUnderBias:
    """x @ W computed in float32, under a float64 bias `bias` times larger than the product:
    the objective's noise is float32 rounding of a part far smaller than the whole, so relative
    to the whole objective it sits far below float32's epsilon (but far above float64's)."""

    def __init__(self, bias: float, dw_slip: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.params = {"W": rng.normal(size=(64, 64)) * 0.1, "b": rng.normal(size=64) * bias}
        self.grads: dict[str, np.ndarray] = {}
        self.dw_slip = dw_slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        inner = x.astype(np.float32) @ self.params["W"].astype(np.float32)
        out: np.ndarray = inner.astype(np.float64) + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.x.T @ dout * self.dw_slip
        self.grads["b"] = dout.sum(axis=0)
        dx: np.ndarray = dout @ self.params["W"].T
        return dx


@pytest.mark.parametrize("mode", ["full", "fast", "auto"])
@pytest.mark.parametrize("bias", [100.0, 1000.0])
def test_float32_inside_under_a_much_larger_float64_bias_is_found_and_still_fails_errors(
    mode: str, bias: float
) -> None:
    x = x_rows(16, 64, seed=1)
    for seed in (0, 1):
        right = check(Float32ProductUnderBias(bias), x, mode=mode, seed=seed)
        assert right.ok, str(right)
        assert any("computes in float32 inside" in n for n in right.notes)
        wrong = check(Float32ProductUnderBias(bias, dw_slip=1.05), x, mode=mode, seed=seed)
        # W is judged again in float32 (its noise explained the float64 mismatch), and the 5%
        # error still fails there
        rejudged = next(n for n in wrong.notes if "computes in float32 inside" in n)
        assert "W" in rejudged.split(" move")[0]
        assert wrong.entry("W").status == "FAIL"
        assert wrong.entry("b").status == "ok"


class BatchNormOneInputOff(BatchNorm1d):
    """Batchnorm whose input gradient is 0.1% off at one element."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        dx[3, 2] *= 1.001
        return dx


def offset_inputs(spread: float) -> np.ndarray:
    """Un-normalised inputs: 1000 plus values of the given spread. Steps follow the RMS (the
    offset), so the step is large next to the scale on which batchnorm's values change."""
    return np.random.default_rng(0).normal(size=(16, 8)) * spread + 1000.0


def test_a_failure_that_shrinks_with_the_step_comes_with_advice() -> None:
    # A correct batchnorm on inputs of 1000 +- 0.05: the step (1e-3) is 2% of the spread and its
    # truncation fails an element at seed 0. The verdict stands, with the advice docs/modes.md
    # gives; an explicit eps passes.
    x = offset_inputs(0.05)
    result = check(BatchNorm1d(8), x, mode="full", seed=0)
    assert result.entry("x").status == "FAIL"
    note = next(n for n in result.notes if n.startswith("x: the failing elements' mismatch"))
    assert "truncation" in note and "pass a smaller eps" in note
    assert all(check(BatchNorm1d(8), x, seed=s, eps=1e-5).ok for s in range(4))
    # a wrong gradient on well-scaled inputs gets no such advice: its mismatch stays
    wrong = check(BatchNormOneInputOff(8), offset_inputs(0.05) - 1000.0, mode="full")
    assert wrong.entry("x").status == "FAIL"
    assert not any("truncation" in n for n in wrong.notes)


# ---------------------------------------------------------------------------------------------
# Steps follow each array's scale
# ---------------------------------------------------------------------------------------------


class BatchNormWrongBeta(BatchNorm1d):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["beta"] = self.grads["beta"] * 1.001
        return dx


class BatchNormWrongInput(BatchNorm1d):
    """Drops the variance's share of the input gradient (treats the variance as a constant)."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        super().backward(dout)
        dxhat = dout * self.params["gamma"]
        dx: np.ndarray = self._inv_std * (dxhat - dxhat.mean(axis=0))
        return dx


@pytest.mark.parametrize("bn_eps", [0.0, 1e-5])
@pytest.mark.parametrize("scale", [1e-150, 1e-6, 1.0, 1e4])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_batchnorm_passes_at_every_scale_of_its_inputs(
    scale: float, mode: str, bn_eps: float
) -> None:
    # Before steps were relative, 1e-6 failed (a step as large as the values) and at 1e-150 no
    # eps worked at all.
    result = check(BatchNorm1d(5, eps=bn_eps), x_rows(8, 5) * scale, mode=mode)
    assert result.ok, str(result)


@pytest.mark.parametrize("scale", [1e-150, 1e-6, 1e4])
@pytest.mark.parametrize(
    ("make", "row"), [(BatchNormWrongBeta, "beta"), (BatchNormWrongInput, "x")]
)
def test_a_wrong_batchnorm_fails_at_every_scale(make: Any, row: str, scale: float) -> None:
    result = check(make(5, eps=0.0), x_rows(8, 5) * scale)
    assert [e.name for e in result.failed_entries] == [row], str(result)


def test_each_array_gets_its_own_step_and_the_report_shows_it() -> None:
    layer = Linear(5, 4, rng=np.random.default_rng(1))
    layer.params["W"] *= 1e-3
    result = check(layer, x_rows(6, 5) * 1e5)
    assert result.ok, str(result)
    note = next(n for n in result.notes if "relative to each array's scale" in n)
    steps = dict(part.rsplit(" ", 1) for part in note.split(": ", 1)[1].split(", "))
    assert 1e-2 < float(steps["x"]) < 1e0  # 1e-6 x RMS of x (about 1e5)
    assert 1e-10 < float(steps["W"]) < 1e-8  # 1e-6 x RMS of W (about 1e-3 x 0.6)
    out_rms = float(np.sqrt(np.mean(np.square(x_rows(6, 5) * 1e5 @ layer.params["W"]))))
    assert float(steps["b"]) == pytest.approx(1e-6 * out_rms, rel=0.01)  # all zeros: the output's
    assert "relative to each array's scale" in str(result)


def test_an_explicit_eps_that_dwarfs_an_array_is_a_usage_error() -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(BatchNorm1d(5), x_rows(8, 5) * 1e-6, eps=1e-6)
    message = str(info.value)
    assert message.startswith("BatchNorm1d: x: the step eps=1e-06 dwarfs its values")
    assert "leave eps unset" in message
    assert info.value.label == "BatchNorm1d"


def test_an_explicit_eps_stays_absolute() -> None:
    result = check(Linear(4, 3, rng=np.random.default_rng(1)), x_rows(5, 4), eps=1e-5)
    assert result.ok and result.eps == 1e-5
    assert not any("relative to each array's scale" in n for n in result.notes)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_an_explicit_eps_too_small_for_rounding_is_a_usage_error_naming_the_array(
    mode: str,
) -> None:
    # eps=1e-12 on values of order 1: float64 rounding of the objective, divided by the step,
    # is above rtol, so every gradient would pass. Before, this was a silent pass.
    wrong = BatchNormWrongBeta(5)
    with pytest.raises(GradcheckUsageError) as info:
        check(wrong, x_rows(8, 5), eps=1e-12, mode=mode)
    assert str(info.value).startswith("BatchNormWrongBeta: x: the step eps=1e-12 is so small")
    assert "cannot resolve the gradient" in str(info.value)


def test_a_zero_bias_at_huge_scale_gets_a_step_it_can_resolve() -> None:
    # The bias starts at zero and adds to outputs of 1e150: a step of 1e-6 would leave the
    # objective unchanged and every bias gradient (right or wrong) within the noise floor.
    class WrongBias(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"] * 1.001
            return dx

    x = x_rows(6, 4) * 1e150
    assert check(Linear(4, 3, rng=np.random.default_rng(1)), x).ok
    result = check(WrongBias(4, 3, rng=np.random.default_rng(1)), x)
    assert [e.name for e in result.failed_entries] == ["b"]


@pytest.mark.parametrize(
    ("values", "rms"),
    [
        (np.zeros(3), 0.0),
        (np.full(4, 1e-170), 1e-170),
        (np.array([1e200, -1e200]), 1e200),
        (np.array([3.0, -4.0]), np.sqrt(12.5)),
        (np.array([np.nan, 2.0, -2.0, np.inf]), 2.0),  # non-finite values are left out
        (np.array([]), 0.0),
    ],
)
def test_the_scale_of_an_array_is_its_rms_without_overflow_or_underflow(
    values: np.ndarray, rms: float
) -> None:
    assert array_scale(values) == pytest.approx(rms, rel=1e-12)


@pytest.mark.parametrize("w_slip", [1.0, 1.3])
def test_fast_mode_reports_the_notes_of_the_verdicts_it_gives(w_slip: float) -> None:
    # Re-judged in float32, W's float64 verdict is thrown away, and so are its notes; a real
    # error there still fails (the re-judging is no way past it).
    layer = Float32Weight(64, 64, rng=np.random.default_rng(1), w_slip=w_slip)
    result = check(layer, x_rows(8, 64), mode="fast")
    assert result.ok == (w_slip == 1.0), str(result)
    if result.ok:
        assert not any(n.startswith("W: ") and "wrong element" in n for n in result.notes), \
            str(result)


@pytest.mark.parametrize("mode", ["full", "fast", "auto"])
def test_a_float32_weight_gradient_a_few_percent_off_fails_in_every_mode(mode: str) -> None:
    # Re-judged within the noise measured when W moves: a bound for a whole objective computed
    # in float32 stands ~100x higher here and passed a 5% slip, and a 30% one, at every seed.
    # Along one direction float32 noise still hides a few percent where the direction's
    # derivative nearly cancels (1 seed in 5 here); element by element it never does.
    caught = {0.05: 0, 0.3: 0}
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(8, 64))
        for slip in caught:
            layer = Float32Weight(64, 64, rng=np.random.default_rng(seed), w_slip=1 + slip)
            result = check(layer, x, mode=mode, seed=seed)
            assert [e.name for e in result.failed_entries] in ([], ["W"]), str(result)
            caught[slip] += not result.ok
        right = Float32Weight(64, 64, rng=np.random.default_rng(seed))
        assert check(right, x, mode=mode, seed=seed).ok
    assert caught[0.3] == 5
    assert caught[0.05] >= (5 if mode == "full" else 4)


class Float32Tanh:
    """tanh(x @ W) computed in float32 with a float32 output; backward's dW optionally off at
    one element by `off` times the root-mean-square of dW."""

    def __init__(self, seed: int, off: float = 0.0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"W": (rng.normal(size=(48, 40)) / np.sqrt(48)).astype(np.float32)}
        self.grads = {"W": np.zeros((48, 40), np.float32)}
        self.off = off

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x.astype(np.float32)
        self.y: np.ndarray = np.tanh(self.x @ self.params["W"].astype(np.float32))
        return self.y

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout.astype(np.float32) * (1 - self.y**2)
        self.grads["W"] = self.x.T @ dz
        self.grads["W"][2, 3] += self.off * np.sqrt(np.mean(self.grads["W"] ** 2))
        out: np.ndarray = dz @ self.params["W"].T
        return out


def test_a_layer_computing_in_float32_is_judged_within_its_measured_noise() -> None:
    # The float32 bound (epsilon times the sum of the objective's |terms|) stands far above
    # the rounding this layer makes; within it, one element of dW off by 30% of dW's RMS passed
    # at every seed (the tolerance floor was ~25 times the gradient's scale). Within the
    # measured noise it fails, and the correct layer still passes.
    caught = 0
    for seed in range(6):
        x = np.random.default_rng(100 + seed).normal(size=(16, 48))
        assert check(Float32Tanh(seed), x, mode="full", seed=seed).ok
        result = check(Float32Tanh(seed, off=0.3), x, mode="full", seed=seed)
        assert result.precision == "float32"
        caught += result.entry("W").worst_index == (2, 3) and not result.ok
        assert any("measured when each array moves" in n for n in result.notes), str(result)
    assert caught == 6
