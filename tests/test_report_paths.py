"""A JSON report path that cannot be written is a usage error, never a traceback: checked
before the run (`--gradcheck-json`, ini `gradcheck_json`, `python -m pytest_gradcheck --json`),
and if writing still fails at the end, the results are printed first, then the error, and the
run exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import QUIET_PLUGINS, SCALE_LAYER, importable_package

from pytest_gradcheck.__main__ import main

TESTS = """
import numpy as np

""" + SCALE_LAYER + """

def x():
    return np.random.default_rng(0).normal(size=(4, 3))


def test_good(gradcheck):
    gradcheck(Scale(), x())
"""

# A test that runs after the check and takes the report's directory away.
REMOVES_THE_DIRECTORY = """
import shutil


def test_zz_remove_the_report_directory():
    shutil.rmtree("reports")
"""

BAD_TEST = """
def test_bad(gradcheck):
    gradcheck(Scale(slip=1.5), x())
"""


def no_traceback(result: pytest.RunResult) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "FileNotFoundError" not in text, text


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_a_missing_directory_is_a_usage_error_before_any_test_runs(
    pytester: pytest.Pytester, xdist: bool
) -> None:
    pytester.makepyfile(test_layers=TESTS)
    args = ["-n", "2"] if xdist else []
    run = pytester.runpytest_subprocess if xdist else pytester.runpytest
    result = run(*QUIET_PLUGINS, *args, "--gradcheck-json", "no/such/dir/out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --gradcheck-json no/such/dir/out.json: cannot write the JSON report: the "
            "directory */no/such/dir does not exist; create it first or choose another path"
        ]
    )
    assert "passed" not in result.stdout.str()  # checked at configure time: nothing ran
    no_traceback(result)


def test_the_ini_path_is_checked_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=TESTS)
    pytester.makeini("[pytest]\ngradcheck_json = missing/out.json\n")
    result = pytester.runpytest(*QUIET_PLUGINS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: gradcheck_json = missing/out.json (ini file): cannot write the JSON report: "
         "the directory */missing does not exist; create it first or choose another path"]
    )
    no_traceback(result)


def test_a_directory_as_the_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=TESTS)
    pytester.mkdir("reports")
    result = pytester.runpytest(*QUIET_PLUGINS, "--gradcheck-json=reports")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --gradcheck-json reports: cannot write the JSON report: */reports is a "
         "directory; name a file in it, e.g. */reports/gradcheck.json"]
    )


@pytest.mark.parametrize("failing", [False, True], ids=["passing", "failing"])
def test_failing_to_write_at_the_end_prints_the_results_then_the_error(
    pytester: pytest.Pytester, failing: bool
) -> None:
    pytester.makepyfile(
        test_layers=TESTS + (BAD_TEST if failing else ""), test_zz=REMOVES_THE_DIRECTORY
    )
    pytester.mkdir("reports")
    result = pytester.runpytest(
        *QUIET_PLUGINS, "-p", "no:randomly", "-q", "--gradcheck-json=reports/out.json"
    )
    # Not OK whatever the tests did; a failed test keeps its own exit status.
    expected = pytest.ExitCode.TESTS_FAILED if failing else pytest.ExitCode.USAGE_ERROR
    assert result.ret == expected
    result.assert_outcomes(passed=2, failed=int(failing))
    checks = 2 if failing else 1
    result.stdout.fnmatch_lines(
        [
            f"*gradcheck: {checks} check(s): 1 passed, {int(failing)} failed*",
            "ERROR: --gradcheck-json reports/out.json: cannot write the JSON report: the "
            "directory */reports does not exist; create it first or choose another path",
            "*passed*",  # pytest's last line comes after it
        ]
    )
    no_traceback(result)
    assert not (pytester.path / "reports").exists()


# -- python -m pytest_gradcheck --json ---------------------------------------------------------

PKG_LAYERS = """
import numpy as np
""" + SCALE_LAYER

# A plugin for the command line whose result hook takes the report's directory away.
REMOVING_PLUGIN = """
import shutil


def pytest_gradcheck_result(result):
    shutil.rmtree("reports", ignore_errors=True)
"""


def test_cli_missing_directory_exits_2_before_checking(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    importable_package(pytester, "scalepkg", {"layers.py": PKG_LAYERS})
    code = main(["scalepkg", "--json", "no/such/dir/out.json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (
        "python -m pytest_gradcheck: error: --json no/such/dir/out.json: cannot write the JSON "
        "report: the directory no/such/dir does not exist; create it first or choose another path"
    )
    assert out == ""  # nothing was checked


def test_cli_failing_to_write_at_the_end_prints_the_results_and_exits_2(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    importable_package(pytester, "scalepkg", {"layers.py": PKG_LAYERS})
    (pytester.path / "removing_plugin.py").write_text(REMOVING_PLUGIN)
    pytester.mkdir("reports")
    code = main(["scalepkg", "-q", "-p", "removing_plugin", "--json", "reports/out.json"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "gradcheck: 1 passed, 0 failed, 0 skipped, 0 error(s)" in out
    assert "cannot write the JSON report: the directory reports does not exist" in err
    assert "Traceback" not in out + err
    # A writable path still works, and the run is unchanged.
    assert main(["scalepkg", "-q", "--json", "out.json"]) == 0
    assert [r["nodeid"] for r in json.loads(Path("out.json").read_text())["results"]] == [
        "gradcheck::scalepkg.layers.Scale"
    ]
