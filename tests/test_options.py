"""Option declarations: coercion of strings and Python values, one source for the pytest options,
the ini keys, the `python -m pytest_gradcheck` flags and the README's options table, and
`seed=random` on the command line of `python -m pytest_gradcheck`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_gradcheck import GradcheckUsageError, Options
from pytest_gradcheck.__main__ import options_from, parse_args
from pytest_gradcheck.options import (
    MODES,
    OPTIONS,
    SPECS,
    Where,
    boolean,
    choice,
    finite,
    integer,
    markdown_table,
    patterns,
    resolve_seed,
    settable,
    streams,
)

README = Path(__file__).resolve().parents[1] / "README.md"

# A value other than the default for every option settable from strings, and what it becomes.
STRING_EXAMPLES: dict[str, tuple[str, Any]] = {
    "seed": ("7", 7),
    "eps": ("1e-4", 1e-4),
    "rtol": ("0.25", 0.25),
    "atol": ("1e-9", 1e-9),
    "mode": ("sample", "sample"),
    "samples": ("5", 5),
    "directions": ("3", 3),
    "auto_limit": ("64", 64),
    "summary": ("full", "full"),
    "points": ("5", 5),
}
# About pytest's terminal summary: the command line prints every table (`-q`: failed only).
PYTEST_ONLY = {"summary"}


def test_every_field_of_options_is_declared_with_its_default() -> None:
    assert [spec.name for spec in OPTIONS] == Options.names()
    assert Options(**{spec.name: spec.default for spec in OPTIONS}) == Options()
    for f in fields(Options):
        assert SPECS[f.name].help and SPECS[f.name].type and SPECS[f.name].default_text


def test_string_settable_options_are_the_same_in_every_front_end() -> None:
    names = {spec.name for spec in settable(Where.INI)}
    assert names == set(STRING_EXAMPLES)
    assert names == {spec.name for spec in settable(Where.PYTEST)}
    assert names - PYTEST_ONLY == {spec.name for spec in settable(Where.CLI)}
    assert settable(Where.PYTHON) == list(OPTIONS)
    for name, (text, value) in STRING_EXAMPLES.items():
        assert value != getattr(Options(), name)
        assert getattr(Options().updated({name: text}, "ini file"), name) == value


@pytest.mark.parametrize(
    ("coerce", "value", "expected"),
    [
        (integer(1), " 12 ", 12),
        (integer(1), 3.0, 3),
        (integer(1), np.int64(4), 4),
        (integer(0, 9), "9", 9),
        (finite(0, inclusive=False), "1e-3", 1e-3),
        (finite(0, inclusive=True), 0, 0.0),
        (choice(*MODES), "fast", "fast"),
        (boolean, " Yes", True),
        (boolean, "off", False),
        (boolean, "", False),
        (boolean, 0, False),
        (patterns, "W, layers.*.gamma b", ("W", "layers.*.gamma", "b")),
        (patterns, ["W"], ("W",)),
        (streams, None, ()),
    ],
)
def test_coercers_parse_strings_and_accept_python_values(
    coerce: Any, value: Any, expected: Any
) -> None:
    assert coerce(value) == expected


@pytest.mark.parametrize(
    ("coerce", "value", "message"),
    [
        (integer(1), "1.5", "must be an integer >= 1"),
        (integer(1), 0, "must be an integer >= 1"),
        (integer(0, 9), 10, "must be an integer in [0, 9]"),
        (integer(0, 9, what="a digit"), 2.5, "must be a digit"),
        (finite(0, inclusive=False), 0.0, "must be a finite number > 0"),
        (finite(0, inclusive=True), "-1", "must be a finite number >= 0"),
        (finite(0, inclusive=True), "inf", "must be a finite number >= 0"),
        (choice("a", "b"), "c", "must be one of a, b"),
        (boolean, "nope", "must be true or false"),
        (patterns, 3, "must be a list of parameter names or glob patterns"),
    ],
)
def test_coercers_refuse_with_what_is_expected(coerce: Any, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        coerce(value)


def test_a_refused_value_is_a_usage_error_naming_source_and_option() -> None:
    with pytest.raises(GradcheckUsageError) as info:
        Options().updated({"samples": "0"}, "ini file")
    assert str(info.value) == "ini file: option samples='0' must be an integer >= 1"


def test_seed_random_is_replaced_by_a_drawn_seed_only_where_strings_come_from() -> None:
    assert resolve_seed({"seed": " Random ", "mode": "fast"}, lambda: 42) == {
        "seed": 42,
        "mode": "fast",
    }
    assert resolve_seed({"seed": "5"}, lambda: 42) == {"seed": "5"}
    # In Python (check(), the marker) it stays an error.
    with pytest.raises(GradcheckUsageError, match="option seed='random' must be an integer"):
        Options().updated({"seed": "random"}, "check()")


def test_readme_options_table_is_generated_from_the_declarations() -> None:
    table = markdown_table()
    rows = table.splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{spec.name}`" for spec in OPTIONS]
    assert table in README.read_text(), (
        "README.md's options table is out of date; replace it with "
        "pytest_gradcheck.options.markdown_table()"
    )


# -- the front ends take every string-settable option ------------------------------------------

OPTIONS_TEST = """
def test_options(gradcheck):
    expected = {expected!r}
    assert {{k: getattr(gradcheck.options, k) for k in expected}} == expected
