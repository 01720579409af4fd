"""Layer conventions the checker understands without any configuration.

Each test writes a small layer in one convention and checks that the checker finds its
parameters and gradients (the rows of the report), that a correct layer passes and that a wrong
gradient in that convention is caught. Usage errors (missing, wrong-shape or raising gradients)
must name the layer and the parameter, from `check()` and, as a clean failure, from the fixture.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest
from helpers import failure_section, rows, weights, x_batch

from example_nn import BatchNorm1d, LayerNorm, Linear, ReLU, Sequential, Tanh
from pytest_gradcheck import GradcheckUsageError, check
from pytest_gradcheck.modes import ELEMENT_NOISE_EVALUATIONS

# ---------------------------------------------------------------------------------------------
# params/grads dicts (cs231n, example_nn)
# ---------------------------------------------------------------------------------------------


class DictAffine:
    """`params`/`grads` dicts; grads filled only by backward."""

    def __init__(self, bug: bool = False) -> None:
        self.params = {"W": weights((3, 2)), "b": weights((2,), 2)}
        self.grads: dict[str, np.ndarray] = {}
        self.bug = bug

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0) * (1.5 if self.bug else 1.0)
        return dout @ self.params["W"].T


def test_params_grads_dicts() -> None:
    result = check(DictAffine(), x_batch(4, 3))
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}
    assert result.entry("W").checked == 6


def test_params_grads_dicts_wrong_gradient_is_caught() -> None:
    result = check(DictAffine(bug=True), x_batch(4, 3))
    assert rows(result) == {"x": "ok", "W": "ok", "b": "FAIL"}


# ---------------------------------------------------------------------------------------------
# parameters/gradients dicts with running statistics
# ---------------------------------------------------------------------------------------------


class DictNorm:
    """`parameters`/`gradients`; running statistics live in `parameters` without a gradient."""

    def __init__(self, prefilled: bool, bug: bool = False) -> None:
        self.parameters = {
            "gamma": 1.0 + 0.1 * weights((3,)),
            "beta": weights((3,), 2),
            "running_mean": np.zeros(3),
            "running_var": np.ones(3),
        }
        self.gradients: dict[str, np.ndarray] = (
            {"gamma": np.zeros(3), "beta": np.zeros(3)} if prefilled else {}
        )
        self.bug = bug

    def forward(self, x: np.ndarray) -> np.ndarray:
        p = self.parameters
        mean, var = x.mean(axis=0), x.var(axis=0)
        p["running_mean"] = 0.9 * p["running_mean"] + 0.1 * mean
        p["running_var"] *= 0.9
        p["running_var"] += 0.1 * var
        self.inv = 1.0 / np.sqrt(var + 1e-5)
        self.xhat = (x - mean) * self.inv
        return p["gamma"] * self.xhat + p["beta"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.gradients["gamma"] = (dout * self.xhat).sum(axis=0) * (1.01 if self.bug else 1.0)
        self.gradients["beta"] = dout.sum(axis=0)
        dxhat = dout * self.parameters["gamma"]
        return self.inv * (
            dxhat - dxhat.mean(axis=0) - self.xhat * (dxhat * self.xhat).mean(axis=0)
        )


@pytest.mark.parametrize("prefilled", [True, False], ids=["grads-prefilled", "grads-by-backward"])
def test_parameters_gradients_running_stats_not_differentiated(prefilled: bool) -> None:
    layer = DictNorm(prefilled)
    result = check(layer, x_batch(6, 3))
    assert result.ok
    # never dropped, never perturbed, always listed
    assert rows(result) == {
        "x": "ok",
        "gamma": "ok",
        "beta": "ok",
        "running_mean": "not differentiated",
        "running_var": "not differentiated",
    }
    assert result.entry("running_mean").checked == 0
    assert result.entry("running_var").shape == (3,)
    assert "running_mean" in str(result) and "not differentiated" in str(result)
    # x (18) + gamma (3) + beta (3) perturbed both ways (24 elements: full mode outright), plus
    # the setup passes, the noise measured and the evaluations made twice (7 of 64)
    assert result.forward_calls < 2 * (18 + 3 + 3) + ELEMENT_NOISE_EVALUATIONS + 12


def test_parameters_gradients_running_stats_never_perturbed() -> None:
    seen: list[np.ndarray] = []

    class Spy(DictNorm):
        def forward(self, x: np.ndarray) -> np.ndarray:
            seen.append(self.parameters["running_var"].copy())
            return super().forward(x)

    layer = Spy(prefilled=False)
    before = {k: v.copy() for k, v in layer.parameters.items()}
    check(layer, x_batch(6, 3))
    # After the first pass and the decoy, every forward starts from the same running
    # statistics: they are neither perturbed nor left to drift with forward's in-place updates.
    assert len(seen) > 20
    assert all(s.tobytes() == seen[2].tobytes() for s in seen[2:])
    for k, v in before.items():
        assert layer.parameters[k].tobytes() == v.tobytes()


class EmaCentre:
    """out = gamma * (x - running_mean), the running mean updated in place from x first."""

    def __init__(self) -> None:
        self.parameters = {"gamma": np.array([1.5, -0.5, 2.0]), "running_mean": np.ones(3)}
        self.gradients: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        rm = self.parameters["running_mean"]
        rm += 0.1 * (x.mean(axis=0) - rm)
        self.centred = x - rm
        return self.parameters["gamma"] * self.centred

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.gradients["gamma"] = (dout * self.centred).sum(axis=0)
        d = dout * self.parameters["gamma"]
        return d - 0.1 * d.mean(axis=0)


def test_running_stats_updated_in_place_and_used_in_output() -> None:
    # Each evaluation must see the same running mean; if it drifted from one forward to the
    # next the outputs would disagree (and be misreported as an unreset random source).
    layer = EmaCentre()
    before = layer.parameters["running_mean"].copy()
    result = check(layer, x_batch(5, 3))
    assert result.ok
    assert rows(result) == {"x": "ok", "gamma": "ok", "running_mean": "not differentiated"}
    assert layer.parameters["running_mean"].tobytes() == before.tobytes()


def test_parameters_gradients_wrong_gradient_is_caught() -> None:
    result = check(DictNorm(prefilled=False, bug=True), x_batch(6, 3))
    assert rows(result)["gamma"] == "FAIL"
    assert rows(result)["beta"] == "ok"


# ---------------------------------------------------------------------------------------------
# Attribute pairs
# ---------------------------------------------------------------------------------------------


def make_attr_layer(pname: str, bname: str, bug: str | None = None) -> Any:
    """A dense layer storing parameters as attributes `pname`/`bname`, grads as d<name>."""

    class AttrDense:
        def __init__(self) -> None:
            setattr(self, pname, weights((3, 2)))
            setattr(self, bname, weights((2,), 2))

        def forward(self, x: np.ndarray) -> np.ndarray:
            self.x = x
            return np.tanh(x @ getattr(self, pname) + getattr(self, bname))

        def backward(self, dout: np.ndarray) -> np.ndarray:
            dz = dout * (1.0 - np.tanh(self.x @ getattr(self, pname) + getattr(self, bname)) ** 2)
            dw = self.x.T @ dz
            db = dz.sum(axis=0)
            if bug == pname:
                dw = dw * 1.01
            if bug == bname:
                db = db[::-1].copy()
            setattr(self, "d" + pname, dw)
            setattr(self, "d" + bname, db)
            return dz @ getattr(self, pname).T

    return AttrDense()


ATTR_PAIRS = [("W", "b"), ("gamma", "beta"), ("weights", "biases"), ("weight", "bias")]


@pytest.mark.parametrize(("pname", "bname"), ATTR_PAIRS, ids=[p for p, _ in ATTR_PAIRS])
def test_attribute_pairs(pname: str, bname: str) -> None:
    result = check(make_attr_layer(pname, bname), x_batch(4, 3))
    assert result.ok
    assert rows(result) == {"x": "ok", pname: "ok", bname: "ok"}


@pytest.mark.parametrize(("pname", "bname"), ATTR_PAIRS, ids=[p for p, _ in ATTR_PAIRS])
def test_attribute_pairs_wrong_gradient_is_caught(pname: str, bname: str) -> None:
    assert rows(check(make_attr_layer(pname, bname, bug=pname), x_batch(4, 3)))[pname] == "FAIL"
    assert rows(check(make_attr_layer(pname, bname, bug=bname), x_batch(4, 3)))[bname] == "FAIL"


# ---------------------------------------------------------------------------------------------
# nnfs style: forward(inputs, training) -> None, self.output; backward(dvalues) -> None
# ---------------------------------------------------------------------------------------------


class NnfsDense:
    def __init__(self, n_in: int, n_out: int, l2: float = 0.0) -> None:
        self.weights = 0.5 * weights((n_in, n_out))
        self.biases = np.zeros((1, n_out)) + 0.1
        self.l2 = l2

    def forward(self, inputs: np.ndarray, training: bool) -> None:
        self.inputs = inputs
        self.output = inputs @ self.weights + self.biases

    def backward(self, dvalues: np.ndarray) -> None:
        self.dweights = self.inputs.T @ dvalues + 2 * self.l2 * self.weights
        self.dbiases = np.sum(dvalues, axis=0, keepdims=True)
        self.dinputs = dvalues @ self.weights.T


class NnfsDropout:
    """nnfs dropout: numpy's global RNG, and a real difference between training and not."""

    def __init__(self, rate: float, scale_bug: bool = False) -> None:
        self.rate = 1 - rate
        self.scale_bug = scale_bug

    def forward(self, inputs: np.ndarray, training: bool) -> None:
        self.inputs = inputs
        if not training:
            self.output = inputs.copy()
            return
        self.binary_mask = np.random.binomial(1, self.rate, size=inputs.shape) / self.rate
        self.output = inputs * self.binary_mask

    def backward(self, dvalues: np.ndarray) -> None:
        mask = (self.binary_mask > 0) if self.scale_bug else self.binary_mask
        self.dinputs = dvalues * mask


