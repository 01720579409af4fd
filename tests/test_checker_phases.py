"""The checker's seams: restoring that survives a failing step, the one judging value, the
label on usage errors, and the shared float-array test."""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import pytest

from example_nn import Linear
from pytest_gradcheck import GradcheckUsageError, NondeterministicLayerError, check, numeric
from pytest_gradcheck.checker import Checker
from pytest_gradcheck.discovery import CLASS, Case, DiscoveredTarget, to_case
from pytest_gradcheck.sources import RandomSource, SeededGlobalNumpy, SeededGlobalPython
from pytest_gradcheck.state import Restorer


def x_batch(n: int = 6, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


class NoisyLinear(Linear):
    """Draws from two generators of its own and from numpy's global stream in every forward."""

    def __init__(self) -> None:
        super().__init__(4, 3, rng=np.random.default_rng(1))
        self.rng = np.random.default_rng(5)
        self.rng2 = np.random.default_rng(6)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.rng.random()
        self.rng2.random()
        np.random.random()
        return super().forward(x)


def streams_now(layer: NoisyLinear) -> dict[str, Any]:
    """numpy's global stream, the layer's two generators, and its attributes (forward caches
    its input: only the snapshot's restore puts the old one back)."""
    return {
        "numpy": np.random.get_state(legacy=True)[1].tobytes(),
        "rng": layer.rng.bit_generator.state,
        "rng2": layer.rng2.bit_generator.state,
        "attributes": {k: id(v) for k, v in vars(layer).items()},
    }


# -- restoring ------------------------------------------------------------------------------


def test_restorer_runs_every_step_last_first_and_raises_the_first_error() -> None:
    ran: list[str] = []

    def failing(name: str) -> Any:
        def step() -> None:
            ran.append(name)
            raise RuntimeError(name)

        return step

    with pytest.raises(RuntimeError, match=r"^third$"), Restorer() as undo:
        undo.push(lambda: ran.append("first"))
        undo.push(failing("second"))
        undo.push(failing("third"))
    assert ran == ["third", "second", "first"]


def test_restorer_lets_the_blocks_own_error_through() -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("restore")

    with pytest.raises(ValueError, match="check"), Restorer() as undo:
        undo.push(lambda: ran.append("snapshot"))
        undo.push(fail)
        raise ValueError("check")
    assert ran == ["snapshot"]


@pytest.mark.parametrize("broken", ["python", "numpy", "private"])
def test_every_other_restore_runs_when_one_raises(
    broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    layer = NoisyLinear()
    np.random.seed(3)
    np.random.random(5)
    py_before = random.getstate()
    before = streams_now(layer)

    def boom(self: Any) -> None:
        raise RuntimeError(f"{broken} restore failed")

    restore, judge = RandomSource.restore, Checker.judge
    judged = []

    def judge_and_note(self: Checker, *args: Any) -> Any:
        result = judge(self, *args)
        judged.append(True)
        return result

    def boom_for_rng(self: RandomSource) -> None:
        # Only the final restore fails (the streams are reset during the check too); rng is
        # found before rng2, so a loop over the private streams would stop before rng2.
        if self.obj is layer.rng and judged:
            boom(self)
        restore(self)

    monkeypatch.setattr(Checker, "judge", judge_and_note)

    target, replacement = {
        "python": ((SeededGlobalPython, "give_back"), boom),
        "numpy": ((SeededGlobalNumpy, "give_back"), boom),
        "private": ((RandomSource, "restore"), boom_for_rng),
    }[broken]
    monkeypatch.setattr(*target, replacement)
    try:
        with pytest.raises(RuntimeError, match=f"{broken} restore failed"):
            check(layer, x_batch())
    finally:
        monkeypatch.undo()
        random.setstate(py_before)
    after = streams_now(layer)
    # The broken step left its own stream alone; every other one is back.
    left_alone = {"python": None, "numpy": "numpy", "private": "rng"}[broken]
    for name in before:
        if name != left_alone:
            assert after[name] == before[name], name
    if left_alone is not None:
        assert after[left_alone] != before[left_alone]


def test_the_checks_own_error_wins_over_a_failing_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding(NoisyLinear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            raise ValueError("backward blew up")

    layer = Exploding()
    before = streams_now(layer)
    py_before = random.getstate()

    def boom(self: Any) -> None:
        raise RuntimeError("python restore failed")

    monkeypatch.setattr(SeededGlobalPython, "give_back", boom)
    try:
        with pytest.raises(GradcheckUsageError, match="backward blew up"):
            check(layer, x_batch())
    finally:
        monkeypatch.undo()
        random.setstate(py_before)
    assert streams_now(layer) == before


def test_a_forward_reseeding_the_global_stream_leaves_it_as_the_caller_had_it() -> None:
    class Reseeding(Linear):
        def forward(self, x: np.ndarray) -> np.ndarray:
            np.random.seed(7)  # cs231n dropout does this when given a seed
            return super().forward(x) * (np.random.rand(*x.shape[:1], 1) > -1)

    np.random.seed(11)
    np.random.random(3)
    expected = np.random.get_state(legacy=True)[1].copy()
    assert check(Reseeding(4, 3, rng=np.random.default_rng(1)), x_batch()).ok
    assert np.array_equal(np.random.get_state(legacy=True)[1], expected)


# -- judging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "step", "rtol"),
    [("float64", 1e-6, 1e-5), ("float32", 1e-3, 1e-2), ("float16", 1e-1, 1e-1)],
)
def test_judging_takes_the_precisions_step_and_rtol_unless_given(
    precision: str, step: float, rtol: float
) -> None:
    j = numeric.judging(precision)
    assert (j.precision, j.step, j.rtol, j.tolerance) == (
        precision, step, rtol, numeric.Tolerance(rtol, 0.0))
    given = numeric.judging(precision, step=0.5, rtol=0.25, atol=1e-3)
    assert (given.step, given.rtol, given.tolerance.atol) == (0.5, 0.25, 1e-3)


def test_judging_widens_atol_by_the_noise_at_the_step() -> None:
    j = numeric.judging("float64", 1e-12, atol=1e-9)
    assert j.tolerance.atol == pytest.approx(1e-9 + numeric.NOISE_FACTOR * 1e-12 / 1e-6)


def test_the_result_reports_the_judging_in_force() -> None:
    result = check(Linear(4, 3, rng=np.random.default_rng(1)), x_batch(), eps=1e-4, rtol=1e-3,
                   atol=1e-7)
    assert (result.precision, result.eps, result.rtol) == ("float64", 1e-4, 1e-3)
    assert result.atol > 1e-7  # the noise floor comes on top of the given atol


# -- usage errors carry the layer's label ---------------------------------------------------


def test_a_usage_error_carries_the_label_and_survives_pickling() -> None:
    exc = GradcheckUsageError("Dense: bad", label="Dense")
    assert (str(exc), exc.label) == ("Dense: bad", "Dense")
    again = pickle.loads(pickle.dumps(exc))
    assert (str(again), again.label) == ("Dense: bad", "Dense")
    assert GradcheckUsageError("no layer").label is None


class ForwardRaises(Linear):
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise KeyError("boom")


class ReturnsNone(Linear):
    def forward(self, x: np.ndarray) -> None:  # type: ignore[override]
        super().forward(x)


class Nondeterministic(Linear):
    def forward(self, x: np.ndarray) -> np.ndarray:
        return super().forward(x) * np.random.default_rng().uniform(1.0, 2.0)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (ForwardRaises(4, 3, rng=np.random.default_rng(1)), "forward raised KeyError"),
        (ReturnsNone(4, 3, rng=np.random.default_rng(1)), "forward returned None"),
        (Nondeterministic(4, 3, rng=np.random.default_rng(1)), "two forward passes"),
    ],
    ids=["raises", "adapter", "nondeterministic"],
)
def test_usage_errors_from_a_check_name_the_layer_once_and_carry_its_label(
    layer: Any, message: str
) -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(layer, x_batch(), label="dense1")
    assert info.value.label == "dense1"
    assert str(info.value).startswith(f"dense1: {message}")
    assert "dense1: dense1" not in str(info.value)
    if isinstance(layer, Nondeterministic):
        assert isinstance(info.value, NondeterministicLayerError)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_modes_own_error_gets_the_layers_label_in_front(mode: str) -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(Linear(4, 3, rng=np.random.default_rng(1)), x_batch() * 1e12, mode=mode,
              eps=1e-6)
    assert info.value.label == "Linear"
    assert str(info.value).startswith("Linear: x: the step eps=1e-06 is so small next to")


