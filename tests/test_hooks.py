"""Our pluggy hooks, implemented from a conftest.py: adapting an unusual convention, adding a
loss term, a random source, overriding a built-in, and receiving every result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import QUIET_PLUGINS, importable_package

import pytest_gradcheck
from pytest_gradcheck import Param, check

# Plugins of this environment that slow every in-process run down and play no part here.

# A library whose layers never store parameter gradients: backward hands each one to an
# optimizer's update(param, grad), which changes the parameter in place.
OPTIMIZER_LIB = """
import numpy as np

class SGD:
    def __init__(self, lr=0.1):
        self.lr = lr

    def update(self, param, grad):
        param -= self.lr * grad

class Dense:
    trainable = ("kernel", "bias")

    def __init__(self, n_in, n_out, optimizer, rng):
        self.kernel = rng.normal(size=(n_in, n_out))
        self.bias = rng.normal(size=n_out)
        self.optimizer = optimizer

    def forward(self, x):
        self.x = x
        return x @ self.kernel + self.bias

    def backward(self, dy):
        dx = dy @ self.kernel.T
        self.optimizer.update(self.kernel, self.x.T @ dy)
        self.optimizer.update(self.bias, self.bias_grad(dy))
        return dx

    def bias_grad(self, dy):
        return dy.sum(axis=0)

class DenseBiasBug(Dense):
    def bias_grad(self, dy):
        return dy.mean(axis=0)
"""

OPTIMIZER_CONFTEST = """
import numpy as np
import pytest
from pytest_gradcheck import ObjectAccess, Param

class Capture:
    def __init__(self):
        self.grads = {}

    def update(self, param, grad):
        self.grads[id(param)] = np.array(grad, copy=True)

class OptimizerLayerAccess(ObjectAccess):
    \"\"\"Swap the optimizer for a recorder during backward; read gradients from it.\"\"\"

    captured = {}

    def backward(self, dout):
        real, capture = self.layer.optimizer, Capture()
        self.layer.optimizer = capture
        try:
            return super().backward(dout)
        finally:
            self.layer.optimizer = real
            self.captured = capture.grads

    def parameters(self):
        layer = self.layer

        def param(name):
            return Param(
                name,
                lambda: getattr(layer, name),
                lambda value: setattr(layer, name, value),
                lambda: self.captured.get(id(getattr(layer, name))),
                type(layer).__name__,
            )

        return [param(name) for name in layer.trainable]

@pytest.hookimpl
def pytest_gradcheck_adapt(obj, label, hook):
    if hasattr(obj, "optimizer") and hasattr(obj, "trainable"):
        return OptimizerLayerAccess(obj, hook, label)
    return None
"""

OPTIMIZER_TEST = """
import numpy as np
from optlib import SGD, Dense, DenseBiasBug

def test_dense(gradcheck):
    rng = np.random.default_rng(0)
    layer = Dense(3, 2, SGD(), rng)
    kernel = layer.kernel.copy()
    result = gradcheck(layer, rng.normal(size=(4, 3)))
    assert [e.name for e in result.entries] == ["x", "kernel", "bias"]
    np.testing.assert_array_equal(layer.kernel, kernel)  # the real optimizer never ran

