"""Value-and-gradient functions that return more than (loss, gradients): the loss first or
last, gradients as a structure or one after another, values that are no gradient left over and
reported; `grads=` says where the gradients are when that reading cannot tell."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check

MODES = ["full", "fast", "sample", "auto"]


def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    return rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)


def parts(X: np.ndarray, W: np.ndarray, b: np.ndarray, slip: float
          ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    r = X @ W + b
    return float(0.5 * np.sum(r**2)), X.T @ r, r.sum(axis=0) * slip, r


def loss_grads_extra(slip: float) -> Any:
    def f(X: Any, W: Any, b: Any) -> Any:
        loss, dW, db, r = parts(X, W, b, slip)
        return loss, dW, db, r  # r: the output, kept for plotting, no gradient
    return f


def grads_then_loss(slip: float) -> Any:
    def f(X: Any, W: Any, b: Any) -> Any:
        loss, dW, db, _ = parts(X, W, b, slip)
        return dW, db, loss
    return f


def dict_then_extras(slip: float) -> Any:
    def f(X: Any, W: Any, b: Any) -> Any:
        loss, dW, db, r = parts(X, W, b, slip)
        return loss, {"dW": dW, "db": db}, r, 3
    return f


@pytest.mark.parametrize("make", [loss_grads_extra, grads_then_loss, dict_then_extras])
@pytest.mark.parametrize("mode", MODES)
def test_common_layouts_are_read_without_options(mode: str, make: Any) -> None:
    X, W, b = data()
    before = [a.tobytes() for a in (X, W, b)]
    result = check(make(1.0), X, W, b, wrt=["W", "b"], mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "X": "not differentiated", "W": "ok", "b": "ok"}, str(result)
    failed = check(make(0.5), X, W, b, wrt=["W", "b"], mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["b"], str(failed)
    assert [a.tobytes() for a in (X, W, b)] == before


def test_left_over_values_are_reported() -> None:
    X, W, b = data()
    result = check(loss_grads_extra(1.0), X, W, b, wrt=["W", "b"])
    assert any("position 3 (an array of shape (5, 2)) left out of the check" in n
               for n in result.notes), result.notes


def state_between(slip: float) -> Any:
    """The hidden state returned between the loss and the gradients: the default reading takes
    it as W's gradient (of another shape), and says what to pass."""
    def f(X: Any, W: Any, b: Any) -> Any:
        loss, dW, db, r = parts(X, W, b, slip)
        return loss, r, dW, db
    return f


@pytest.mark.parametrize("mode", MODES)
def test_grads_option_says_where_the_gradients_are(mode: str) -> None:
    X, W, b = data()
    with pytest.raises(GradcheckUsageError, match=r"grads=\[2, 3\]"):
        check(state_between(1.0), X, W, b, wrt=["W", "b"], mode=mode)
    result = check(state_between(1.0), X, W, b, wrt=["W", "b"], grads=[2, 3], mode=mode)
    assert result.ok, str(result)
    assert any("left out of the check" in n for n in result.notes)
    failed = check(state_between(0.5), X, W, b, wrt=["W", "b"], grads=[2, 3], mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["b"], str(failed)


def test_no_loss_first_or_last_names_the_fix() -> None:
    X, W, b = data()

    def f(X: Any, W: Any, b: Any) -> Any:
        loss, dW, db, _ = parts(X, W, b, 1.0)
        return dW, loss, db

    with pytest.raises(GradcheckUsageError, match=r"first nor its last.*grads="):
        check(f, X, W, b)
    with pytest.raises(GradcheckUsageError, match=r"grads=\[0, 5\].*positions 0 to 2"):
        check(f, X, W, b, wrt=["W", "b"], grads=[0, 5])
    assert check(f, X, W, b, wrt=["W", "b"], grads=[0, 2]).ok


def test_a_first_value_that_is_a_dict_gets_no_out_cache_hint() -> None:
    def f(w: Any) -> Any:
        return {"dw": 2 * w}, {"loss": float(np.sum(w**2))}

    with pytest.raises(GradcheckUsageError) as info:
        check(f, np.ones(3))
    assert "(out, cache)" not in str(info.value)
