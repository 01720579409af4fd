"""pytest-xdist gives the outcomes and seeds of a serial run, and gathers every worker's results
into the summary and the JSON file; `-p no:gradcheck` switches the plugin off cleanly.

Subprocess runs are slow, so there are few of them.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
from helpers import QUIET_PLUGINS, ran_on_two_workers

pytest.importorskip("xdist")

# Runs compared row by row collect their tests in one order: with pytest-randomly installed, one
# it shuffles with a fixed seed (rows then follow it, not the file), else the file's order.
if importlib.util.find_spec("pytest_randomly"):
    SAME_ORDER: tuple[str, ...] = ("-p", "randomly", "--randomly-seed=5")
else:
    SAME_ORDER = ()


LAYERS_TEST = """
import numpy as np
import pytest
from example_nn import BatchNorm1d, Dropout, Linear, Sigmoid, Tanh

class SigmoidBug(Sigmoid):
    def backward(self, dout):
        return dout * self._out * (1.0 + self._out)

LAYERS = {
    "linear": lambda rng: Linear(4, 3, rng=rng),
    "batchnorm": lambda rng: BatchNorm1d(4),
    "dropout": lambda rng: Dropout(0.3, rng=np.random.default_rng(1)),
    "tanh": lambda rng: Tanh(),
    "sigmoid_bug": lambda rng: SigmoidBug(),
}

@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer(gradcheck, name):
    rng = np.random.default_rng(0)
    gradcheck(LAYERS[name](rng), rng.normal(size=(6, 4)), mode="fast")

@pytest.mark.gradcheck(seed=11)
def test_marked_seed(gradcheck):
    gradcheck(Tanh(), np.linspace(-1.0, 1.0, 8))

def test_plain():
    pass
"""


def _run(pytester: pytest.Pytester, name: str, *args: str) -> tuple[Any, dict[str, Any]]:
    path = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess(
        *QUIET_PLUGINS, "--gradcheck-discover=example_nn", f"--gradcheck-json={path}", *args
    )
    return result, json.loads(path.read_text())


def _comparable(payload: dict[str, Any]) -> list[tuple[Any, ...]]:
    rows = []
    for r in payload["results"]:
        entries = [(e["name"], e["status"], e["max_rel_error"]) for e in r["entries"]]
        rows.append(
            (r["nodeid"], r["ok"], r["seed"], r["mode"], r["max_rel_error"], tuple(entries))
        )
    return rows  # in collection order, whichever worker ran what


def test_two_workers_match_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=LAYERS_TEST)
    serial, serial_json = _run(pytester, "serial", *SAME_ORDER, "--gradcheck-summary=full")
    parallel, parallel_json = _run(
        pytester, "parallel", *SAME_ORDER, "-n", "2", "--gradcheck-summary=full"
    )

    expected = {"passed": 22, "failed": 1}
    serial.assert_outcomes(**expected)
    parallel.assert_outcomes(**expected)
    assert ran_on_two_workers(parallel)
    assert len(serial_json["results"]) == 22  # 5 parametrized + 1 marked + 16 discovered
    assert _comparable(parallel_json) == _comparable(serial_json)
    seeds = {r["nodeid"]: r["seed"] for r in parallel_json["results"]}
    assert seeds["test_layers.py::test_marked_seed"] == 11
    assert {s for n, s in seeds.items() if n != "test_layers.py::test_marked_seed"} == {0}

    # The controller's summary lists the checks of both workers.
    for payload, run in ((serial_json, serial), (parallel_json, parallel)):
        run.stdout.fnmatch_lines(["*gradcheck: 22 check(s)*"])
        out = run.stdout.str()
        assert all(r["nodeid"] in out for r in payload["results"])
    parallel.stdout.fnmatch_lines(["*test_layers.py::test_layer?sigmoid_bug?*FAIL*fast*"])


def test_a_random_seed_is_chosen_once_and_shared_with_the_workers(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_layers=LAYERS_TEST)
    result, payload = _run(
        pytester, "random", "-n", "2", "--gradcheck-seed=random", "-k", "not marked_seed"
    )
    seeds = {r["seed"] for r in payload["results"]}
    assert len(seeds) == 1 and seeds == {payload["seed"]}
    result.stdout.fnmatch_lines([f"gradcheck: seed={payload['seed']} *"])


def test_disabling_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.hookimpl(optionalhook=True)
        def pytest_gradcheck_result(result):
            pass
        """
    )
    pytester.makepyfile(
        test_plain="""
        def square(x):
            return x * x

        def test_square():
            assert square(3) == 9

        def test_no_fixture(request):
            assert "gradcheck" not in request.fixturenames
        """
    )
    off = pytester.runpytest_subprocess(*QUIET_PLUGINS, "-p", "no:gradcheck")
    off.assert_outcomes(passed=2)
    assert "gradcheck" not in off.stdout.str()
    unknown = pytester.runpytest_subprocess(
        *QUIET_PLUGINS, "-p", "no:gradcheck", "--gradcheck-seed=1"
    )
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*unrecognized arguments: --gradcheck-seed=1*"])