def test_dense_bias_bug(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(DenseBiasBug(3, 2, SGD(), rng), rng.normal(size=(4, 3)))
"""


def test_conftest_adapts_a_layer_that_hands_gradients_to_an_optimizer(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(optlib=OPTIMIZER_LIB, test_opt=OPTIMIZER_TEST)
    pytester.makeconftest(OPTIMIZER_CONFTEST)
    result = pytester.runpytest(*QUIET_PLUGINS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gradcheck DenseBiasBug: FAILED*", "*bias*param*FAIL*"])


def test_without_the_hook_the_convention_is_not_understood(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(optlib=OPTIMIZER_LIB, test_opt=OPTIMIZER_TEST)
    result = pytester.runpytest(*QUIET_PLUGINS, "-k", "test_dense and not bug")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*parameter 'bias' has no gradient after backward*"])


REGULARISED_LAYER = """
import numpy as np

class DecayedLinear:
    \"\"\"backward adds the weight-decay gradient l2 * W to dW.\"\"\"

    def __init__(self, rng, l2=0.5):
        self.W = rng.normal(size=(3, 2))
        self.l2 = l2

    def forward(self, x):
        self.x = x
        return x @ self.W

    def backward(self, dout):
        self.dW = self.x.T @ dout + self.l2 * self.W
        return dout @ self.W.T

def test_decayed(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(DecayedLinear(rng), rng.normal(size=(4, 3)))
"""

LOSS_TERM_CONFTEST = """
import numpy as np

def pytest_gradcheck_loss_terms(layer):
    if hasattr(layer, "l2"):
        return [lambda layer: 0.5 * layer.l2 * float(np.sum(layer.W ** 2))]
    return []
"""


def test_a_loss_term_hook_adds_the_regulariser_to_the_objective(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_decay=REGULARISED_LAYER)
    without = pytester.runpytest(*QUIET_PLUGINS)
    without.assert_outcomes(failed=1)
    without.stdout.fnmatch_lines(["*W*param*FAIL*"])

    pytester.makeconftest(LOSS_TERM_CONFTEST)
    with_term = pytester.runpytest(*QUIET_PLUGINS)
    with_term.assert_outcomes(passed=1)


RANDOM_LAYER = """
import numpy as np

NOISE = np.random.default_rng(5)  # a module-level stream the checker cannot see

class NoisyScale:
    def __init__(self):
        self.w = np.array([1.5, -0.5, 2.0])

    def forward(self, x):
        self.x = x
        self.noise = 1.0 + 0.1 * NOISE.random(x.shape)
        return x * self.w * self.noise

    def backward(self, dout):
        self.dw = (dout * self.x * self.noise).sum(axis=0)
        return dout * self.w * self.noise

def test_noisy(gradcheck):
    rng = np.random.default_rng(0)
    gradcheck(NoisyScale(), rng.normal(size=(4, 3)))
"""

RANDOM_CONFTEST = """
def pytest_gradcheck_random_sources(layer):
    import test_noisy
    return [test_noisy.NOISE] if isinstance(layer, test_noisy.NoisyScale) else []
"""


def test_a_random_sources_hook_makes_a_hidden_stream_replayable(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_noisy=RANDOM_LAYER)
    without = pytester.runpytest(*QUIET_PLUGINS)
    without.assert_outcomes(failed=1)
    without.stdout.fnmatch_lines(["*pytest_gradcheck_random_sources*"])

    pytester.makeconftest(RANDOM_CONFTEST)
    pytester.runpytest(*QUIET_PLUGINS).assert_outcomes(passed=1)


OVERRIDE_TEST = """
import numpy as np

class Affine:
    def __init__(self, rng):
        self.params = {"W": rng.normal(size=(3, 2)), "b": np.zeros(2)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads = {"W": self.x.T @ dout, "b": dout.sum(axis=0)}
        return dout @ self.params["W"].T

def test_affine(gradcheck):
    rng = np.random.default_rng(0)
    result = gradcheck(Affine(rng), rng.normal(size=(4, 3)))
    assert [e.name for e in result.entries] == ["x", "W"]
"""

OVERRIDE_CONFTEST = """
from pytest_gradcheck.access import dict_param

def pytest_gradcheck_layer_parameters(layer, path):
    # firstresult: this answer wins over the built-in, which would list W and b.
    if type(layer).__name__ == "Affine":
        return [dict_param("W", layer, "params", "grads", "W", "Affine")]
    return None
"""


def test_a_conftest_implementation_overrides_the_built_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_override=OVERRIDE_TEST)
    pytester.makeconftest(OVERRIDE_CONFTEST)
    pytester.runpytest(*QUIET_PLUGINS).assert_outcomes(passed=1)


RESULT_CONFTEST = """
import json

SEEN = []

def pytest_gradcheck_result(result):
    SEEN.append({"label": result.label, "ok": result.ok, "rows": len(result.entries)})

def pytest_sessionfinish(session):
    with open("seen.json", "w") as f:
        json.dump(SEEN, f)
"""

RESULT_TEST = """
import numpy as np
import pytest

class Scale:
    def __init__(self, factor):
        self.factor = factor

    def forward(self, x):
        return self.factor * x

    def backward(self, dout):
        return 2.0 * dout  # right only for factor 2

@pytest.mark.parametrize("factor", [2.0, 3.0])
def test_scale(gradcheck, factor):
    gradcheck(Scale(factor), np.arange(1.0, 4.0), label=f"Scale{factor:g}")
"""


def test_the_result_hook_receives_every_result(pytester: pytest.Pytester) -> None:
    import json

    pytester.makeconftest(RESULT_CONFTEST)
    pytester.makepyfile(test_results=RESULT_TEST)
    pytester.runpytest(*QUIET_PLUGINS).assert_outcomes(passed=1, failed=1)
    seen = json.loads((pytester.path / "seen.json").read_text())  # in the order the tests ran
    assert sorted(seen, key=lambda r: r["label"]) == [
        {"label": "Scale2", "ok": True, "rows": 1},
        {"label": "Scale3", "ok": False, "rows": 1},
    ]


class _Tripler:
    """Stores its parameter under an unusual name the built-ins do not know."""

    def __init__(self) -> None:
        self.coef = np.array([3.0])
        self.coef_gradient = np.zeros(1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return self.coef * x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.coef_gradient = np.array([np.sum(dout * self.x)])
        return dout * self.coef


class _CoefPlugin:
    @pytest_gradcheck.conventions.hookimpl
    def pytest_gradcheck_layer_parameters(self, layer: Any, path: str) -> list[Param] | None:
        if not isinstance(layer, _Tripler):
            return None
        return [Param("coef", lambda: layer.coef, None, lambda: layer.coef_gradient)]


def test_plugins_registered_for_plain_check_calls_are_consulted() -> None:
    x = np.linspace(-1.0, 1.0, 5)
    assert [e.name for e in check(_Tripler(), x).entries] == ["x"]
    plugin = _CoefPlugin()
    pytest_gradcheck.register(plugin)
    try:
        result = check(_Tripler(), x)
    finally:
        pytest_gradcheck.unregister(plugin)
    assert result.ok, result
    assert [e.name for e in result.entries] == ["x", "coef"]


def _doc_blocks() -> dict[str, str]:
    """The python code blocks of docs/hooks.md, by the file name in their first-line comment."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "hooks.md").read_text()
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", text, flags=re.S)
    return dict(blocks)


def test_the_worked_example_in_docs_runs(pytester: pytest.Pytester) -> None:
    blocks = _doc_blocks()
    assert set(blocks) == {"tinyflow/layers.py", "conftest.py"}
    importable_package(pytester, "tinyflow", {"layers.py": blocks["tinyflow/layers.py"]})
    (pytester.path / "conftest.py").write_text(blocks["conftest.py"])
    pytester.makeini("[pytest]\ngradcheck_discover = tinyflow\n")
    result = pytester.runpytest(*QUIET_PLUGINS, "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*gradcheck::tinyflow.layers.Dense*ok*kernel=*bias=*"])
    log = (pytester.path / "gradcheck-log.csv").read_text().splitlines()
    assert [line.split(",")[:3] for line in log] == [
        ["tinyflow.layers.Dense", "x", "ok"],
        ["tinyflow.layers.Dense", "kernel", "ok"],
        ["tinyflow.layers.Dense", "bias", "ok"],
        ["tinyflow.layers.GaussianNoise", "x", "ok"],
    ]
