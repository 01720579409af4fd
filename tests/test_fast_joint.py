"""Fast mode moves every array it checks at once, each along its own random direction by its own
step: two evaluations per direction however many arrays a layer has. A joint direction that
agrees within its estimated error passes every array; one that does not is followed array by
array, so a wrong element is still located and named in its own array's row.

These tests pin that the joint direction never lets a wrong gradient through where the array's
own direction would catch it: one wrong element in the smallest or the largest array, two wrong
arrays, arrays of very different scales, non-finite gradients. Counting layers, fixed seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import SETUP_FORWARDS, Affine, evaluations

from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.modes import NOISE_PROBE_EVALUATIONS


class ThreeArrays(Affine):
    """x @ W + b whose backward is off at one element of the gradient of `wrong` ("x", "W" or
    "b") by `rel` times the root-mean-square of that gradient (0 for a correct layer)."""

    def __init__(self, n_in: int, n_out: int, seed: int = 0, wrong: str = "", where: int = 0,
                 rel: float = 0.0, w_scale: float = 1.0) -> None:
        super().__init__(n_in, n_out, seed, w_scale)
        self.wrong, self.where, self.rel = wrong, where, rel

    def backward(self, dout: np.ndarray) -> np.ndarray:
        grads = {"x": dout @ self.params["W"].T, "W": self.x.T @ dout, "b": dout.sum(axis=0)}
        if self.wrong:
            g = grads[self.wrong]
            g.flat[self.where] += self.rel * np.sqrt(np.mean(g**2))
        self.grads["W"], self.grads["b"] = grads["W"], grads["b"]
        return grads["x"]


SHAPES = {"x": (16, 48), "W": (48, 40), "b": (40,)}


@pytest.mark.parametrize("wrong", ["x", "W", "b"])
def test_one_element_off_by_a_tenth_of_a_percent_in_any_array_is_located_in_its_row(
    wrong: str,
) -> None:
    for seed in range(40):
        rng = np.random.default_rng(500 + seed)
        where = int(rng.integers(int(np.prod(SHAPES[wrong]))))
        layer = ThreeArrays(48, 40, seed, wrong, where, 1e-3)
        result = check(layer, rng.normal(size=SHAPES["x"]), mode="fast", seed=seed)
        for e in result.entries:
            if e.name != wrong:
                assert e.ok, str(result)
                continue
            assert not e.ok and e.failed == 1, str(result)
            assert e.worst_index == tuple(int(i) for i in np.unravel_index(where, e.shape))


def test_a_passing_joint_direction_shows_on_every_row_and_in_a_note() -> None:
    x = np.random.default_rng(0).normal(size=(16, 48))
    result = check(ThreeArrays(48, 40), x, mode="fast")
    assert result.ok, str(result)
    assert result.forward_calls == SETUP_FORWARDS + evaluations(2)
    rows = result.entries
    assert len({(e.analytic, e.numeric, e.estimate) for e in rows}) == 1
    assert all(e.estimate is not None and 0 < e.estimate < 1e-6 for e in rows)
    assert any(n.startswith("fast mode: x, W, b were moved together") for n in result.notes)


def test_a_disagreement_is_followed_array_by_array_and_the_right_rows_show_their_own() -> None:
    x = np.random.default_rng(0).normal(size=(16, 48))
    result = check(ThreeArrays(48, 40, wrong="W", where=7, rel=0.5), x, mode="fast")
    assert not result.ok
    assert [e.name for e in result.entries if not e.ok] == ["W"]
    right = [e for e in result.entries if e.ok]
    # Each passing row measured along its own array's direction, not the joint one.
    assert right[0].analytic != right[1].analytic
    assert not any("moved together" in n for n in result.notes)
    # The joint direction (2), then each array along its own direction (2 each) and the search.
    assert result.forward_calls > SETUP_FORWARDS + evaluations(2 + 3 * 2)


def test_two_wrong_arrays_are_both_failed() -> None:
    class TwoWrong(ThreeArrays):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"].copy()
            self.grads["b"][3] *= 1.01
            dx = dx.copy()
            dx[2, 5] *= 0.99
            return dx

    for seed in range(10):
        x = np.random.default_rng(seed).normal(size=(16, 48))
        result = check(TwoWrong(48, 40, seed), x, mode="fast", seed=seed)
        assert {e.name for e in result.entries if not e.ok} == {"x", "b"}, str(result)


def test_arrays_of_very_different_scales_move_by_their_own_steps() -> None:
    # Inputs of scale 1e3, weights of 1e-4, a zero bias: each array steps by its own scale, so
    # the joint direction sees each, and a wrong element of the smallest-scale array still shows.
    rng = np.random.default_rng(1)
    x = 1e3 * rng.normal(size=(16, 48))
    good = ThreeArrays(48, 40, w_scale=1e-4)
    good.params["b"][:] = 0.0
    result = check(good, x, mode="fast")
    assert result.ok, str(result)
    assert result.forward_calls == SETUP_FORWARDS + evaluations(2)
    for wrong, where in [("W", 11), ("b", 4), ("x", 100)]:
        bad = ThreeArrays(48, 40, wrong=wrong, where=where, rel=1e-3, w_scale=1e-4)
        bad.params["b"][:] = 0.0
        result = check(bad, x, mode="fast")
        assert [e.name for e in result.entries if not e.ok] == [wrong], str(result)


def test_a_non_finite_gradient_in_one_array_fails_that_array() -> None:
    class NaNBias(ThreeArrays):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"].copy()
            self.grads["b"][2] = np.nan
            return dx

    x = np.random.default_rng(0).normal(size=(16, 48))
    result = check(NaNBias(48, 40), x, mode="fast")
    assert [e.name for e in result.entries if not e.ok] == ["b"]
    assert result.entry("b").worst_index == (2,)


def test_a_wrong_element_is_caught_along_either_of_two_joint_directions() -> None:
    x = np.random.default_rng(0).normal(size=(16, 48))
    good = check(ThreeArrays(48, 40), x, mode="fast", directions=2)
    assert good.ok and good.forward_calls == SETUP_FORWARDS + evaluations(4)
    bad = check(ThreeArrays(48, 40, wrong="b", where=9, rel=1e-3), x, mode="fast",
                directions=2)
    assert bad.entry("b").worst_index == (9,), str(bad)


def test_a_vanishing_step_in_one_array_is_refused_as_before() -> None:
    x = np.random.default_rng(0).normal(size=(16, 48))
    layer = ThreeArrays(48, 40)
    layer.params["b"] = np.full(40, 1e8)
    # A huge rtol lets the step past the judging's own refusal; x + h == x at every b.
    with pytest.raises(GradcheckUsageError, match=r"ThreeArrays: b: the step eps=1e-09 vanishes"):
        check(layer, x, mode="fast", eps=1e-9, rtol=1e3)


def test_one_input_element_off_by_a_tenth_of_a_percent_beside_a_million_weights() -> None:
    # x (8,000 elements) moves together with W (1,000,000) and b: W's terms dominate the joint
    # derivative, and one element of x off by 0.1% of its gradient's RMS still stands out.
    for seed in range(2):
        rng = np.random.default_rng(seed)
        where = int(rng.integers(8 * 1000))
        layer = ThreeArrays(1000, 1000, seed, "x", where, 1e-3)
        # The default mode (b, 1,000 elements, would go element by element: left out).
        result = check(layer, rng.normal(size=(8, 1000)), seed=seed, params=["W"])
        e = result.entry("x")
        assert not e.ok and e.failed == 1, str(result)
        assert e.worst_index == tuple(int(i) for i in np.unravel_index(where, (8, 1000)))
        assert result.entry("W").ok


def test_a_parameter_that_views_another_is_checked_on_its_own() -> None:
    # W2 is a view into W's memory: moving both at once would write each other's steps, so
    # each is checked along its own direction; a wrong element in the view is still found.
    class Sharing:
        def __init__(self, off: float) -> None:
            rng = np.random.default_rng(0)
            self.big = rng.normal(size=(40, 48))
            self.params = {"W": self.big[:20], "W2": self.big[20:]}
            self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
            self.off = off

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return np.tanh(x @ self.params["W"].T) + x @ self.params["W2"].T

        def backward(self, dout: np.ndarray) -> np.ndarray:
            t = np.tanh(self.x @ self.params["W"].T)
            dz = dout * (1 - t**2)
            self.grads["W"] = dz.T @ self.x
            self.grads["W2"] = dout.T @ self.x
            self.grads["W2"][3, 4] += self.off * np.sqrt(np.mean(self.grads["W2"] ** 2))
            return dz @ self.params["W"] + dout @ self.params["W2"]

    x = np.random.default_rng(1).normal(size=(8, 48))
    assert check(Sharing(0.0), x, mode="fast").ok
    bad = check(Sharing(1e-3), x, mode="fast")
    assert [e.name for e in bad.entries if not e.ok] == ["W2"], str(bad)
    assert bad.entry("W2").worst_index == (3, 4)


def test_fast_mode_restores_from_the_checkers_copy_and_leaves_the_bits_as_they_were() -> None:
    # The checker hands fast mode its baseline copy of each array; fast mode restores from it
    # (no copy of its own) and leaves every bit as it was, -0.0 and NaN payloads included.
    from dataclasses import dataclass, field

    from pytest_gradcheck import directional, modes, numeric, streams

    @dataclass
    class Array:
        name: str
        array: np.ndarray
        analytic: np.ndarray
        saved: np.ndarray | None = None
        steps: dict[object, float] = field(default_factory=dict)

    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 40))
    a[0, 0] = -0.0
    g = rng.normal(size=a.shape)
    t = Array("W", a, g, saved=a.copy())
    judging = numeric.judging("float64").for_array(a)
    line = directional._Line(t, lambda: float(np.vdot(g, a)), judging)
    assert np.shares_memory(line.base, t.saved)
    keyed = streams.KeyedStreams(0, streams.ARRAY_CHOICES)
    other = Array("x", rng.normal(size=50), rng.normal(size=50))
    x = other.array

    def objective() -> float:
        return float(np.vdot(g, a) + np.vdot(other.analytic, x))

    terms = float(np.abs(g * a).sum() + np.abs(other.analytic * x).sum())
    judging = numeric.judging("float64", numeric.objective_noise(terms, "float64"))
    verdicts = modes.fast_together([t, other], objective, judging, 1, keyed).verdicts
    assert verdicts is not None and all(v.ok for v in verdicts)
    assert a.tobytes() == t.saved.tobytes() and np.signbit(a[0, 0])


class Float32Property:
    """x @ W with W a float32 array behind a read-only property: the checker cannot swap in a
    float64 copy, so W is perturbed in float32 (judged in float32) beside the float64 input."""

    def __init__(self, off: float = 0.0) -> None:
        self._W = np.random.default_rng(0).normal(size=(48, 40)).astype(np.float32)
        self.dW = np.zeros((48, 40))
        self.off = off

    @property
    def W(self) -> np.ndarray:
        return self._W

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self._W.astype(np.float64)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout
        self.dW[5, 6] += self.off * np.sqrt(np.mean(self.dW**2))
        out: np.ndarray = dout @ self._W.T.astype(np.float64)
        return out


def test_a_float32_parameter_that_cannot_be_replaced_moves_with_the_input() -> None:
    x = np.random.default_rng(1).normal(size=(16, 48))
    layer = Float32Property()
    W = layer.W.copy()
    good = check(layer, x, mode="fast")
    assert good.ok and good.precision == "float32", str(good)
    # The noise measured when each array moves (a float32 layer), then one joint direction.
    assert good.forward_calls == SETUP_FORWARDS + evaluations(2 * NOISE_PROBE_EVALUATIONS + 2)
    assert layer.W.tobytes() == W.tobytes() and layer.W.dtype == np.float32
    bad = check(Float32Property(off=0.3), x, mode="fast")
    assert [e.name for e in bad.failed_entries] == ["W"], str(bad)
    assert bad.entry("W").worst_index == (5, 6)


class TanhNet:
    """tanh(x @ W1 + b1) @ W2 + b2; backward's gradient of `wrong` is off at one element by
    `rel` times that gradient's root-mean-square."""

    def __init__(self, rng: np.random.Generator, dims: tuple[int, int, int], scale: float,
                 wrong: str = "", where: int = 0, rel: float = 0.0) -> None:
        n_in, n_h, n_out = dims
        self.params = {"W1": rng.normal(size=(n_in, n_h)) / np.sqrt(n_in) * scale,
                       "b1": 0.1 * rng.normal(size=n_h),
                       "W2": rng.normal(size=(n_h, n_out)) / np.sqrt(n_h),
                       "b2": np.zeros(n_out)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.wrong, self.where, self.rel = wrong, where, rel

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x, self.h = x, np.tanh(x @ self.params["W1"] + self.params["b1"])
        out: np.ndarray = self.h @ self.params["W2"] + self.params["b2"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        p = self.params
        dh = dout @ p["W2"].T * (1 - self.h**2)
        g = {"W2": self.h.T @ dout, "b2": dout.sum(axis=0), "W1": self.x.T @ dh,
             "b1": dh.sum(axis=0), "x": dh @ p["W1"].T}
        if self.wrong:
            a = g[self.wrong]
            a.flat[self.where] += self.rel * np.sqrt(np.mean(a**2))
        self.grads.update({k: g[k] for k in self.params})
        return g["x"]


def test_the_joint_direction_names_the_wrong_array_wherever_full_mode_does() -> None:
    # Random shapes, weight scales 1e-3 to 1e2 and input scales 1e-2 to 1e2; one element of a
    # random array off by 5% of that array's gradient RMS. Fast mode fails exactly that array,
    # except where full mode passes it too (a saturated tanh: the error under the noise floor).
    names = ["x", "W1", "b1", "W2", "b2"]
    located = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        n_in, n_h, n_out, batch = (int(v) for v in rng.integers(2, 40, 4))
        scale, x_scale = 10.0 ** rng.uniform(-3, 2), 10.0 ** rng.uniform(-2, 2)
        x = x_scale * rng.normal(size=(batch, n_in))
        wrong = names[int(rng.integers(5))]
        sizes = {"x": batch * n_in, "W1": n_in * n_h, "b1": n_h, "W2": n_h * n_out, "b2": n_out}
        where = int(rng.integers(sizes[wrong]))
        dims = (n_in, n_h, n_out)
        assert check(TanhNet(np.random.default_rng(seed), dims, scale), x, mode="fast",
                     seed=seed).ok
        bad = TanhNet(np.random.default_rng(seed), dims, scale, wrong, where, 0.05)
        result = check(bad, x, mode="fast", seed=seed)
        failed = [e.name for e in result.failed_entries]
        if failed == [wrong]:
            located += 1
            continue
        assert failed == [], str(result)  # never another array
        assert check(bad, x, mode="full", seed=seed).entry(wrong).ok, str(result)
    assert located >= 55


class ReLUAffine(Affine):
    """relu(x @ W + b), its weight gradient optionally off at one element by `off` times the
    gradient's root-mean-square."""

    def __init__(self, off: float = 0.0) -> None:
        super().__init__(12, 10, seed=3)
        self.off = off

    def forward(self, x: np.ndarray) -> Any:
        self.z = super().forward(x)
        return np.maximum(self.z, 0.0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout * (self.z > 0))
        self.grads["W"] = self.grads["W"].copy()
        self.grads["W"][4, 6] += self.off * np.sqrt(np.mean(self.grads["W"] ** 2))
        return dx


def test_a_wrong_element_beside_kinks_the_joint_step_crosses_is_still_located() -> None:
    # Hidden units exactly at ReLU's kink (a zero input row, a zero bias): the bias's share of
    # the joint step moves them across it, the joint direction disagrees, and each array along
    # its own direction must still find the wrong weight and clear the bias's kinks. (The input
    # is left out: seen from a zero row, one step crosses several kinks at once, a case the
    # modes page (docs/modes.md) names as not guaranteed in any mode.)
    for seed in range(8):
        x = np.random.default_rng(seed).normal(size=(8, 12))
        x[:2] = 0.0
        good = ReLUAffine()
        good.params["b"][:] = 0.0
        assert check(good, x, mode="fast", seed=seed, inputs=False).ok
        bad = ReLUAffine(off=0.01)
        bad.params["b"][:] = 0.0
        result = check(bad, x, mode="fast", seed=seed, inputs=False)
        assert [e.name for e in result.failed_entries] == ["W"], str(result)
        assert result.entry("W").worst_index == (4, 6)
        assert result.entry("b").kinks > 0


@pytest.mark.parametrize("n", [5, 8192, 8193, 3 * 8192 + 7])
def test_a_probe_places_x_plus_and_minus_h_d_at_every_element_of_a_range(n: int) -> None:
    # The probe's second half runs block by block: every element of the range, the last
    # block's included, holds x + h*d then x - h*d exactly as whole-array arithmetic gives them, and
    # the projection is g . (the displacement stored); elements outside the range stay at x.
    from dataclasses import dataclass

    from pytest_gradcheck import directional, numeric

    @dataclass
    class Array:
        name: str
        array: np.ndarray
        analytic: np.ndarray

    rng = np.random.default_rng(4)
    a = rng.normal(size=n)
    x = a.copy()
    g = rng.normal(size=n)
    line = directional._Line(Array("W", a, g), lambda: 0.0, numeric.judging("float64").for_array(a))
    d = directional.direction(np.random.default_rng(5), n)
    lo, hi, h = 1, n - 1 if n > 5 else n, 1e-3
    line.place_plus(d, lo, hi, h)
    step = d[lo:hi].astype(np.float64) * h
    assert a[lo:hi].tobytes() == (x[lo:hi] + step).tobytes()
    assert a[:lo].tobytes() == x[:lo].tobytes() and a[hi:].tobytes() == x[hi:].tobytes()
    plus = a.copy()
    projected = line.place_minus(lo, hi)
    assert a[lo:hi].tobytes() == (x[lo:hi] - step).tobytes()
    assert projected == pytest.approx(float(np.dot(g[lo:hi], plus[lo:hi] - a[lo:hi])), rel=1e-12)
    line.restore()
    assert a.tobytes() == x.tobytes()


def test_arrays_followed_after_a_joint_disagreement_take_as_many_directions_as_it_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A joint direction that passed narrowly is confirmed along a second one; when that one
    # disagrees, each array must be checked along both of its own directions, or a wrong array
    # whose first direction passed narrowly (the second held the error) would pass on its own.
    from pytest_gradcheck import directional, modes

    real_fast = modes.fast
    taken: dict[str, int] = {}

    def together(ts: Any, *args: Any) -> directional.JointOutcome:
        return directional.JointOutcome(None, 3)

    def fast(t: Any, evaluate: Any, f_zero: float, judging: Any, directions: int,
             rng: Any, settle: int = 0, sharpen: Any = None) -> modes.ArrayVerdict:
        taken[t.name] = directions
        return real_fast(t, evaluate, f_zero, judging, directions, rng, settle, sharpen)

    monkeypatch.setattr(modes, "fast_together", together)
    monkeypatch.setattr(modes, "fast", fast)
    x = np.random.default_rng(0).normal(size=(8, 16))
    result = check(ThreeArrays(16, 8), x, mode="fast", directions=1)
    assert result.ok, str(result)
    assert taken == {"x": 3, "W": 3, "b": 3}
    taken.clear()
    monkeypatch.setattr(modes, "fast_together", lambda ts, *a: directional.JointOutcome(None, 1))
    check(ThreeArrays(16, 8), x, mode="fast", directions=2)
    assert taken == {"x": 2, "W": 2, "b": 2}  # never fewer than asked for
