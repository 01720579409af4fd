"""Features that were built apart, used together: shapes of code with options, modes, points,
the decoy forward, protection of big arrays and discovery. Each test pins a case where two of
them met badly."""

from __future__ import annotations

import pickle
import types
from typing import Any

import cs231n_style as cs
import numpy as np
import pytest
from helpers import global_streams, rows

from example_nn import LSTMCell
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.api import check_target
from pytest_gradcheck.discovery import MODEL, Case, DiscoveredTarget, targets_in_module
from pytest_gradcheck.manager import default_hook
from pytest_gradcheck.options import Options
from pytest_gradcheck.result import ERROR, FAIL, NOT_DIFFERENTIATED, OK


def data(n: int = 8, d: int = 4, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, size=n)


# -- wrt= ---------------------------------------------------------------------------------------


def a_dot_b_plus_c2(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[float, Any]:
    """Gradients for a and c only, as a tuple: wrt must say which."""
    return float(np.sum(a * b) + np.sum(c**2)), (b, 2 * c)


@pytest.mark.parametrize("wrt", [[0, 0], ["a", 0], [2, -1]])
def test_wrt_naming_one_argument_twice_is_a_usage_error(wrt: list[Any]) -> None:
    # Otherwise the second gradient silently replaces the first, and the argument it belongs
    # to is listed as not differentiated.
    a, b, c = np.random.default_rng(0).normal(size=(3, 3))
    with pytest.raises(GradcheckUsageError, match=r"wrt=.*twice"):
        check(a_dot_b_plus_c2, a, b, c, wrt=wrt)


def test_wrt_naming_an_integer_argument_is_a_usage_error_naming_wrt() -> None:
    def total(x: np.ndarray, idx: np.ndarray) -> tuple[float, Any]:
        return float(np.sum(x[idx])), (np.ones(len(idx)),)

    x = np.random.default_rng(0).normal(size=4)
    with pytest.raises(GradcheckUsageError, match=r"wrt=\[1\]: 'idx' .*int64.*float"):
        check(total, x, np.arange(3), wrt=[1])


# -- the nnfs Model: targets are data -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_nnfs_model_with_one_hot_float_targets_holds_them_fixed(mode: str) -> None:
    X, y = data()
    onehot = np.eye(3)[y]
    model = cs.nnfs_model(seed=0)
    before = pickle.dumps(model)
    result = check(model, X, onehot, mode=mode)
    assert result.ok, str(result)
    assert rows(result)["y"] == NOT_DIFFERENTIATED
    assert rows(result)["X"] == OK
    assert pickle.dumps(model) == before


def test_nnfs_model_without_targets_says_to_pass_them() -> None:
    X, _ = data()
    with pytest.raises(GradcheckUsageError, match=r"check\(model, X, y\)"):
        check(cs.nnfs_model(seed=0), X)


# -- a model whose loss() takes an optimizer step ----------------------------------------------


class SteppingNet(cs.TwoLayerNet):
    """loss() returns the gradients at the parameters it was called with, then updates them
    in place (a training step folded into loss)."""

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        value, grads = super().loss(X, y)
        for key, g in grads.items():
            self.params[key] -= 0.1 * g
        return value, grads


class ReassigningNet(cs.TwoLayerNet):
    """The same step, assigning new arrays instead of updating in place."""

    def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
        value, grads = super().loss(X, y)
        for key, g in grads.items():
            self.params[key] = self.params[key] - 0.1 * g
        return value, grads


@pytest.mark.parametrize("cls", [SteppingNet, ReassigningNet])
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_model_stepping_its_parameters_inside_loss_is_checked(cls: type[Any], mode: str) -> None:
    X, y = data()
    model = cls(input_dim=4, hidden_dim=5, num_classes=3, weight_scale=0.3, reg=0.1, seed=0)
    before = pickle.dumps(model)
    result = check(model, X, y, mode=mode)
    assert result.ok, str(result)
    assert {e.name for e in result.entries if e.status == OK} == {"W1", "b1", "W2", "b2"}
    assert pickle.dumps(model) == before


def test_a_stepping_model_with_a_big_protected_parameter_is_checked_and_restored() -> None:
    # W1 is 1.3 MB: protected (read-only) rather than copied, so the first step inside loss()
    # hits protection and the check runs again with copies.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 400)), rng.integers(0, 3, size=4)
    model = SteppingNet(input_dim=400, hidden_dim=400, num_classes=3, weight_scale=0.05, seed=0)
    before = pickle.dumps(model)
    result = check(model, X, y, mode="fast")
    assert result.ok, str(result)
    assert pickle.dumps(model) == before
    assert model.params["W1"].flags.writeable


def test_a_stepping_model_with_a_wrong_gradient_fails_on_that_row() -> None:
    class Wrong(SteppingNet):
        def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
            value, grads = super().loss(X, y)
            return value, {**grads, "b2": grads["b2"] * 1.01}

    X, y = data()
    model = Wrong(input_dim=4, hidden_dim=5, num_classes=3, weight_scale=0.3, seed=0)
    result = check(model, X, y)
    assert [e.name for e in result.entries if e.status == FAIL] == ["b2"]


# -- loss= on a layer with several outputs --------------------------------------------------


def lstm_objective(out: Any) -> tuple[float, Any]:
    h, c = out
    return float(np.sum(h**2) + 0.5 * np.sum(c)), (2 * h, np.full_like(c, 0.5))


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_loss_on_a_two_output_layer_receives_its_outputs(mode: str) -> None:
    cell, inputs = LSTMCell.gradcheck_case(np.random.default_rng(0))
    streams = global_streams()
    result = check(cell, *inputs, loss=lstm_objective, mode=mode)
    assert result.ok, str(result)
    assert set(rows(result)) == {"x", "h_prev", "c_prev", "Wx", "Wh", "b"}
    assert global_streams() == streams


def test_loss_on_a_two_output_pair_receives_its_outputs() -> None:
    cell, (x, h0, c0) = LSTMCell.gradcheck_case(np.random.default_rng(0))
    p = cell.params
    result = check((cs.lstm_step_forward, cs.lstm_step_backward), x, h0, c0, p["Wx"], p["Wh"],
                   p["b"], loss=lstm_objective)
    assert result.ok, str(result)


def test_loss_on_a_two_output_layer_catches_a_wrong_output_gradient_use() -> None:
    class Slipped(LSTMCell):
        def backward(self, dh: np.ndarray, dc: np.ndarray) -> Any:
            return super().backward(dh, dc * 1.01)

    cell, inputs = Slipped.gradcheck_case(np.random.default_rng(0))
    result = check(cell, *inputs, loss=lstm_objective)
    assert not result.ok
    assert rows(result)["c_prev"] == FAIL


def test_loss_with_the_wrong_number_of_output_gradients_is_a_usage_error() -> None:
    cell, inputs = LSTMCell.gradcheck_case(np.random.default_rng(0))

    def only_h(out: Any) -> tuple[float, Any]:
        h, _ = out
        return float(np.sum(h)), (np.ones_like(h),)

    with pytest.raises(GradcheckUsageError, match=r"2 outputs, so loss= .*a tuple of 1"):
        check(cell, *inputs, loss=only_h)


def test_a_loss_that_raises_is_named_as_the_loss_not_forward() -> None:
    def broken(out: Any) -> tuple[float, Any]:
        raise KeyError("labels")

    X, _ = data()
    with pytest.raises(GradcheckUsageError, match=r"loss= raised KeyError") as info:
        check(cs.AffineInputBack(np.ones((4, 3)), np.zeros(3)), X, loss=broken)
    assert "forward raised" not in str(info.value)


# -- unusable gradients from loss-shaped code are error rows -----------------------------------


@pytest.mark.parametrize("bad", ["pending", [[1.0, 2.0], [3.0]],
                                 np.ones(3) + 0j], ids=["string", "ragged", "complex"])
def test_a_function_returning_an_unusable_gradient_gets_an_error_row(bad: Any) -> None:
    def f(x: np.ndarray, w: np.ndarray) -> tuple[float, Any]:
        return float(np.sum(x * w)), (w, bad)

    x, w = np.random.default_rng(0).normal(size=(2, 3))
    result = check(f, x, w)
    assert rows(result) == {"x": OK, "w": ERROR}
    assert "backward raised" not in str(result)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_model_returning_an_unusable_gradient_gets_an_error_row(mode: str) -> None:
    class Pending(cs.TwoLayerNet):
        def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
            value, grads = super().loss(X, y)
            return value, {**grads, "b1": "pending"}

    X, y = data()
    model = Pending(input_dim=4, hidden_dim=5, num_classes=3, weight_scale=0.3, seed=0)
    result = check(model, X, y, mode=mode)
    assert {k: v for k, v in rows(result).items() if k in ("W1", "b1", "W2", "b2")} == {
        "W1": OK, "b1": ERROR, "W2": OK, "b2": OK}
    assert "not an array of numbers" in str(result.entry("b1").message)


def test_a_layer_storing_a_ragged_parameter_gradient_gets_an_error_row() -> None:
    class Ragged:
        def __init__(self) -> None:
            self.params = {"w": np.ones(2)}
            self.grads: dict[str, Any] = {}

        def forward(self, x: np.ndarray) -> np.ndarray:
            return x * self.params["w"]

        def backward(self, dout: np.ndarray) -> np.ndarray:
            self.grads["w"] = [[1.0, 2.0], [3.0]]
            return dout * self.params["w"]

    result = check(Ragged(), np.ones((2, 2)))
    assert rows(result) == {"x": OK, "w": ERROR}


# -- discovery: a case's own options -----------------------------------------------------------


def test_points_in_a_discovered_case_are_honoured() -> None:
    built: list[int] = []

    def square(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(np.sum(x**2)), 2 * x

    def case(rng: np.random.Generator) -> Case:
        built.append(1)
        return Case(None, (rng.normal(size=3),), {"points": 3})

    square.gradcheck_case = case  # type: ignore[attr-defined]

    target = DiscoveredTarget("mod.square", "function", square)
    result = check_target(target, Options(), default_hook())
    assert result.ok
    assert len(built) == 3  # one fresh case per point, the first not built twice


def test_a_model_whose_loss_raises_names_loss_not_forward() -> None:
    class Broken(cs.TwoLayerNet):
        def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
            raise RuntimeError("boom")

    X, y = data()
    with pytest.raises(GradcheckUsageError, match=r"Broken: loss\(\) raised RuntimeError: boom"):
        check(Broken(4, 5, 3, seed=0), X, y)


def test_a_function_that_raises_is_named_by_its_name() -> None:
    def softmax(x: np.ndarray) -> tuple[float, np.ndarray]:
        raise ZeroDivisionError("nope")

    with pytest.raises(GradcheckUsageError, match=r"softmax: softmax\(\) raised ZeroDivisionError"):
        check(softmax, np.ones(3))


class ScoresModel:
    """`forward(X)` gives scores for prediction (no backward); `loss(X, y)` is the objective.
    check() takes it as a model, so discovery must find it as one."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.params = {"W": rng.normal(size=(3, 2))}

    def forward(self, X: np.ndarray) -> np.ndarray:
        out: np.ndarray = X @ self.params["W"]
        return out

    def loss(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        d = self.forward(X) - y
        return float(np.sum(d**2)), {"W": 2 * X.T @ d * 1.01}  # bug: the 1.01

    @classmethod
    def gradcheck_case(cls, rng: np.random.Generator) -> Any:
        return cls(rng), (rng.normal(size=(4, 3)), rng.normal(size=(4, 2)))


def test_discovery_finds_a_model_with_a_forward_but_no_backward_as_check_does() -> None:
    module = types.ModuleType("scores_models")
    module.ScoresModel = type("ScoresModel", (ScoresModel,), {"__module__": "scores_models"})
    targets = targets_in_module(module)
    assert [(t.name, t.kind) for t in targets] == [("scores_models.ScoresModel", MODEL)]
    result = check_target(targets[0], Options(), default_hook())
    assert rows(result)["W"] == FAIL


def test_a_model_with_label_names_in_its_parameter_dict_is_checked() -> None:
    class Named(cs.TwoLayerNet):
        def __init__(self) -> None:
            super().__init__(4, 5, 3, weight_scale=0.3, seed=0)
            self.params["classes"] = np.array(["cat", "dog", "eel"])
            self.params["meta"] = np.array([None, "x"], dtype=object)

        def loss(self, X: np.ndarray, y: np.ndarray | None = None) -> Any:
            p = self.params
            trained = {k: v for k, v in p.items() if v.dtype.kind == "f"}
            self.params = trained
            try:
                return super().loss(X, y)
            finally:
                self.params = p

    X, y = data()
    result = check(Named(), X, y)
    assert result.ok, str(result)
    assert rows(result)["classes"] == NOT_DIFFERENTIATED


# -- relative steps on loss-shaped code ---------------------------------------------------------


class LeastSquares:
    """A correct MSE regression model near its optimum: the loss is ~1e-10 while the bias,
    initialised to zero, is added to predictions of order 1."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.X = rng.normal(size=(20, 3))
        w_true = rng.normal(size=(3, 2))
        self.y = self.X @ w_true
        self.params = {"W": w_true + 1e-5 * rng.normal(size=(3, 2)), "b": np.zeros(2)}

    def loss(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        d = X @ self.params["W"] + self.params["b"] - y
        n = len(X)
        return float(np.sum(d**2) / n), {"W": 2 * X.T @ d / n, "b": 2 * d.sum(axis=0) / n}


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_zero_bias_of_a_model_near_its_optimum_is_not_a_false_failure(mode: str) -> None:
    model = LeastSquares()
    result = check(model, model.X, model.y, mode=mode)
    assert result.ok, str(result)


class TanhAndArgmaxAndSquare:
    """Three outputs, the middle one integer: backward takes one gradient per float output."""

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.x = x
        return np.tanh(x), x.argmax(axis=1), x**2

    def backward(self, dt: np.ndarray, ds: np.ndarray) -> np.ndarray:
        return dt * (1 - np.tanh(self.x) ** 2) + ds * 2 * self.x


@pytest.mark.parametrize("per_output", [True, False], ids=["all-outputs", "float-outputs"])
def test_loss_on_outputs_with_an_integer_one_takes_a_gradient_per_output(
    per_output: bool,
) -> None:
    def objective(out: Any) -> tuple[float, Any]:
        t, idx, s = out
        assert idx.dtype.kind == "i"
        value = float(np.sum(t * t) + np.sum(s))
        return value, ((2 * t, None, np.ones_like(s)) if per_output else (2 * t, np.ones_like(s)))

    x = np.random.default_rng(0).normal(size=(4, 3))
    result = check(TanhAndArgmaxAndSquare(), x, loss=objective)
    assert result.ok, str(result)
    assert rows(result) == {"x": OK}


# -- data the objective holds fixed -------------------------------------------------------------


def masked_mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over the targets that are known (NaN marks a missing one)."""
    known = ~np.isnan(target)
    d = np.where(known, pred - np.nan_to_num(target), 0.0)
    return float(np.sum(d**2) / known.sum()), 2 * d / known.sum()


def test_nan_in_a_target_the_loss_masks_out_does_not_stop_the_check() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    target[1, 2] = np.nan
    result = check(masked_mse, pred, target)
    assert rows(result) == {"target": NOT_DIFFERENTIATED, "pred": OK}


def test_nan_in_the_argument_that_is_differentiated_is_still_refused() -> None:
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    pred[0, 0] = np.nan
    with pytest.raises(GradcheckUsageError, match="'pred' holds non-finite values"):
        check(masked_mse, pred, target)


# -- extra_loss with function pairs -------------------------------------------------------------

REG = 0.3


def affine_l2_backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, ...]:
    """affine_backward with the gradient of 0.5 * REG * sum(w**2) added to dw."""
    dx, dw, db = cs.affine_backward(dout, cache)
    return dx, dw + REG * cache[1], db


def l2_of_w(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * REG * float(np.sum(w**2))


def affine_args() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 4)), rng.normal(size=(4, 3)), rng.normal(size=3)


@pytest.mark.parametrize("with_loss", [False, True], ids=["cotangent", "loss="])
def test_extra_loss_of_a_function_pair_receives_its_arguments(with_loss: bool) -> None:
    x, w, b = affine_args()
    y = np.array([0, 2, 1, 1, 0])
    options: dict[str, Any] = {"loss": lambda out: cs.softmax_loss(out, y)} if with_loss else {}
    pair = (cs.affine_forward, affine_l2_backward)
    assert check(pair, x, w, b, extra_loss=l2_of_w, **options).ok
    assert rows(check(pair, x, w, b, **options))["w"] == FAIL


# -- value-and-gradient callables with state ----------------------------------------------------


class MaskedSquares:
    """A callable loss object with state: a call counter, a history and its own generator
    drawing a fresh mask per call (the mask is part of the objective, so it must be reset)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.calls = 0
        self.history: list[float] = []

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        self.calls += 1
        keep = self.rng.random(x.shape) < 0.7
        value = float(np.sum((x * keep) ** 2))
        self.history.append(value)
        return value, 2 * x * keep

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        return self(x)


@pytest.mark.parametrize("bound", [False, True], ids=["callable-object", "bound-method"])
def test_a_stateful_value_and_gradient_callable_is_reset_and_restored(bound: bool) -> None:
    loss = MaskedSquares()
    before = pickle.dumps(loss)
    x = np.random.default_rng(1).normal(size=(4, 3))
    result = check(loss.objective if bound else loss, x)
    assert result.ok, str(result)
    assert pickle.dumps(loss) == before


def test_a_bound_method_is_labelled_by_its_qualified_name() -> None:
    x = np.random.default_rng(1).normal(size=(4, 3))
    assert check(MaskedSquares().objective, x).label == "MaskedSquares.objective"


class CountingAffine:
    """cs231n-style forward/backward as methods of an object that counts its calls and keeps
    its own dropout generator: checked as the pair (obj.affine_forward, obj.affine_backward)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.calls = 0

    def affine_forward(self, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, Any]:
        self.calls += 1
        keep = (self.rng.random((x.shape[0], w.shape[1])) < 0.7) / 0.7
        return (x @ w) * keep, (x, w, keep)

    def affine_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]:
        x, w, keep = cache
        return (dout * keep) @ w.T, x.T @ (dout * keep)


def test_a_pair_of_bound_methods_has_its_object_reset_and_restored() -> None:
    obj = CountingAffine()
    before = pickle.dumps(obj)
    x, w, _ = affine_args()
    result = check((obj.affine_forward, obj.affine_backward), x, w)
    assert result.ok, str(result)
    assert pickle.dumps(obj) == before


class AccumulatingCrossEntropy:
    """A loss object in the nnfs manner: every call adds to running sums (never part of the
    value), and a label-smoothing draw from its own generator (part of the value)."""

    def __init__(self, y: np.ndarray) -> None:
        self.y = y
        self.rng = np.random.default_rng(3)
        self.accumulated_sum = 0.0
        self.accumulated_count = 0

    def value_and_grad(self, out: np.ndarray) -> tuple[float, np.ndarray]:
        weights = 1.0 + 0.1 * self.rng.random(len(out))
        value, dout = cs.softmax_loss(out, self.y)
        self.accumulated_sum += value
        self.accumulated_count += 1
        w = weights.mean()
        return value * w, dout * w


def test_loss_as_a_bound_method_of_a_stateful_loss_object_is_reset_and_restored() -> None:
    x, w, b = affine_args()
    loss = AccumulatingCrossEntropy(np.array([0, 2, 1, 1, 0]))
    before = pickle.dumps(loss)
    result = check(cs.AffineInputBack(w, b), x, loss=loss.value_and_grad)
    assert result.ok, str(result)
    assert pickle.dumps(loss) == before
