"""pytest-gradcheck's build backend: setuptools' own, behind a check of the Python version.

pip 23.0, the pip that Python 3.9 creates its virtual environments with, honours the project's
requires-python only after it has resolved every dependency of a source-tree install, the `test`
extra's included: on Python 3.9, `pip install -e ".[test]"` backtracked through versions of
ruff, pytest-randomly and pytest for five minutes and had not refused when it was stopped
(recent pips refuse at once). pip loads the build backend before it resolves anything, so
refusing here ends such an install within seconds, with a message that says why.
"""

from __future__ import annotations

import sys

from setuptools.build_meta import *  # noqa: F403  (the hooks pip calls)

# requires-python in pyproject.toml; tests/test_packaging.py keeps the two equal.
MINIMUM_PYTHON = (3, 10)

if sys.version_info < MINIMUM_PYTHON:
    wanted = ".".join(map(str, MINIMUM_PYTHON))
    raise SystemExit(
        f"pytest-gradcheck requires Python {wanted} or newer; this is Python "
        f"{sys.version.split()[0]} ({sys.executable}). Create the environment with a newer "
        f"Python, e.g. python{wanted} -m venv .venv"
    )
