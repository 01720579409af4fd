"""Shared test setup.

Modules that in-process pytester runs would otherwise import afresh are imported once here,
before pytester snapshots sys.modules: numpy cannot be loaded twice in one process, and
hypothesis' pytest plugin (when installed) costs most of a second per re-import.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy  # noqa: F401

with contextlib.suppress(ImportError):
    importlib.import_module("hypothesis")