def test_nnfs_dense() -> None:
    result = check(NnfsDense(3, 2), x_batch(4, 3))
    assert result.ok
    assert rows(result) == {"inputs": "ok", "weights": "ok", "biases": "ok"}
    assert result.entry("biases").shape == (1, 2)
    assert any("training=True" in n for n in result.notes)


def test_nnfs_dense_l2_needs_extra_loss() -> None:
    layer = NnfsDense(3, 2, l2=0.1)
    assert rows(check(layer, x_batch(4, 3)))["weights"] == "FAIL"
    result = check(layer, x_batch(4, 3), extra_loss=lambda lay: lay.l2 * np.sum(lay.weights**2))
    assert result.ok


def test_nnfs_dropout_is_checked_in_training() -> None:
    result = check(NnfsDropout(0.3), x_batch(8, 5))
    assert result.ok
    assert rows(result) == {"inputs": "ok"}
    # the buggy one is only wrong when the mask is applied, i.e. with training=True
    assert rows(check(NnfsDropout(0.3, scale_bug=True), x_batch(8, 5)))["inputs"] == "FAIL"


# ---------------------------------------------------------------------------------------------
# Accumulating gradients, lazily created parameters
# ---------------------------------------------------------------------------------------------


class Accumulating:
    """backward adds into existing gradient buffers (`+=`), as some frameworks do."""

    def __init__(self) -> None:
        self.W = weights((3, 2))
        self.b = weights((2,), 2)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW += self.x.T @ dout
        self.db += dout.sum(axis=0)
        return dout @ self.W.T


