"""Discovery finds value-and-gradient functions and models (with their `gradcheck_case`) as it
finds layers, each a target of its own kind; `pytest_gradcheck_discover_target` lets a project
teach it what else counts as checkable (layers with `forward_pass`/`backward_pass`)."""

from __future__ import annotations

import sys

import pytest
from helpers import QUIET_PLUGINS, importable_package

from pytest_gradcheck.discovery import (
    CLASS,
    FUNCTION,
    MODEL,
    PAIR,
    DiscoveredTarget,
    find_targets,
    kind_of,
    to_case,
)
from pytest_gradcheck.errors import GradcheckUsageError

LOSSES = '''
import numpy as np
from pytest_gradcheck import SkipCase


def softmax_loss(x, y):
    """(loss, dx) of the mean softmax cross-entropy."""
    shifted = x - x.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.log(p[np.arange(n), y]).mean()
    dx = p.copy()
    dx[np.arange(n), y] -= 1.0
    return loss, dx / n


softmax_loss.gradcheck_case = lambda rng: (rng.normal(size=(5, 4)), rng.integers(0, 4, size=5))


def softmax_loss_bug(x, y):
    loss, dx = softmax_loss(x, y)
    return loss, dx * x.shape[0]  # forgets the mean's 1/N


softmax_loss_bug.gradcheck_case = softmax_loss.gradcheck_case


def helper(x):  # no declaration: not a target
    return x


def scale_forward(x, w):
    return x * w, (x, w)


def scale_backward(dout, cache):
    x, w = cache
    return dout * w, (dout * x).sum(axis=0)


scale_forward.gradcheck_case = lambda rng: (rng.normal(size=(3, 2)), rng.normal(size=2))


class TwoLayerNet:
    """loss(X, y) -> (loss, grads) over self.params."""

    def __init__(self, rng, slip=1.0):
        self.params = {"W1": rng.normal(size=(4, 5)) * 0.5, "W2": rng.normal(size=(5, 3)) * 0.5}
        self.slip = slip

    def loss(self, X, y):
        h = np.tanh(X @ self.params["W1"])
        scores = h @ self.params["W2"]
        loss, dscores = softmax_loss(scores, y)
        dh = dscores @ self.params["W2"].T * (1 - h**2)
        return loss, {"W1": X.T @ dh, "W2": h.T @ dscores * self.slip}

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(rng), (rng.normal(size=(6, 4)), rng.integers(0, 3, size=6))


class TwoLayerNetBug(TwoLayerNet):
    @classmethod
    def gradcheck_case(cls, rng):
        return cls(rng, slip=1.1), (rng.normal(size=(6, 4)), rng.integers(0, 3, size=6))


class NeedsData(TwoLayerNet):
    @classmethod
    def gradcheck_case(cls, rng):
        raise SkipCase("needs the CIFAR-10 files; set CIFAR_DIR to check it")


class LossOnly:
    """A loss method but no declaration: many classes have one, so not a target."""

    def loss(self, X, y):
        return 0.0, {}


class OptedOut(TwoLayerNet):
    gradcheck_case = None
'''

EXPECTED = [
    ("shapes.losses.softmax_loss", FUNCTION),
    ("shapes.losses.softmax_loss_bug", FUNCTION),
    ("shapes.losses.scale", PAIR),
    ("shapes.losses.TwoLayerNet", MODEL),
    ("shapes.losses.TwoLayerNetBug", MODEL),
    ("shapes.losses.NeedsData", MODEL),
]


@pytest.fixture
def shapes_pkg(pytester: pytest.Pytester) -> pytest.Pytester:
    return importable_package(pytester, "shapes", {"losses.py": LOSSES})


def test_functions_and_models_are_targets_of_their_own_kind(shapes_pkg: pytest.Pytester) -> None:
    targets = find_targets(["shapes"])
    assert [(t.name, t.kind) for t in targets] == EXPECTED
    assert [kind_of(t.obj) for t in targets] == [t.kind for t in targets]


def test_discovered_items_are_named_after_them(shapes_pkg: pytest.Pytester) -> None:
    result = shapes_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=shapes", "--co", "-q")
    ids = [line for line in result.outlines if line.startswith("gradcheck::")]
    assert ids == [f"gradcheck::{name}" for name, _ in EXPECTED]


def test_a_model_skips_with_its_reason(shapes_pkg: pytest.Pytester) -> None:
    result = shapes_pkg.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=shapes", "-k", "NeedsData", "-rs"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs the CIFAR-10 files; set CIFAR_DIR to check it*"])


def test_declarations_become_cases_of_their_kind(shapes_pkg: pytest.Pytester) -> None:
    import numpy as np

    targets = {t.short_name: t for t in find_targets(["shapes"])}
    rng = np.random.default_rng(0)
    loss = targets["softmax_loss"]
    case = to_case(loss.obj.gradcheck_case(rng), loss)
    assert case.layer is loss.obj and [a.shape for a in case.inputs] == [(5, 4), (5,)]
    net = targets["TwoLayerNet"]
    case = to_case(net.obj.gradcheck_case(rng), net)
    assert isinstance(case.layer, net.obj) and len(case.inputs) == 2
    with pytest.raises(GradcheckUsageError, match=r"return \(model, inputs\)"):
        to_case(42, net)
    with pytest.raises(GradcheckUsageError, match="return the function's argument tuple"):
        to_case(42, loss)


