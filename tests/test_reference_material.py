"""The reference implementations the checker is tested with are themselves correct.

Every function, model and layer in tests/cs231n_style.py, and the value-and-gradient losses and
the two-output LSTM cell of example_nn, are compared here against a plain central-difference
loop written in this file, independent of pytest_gradcheck, in float64. Inputs are chosen away
from kinks (ReLU at 0, hinge margins at 0), so a relative error below 1e-6 is expected
everywhere. The mode, seed and running-statistics behaviour that checks must respect, and the
mutants that checker tests use to provoke a failure on one row, are tested too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import cs231n_style as cs
import numpy as np
import pytest

from example_nn import LSTMCell, mse, softmax_cross_entropy

STEP = 1e-5
TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# The independent reference: central differences, one element at a time
# --------------------------------------------------------------------------------------------


def numeric_gradient(objective: Callable[[], float], x: np.ndarray) -> np.ndarray:
    """d objective / d x, perturbing ``x`` in place (the objective reads it) and restoring it."""
    grad = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + STEP
        plus = objective()
        x[index] = original - STEP
        minus = objective()
        x[index] = original
        grad[index] = (plus - minus) / (2.0 * STEP)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """Largest element error relative to the array's largest magnitude (0 for two zeros)."""
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    return float(np.abs(analytic - numeric).max(initial=0.0) / scale) if scale else 0.0


def assert_gradient(name: str, analytic: np.ndarray, numeric: np.ndarray) -> None:
    assert np.shape(analytic) == numeric.shape, f"{name}: {np.shape(analytic)} != {numeric.shape}"
    assert np.abs(numeric).max() > 0, f"{name}: zero gradient, the test would prove nothing"
    error = relative_error(np.asarray(analytic), numeric)
    assert error < TOLERANCE, f"{name}: relative error {error:.2e}"


