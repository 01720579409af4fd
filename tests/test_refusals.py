"""A refused shape gets the closest rule and the call that would check it, and no hint for a
shape whose condition the code does not meet."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check


def refused(obj: Any, *args: Any, **options: Any) -> str:
    with pytest.raises(GradcheckUsageError) as info:
        check(obj, *args, **options)
    return str(info.value)


class CostAndGrad:
    def cost(self, theta: Any) -> float:
        return float(np.sum(theta**2))

    def grad(self, theta: Any) -> Any:
        return 2 * theta


class ForwardAndBackwardPass:
    def forward(self, x: Any) -> Any:
        return 2 * x

    def backward_pass(self, d: Any) -> Any:
        return 2 * d


def test_an_object_with_cost_and_grad_gets_the_universal_lambda() -> None:
    message = refused(CostAndGrad(), np.ones(3))
    assert "check(lambda p: (obj.cost(p), obj.grad(p)), params)" in message
    assert "(forward_fn, backward_fn)" not in message
    # ... which works as said.
    obj = CostAndGrad()
    assert check(lambda p: (obj.cost(p), obj.grad(p)), np.ones(3)).ok


def test_forward_without_backward_names_the_method_it_has() -> None:
    message = refused(ForwardAndBackwardPass(), np.ones((2, 2)))
    assert "backward_pass" in message and "pytest_gradcheck_adapt" in message
    assert "(forward_fn, backward_fn)" not in message


def test_data_first_is_said_to_be_data() -> None:
    message = refused(np.ones(3), np.ones(3))
    assert "is data" in message and "check(f, *args)" in message


def test_a_dict_of_gradients_first_gets_no_out_cache_hint() -> None:
    def propagate_bad(w: Any) -> Any:
        return {"dw": 2 * w}, "done"

    message = refused(propagate_bad, np.ones(3))
    assert "(out, cache)" not in message and "(gradients, loss)" in message


def test_an_array_and_a_cache_get_the_pair_hint() -> None:
    def affine_forward(x: Any, w: Any) -> Any:
        return x @ w, (x, w)

    message = refused(affine_forward, np.ones((2, 3)), np.ones((3, 2)))
    assert "pass the pair (forward_fn, backward_fn)" in message


def test_options_for_another_shape_name_the_shape() -> None:
    class Layer:
        def __init__(self) -> None:
            self.W = np.ones((2, 2))

        def forward(self, x: Any) -> Any:
            return x @ self.W

        def backward(self, d: Any) -> Any:
            self.dW = np.zeros((2, 2))
            return d @ self.W.T

    message = refused(Layer(), np.ones((1, 2)), grads=[1])
    assert "grads= applies to value-and-gradient functions only" in message
    assert "checked as a layer" in message
