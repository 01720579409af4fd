"""Value-and-gradient functions `f(*args) -> (loss, grads)`, and cs231n pairs with integer input.

The objective is the loss itself (a 0-d output gets the cotangent 1.0); gradients are matched
to arguments by position, shape or name, or as `wrt=` says; float arguments without a gradient
are held fixed and listed, integer ones pass through.
"""

from __future__ import annotations

import functools
from typing import Any

import cs231n_style as cs
import numpy as np
import pytest
from helpers import QUIET_PLUGINS, global_streams, rows

from example_nn import mse
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.options import MODES
from pytest_gradcheck.result import FAIL, INTEGER_INPUT, NOT_DIFFERENTIATED, OK, PASSED_THROUGH


def classification(rng: np.random.Generator, n: int = 5, c: int = 4) -> tuple[Any, Any]:
    return rng.normal(size=(n, c)), rng.integers(0, c, size=n)


def cases(rng: np.random.Generator) -> dict[str, tuple[Any, tuple[Any, ...], str]]:
    """name -> (function, arguments, the row a mutant of its first gradient fails)."""
    x, y = classification(rng)
    w, big_x = 0.3 * rng.normal(size=(4, 3)), rng.normal(size=(6, 4))
    seq = rng.normal(size=(2, 3, 4))
    labels = rng.integers(0, 4, size=(2, 3))
    mask = np.array([[True, True, False], [True, False, False]])
    return {
        "softmax_loss": (cs.softmax_loss, (x, y), "x"),
        "svm_loss": (cs.svm_loss, (x, y), "x"),
        "softmax_loss_naive": (cs.softmax_loss_naive,
                               (w, big_x, rng.integers(0, 3, size=6), 0.1), "W"),
        "temporal_softmax_loss": (cs.temporal_softmax_loss, (seq, labels, mask), "x"),
    }


def mutant(fn: Any, which: int = 0) -> Any:
    """`cs.mutant_value_and_grad` with the function's signature (functools.wraps), so that rows
    are named by argument as for the function itself."""
    return functools.update_wrapper(cs.mutant_value_and_grad(fn, which), fn)


NAMES = ["softmax_loss", "svm_loss", "softmax_loss_naive", "temporal_softmax_loss"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NAMES)
def test_losses_pass_and_their_mutants_fail_on_the_right_row(name: str, mode: str) -> None:
    rng = np.random.default_rng(3)
    fn, args, row = cases(rng)[name]
    saved = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    before = global_streams()

    good = check(fn, *args, mode=mode)
    bad = check(mutant(fn), *args, mode=mode)

    assert good.ok, good
    assert good.entry(row).status == OK
    assert not bad.ok
    assert [e.name for e in bad.entries if e.status == FAIL] == [row], bad
    assert global_streams() == before
    for a, b in zip(args, saved):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


def test_rows_name_arguments_and_say_what_was_not_differentiated() -> None:
    fn, args, _ = cases(np.random.default_rng(0))["softmax_loss_naive"]
    result = check(fn, *args)
    # reg, a Python float the function returns no gradient for, is held fixed like X.
    assert rows(result) == {"W": OK, "X": NOT_DIFFERENTIATED, "y": INTEGER_INPUT,
                            "reg": NOT_DIFFERENTIATED}
    fn, args, _ = cases(np.random.default_rng(0))["temporal_softmax_loss"]
    masked = check(fn, *args)
    assert rows(masked) == {"x": OK, "y": INTEGER_INPUT, "mask": INTEGER_INPUT}


