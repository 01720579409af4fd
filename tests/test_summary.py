"""The gradcheck summary after a pytest run and the JSON file: a line of counts and the rows of
failed and errored checks by default, every check with `-v` or `--gradcheck-summary=full`; a
check that could not run (a usage error) is listed with its message, status `error`, in the
summary and in `--gradcheck-json`, as in the JSON of `python -m pytest_gradcheck` (one writer),
also under pytest-xdist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import IN_FILE_ORDER, QUIET_PLUGINS, importable_package, ran_on_two_workers

from pytest_gradcheck.__main__ import main

LAYERS = """
import numpy as np
import pytest
from pytest_gradcheck import GradcheckUsageError


class Scale:
    def __init__(self, slip=1.0):
        self.W = np.linspace(0.5, 1.5, 3)
        self.slip = slip

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0) * self.slip
        return dout * self.W


class Raising(Scale):
    def backward(self, dout):
        raise RuntimeError("cache was cleared")


def x():
    return np.random.default_rng(0).normal(size=(4, 3))


@pytest.mark.parametrize("i", range(3))
def test_good(gradcheck, i):
    gradcheck(Scale(), x())


def test_bad(gradcheck):
    gradcheck(Scale(slip=1.5), x())


def test_raising(gradcheck):
    gradcheck(Raising(), x())


@pytest.mark.gradcheck(rtoll=1e-3)
def test_bad_marker(gradcheck):
    gradcheck(Scale(), x())


def test_expected_usage_error(gradcheck):
    with pytest.raises(pytest.fail.Exception, match="backward raised"):
        gradcheck(Raising(), x())
"""

PKG_FUNCS = """
import numpy as np


def affine_forward(x, w):
    return x @ w, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout @ w.T, x.T @ dout


affine_forward.gradcheck_case = lambda rng: (rng.normal(size=(3, 4)), rng.normal(size=(4, 2)))


def broken_forward(x):
    return x, x


def broken_backward(dout, cache):
    return dout


broken_forward.gradcheck_case = lambda rng: (undefined_name,)


def plain_forward(x):
    return x, x


def plain_backward(dout, cache):
    return dout
"""

ERROR_KEYS = {"nodeid", "status", "message"}


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    """LAYERS run in the order of the file, the order the tests expect their rows in."""
    pytester.makepyfile(test_layers=LAYERS)
    path = pytester.path / "out.json"
    result = pytester.runpytest(*QUIET_PLUGINS, *IN_FILE_ORDER, f"--gradcheck-json={path}", *args)
    return result, json.loads(path.read_text())


def summary(result: pytest.RunResult) -> list[str]:
    """The lines of the gradcheck summary: from its title to pytest's next section."""
    lines = result.outlines
    start = next(i for i, line in enumerate(lines) if " gradcheck: " in line and "---" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("==="))
    return lines[start:end]


def test_short_by_default_counts_then_failed_and_errored_rows(pytester: pytest.Pytester) -> None:
    result, _ = run(pytester)
    result.assert_outcomes(passed=4, failed=2, errors=1)  # the marker fails at setup
    lines = summary(result)
    assert "gradcheck: 6 check(s): 3 passed, 1 failed, 2 errored, 0 skipped" in lines[0]
    text = "\n".join(lines)
    assert "test_good" not in text  # passed checks are only counted
    assert "test_expected_usage_error" not in text  # the test caught its failure: not an error
    assert len(lines) == 6  # title, table header, three rows, the hint
    header, bad, raising, marker = lines[1:5]
    assert header.split()[:2] == ["check", "result"]
    assert bad.split()[:2] == ["test_layers.py::test_bad", "FAIL"]
    assert raising.split()[:2] == ["test_layers.py::test_raising", "ERROR"]
    assert raising.endswith("Raising: backward raised RuntimeError: cache was cleared")
    assert marker.split()[:2] == ["test_layers.py::test_bad_marker", "ERROR"]
    assert "unknown gradcheck option 'rtoll'" in marker
    assert lines[5] == "(passed checks and skips listed with -v or --gradcheck-summary=full)"