"""


def test_every_string_option_from_the_ini_file(pytester: pytest.Pytester) -> None:
    ini = "".join(f"{SPECS[n].ini_key} = {t}\n" for n, (t, _) in STRING_EXAMPLES.items())
    pytester.makeini("[pytest]\n" + ini)
    expected = {n: v for n, (_, v) in STRING_EXAMPLES.items()}
    pytester.makepyfile(OPTIONS_TEST.format(expected=expected))
    pytester.runpytest().assert_outcomes(passed=1)


def test_every_string_option_from_the_pytest_command_line(pytester: pytest.Pytester) -> None:
    expected = {n: v for n, (_, v) in STRING_EXAMPLES.items()}
    pytester.makepyfile(OPTIONS_TEST.format(expected=expected))
    flags = [f"{SPECS[n].pytest_flag}={t}" for n, (t, _) in STRING_EXAMPLES.items()]
    result = pytester.runpytest(*flags)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["gradcheck: seed=7 mode=sample eps=0.0001 rtol=0.25 atol=1e-09"])


def test_every_string_option_from_the_gradcheck_command_line() -> None:
    examples = {n: e for n, e in STRING_EXAMPLES.items() if n not in PYTEST_ONLY}
    flags = [arg for n, (t, _) in examples.items() for arg in (SPECS[n].cli_flag, t)]
    opts, drawn = options_from(parse_args(["some_module", *flags]))
    assert not drawn
    assert {n: getattr(opts, n) for n in examples} == {n: v for n, (_, v) in examples.items()}
    assert options_from(parse_args(["some_module"])) == (Options(), False)


# -- python -m pytest_gradcheck --seed random --------------------------------------------------

TINY_MODULE = """
import numpy as np


class Scale:
    def __init__(self, n):
        self.W = np.linspace(0.5, 1.5, n)

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = (dout * self.x).sum(axis=0)
        return dout * self.W

    @classmethod
    def gradcheck_case(cls, rng):
        return cls(3), (rng.normal(size=(4, 3)),)
"""


def _cli(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out_json = tmp_path / f"run{len(list(tmp_path.glob('run*.json')))}.json"
    # `-m` puts the working directory first on sys.path: the module there is importable.
    run = subprocess.run(
        [sys.executable, "-m", "pytest_gradcheck", "tinyscale", "--json", str(out_json), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run, json.loads(out_json.read_text())


def test_cli_seed_random_draws_a_seed_prints_it_and_the_run_repeats_with_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "tinyscale.py").write_text(textwrap.dedent(TINY_MODULE))
    drawn, payload = _cli(tmp_path, "--seed", "random", "--mode", "full")
    lines = drawn.stdout.splitlines()
    # The header pytest shows, first, then the seed in every table and in the last line.
    header = re.fullmatch(r"gradcheck: seed=(\d+) mode=full eps=auto rtol=auto atol=0", lines[0])
    assert header, lines[0]
    seed = int(header.group(1))
    assert payload["seed"] == seed and [r["seed"] for r in payload["results"]] == [seed]
    assert lines[-1].endswith(f"(seed={seed})")

    repeated, again = _cli(tmp_path, "--seed", str(seed), "--mode", "full")
    assert not repeated.stdout.startswith("gradcheck: seed=")  # a given seed needs no header
    entries = [(e["name"], e["max_rel_error"]) for e in payload["results"][0]["entries"]]
    assert entries == [(e["name"], e["max_rel_error"]) for e in again["results"][0]["entries"]]
