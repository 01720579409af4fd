"""Snapshots taken during a check reuse earlier copies only where the bits still match, and the
decoy's big inputs are protected rather than copied: a layer whose forward changes its state on
one call only, or writes into a gradient array, or into the previous call's input, still gets
the right verdict and ends bit for bit as it was."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from helpers import Affine

from pytest_gradcheck import GradcheckUsageError, check, state
from pytest_gradcheck.result import FAIL, OK


def odd_bits(shape: tuple[int, ...]) -> np.ndarray:
    """Values whose bits a careless restore would change: -0.0 and a NaN with a payload."""
    a = np.random.default_rng(5).normal(size=shape)
    a.flat[0] = -0.0
    a.view(np.uint64).flat[1] = 0x7FF8_0000_0000_1234
    return a


class ScaledOnSecondCall:
    """y = (x @ W) * scale, where forward rewrites `scale` in place on its second call only
    (the check's decoy): the baseline must hold the new scale, not an older copy of it."""

    def __init__(self, wrong: bool = False) -> None:
        self.W = np.random.default_rng(0).normal(size=(4, 3))
        self.scale = np.full(3, 1.0)
        self.dW = odd_bits((4, 3))
        self.calls = 0
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> Any:
        self.calls += 1
        if self.calls == 2:
            self.scale[...] = [2.0, -3.0, 0.5]
        self.x, self.s = x, self.scale.copy()
        return (x @ self.W) * self.s

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = dout * self.s
        self.dW = self.x.T @ d
        out: np.ndarray = d @ self.W.T
        if self.wrong:
            out = out * 1.01
        return out


def test_state_changed_only_by_the_decoy_is_what_every_evaluation_starts_from() -> None:
    layer = ScaledOnSecondCall()
    before = {k: v.tobytes() for k, v in vars(layer).items() if isinstance(v, np.ndarray)}
    x = np.random.default_rng(1).normal(size=(5, 4))
    for mode in ("full", "fast"):
        result = check(layer, x, mode=mode)
        assert result.ok, str(result)
        after = {k: v.tobytes() for k, v in vars(layer).items() if isinstance(v, np.ndarray)}
        assert after == before and layer.calls == 0
    assert not check(ScaledOnSecondCall(wrong=True), x, mode="full").ok


class ZeroesItsGradientInForward:
    """Clears its gradient array in forward and accumulates into it in backward, with -0.0 and
    a NaN payload in the gradient the user left behind."""

    def __init__(self, wrong: bool = False) -> None:
        self.params = {"W": np.random.default_rng(0).normal(size=(4, 3))}
        self.grads = {"W": odd_bits((4, 3))}
        self.wrong = wrong

    def forward(self, x: np.ndarray) -> Any:
        self.grads["W"].fill(0.0)
        self.x = x
        return np.tanh(x @ self.params["W"])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = dout * (1 - np.tanh(self.x @ self.params["W"]) ** 2)
        self.grads["W"] += self.x.T @ d * (1.01 if self.wrong else 1.0)
        out: np.ndarray = d @ self.params["W"].T
        return out


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_forward_writing_into_its_gradient_array_is_restored_bit_for_bit(mode: str) -> None:
    layer = ZeroesItsGradientInForward()
    grad, W = layer.grads["W"], layer.params["W"].copy()
    saved = grad.tobytes()
    x = np.random.default_rng(1).normal(size=(5, 4))
    result = check(layer, x, mode=mode)
    assert result.ok, str(result)
    assert layer.grads["W"] is grad and grad.tobytes() == saved
    assert layer.params["W"].tobytes() == W.tobytes() and not hasattr(layer, "x")
    wrong = check(ZeroesItsGradientInForward(wrong=True), x, mode=mode)
    assert wrong.entry("W").status == FAIL and wrong.entry("x").status == OK


def test_each_small_array_is_copied_once_per_check() -> None:
    # The first snapshot copies the parameters, their gradients and the input; the decoy's
    # snapshot and the baseline reuse those copies (the bits still match), and protect the
    # decoy's input, which the layer caches, rather than copy it.
    layer = Affine(16, 8)
    x = np.random.default_rng(1).normal(size=(6, 16))
    arrays = [*layer.params.values(), *layer.grads.values(), x]
    start = state.copied_bytes()
    assert check(layer, x, mode="fast").ok
    assert state.copied_bytes() - start == sum(a.nbytes for a in arrays)


def test_a_big_input_is_copied_once_per_check() -> None:
    layer = Affine(8, 4)
    x = np.random.default_rng(1).normal(size=(1 << 15, 8))  # 2 MB
    assert x.nbytes >= state.PROTECT_BYTES
    start = state.copied_bytes()
    assert check(layer, x, mode="fast").ok
    # The baseline copies the working input (forward could modify it in place), nothing big
    # besides; the user's input was protected by the first snapshot.
    assert state.copied_bytes() - start < 1.5 * x.nbytes
    assert x.flags.writeable and not hasattr(layer, "x")


@pytest.mark.parametrize("rows", [6, 1 << 15], ids=["small", "2 MB"])
def test_a_forward_writing_into_the_previous_calls_input_faults_and_is_checked_with_copies(
    rows: int,
) -> None:
    calls = itertools.count()  # out of the checker's reach
    wrote: list[int] = []

    class ClearsThePreviousInput(Affine):
        """Scales its output by a factor of the previous call's input, which it then clears
        in place once: a baseline trusting the decoy's input to stay as it was would start the
        evaluations from another factor than the analytic pass's."""

        def forward(self, x: np.ndarray) -> Any:
            n = next(calls)
            previous = getattr(self, "x", None)
            self.factor = 1.0 if previous is None else 1.0 + float(np.mean(previous)) ** 2
            if n == 2 and previous is not None:  # the first attempt's forward after the decoy
                wrote.append(n)
                previous[...] = 0.0  # the decoy's input: protected, so this faults
            return super().forward(x) * self.factor

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return super().backward(dout * self.factor)

    layer = ClearsThePreviousInput(8, 4)
    W = layer.params["W"].copy()
    x = np.random.default_rng(1).normal(size=(rows, 8))
    result = check(layer, x, mode="fast")
    assert wrote == [2]
    assert result.ok, str(result)
    assert layer.params["W"].tobytes() == W.tobytes() and not hasattr(layer, "x")
    assert x.flags.writeable


class ReadsItsGradient:
    """Scales its output by a factor of its gradient array, which backward accumulates into:
    the evaluations must see the gradient array as it was before backward, bit for bit."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(0).normal(size=(4, 3))
        self.dW = odd_bits((4, 3))
        self.dW.flat[1] = 0.5  # no NaN: the factor must stay finite

    def forward(self, x: np.ndarray) -> Any:
        self.x, self.f = x, 1.0 + np.tanh(float(self.dW.sum())) ** 2
        return (x @ self.W) * self.f

    def backward(self, dout: np.ndarray) -> np.ndarray:
        d = dout * self.f
        self.dW += self.x.T @ d
        out: np.ndarray = d @ self.W.T
        return out


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_gradient_backward_wrote_into_is_put_back_before_the_evaluations(mode: str) -> None:
    layer = ReadsItsGradient()
    grad = layer.dW
    saved = grad.tobytes()
    result = check(layer, np.random.default_rng(1).normal(size=(5, 4)), mode=mode)
    assert result.ok, str(result)
    assert layer.dW is grad and grad.tobytes() == saved


def test_a_forward_writing_into_a_big_gradient_from_after_the_decoy_on_is_checked_with_copies(
) -> None:
    # A big gradient stays protected through the baseline's forward, whose patch then does not
    # compare it: a write there faults, and the check runs again with copies.
    calls = itertools.count()  # out of the checker's reach
    width = 512  # 2 MB weight and gradient

    class BigReadsItsGradient:
        def __init__(self) -> None:
            self.W = np.random.default_rng(0).normal(size=(width, width)) / np.sqrt(width)
            self.dW = odd_bits((width, width))
            self.dW.flat[1] = 0.5

        def forward(self, x: np.ndarray) -> Any:
            n = next(calls)
            self.x, self.f = x, 1.0 + np.tanh(1e-3 * float(self.dW.sum())) ** 2
            if n >= 2:  # from the first attempt's forward after the decoy on
                self.dW[...] = 0.25  # faults there: still protected
            return (x @ self.W) * self.f

        def backward(self, dout: np.ndarray) -> np.ndarray:
            d = dout * self.f
            self.dW[...] = self.x.T @ d
            out: np.ndarray = d @ self.W.T
            return out

    layer = BigReadsItsGradient()
    grad, W = layer.dW, layer.W.copy()
    saved = grad.tobytes()
    result = check(layer, np.random.default_rng(1).normal(size=(3, width)), mode="fast")
    assert result.ok, str(result)
    assert next(calls) > 2 + result.forward_calls  # the first attempt ended at its 3rd forward
    assert layer.dW is grad and grad.tobytes() == saved and grad.flags.writeable
    assert layer.W.tobytes() == W.tobytes()


def test_no_array_the_layer_saw_is_left_read_only_when_backward_raises() -> None:
    seen: list[np.ndarray] = []  # out of the checker's reach

    class Failing(Affine):
        def forward(self, x: np.ndarray) -> Any:
            seen.append(x)
            return super().forward(x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            raise RuntimeError("not implemented")

    layer = Failing(8, 4)
    with pytest.raises(GradcheckUsageError, match="backward raised RuntimeError"):
        check(layer, np.random.default_rng(1).normal(size=(6, 8)), mode="fast")
    assert len(seen) == 3 and all(a.flags.writeable for a in seen)
    assert all(a.flags.writeable for a in [*layer.params.values(), *layer.grads.values()])
