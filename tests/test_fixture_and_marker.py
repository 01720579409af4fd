"""The pytest face of the plugin, exercised in real pytest sessions (pytester).

Covers the `gradcheck` fixture and `@pytest.mark.gradcheck` marker: outcomes and failure output,
option precedence (ini < command line < marker module < class < function < call keyword),
marker validation, `-m gradcheck` selection, the seed in the header and in failures,
`gradcheck.check(...)` returning a result, and clean failure messages for usage errors.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pytest

from example_nn import Linear
from pytest_gradcheck import GradcheckUsageError, check

# Layers shared by the generated test files. `BadBias` gets exactly one element of the bias
# gradient wrong (index 2, by a factor of 2: relative error 0.5); `SlightlyOff` gets one element
# of the weight gradient wrong by 0.1% (relative error ~1e-3).
LAYERS = textwrap.dedent(
    """
    import numpy as np
    import pytest
    from example_nn import Linear


    def make_x():
        return np.random.default_rng(0).normal(size=(4, 3))


    class BadBias(Linear):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"].copy()
            self.grads["b"][2] *= 2.0
            return dx


    class SlightlyOff(Linear):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"].copy()
            self.grads["W"][1, 0] *= 1.001
            return dx


    def good():
        return Linear(3, 4, rng=np.random.default_rng(1))


    def bad_bias():
        return BadBias(3, 4, rng=np.random.default_rng(1))


    def slightly_off():
        return SlightlyOff(3, 4, rng=np.random.default_rng(1))
    """
)


def make_tests(pytester: pytest.Pytester, body: str, name: str = "test_layers") -> None:
    pytester.makepyfile(**{name: LAYERS + textwrap.dedent(body)})


# ---------------------------------------------------------------------------------------------
# Outcomes and the failure report
# ---------------------------------------------------------------------------------------------


def test_correct_layer_passes(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_linear(gradcheck):
            result = gradcheck(good(), make_x())
            assert result.ok
            assert [e.name for e in result.entries] == ["x", "W", "b"]
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_wrong_bias_gradient_fails_naming_the_b_row(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_bad_bias(gradcheck):
            gradcheck(bad_bias(), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*gradcheck BadBias: FAILED*seed=0*",
            "*array*kind*shape*max rel err*worst index*",
            "*x *input*4x3*ok",
            "*W *param*3x4*ok",
            # the b row: its relative error (exactly 0.5 for a doubled element) and where
            "*b *param*4 *5.00e-01*(2,)*1/4*FAIL",
            "*where b is wrong (1 of 4 elements):",
            "*..X.",
        ]
    )


def test_classic_bug_from_buggy_layers_fails_in_a_session(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        class BiasGradMean(Linear):  # the LinearBiasGradMean bug: mean instead of sum
            def backward(self, dout):
                dx = super().backward(dout)
                self.grads["b"] = dout.mean(axis=0)
                return dx

        def test_bias_mean(gradcheck):
            gradcheck(BiasGradMean(3, 4, rng=np.random.default_rng(1)), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    # batch of 4: analytic = sum/4, relative error 1 - 1/4
    result.stdout.fnmatch_lines(["*b *param*4 *7.50e-01*4/4*FAIL"])


def test_loose_rtol_in_marker_makes_slightly_off_layer_pass(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_default(gradcheck):
            gradcheck(slightly_off(), make_x())

        @pytest.mark.gradcheck(rtol=1e-2)
        def test_loose(gradcheck):
            result = gradcheck(slightly_off(), make_x())
            assert result.rtol == 1e-2
            assert 5e-4 < result.entry("W").max_rel_error < 2e-3
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*W *param*3x4*(1, 0)*1/12*FAIL"])


def test_params_marker_restricts_rows(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck(params=["W"])
        def test_only_w(gradcheck):
            result = gradcheck(bad_bias(), make_x())  # b is wrong but not selected
            assert result.entry("W").status == "ok"
            assert result.entry("b").status == "not selected"
            assert result.entry("b").checked == 0

        @pytest.mark.gradcheck(params=["b"], inputs=False)
        def test_only_b(gradcheck):
            gradcheck(bad_bias(), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*b *param*4 *5.00e-01*(2,)*FAIL"])
    result.stdout.fnmatch_lines(["*W *param*3x4*not selected"])
    result.stdout.no_fnmatch_line("*x *input*4x3*ok")


def test_params_pattern_matching_nothing_is_a_clear_error(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck(params=["weight"])
        def test_typo(gradcheck):
            gradcheck(good(), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*'weight' matches no parameter; parameters are: W, b*"])


def test_strict_markers_accepts_the_gradcheck_marker(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        pytestmark = pytest.mark.gradcheck(seed=3)

        @pytest.mark.gradcheck(rtol=1e-4)
        def test_marked(gradcheck):
            assert gradcheck(good(), make_x()).ok
        """,
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)
    assert result.ret == 0


