"""Fast mode (and so the default mode on arrays over `auto_limit`) judged by measured error.

A directional central difference is accurate to about its rounding noise (the objective's noise
over the step), usually ~1e-10 of the derivative in float64, so fast mode compares it against
that estimate rather than against rtol: one wrong element among n then shows although it has
only ~1/sqrt(n) of the direction's say. Sensitivity is stated relative to the array's gradient
scale: an element "off by 0.1%" is off by 0.1% of the root-mean-square of the array's gradient
(0.1% of an element's own, tiny gradient can sit below any rounding noise). The wrong element
is always located and judged element by element, by rtol/atol and the kink rule.

Everything here is deterministic: fixed seeds, counting layers, no timings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import SETUP_FORWARDS, evaluations

from example_nn import BatchNorm1d, Dropout, LayerNorm, Linear, ReLU, Sequential, Softmax, Tanh
from pytest_gradcheck import check


class OffLinear:
    """An affine layer x @ W + b whose weight gradient is off at one element by `rel` times the
    root-mean-square of the weight gradient."""

    def __init__(self, n_in: int, n_out: int, rel: float, where: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"W": rng.normal(size=(n_in, n_out)) / np.sqrt(n_in),
                       "b": 0.1 * rng.normal(size=n_out)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.rel, self.where = rel, where

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dW = self._x.T @ dout
        dW.flat[self.where] += self.rel * np.sqrt(np.mean(dW**2))
        self.grads["W"] = dW
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T


def caught(n_in: int, n_out: int, batch: int, rel: float, seed: int, **opts: Any) -> bool:
    """Whether the default mode (or `mode=...`) fails W at exactly the wrong element, for this
    seed; W alone unless `inputs=True` (x then moves along the same joint direction in fast
    mode, or in auto mode where x is larger than `auto_limit`)."""
    rng = np.random.default_rng(1000 + seed)
    where = int(rng.integers(n_in * n_out))
    layer = OffLinear(n_in, n_out, rel, where, seed=seed)
    opts.setdefault("inputs", False)
    result = check(layer, rng.normal(size=(batch, n_in)), seed=seed, params=["W"], **opts)
    e = result.entry("W")
    assert e.size > 2048 and result.mode in ("auto", "fast")  # the directional check
    others_ok = all(r.ok for r in result.entries if r.name != "W")
    return (not e.ok) and e.failed == 1 and bool(np.asarray(e.failed_mask)[where]) and others_ok


@pytest.mark.parametrize("rel", [1e-3, 1e-4])
def test_one_element_off_by_a_tenth_of_a_percent_in_4096_is_caught_at_every_seed(
    rel: float,
) -> None:
    # Before: a fixed rtol of 1e-5 over the whole direction caught 0.1% in ~75% of seeds.
    assert all(caught(64, 64, 8, rel, seed) for seed in range(100))


@pytest.mark.parametrize("rel", [1e-3, 1e-4])
def test_the_same_when_the_input_moves_along_the_same_joint_direction(rel: float) -> None:
    assert all(caught(64, 64, 8, rel, seed, inputs=True, mode="fast") for seed in range(100))


def test_one_element_off_by_a_tenth_of_a_percent_in_a_million_is_caught() -> None:
    assert all(caught(1000, 1000, 2, 1e-3, seed) for seed in range(2))
    # With x checked too (8 x 1,000 elements, above auto_limit) x and W move together.
    assert all(caught(1000, 1000, 8, 1e-3, seed, inputs=True) for seed in range(2))


def test_a_correct_linear_layer_costs_two_passes_and_reports_the_estimate() -> None:
    layer = OffLinear(64, 64, 0.0, 0)
    x = np.random.default_rng(0).normal(size=(8, 64))
    result = check(layer, x, mode="fast")
    assert result.ok, str(result)
    # x, W and b move together; affine in every array: step h agrees within its rounding, no
    # second step is spent.
    assert result.forward_calls == SETUP_FORWARDS + evaluations(2)
    for e in result.entries:
        # The estimate is what the direction could resolve: far below rtol, rounding-sized.
        assert e.estimate is not None and 0 < e.estimate < 1e-6
        assert e.max_rel_error <= 10 * e.estimate
        assert e.to_dict()["estimate"] == e.estimate
    assert check(layer, x, mode="full").entries[1].estimate is None


def test_truncation_is_extrapolated_away_on_a_curved_layer() -> None:
    """A step large enough for truncation to stand above the noise: Richardson over h and 2h
    cancels the O(h^2) term, so a correct layer passes and a wrong element is still found."""

    class Cube:
        def __init__(self, off: float) -> None:
            self.off = off

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return x**3

        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = 3 * self.x**2 * dout
            dx.flat[7] += self.off * np.sqrt(np.mean(dx**2))
            return dx

    x = np.random.default_rng(0).normal(size=(40, 40))
    good = check(Cube(0.0), x, mode="fast", eps=1e-3)
    assert good.ok, str(good)
    # h and 2h: the cheap test at h sees the O(h^2) term, the extrapolation does not
    assert good.forward_calls == SETUP_FORWARDS + evaluations(4)
    bad = check(Cube(1e-3), x, mode="fast", eps=1e-3, rtol=1e-5)
    assert bad.entry("x").worst_index == (0, 7), str(bad)


def test_a_step_that_dwarfs_the_values_fails_with_advice_never_passes() -> None:
    class Wave:
        """sin(k x): at k*h ~ 1.5 the central difference is off by a third of the derivative."""

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return np.sin(1500.0 * x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return 1500.0 * np.cos(1500.0 * self.x) * dout

    x = np.random.default_rng(0).normal(size=(30, 30))
    result = check(Wave(), x, mode="fast", eps=1e-3)
    assert not result.ok
    assert any("cannot resolve the gradient" in n and "smaller eps" in n for n in result.notes)


def _net(rng: np.random.Generator) -> Sequential:
    return Sequential(Linear(32, 64, rng=rng), BatchNorm1d(64), ReLU(),
                      Dropout(0.3, rng=rng), Linear(64, 16, rng=rng))


@pytest.mark.parametrize(("make", "shape", "scale"), [
    (lambda rng: Linear(64, 48, rng=rng), (16, 64), 1.0),
    (lambda rng: BatchNorm1d(64), (32, 64), 3.0),
    (_net, (16, 32), 1.0),
    (lambda rng: Tanh(), (64, 64), 2.0),
    (lambda rng: Softmax(), (32, 40), 3.0),
    (lambda rng: ReLU(), (64, 64), 1.0),
    (lambda rng: LayerNorm(64), (32, 64), 1.0),
], ids=["linear", "batchnorm", "lin-bn-relu-drop-lin", "tanh", "softmax", "relu", "layernorm"])
def test_correct_layers_pass_in_fast_mode_over_many_seeds(
    make: Any, shape: tuple[int, ...], scale: float
) -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = scale * rng.normal(size=shape)
        result = check(make(rng), x, mode="fast", seed=seed)
        assert result.ok, str(result)


class LinearReLU:
    """relu(x @ W): a kink inside, in the hidden units; `slip` = (flat index, amount) adds
    amount to that element of dW."""

    def __init__(self, W: np.ndarray, slip: tuple[int, float] | None = None) -> None:
        self.params = {"W": W}
        self.grads = {"W": np.zeros_like(W)}
        self.slip = slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x, self.z = x, x @ self.params["W"]
        return np.maximum(self.z, 0.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * (self.z > 0)
        dW = self.x.T @ dz
        if self.slip is not None:
            dW.flat[self.slip[0]] += self.slip[1]
        self.grads["W"] = dW
        return dz @ self.params["W"].T


def near_kink() -> tuple[np.ndarray, np.ndarray]:
    """x (4x64) and W (64x64) with the first sample's first hidden unit 3e-7 from ReLU's kink:
    one weight's step moves it by ~1e-7, the whole direction's by ~1e-6."""
    rng = np.random.default_rng(0)
    x = 0.1 * rng.normal(size=(4, 64))
    W = rng.normal(size=(64, 64))
    W[:, 0] -= x[0] * (x[0] @ W[:, 0] - 3e-7) / (x[0] @ x[0])
    return x, W


@pytest.mark.parametrize("mode", ["fast", "auto"])
def test_a_wrong_element_beside_a_kink_only_the_whole_step_reaches_still_fails(
    mode: str,
) -> None:
    """The direction crosses the kink and a wrong element: the search follows the kink's
    share and ends on elements that pass. Measured again at step h/16 the kink is gone, but
    the allowance there is 16 times wider and took the wrong element's share with it (that
    rule passed this element at 11 of 12 seeds); each half of the direction measured on its
    own keeps the element's share and loses the kink's."""
    x, W = near_kink()
    wrong = 5 * 64 + 7  # dW there is 0 (a dead unit): backward says 1e-6
    for seed in range(12):
        result = check(LinearReLU(W, (wrong, 1e-6)), x, mode=mode, seed=seed, inputs=False)
        e = result.entry("W")
        assert e.status == "FAIL", str(result)
        assert e.worst_index == (5, 7)


@pytest.mark.parametrize("mode", ["fast", "auto"])
def test_a_hidden_kink_only_the_directions_step_reaches_passes_without_the_fallback(
    mode: str,
) -> None:
    """No element explains the mismatch; the parts of the direction, split until each moves
    the hidden unit less than its distance to the kink, agree: a kink only the combined step
    reached, settled in a fraction of element-by-element's 8,194 passes."""
    x, W = near_kink()
    crossed = 0
    for seed in range(6):
        result = check(LinearReLU(W), x, mode=mode, seed=seed, inputs=False)
        assert result.ok, str(result)
        assert result.forward_calls < 1000
        crossed += result.entry("W").decided_by == "kink in reach"
    assert crossed >= 3  # the construction does reach the kink


