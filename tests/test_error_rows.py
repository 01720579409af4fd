"""One unusable gradient (missing, never written, wrong-shaped, not numbers, complex, unreadable)
is an `error` row with its message; every other row is still judged and shown, and the check
fails. A backward that raises as a whole stays a usage error: nothing can be judged."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from helpers import QUIET_PLUGINS, rows, x_batch

from pytest_gradcheck import GradcheckError, GradcheckUsageError, check
from pytest_gradcheck.options import MODES
from pytest_gradcheck.result import ERROR


class Affine:
    """x @ W + b with a bias of shape (C,); `bias_grad` decides what backward stores as db."""

    def __init__(self, bias_grad: Any = None, slip: float = 1.0) -> None:
        rng = np.random.default_rng(7)
        self.params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
        self.grads: dict[str, Any] = {}
        self.bias_grad = bias_grad
        self.slip = slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.x.T @ dout * self.slip
        db = dout.sum(axis=0)
        self.grads["b"] = db if self.bias_grad is None else self.bias_grad(db)
        return dout @ self.params["W"].T


def row_keepdims(db: np.ndarray) -> np.ndarray:
    return db[None, :]  # (1, C) for a (C,) bias: broadcastable, still wrong


def test_a_1xC_gradient_for_a_C_parameter_is_an_error_row_never_broadcast() -> None:
    result = check(Affine(row_keepdims), x_batch(5, 4))
    assert not result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": ERROR}
    b = result.entry("b")
    assert b.message is not None
    assert "shape (1, 3), expected (3,)" in b.message and "never broadcast" in b.message
    assert b.max_rel_error is None and b.checked == 0
    assert result.failed_entries == [b]


def test_other_rows_are_judged_next_to_an_error_row() -> None:
    result = check(Affine(row_keepdims, slip=1.01), x_batch(5, 4))
    assert rows(result) == {"x": "ok", "W": "FAIL", "b": ERROR}
    text = str(result)
    assert "where W is wrong" in text  # the failure map of the judged row
    assert "where b is wrong" not in text  # none for the error row
    assert "  error: gradient of parameter 'b' has shape (1, 3), expected (3,)" in text


@pytest.mark.parametrize("mode", MODES)
def test_error_rows_in_every_mode(mode: str) -> None:
    result = check(Affine(lambda db: "pending", slip=1.01), x_batch(5, 4), mode=mode)
    assert rows(result) == {"x": "ok", "W": "FAIL", "b": ERROR}
    assert "not an array of numbers" in str(result.entry("b").message)


@pytest.mark.parametrize(
    ("bias_grad", "needle"),
    [
        (lambda db: None, "has no gradient after backward"),
        (lambda db: db + 0j, "is complex"),
        (lambda db: [["a", "b", "c"]], "not an array of numbers"),
    ],
    ids=["missing", "complex", "strings"],
)
def test_each_kind_of_unusable_gradient_is_a_row(bias_grad: Any, needle: str) -> None:
    result = check(Affine(bias_grad), x_batch(5, 4))
    assert rows(result) == {"x": "ok", "W": "ok", "b": ERROR}
    assert needle in str(result.entry("b").message)


def test_a_gradient_that_cannot_be_read_is_an_error_row() -> None:
    class Hook:
        @staticmethod
        def pytest_gradcheck_layer_parameters(layer: Any, path: str) -> Any:
            from pytest_gradcheck import Param

            def grad() -> Any:
                if "b" in layer.grads:  # readable before backward, not after
                    raise RuntimeError("gradient buffer was freed")
                return None

            return [Param("W", lambda: layer.params["W"], None, lambda: layer.grads.get("W")),
                    Param("b", lambda: layer.params["b"], None, grad)]

    from pytest_gradcheck import register, unregister

    register(Hook)
    try:
        result = check(Affine(), x_batch(5, 4))
    finally:
        unregister(Hook)
    assert rows(result) == {"x": "ok", "W": "ok", "b": ERROR}
    assert "raised RuntimeError: gradient buffer was freed" in str(result.entry("b").message)


def test_only_error_rows_is_still_a_result_not_nothing_to_check() -> None:
    result = check(Affine(row_keepdims), x_batch(5, 4), params=["b"], inputs=False)
    assert not result.ok
    assert rows(result) == {"W": "not selected", "b": ERROR}


def test_the_layer_is_left_as_it_was_after_an_error_row() -> None:
    layer = Affine(row_keepdims)
    before = {k: v.copy() for k, v in layer.params.items()}
    check(layer, x_batch(5, 4))
    for k, v in before.items():
        np.testing.assert_array_equal(layer.params[k], v)
    assert layer.grads == {}  # backward's writes were undone


def test_raise_if_failed_raises_with_the_table_and_the_message() -> None:
    result = check(Affine(row_keepdims), x_batch(5, 4))
    with pytest.raises(GradcheckError, match=r"(?s)b +param +3 .*error.*shape \(1, 3\)"):
        result.raise_if_failed()


def test_json_row_has_status_error_and_the_message() -> None:
    entry = check(Affine(row_keepdims), x_batch(5, 4)).to_dict()["entries"][-1]
    assert entry["status"] == "error" and "shape (1, 3)" in entry["message"]
    assert json.loads(json.dumps(entry)) == entry


class RaisingBackward(Affine):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise RuntimeError("cache was cleared")


def test_a_backward_that_raises_stays_a_usage_error() -> None:
    with pytest.raises(GradcheckUsageError, match="backward raised RuntimeError"):
        check(RaisingBackward(), x_batch(5, 4))


def test_fixture_fails_with_the_table_and_json_keeps_the_row(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_rows="""
        import numpy as np

        class Affine:
            def __init__(self):
                self.W = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
                self.b = np.zeros(3)

            def forward(self, x):
                self.x = x
                return x @ self.W + self.b

            def backward(self, dout):
                self.dW = self.x.T @ dout
                self.db = dout.sum(axis=0, keepdims=True)
                return dout @ self.W.T

        def test_affine(gradcheck):
            gradcheck(Affine(), np.ones((2, 4)))
        """
    )
    path = pytester.path / "out.json"
    result = pytester.runpytest(*QUIET_PLUGINS, f"--gradcheck-json={path}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "gradcheck Affine: FAILED*",
            "  W *param*ok",
            "  b *param*3 *error",
            "  error: gradient of parameter 'b' has shape (1, 3), expected (3,)*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    (entry,) = [e for e in json.loads(path.read_text())["results"][0]["entries"]
                if e["name"] == "b"]
    assert entry["status"] == "error" and "(1, 3)" in entry["message"]
