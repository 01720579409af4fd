"""The package's modules form layers: each imports alone, and no import goes in a circle.

Imports inside functions and under `if TYPE_CHECKING:` count too: a lazy import that closes a
circle only hides it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest_gradcheck

PACKAGE = "pytest_gradcheck"
PACKAGE_DIR = Path(pytest_gradcheck.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py"))
INIT = "__init__"


def imported_modules(module: str) -> set[str]:
    """The package's modules that `module` imports anywhere in its source."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    found.add(parts[1] if len(parts) > 1 else INIT)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] != PACKAGE:
                continue
            if node.level > 1:
                raise AssertionError(f"{module}: relative import above the package")
            relative = node.module if node.level else (node.module or "").partition(".")[2]
            if relative:
                found.add(relative.split(".")[0])
            else:  # `from . import x`: x is a module of the package, or a name from __init__
                found.update(a.name if a.name in MODULES else INIT for a in node.names)
    found.discard(module)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles a depth-first walk of `graph` meets, each as a path back to its start."""
    cycles: list[list[str]] = []
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for dependency in sorted(graph.get(module, ())):
            walk(dependency, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])
    return cycles


def test_the_import_graph_is_read_from_the_sources() -> None:
    # Guards the parser: the known edges of the layering are seen, lazy ones included.
    assert {"api", "collect", "items", "options", "report", "result"} <= imported_modules("plugin")
    assert "result" in imported_modules("hookspecs")  # under TYPE_CHECKING
    assert imported_modules("errors") == set()
    assert "api" in imported_modules(INIT) and "conventions" in imported_modules("manager")


def test_no_module_of_the_package_imports_in_a_circle() -> None:
    cycles = import_cycles({m: imported_modules(m) for m in MODULES})
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_a_circle_would_be_found() -> None:
    graph = {m: imported_modules(m) for m in MODULES}
    graph["collect"] = graph["collect"] | {"plugin"}  # as if collect.py imported plugin.py again
    assert any(set(cycle) == {"collect", "plugin"} for cycle in import_cycles(graph))


# Imports each module with none of the package loaded before it (the interpreter's other
# modules, numpy and pytest, stay loaded: one interpreter instead of one per module).
IMPORT_EACH_ALONE = """
import importlib, json, sys, traceback

failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "pytest_gradcheck"]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-2)
print(json.dumps(failed))
"""


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    names = [PACKAGE if m == INIT else f"{PACKAGE}.{m}" for m in MODULES]
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, *names],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    failed = json.loads(run.stdout)
    assert not failed, "\n".join(failed.values())
