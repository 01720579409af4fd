"""Nielsen-style networks: `backprop(x, y) -> (nabla_b, nabla_w)` matched by structure to the
lists `biases` and `weights`, through the quadratic cost, a `cost` object's `fn(a, y)`, or
`loss=`; one line each, every mode, the network left as it was."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from nielsen_style import Network, Network2

from pytest_gradcheck import GradcheckUsageError, check

MODES = ["full", "fast", "sample", "auto"]
ROWS = ["biases[0]", "biases[1]", "biases[2]", "weights[0]", "weights[1]", "weights[2]"]


def point() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(3, 1)), rng.random((2, 1))


def state(net: Network) -> list[tuple[Any, bytes]]:
    return [(a, a.tobytes()) for a in [*net.biases, *net.weights]]


@pytest.mark.parametrize("cls", [Network, Network2])
@pytest.mark.parametrize("mode", MODES)
def test_network_backprop_is_checked_as_written(mode: str, cls: type) -> None:
    x, y = point()
    net = cls([3, 5, 4, 2])
    before, lists = state(net), (net.biases, net.weights)
    result = check(net, x, y, mode=mode)
    assert {e.name: e.status for e in result.entries} == {
        "x": "not differentiated", "y": "not differentiated", **dict.fromkeys(ROWS, "ok")
    }, str(result)
    assert (net.biases, net.weights) == lists and net.biases is lists[0]
    assert all(a is b and a.tobytes() == bits
               for (a, bits), b in zip(before, [*net.biases, *net.weights]))
    failed = check(cls([3, 5, 4, 2], slip=True), x, y, mode=mode)
    assert [e.name for e in failed.entries if not e.ok] == ["biases[2]"], str(failed)


def test_the_objective_is_said_in_a_note() -> None:
    x, y = point()
    assert any("quadratic cost" in n for n in check(Network([3, 2]), x, y).notes)
    assert any("cost.fn(a, y)" in n for n in check(Network2([3, 2]), x, y).notes)


def test_another_cost_through_loss() -> None:
    # The quadratic network checked through the cross-entropy cost fails where it differs,
    # and passes through its own cost given as loss=.
    x, y = point()

    def quadratic(out: Any) -> float:
        return float(0.5 * np.sum((out - y) ** 2))

    assert check(Network([3, 4, 2]), x, y, loss=quadratic).ok
    cross = check(Network([3, 4, 2]), x, y,
                  loss=lambda a: float(np.sum(-y * np.log(a) - (1 - y) * np.log(1 - a))))
    assert not cross.ok


class Square:
    """Two containers of the same structure: backprop's order cannot be told by shape."""

    def __init__(self, slip: float = 1.0) -> None:
        rng = np.random.default_rng(0)
        self.left = [rng.normal(size=(2, 2))]
        self.right = [rng.normal(size=(2, 2))]
        self.slip = slip

    def feedforward(self, x: Any) -> Any:
        return self.right[0] @ (self.left[0] @ x)

    def backprop(self, x: Any, y: Any) -> Any:
        h = self.left[0] @ x
        d = self.right[0] @ h - y
        return [(self.right[0].T @ d) @ x.T * self.slip], [d @ h.T]


def test_ambiguous_structures_name_wrt() -> None:
    x, y = np.ones((2, 1)), np.zeros((2, 1))
    with pytest.raises(GradcheckUsageError, match=r"left and right.*wrt="):
        check(Square(), x, y)
    assert check(Square(), x, y, wrt=["left", "right"]).ok
    failed = check(Square(slip=1.1), x, y, wrt=["left", "right"])
    assert [e.name for e in failed.entries if not e.ok] == ["left[0]"], str(failed)


@pytest.mark.parametrize("mode", MODES)
def test_optimizer_state_beside_the_parameters(mode: str) -> None:
    """Momentum velocities shaped like the weights: wrt= names the parameter containers, as
    the refusal says; the velocities are listed as not differentiated, never perturbed."""
    x, y = point()
    net = Network([3, 4, 2])
    net.velocity = [np.full_like(w, 0.5) for w in net.weights]  # type: ignore[attr-defined]
    with pytest.raises(GradcheckUsageError, match=r"wrt=\['biases', 'weights'\]"):
        check(net, x, y, mode=mode)
    result = check(net, x, y, wrt=["biases", "weights"], mode=mode)
    assert result.ok, str(result)
    assert result.entry("velocity[1]").status == "not differentiated"
    assert all(np.all(v == 0.5) for v in net.velocity)  # type: ignore[attr-defined]


def test_a_container_without_gradient_names_frozen() -> None:
    x, y = point()
    net = Network([3, 4, 2])
    net.scale = [np.ones((2, 1))]  # type: ignore[attr-defined]
    result = check(net, x, y)
    assert result.entry("scale[0]").status == "error"
    assert "frozen=['scale[0]']" in (result.entry("scale[0]").message or "")
    assert check(net, x, y, frozen=["scale*"]).ok