def test_accumulated_gradients_with_stale_buffers() -> None:
    layer = Accumulating()
    layer.dW += 5.0  # left over from an earlier step
    layer.db += 5.0
    stale_dw, stale_db = layer.dW, layer.dW.copy()
    result = check(layer, x_batch(4, 3))
    assert result.ok
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok"}
    # the caller's buffers are put back as they were
    assert layer.dW is stale_dw
    assert np.array_equal(layer.dW, stale_db)


class LazyAttr:
    """Creates W/b on the first forward, from the input's width."""

    def __init__(self, n_out: int) -> None:
        self.n_out = n_out
        self.W: np.ndarray | None = None
        self.b: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.W is None:
            self.W = weights((x.shape[1], self.n_out))
            self.b = np.zeros(self.n_out)
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        assert self.W is not None
        self.dW = self.x.T @ dout
        self.db = dout.sum(axis=0)
        return dout @ self.W.T


class LazyDict:
    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.params:
            self.params["W"] = weights((x.shape[1], 2))
        self.x = x
        return np.sin(x @ self.params["W"])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dz = dout * np.cos(self.x @ self.params["W"])
        self.grads["W"] = self.x.T @ dz
        return dz @ self.params["W"].T


@pytest.mark.parametrize("make", [lambda: LazyAttr(2), LazyDict], ids=["attrs", "dicts"])
def test_lazily_created_parameters(make: Any) -> None:
    layer = make()
    result = check(layer, x_batch(4, 3))
    assert result.ok
    assert result.entry("W").status == "ok"
    assert result.entry("W").checked == 6
    # The layer is left as it was: still without parameters.
    if isinstance(layer, LazyAttr):
        assert layer.W is None
    else:
        assert layer.params == {}


