"""docs/adapting.md cannot rot: its code blocks run under pytest as written, and every claim it
makes about the access protocol (what `forward`/`backward` receive and return, what state roots
do and what happens without them, the `Param` fields) is asserted here against its own code."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from helpers import QUIET_PLUGINS, rows

from pytest_gradcheck import (
    GradcheckUsageError,
    LayerAccess,
    NondeterministicLayerError,
    Param,
    check,
    register,
    unregister,
)

DOC = Path(__file__).parent.parent / "docs" / "adapting.md"


def doc_blocks() -> dict[str, str]:
    """The doc's python blocks, by the file name on their first line (`# legacynet.py`)."""
    blocks = re.findall(r"```python\n# (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return dict(blocks)


def test_the_doc_has_the_library_the_conftest_and_the_tests() -> None:
    assert set(doc_blocks()) == {"legacynet.py", "conftest.py", "test_legacy.py"}


def test_the_doc_runs_under_pytest_with_discovery(pytester: pytest.Pytester) -> None:
    blocks = doc_blocks()
    pytester.makepyfile(legacynet=blocks["legacynet.py"], test_legacy=blocks["test_legacy.py"])
    pytester.makeconftest(blocks["conftest.py"])
    pytester.makepyfile(
        test_bug="""
        import numpy as np
        from legacynet import Dense

        class DenseBiasBug(Dense):
            def backward_pass(self, dy):
                dx = super().backward_pass(dy)
                self.db = dy.mean(axis=0)
                return dx

        def test_bias_bug(gradcheck):
            gradcheck(DenseBiasBug(4, 3, np.random.default_rng(0)), np.ones((2, 4)))
        """
    )
    pytester.syspathinsert()
    result = pytester.runpytest(*QUIET_PLUGINS, "--gradcheck-discover=legacynet", "-v")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        ["*gradcheck::legacynet.Dense PASSED*", "*gradcheck::legacynet.NoisyScale PASSED*"]
    )
    result.stdout.fnmatch_lines(["*gradcheck DenseBiasBug: FAILED*", "  b *param*FAIL"])


# -- the doc's modules, imported here -----------------------------------------------------------


@pytest.fixture
def doc(tmp_path: Path) -> Iterator[tuple[ModuleType, ModuleType]]:
    """(legacynet, the conftest module), its hooks registered for `check()`."""
    blocks = doc_blocks()
    (tmp_path / "legacynet.py").write_text(blocks["legacynet.py"])
    (tmp_path / "adapting_conftest.py").write_text(blocks["conftest.py"])
    sys.path.insert(0, str(tmp_path))
    try:
        lib = importlib.import_module("legacynet")
        hooks = importlib.import_module("adapting_conftest")
        register(hooks)
        try:
            yield lib, hooks
        finally:
            unregister(hooks)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("legacynet", None)
        sys.modules.pop("adapting_conftest", None)


class Adapter:
    """Registers `pytest_gradcheck_adapt` returning `access_cls(layer)` for the block."""

    def __init__(self, access_cls: type[LayerAccess]) -> None:
        self.access_cls = access_cls

    def pytest_gradcheck_adapt(self, obj: Any, label: Any, hook: Any) -> Any:
        return self.access_cls(obj)  # type: ignore[call-arg]

    def __enter__(self) -> Adapter:
        register(self)
        return self

    def __exit__(self, *exc: object) -> None:
        unregister(self)


def dense(lib: ModuleType) -> Any:
    return lib.Dense(4, 3, np.random.default_rng(0))


def x_in(n: int = 5, d: int = 4) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, d))


