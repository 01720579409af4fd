"""The numbers the README and docs state about the checker's costs and rules are the code's, and
the README keeps the two commands CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_gradcheck import directional, elements, modes, numeric
from pytest_gradcheck.calls import CONFIRMATIONS, repeats
from pytest_gradcheck.options import AUTO_FULL_LIMIT, Options

ROOT = Path(__file__).resolve().parent.parent


def text(name: str) -> str:
    return re.sub(r"\s+", " ", (ROOT / name).read_text())


def test_how_the_check_works_states_the_checkers_counts_and_limits() -> None:
    page = text("docs/how-it-works.md")
    assert f"confirmed by {CONFIRMATIONS} evaluations" in page
    assert (f"({modes.NOISE_PROBE_EVALUATIONS} extra evaluations per array, "
            f"{modes.FLOAT64_NOISE_EVALUATIONS} where the first step size") in page
    assert (f"to {modes.JOINT_POINTS} points on either side of x "
            f"({modes.JOINT_NOISE_EVALUATIONS} evaluations; {modes.ELEMENT_POINTS} points, "
            f"{modes.ELEMENT_NOISE_EVALUATIONS} evaluations, for the element floor") in page
    assert (f"`atol_eff` is {numeric.MEASURED_NOISE_FACTOR:.0f} times that noise over the step"
            in page)
    assert f"two step sizes {modes.NOISE_STEP_RATIO:.0f}x apart" in page
    assert numeric.DWARFING_STEP == 0.1 and "more than a tenth of its RMS" in page
    assert (f"at a {elements.KINK_SHRINK:.0f}x smaller step (2 more evaluations each, up to "
            f"{elements.TRUNCATION_PROBES} elements)") in page
    assert numeric.PRECISION_DEFAULTS["float64"][0] == 1e-6 and "(1e-6 in float64)" in page


def test_the_modes_page_states_the_checkers_counts_and_limits() -> None:
    page = text("docs/modes.md")
    assert f", {CONFIRMATIONS} more when a verdict has kinks or failures" in page
    assert (f"and {modes.NOISE_PROBE_EVALUATIONS} per array measuring the noise of a layer that "
            "computes in float32") in page
    assert f"({repeats(1000)} for 1,000)" in page
    assert f"at h/{elements.KINK_SHRINK:.0f} the rounding allowance is 16 times wider" in page
    assert f"element by element up to {directional.FALLBACK_LIMIT:,} elements" in page
    assert f"`auto_limit` ({AUTO_FULL_LIMIT:,}) elements" in page
    assert numeric.PRECISION_DEFAULTS["float64"][1] == 1e-5 and "`rtol` (1e-5 in float64)" in page


def test_the_readme_states_the_default_modes_limit() -> None:
    assert Options().auto_limit == AUTO_FULL_LIMIT
    readme = text("README.md")
    assert f"up to `auto_limit` ({AUTO_FULL_LIMIT:,}) elements" in readme
    assert f"`full` outright for a check of up to {modes.AUTO_FULL_OUTRIGHT} elements" in readme
    assert f"(with the rounding noise measured: {modes.JOINT_NOISE_EVALUATIONS} more)" in readme


def test_the_readme_keeps_the_two_commands_ci_runs() -> None:
    # The README's two commands are a contract: CI installs and tests exactly this way.
    readme = (ROOT / "README.md").read_text()
    setup = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" && '
             "python -m pytest_gradcheck example_nn")
    assert f"```bash\n{setup}\n```" in readme
    assert "```bash\npython -m pytest -n 2\n```" in readme
    assert "python -m pytest -n 2" in (ROOT / ".ci" / "run").read_text()


def test_the_architecture_page_states_the_confirmations() -> None:
    assert f"confirmed by {CONFIRMATIONS} evaluations" in text("docs/architecture.md")


def test_only_the_pytest_glue_imports_pytest() -> None:
    # docs/architecture.md: nothing below the front ends imports pytest.
    importing = {
        p.name for p in (ROOT / "pytest_gradcheck").glob("*.py")
        if re.search(r"^\s*(import pytest|from pytest\b|import _pytest|from _pytest\b)",
                     p.read_text(), re.MULTILINE)
    }
    assert importing == {"plugin.py", "collect.py", "items.py"}