# ---------------------------------------------------------------------------------------------
# Containers: a `layers` list, and sub-layers as attributes
# ---------------------------------------------------------------------------------------------


def test_container_with_layers_list_names_rows_by_path() -> None:
    net = Sequential(
        Linear(3, 4, rng=np.random.default_rng(1)),
        Tanh(),
        BatchNorm1d(4),
        Linear(4, 2, rng=np.random.default_rng(2)),
    )
    result = check(net, x_batch(6, 3))
    assert result.ok
    assert rows(result) == {
        "x": "ok",
        "layers.0.W": "ok",
        "layers.0.b": "ok",
        "layers.2.gamma": "ok",
        "layers.2.beta": "ok",
        "layers.3.W": "ok",
        "layers.3.b": "ok",
    }


def test_params_option_selects_rows_by_path_glob() -> None:
    net = Sequential(
        Linear(3, 4, rng=np.random.default_rng(1)),
        BatchNorm1d(4),
        Linear(4, 2, rng=np.random.default_rng(2)),
    )
    result = check(net, x_batch(6, 3), params=["layers.*.W", "layers.1.beta"], inputs=False)
    assert rows(result) == {
        "layers.0.W": "ok",
        "layers.0.b": "not selected",
        "layers.1.gamma": "not selected",
        "layers.1.beta": "ok",
        "layers.2.W": "ok",
        "layers.2.b": "not selected",
    }


def test_container_wrong_sublayer_gradient_names_its_path() -> None:
    class BadGamma(BatchNorm1d):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["gamma"] = self.grads["gamma"] * 0.9
            return dx

    net = Sequential(Linear(3, 4, rng=np.random.default_rng(1)), ReLU(), BadGamma(4))
    result = check(net, x_batch(6, 3))
    assert [e.name for e in result.failed_entries] == ["layers.2.gamma"]
    assert "layers.2.gamma" in str(result)


