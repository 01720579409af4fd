"""Shared test setup.

Modules that in-process pytester runs would otherwise import afresh are imported once here,
before pytester snapshots sys.modules: numpy cannot be loaded twice in one process, and
hypothesis' pytest plugin (when installed) costs most of a second per re-import.

Plain helper functions live in `helpers.py` next to this file.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy
import pytest

with contextlib.suppress(ImportError):
    importlib.import_module("hypothesis")


@pytest.fixture
def rng() -> numpy.random.Generator:
    """A fixed-seed generator for the test's data."""
    return numpy.random.default_rng(1234)


@pytest.fixture
def pytester(
    pytester: pytest.Pytester, pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytester whose subprocesses import what the tests import: the ini's `pythonpath`
    (the repository root, home of example_nn) goes on their PYTHONPATH too."""
    paths = [str(p) for p in pytestconfig.getini("pythonpath")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    return pytester
