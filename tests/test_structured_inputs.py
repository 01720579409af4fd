"""Value-and-gradient functions over a structure of parameters (`f(X, Y, parameters)` with a
dict, `f(X, [W, b])` with a list) and over Python numbers are checked leaf by leaf, each leaf on
its own row, the caller's structure left as it was."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import check


def sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


def two_layer_cost(X: np.ndarray, Y: np.ndarray, parameters: dict[str, np.ndarray],
                   wrong: str = "", prefix: str = "d") -> tuple[float, dict[str, np.ndarray]]:
    """A two-layer network's cross-entropy cost, as a course's notebook writes it: gradients
    keyed `dW1` (with `prefix="d"`) or `W1` (`prefix=""`)."""
    W1, b1, W2, b2 = (parameters[k] for k in ("W1", "b1", "W2", "b2"))
    m = X.shape[1]
    A1 = np.tanh(W1 @ X + b1)
    A2 = sigmoid(W2 @ A1 + b2)
    cost = float(-np.sum(Y * np.log(A2) + (1 - Y) * np.log(1 - A2)) / m)
    dZ2 = A2 - Y
    dZ1 = (W2.T @ dZ2) * (1 - A1**2)
    grads = {"W1": dZ1 @ X.T / m, "b1": dZ1.sum(axis=1, keepdims=True) / m,
             "W2": dZ2 @ A1.T / m, "b2": dZ2.sum(axis=1, keepdims=True) / m}
    if wrong:
        grads[wrong] = grads[wrong] * 1.01
    return cost, {f"{prefix}{k}": v for k, v in grads.items()}


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3, 5))
    Y = (rng.random((1, 5)) > 0.5).astype(float)
    parameters = {"W1": rng.normal(size=(4, 3)) * 0.5, "b1": 0.1 * rng.normal(size=(4, 1)),
                  "W2": rng.normal(size=(1, 4)) * 0.5, "b2": np.zeros((1, 1))}
    return X, Y, parameters


ROWS = {"X": "not differentiated", "Y": "not differentiated", "parameters.W1": "ok",
        "parameters.b1": "ok", "parameters.W2": "ok", "parameters.b2": "ok"}


@pytest.mark.parametrize("prefix", ["d", ""], ids=["keyed dW1", "keyed W1"])
@pytest.mark.parametrize("mode", ["auto", "full", "fast"])
def test_a_cost_over_a_parameters_dict_is_checked_leaf_by_leaf(prefix: str, mode: str) -> None:
    X, Y, parameters = data()
    before = {k: (v, v.tobytes()) for k, v in parameters.items()}

    def cost(X: Any, Y: Any, parameters: Any) -> Any:
        return two_layer_cost(X, Y, parameters, prefix=prefix)

    result = check(cost, X, Y, parameters, mode=mode)
    assert {e.name: e.status for e in result.entries} == ROWS, str(result)
    assert all(parameters[k] is v and v.tobytes() == b for k, (v, b) in before.items())

    def wrong(X: Any, Y: Any, parameters: Any) -> Any:
        return two_layer_cost(X, Y, parameters, wrong="b1", prefix=prefix)

    failed = check(wrong, X, Y, parameters, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["parameters.b1"], str(failed)


def test_a_leaf_without_a_gradient_is_an_error_row() -> None:
    X, Y, parameters = data()

    def forgets_b2(X: Any, Y: Any, parameters: Any) -> Any:
        cost, grads = two_layer_cost(X, Y, parameters)
        del grads["db2"]
        return cost, grads

    result = check(forgets_b2, X, Y, parameters)
    assert result.entry("parameters.b2").status == "error", str(result)
    assert result.entry("parameters.W1").status == "ok"


def affine_mse(X: np.ndarray, params: list[np.ndarray], slip: float = 1.0
               ) -> tuple[float, list[np.ndarray]]:
    W, b = params
    r = X @ W + b
    return float(0.5 * np.sum(r**2)), [X.T @ r, r.sum(axis=0) * slip]


def test_a_list_of_parameters_gets_its_gradients_in_a_list() -> None:
    rng = np.random.default_rng(1)
    X, params = rng.normal(size=(6, 4)), [rng.normal(size=(4, 2)), rng.normal(size=2)]

    def right(X: Any, params: Any) -> Any:
        return affine_mse(X, params)

    def wrong(X: Any, params: Any) -> Any:
        return affine_mse(X, params, slip=1.01)

    result = check(right, X, params, wrt=["params"])
    assert {e.name: e.status for e in result.entries} == {
        "X": "not differentiated", "params[0]": "ok", "params[1]": "ok"}, str(result)
    failed = check(wrong, X, params, wrt=["params"])
    assert [e.name for e in failed.entries if not e.ok] == ["params[1]"]


def test_python_numbers_are_the_point_checked() -> None:
    # J(x, theta) = theta * x: dJ/dx = theta, dJ/dtheta = x.
    def right(x: float, theta: float) -> tuple[float, tuple[float, float]]:
        return theta * x, (theta, x)

    def wrong(x: float, theta: float) -> tuple[float, tuple[float, float]]:
        return theta * x, (theta, 1.01 * x)

    result = check(right, 2.0, 4.0)
    assert {e.name: (e.status, e.dtype) for e in result.entries} == {
        "x": ("ok", "float"), "theta": ("ok", "float")}, str(result)
    assert [e.name for e in check(wrong, 2.0, 4.0).entries if not e.ok] == ["theta"]


def propagate(w: np.ndarray, b: float, X: np.ndarray, Y: np.ndarray, slip: float = 1.0
              ) -> tuple[dict[str, Any], float]:
    """Logistic regression's cost as a course writes it: gradients first, keyed dw and db."""
    m = X.shape[1]
    A = sigmoid(w.T @ X + b)
    cost = float(-np.sum(Y * np.log(A) + (1 - Y) * np.log(1 - A)) / m)
    dw = X @ (A - Y).T / m
    db = float(np.sum(A - Y) / m) * slip
    return {"dw": dw, "db": db}, cost


