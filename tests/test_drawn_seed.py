"""A seed drawn with `seed=random` is printed in every run that drew it, `-q` and all checks
passing included (the report header, which also shows it, is hidden by `-q`), once under
pytest-xdist, and the JSON report says whether its seed was drawn."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import QUIET_PLUGINS, SCALE_LAYER, importable_package

from pytest_gradcheck.__main__ import main

TESTS = """
import numpy as np

""" + SCALE_LAYER + """

def test_one(gradcheck):
    gradcheck(Scale(), np.random.default_rng(0).normal(size=(4, 3)))


def test_two(gradcheck):
    gradcheck(Scale(), np.random.default_rng(1).normal(size=(4, 3)))
"""

DRAWN = re.compile(r"gradcheck: seed=(\d+) \(drawn; reproduce with --gradcheck-seed=(\d+)\)")


def run(
    pytester: pytest.Pytester, *args: str, subprocess: bool = False
) -> tuple[pytest.RunResult, dict[str, Any]]:
    out = pytester.path / "out.json"
    runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    result = runner(*QUIET_PLUGINS, "-q", f"--gradcheck-json={out}", *args)
    return result, json.loads(out.read_text())


def errors(payload: dict[str, Any]) -> dict[str, float]:
    """Each check's largest error, by node id (pytest-randomly shuffles the order of runs)."""
    return {r["nodeid"]: r["max_rel_error"] for r in payload["results"]}


def drawn_seeds(result: pytest.RunResult) -> list[int]:
    """The seed of every drawn-seed line the run printed (its two numbers must agree)."""
    found = [DRAWN.fullmatch(line) for line in result.outlines]
    seeds = [(int(m.group(1)), int(m.group(2))) for m in found if m]
    assert all(a == b for a, b in seeds), seeds
    return [a for a, _ in seeds]


def test_q_with_every_check_passing_prints_the_drawn_seed_and_the_json_says_so(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_layers=TESTS)
    result, payload = run(pytester, "--gradcheck-seed=random")
    result.assert_outcomes(passed=2)
    (seed,) = drawn_seeds(result)
    assert payload["seed"] == seed and payload["seed_drawn"] is True
    assert {r["seed"] for r in payload["results"]} == {seed}

    # Repeated with the printed seed: the same numbers, and a given seed is not announced.
    again, repeated = run(pytester, f"--gradcheck-seed={seed}")
    assert drawn_seeds(again) == [] and repeated["seed_drawn"] is False
    assert errors(repeated) == errors(payload)


def test_a_run_without_checks_prints_the_drawn_seed_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result, payload = run(pytester, "--gradcheck-seed=random")
    result.assert_outcomes(passed=1)
    assert drawn_seeds(result) == [payload["seed"]]
    assert payload["seed_drawn"] is True and payload["results"] == []


def test_the_ini_file_can_draw_and_the_command_line_overrides_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_layers=TESTS)
    pytester.makeini("[pytest]\ngradcheck_seed = random\n")
    drawn, payload = run(pytester)
    assert drawn_seeds(drawn) == [payload["seed"]] and payload["seed_drawn"] is True

    given, overridden = run(pytester, "--gradcheck-seed=5")
    assert drawn_seeds(given) == []
    assert overridden["seed"] == 5 and overridden["seed_drawn"] is False


def test_the_xdist_controller_prints_the_drawn_seed_once(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_layers=TESTS)
    result, payload = run(pytester, "-n", "2", "--gradcheck-seed=random", subprocess=True)
    result.assert_outcomes(passed=2)
    assert drawn_seeds(result) == [payload["seed"]]
    assert {r["seed"] for r in payload["results"]} == {payload["seed"]}
    assert payload["seed_drawn"] is True


def test_the_command_line_prints_the_drawn_seed_with_q_and_the_json_says_so(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    importable_package(pytester, "drawpkg", {"layers.py": TESTS})
    out = Path(pytester.path / "cli.json")
    assert main(["drawpkg", "-q", "--seed", "random", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert f"gradcheck: seed={payload['seed']} " in printed
    assert payload["seed_drawn"] is True

    assert main(["drawpkg", "-q", "--seed", "5", "--json", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["seed_drawn"] is False