class SlightlyOff:
    """x * c, whose backward is off at every element by 3e-6 of itself (random signs): each
    element well within rtol=1e-5, together far beyond a float64 difference's rounding."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        rng = np.random.default_rng(3)
        self.c = 1.0 + rng.random(shape)
        self.off = 1.0 + 3e-6 * rng.choice([-1.0, 1.0], size=shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.c

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.c * self.off


def test_a_spread_mismatch_no_element_explains_fails_above_the_element_by_element_limit(
) -> None:
    # Errors each within rtol (3e-6 of every element) add up along a direction like errors
    # beyond it that no single element shows: above the size checked element by element, fast
    # mode cannot tell them apart, so it fails with a note pointing to full mode, which judges
    # each element (and passes this layer).
    shape = (300, 250)  # 75,000 elements: above the size checked element by element instead
    x = np.random.default_rng(0).normal(size=shape)
    result = check(SlightlyOff(shape), x, mode="fast")
    assert not result.ok
    assert any("no single element stands out" in n for n in result.notes), str(result)
    assert result.forward_calls < 200  # not element by element (150,000 passes)
    assert check(SlightlyOff((30, 25)), x[:30, :25], mode="full").ok


class SpreadOff(SlightlyOff):
    """SlightlyOff with every element off by `rel` of itself instead of 3e-6."""

    def __init__(self, shape: tuple[int, ...], rel: float) -> None:
        super().__init__(shape)
        self.off = 1.0 + rel * np.random.default_rng(4).choice([-1.0, 1.0], size=shape)


@pytest.mark.parametrize("rel", [1e-4, 1e-3, 1e-2])
def test_errors_beyond_rtol_spread_over_a_big_array_still_fail(rel: float) -> None:
    # Every element off by 0.01% or more of itself never passes fast mode on a big array.
    shape = (300, 250)
    x = np.random.default_rng(0).normal(size=shape)
    result = check(SpreadOff(shape, rel), x, mode="fast")
    assert not result.ok, str(result)



class SinLayer:
    """sin(k x), whose backward is off at one element by `off` times the gradient's RMS."""

    def __init__(self, k: float, where: int, off: float) -> None:
        self.k, self.where, self.off = k, where, off

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = np.sin(self.k * x)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        g: np.ndarray = dout * self.k * np.cos(self.k * self.x)
        g.flat[self.where] += self.off * np.sqrt(np.mean(g**2))
        return g