class Block:
    """Sub-layers held as attributes, not in a list."""

    def __init__(self) -> None:
        self.fc = Linear(3, 4, rng=np.random.default_rng(1))
        self.act = Tanh()
        self.norm = LayerNorm(4)
        self.norm.params["gamma"] = 1.0 + 0.1 * weights((4,), 3)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.norm.forward(self.act.forward(self.fc.forward(x)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.fc.backward(self.act.backward(self.norm.backward(dout)))


def test_container_with_sublayer_attributes() -> None:
    result = check(Block(), x_batch(4, 3))
    assert result.ok
    assert rows(result) == {
        "x": "ok",
        "fc.W": "ok",
        "fc.b": "ok",
        "norm.gamma": "ok",
        "norm.beta": "ok",
    }


def test_nested_containers() -> None:
    net = Sequential(Block(), Sequential(ReLU(), Linear(4, 2, rng=np.random.default_rng(4))))
    result = check(net, x_batch(4, 3))
    assert result.ok
    assert {"layers.0.fc.W", "layers.0.norm.gamma", "layers.1.layers.1.W"} <= set(rows(result))


def test_tied_weights_are_checked_once_against_the_summed_gradient() -> None:
    first = Linear(4, 4, rng=np.random.default_rng(1))
    second = Linear(4, 4, rng=np.random.default_rng(2))
    second.params["W"] = first.params["W"]  # weight tying
    net = Sequential(first, Tanh(), second)
    result = check(net, x_batch(3, 4))
    assert result.ok, str(result)
    assert "layers.2.W" not in rows(result)
    assert any("layers.2.W share the array of layers.0.W" in n for n in result.notes)
    assert second.params["W"] is first.params["W"]


def test_tied_weights_with_one_share_wrong_fail() -> None:
    class HalfShare(Linear):
        def backward(self, dout: np.ndarray) -> np.ndarray:
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * 0.5
            return dx

    first = Linear(4, 4, rng=np.random.default_rng(1))
    second = HalfShare(4, 4, rng=np.random.default_rng(2))
    second.params["W"] = first.params["W"]
    result = check(Sequential(first, Tanh(), second), x_batch(3, 4))
    assert result.entry("layers.0.W").status == "FAIL"


# ---------------------------------------------------------------------------------------------
# Integer inputs pass through
# ---------------------------------------------------------------------------------------------


class Embedding:
    """forward(ids, scale, keep): an integer index array, a float array and a bool mask."""

    def __init__(self, bug: bool = False) -> None:
        self.params = {"E": weights((5, 3))}
        self.grads: dict[str, np.ndarray] = {}
        self.bug = bug

    def forward(self, ids: np.ndarray, scale: np.ndarray, keep: np.ndarray) -> np.ndarray:
        self.ids, self.scale, self.keep = ids, scale, keep
        return self.params["E"][ids] * scale * keep[:, None]

    def backward(self, dout: np.ndarray) -> tuple[None, np.ndarray, None]:
        d = dout * self.keep[:, None]
        g = np.zeros_like(self.params["E"])
        if self.bug:
            g[self.ids] += d * self.scale  # loses repeated indices
        else:
            np.add.at(g, self.ids, d * self.scale)
        self.grads["E"] = g
        return None, d * self.params["E"][self.ids], None


def embedding_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([0, 2, 2, 4, 1])
    scale = np.random.default_rng(0).normal(size=(5, 3))
    keep = np.array([True, True, False, True, True])
    return ids, scale, keep


def test_integer_inputs_pass_through() -> None:
    ids, scale, keep = embedding_inputs()
    result = check(Embedding(), ids, scale, keep)
    assert result.ok
    assert rows(result) == {
        "ids": "integer input",
        "keep": "integer input",
        "scale": "ok",
        "E": "ok",
    }
    assert result.entry("ids").dtype == str(ids.dtype)
    assert result.entry("ids").checked == 0
    assert "integer input" in str(result)
    assert np.array_equal(ids, [0, 2, 2, 4, 1])


def test_integer_inputs_wrong_parameter_gradient_is_caught() -> None:
    result = check(Embedding(bug=True), *embedding_inputs())
    assert rows(result)["E"] == "FAIL"
    assert result.entry("E").worst_index is not None
    assert result.entry("E").worst_index[0] == 2  # the repeated index


def test_function_pair_with_integer_labels() -> None:
    def loss_forward(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Any]:
        shifted = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return -np.log(p[np.arange(len(y)), y]), (p, y)

    def loss_backward(dout: np.ndarray, cache: Any) -> np.ndarray:
        p, y = cache
        d = p.copy()
        d[np.arange(len(y)), y] -= 1
        return d * dout[:, None]

    scores = x_batch(4, 5)
    y = np.array([0, 3, 4, 1])
    result = check((loss_forward, loss_backward), scores, y)
    assert result.ok
    assert rows(result) == {"scores": "ok", "y": "integer input"}


class AffineOfInputs:
    """Two-input affine map caching its inputs under parameter-like names (W, b)."""

    def __init__(self, bug: float = 1.0) -> None:
        self.bug = bug

    def forward(self, x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.x, self.W, self.b = x, W, b.reshape(1, -1)  # b cached as a view
        return x @ W + b

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, ...]:
        return dout @ self.W.T, self.x.T @ dout, dout.sum(axis=0) * self.bug


@pytest.mark.parametrize("bug", [1.0, 1.01])
def test_inputs_cached_under_parameter_names_are_inputs_not_parameters(bug: float) -> None:
    result = check(AffineOfInputs(bug), x_batch(4, 3), weights((3, 2)), weights((2,), seed=2))
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok" if bug == 1.0 else "FAIL"}
    assert [e.kind for e in result.entries] == ["input"] * 3


def test_read_only_parameters_are_checked_on_writeable_copies() -> None:
    layer = DictAffine()
    for value in layer.params.values():
        value.flags.writeable = False
    saved = dict(layer.params)
    assert check(layer, x_batch(4, 3)).ok
    assert all(layer.params[k] is v and not v.flags.writeable for k, v in saved.items())


# ---------------------------------------------------------------------------------------------
# Usage errors name the layer and the parameter
# ---------------------------------------------------------------------------------------------


class MissingGrad(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        del self.grads["b"]
        return dx


class AttrMissingGrad:
    def __init__(self) -> None:
        self.W = weights((3, 2))
        self.b = np.zeros(2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.x.T @ dout  # forgets db
        return dout @ self.W.T


class WrongShapeGrad(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"].T
        return dx


class RaisingBackward(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise RuntimeError("cache was cleared")


class NoInputGrad:
    def __init__(self) -> None:
        self.W = weights((3, 2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.W

    def backward(self, dout: np.ndarray) -> None:
        self.dW = self.x.T @ dout


class StringGrad(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = "not computed"
        return dx


class ComplexGrad(Linear):
    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"] + 0j
        return dx


class ComplexParam(Linear):
    """A complex parameter whose real part alone reaches the output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params["W"] = self.params["W"] + 0j

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.params["W"].real + self.params["b"]


USAGE_ERRORS = [
    (
        "raises",
        lambda: RaisingBackward(3, 2, rng=np.random.default_rng(1)),
        ["RaisingBackward", "backward raised RuntimeError", "cache was cleared"],
    ),
    (
        "complex-param",
        lambda: ComplexParam(3, 2, rng=np.random.default_rng(1)),
        ["ComplexParam", "'W'", "complex128", "params=[...]"],
    ),
]


@pytest.mark.parametrize(
    ("make", "needles"), [c[1:] for c in USAGE_ERRORS], ids=[c[0] for c in USAGE_ERRORS]
)
def test_usage_errors_from_check_name_layer_and_parameter(make: Any, needles: list[str]) -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(make(), x_batch(4, 3))
    message = str(info.value)
    for needle in needles:
        assert needle in message


# One unusable gradient is an `error` row; the other rows are still judged.
ERROR_ROWS = [
    ("missing-dict", lambda: MissingGrad(3, 2, rng=np.random.default_rng(1)), "b",
     ["'b'", "no gradient"]),
    ("missing-attr", AttrMissingGrad, "b", ["'b'", "no gradient"]),
    ("wrong-shape", lambda: WrongShapeGrad(3, 2, rng=np.random.default_rng(1)), "W",
     ["'W'", "(2, 3)", "(3, 2)"]),
    ("no-input-grad", NoInputGrad, "x", ["'x'", "inputs=False"]),
    ("grad-not-numbers", lambda: StringGrad(3, 2, rng=np.random.default_rng(1)), "W",
     ["'W'", "not an array of numbers"]),
    ("complex-grad", lambda: ComplexGrad(3, 2, rng=np.random.default_rng(1)), "W",
     ["'W'", "complex"]),
]


@pytest.mark.parametrize(
    ("make", "row", "needles"), [c[1:] for c in ERROR_ROWS], ids=[c[0] for c in ERROR_ROWS]
)
def test_an_unusable_gradient_is_an_error_row_naming_the_parameter(
    make: Any, row: str, needles: list[str]
) -> None:
    result = check(make(), x_batch(4, 3))
    assert not result.ok
    entry = result.entry(row)
    assert entry.status == "error" and entry.message is not None
    for needle in needles:
        assert needle in entry.message
    assert all(e.status == "ok" for e in result.entries if e.name != row)


def test_a_layer_class_instead_of_an_instance_is_a_usage_error_saying_so() -> None:
    with pytest.raises(GradcheckUsageError, match=r"Linear: got the class Linear.*instance"):
        check(Linear, x_batch(4, 3))


def test_complex_input_is_a_usage_error_naming_it() -> None:
    with pytest.raises(GradcheckUsageError, match=r"Linear: input 'x' is complex128"):
        check(Linear(3, 2, rng=np.random.default_rng(1)), x_batch(4, 3) + 0j)


@pytest.mark.parametrize(
    ("extra_loss", "needle"),
    [
        (lambda layer: np.ones(3), "extra_loss returned an array of shape (3,)"),
        (lambda layer: 1 / 0, "extra_loss raised ZeroDivisionError"),
    ],
    ids=["array", "raises"],
)
def test_extra_loss_that_is_not_one_float_is_a_usage_error(extra_loss: Any, needle: str) -> None:
    with pytest.raises(GradcheckUsageError) as info:
        check(Linear(3, 2, rng=np.random.default_rng(1)), x_batch(4, 3), extra_loss=extra_loss)
    assert str(info.value).startswith("Linear: ") and needle in str(info.value)


def test_missing_input_gradient_can_be_skipped_with_inputs_false() -> None:
    result = check(NoInputGrad(), x_batch(4, 3), inputs=False)
    assert result.ok
    assert rows(result) == {"W": "ok"}


def test_usage_errors_through_fixture_are_clean_failures(pytester: pytest.Pytester) -> None:
    source = textwrap.dedent(
        """
        import numpy as np
        from example_nn import Linear

        def x():
            return np.random.default_rng(0).normal(size=(4, 3))

        class MissingGrad(Linear):
            def backward(self, dout):
                dx = super().backward(dout)
                del self.grads["b"]
                return dx

        class WrongShape(Linear):
            def backward(self, dout):
                dx = super().backward(dout)
                self.grads["W"] = self.grads["W"].T
                return dx

        class Raising(Linear):
            def backward(self, dout):
                raise RuntimeError("cache was cleared")

        def test_missing(gradcheck):
            gradcheck(MissingGrad(3, 2, rng=np.random.default_rng(1)), x())

        def test_wrong_shape(gradcheck):
            gradcheck(WrongShape(3, 2, rng=np.random.default_rng(1)), x())

        def test_raising(gradcheck):
            gradcheck(Raising(3, 2, rng=np.random.default_rng(1)), x())
        """
    )
    pytester.makepyfile(test_usage=source)
    result = pytester.runpytest()
    result.assert_outcomes(failed=3)
    # Each test's own section, in whatever order the tests ran.
    failure_section(result, "test_missing").fnmatch_lines(
        [
            "gradcheck MissingGrad: FAILED*",
            "  b *param*error",
            "  error: parameter 'b' has no gradient after backward*",
        ]
    )
    failure_section(result, "test_wrong_shape").fnmatch_lines(
        [
            "gradcheck WrongShape: FAILED*",
            "  error: gradient of parameter 'W' has shape (2, 3), expected (3, 2)*",
        ]
    )
    failure_section(result, "test_raising").fnmatch_lines(
        ["Raising: backward raised RuntimeError: cache was cleared*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*pytest_gradcheck/*")


# ---------------------------------------------------------------------------------------------
# Gradients that appear only after backward; backward that changes parameters
# ---------------------------------------------------------------------------------------------


class LowercasePair:
    """`w` with `dw` created by the first backward: no known name, no gradient before."""

    def __init__(self, slip: float = 1.0) -> None:
        self.w = weights((4, 5))
        self.slip = slip

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.inp = x
        return x @ self.w

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dw = self.inp.T @ dout * self.slip
        return dout @ self.w.T


def test_parameter_recognised_after_backward_is_checked() -> None:
    assert check(LowercasePair(), x_batch(3, 4)).entry("w").status == "ok"
    assert check(LowercasePair(slip=1.01), x_batch(3, 4)).entry("w").status == "FAIL"


class StepsInBackward:
    """Applies an SGD step to W inside backward, as some optimizers-in-the-layer designs do."""

    def __init__(self) -> None:
        self.W = weights((4, 5))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.inp = x
        return x @ self.W

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.dW = self.inp.T @ dout
        dx = dout @ self.W.T
        self.W -= 0.1 * self.dW
        return dx


def test_parameter_step_inside_backward_is_undone_before_numeric_passes() -> None:
    layer = StepsInBackward()
    before = layer.W.copy()
    result = check(layer, x_batch(3, 4), mode="full")
    assert result.ok, str(result)
    assert any("backward changed parameter(s) W" in n for n in result.notes)
    assert np.array_equal(layer.W, before)


class ScaledBy:
    """forward(x, factor, offsets): one array and two values the checker cannot perturb."""

    def __init__(self, extra_gradient: bool = False) -> None:
        self.extra_gradient = extra_gradient

    def forward(self, x: np.ndarray, factor: float, offsets: list[float]) -> np.ndarray:
        self.factor = factor
        return x * factor + np.asarray(offsets)

    def backward(self, dout: np.ndarray) -> Any:
        dx = dout * self.factor
        return (dx, None, None, dx) if self.extra_gradient else (dx, None, None)


def test_inputs_that_are_not_arrays_are_listed_as_passed_through() -> None:
    result = check(ScaledBy(), x_batch(2, 3), 1.5, [0.1, 0.2, 0.3])
    assert result.ok, str(result)
    assert result.entry("factor").status == "passed through"
    assert result.entry("offsets").status == "passed through"
    assert result.entry("offsets").shape == (3,)


def test_backward_returning_more_gradients_than_inputs_is_a_usage_error() -> None:
    with pytest.raises(GradcheckUsageError, match=r"ScaledBy: backward returned 4 input gradients"):
        check(ScaledBy(extra_gradient=True), x_batch(2, 3), 1.5, [0.1, 0.2, 0.3])