def check_pair(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    args: tuple[Any, ...],
    wrt: dict[int, str],
    n_outputs: int = 1,
    seed: int = 0,
) -> None:
    """Check a pair with the objective sum_k <out_k, dout_k> for fixed random cotangents.

    ``wrt`` maps the position of each differentiated argument to its name, in the order of
    backward's returned gradients.
    """
    result = forward(*args)
    outputs, cache = result[:n_outputs], result[n_outputs]
    rng = np.random.default_rng(seed)
    douts = [rng.normal(size=out.shape) for out in outputs]
    grads = backward(*douts, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert len(grads) == len(wrt)

    def objective() -> float:
        outs = forward(*args)[:n_outputs]
        return float(sum(np.sum(out * dout) for out, dout in zip(outs, douts)))

    for grad, (position, name) in zip(grads, wrt.items()):
        assert_gradient(name, grad, numeric_gradient(objective, args[position]))


def check_value_and_grad(fn: Callable[..., tuple[float, Any]], args: tuple[Any, ...]) -> None:
    """``fn(*args) -> (loss, grad)``, grad taken with respect to the first argument."""
    _, grad = fn(*args)
    assert_gradient(fn.__name__, grad, numeric_gradient(lambda: fn(*args)[0], args[0]))


def away_from_zero(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Values in +-[0.2, 1.5]: a ReLU never switches within a step of them."""
    values: np.ndarray = rng.uniform(0.2, 1.5, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return values


def global_state() -> tuple[Any, ...]:
    """numpy's global Mersenne Twister state, comparable with ``same_state``."""
    state = np.random.get_state()
    assert isinstance(state, tuple)
    return (state[0], state[1].copy(), *state[2:])


def same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


@pytest.fixture(autouse=True)
def global_random_state() -> Iterator[None]:
    """Seeded dropout reseeds numpy's global generator; leave it as the next test expects."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2024)


# --------------------------------------------------------------------------------------------
# Function pairs
# --------------------------------------------------------------------------------------------


def test_affine(rng: np.random.Generator) -> None:
    x, w, b = rng.normal(size=(3, 2, 4)), rng.normal(size=(8, 5)), rng.normal(size=5)
    out, _ = cs.affine_forward(x, w, b)
    assert out.shape == (3, 5)
    check_pair(cs.affine_forward, cs.affine_backward, (x, w, b), {0: "x", 1: "w", 2: "b"})


def test_relu(rng: np.random.Generator) -> None:
    x = away_from_zero(rng, 4, 5)
    check_pair(cs.relu_forward, cs.relu_backward, (x,), {0: "x"})


def bn_args(rng: np.random.Generator, mode: str) -> tuple[Any, ...]:
    x = rng.normal(2.0, 3.0, size=(6, 4))
    gamma, beta = 1.0 + 0.3 * rng.normal(size=4), rng.normal(size=4)
    bn_param: dict[str, Any] = {"mode": mode}
    if mode == "test":
        bn_param.update(running_mean=rng.normal(size=4), running_var=rng.uniform(0.5, 2.0, 4))
    return x, gamma, beta, bn_param


@pytest.mark.parametrize("mode", ["train", "test"])
def test_batchnorm(rng: np.random.Generator, mode: str) -> None:
    args = bn_args(rng, mode)
    check_pair(cs.batchnorm_forward, cs.batchnorm_backward, args, {0: "x", 1: "gamma", 2: "beta"})


def test_batchnorm_train_mode_writes_running_statistics(rng: np.random.Generator) -> None:
    x, gamma, beta, bn_param = bn_args(rng, "train")
    bn_param.update(momentum=0.8, running_mean=np.ones(4), running_var=np.ones(4))
    out, _ = cs.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), np.abs(gamma), rtol=1e-5)
    np.testing.assert_allclose(bn_param["running_mean"], 0.8 + 0.2 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.8 + 0.2 * x.var(axis=0))


def test_batchnorm_test_mode_uses_running_statistics_and_writes_nothing(
    rng: np.random.Generator,
) -> None:
    x, gamma, beta, bn_param = bn_args(rng, "test")
    before = {k: np.copy(v) for k, v in bn_param.items()}
    out, _ = cs.batchnorm_forward(x, gamma, beta, bn_param)
    mean, var = bn_param["running_mean"], bn_param["running_var"]
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + 1e-5) + beta)
    assert all(np.array_equal(bn_param[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match="mode"):
        cs.batchnorm_forward(x, gamma, beta, {"mode": "eval"})


def test_layernorm(rng: np.random.Generator) -> None:
    x = rng.normal(2.0, 3.0, size=(4, 6))
    gamma, beta = 1.0 + 0.3 * rng.normal(size=6), rng.normal(size=6)
    ln_param: dict[str, Any] = {}
    out, _ = cs.layernorm_forward(x, gamma, beta, ln_param)
    xhat = (out - beta) / gamma
    np.testing.assert_allclose(xhat.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(xhat.std(axis=1), 1.0, rtol=1e-5)
    assert ln_param == {}
    args = (x, gamma, beta, ln_param)
    check_pair(cs.layernorm_forward, cs.layernorm_backward, args, {0: "x", 1: "gamma", 2: "beta"})


def test_dropout_train_with_seed(rng: np.random.Generator) -> None:
    x = rng.normal(size=(6, 5))
    check_pair(
        cs.dropout_forward,
        cs.dropout_backward,
        (x, {"p": 0.6, "mode": "train", "seed": 1}),
        {0: "x"},
    )


def test_dropout_keeps_a_fraction_p_and_scales_by_1_over_p() -> None:
    x = np.ones((200, 50))
    out, _ = cs.dropout_forward(x, {"p": 0.3, "mode": "train", "seed": 0})
    assert set(np.unique(out)) == {0.0, 1.0 / 0.3}
    assert abs((out > 0).mean() - 0.3) < 0.02
    test_out, cache = cs.dropout_forward(x, {"p": 0.3, "mode": "test"})
    assert np.array_equal(test_out, x) and test_out is not x
    assert np.array_equal(cs.dropout_backward(x, cache), x)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_dropout_with_seed_reseeds_the_global_generator(mode: str) -> None:
    x = np.ones((3, 4))
    np.random.seed(7)
    expected_mask = np.random.rand(3, 4) < 0.5
    after_train = np.random.rand()
    np.random.seed(99)  # whatever the state before, the seed decides
    out, _ = cs.dropout_forward(x, {"p": 0.5, "mode": mode, "seed": 7})
    if mode == "train":
        assert np.array_equal(out > 0, expected_mask)
        assert np.random.rand() == after_train
    else:  # reseeded all the same, and no mask drawn
        assert np.array_equal(out, x)
        after_test = global_state()
        np.random.seed(7)
        assert same_state(after_test, global_state())


def test_dropout_without_seed_draws_from_the_global_generator() -> None:
    x = np.ones((3, 4))
    np.random.seed(5)
    first, _ = cs.dropout_forward(x, {"p": 0.5, "mode": "train"})
    second, _ = cs.dropout_forward(x, {"p": 0.5, "mode": "train"})
    np.random.seed(5)
    again, _ = cs.dropout_forward(x, {"p": 0.5, "mode": "train"})
    assert np.array_equal(first, again) and not np.array_equal(first, second)


def lstm_args(rng: np.random.Generator, n: int = 3, d: int = 4, h: int = 5) -> tuple[Any, ...]:
    return (
        rng.normal(size=(n, d)),
        rng.normal(size=(n, h)),
        rng.normal(size=(n, h)),
        0.5 * rng.normal(size=(d, 4 * h)),
        0.5 * rng.normal(size=(h, 4 * h)),
        rng.normal(size=4 * h),
    )


LSTM_WRT = {0: "x", 1: "prev_h", 2: "prev_c", 3: "Wx", 4: "Wh", 5: "b"}


def test_lstm_step(rng: np.random.Generator) -> None:
    args = lstm_args(rng)
    next_h, next_c, _ = cs.lstm_step_forward(*args)
    assert next_h.shape == next_c.shape == (3, 5)
    check_pair(cs.lstm_step_forward, cs.lstm_step_backward, args, LSTM_WRT, n_outputs=2)


@pytest.mark.parametrize("output", ["next_h", "next_c"])
def test_lstm_step_each_output_alone(rng: np.random.Generator, output: str) -> None:
    """A zero cotangent for one output: the other output's path alone must be right."""
    args = lstm_args(rng)
    next_h, next_c, cache = cs.lstm_step_forward(*args)
    dh = rng.normal(size=next_h.shape) if output == "next_h" else np.zeros_like(next_h)
    dc = rng.normal(size=next_c.shape) if output == "next_c" else np.zeros_like(next_c)
    grads = cs.lstm_step_backward(dh, dc, cache)

    def objective() -> float:
        h, c, _ = cs.lstm_step_forward(*args)
        return float(np.sum(h * dh) + np.sum(c * dc))

    for grad, (position, name) in zip(grads, LSTM_WRT.items()):
        assert_gradient(name, grad, numeric_gradient(objective, args[position]))


def test_word_embedding_with_repeated_indices(rng: np.random.Generator) -> None:
    x = np.array([[0, 3, 1], [3, 3, 2]])  # index 3 three times, 4 unused
    W = rng.normal(size=(5, 4))
    out, _ = cs.word_embedding_forward(x, W)
    assert out.shape == (2, 3, 4) and np.array_equal(out[0, 1], W[3])
    check_pair(cs.word_embedding_forward, cs.word_embedding_backward, (x, W), {1: "W"})
    dW = cs.word_embedding_backward(np.ones((2, 3, 4)), cs.word_embedding_forward(x, W)[1])
    assert np.array_equal(dW[:, 0], [1, 1, 1, 3, 0])


# --------------------------------------------------------------------------------------------
# Value-and-gradient losses
# --------------------------------------------------------------------------------------------


def classification(rng: np.random.Generator, n: int = 6, c: int = 4) -> tuple[Any, Any]:
    return rng.normal(size=(n, c)), rng.integers(0, c, size=n)


def test_softmax_loss(rng: np.random.Generator) -> None:
    check_value_and_grad(cs.softmax_loss, classification(rng))
    loss, _ = cs.softmax_loss(np.zeros((3, 5)), np.array([0, 2, 4]))
    assert loss == pytest.approx(np.log(5))


def test_softmax_loss_is_stable_for_large_scores(rng: np.random.Generator) -> None:
    x, y = classification(rng)
    loss, dx = cs.softmax_loss(1e3 * x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(dx))


def test_svm_loss(rng: np.random.Generator) -> None:
    x, y = classification(rng)
    rows = np.arange(len(y))
    margins = x - x[rows, y][:, None] + 1.0
    margins[rows, y] = 10.0
    assert np.abs(margins).min() > 1e-3  # no hinge within a step of its kink
    assert (margins < 0).any() and (margins[margins < 10] > 0).any()  # both sides exercised
    check_value_and_grad(cs.svm_loss, (x, y))
    loss, _ = cs.svm_loss(np.zeros((3, 5)), np.array([0, 2, 4]))
    assert loss == pytest.approx(4.0)


def test_softmax_loss_naive(rng: np.random.Generator) -> None:
    W, X, y = 0.5 * rng.normal(size=(4, 3)), rng.normal(size=(5, 4)), rng.integers(0, 3, 5)
    reg = 0.1
    check_value_and_grad(cs.softmax_loss_naive, (W, X, y, reg))
    loss, _ = cs.softmax_loss_naive(W, X, y, reg)
    vectorised, _ = cs.softmax_loss(X @ W, y)
    assert loss == pytest.approx(vectorised + reg * np.sum(W * W))


def test_temporal_softmax_loss(rng: np.random.Generator) -> None:
    n, t, v = 3, 4, 5
    x, y = rng.normal(size=(n, t, v)), rng.integers(0, v, size=(n, t))
    mask = np.ones((n, t), dtype=bool)
    mask[0, 2:] = mask[2, 3] = False
    check_value_and_grad(cs.temporal_softmax_loss, (x, y, mask))
    _, dx = cs.temporal_softmax_loss(x, y, mask)
    assert not dx[~mask].any()
    loss, _ = cs.temporal_softmax_loss(np.zeros((n, t, v)), y, mask)
    assert loss == pytest.approx(mask.sum() * np.log(v) / n)  # divided by N, not by the mask


# --------------------------------------------------------------------------------------------
# Models with a loss method
# --------------------------------------------------------------------------------------------


def check_model(
    model: Any, X: np.ndarray, y: np.ndarray, zero: frozenset[str] = frozenset()
) -> None:
    """``zero``: parameters whose gradient is zero in exact arithmetic."""
    _, grads = model.loss(X, y)
    assert list(grads) == list(model.params)
    for name, param in model.params.items():
        numeric = numeric_gradient(lambda: model.loss(X, y)[0], param)
        if name in zero:
            assert np.abs(grads[name]).max() < 1e-12 and np.abs(numeric).max() < 1e-8, name
        else:
            assert_gradient(name, grads[name], numeric)


def test_two_layer_net(rng: np.random.Generator) -> None:
    model = cs.TwoLayerNet(
        input_dim=5, hidden_dim=6, num_classes=3, weight_scale=0.5, reg=0.2, seed=1
    )
    X, y = rng.normal(size=(4, 5)), rng.integers(0, 3, size=4)
    hidden = X @ model.params["W1"] + model.params["b1"]
    assert np.abs(hidden).min() > 1e-3  # no ReLU within a step of its kink
    check_model(model, X, y)
    assert model.loss(X).shape == (4, 3)


def test_two_layer_net_regularisation_and_seed(rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(4, 5)), rng.integers(0, 3, size=4)
    plain = cs.TwoLayerNet(5, 6, 3, weight_scale=0.5, seed=1)
    regularised = cs.TwoLayerNet(5, 6, 3, weight_scale=0.5, reg=0.2, seed=1)
    W1, W2 = plain.params["W1"], plain.params["W2"]
    expected = plain.loss(X, y)[0] + 0.1 * (np.sum(W1**2) + np.sum(W2**2))
    assert regularised.loss(X, y)[0] == pytest.approx(expected)
    state = global_state()
    cs.TwoLayerNet(5, 6, 3, seed=3)
    assert same_state(global_state(), state)  # never uses the global generator


FCN_CASES = {
    "plain": {},
    "batchnorm": {"normalization": "batchnorm"},
    "dropout": {"dropout_keep_ratio": 0.7},
    "batchnorm+dropout": {"normalization": "batchnorm", "dropout_keep_ratio": 0.7},
    "layernorm+dropout": {"normalization": "layernorm", "dropout_keep_ratio": 0.7},
}


def fcn(**options: Any) -> cs.FullyConnectedNet:
    return cs.FullyConnectedNet(
        [6, 5],
        input_dim=4,
        num_classes=3,
        reg=0.05,
        weight_scale=0.7,
        dtype=np.float64,
        seed=3,
        **options,
    )


@pytest.mark.parametrize("options", FCN_CASES.values(), ids=FCN_CASES.keys())
def test_fully_connected_net(rng: np.random.Generator, options: dict[str, Any]) -> None:
    model = fcn(**options)
    if options.get("normalization"):
        model.params["gamma1"] = 1.0 + 0.3 * rng.normal(size=6)
        model.params["beta2"] = 0.5 * rng.normal(size=5)
    X, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    # A bias feeding batchnorm shifts every sample alike, and batchnorm removes the shift.
    batchnorm = options.get("normalization") == "batchnorm"
    check_model(model, X, y, zero=frozenset({"b1", "b2"} if batchnorm else ()))


def test_fully_connected_net_parameters_and_dicts() -> None:
    model = fcn(normalization="batchnorm", dropout_keep_ratio=0.5)
    assert list(model.params) == [
        "W1",
        "b1",
        "gamma1",
        "beta1",
        "W2",
        "b2",
        "gamma2",
        "beta2",
        "W3",
        "b3",
    ]
    assert model.dropout_param == {"mode": "train", "p": 0.5, "seed": 3}
    assert model.bn_params == [{"mode": "train"}, {"mode": "train"}]
    unseeded = cs.FullyConnectedNet([6], input_dim=4, num_classes=3, dropout_keep_ratio=0.5)
    assert "seed" not in unseeded.dropout_param
    assert all(v.dtype == np.float32 for v in unseeded.params.values())  # the default dtype
    assert cs.FullyConnectedNet([6], input_dim=4).dropout_param == {}
    assert cs.FullyConnectedNet([6, 5], input_dim=4, normalization="layernorm").bn_params == [
        {},
        {},
    ]
    with pytest.raises(ValueError, match="normalization"):
        cs.FullyConnectedNet([6], normalization="groupnorm")


def test_fully_connected_net_modes_and_running_statistics(rng: np.random.Generator) -> None:
    model = fcn(normalization="batchnorm", dropout_keep_ratio=0.5)
    X, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    model.loss(X, y)
    assert model.dropout_param["mode"] == "train"
    assert [p["mode"] for p in model.bn_params] == ["train", "train"]
    assert all("running_mean" in p and "running_var" in p for p in model.bn_params)
    running = [(p["running_mean"].copy(), p["running_var"].copy()) for p in model.bn_params]

    scores = model.loss(X)
    assert scores.shape == (7, 3)
    assert model.dropout_param["mode"] == "test"
    assert [p["mode"] for p in model.bn_params] == ["test", "test"]
    for p, (mean, var) in zip(model.bn_params, running):
        assert np.array_equal(p["running_mean"], mean) and np.array_equal(p["running_var"], var)
    assert np.array_equal(model.loss(X), scores)  # test mode is deterministic

    model.loss(X, y)  # back in train mode: the running statistics move again
    assert not np.array_equal(model.bn_params[0]["running_mean"], running[0][0])


def test_fully_connected_net_dropout_seed_reseeds_the_global_generator(
    rng: np.random.Generator,
) -> None:
    model = fcn(dropout_keep_ratio=0.5)
    X, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    np.random.seed(123)
    first = model.loss(X, y)[0]
    after_first = global_state()
    np.random.seed(456)
    assert model.loss(X, y)[0] == first  # same masks whatever the global state was
    assert same_state(global_state(), after_first)


# --------------------------------------------------------------------------------------------
# nnfs-book Model: backward from its own loss, regularisation included
# --------------------------------------------------------------------------------------------


def with_regularization(loss: cs.Loss, output: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    result = loss.calculate(output, y, include_regularization=True)
    assert isinstance(result, tuple)
    return result


NNFS_CASES = {
    "shortcut": {},
    "no-shortcut": {"softmax_shortcut": False},
    "dropout": {"dropout": 0.3},
    "one-hot": {"one_hot": True},
}


@pytest.mark.parametrize("options", NNFS_CASES.values(), ids=NNFS_CASES.keys())
def test_nnfs_model(rng: np.random.Generator, options: dict[str, Any]) -> None:
    one_hot = options.pop("one_hot", False)
    model = cs.nnfs_model(l2=0.01, **options)
    X, labels = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    y = np.eye(3)[labels] if one_hot else labels
    model.loss.new_pass()

    def objective() -> float:
        np.random.seed(11)  # the same dropout mask for every evaluation
        output = model.forward(X, training=True)
        return sum(with_regularization(model.loss, output, y))

    objective()
    model.backward(model.layers[-1].output, y)
    first = model.layers[0]
    assert np.all(np.abs(first.output) > 1e-3)  # no ReLU within a step of its kink
    analytic = {"X": first.dinputs}
    for i, layer in enumerate(model.trainable_layers):
        analytic[f"{i}.weights"], analytic[f"{i}.biases"] = layer.dweights, layer.dbiases
    arrays = {"X": X}
    for i, layer in enumerate(model.trainable_layers):
        arrays[f"{i}.weights"], arrays[f"{i}.biases"] = layer.weights, layer.biases
    for name, array in arrays.items():
        assert_gradient(name, analytic[name], numeric_gradient(objective, array))


def test_nnfs_model_regularisation_reaches_dweights(rng: np.random.Generator) -> None:
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    grads = []
    for l2 in (0.0, 0.01):
        model = cs.nnfs_model(l2=l2)
        model.backward(model.forward(X, training=True), y)
        grads.append(model.trainable_layers[0].dweights)
    np.testing.assert_allclose(grads[1] - grads[0], 0.02 * model.trainable_layers[0].weights)


def test_nnfs_loss_accumulates_between_calls_until_new_pass(rng: np.random.Generator) -> None:
    model = cs.nnfs_model(l2=0.01)
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    output = model.forward(X, training=False)
    with pytest.raises(AttributeError):  # as in the book: new_pass() creates the sums
        model.loss.calculate(output, y)
    model.loss.new_pass()
    data_loss = model.loss.calculate(output, y)
    assert isinstance(data_loss, float)
    data_loss2, reg = with_regularization(model.loss, output, y)
    assert data_loss2 == data_loss
    expected_reg = sum(0.01 * np.sum(layer.weights**2) for layer in model.trainable_layers)
    assert reg == pytest.approx(expected_reg) and reg > 0
    assert model.loss.accumulated_count == 16
    assert model.loss.calculate_accumulated() == pytest.approx(data_loss)
    model.loss.new_pass()
    assert (model.loss.accumulated_sum, model.loss.accumulated_count) == (0.0, 0)


def test_nnfs_dropout_draws_from_the_global_generator_in_training_only() -> None:
    layer = cs.Layer_Dropout(0.4)
    x = np.ones((50, 40))
    np.random.seed(0)
    layer.forward(x, training=True)
    assert set(np.unique(layer.output)) == {0.0, 1.0 / 0.6}
    state = global_state()
    layer.forward(x, training=False)
    assert np.array_equal(layer.output, x)
    assert same_state(global_state(), state)


# --------------------------------------------------------------------------------------------
# Other method signatures
# --------------------------------------------------------------------------------------------


def signature_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=2)


def test_backward_taking_the_input_back(rng: np.random.Generator) -> None:
    x, W, b = signature_case(rng)
    layer = cs.AffineInputBack(W, b)
    dy = rng.normal(size=(4, 2))
    layer.forward(x)
    analytic = {"x": layer.backward(x, dy), "W": layer.dW, "b": layer.db}

    def objective() -> float:
        return float(np.sum(layer.forward(x) * dy))

    for name, array in {"x": x, "W": layer.W, "b": layer.b}.items():
        assert_gradient(name, analytic[name], numeric_gradient(objective, array))


def test_forward_and_backward_methods_with_a_cache(rng: np.random.Generator) -> None:
    x, W, b = signature_case(rng)
    layer = cs.AffineCacheMethods(W, b)
    out, cache = layer.forward(x)
    dout = rng.normal(size=out.shape)
    analytic = {"x": layer.backward(dout, cache), **layer.grads}

    def objective() -> float:
        return float(np.sum(layer.forward(x)[0] * dout))

    for name, array in {"x": x, **layer.params}.items():
        assert_gradient(name, analytic[name], numeric_gradient(objective, array))


def test_backward_returning_the_parameter_gradients(rng: np.random.Generator) -> None:
    x, W, b = signature_case(rng)
    layer = cs.AffineGradsReturned(W, b)
    dout = rng.normal(size=(4, 2))
    layer.forward(x)
    dx, grads = layer.backward(dout)
    assert list(grads) == list(layer.params) and not hasattr(layer, "grads")
    analytic = {"x": dx, **grads}

    def objective() -> float:
        return float(np.sum(layer.forward(x) * dout))

    for name, array in {"x": x, **layer.params}.items():
        assert_gradient(name, analytic[name], numeric_gradient(objective, array))


# --------------------------------------------------------------------------------------------
# example_nn: the LSTM cell and the losses
# --------------------------------------------------------------------------------------------


def test_lstm_cell(rng: np.random.Generator) -> None:
    cell = LSTMCell(4, 3, rng=rng)
    cell.params["b"] = 0.5 * rng.normal(size=12)
    x, h_prev, c_prev = rng.normal(size=(5, 4)), rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    h, c = cell.forward(x, h_prev, c_prev)
    dh, dc = rng.normal(size=h.shape), rng.normal(size=c.shape)
    dx, dh_prev, dc_prev = cell.backward(dh, dc)

    def objective() -> float:
        h, c = cell.forward(x, h_prev, c_prev)
        return float(np.sum(h * dh) + np.sum(c * dc))

    for name, analytic, array in [
        ("x", dx, x),
        ("h_prev", dh_prev, h_prev),
        ("c_prev", dc_prev, c_prev),
    ]:
        assert_gradient(name, analytic, numeric_gradient(objective, array))
    grads = dict(cell.grads)  # numeric_gradient does not call backward, but be explicit
    for name, param in cell.params.items():
        assert_gradient(name, grads[name], numeric_gradient(objective, param))


def test_lstm_cell_matches_the_function_pair(rng: np.random.Generator) -> None:
    cell = LSTMCell(4, 3, rng=rng)
    x, h_prev, c_prev = rng.normal(size=(5, 4)), rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    p = cell.params
    next_h, next_c, cache = cs.lstm_step_forward(x, h_prev, c_prev, p["Wx"], p["Wh"], p["b"])
    h, c = cell.forward(x, h_prev, c_prev)
    np.testing.assert_allclose(h, next_h, rtol=1e-14)
    np.testing.assert_allclose(c, next_c, rtol=1e-14)
    dh, dc = rng.normal(size=h.shape), rng.normal(size=c.shape)
    expected = cs.lstm_step_backward(dh, dc, cache)
    got = (*cell.backward(dh, dc), cell.grads["Wx"], cell.grads["Wh"], cell.grads["b"])
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_lstm_cell_protocol(rng: np.random.Generator) -> None:
    cell, inputs = LSTMCell.gradcheck_case(rng)
    assert isinstance(cell, LSTMCell) and len(inputs) == 3
    assert set(cell.params) == set(cell.grads) == {"Wx", "Wh", "b"}
    assert np.array_equal(cell.params["b"][3:6], np.ones(3))  # forget gate starts open
    h, c = cell.forward(*inputs)
    assert h.shape == c.shape == inputs[1].shape
    assert cell.eval() is cell and not cell.training and cell.train().training
    with pytest.raises(ValueError, match="states"):
        cell.forward(inputs[0], inputs[1][:, :2], inputs[2])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        cell.forward(inputs[0][:, :3], inputs[1], inputs[2])


@pytest.mark.parametrize("loss", [softmax_cross_entropy, mse], ids=["softmax-ce", "mse"])
def test_example_nn_losses_are_value_and_gradient(
    rng: np.random.Generator, loss: Callable[..., tuple[float, np.ndarray]]
) -> None:
    args = loss.gradcheck_case(rng)  # type: ignore[attr-defined]
    assert isinstance(args, tuple) and args[0].dtype == np.float64
    value, grad = loss(*args)
    assert isinstance(value, float) and grad.shape == args[0].shape
    check_value_and_grad(loss, args)
    assert softmax_cross_entropy(*classification(rng))[0] > 0


def test_example_nn_losses_agree_with_the_reference(rng: np.random.Generator) -> None:
    x, y = classification(rng)
    value, grad = softmax_cross_entropy(x, y)
    ref_value, ref_grad = cs.softmax_loss(x, y)
    assert value == pytest.approx(ref_value, rel=1e-14)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Mutants: wrong in exactly the gradient they name
# --------------------------------------------------------------------------------------------


def differing(got: tuple[Any, ...], expected: tuple[Any, ...]) -> list[int]:
    assert len(got) == len(expected)
    return [i for i, (a, b) in enumerate(zip(got, expected)) if not np.array_equal(a, b)]


def pair_cases(rng: np.random.Generator) -> dict[str, tuple[Any, ...]]:
    """name -> (forward, backward, args, number of outputs, number of gradients)."""
    return {
        "affine": (
            cs.affine_forward,
            cs.affine_backward,
            (rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)),
            1,
            3,
        ),
        "relu": (cs.relu_forward, cs.relu_backward, (away_from_zero(rng, 3, 4),), 1, 1),
        "batchnorm": (cs.batchnorm_forward, cs.batchnorm_backward, bn_args(rng, "train"), 1, 3),
        "layernorm": (cs.layernorm_forward, cs.layernorm_backward, bn_args(rng, "train"), 1, 3),
        "dropout": (
            cs.dropout_forward,
            cs.dropout_backward,
            (rng.normal(size=(4, 5)), {"p": 0.5, "mode": "train", "seed": 0}),
            1,
            1,
        ),
        "lstm_step": (cs.lstm_step_forward, cs.lstm_step_backward, lstm_args(rng), 2, 6),
        "word_embedding": (
            cs.word_embedding_forward,
            cs.word_embedding_backward,
            (np.array([[0, 2], [2, 1]]), rng.normal(size=(3, 4))),
            1,
            1,
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["affine", "relu", "batchnorm", "layernorm", "dropout", "lstm_step", "word_embedding"],
)
def test_mutant_backward_differs_at_the_named_gradient_only(
    rng: np.random.Generator, name: str
) -> None:
    forward, backward, args, n_outputs, n_grads = pair_cases(rng)[name]
    result = forward(*args)
    douts, cache = [rng.normal(size=o.shape) for o in result[:n_outputs]], result[n_outputs]

    def as_tuple(grads: Any) -> tuple[Any, ...]:
        return grads if isinstance(grads, tuple) else (grads,)

    expected = as_tuple(backward(*douts, cache))
    for which in range(n_grads):
        wrong = cs.mutant_backward(backward, which)
        assert wrong.__name__ == backward.__name__
        got = as_tuple(wrong(*douts, cache))
        assert differing(got, expected) == [which]
        np.testing.assert_array_equal(got[which], cs.MUTANT_SCALE * expected[which])
    if n_grads == 1:
        with pytest.raises(IndexError):
            cs.mutant_backward(backward, 1)(*douts, cache)


@pytest.mark.parametrize(
    "fn",
    [
        cs.softmax_loss,
        cs.svm_loss,
        cs.softmax_loss_naive,
        cs.temporal_softmax_loss,
        softmax_cross_entropy,
        mse,
    ],
    ids=lambda fn: fn.__name__,
)
def test_mutant_value_and_grad_keeps_the_loss_and_scales_the_gradient(
    rng: np.random.Generator, fn: Callable[..., tuple[float, np.ndarray]]
) -> None:
    x, y = classification(rng)
    args: tuple[Any, ...] = {
        "softmax_loss_naive": (rng.normal(size=(4, 4)), x, y, 0.1),
        "temporal_softmax_loss": (
            rng.normal(size=(2, 3, 4)),
            rng.integers(0, 4, size=(2, 3)),
            np.array([[True, True, False], [True, False, False]]),
        ),
        "mse": (x, rng.normal(size=x.shape)),
    }.get(fn.__name__, (x, y))
    loss, grad = fn(*args)
    wrong_loss, wrong_grad = cs.mutant_value_and_grad(fn)(*args)
    assert wrong_loss == loss
    assert not np.array_equal(wrong_grad, grad)
    np.testing.assert_array_equal(wrong_grad, cs.MUTANT_SCALE * grad)
    with pytest.raises(IndexError):
        cs.mutant_value_and_grad(fn, 1)(*args)


def test_mutant_value_and_grad_with_a_tuple_of_gradients(rng: np.random.Generator) -> None:
    def pair_loss(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        return float(np.sum(a * b)), (b, a)

    a, b = rng.normal(size=3), rng.normal(size=3)
    loss, (da, db) = cs.mutant_value_and_grad(pair_loss, 1)(a, b)
    assert loss == pair_loss(a, b)[0]
    assert np.array_equal(da, b) and np.array_equal(db, 2.0 * a)


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda cls: cls(5, 6, 3, weight_scale=0.5, reg=0.1, seed=1), "b1"),
        (lambda cls: cls(5, 6, 3, weight_scale=0.5, reg=0.1, seed=1), "W2"),
        (
            lambda cls: cls(
                [6, 4],
                input_dim=5,
                num_classes=3,
                normalization="batchnorm",
                dropout_keep_ratio=0.6,
                reg=0.1,
                dtype=np.float64,
                seed=1,
            ),
            "gamma1",
        ),
    ],
    ids=["two-layer-b1", "two-layer-W2", "fc-gamma1"],
)
def test_mutant_model_differs_at_the_named_parameter_only(
    rng: np.random.Generator, make: Callable[[type[Any]], Any], key: str
) -> None:
    cls = cs.TwoLayerNet if key != "gamma1" else cs.FullyConnectedNet
    reference, wrong = make(cls), make(cs.mutant_model(cls, key))
    assert isinstance(wrong, cls) and type(wrong).__name__ == f"{cls.__name__}_wrong_{key}"
    X, y = rng.normal(size=(4, 5)), rng.integers(0, 3, size=4)
    loss, grads = reference.loss(X, y)
    wrong_loss, wrong_grads = wrong.loss(X, y)
    assert wrong_loss == loss and list(wrong_grads) == list(grads)
    assert [k for k in grads if not np.array_equal(grads[k], wrong_grads[k])] == [key]
    np.testing.assert_array_equal(wrong_grads[key], cs.MUTANT_SCALE * grads[key])
    np.testing.assert_array_equal(wrong.loss(X), reference.loss(X))


