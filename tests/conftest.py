"""Shared test setup.

numpy is imported here so it is loaded once, before pytester snapshots sys.modules: in-process
pytester runs whose test files import numpy would otherwise fail on a second load.
"""

from __future__ import annotations

import numpy  # noqa: F401
