"""`frozen=`: parameters the user declares frozen are listed as *frozen*, never perturbed and
never an error for lacking a gradient; a name that matches nothing is a usage error naming it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, check

MODES = ["full", "fast", "sample", "auto"]


class FrozenEmbedding:
    """A linear layer whose `E` (a pretrained table) gets no gradient: backward leaves it out,
    as a learner freezing it does."""

    def __init__(self, slip: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.params = {"E": rng.normal(size=(4, 4)), "W": rng.normal(size=(4, 3)),
                       "b": rng.normal(size=3)}
        self.grads: dict[str, np.ndarray] = {}
        self.slip = slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x, self.h = x, x @ self.params["E"]
        out: np.ndarray = self.h @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.h.T @ dout
        self.grads["b"] = dout.sum(axis=0) * self.slip
        dx: np.ndarray = dout @ self.params["W"].T @ self.params["E"].T
        return dx


@pytest.mark.parametrize("mode", MODES)
def test_a_frozen_parameter_is_listed_not_an_error(mode: str) -> None:
    x = np.random.default_rng(1).normal(size=(5, 4))
    layer = FrozenEmbedding()
    before = {k: (v, v.tobytes()) for k, v in layer.params.items()}
    unfrozen = check(layer, x, mode=mode)
    assert unfrozen.entry("E").status == "error"  # no gradient, and not declared frozen
    result = check(layer, x, frozen=["E"], mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "x": "ok", "E": "frozen", "W": "ok", "b": "ok"}, str(result)
    failed = check(FrozenEmbedding(slip=1.05), x, frozen=["E"], mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["b"], str(failed)
    assert all(layer.params[k] is v and v.tobytes() == b for k, (v, b) in before.items())


def test_frozen_leaves_of_a_parameters_argument() -> None:
    rng = np.random.default_rng(2)
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}

    def cost(X: Any, params: Any) -> Any:
        r = X @ params["W"] + params["b"]
        return 0.5 * np.sum(r**2), {"dW": X.T @ r}  # b is frozen: no gradient returned

    X = rng.normal(size=(4, 3))
    assert check(cost, X, params).entry("params.b").status == "error"
    result = check(cost, X, params, frozen=["params.b"])
    assert result.ok and result.entry("params.b").status == "frozen", str(result)


def test_unknown_frozen_names_are_a_usage_error_naming_them() -> None:
    x = np.ones((2, 4))
    with pytest.raises(GradcheckUsageError, match=r"'Emb', 'V' match no parameter.*E, W, b"):
        check(FrozenEmbedding(), x, frozen=["E", "Emb", "V"])
