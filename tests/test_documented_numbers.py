"""The numbers the README and docs state about the checker's costs and rules are the code's."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_gradcheck import elements, modes, numeric
from pytest_gradcheck.calls import CONFIRMATIONS, repeats

ROOT = Path(__file__).resolve().parent.parent


def text(name: str) -> str:
    return re.sub(r"\s+", " ", (ROOT / name).read_text())


def test_the_readme_states_the_checkers_counts_and_limits() -> None:
    readme = text("README.md")
    assert f"confirmed by {CONFIRMATIONS} evaluations" in readme
    assert f", {CONFIRMATIONS} more when a verdict has kinks or failures" in readme
    assert (f"and {modes.NOISE_PROBE_EVALUATIONS} per array measuring the noise of a layer that "
            "computes in float32") in readme
    assert f"({repeats(1000)} for 1,000)" in readme
    assert f"({modes.NOISE_PROBE_EVALUATIONS} extra evaluations per array" in readme
    assert f"two step sizes {modes.NOISE_STEP_RATIO:.0f}x apart" in readme
    assert f"measured again at step h/{elements.KINK_SHRINK:.0f}" in readme
    assert numeric.DWARFING_STEP == 0.1 and "more than a tenth of its RMS" in readme


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