def test_a_step_whose_truncation_hides_rtol_never_passes_a_wrong_element() -> None:
    # eps=1e-3 on sin(700 x): truncation is ~8% of a directional derivative, and what is left
    # of it after extrapolation is wider than rtol; the smaller-step confirmation must not let
    # a wrong element through. (The right layer may fail at that step, as full mode's
    # element-wise differences do; at the default step it passes.)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(30, 30))
        wrong = SinLayer(700.0, int(rng.integers(900)), 1.0)
        assert not check(wrong, x, mode="fast", eps=1e-3, seed=seed).ok
        assert check(SinLayer(700.0, 0, 0.0), x, mode="fast", seed=seed).ok


class SigmoidNetOffByARow:
    """x -> sigmoid(x @ W1 + b1) @ W2 + b2 whose backward scales one row of dW1 (100 elements)
    by 1.001. On inputs of scale 0.003 dW1 is small beside the objective's rounding noise, so
    the row's errors, summed along one random direction, can cancel to within the estimate."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        s = 0.7
        self.params = {"W1": rng.normal(size=(48, 100)) * s, "b1": rng.normal(size=100) * 0.07,
                       "W2": rng.normal(size=(100, 48)) * s, "b2": np.zeros(48)}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        self.x = x
        self.h = 1.0 / (1.0 + np.exp(-(x @ p["W1"] + p["b1"])))
        out: np.ndarray = self.h @ p["W2"] + p["b2"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.params
        dz = (dout @ p["W2"].T) * self.h * (1.0 - self.h)
        dw1 = self.x.T @ dz
        dw1[30] *= 1.001
        self.grads.update(W1=dw1, b1=dz.sum(axis=0), W2=self.h.T @ dout, b2=dout.sum(axis=0))
        dx: np.ndarray = dz @ p["W1"].T
        return dx


def test_errors_spread_over_a_row_that_nearly_cancel_along_one_direction_are_confirmed_away(
) -> None:
    # One direction alone passed the wrong row at seeds 0 and 25: its mismatch came to 3.6 and
    # 0.27 times the estimate there (a few hundred times elsewhere). A pass above a sixteenth of
    # what passes is confirmed along one more direction, which fails it, as full mode does.
    x = np.random.default_rng(1).normal(size=(32, 48)) * 0.0027
    passed = [s for s in range(40) if check(SigmoidNetOffByARow(), x, mode="fast", seed=s).ok]
    assert passed == []
    for seed in (0, 25):
        fast = check(SigmoidNetOffByARow(), x, mode="fast", seed=seed)
        assert fast.entry("W1").status == "FAIL"
        full = check(SigmoidNetOffByARow(), x, mode="full", seed=seed, params=("W1",),
                     inputs=False)
        assert full.entry("W1").status == "FAIL"


class FloorSlip(Linear):
    """Linear whose dW[0, 3] is `delta` off; the input's first column is 1e-6 of the others, so
    row 0 of dW (its true gradient) is tiny and the element sits under the rounding floor."""

    delta = 0.0

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"][0, 3] += self.delta
        return dx


def floor_case(seed: int) -> tuple[FloorSlip, np.ndarray]:
    rng = np.random.default_rng(seed)
    layer = FloorSlip(64, 64, rng=rng)
    x = rng.normal(size=(4, 64))
    x[:, 0] *= 1e-6
    return layer, x


@pytest.mark.parametrize(("mode", "limit"), [("fast", None), ("auto", 100)])
def test_an_element_the_floor_excuses_but_the_direction_resolves_is_not_explained_away(
    mode: str, limit: int | None,
) -> None:
    """The element is off by half the element floor (far beyond rtol of its tiny gradient):
    its own difference passes it through the floor, but its share of the direction's mismatch
    is beyond what the direction's rounding explains. Explained away as passing on its own,
    it passed at every seed; it is wrong at its index."""
    options = {} if limit is None else {"auto_limit": limit}
    for seed in range(10):
        layer, x = floor_case(seed)
        right = check(layer, x, mode=mode, seed=seed, params=["W"], inputs=False, **options)
        assert right.ok, str(right)
        # the floor of W's elements: the header's (an array of scale 1) over W's scale
        layer.delta = 0.5 * right.atol / np.sqrt(np.mean(layer.params["W"] ** 2))
        wrong = check(layer, x, mode=mode, seed=seed, params=["W"], inputs=False, **options)
        w = wrong.entry("W")
        assert (w.status, w.worst_index) == ("FAIL", (0, 3)), str(wrong)