def test_marker_is_documented_in_markers_list(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.gradcheck(**options)*"])


# ---------------------------------------------------------------------------------------------
# Option precedence: ini < command line < marker (module < class < function) < call keyword
# ---------------------------------------------------------------------------------------------

PRECEDENCE_TESTS = """
def test_plain(gradcheck, expected):
    assert gradcheck(good(), make_x()).rtol == expected["plain"]

@pytest.mark.gradcheck(rtol=0.5)
def test_function_marker(gradcheck):
    assert gradcheck(good(), make_x()).rtol == 0.5

@pytest.mark.gradcheck(rtol=0.4)
class TestClass:
    def test_class_marker(self, gradcheck):
        assert gradcheck(good(), make_x()).rtol == 0.4

    @pytest.mark.gradcheck(rtol=0.5)
    def test_function_beats_class(self, gradcheck):
        assert gradcheck(good(), make_x()).rtol == 0.5

    @pytest.mark.gradcheck(rtol=0.5)
    def test_call_beats_all(self, gradcheck):
        assert gradcheck(good(), make_x(), rtol=0.6).rtol == 0.6

    def test_options_property(self, gradcheck):
        assert gradcheck.options.rtol == 0.4
"""


@pytest.mark.parametrize(
    ("ini", "cli", "module", "plain"),
    [
        (None, None, None, 1e-5),  # the float64 default
        ("0.1", None, None, 0.1),  # ini file
        ("0.1", "0.2", None, 0.2),  # command line beats ini
        ("0.1", "0.2", "0.3", 0.3),  # module marker beats command line
    ],
    ids=["default", "ini", "cli-over-ini", "module-over-cli"],
)
def test_option_precedence(
    pytester: pytest.Pytester, ini: str | None, cli: str | None, module: str | None, plain: float
) -> None:
    if ini is not None:
        pytester.makeini(f"[pytest]\ngradcheck_rtol = {ini}\n")
    header = f"pytestmark = pytest.mark.gradcheck(rtol={module})\n" if module else ""
    fixture = f"\n@pytest.fixture\ndef expected():\n    return {{'plain': {plain!r}}}\n"
    make_tests(pytester, header + fixture + PRECEDENCE_TESTS)
    args = [f"--gradcheck-rtol={cli}"] if cli else []
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=6)