def test_the_order_of_calls(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc
    calls: list[str] = []

    class Recording(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        pass

    for name in ("state_roots", "input_names", "force_train_mode", "random_sources",
                 "forward", "parameters", "loss_terms", "backward"):
        def record(self: Any, *args: Any, _name: str = name) -> Any:
            calls.append(_name)
            return getattr(hooks.LegacyAccess, _name)(self, *args)

        setattr(Recording, name, record)
    with Adapter(Recording):
        result = check(lib.NoisyScale(3), x_in(4, 3), mode="fast")
    assert result.ok
    firsts = list(dict.fromkeys(calls))
    assert firsts == ["state_roots", "input_names", "force_train_mode", "random_sources",
                      "forward", "parameters", "loss_terms", "backward"]
    first_param, backward = calls.index("parameters"), calls.index("backward")
    assert calls[:first_param].count("forward") == 1  # parameters after the first forward
    assert calls[first_param:backward].count("forward") == 2  # the decoy and the second
    assert calls.count("backward") == 1 and calls.count("force_train_mode") == 1
    assert calls.count("parameters") == 2 and calls.index("parameters", backward) > backward
    assert calls[-1] == "forward" and calls.count("forward") == result.forward_calls


def test_forward_receives_working_copies_and_other_inputs_as_given(
    doc: tuple[ModuleType, ModuleType],
) -> None:
    lib, hooks = doc
    seen: list[list[Any]] = []

    class Recording(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def forward(self, inputs: list[Any]) -> Any:
            seen.append(list(inputs))
            return self.layer.forward_pass(inputs[0])

    x = x_in().astype(np.float32)
    labels, extra = np.arange(5), [1, 2]
    with Adapter(Recording):
        result = check(dense(lib), x, labels, extra)
    assert result.ok
    work, ints, other = seen[0]
    assert work is not x and work.dtype == np.float64 and work.flags.c_contiguous
    np.testing.assert_array_equal(work, x.astype(np.float64))
    assert ints is not labels and np.array_equal(ints, labels)
    assert other is extra
    assert rows(result)["input1"] == "integer input"


def test_backward_gets_the_checkers_own_cotangent_once(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc
    douts: list[np.ndarray] = []

    class Recording(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def backward(self, dout: np.ndarray) -> Any:
            douts.append(dout.copy())
            grads = super().backward(dout)
            dout[...] = 0.0  # the checker's copy: harmless
            return grads

    with Adapter(Recording):
        result = check(dense(lib), x_in())
    assert result.ok and result.backward_calls == 1
    (dout,) = douts
    assert dout.shape == (5, 3) and dout.dtype == np.float64
    assert not np.allclose(dout, 1.0)


def test_a_missing_input_gradient_is_an_error_row(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc

    class NoInputGradient(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def backward(self, dout: np.ndarray) -> Any:
            self.layer.backward_pass(dout)
            return [None]

    with Adapter(NoInputGradient):
        result = check(dense(lib), x_in())
        assert rows(result) == {"x": "error", "W": "ok", "b": "ok"}
        assert "inputs=False" in str(result.entry("x").message)
        assert check(dense(lib), x_in(), inputs=False).ok


def test_a_backward_that_raises_is_a_usage_error(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc

    class Raising(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def backward(self, dout: np.ndarray) -> Any:
            raise RuntimeError("no cache")

    with Adapter(Raising), pytest.raises(GradcheckUsageError, match=r"^Dense: backward raised"):
        check(dense(lib), x_in())


def test_default_input_names(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc

    class Unnamed(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        input_names = LayerAccess.input_names

        def forward(self, inputs: list[Any]) -> Any:
            return self.layer.forward_pass(inputs[0])

    with Adapter(Unnamed):
        assert list(rows(check(dense(lib), x_in()))) == ["input", "W", "b"]
        assert list(rows(check(dense(lib), x_in(), np.arange(5)))) == [
            "input1", "input0", "W", "b"
        ]


# -- state roots ----------------------------------------------------------------------------------


def snapshot(layer: Any) -> tuple[Any, ...]:
    return (layer.phase, layer.running_mean.copy(), layer.gain.copy(),
            str(layer.rng.bit_generator.state))


def same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and a[3] == b[3] and all(np.array_equal(x, y) for x, y in zip(a[1:3],
                                                                                    b[1:3]))


def test_with_state_roots_everything_is_put_back(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, _ = doc
    layer = lib.NoisyScale(3)
    before = snapshot(layer)
    result = check(layer, x_in(4, 3))
    assert result.ok
    assert "random streams reset before every evaluation: NoisyScale.rng" in result.notes
    assert "forced training mode: phase='fit'" in result.notes
    assert same(snapshot(layer), before)


def test_without_state_roots_the_generator_is_unseen_and_changes_stay(
    doc: tuple[ModuleType, ModuleType],
) -> None:
    lib, hooks = doc

    class Rootless(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def state_roots(self) -> list[Any]:
            return []

    class RootlessWithSource(Rootless):
        def random_sources(self) -> list[Any]:
            return [self.layer.rng]

    layer = lib.NoisyScale(3)
    with Adapter(Rootless), pytest.raises(NondeterministicLayerError):
        check(layer, x_in(4, 3))
    assert layer.phase == "fit" and layer.running_mean.any()

    layer = lib.NoisyScale(3)
    with Adapter(RootlessWithSource):
        assert check(layer, x_in(4, 3)).ok
    assert layer.phase == "fit" and layer.running_mean.any()


# -- Param ----------------------------------------------------------------------------------------


def test_set_swaps_in_a_float64_copy_and_the_original_comes_back(
    doc: tuple[ModuleType, ModuleType],
) -> None:
    lib, _ = doc
    layer = dense(lib)
    layer.W = layer.W.astype(np.float32)
    original = layer.W
    result = check(layer, x_in())
    assert result.ok and result.entry("W").dtype == "float32"
    assert any("checked on float64 copies: W (float32)" in n for n in result.notes)
    assert layer.W is original and layer.W.dtype == np.float32


def test_without_set_the_array_is_perturbed_in_place(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc

    class NoSet(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def parameters(self) -> list[Param]:
            found: list[Param] = super().parameters()
            for p in found:
                p.set = None
            return found

    layer = dense(lib)
    w, values = layer.W, layer.W.copy()
    with Adapter(NoSet):
        assert check(layer, x_in()).ok
        assert layer.W is w and np.array_equal(layer.W, values)
        layer.W.flags.writeable = False
        with pytest.raises(GradcheckUsageError, match="'W' is not a writeable contiguous"):
            check(layer, x_in())


@pytest.mark.parametrize(("required", "status"), [(True, "error"), (False, "not differentiated")])
def test_a_gradient_of_none(
    doc: tuple[ModuleType, ModuleType], required: bool, status: str
) -> None:
    lib, hooks = doc

    class NoBiasGradient(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def parameters(self) -> list[Param]:
            found: list[Param] = super().parameters()
            found[1].grad = lambda: None
            found[1].required = required
            return found

    with Adapter(NoBiasGradient):
        result = check(dense(lib), x_in())
    assert rows(result) == {"x": "ok", "W": "ok", "b": status}


def test_not_differentiable_is_listed_and_never_perturbed(
    doc: tuple[ModuleType, ModuleType],
) -> None:
    lib, hooks = doc
    layer = dense(lib)
    frozen = np.ones(3)
    frozen.flags.writeable = False  # perturbing it would fail
    layer.scale_stat = frozen

    class WithStatistic(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def parameters(self) -> list[Param]:
            return [*super().parameters(), hooks.statistic(self.layer, "scale_stat")]

    with Adapter(WithStatistic):
        result = check(layer, x_in())
    assert rows(result) == {"x": "ok", "W": "ok", "b": "ok", "scale_stat": "not differentiated"}


def test_grad_source_is_quoted_when_a_gradient_is_never_written(
    doc: tuple[ModuleType, ModuleType],
) -> None:
    lib, _ = doc

    class StaleBias(lib.Dense):  # type: ignore[name-defined, misc]
        def backward_pass(self, dy: np.ndarray) -> np.ndarray:
            self.dW = self.x.T @ dy  # forgets db
            return dy @ self.W.T

    layer = StaleBias(4, 3, np.random.default_rng(0))
    layer.db = np.zeros(3)  # an existing gradient array, left alone by backward
    result = check(layer, x_in())
    assert rows(result)["b"] == "error"
    assert "backward never wrote the gradient of 'b' (db still holds" in str(
        result.entry("b").message
    )


def test_name_names_the_row_and_params_selects_by_it(doc: tuple[ModuleType, ModuleType]) -> None:
    lib, hooks = doc

    class Renamed(hooks.LegacyAccess):  # type: ignore[name-defined, misc]
        def parameters(self) -> list[Param]:
            found: list[Param] = super().parameters()
            found[0].name, found[0].layer = "kernel", "SomewhereElse"
            return found

    with Adapter(Renamed):
        result = check(dense(lib), x_in(), params=["kernel"])
    assert rows(result) == {"x": "ok", "kernel": "ok", "b": "not selected"}


def no_adapter_blocks() -> list[str]:
    """The python blocks of the section on code that needs no adapter."""
    section = DOC.read_text().split("## Code that needs no adapter", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_no_adapter_section_has_one_example_per_shape() -> None:
    assert len(no_adapter_blocks()) == 5


@pytest.mark.parametrize("index", range(5))
def test_each_no_adapter_example_runs_as_it_stands(index: int) -> None:
    namespace: dict[str, Any] = {"__name__": f"doc_example_{index}"}
    exec(compile(no_adapter_blocks()[index], f"adapting.md example {index}", "exec"), namespace)
