"""Every rule that can change a verdict is listed once (`rules.RULES`), documented where it lives
and in docs/verdicts.md, backed by tests that exist, and named by the rows it decides."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from pytest_gradcheck import check, rules

ROOT = Path(__file__).resolve().parents[1]
NAMES = {r.name for r in rules.RULES}


def test_docs_verdicts_holds_the_generated_table() -> None:
    doc = (ROOT / "docs" / "verdicts.md").read_text()
    assert rules.markdown_table() in doc, (
        "docs/verdicts.md's table is out of date; replace it with rules.markdown_table()"
    )


def test_rule_names_are_unique() -> None:
    assert len(NAMES) == len(rules.RULES)


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.name)
def test_each_rules_unit_exists_and_its_docstring_names_the_rule(rule: rules.Rule) -> None:
    module, _, path = rule.unit.partition(".")
    obj: object = importlib.import_module(f"pytest_gradcheck.{module}")
    for part in path.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    doc = getattr(obj, "__doc__", None) or ""
    assert f'Verdict rule "{rule.name}"' in doc, rule.unit


def _test_names(path: Path) -> set[str]:
    """The test functions a test module defines at its top level."""
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


@pytest.mark.parametrize("rule", rules.RULES, ids=lambda r: r.name)
def test_each_rule_names_tests_that_exist(rule: rules.Rule) -> None:
    assert rule.tests, f"{rule.name}: no test proves a real error still fails through it"
    for node_id in rule.tests:
        file, _, name = node_id.partition("::")
        name = name.partition("[")[0]
        assert (ROOT / file).is_file(), node_id
        assert name in _test_names(ROOT / file), node_id


class Relu:
    """max(x, 0) with a right backward: x holds exact zeros, so full mode meets kinks."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = np.maximum(x, 0.0)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        out: np.ndarray = dout * (self.x > 0)
        return out


class Affine:
    def __init__(self, n_in: int, n_out: int, off: float = 0.0) -> None:
        rng = np.random.default_rng(0)
        self.params = {"W": rng.normal(size=(n_in, n_out)), "b": rng.normal(size=n_out)}
        self.grads: dict[str, np.ndarray] = {}
        self.off = off

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        out: np.ndarray = x @ self.params["W"] + self.params["b"]
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dw = self.x.T @ dout
        dw.flat[7] *= 1.0 + self.off
        self.grads.update(W=dw, b=dout.sum(axis=0))
        dx: np.ndarray = dout @ self.params["W"].T
        return dx


def test_rows_name_the_rule_that_decided_them() -> None:
    x = np.random.default_rng(1).normal(size=(6, 8))
    x[0, :3] = 0.0
    full = check(Relu(), x, mode="full")
    assert full.ok and full.entry("x").decided_by == "kinks"
    assert check(Affine(8, 4), x, mode="full").entry("W").decided_by == "elements"
    joint = check(Affine(8, 4), x, mode="fast")
    assert {e.decided_by for e in joint.entries} == {"joint direction"}
    wrong = check(Affine(8, 4, off=0.01), x, mode="fast")
    assert not wrong.ok and wrong.entry("W").decided_by == "search"
    assert wrong.entry("b").decided_by == "direction"
    for result in (full, joint, wrong):
        assert {e.decided_by for e in result.entries} <= NAMES
        assert "decided by" in str(result).splitlines()[1]
        rows = json.loads(json.dumps(result.to_dict()))["entries"]
        assert [r["decided_by"] for r in rows] == [e.decided_by for e in result.entries]


def test_rows_that_were_not_judged_name_no_rule() -> None:
    x = np.random.default_rng(1).normal(size=(6, 8))
    result = check(Affine(8, 4), x, params=["W"])
    assert result.entry("b").status == "not selected"
    assert result.entry("b").decided_by is None