def test_markers_at_different_levels_merge_their_options(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        pytestmark = pytest.mark.gradcheck(seed=7, atol=1e-9)

        @pytest.mark.gradcheck(seed=8)
        class TestMerge:
            @pytest.mark.gradcheck(rtol=1e-3)
            def test_merge(self, gradcheck):
                result = gradcheck(good(), make_x())
                # seed from the class (beats the module), atol from the module, rtol own
                assert (result.seed, result.rtol) == (8, 1e-3)
                assert result.atol >= 1e-9
                assert gradcheck.options.atol == 1e-9
        """,
    )
    pytester.runpytest("--gradcheck-seed=5").assert_outcomes(passed=1)


def test_ini_and_cli_options_reach_fixture(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngradcheck_seed = 11\ngradcheck_mode = sample\n")
    make_tests(
        pytester,
        """
        def test_opts(gradcheck):
            o = gradcheck.options
            assert (o.seed, o.mode, o.samples) == (11, "sample", 3)
            result = gradcheck(good(), make_x())
            assert result.mode == "sample"
            assert result.entry("x").checked == 3
        """,
    )
    pytester.runpytest("--gradcheck-samples=3").assert_outcomes(passed=1)


def test_invalid_command_line_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_tests(pytester, "def test_nothing():\n    pass\n")
    result = pytester.runpytest("--gradcheck-mode=quick")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mode='quick' must be one of full, fast, sample, auto*"])


# ---------------------------------------------------------------------------------------------
# Marker validation and selection
# ---------------------------------------------------------------------------------------------


def test_unknown_marker_keyword_names_it_and_suggests_the_close_name(
    pytester: pytest.Pytester,
) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck(rtl=1e-3)
        def test_typo(gradcheck):
            gradcheck(good(), make_x())

        @pytest.mark.gradcheck(rtl=1e-3)
        def test_typo_without_fixture():
            pass
        """,
    )
    result = pytester.runpytest()
    # Reported before the test body runs, whether or not the test uses the fixture.
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*test_typo*unknown gradcheck option 'rtl' (did you mean 'rtol'?)*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_bad_marker_value_is_reported(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck(rtol=-1)
        def test_negative(gradcheck):
            pass

        @pytest.mark.gradcheck(1e-3)
        def test_positional(gradcheck):
            pass
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*option rtol=-1 must be a finite number > 0*"])
    result.stdout.fnmatch_lines(["*takes keyword options only*"])


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("seed", -1, "between 0 and 2**32 - 1"),  # numpy's global stream cannot take it
        ("seed", 2**32, "between 0 and 2**32 - 1"),
        ("seed", 1.5, "an integer"),
        ("rtol", float("inf"), "finite"),  # would pass anything
        ("atol", float("nan"), "finite"),  # would fail everything
        ("eps", float("inf"), "finite"),
        ("samples", 2.5, "an integer >= 1"),
        ("inputs", "nope", "true or false"),  # was read as False: inputs silently unchecked
        ("random_sources", [object()], "random streams"),
    ],
)
def test_bad_option_values_are_usage_errors(option: str, value: Any, needle: str) -> None:
    layer = Linear(3, 2, rng=np.random.default_rng(0))
    with pytest.raises(GradcheckUsageError) as info:
        check(layer, np.ones((2, 3)), **{option: value})
    assert f"option {option}=" in str(info.value) and needle in str(info.value)


def test_out_of_range_seed_on_the_command_line_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_tests(pytester, "def test_nothing():\n    pass\n")
    result = pytester.runpytest("--gradcheck-seed=-3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*option seed='-3' must be an integer between 0 and 2**32 - 1*"])


