"""Checks at several points (`points`): a bug that shows only for some inputs or some cotangents
is caught at one of them, and the rows merge the points (worst point per row, failure if any
point fails, the failing point named in a note).

The seeds below are fixed so that point 0 misses the bug and a later point hits it; the streams
each point draws from are derived from the seed (`pytest_gradcheck.points.point_seed`).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import QUIET_PLUGINS

from example_nn import Linear
from pytest_gradcheck import check, streams
from pytest_gradcheck.__main__ import main
from pytest_gradcheck.points import point_seed

SETUP_FORWARDS = 2


class WrongForSomeCotangents(Linear):
    """Linear whose input gradient is 1% off whenever dout[0, 0] > 0."""

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = super().backward(dout)
        return dx * 1.01 if dout[0, 0] > 0 else dx


def x_of() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 5))


def test_point_zero_is_the_check_at_the_seed_itself() -> None:
    assert point_seed(7, 0) == 7
    seeds = [point_seed(7, k) for k in range(5)]
    assert len(set(seeds)) == 5 and all(0 <= s < 2**32 for s in seeds)
    layer = Linear(5, 3, rng=np.random.default_rng(1))
    one, again = check(layer, x_of(), seed=7), check(layer, x_of(), seed=7, points=1)
    assert [e.to_dict() for e in one.entries] == [e.to_dict() for e in again.entries]


def test_each_point_is_a_whole_check_and_rows_show_their_worst_point() -> None:
    layer = Linear(5, 3, rng=np.random.default_rng(1))
    single = [check(layer, x_of(), seed=point_seed(3, k)) for k in range(3)]
    merged = check(layer, x_of(), seed=3, points=3)
    assert merged.ok and merged.seed == 3
    assert merged.forward_calls == sum(r.forward_calls for r in single)
    assert merged.backward_calls == 3
    assert [e.name for e in merged.entries] == ["x", "W", "b"]
    for e in merged.entries:
        assert e.max_rel_error == max(r.entry(e.name).max_rel_error for r in single)
    # the points draw different cotangents: their errors differ
    assert len({r.entry("W").max_rel_error for r in single}) == 3


def test_a_bug_one_cotangent_misses_is_caught_at_a_later_point() -> None:
    layer = WrongForSomeCotangents(5, 3, rng=np.random.default_rng(1))
    # seed 3: points 0 and 1 draw dout[0, 0] < 0, point 2 draws it > 0
    g = [streams.cotangent(point_seed(3, k), (4, 3))[0, 0] for k in range(3)]
    assert g[0] < 0 and g[1] < 0 < g[2]
    assert check(layer, x_of(), seed=3).ok
    result = check(layer, x_of(), seed=3, points=3)
    assert [e.name for e in result.failed_entries] == ["x"]
    note = f"point 2 of 3 failed (seed={point_seed(3, 2)}): x"
    assert any(n.startswith(note) for n in result.notes)
    assert "reproduce with seed=3" in str(result)
    # the failing point alone, as the note says
    assert not check(layer, x_of(), seed=point_seed(3, 2)).ok


DOMAIN_BUG = """
import numpy as np


class Softplus:
    \"\"\"log(1 + exp(x)); backward is 1% off where x > 2 only.\"\"\"

    def forward(self, x):
        self.x = x
        return np.log1p(np.exp(x))

    def backward(self, dout):
        grad = dout / (1.0 + np.exp(-self.x))
        return np.where(self.x > 2.0, 1.01 * grad, grad)

    @classmethod
    def gradcheck_case(cls, rng):
        # one value per case, drawn from [0, 3): seed 2 draws 1.97 at point 0, 2.72 at point 4
        return cls(), (np.full((2, 3), rng.uniform(0.0, 3.0)),)
"""


def test_a_bug_on_part_of_the_input_domain_is_caught_with_five_points(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(domainbug=DOMAIN_BUG)
    pytester.syspathinsert()
    args = ("--gradcheck-discover=domainbug", "--gradcheck-seed=2", *QUIET_PLUGINS)
    pytester.runpytest(*args).assert_outcomes(passed=1)
    result = pytester.runpytest(*args, "--gradcheck-points=5")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*point 4 of 5 failed (seed={point_seed(2, 4)}): x*"])

    # the same from the ini file, and from python -m pytest_gradcheck
    pytester.makeini("[pytest]\ngradcheck_points = 5\n")
    pytester.runpytest(*args).assert_outcomes(failed=1)
    out = io.StringIO()
    assert main(["domainbug", "--seed", "2"], out=out) == 0
    assert main(["domainbug", "--seed", "2", "--points", "5"], out=out) == 1


def test_points_from_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import numpy as np
        import pytest
        from example_nn import Linear


        @pytest.mark.gradcheck(points=4)
        def test_four(gradcheck):
            result = gradcheck(Linear(5, 3, rng=np.random.default_rng(1)),
                               np.random.default_rng(0).normal(size=(4, 5)))
            assert result.backward_calls == 4
        """
    )
    pytester.runpytest(*QUIET_PLUGINS).assert_outcomes(passed=1)


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5])
def test_points_must_be_a_positive_integer(bad: object) -> None:
    from pytest_gradcheck import GradcheckUsageError

    with pytest.raises(GradcheckUsageError, match="points"):
        check(Linear(5, 3), x_of(), points=bad)


SOMETIMES_SKIPPED = """
import numpy as np
from pytest_gradcheck import SkipCase


class DoubledGradient:
    def __init__(self):
        self.W = np.linspace(0.5, 1.5, 3)

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = 2.0 * (dout * self.x).sum(axis=0)
        return dout * self.W

    @classmethod
    def gradcheck_case(cls, rng):
        calls.append(1)
        if len(calls) > 1:
            raise SkipCase("no case for this draw")
        return cls(), (rng.normal(size=(4, 3)),)


calls = []
"""


def test_a_case_that_cannot_be_built_at_a_later_point_never_hides_a_failure(
    pytester: pytest.Pytester,
) -> None:
    # Skipping there would drop point 0's FAIL: the run must not end green.
    pytester.makepyfile(skipper=SOMETIMES_SKIPPED)
    pytester.syspathinsert()
    args = ("--gradcheck-discover=skipper", "--gradcheck-points=3", *QUIET_PLUGINS)
    result = pytester.runpytest_subprocess(*args)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*could not be built (no case for this draw)*"])


class InputNamedLikeItsParameter:
    """forward(b) adds a parameter also called b; backward doubles the parameter's gradient."""

    def __init__(self) -> None:
        self.b = np.linspace(0.5, 1.5, 3)

    def forward(self, b: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.tanh(b) + self.b
        self._x = b
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self.db = 2.0 * dout.sum(axis=0)
        grad: np.ndarray = dout * (1.0 - np.tanh(self._x) ** 2)
        return grad


def test_points_keep_an_input_and_a_parameter_of_the_same_name_apart() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3))
    result = check(InputNamedLikeItsParameter(), x, points=2)
    assert [(e.kind, e.name, e.status) for e in result.entries] == [
        ("input", "b", "ok"), ("param", "b", "FAIL")]
