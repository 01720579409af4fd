"""Layers beyond `forward(x) -> out` / `backward(dout) -> dx`: several outputs, other method
signatures, a real loss on the output (`loss=`), and per-call state that is not a parameter."""

from __future__ import annotations

import pickle
from typing import Any

import cs231n_style as cs
import numpy as np
import pytest
from helpers import QUIET_PLUGINS, global_streams, rows

from example_nn import Linear, LSTMCell, softmax_cross_entropy
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.options import MODES
from pytest_gradcheck.result import FAIL, OK


def failing(result: Any) -> list[str]:
    return [e.name for e in result.entries if e.status == FAIL]


def lstm_args(rng: np.random.Generator, n: int = 3, d: int = 4, h: int = 2) -> list[np.ndarray]:
    shapes = [(n, d), (n, h), (n, h), (d, 4 * h), (h, 4 * h), (4 * h,)]
    return [rng.normal(size=s) for s in shapes]


def affine(cls: type[Any], seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    return cls(rng.normal(size=(4, 3)), rng.normal(size=3))


# -- several outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_lstm_step_pair_with_two_outputs(mode: str) -> None:
    args = lstm_args(np.random.default_rng(2))
    good = check((cs.lstm_step_forward, cs.lstm_step_backward), *args, mode=mode)
    # dprev_c (the third gradient) wrong.
    bad = check((cs.lstm_step_forward, cs.mutant_backward(cs.lstm_step_backward, 2)), *args,
                mode=mode)
    assert rows(good) == dict.fromkeys(["x", "prev_h", "prev_c", "Wx", "Wh", "b"], OK)
    assert failing(bad) == ["prev_c"]


@pytest.mark.parametrize("mode", MODES)
def test_lstm_cell_with_two_outputs(mode: str) -> None:
    rng = np.random.default_rng(4)
    cell, inputs = LSTMCell.gradcheck_case(rng)
    before, streams = (cell.params["Wh"].copy(), cell.grads["Wh"].copy()), global_streams()
    good = check(cell, *inputs, mode=mode)
    wrong = cs.mutant_layer(LSTMCell, "grads.Wh")(4, 3, rng=np.random.default_rng(0))
    bad = check(wrong, *inputs, mode=mode)
    assert rows(good) == dict.fromkeys(["x", "h_prev", "c_prev", "Wx", "Wh", "b"], OK)
    assert failing(bad) == ["Wh"]
    np.testing.assert_array_equal(cell.params["Wh"], before[0])
    np.testing.assert_array_equal(cell.grads["Wh"], before[1])
    assert global_streams() == streams


GIVEN: list[np.ndarray] = []


class TwoOutputs:
    """(x * w, x.sum(axis=1)) with a backward that adds into its arguments in place."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.x = x
        return x * self.w, x.sum(axis=1)

    def backward(self, dscaled: np.ndarray, dsum: np.ndarray) -> np.ndarray:
        GIVEN[:] = [dscaled, dsum]  # not on the layer: the check restores what it holds
        self.dw = (dscaled * self.x).sum(axis=0)
        dscaled *= self.w  # in place: the checker handed over arrays of its own
        dscaled += dsum[:, None]
        return dscaled


def test_each_output_gets_a_fresh_gradient_of_its_shape(rng: np.random.Generator) -> None:
    result = check(TwoOutputs(rng.normal(size=3)), rng.normal(size=(4, 3)))
    assert rows(result) == {"x": OK, "w": OK}
    dscaled, dsum = GIVEN
    assert (dscaled.shape, dsum.shape) == ((4, 3), (4,))
    assert dscaled.base is None and dsum.base is None


def test_integer_outputs_are_not_differentiated(rng: np.random.Generator) -> None:
    def max_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        idx = x.argmax(axis=1)
        return x[np.arange(len(x)), idx], idx, (x.shape, idx)

    def max_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
        shape, idx = cache
        dx = np.zeros(shape)
        dx[np.arange(shape[0]), idx] = dout
        return dx

    x = rng.normal(size=(4, 3))
    assert rows(check((max_forward, max_backward), x)) == {"x": OK}

    class RowMax:
        def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            out, self.idx, self.cache = max_forward(x)
            return out, self.idx

        def backward(self, dout: np.ndarray) -> np.ndarray:
            return max_backward(dout, self.cache)

    assert rows(check(RowMax(), x)) == {"x": OK}


# -- other signatures --------------------------------------------------------------------------

SIGNATURES = {
    "backward(x, dy)": (cs.AffineInputBack, "dW"),
    "forward -> (out, cache), backward(dout, cache)": (cs.AffineCacheMethods, "grads.W"),
    "backward -> (dx, grads)": (cs.AffineGradsReturned, (1, "W")),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", list(SIGNATURES))
def test_other_signatures(shape: str, mode: str) -> None:
    cls, which = SIGNATURES[shape]
    x = np.random.default_rng(1).normal(size=(5, 4))
    layer = affine(cls)
    before, streams = pickle.dumps(layer), global_streams()
    good = check(layer, x, mode=mode)
    bad = check(affine(cs.mutant_layer(cls, which)), x, mode=mode)
    assert rows(good) == {"x": OK, "W": OK, "b": OK}
    assert failing(bad) == ["W"]
    assert pickle.dumps(layer) == before
    assert global_streams() == streams


class GradsTuple(cs.AffineGradsReturned):
    def backward(self, dout: np.ndarray) -> Any:
        dx, grads = super().backward(dout)
        return dx, (grads["W"], grads["b"] * 2)  # db wrong


def test_returned_gradients_as_a_tuple_follow_the_parameters() -> None:
    x = np.random.default_rng(1).normal(size=(5, 4))
    assert rows(check(affine(GradsTuple), x)) == {"x": OK, "W": OK, "b": FAIL}


class UnknownReturnedKey(cs.AffineGradsReturned):
    def backward(self, dout: np.ndarray) -> Any:
        dx, grads = super().backward(dout)
        return dx, {"weight": grads["W"], "b": grads["b"]}


class Unclear:
    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return dout


def test_unclear_signatures_are_usage_errors_naming_the_remedy() -> None:
    x = np.ones((2, 4))
    with pytest.raises(GradcheckUsageError, match=r"'weight', which is no parameter"):
        check(affine(UnknownReturnedKey), x)
    with pytest.raises(GradcheckUsageError,
                       match=r"backward\(dout, mask\).*pytest_gradcheck_adapt"):
        check(Unclear(), x)


# -- loss= -------------------------------------------------------------------------------------


RECEIVED: list[np.ndarray] = []


class RecordingLinear(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        RECEIVED.append(dout.copy())
        return super().backward(dout)


def classification(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)


@pytest.mark.parametrize("mode", MODES)
def test_loss_option_checks_the_layer_through_a_real_loss(mode: str) -> None:
    x, y = classification()
    layer = RecordingLinear(4, 3, rng=np.random.default_rng(0))

    def loss(out: np.ndarray) -> tuple[float, np.ndarray]:
        return softmax_cross_entropy(out, y)

    good = check(layer, x, loss=loss, mode=mode)
    wrong = cs.mutant_layer(Linear, "grads.b")(4, 3, rng=np.random.default_rng(0))
    bad = check(wrong, x, loss=loss, mode=mode)

    assert rows(good) == {"x": OK, "W": OK, "b": OK}
    assert failing(bad) == ["b"]
    # Backward received the loss's gradient, not a random cotangent.
    expected = softmax_cross_entropy(x @ layer.params["W"] + layer.params["b"], y)[1]
    np.testing.assert_allclose(RECEIVED[-1], expected)


def test_loss_option_with_extra_loss_checks_the_regularised_objective() -> None:
    x, y = classification()
    lam = 0.3

    class Regularised(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] + lam * self.params["W"]
            return dx

    layer = Regularised(4, 3, rng=np.random.default_rng(0))
    objective = {"loss": lambda out: softmax_cross_entropy(out, y)}
    assert not check(layer, x, **objective).ok
    assert check(layer, x, **objective,
                 extra_loss=lambda m: 0.5 * lam * float(np.sum(m.params["W"] ** 2))).ok


def test_loss_option_on_a_pair_forces_its_dicts_into_training_mode() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.integers(0, 3, size=6)
    bn_param: dict[str, Any] = {"mode": "test", "running_mean": np.zeros(3),
                                "running_var": np.ones(3)}
    saved = pickle.dumps(bn_param)
    result = check((cs.batchnorm_forward, cs.batchnorm_backward), x, np.ones(3), np.zeros(3),
                   bn_param, loss=lambda out: softmax_cross_entropy(out, y))
    assert result.ok, result
    assert any("['mode']='train'" in note for note in result.notes), result.notes
    assert pickle.dumps(bn_param) == saved


def test_loss_option_is_for_layers() -> None:
    x, y = classification()
    with pytest.raises(GradcheckUsageError, match="already checked through its own loss"):
        check(cs.softmax_loss, x, y, loss=lambda out: (0.0, out))
    with pytest.raises(GradcheckUsageError, match=r"loss= must return \(value, dout\)"):
        check(Linear(4, 3, rng=np.random.default_rng(0)), x, loss=lambda out: out)


# -- per-call state is not a parameter ---------------------------------------------------------


class WithInitialState:
    """Creates its initial state afresh in every forward, and backward writes its gradient."""

    def __init__(self, W: np.ndarray) -> None:
        self.W = W

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.h0 = np.zeros_like(x)
        self.x = x
        out: np.ndarray = np.tanh(x + self.h0) @ self.W
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dpre = (dout @ self.W.T) * (1.0 - np.tanh(self.x + self.h0) ** 2)
        self.dW = np.tanh(self.x + self.h0).T @ dout
        self.dh0 = dpre
        return dpre


@pytest.mark.parametrize("trained", [False, True], ids=["fresh", "after-a-step"])
def test_an_attribute_forward_creates_afresh_is_no_parameter(trained: bool) -> None:
    rng = np.random.default_rng(0)
    layer, x = WithInitialState(rng.normal(size=(3, 2))), rng.normal(size=(4, 3))
    if trained:  # h0 and dh0 exist before the check
        layer.forward(x)
        layer.backward(np.ones((4, 2)))
    assert rows(check(layer, x)) == {"x": OK, "W": OK}


class RebindsItsWeight:
    """Rebinds W to a copy of itself on every call; its backward doubles dW."""

    def __init__(self) -> None:
        self.W = np.random.default_rng(0).normal(size=(3, 4))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.W = self.W.astype(x.dtype)
        self.x = x
        out: np.ndarray = x @ self.W
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = 2 * self.x.T @ dout
        grad: np.ndarray = dout @ self.W.T
        return grad


@pytest.mark.parametrize("mode", MODES)
def test_a_parameter_forward_rebinds_to_a_copy_of_itself_is_still_checked(mode: str) -> None:
    # The rule that drops per-call state must not drop a parameter and pass its wrong gradient.
    result = check(RebindsItsWeight(), np.random.default_rng(1).normal(size=(5, 3)), mode=mode)
    assert rows(result) == {"x": OK, "W": FAIL}


LAYERS_TEST = """
import numpy as np
import cs231n_style as cs
from example_nn import LSTMCell, Linear, softmax_cross_entropy

def test_lstm_cell_wrong(gradcheck):
    rng = np.random.default_rng(0)
    cell, inputs = LSTMCell.gradcheck_case(rng)
    wrong = cs.mutant_layer(LSTMCell, "grads.Wx")(4, 3, rng=rng)
    gradcheck(wrong, *inputs)

def test_input_back(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(cs.AffineInputBack(rng.normal(size=(4, 3)), np.zeros(3)), rng.normal(size=(5, 4)))

def test_loss_option_wrong(gradcheck):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    layer = cs.mutant_layer(Linear, "grads.W")(4, 3, rng=rng)
    gradcheck(layer, x, loss=lambda out: softmax_cross_entropy(out, y))
"""


def test_layers_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layer_shapes=LAYERS_TEST)
    result = pytester.runpytest(*QUIET_PLUGINS)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*gradcheck LSTMCell_wrong_grads.Wx: FAILED*",
                                 "*Wx*param*FAIL*"])
    result.stdout.fnmatch_lines(["*gradcheck Linear_wrong_grads.W: FAILED*", "*W*param*FAIL*"])