def test_dash_m_gradcheck_selects_marked_tests(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck
        def test_marked_function(gradcheck):
            gradcheck(good(), make_x())

        @pytest.mark.gradcheck(rtol=1e-4)
        class TestMarked:
            def test_in_marked_class(self, gradcheck):
                gradcheck(good(), make_x())

        def test_unmarked_uses_fixture(gradcheck):
            gradcheck(good(), make_x())

        def test_unmarked():
            pass
        """,
        name="test_mixed",
    )
    pytester.makepyfile(
        test_module_marked=LAYERS
        + "\npytestmark = pytest.mark.gradcheck\n\n"
        + "def test_in_marked_module(gradcheck):\n    gradcheck(good(), make_x())\n"
    )
    result = pytester.runpytest("-m", "gradcheck", "-v")
    result.assert_outcomes(passed=3, deselected=2)
    result.stdout.fnmatch_lines_random(
        [
            "*test_marked_function PASSED*",
            "*test_in_marked_class PASSED*",
            "*test_in_marked_module PASSED*",
        ]
    )
    result.stdout.no_fnmatch_line("*test_unmarked*")
    pytester.runpytest("-m", "not gradcheck").assert_outcomes(passed=2, deselected=3)


# ---------------------------------------------------------------------------------------------
# The seed in force
# ---------------------------------------------------------------------------------------------


def test_default_seed_in_header_and_failure(pytester: pytest.Pytester) -> None:
    make_tests(pytester, "def test_bad(gradcheck):\n    gradcheck(bad_bias(), make_x())\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "gradcheck: seed=0 mode=*",
            "*gradcheck BadBias: FAILED  seed=0 *",
            "*reproduce with seed=0 (--gradcheck-seed=0 or @pytest.mark.gradcheck(seed=0))",
        ]
    )


def test_command_line_seed_in_header_and_failure(pytester: pytest.Pytester) -> None:
    make_tests(pytester, "def test_bad(gradcheck):\n    gradcheck(bad_bias(), make_x())\n")
    result = pytester.runpytest("--gradcheck-seed=1234")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "gradcheck: seed=1234 *",
            "*gradcheck BadBias: FAILED  seed=1234 *",
            "*reproduce with seed=1234 (--gradcheck-seed=1234*",
        ]
    )


def test_marker_seed_in_failure_and_reproducible(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        @pytest.mark.gradcheck(seed=42)
        def test_bad(gradcheck):
            gradcheck(bad_bias(), make_x())

        def test_same_seed_same_numbers(gradcheck):
            a = gradcheck.check(bad_bias(), make_x(), seed=42).entry("b")
            b = gradcheck.check(bad_bias(), make_x(), seed=42).entry("b")
            c = gradcheck.check(bad_bias(), make_x(), seed=43).entry("b")
            assert (a.analytic, a.numeric) == (b.analytic, b.numeric)
            assert a.analytic != c.analytic  # the cotangent comes from the seed
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*gradcheck BadBias: FAILED  seed=42 *", "*reproduce with seed=42*"]
    )


# ---------------------------------------------------------------------------------------------
# gradcheck.check(...) and usage errors
# ---------------------------------------------------------------------------------------------


def test_check_returns_failing_result_without_failing_the_test(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_inspect(gradcheck):
            result = gradcheck.check(bad_bias(), make_x())
            assert not result.ok
            assert [e.name for e in result.failed_entries] == ["b"]
            assert result.entry("b").worst_index == (2,)
            assert result.entry("b").max_rel_error == pytest.approx(0.5, rel=1e-6)
            assert "FAIL" in str(result)
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


def test_usage_error_layer_without_backward_is_a_clean_failure(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        class NoBackward:
            def forward(self, x):
                return 2 * x

        def test_no_backward(gradcheck):
            gradcheck(NoBackward(), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*NoBackward*a layer needs forward() and backward() methods*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*pytest_gradcheck/*")
    result.stdout.no_fnmatch_line("*GradcheckUsageError*")


def test_backward_raising_is_a_clean_failure_naming_the_layer(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        class Broken(Linear):
            def backward(self, dout):
                raise ValueError("shapes do not line up")

        def test_broken(gradcheck):
            gradcheck(Broken(3, 4, rng=np.random.default_rng(1)), make_x())

        def test_check_also_fails_cleanly(gradcheck):
            gradcheck.check(Broken(3, 4, rng=np.random.default_rng(1)), make_x())
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*Broken: backward raised ValueError: shapes do not line up*"] * 2)
    result.stdout.no_fnmatch_line("*checker.py*")
    result.stdout.no_fnmatch_line("*Traceback*")


def test_unknown_call_keyword_is_a_clean_failure(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_typo(gradcheck):
            gradcheck(good(), make_x(), sed=3)
        """,
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*gradcheck(): unknown gradcheck option 'sed' (did you mean 'seed'?)*"]
    )


def test_session_summary_lists_every_check(pytester: pytest.Pytester) -> None:
    make_tests(
        pytester,
        """
        def test_good(gradcheck):
            gradcheck(good(), make_x())

        def test_bad(gradcheck):
            gradcheck(bad_bias(), make_x())
        """,
    )
    result = pytester.runpytest("--gradcheck-summary=full")
    result.assert_outcomes(passed=1, failed=1)
    # Rows in collection order, which pytest-randomly shuffles: each row after the title.
    for row in ("*test_layers.py::test_good*ok*", "*test_layers.py::test_bad*FAIL*b=5.00e-01*"):
        result.stdout.fnmatch_lines(["*gradcheck: 2 check(s)*", row])
