"""A `pytest_gradcheck_*` hook in a directory's conftest.py applies to the tests in that
directory and below only, as pytest's own hooks do (`item.ihook`), whatever else the run
collects; discovered items sit at the rootdir, so the rootdir's conftest.py applies to them
and a test directory's does not."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import QUIET_PLUGINS

# Its bias gradient is a mean instead of a sum: the `b` row fails whenever `b` is checked.
LAYERS = """
import numpy as np


class BiasBug:
    def __init__(self):
        self.W = np.linspace(0.5, 1.5, 3)
        self.b = np.linspace(-1.0, 1.0, 3)

    def forward(self, x):
        self.x = x
        return x * self.W + self.b

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0)
        self.db = dout.mean(axis=0)
        return dout * self.W

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(), (rng.normal(size=(4, 3)),)


class NoCase:
    def __init__(self):
        self.W = np.linspace(0.5, 1.5, 3)

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0)
        return dout * self.W


def x():
    return np.random.default_rng(0).normal(size=(4, 3))
"""

# Lists W only, so the wrong bias gradient goes unchecked; notes every result it receives.
HIDES_THE_BIAS = """
from pytest_gradcheck import Param


def pytest_gradcheck_layer_parameters(layer, path):
    return [Param("W", lambda: layer.W, lambda v: setattr(layer, "W", v),
                  lambda: getattr(layer, "dW", None))]


def pytest_gradcheck_result(result):
    with open("seen_by_a.txt", "a") as f:
        f.write(result.label + "\\n")
"""

TEST = """
from layers import BiasBug, x


def test_layer(gradcheck):
    gradcheck(BiasBug(), x(), label="{label}")
"""


def rows(payload: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Each check's node id and its (array, status) rows."""
    return {
        r["nodeid"]: [(e["name"], e["status"]) for e in r["entries"]] for r in payload["results"]
    }


def two_sibling_directories(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(layers=LAYERS)
    pytester.makeini("[pytest]\npythonpath = .\n")  # `layers` importable, in workers too
    pytester.mkdir("a")
    pytester.mkdir("b")
    (pytester.path / "a" / "conftest.py").write_text(HIDES_THE_BIAS)
    for label in ("a", "b"):
        (pytester.path / label / f"test_{label}.py").write_text(TEST.format(label=label))
    (pytester.path / "test_root.py").write_text(TEST.format(label="root"))


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_conftest_hook_applies_below_its_directory_only(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    two_sibling_directories(pytester)
    out = pytester.path / "out.json"
    args = [*QUIET_PLUGINS, f"--gradcheck-json={out}", "."]
    if xdist:
        result = pytester.runpytest_subprocess(*args, "-n", "2")
    else:
        result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=2)
    checked = rows(json.loads(out.read_text()))
    assert checked == {
        "a/test_a.py::test_layer": [("x", "ok"), ("W", "ok")],  # the hook hides b
        "b/test_b.py::test_layer": [("x", "ok"), ("W", "ok"), ("b", "FAIL")],
        "test_root.py::test_layer": [("x", "ok"), ("W", "ok"), ("b", "FAIL")],
    }
    # The result hook too heard only of the check in its directory.
    assert (pytester.path / "seen_by_a.txt").read_text().split() == ["a"]


def test_the_root_test_fails_alike_alone_and_with_the_sibling_collected(
    pytester: pytest.Pytester,
) -> None:
    two_sibling_directories(pytester)
    for args in (["test_root.py"], ["."]):
        result = pytester.runpytest(*QUIET_PLUGINS, *args, "-k", "test_root")
        result.assert_outcomes(failed=1, deselected=2 if args == ["."] else 0)
        result.stdout.fnmatch_lines(["*b  *param*FAIL*"])


# -- discovered items: the rootdir's conftest.py, not a test directory's ------------------------

# Builds the case for NoCase, which has no gradcheck_case of its own.
ROOT_CONFTEST = """
import numpy as np
from pytest_gradcheck import Case


def pytest_gradcheck_make_case(target, name, rng):
    if name.endswith(".NoCase"):
        return Case(target(), (rng.normal(size=(4, 3)),))
    return None
"""


def test_discovered_items_take_the_rootdir_conftest_and_not_a_test_directory_s(
    pytester: pytest.Pytester,
) -> None:
    pkg = pytester.mkpydir("pkg")
    (pkg / "mod.py").write_text(LAYERS)
    pytester.makepyfile(layers=LAYERS)
    pytester.syspathinsert()
    pytester.makeconftest(ROOT_CONFTEST)
    pytester.mkdir("a")
    (pytester.path / "a" / "conftest.py").write_text(HIDES_THE_BIAS)
    (pytester.path / "a" / "test_a.py").write_text(TEST.format(label="a"))
    out = pytester.path / "out.json"
    result = pytester.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=pkg", f"--gradcheck-json={out}", "."
    )
    result.assert_outcomes(passed=2, failed=1)
    assert rows(json.loads(out.read_text())) == {
        "a/test_a.py::test_layer": [("x", "ok"), ("W", "ok")],
        "gradcheck::pkg.mod.BiasBug": [("x", "ok"), ("W", "ok"), ("b", "FAIL")],
        "gradcheck::pkg.mod.NoCase": [("x", "ok"), ("W", "ok")],  # built by the root's hook
    }
    assert (pytester.path / "seen_by_a.txt").read_text().split() == ["a"]