@pytest.mark.parametrize(
    "how", [["-v"], ["--gradcheck-summary=full"], ["-o", "gradcheck_summary=full"]],
    ids=["verbose", "flag", "ini"],
)
def test_full_lists_every_check(pytester: pytest.Pytester, how: list[str]) -> None:
    result, _ = run(pytester, *how)
    text = "\n".join(summary(result))
    for i in range(3):
        assert f"test_layers.py::test_good[{i}]" in text
    assert "listed with -v" not in text


def test_a_wrong_summary_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=LAYERS)
    result = pytester.runpytest(*QUIET_PLUGINS, "--gradcheck-summary=long")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*summary='long' must be one of short, full*"])


def test_json_lists_errored_checks_with_their_message(pytester: pytest.Pytester) -> None:
    _, payload = run(pytester)
    assert set(payload) == {"seed", "seed_drawn", "results", "skipped", "errors"}
    assert [e["nodeid"] for e in payload["errors"]] == [
        "test_layers.py::test_raising",
        "test_layers.py::test_bad_marker",
    ]
    for e in payload["errors"]:
        assert set(e) == ERROR_KEYS and e["status"] == "error"
    assert payload["errors"][0]["message"] == (
        "Raising: backward raised RuntimeError: cache was cleared"
    )
    assert [r["ok"] for r in payload["results"]] == [True, True, True, False]


@pytest.fixture
def funcs_pkg(pytester: pytest.Pytester) -> pytest.Pytester:
    return importable_package(pytester, "tinyfuncs", {"funcs.py": PKG_FUNCS})


def test_a_declaration_that_raises_is_an_errored_check_in_both_front_ends(
    funcs_pkg: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    path = funcs_pkg.path / "pytest.json"
    result = funcs_pkg.runpytest(
        *QUIET_PLUGINS, "--gradcheck-discover=tinyfuncs", f"--gradcheck-json={path}"
    )
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*NameError*undefined_name*"])  # the traceback, as before
    lines = summary(result)
    assert "1 passed, 0 failed, 1 errored, 1 skipped" in lines[0]
    assert any(line.startswith("gradcheck::tinyfuncs.funcs.broken  ERROR") for line in lines)

    cli_path = funcs_pkg.path / "cli.json"
    assert main(["tinyfuncs", "-q", "--json", str(cli_path)]) == 1
    capsys.readouterr()
    from_pytest = json.loads(path.read_text())
    from_cli = json.loads(Path(cli_path).read_text())
    assert set(from_pytest) == set(from_cli)
    for payload in (from_pytest, from_cli):
        (error,) = payload["errors"]
        assert set(error) == ERROR_KEYS and error["status"] == "error"
        assert error["nodeid"] == "gradcheck::tinyfuncs.funcs.broken"
        assert "NameError" in error["message"] and "undefined_name" in error["message"]
        assert [s["nodeid"] for s in payload["skipped"]] == ["gradcheck::tinyfuncs.funcs.plain"]


def test_xdist_gathers_errors_and_results_from_every_worker(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_layers=LAYERS)
    serial_path, parallel_path = pytester.path / "serial.json", pytester.path / "parallel.json"
    # Both collect in the file's order; the workers finish in an order of their own.
    serial = pytester.runpytest_subprocess(
        *QUIET_PLUGINS, *IN_FILE_ORDER, f"--gradcheck-json={serial_path}"
    )
    parallel = pytester.runpytest_subprocess(
        *QUIET_PLUGINS, *IN_FILE_ORDER, "-n", "2", f"--gradcheck-json={parallel_path}"
    )
    for run_ in (serial, parallel):
        run_.assert_outcomes(passed=4, failed=2, errors=1)
        assert "3 passed, 1 failed, 2 errored, 0 skipped" in summary(run_)[0]
    assert ran_on_two_workers(parallel)

    def rows(run_: pytest.RunResult) -> list[list[str]]:
        return [line.split()[:2] for line in summary(run_)[2:5]]

    assert rows(parallel) == rows(serial) == [
        ["test_layers.py::test_bad", "FAIL"],
        ["test_layers.py::test_raising", "ERROR"],
        ["test_layers.py::test_bad_marker", "ERROR"],
    ]
    s, p = json.loads(serial_path.read_text()), json.loads(parallel_path.read_text())
    assert p["errors"] == s["errors"] and len(s["errors"]) == 2
    assert [r["nodeid"] for r in p["results"]] == [r["nodeid"] for r in s["results"]]