@pytest.mark.parametrize("which", ["dweights", "dbiases", "dinputs"])
def test_mutant_layer_in_an_nnfs_model(rng: np.random.Generator, which: str) -> None:
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    models = [
        cs.nnfs_model(l2=0.01),
        cs.nnfs_model(l2=0.01, first_layer=cs.mutant_layer(cs.Layer_Dense, which)),
    ]
    for model in models:
        model.backward(model.forward(X, training=True), y)
    reference, wrong = (m.layers[0] for m in models)
    for attr in ("dweights", "dbiases", "dinputs"):
        same = np.array_equal(getattr(wrong, attr), getattr(reference, attr))
        assert same == (attr != which), attr
    np.testing.assert_array_equal(
        getattr(wrong, which), cs.MUTANT_SCALE * getattr(reference, which)
    )
    assert all(  # the layers after it are untouched
        np.array_equal(a.dinputs, b.dinputs)
        for a, b in zip(models[0].layers[1:], models[1].layers[1:])
    )


@pytest.mark.parametrize("which", ["grads.Wx", "grads.Wh", "grads.b", 0, 1, 2])
def test_mutant_layer_lstm_cell(which: str | int) -> None:
    cells, outputs = [], []
    for cls in (LSTMCell, cs.mutant_layer(LSTMCell, which)):
        cell, inputs = cls.gradcheck_case(np.random.default_rng(0))
        h, c = cell.forward(*inputs)
        outputs.append(cell.backward(np.ones_like(h), np.ones_like(c)))
        cells.append(cell)
    returned = differing(outputs[1], outputs[0])
    changed = [
        k for k in cells[0].grads if not np.array_equal(cells[0].grads[k], cells[1].grads[k])
    ]
    if isinstance(which, int):
        assert returned == [which] and changed == []
    else:
        assert returned == [] and changed == [which.partition(".")[2]]


