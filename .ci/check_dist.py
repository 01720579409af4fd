"""Asserts what the wheel and the sdist in a folder hold (run by .ci/package after the build).

The wheel: the `pytest_gradcheck` package only (with py.typed) and its dist-info, which holds
the licence, the pytest11 entry point, and metadata whose classifiers are all known to PyPI and
whose runtime requirements are numpy, pytest and pluggy alone. The sdist: the licence, the
package and the in-tree build backend that pyproject.toml names.

    python .ci/check_dist.py DIST_FOLDER
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from trove_classifiers import classifiers as KNOWN_CLASSIFIERS

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = {"numpy", "pytest", "pluggy"}
CLASSIFIERS = {
    "Framework :: Pytest",
    "Operating System :: OS Independent",
    "Typing :: Typed",
    *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)),
}


def check_wheel(path: Path, problems: list[str]) -> None:
    names = zipfile.ZipFile(path).namelist()
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    strays = [n for n in names if n.split("/")[0] not in ("pytest_gradcheck", dist_info)]
    if strays:
        problems.append(f"wheel holds more than pytest_gradcheck and {dist_info}: {strays}")
    for needed in ("pytest_gradcheck/__init__.py", "pytest_gradcheck/plugin.py",
                   "pytest_gradcheck/py.typed", f"{dist_info}/licenses/LICENSE"):
        if needed not in names:
            problems.append(f"wheel lacks {needed}")
    with zipfile.ZipFile(path) as wheel:
        licence = f"{dist_info}/licenses/LICENSE"
        if licence in names and wheel.read(licence) != (ROOT / "LICENSE").read_bytes():
            problems.append("the wheel's LICENSE is not the repository's")
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
        metadata = Parser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
    if "[pytest11]" not in entry_points or "gradcheck = pytest_gradcheck.plugin" not in (
        entry_points
    ):
        problems.append(f"no pytest11 entry point for the plugin in: {entry_points!r}")
    if metadata["License-Expression"] != "MIT" or metadata.get_all("License-File") != [
        "LICENSE"
    ]:
        problems.append("metadata: License-Expression MIT and License-File LICENSE expected")
    if metadata["Requires-Python"] != ">=3.10":
        problems.append(f"metadata: Requires-Python is {metadata['Requires-Python']}")
    classifiers = set(metadata.get_all("Classifier") or [])
    if unknown := classifiers - set(KNOWN_CLASSIFIERS):
        problems.append(f"classifiers PyPI does not know: {sorted(unknown)}")
    if missing := CLASSIFIERS - classifiers:
        problems.append(f"classifiers missing: {sorted(missing)}")
    runtime = {
        Requirement(r).name for r in metadata.get_all("Requires-Dist") or []
        if "extra ==" not in r
    }
    if runtime != RUNTIME:
        problems.append(f"runtime requirements are {sorted(runtime)}, not {sorted(RUNTIME)}")


def check_sdist(path: Path, problems: list[str]) -> None:
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    base = names[0].split("/")[0]
    for needed in ("LICENSE", "PKG-INFO", "pyproject.toml", "pytest_gradcheck/py.typed",
                   "build_backend/pytest_gradcheck_build.py"):
        if f"{base}/{needed}" not in names:
            problems.append(f"sdist lacks {needed}")


def main(folder: Path) -> int:
    wheels, sdists = sorted(folder.glob("*.whl")), sorted(folder.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {folder}: {wheels + sdists}")
        return 1
    problems: list[str] = []
    check_wheel(wheels[0], problems)
    check_sdist(sdists[0], problems)
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok {wheels[0].name} and {sdists[0].name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
