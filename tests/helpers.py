"""Helpers shared by the test modules (import them: `from helpers import x_batch`)."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import CheckResult
from pytest_gradcheck.calls import repeats

# Plugins of this environment that slow every pytester run down and play no part in it.
QUIET_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

# pytest-randomly, when installed, shuffles the tests of pytester runs as well. A run whose
# summary or JSON a test reads row by row (the plugin lists checks in collection order) keeps
# the order of its test file with these arguments.
IN_FILE_ORDER = ("-p", "no:randomly")

# How pytest-xdist announces a run on two workers: `2 workers [23 items]` from 3.3 on,
# `gw0 [23] / gw1 [23]` before (the `test` extra allows 3.0, which CI's lowest-versions job runs).
_TWO_WORKERS = re.compile(r"^(2 workers \[\d+ items?\]|gw0 \[\d+\] / gw1 \[\d+\])$", re.MULTILINE)


def ran_on_two_workers(result: pytest.RunResult) -> bool:
    """Whether a pytester run with `-n 2` ran its tests on two xdist workers."""
    return _TWO_WORKERS.search(result.stdout.str()) is not None


# The title of a test's section in pytest's failures and errors: `____ test_x ____`.
_SECTION_TITLE = re.compile(r"_{3,} (.+?) _{3,}")


def failure_section(result: pytest.RunResult, title: str) -> pytest.LineMatcher:
    """The lines of the failures/errors section titled `title` (`test_x`, `ERROR at setup of
    test_x`) of a pytester run, up to the next section: whichever order the tests ran in,
    a pattern matched here belongs to that test."""
    section: list[str] | None = None
    for line in result.outlines:
        starts = _SECTION_TITLE.fullmatch(line)
        summary = line.startswith("---") and " gradcheck: " in line  # the plugin's summary
        if section is not None and (starts or line.startswith("=") or summary):
            break
        if section is not None:
            section.append(line)
        elif starts and starts.group(1) == title:
            section = []
    assert section is not None, f"no section titled {title!r} in:\n{result.stdout.str()}"
    return pytest.LineMatcher(section)


def weights(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """Parameter values for test layers."""
    return np.random.default_rng(seed).normal(size=shape)


class Affine:
    """x @ W + b with `params`/`grads` dicts; backward assigns fresh gradient arrays."""

    def __init__(self, n_in: int, n_out: int, seed: int = 0, w_scale: float = 1.0) -> None:
        rng = np.random.default_rng(seed)
        self.params = {"W": w_scale * rng.normal(size=(n_in, n_out)) / np.sqrt(n_in),
                       "b": 0.1 * rng.normal(size=n_out)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x: np.ndarray) -> Any:
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        out: np.ndarray = dout @ self.params["W"].T
        return out


def importable_package(pytester: Any, name: str, modules: dict[str, str]) -> Any:
    """A package `name` in the pytester directory, with the given modules (file name: source),
    importable from the test session; returns the pytester."""
    pkg = pytester.mkpydir(name)
    for filename, source in modules.items():
        (pkg / filename).write_text(source)
    pytester.syspathinsert()
    return pytester


def x_batch(n: int = 6, d: int = 4, seed: int = 0) -> np.ndarray:
    """A batch of n standard-normal rows of width d."""
    return np.random.default_rng(seed).normal(size=(n, d))


def rows(result: CheckResult) -> dict[str, str]:
    """Each checked array's name and status, as the report lists them."""
    return {e.name: e.status for e in result.entries}


def global_streams() -> tuple[Any, ...]:
    """The states of numpy's global RNG and Python's `random`, comparable with ==."""
    mt = np.random.get_state()
    return (mt[0], mt[1].tobytes(), *mt[2:], random.getstate())


# Forward passes every check on a deterministic, float64 layer makes besides the numeric ones:
# one that lets lazily created parameters appear, the decoy (other random states and inputs, so
# that state left from an earlier call shows), and one from the baseline that learns what a
# forward pass changes, repeats the first bit for bit, and serves the single backward.
SETUP_FORWARDS = 3


def evaluations(n: int) -> int:
    """Forward passes of n numeric evaluations: some are made twice, to prove them repeatable
    (and a verdict with kinks or failures costs CONFIRMATIONS more)."""
    return n + repeats(n)


# The layer pytester test files check: x * W, whose dW is scaled by `slip` (1.0: right), with a
# discovery declaration. Test files put it after their own imports (it needs numpy as np).
SCALE_LAYER = """
class Scale:
    def __init__(self, slip=1.0):
        self.W = np.linspace(0.5, 1.5, 3)
        self.slip = slip

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0) * self.slip
        return dout * self.W

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(), (rng.normal(size=(4, 3)),)
"""
