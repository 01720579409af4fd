"""Discovery: `gradcheck_discover` / `--gradcheck-discover` collect one item per layer class and
function pair, `python -m pytest_gradcheck` does the same without test files, and the JSON
report holds every result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import QUIET_PLUGINS, importable_package

from pytest_gradcheck import Options
from pytest_gradcheck.__main__ import main
from pytest_gradcheck.discovery import find_targets, is_stub

# Plugins of this environment that slow every in-process run down and play no part here.

PKG_INIT = '"""A tiny layer package."""\n'

PKG_DENSE = '''
import numpy as np


class Base:
    """Abstract base: its forward is a stub, so discovery leaves it out."""

    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError


class Scale(Base):
    def __init__(self, n):
        self.W = np.linspace(0.5, 1.5, n)

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0)
        return dout * self.W

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(3), (rng.normal(size=(4, 3)),)


class ScaleBug(Scale):
    """Inherits the declaration; backward forgets the batch sum of dW."""

    def backward(self, dout):
        self.dW = (dout * self.x).mean(axis=0)
        return dout * self.W


class NoCase(Scale):
    gradcheck_case = None  # opts out of the inherited declaration... for itself only


class NeedsData(Scale):
    @classmethod
    def gradcheck_case(cls, rng):
        from pytest_gradcheck import SkipCase
        raise SkipCase("needs the MNIST files; set MNIST_DIR to check it")


class Unbuildable(Base):
    """A real layer with no declaration: skipped with the reason and the fix."""

    def __init__(self, size):
        self.size = size

    def forward(self, x):
        return x

    def backward(self, dout):
        return dout


class _Private(Scale):
    pass
'''

PKG_FUNCS = """
import numpy as np


def affine_forward(x, w, b):
    return x @ w + b, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


affine_forward.gradcheck_case = lambda rng: (
    rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=2)
)


def relu_forward(x):
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def helper_forward(x):  # no matching backward: not a pair
    return x
