"""pytest-gradcheck: prove hand-written numpy backward passes right, or show where they fail."""

from __future__ import annotations

from .access import LayerAccess, ObjectAccess, Param
from .api import check
from .discovery import Case, SkipCase
from .errors import GradcheckError, GradcheckUsageError, NondeterministicLayerError
from .manager import register, unregister
from .options import Options
from .result import CheckResult, Entry

# The one place the version is written: pyproject reads it from here (statically, at build time).
__version__ = "0.1.0"

__all__ = [
    "Case",
    "CheckResult",
    "Entry",
    "GradcheckError",
    "GradcheckUsageError",
    "LayerAccess",
    "NondeterministicLayerError",
    "ObjectAccess",
    "Options",
    "Param",
    "SkipCase",
    "__version__",
    "check",
    "register",
    "unregister",
]