def test_a_function_declared_by_a_hook_without_a_case_skips_with_the_fix(
    shapes_pkg: pytest.Pytester,
) -> None:
    shapes_pkg.makeconftest(
        """
        def pytest_gradcheck_discover_target(name, obj):
            return "function" if name == "shapes.losses.helper" else None
        """
    )
    result = shapes_pkg.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=shapes", "-k", "helper", "-rs"
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*no gradcheck_case declaration: set `helper.gradcheck_case = lambda rng:*"]
    )


def test_a_hook_returning_an_unknown_kind_is_a_collection_error(
    shapes_pkg: pytest.Pytester,
) -> None:
    shapes_pkg.makeconftest(
        """
        def pytest_gradcheck_discover_target(name, obj):
            return "layer"
        """
    )
    result = shapes_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=shapes")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["*pytest_gradcheck_discover_target returned 'layer' for shapes.losses.softmax_loss*"]
    )


def test_discovered_functions_and_models_are_checked(shapes_pkg: pytest.Pytester) -> None:
    result = shapes_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=shapes", "-k", "not Need")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*gradcheck shapes.losses.softmax_loss_bug: FAILED*"])
    result.stdout.fnmatch_lines(["*gradcheck shapes.losses.TwoLayerNetBug: FAILED*", "*W2*FAIL*"])


def test_example_nn_losses_are_checked_through_discovery(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=example_nn.losses", "-v"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*gradcheck::example_nn.losses.softmax_cross_entropy PASSED*"])


# -- a library whose layers say forward_pass / backward_pass -----------------------------------

LEGACY = '''
import numpy as np


class Dense:
    def __init__(self, n_in, n_out, rng):
        self.W = rng.normal(size=(n_in, n_out)) * n_in**-0.5
        self.b = np.zeros(n_out)

    def forward_pass(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward_pass(self, dy):
        self.dW = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.W.T

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(4, 3, rng), (rng.normal(size=(5, 4)),)


class DenseBiasBug(Dense):
    def backward_pass(self, dy):
        dx = super().backward_pass(dy)
        self.db = dy.mean(axis=0)
        return dx


class Helper:
    """Neither a layer nor a model."""
'''

LEGACY_CONFTEST = '''
from pytest_gradcheck import LayerAccess


def is_legacy_layer(obj):
    return callable(getattr(obj, "forward_pass", None)) and callable(
        getattr(obj, "backward_pass", None)
    )


def pytest_gradcheck_discover_target(name, obj):
    if isinstance(obj, type) and is_legacy_layer(obj):
        return "class"
    return None


class LegacyAccess(LayerAccess):
    def __init__(self, layer, hook, label):
        self.layer, self.hook = layer, hook
        self.label = label or type(layer).__name__

    def state_roots(self):
        return [self.layer]

    def forward(self, inputs):
        return self.layer.forward_pass(*inputs)

    def backward(self, dout):
        return [self.layer.backward_pass(dout)]

    def parameters(self):
        return self.hook.pytest_gradcheck_layer_parameters(layer=self.layer, path="")


def pytest_gradcheck_adapt(obj, label, hook):
    if is_legacy_layer(obj) and not isinstance(obj, type):
        return LegacyAccess(obj, hook, label)
    return None
'''


@pytest.fixture
def legacy(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(legacynet=LEGACY)
    pytester.syspathinsert()
    return pytester


def test_without_the_hook_such_layers_are_not_found(legacy: pytest.Pytester) -> None:
    result = legacy.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=legacynet")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_a_conftest_hook_makes_them_discoverable_and_checkable(legacy: pytest.Pytester) -> None:
    legacy.makeconftest(LEGACY_CONFTEST)
    result = legacy.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=legacynet", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*gradcheck::legacynet.Dense PASSED*",
            "*gradcheck::legacynet.DenseBiasBug FAILED*",
        ]
    )
    result.stdout.fnmatch_lines(["*gradcheck legacynet.DenseBiasBug: FAILED*", "  b *param*FAIL"])
    assert "Helper" not in result.stdout.str()


def test_the_command_line_asks_the_same_hook(legacy: pytest.Pytester) -> None:
    legacy.makepyfile(legacy_plugin=LEGACY_CONFTEST)
    result = legacy.run(
        sys.executable, "-m", "pytest_gradcheck", "legacynet", "-p", "legacy_plugin", "-q"
    )
    assert result.ret == 1
    result.stdout.fnmatch_lines(["gradcheck: 1 passed, 1 failed, 0 skipped, 0 error(s)*"])


def test_kind_of_follows_the_built_in_rules() -> None:
    def f(x: object) -> object:
        return x

    class Layer:
        def forward(self, x: object) -> object:
            return x

        def backward(self, d: object) -> object:
            return d

    assert kind_of((f, f)) == PAIR and kind_of(f) == FUNCTION and kind_of(Layer) == CLASS
    assert DiscoveredTarget("m.f", FUNCTION, f).short_name == "f"