def test_the_objective_is_the_loss_itself(rng: np.random.Generator) -> None:
    def half_square(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(0.5 * np.sum(x * x)), x.copy()

    x = rng.normal(size=(3, 4))
    result = check(half_square, x, mode="full")
    entry = result.entry("x")
    # The gradient of the loss, unscaled: no random cotangent multiplies it.
    assert entry.worst_index is not None
    assert entry.analytic == pytest.approx(x[entry.worst_index])
    assert entry.numeric == pytest.approx(x[entry.worst_index], rel=1e-6)


def test_one_gradient_belongs_to_the_first_argument_of_its_shape(rng: np.random.Generator) -> None:
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    assert rows(check(mse, pred, target)) == {"pred": OK, "target": NOT_DIFFERENTIATED}


def test_tuple_gradients_follow_the_float_arguments_in_order(rng: np.random.Generator) -> None:
    def weighted(a: np.ndarray, k: int, b: np.ndarray) -> tuple[float, tuple[Any, ...]]:
        return float(np.sum(a * b) * k), (b * k, a * k)

    a, b = rng.normal(size=3), rng.normal(size=3)
    assert rows(check(weighted, a, 2, b)) == {"a": OK, "k": PASSED_THROUGH, "b": OK}
    swapped = check(lambda a, k, b: (weighted(a, k, b)[0], weighted(a, k, b)[1][::-1]), a, 2, b)
    assert rows(swapped) == {"a": FAIL, "k": PASSED_THROUGH, "b": FAIL}


def test_dict_gradients_go_by_argument_name(rng: np.random.Generator) -> None:
    def loss(w: np.ndarray, x: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        return float(np.sum((x @ w) ** 2)), {"w": 2 * x.T @ (x @ w)}

    w, x = rng.normal(size=(3, 2)), rng.normal(size=(4, 3))
    assert rows(check(loss, w, x)) == {"w": OK, "x": NOT_DIFFERENTIATED}


def test_wrt_names_the_arguments_by_position_or_name(rng: np.random.Generator) -> None:
    def loss(x: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
        return float(np.sum(x @ w)), np.ones((4, 1)) @ w.sum(axis=1, keepdims=True).T

    x, w = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    # Without wrt the gradient (shape 4x3) goes to x, the only argument of its shape.
    assert rows(check(loss, x, w)) == {"x": OK, "w": NOT_DIFFERENTIATED}
    assert rows(check(loss, x, w, wrt="x")) == {"x": OK, "w": NOT_DIFFERENTIATED}
    assert rows(check(loss, x, w, wrt=[0])) == {"x": OK, "w": NOT_DIFFERENTIATED}

    def both(x: np.ndarray, w: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        return float(np.sum(x * w)), (w, x)

    y = rng.normal(size=(4, 3))
    assert rows(check(both, x, y, wrt=["w", "x"])) == {"x": FAIL, "w": FAIL}
    assert rows(check(both, x, y, wrt=["x", "w"])) == {"x": OK, "w": OK}


def test_ambiguous_gradients_are_a_usage_error_naming_wrt(rng: np.random.Generator) -> None:
    def two_for_three(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[float, Any]:
        return float(np.sum(a * b * c)), (b * c, a * c)

    a, b, c = (rng.normal(size=3) for _ in range(3))
    with pytest.raises(GradcheckUsageError, match=r"2 gradient\(s\) for 3 .*\(a, b, c\).*wrt="):
        check(two_for_three, a, b, c)
    assert rows(check(two_for_three, a, b, c, wrt=["a", "b"])) == {
        "a": OK, "b": OK, "c": NOT_DIFFERENTIATED
    }
    with pytest.raises(GradcheckUsageError, match=r"no float-array argument has that shape.*wrt"):
        check(lambda a: (float(np.sum(a)), np.ones(4)), a)
    with pytest.raises(GradcheckUsageError, match=r"wrt=\['z'\]: 'z' is no argument"):
        check(two_for_three, a, b, c, wrt=["z"])


def test_bad_return_values_are_usage_errors(rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 2))
    with pytest.raises(GradcheckUsageError, match=r"must return \(loss, gradients\).*pair"):
        check(lambda x: x * 2, x)
    with pytest.raises(GradcheckUsageError, match=r"one real number, got an array"):
        check(lambda x: (x, x), x)
    with pytest.raises(GradcheckUsageError, match=r"'q', which is no argument name"):
        check(lambda x: (1.0, {"q": x}), x)


def test_wrt_is_for_functions_only(rng: np.random.Generator) -> None:
    layer = cs.AffineInputBack(rng.normal(size=(3, 2)), np.zeros(2))
    with pytest.raises(GradcheckUsageError, match="wrt= applies to value-and-gradient"):
        check(layer, rng.normal(size=(4, 3)), wrt=0)


def test_extra_loss_receives_the_arguments(rng: np.random.Generator) -> None:
    def data_loss(w: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
        # The gradient includes an L2 term the returned value leaves out.
        return float(np.sum(x @ w)), x.sum(axis=0)[:, None] * np.ones(w.shape) + w

    seen: list[int] = []

    def l2(w: np.ndarray, x: np.ndarray) -> float:
        seen.append(len(x))
        return float(0.5 * np.sum(w * w))

    w, x = rng.normal(size=(3, 2)), rng.normal(size=(4, 3))
    assert not check(data_loss, w, x).ok
    assert check(data_loss, w, x, extra_loss=l2).ok
    assert seen and set(seen) == {4}


@pytest.mark.parametrize("mode", MODES)
def test_word_embedding_pair_with_integer_input(mode: str) -> None:
    rng = np.random.default_rng(5)
    idx, w = rng.integers(0, 5, size=(2, 4)), rng.normal(size=(5, 3))
    idx[0, :2] = 1  # a repeated index: its gradient rows accumulate
    pair = (cs.word_embedding_forward, cs.word_embedding_backward)
    good = check(pair, idx, w, mode=mode)
    bad = check((cs.word_embedding_forward, cs.mutant_backward(cs.word_embedding_backward, 0)),
                idx, w, mode=mode)
    assert rows(good) == {"x": INTEGER_INPUT, "W": OK}
    assert rows(bad) == {"x": INTEGER_INPUT, "W": FAIL}


FUNCTIONS_TEST = """
import functools
import numpy as np
import cs231n_style as cs

def test_softmax_loss(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(cs.softmax_loss, rng.normal(size=(5, 4)), rng.integers(0, 4, size=5))

def test_softmax_loss_naive_wrong(gradcheck):
    rng = np.random.default_rng(0)
    W, X, y = rng.normal(size=(4, 3)), rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    wrong = cs.mutant_value_and_grad(cs.softmax_loss_naive)
    gradcheck(functools.update_wrapper(wrong, cs.softmax_loss_naive), W, X, y, 0.1)

def test_ambiguous(gradcheck):
    a = np.ones(3)
    gradcheck(lambda a, b, c: (float(np.sum(a * b * c)), (b * c, a * c)), a, a, a)
"""


def test_functions_through_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_functions=FUNCTIONS_TEST)
    result = pytester.runpytest(*QUIET_PLUGINS)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*gradcheck softmax_loss_naive: FAILED*",
        "*X*input*not differentiated*",
        "*W*input*FAIL*",
    ])
    result.stdout.fnmatch_lines(["*returned 2 gradient(s) for 3 float-array argument(s)*wrt=*"])
