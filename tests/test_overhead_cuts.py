"""The per-check savings keep every guarantee: big arrays are protected rather than copied for
the decoy forward, and what backward changes is still found and put back."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from helpers import Affine

from pytest_gradcheck import check, sources, state

WIDTH = 512  # a 512 x 512 float64 weight: 2 MB, above the protection threshold


class BigAffine(Affine):
    """y = x @ W + b with a weight big enough to be protected rather than copied, whose
    backward writes its gradients into the arrays it holds."""

    def __init__(self) -> None:
        super().__init__(WIDTH, WIDTH)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"][...] = self.x.T @ dout
        self.grads["b"][...] = dout.sum(axis=0)
        out: np.ndarray = dout @ self.params["W"].T
        return out


def x_wide(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, WIDTH))


def test_big_parameters_and_gradients_are_copied_once_per_check() -> None:
    # Released by the first snapshot, W and its gradient are copied there, once each: the
    # decoy protects them instead of copying them, and the baseline reuses those copies (the
    # protection proves the decoy left them alone).
    layer = BigAffine()
    start = state.copied_bytes()
    assert check(layer, x_wide(), mode="fast").ok
    big = layer.params["W"].nbytes
    assert state.copied_bytes() - start < 3 * big
    assert layer.params["W"].flags.writeable and layer.grads["W"].flags.writeable


@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_a_failing_decoy_that_wrote_into_a_big_parameter_leaves_no_trace(fault: str) -> None:
    calls = itertools.count()  # out of the checker's reach

    class Scribbling(BigAffine):
        def forward(self, x: np.ndarray) -> Any:
            n = next(calls)
            self.count = getattr(self, "count", 0) + 1
            if n == 1:  # the decoy of the first attempt: W is protected, so this faults
                self.params["W"][0, 0] += 1.0
            out = super().forward(x)
            if n == 3:  # the decoy of the attempt with copies: writes, then fails
                self.params["W"][0, 1] += 1.0
                if fault == "raises":
                    raise FloatingPointError("overflow on these inputs")
                out = out * np.nan
            return out

    layer = Scribbling()
    W, b = layer.params["W"].copy(), layer.params["b"].copy()
    result = check(layer, x_wide(), mode="fast")
    assert result.ok, str(result)
    assert layer.params["W"].tobytes() == W.tobytes() and layer.params["W"].flags.writeable
    assert layer.params["b"].tobytes() == b.tobytes()
    assert not hasattr(layer, "count")


def test_a_big_parameter_stepped_inside_backward_is_found_and_put_back() -> None:
    class Stepping(BigAffine):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.params["W"] -= 0.1 * self.grads["W"]
            return dx

    layer = Stepping()
    W = layer.params["W"].copy()
    result = check(layer, x_wide(), mode="fast")
    assert result.ok, str(result)
    assert any("backward changed parameter(s) W in place" in n for n in result.notes)
    assert layer.params["W"].tobytes() == W.tobytes()


def test_a_forward_writing_into_the_last_input_gradient_cannot_change_the_analytic_one() -> None:
    # Gradients backward creates are judged without a copy, read-only for the check: a forward
    # that writes into one (held where no snapshot looks) faults, and the check runs again
    # with copies. Without that, the evaluations would zero the analytic gradient of x.
    held: dict[str, np.ndarray] = {}

    class Sneaky(BigAffine):
        def forward(self, x: np.ndarray) -> Any:
            if "dx" in held:
                held["dx"][...] = 0.0
            return super().forward(x)

        def backward(self, dout: np.ndarray) -> np.ndarray:
            held["dx"] = super().backward(dout)
            return held["dx"]

    result = check(Sneaky(), x_wide(), mode="fast")
    assert result.ok, str(result)
    assert result.entry("x").status == "ok"
    assert held["dx"].flags.writeable


@pytest.mark.parametrize("cached", [False, True], ids=["no gauss cached", "gauss cached"])
def test_numpy_global_state_is_given_back_with_or_without_a_cached_gauss(cached: bool) -> None:
    # Without a cached gauss the user's state is read and written as raw bytes only.
    np.random.seed(7)
    np.random.random(3)
    if cached:
        np.random.standard_normal()  # draws two, keeps one
    before: Any = np.random.get_state()
    assert sources._gauss_cache(np.random.mtrand._rand) == (int(before[3]), float(before[4]))

    class Drawing(BigAffine):
        def forward(self, x: np.ndarray) -> Any:
            np.random.standard_normal()  # leaves a gauss cached in the check's stream
            return super().forward(x)

    assert check(Drawing(), x_wide(), mode="fast").ok
    after: Any = np.random.get_state()
    assert after[0] == before[0] and np.array_equal(after[1], before[1])
    assert after[2:] == before[2:]


def test_python_random_is_reset_and_given_back_through_its_raw_state() -> None:
    import random

    from pytest_gradcheck.sources import SeededGlobalPython

    random.seed(3)
    random.gauss(0.0, 1.0)  # leaves gauss_next set
    before = random.getstate()
    seeded = SeededGlobalPython(5)
    assert random.getstate() == random.Random(5).getstate() == seeded.saved
    assert not seeded.changed()
    random.gauss(0.0, 1.0)
    assert seeded.changed()
    seeded.restore()
    assert not seeded.changed() and random.getstate() == seeded.saved
    seeded.give_back()
    assert random.getstate() == before

    class Drawing(BigAffine):
        def forward(self, x: np.ndarray) -> Any:
            return super().forward(x) * (1.0 + 0.0 * random.gauss(0.0, 1.0))

    result = check(Drawing(), x_wide(), mode="fast")
    assert result.ok and any("Python random" in n for n in result.notes), str(result)
    assert random.getstate() == before


def test_the_steps_fast_mode_recorded_are_the_ones_the_report_would_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fast mode records each array's step for the report; full mode leaves the report to
    # measure it: the notes agree to the digit.
    from pytest_gradcheck import numeric

    measured: list[int] = []
    array_steps = numeric.Judging.array_steps

    def counting(self: numeric.Judging, arrays: list[tuple[str, np.ndarray]]) -> Any:
        measured.append(len(arrays))
        return array_steps(self, arrays)

    monkeypatch.setattr(numeric.Judging, "array_steps", counting)
    layer = BigAffine()
    layer.params["W"] *= 1e-3
    x = x_wide() * 1e5

    def steps_note(mode: str) -> str:
        result = check(layer, x, mode=mode, params=["b"], inputs=False)
        assert result.ok, str(result)
        return next(n for n in result.notes if "relative to each array's scale" in n)

    fast = steps_note("fast")
    assert measured == []
    assert fast == steps_note("full") and measured == [1]


def test_a_decoy_writing_into_a_small_parameter_faults_and_the_check_copies_instead() -> None:
    # Required parameters and working inputs are protected for the decoy whatever their size.
    calls = itertools.count()

    class Small:
        def __init__(self) -> None:
            self.W = np.random.default_rng(0).normal(size=(4, 3))

        def forward(self, x: np.ndarray) -> Any:
            n = next(calls)
            if n in (1, 3):  # the decoy of each attempt
                self.W[0, 0] += 1.0  # faults the first time; copied and put back the second
            self.x = x
            return x @ self.W

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.dW = self.x.T @ dout
            out: np.ndarray = dout @ self.W.T
            return out

    layer = Small()
    W = layer.W.copy()
    result = check(layer, np.random.default_rng(1).normal(size=(5, 4)), mode="fast")
    assert result.ok, str(result)
    assert layer.W.tobytes() == W.tobytes() and layer.W.flags.writeable
    assert not hasattr(layer, "x") and not hasattr(layer, "dW")