def test_an_error_in_a_loss_term_during_evaluations_is_labelled_once() -> None:
    calls = []

    def term(layer: Any) -> float:
        calls.append(1)
        if len(calls) > 3:  # past the setup: inside the numeric passes
            raise GradcheckUsageError(f"{layer.__class__.__name__}: term gave up")
        return 0.0

    with pytest.raises(GradcheckUsageError) as info:
        check(Linear(4, 3, rng=np.random.default_rng(1)), x_batch(), extra_loss=term)
    assert str(info.value) == "Linear: term gave up"
    assert info.value.label == "Linear"


def test_an_options_error_has_no_layer_label() -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(Linear(4, 3, rng=np.random.default_rng(1)), x_batch(), stepsize=1e-3)
    assert info.value.label is None


# -- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.zeros(2), True),
        (np.zeros(2, dtype=np.float16), True),
        (np.zeros(2, dtype=np.int64), False),
        (np.zeros(2, dtype=np.complex128), False),
        ([0.0, 1.0], False),
        (1.0, False),
    ],
)
def test_is_float_array(value: Any, expected: bool) -> None:
    assert numeric.is_float_array(value) is expected


# -- names ----------------------------------------------------------------------------------


def test_a_case_holds_its_layer_and_still_takes_the_old_name_target() -> None:
    layer = Linear(4, 3, rng=np.random.default_rng(1))
    x = x_batch()
    case = Case(layer, (x,), {"mode": "fast"})
    assert (case.layer, case.inputs, case.options) == (layer, (x,), {"mode": "fast"})
    old = Case(target=layer, inputs=(x,))
    assert old.layer is layer and old.target is layer and old.options == {}
    old.target = "other"
    assert old.layer == "other"
    with pytest.raises(TypeError, match="takes the layer once"):
        Case(layer, target=layer)


def test_a_declared_case_without_a_layer_names_the_field_to_fill() -> None:
    target = DiscoveredTarget("pkg.Linear", CLASS, Linear)
    fill = r"put the layer instance in Case\(layer=\.\.\.\)"
    with pytest.raises(GradcheckUsageError, match=fill):
        to_case(Case(None, (x_batch(),)), target)
