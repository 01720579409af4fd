"""The supported versions agree wherever they are written: pyproject.toml's floors, the pins of
CI's lowest-versions job (.ci/lowest.txt), the build backend's Python check, the classifiers,
and the table of docs/versions.md."""

from __future__ import annotations

import ast
import re
import sys
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
BACKEND = ROOT / "build_backend" / "pytest_gradcheck_build.py"
NOT_RUN_ON_THE_LOWEST = {"ruff", "mypy"}  # linters: CI runs them on the latest versions only


def floor(requirement: Requirement) -> Version:
    (spec,) = [s for s in requirement.specifier if s.operator == ">="]
    return Version(spec.version)


def floors() -> dict[str, Version]:
    """The lowest allowed version of Python, each dependency and each test runner."""
    found = {"python": Version(PROJECT["requires-python"].removeprefix(">="))}
    for line in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]:
        req = Requirement(line)
        if req.name not in NOT_RUN_ON_THE_LOWEST:
            found[req.name] = floor(req)
    return found


def same_release(version: Version, lowest: Version) -> bool:
    """`version` is `lowest` or a bugfix of it (1.24.4 of 1.24, 3.0.2 of 3)."""
    return version.release[: len(lowest.release)] == lowest.release or version == lowest


def test_the_lowest_job_pins_every_floor() -> None:
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name] = Version(spec.version.removesuffix(".*"))
    wanted = floors()
    assert set(pins) == set(wanted) - {"python"}
    assert {name: pin for name, pin in pins.items() if pin != wanted[name]} == {}
    assert "3.10" in (ROOT / ".ci" / "lowest").read_text()  # the Python it looks for
    assert floors()["python"] == Version("3.10")


def test_the_build_backend_refuses_pythons_below_requires_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = ast.parse(BACKEND.read_text())
    (minimum,) = [
        ast.literal_eval(node.value) for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "MINIMUM_PYTHON"
    ]
    assert Version(".".join(map(str, minimum))) == floors()["python"]

    # Run with setuptools stood in for (the hooks are setuptools' own), on this Python and on
    # one just below the floor.
    stand_in = types.ModuleType("setuptools.build_meta")
    stand_in.__all__ = []
    monkeypatch.setitem(sys.modules, "setuptools", types.ModuleType("setuptools"))
    monkeypatch.setitem(sys.modules, "setuptools.build_meta", stand_in)
    code = compile(BACKEND.read_text(), str(BACKEND), "exec")
    exec(code, {"__name__": "pytest_gradcheck_build"})
    monkeypatch.setattr(sys, "version_info", (minimum[0], minimum[1] - 1, 18, "final", 0))
    with pytest.raises(SystemExit) as refused:
        exec(code, {"__name__": "pytest_gradcheck_build"})
    assert re.match(r"pytest-gradcheck requires Python 3\.10 or newer; this is Python ",
                    str(refused.value))


def test_the_classifiers_name_each_python_from_the_floor_on() -> None:
    minors = sorted(
        int(c.rpartition(".")[2]) for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    lowest = floors()["python"].minor
    assert minors == list(range(lowest, lowest + len(minors)))


def test_the_versions_page_states_the_floors() -> None:
    page = (ROOT / "docs" / "versions.md").read_text()
    (row,) = [line for line in page.splitlines() if line.startswith("| lowest ")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    wanted = floors()
    for name, cell in zip(["python", "numpy", "pytest", "pluggy"], cells[1:5]):
        assert same_release(Version(cell), wanted[name]), (name, cell)
    assert "docs/versions.md" in (ROOT / "README.md").read_text()