"""

PKG_MAIN = 'raise SystemExit("discovery must never import __main__")\n'


@pytest.fixture
def layer_pkg(pytester: pytest.Pytester) -> pytest.Pytester:
    return importable_package(pytester, "tinylayers", {
        "__init__.py": PKG_INIT, "dense.py": PKG_DENSE, "funcs.py": PKG_FUNCS,
        "__main__.py": PKG_MAIN,
    })


EXPECTED_IDS = [
    "gradcheck::tinylayers.dense.Scale",
    "gradcheck::tinylayers.dense.ScaleBug",
    "gradcheck::tinylayers.dense.NeedsData",
    "gradcheck::tinylayers.dense.Unbuildable",
    "gradcheck::tinylayers.funcs.affine",
    "gradcheck::tinylayers.funcs.relu",
]


def test_discovery_collects_one_item_per_layer_class_and_pair(layer_pkg: pytest.Pytester):
    result = layer_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=tinylayers", "--co", "-q")
    assert [line for line in result.outlines if line.startswith("gradcheck::")] == EXPECTED_IDS


def test_discovered_items_run_fail_and_skip_with_reasons(layer_pkg: pytest.Pytester):
    json_path = layer_pkg.path / "out.json"
    result = layer_pkg.runpytest(
        *QUIET_PLUGINS,
        "--gradcheck-discover",
        "tinylayers",
        "-rs",
        f"--gradcheck-json={json_path}",
        "--gradcheck-summary=full",
    )
    result.assert_outcomes(passed=2, failed=1, skipped=3)
    result.stdout.fnmatch_lines(
        [
            "*gradcheck tinylayers.dense.ScaleBug: FAILED*",
            "*W*param*FAIL*",
            "*SKIPPED gradcheck::tinylayers.dense.NeedsData: needs the MNIST files*",
            "*SKIPPED gradcheck::tinylayers.dense.Unbuildable: no gradcheck_case declaration:"
            " add a classmethod `gradcheck_case(cls, rng)` to Unbuildable*",
            "*SKIPPED gradcheck::tinylayers.funcs.relu: no gradcheck_case declaration:"
            " set `relu_forward.gradcheck_case = lambda rng:*",
        ]
    )
    payload = json.loads(json_path.read_text())
    assert payload["seed"] == 0
    results = {r["nodeid"]: r for r in payload["results"]}
    assert sorted(results) == [
        "gradcheck::tinylayers.dense.Scale",
        "gradcheck::tinylayers.dense.ScaleBug",
        "gradcheck::tinylayers.funcs.affine",
    ]
    bug = results["gradcheck::tinylayers.dense.ScaleBug"]
    assert bug["ok"] is False and bug["label"] == "tinylayers.dense.ScaleBug"
    assert [(e["name"], e["status"]) for e in bug["entries"]] == [("x", "ok"), ("W", "FAIL")]
    assert bug["entries"][1]["shape"] == [3] and bug["entries"][1]["failed"] == 3
    affine = results["gradcheck::tinylayers.funcs.affine"]
    assert [e["name"] for e in affine["entries"]] == ["x", "w", "b"]
    assert {s["nodeid"] for s in payload["skipped"]} == {
        "gradcheck::tinylayers.dense.NeedsData",
        "gradcheck::tinylayers.dense.Unbuildable",
        "gradcheck::tinylayers.funcs.relu",
    }


def test_json_holds_builtin_types_only(layer_pkg: pytest.Pytester):
    json_path = layer_pkg.path / "out.json"
    layer_pkg.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=tinylayers.funcs", f"--gradcheck-json={json_path}"
    )
    payload = json.loads(json_path.read_text())
    (result,) = payload["results"]
    assert set(result) >= {
        "nodeid",
        "label",
        "ok",
        "seed",
        "mode",
        "max_rel_error",
        "elapsed",
        "entries",
    }
    assert all(
        type(v) in (int, float, str, list, bool, type(None))
        for e in result["entries"]
        for v in e.values()
    )


def test_discovered_items_honour_k_m_and_the_seed(layer_pkg: pytest.Pytester):
    result = layer_pkg.runpytest(
        *QUIET_PLUGINS,
        "--gradcheck-discover=tinylayers",
        "-k",
        "Scale and not Bug",
        "-m",
        "gradcheck",
        "--gradcheck-seed=17",
        "-v",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*gradcheck::tinylayers.dense.Scale PASSED*",
            "*gradcheck::tinylayers.dense.Scale*ok*17*",
        ]
    )


def test_the_ini_option_discovers_for_whole_directory_runs_only(layer_pkg: pytest.Pytester):
    layer_pkg.makeini("[pytest]\ngradcheck_discover = tinylayers.funcs\n")
    layer_pkg.makepyfile(test_plain="def test_plain():\n    pass\n")
    layer_pkg.runpytest(*QUIET_PLUGINS).assert_outcomes(passed=2, skipped=1)
    layer_pkg.runpytest(*QUIET_PLUGINS, "test_plain.py").assert_outcomes(passed=1)
    layer_pkg.runpytest(
        *QUIET_PLUGINS, "test_plain.py", "--gradcheck-discover=tinylayers.funcs"
    ).assert_outcomes(passed=2, skipped=1)


def test_a_make_case_hook_builds_what_has_no_declaration(layer_pkg: pytest.Pytester):
    layer_pkg.makeconftest(
        """
        import numpy as np
        from pytest_gradcheck import Case

        def pytest_gradcheck_make_case(target, name, rng):
            if name == "tinylayers.dense.Unbuildable":
                return Case(target(3), (rng.normal(size=(2, 3)),))
            if name == "tinylayers.funcs.relu":
                return Case(target, (rng.uniform(0.1, 1.0, size=(2, 3)),))
            return None
        """
    )
    result = layer_pkg.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=tinylayers", "-k", "Unbuildable or relu"
    )
    result.assert_outcomes(passed=2)


def test_an_unimportable_module_is_a_collection_error(layer_pkg: pytest.Pytester):
    result = layer_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=no_such_pkg")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*cannot import 'no_such_pkg'*"])


def test_a_broken_declaration_fails_rather_than_skips(layer_pkg: pytest.Pytester):
    (layer_pkg.path / "tinylayers" / "broken.py").write_text(
        "class Oops:\n"
        "    def forward(self, x):\n        return x\n"
        "    def backward(self, d):\n        return d\n"
        "    @classmethod\n"
        "    def gradcheck_case(cls, rng):\n        return cls(), undefined_name\n"
    )
    result = layer_pkg.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=tinylayers.broken")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NameError*undefined_name*"])


def test_find_targets_and_stub_detection(layer_pkg: pytest.Pytester):
    targets = find_targets(["tinylayers"])
    assert [t.name for t in targets] == [i.split("::")[1] for i in EXPECTED_IDS]
    assert [t.kind for t in targets] == ["class"] * 4 + ["pair"] * 2

    def stub(self, x):
        """Doc."""
        raise NotImplementedError("subclass me")

    def real(self, x):
        return x

    assert is_stub(stub) and not is_stub(real)


def test_example_nn_bases_are_left_out_and_every_layer_found():
    names = [t.short_name for t in find_targets(["example_nn"])]
    assert "Module" not in names and "Layer" not in names
    assert names == [
        "Linear",
        "ReLU",
        "LeakyReLU",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "BatchNorm1d",
        "LayerNorm",
        "Dropout",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "Sequential",
        "softmax_cross_entropy",  # value-and-gradient functions declaring gradcheck_case
        "mse",
        "LSTMCell",
    ]


# -- python -m pytest_gradcheck --------------------------------------------------------------


def run_cli(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(sys.executable, "-m", "pytest_gradcheck", *args)


def test_cli_exit_codes(layer_pkg: pytest.Pytester):
    ok = run_cli(layer_pkg, "tinylayers.funcs")
    assert ok.ret == 0, ok.outlines
    ok.stdout.fnmatch_lines(
        [
            "gradcheck tinylayers.funcs.affine: ok  seed=0*",
            "*array*kind*shape*max rel err*",
            "*x*input*3x4*ok",
            "*w*input*4x2*ok",
            "*b*input*2*ok",
            "gradcheck tinylayers.funcs.relu: SKIPPED  no gradcheck_case declaration*",
            "gradcheck: 1 passed, 0 failed, 1 skipped, 0 error(s) in *s (seed=0)",
        ]
    )
    failed = run_cli(layer_pkg, "tinylayers", "--seed", "3")
    assert failed.ret == 1
    failed.stdout.fnmatch_lines(
        [
            "*where W is wrong (3 of 3 elements)*",
            "gradcheck: 2 passed, 1 failed, 3 skipped, 0 error(s)*seed=3*",
        ]
    )
    missing = run_cli(layer_pkg, "no_such_pkg")
    assert missing.ret == 2
    missing.stderr.fnmatch_lines(["*cannot import 'no_such_pkg'*"])
    assert run_cli(layer_pkg, "tinylayers", "--mode", "bogus").ret == 2


def test_cli_in_process_json_plugins_and_usage(
    layer_pkg: pytest.Pytester, capsys: pytest.CaptureFixture[str]
):
    layer_pkg.makepyfile(
        relu_cases="""
        from pytest_gradcheck import Case

        def pytest_gradcheck_make_case(target, name, rng):
            if name.endswith(".relu"):
                return Case(target, (rng.uniform(0.1, 1.0, size=(2, 3)),), {"mode": "fast"})
            return None
        """
    )
    out_json = Path(layer_pkg.path / "cli.json")
    code = main(["tinylayers.funcs", "-p", "relu_cases", "-q", "--json", str(out_json)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "gradcheck: 2 passed, 0 failed, 0 skipped" in printed
    assert "input  3x4" not in printed  # -q: tables of failed checks only
    payload = json.loads(out_json.read_text())
    assert [(r["nodeid"], r["mode"]) for r in payload["results"]] == [
        ("gradcheck::tinylayers.funcs.affine", Options().mode),
        ("gradcheck::tinylayers.funcs.relu", "fast"),
    ]
    assert payload["skipped"] == [] and payload["errors"] == []
    # The plugin was only registered for that run.
    assert main(["tinylayers.funcs", "-q"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert main(["tinylayers.dense.Base"]) == 2  # not a module
    assert main(["json"]) == 2  # importable, but nothing to check


def test_json_stays_strict_when_a_gradient_is_nan(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np

        class NanGrad:
            def forward(self, x):
                return 2.0 * x

            def backward(self, dout):
                dx = 2.0 * dout
                dx[0, 0] = np.nan
                return dx

        def test_nan(gradcheck):
            gradcheck(NanGrad(), np.ones((2, 2)))
        """
    )
    json_path = pytester.path / "out.json"
    result = pytester.runpytest(*QUIET_PLUGINS, f"--gradcheck-json={json_path}")
    result.assert_outcomes(failed=1)

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    payload = json.loads(json_path.read_text(), parse_constant=reject)
    (entry,) = payload["results"][0]["entries"]
    assert entry["status"] == "FAIL"
    assert entry["max_rel_error"] == "inf"
    assert entry["analytic"] == "nan"
    assert entry["worst_index"] == [0, 0]
