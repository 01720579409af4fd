"""`@pytest.mark.gradcheck` markers at several levels: for each keyword the closest marker wins,
parameter (`pytest.param(..., marks=...)`) > function > class > module > command line, and
keywords the closer markers leave out come from the farther ones. Each level is proved in a
run of its own, through `gradcheck.options`, the result and the seed its failure prints."""

from __future__ import annotations

import textwrap

import pytest
from helpers import QUIET_PLUGINS, SCALE_LAYER, failure_section

HEADER = """
import numpy as np
import pytest

""" + SCALE_LAYER + """

def x():
    return np.random.default_rng(0).normal(size=(4, 3))


def in_force(gradcheck):
    o = gradcheck.options
    return o.seed, o.mode, o.samples, o.directions


pytestmark = pytest.mark.gradcheck(seed=1, mode="sample", samples=5)
"""


def run(pytester: pytest.Pytester, body: str) -> pytest.RunResult:
    """The module marker above plus `body`, under a command-line seed every marker beats."""
    pytester.makepyfile(test_levels=HEADER + textwrap.dedent(body))
    return pytester.runpytest(*QUIET_PLUGINS, "--gradcheck-seed=99", "--gradcheck-directions=9")


def reproduce_line(result: pytest.RunResult, test: str) -> str:
    """The seed line of the failure report of `test`."""
    section = failure_section(result, test)
    return next(line.strip() for line in section.lines if "reproduce with seed=" in line)


def test_the_module_marker_beats_the_command_line(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_module(gradcheck):
            assert in_force(gradcheck) == (1, "sample", 5, 9)
            assert gradcheck.check(Scale(), x()).seed == 1

        def test_module_failure(gradcheck):
            gradcheck(Scale(slip=1.5), x())
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    assert reproduce_line(result, "test_module_failure").startswith("reproduce with seed=1 ")


def test_the_class_marker_beats_the_module_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.gradcheck(seed=2, samples=4)
        class TestClass:
            def test_class(self, gradcheck):
                assert in_force(gradcheck) == (2, "sample", 4, 9)
                assert gradcheck.check(Scale(), x()).seed == 2

            def test_class_failure(self, gradcheck):
                gradcheck(Scale(slip=1.5), x())
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    line = reproduce_line(result, "TestClass.test_class_failure")
    assert line.startswith("reproduce with seed=2 ")


def test_the_function_marker_beats_the_class_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.gradcheck(seed=2, samples=4)
        class TestClass:
            @pytest.mark.gradcheck(seed=3)
            def test_function(self, gradcheck):
                assert in_force(gradcheck) == (3, "sample", 4, 9)
                assert gradcheck.check(Scale(), x()).seed == 3

            @pytest.mark.gradcheck(seed=3)
            def test_function_failure(self, gradcheck):
                gradcheck(Scale(slip=1.5), x())
        """,
    )
    result.assert_outcomes(passed=1, failed=1)
    line = reproduce_line(result, "TestClass.test_function_failure")
    assert line.startswith("reproduce with seed=3 ")


PARAM_LEVEL = """
@pytest.mark.gradcheck(seed=2, samples=4)
class TestClass:
    @pytest.mark.gradcheck(seed=3, directions=2)
    @pytest.mark.parametrize(
        "expected",
        [
            pytest.param((7, "sample", 4, 2), id="marked",
                         marks=pytest.mark.gradcheck(seed=7)),
            pytest.param((3, "sample", 4, 2), id="unmarked"),
        ],
    )
    @pytest.mark.gradcheck(mode="full")  # closer to the function: beats the module's mode
    def test_param(self, gradcheck, expected):
        assert in_force(gradcheck) == (expected[0], "full", *expected[2:])
        assert gradcheck.check(Scale(), x()).seed == expected[0]

    @pytest.mark.gradcheck(seed=3)
    @pytest.mark.parametrize(
        "slip", [pytest.param(1.5, id="seven", marks=pytest.mark.gradcheck(seed=7))]
    )
    def test_param_failure(self, gradcheck, slip):
        gradcheck(Scale(slip=slip), x())


@pytest.mark.gradcheck(seed=3)
@pytest.mark.parametrize(
    "expected", [pytest.param(8, marks=pytest.mark.gradcheck(seed=8)), pytest.param(3)]
)
def test_param_without_class(gradcheck, expected):
    assert gradcheck.options.seed == expected
"""


def test_the_parameter_marker_beats_the_function_marker(pytester: pytest.Pytester) -> None:
    result = run(pytester, PARAM_LEVEL)
    result.assert_outcomes(passed=4, failed=1)
    line = reproduce_line(result, "TestClass.test_param_failure[seven]")
    assert line.startswith("reproduce with seed=7 ")