def test_the_reference_loop_rejects_the_mutants(rng: np.random.Generator) -> None:
    """The central-difference loop above can fail: it catches one wrong gradient per shape."""
    x, w, b = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)
    with pytest.raises(AssertionError, match=r"^w:"):
        check_pair(
            cs.affine_forward,
            cs.mutant_backward(cs.affine_backward, 1),
            (x, w, b),
            {0: "x", 1: "w", 2: "b"},
        )
    with pytest.raises(AssertionError, match=r"^prev_c:"):
        check_pair(
            cs.lstm_step_forward,
            cs.mutant_backward(cs.lstm_step_backward, 2),
            lstm_args(rng),
            LSTM_WRT,
            n_outputs=2,
        )
    with pytest.raises(AssertionError, match=r"^softmax_loss:"):
        check_value_and_grad(
            cs.mutant_value_and_grad(cs.softmax_loss, scale=1.001), classification(rng)
        )
    model = cs.mutant_model(cs.FullyConnectedNet, "beta1")(
        [6, 5], input_dim=4, num_classes=3, normalization="batchnorm", dtype=np.float64, seed=3
    )
    with pytest.raises(AssertionError, match=r"^beta1:"):
        check_model(
            model, rng.normal(size=(7, 4)), rng.integers(0, 3, size=7), zero=frozenset({"b1", "b2"})
        )