def test_gradients_first_keyed_d_name_of_each_argument() -> None:
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(3, 1)), 0.5
    X, Y = rng.normal(size=(3, 6)), (rng.random((1, 6)) > 0.5).astype(float)
    result = check(propagate, w, b, X, Y)
    assert {e.name: e.status for e in result.entries} == {
        "w": "ok", "b": "ok", "X": "not differentiated", "Y": "not differentiated"}, str(result)
    wrong = check(lambda w, b, X, Y: propagate(w, b, X, Y, slip=1.01), w, b, X, Y)
    assert [e.name for e in wrong.entries if not e.ok] == ["b"]


@pytest.mark.parametrize("container", [dict, list])
def test_the_universal_form_an_objective_over_one_structure(container: type) -> None:
    rng = np.random.default_rng(3)
    X, target = rng.normal(size=(6, 4)), rng.normal(size=(6, 2))
    values = [rng.normal(size=(4, 2)), rng.normal(size=2)]
    params = dict(zip("Wb", values)) if container is dict else list(values)

    def objective(p: Any, slip: float = 1.0) -> tuple[float, Any]:
        W, b = (p["W"], p["b"]) if isinstance(p, dict) else p
        r = X @ W + b - target
        grads = [X.T @ r, r.sum(axis=0) * slip]
        return float(0.5 * np.sum(r**2)), (dict(zip("Wb", grads)) if isinstance(p, dict)
                                           else grads)

    names = ["p.W", "p.b"] if container is dict else ["p[0]", "p[1]"]
    result = check(objective, params)
    assert {e.name: e.status for e in result.entries} == dict.fromkeys(names, "ok"), str(result)
    wrong = check(lambda p: objective(p, 1.01), params)
    assert [e.name for e in wrong.entries if not e.ok] == [names[1]]


def mse_wrt_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error returning d/dy_pred only: the first argument is the target."""
    r = y_pred - y_true
    return float(np.mean(r**2)), 2.0 * r / r.size


def test_a_gradient_assigned_by_shape_says_so_and_names_wrt() -> None:
    rng = np.random.default_rng(4)
    y_true, y_pred = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    result = check(mse_wrt_prediction, y_true, y_pred)
    assert not result.ok and result.entry("y_true").status == "FAIL"
    assert any("taken as y_true's" in n and "wrt=['y_pred']" in n for n in result.notes), (
        result.notes)
    fixed = check(mse_wrt_prediction, y_true, y_pred, wrt=["y_pred"])
    assert fixed.ok and not any("taken as" in n for n in fixed.notes)


class NotebookModel:
    """A model whose loss(X, y) returns gradients keyed dW1, db1 for its params W1, b1."""

    def __init__(self, slip: float = 1.0) -> None:
        rng = np.random.default_rng(5)
        self.params = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3)}
        self.slip = slip

    def loss(self, X: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        r = X @ self.params["W1"] + self.params["b1"] - y
        return float(0.5 * np.sum(r**2)), {"dW1": X.T @ r, "db1": r.sum(axis=0) * self.slip}


def test_a_model_whose_gradients_are_keyed_d_name_is_checked() -> None:
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    result = check(NotebookModel(), X, y)
    assert {e.name: e.status for e in result.entries if e.kind == "param"} == {
        "W1": "ok", "b1": "ok"}, str(result)
    assert [e.name for e in check(NotebookModel(1.01), X, y).entries if not e.ok] == ["b1"]


def test_a_refused_return_value_gets_only_the_hint_that_applies() -> None:
    def two_dicts(w: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"dw": w}, {"cost": float(np.sum(w))}

    with pytest.raises(Exception, match=r"got a dict; return \(loss, gradients\)") as info:
        check(two_dicts, np.ones(3))
    assert "(out, cache)" not in str(info.value)

    def out_and_cache(w: np.ndarray) -> tuple[np.ndarray, Any]:
        return w * 2.0, (w,)

    with pytest.raises(Exception, match=r"\(forward_fn, backward_fn\)"):
        check(out_and_cache, np.ones(3))


def test_an_integer_array_inside_a_structured_argument_has_its_row() -> None:
    X, Y, parameters = data()
    given = {**parameters, "layer_sizes": np.array([3, 4, 1])}

    def cost(X: Any, Y: Any, parameters: Any) -> Any:
        return two_layer_cost(X, Y, parameters)

    result = check(cost, X, Y, given)
    assert result.entry("parameters.layer_sizes").status == "integer input", str(result)
    assert result.ok