def test_mutant_layer_with_other_signatures(rng: np.random.Generator) -> None:
    x, W, b = signature_case(rng)
    dout = rng.normal(size=(4, 2))

    ref, wrong = cs.AffineInputBack(W, b), cs.mutant_layer(cs.AffineInputBack, "db")(W, b)
    assert np.array_equal(wrong.backward(x, dout), ref.backward(x, dout))
    assert np.array_equal(wrong.dW, ref.dW) and np.array_equal(wrong.db, 2.0 * ref.db)

    cached = cs.AffineCacheMethods(W, b)
    wrong_cached = cs.mutant_layer(cs.AffineCacheMethods, "grads.W")(W, b)
    _, cache = cached.forward(x)
    assert np.array_equal(wrong_cached.backward(dout, cache), cached.backward(dout, cache))
    assert np.array_equal(wrong_cached.grads["W"], 2.0 * cached.grads["W"])
    assert np.array_equal(wrong_cached.grads["b"], cached.grads["b"])

    returned = cs.AffineGradsReturned(W, b)
    wrong_returned = cs.mutant_layer(cs.AffineGradsReturned, (1, "b"))(W, b)
    assert type(wrong_returned).__name__ == "AffineGradsReturned_wrong_1_b"
    returned.forward(x)
    wrong_returned.forward(x)
    dx, grads = returned.backward(dout)
    wrong_dx, wrong_grads = wrong_returned.backward(dout)
    assert np.array_equal(wrong_dx, dx) and np.array_equal(wrong_grads["W"], grads["W"])
    assert np.array_equal(wrong_grads["b"], 2.0 * grads["b"])
