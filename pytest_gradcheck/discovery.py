"""Discovery: find what can be gradient-checked in modules and packages.

A *target* (`DiscoveredTarget`) is one of four kinds, each defined in the scanned module:

- `CLASS`: a layer class, with `forward` and `backward`;
- `PAIR`: a module-level pair of functions `X_forward` / `X_backward`;
- `FUNCTION`: a value-and-gradient function `f(*args) -> (loss, grads)`: a module-level
  function with a `gradcheck_case` attribute that is not half of an `X_forward`/`X_backward`
  pair;
- `MODEL`: a class with a `loss` method and no `forward`/`backward`
  (`loss, grads = model.loss(*args)`), with a `gradcheck_case` classmethod.

A project teaches discovery other shapes with the `pytest_gradcheck_discover_target` hook,
asked first for every public class and function of a module. A target becomes a check through
`pytest_gradcheck_make_case`, which returns a `Case` (the object to check and its arguments);
the built-in implementation reads the target's `gradcheck_case` declaration (see
`pytest_gradcheck.conventions` and docs/hooks.md).

Left out on purpose, so they never show up as checks at all:

- classes whose `forward` is a stub (its body only raises NotImplementedError, or is `...` /
  `pass`), and classes `inspect.isabstract` reports: abstract bases, not layers;
- classes that opt out with `gradcheck_case = None` in their own body (not inherited);
- private names (leading underscore) and `__main__` submodules (importing them would run them).

Every other target is collected; one that cannot be built is reported as skipped, with the
reason and how to fix it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from . import streams
from .errors import GradcheckUsageError

CLASS = "class"
PAIR = "pair"
FUNCTION = "function"
MODEL = "model"
KINDS = (CLASS, PAIR, FUNCTION, MODEL)
FORWARD_SUFFIX = "_forward"
BACKWARD_SUFFIX = "_backward"
DECLARATION = "gradcheck_case"


@dataclass(init=False)
class Case:
    """A checkable instance and its inputs, as returned by `pytest_gradcheck_make_case`.

    `layer` is a layer object or a `(forward_fn, backward_fn)` pair; `inputs` are the
    positional arguments of forward; `options` are check options (rtol, params, mode, ...)
    applied on top of the run's options. `target` is the field's earlier name, still
    accepted as a keyword and an attribute.
    """

    layer: Any
    inputs: tuple[Any, ...]
    options: dict[str, Any]

    def __init__(
        self,
        layer: Any = None,
        inputs: tuple[Any, ...] = (),
        options: dict[str, Any] | None = None,
        *,
        target: Any = None,
    ) -> None:
        if target is not None and layer is not None:
            raise TypeError("Case() takes the layer once: as layer= (or target=, its old name)")
        self.layer = layer if target is None else target
        self.inputs = inputs
        self.options = {} if options is None else options

    @property
    def target(self) -> Any:
        return self.layer

    @target.setter
    def target(self, value: Any) -> None:
        self.layer = value


class SkipCase(Exception):
    """Raised by a `gradcheck_case` declaration or a `pytest_gradcheck_make_case` hook: the
    target cannot be checked. The message is the reason shown; say how to fix it."""


@dataclass(frozen=True)
class DiscoveredTarget:
    """One discovered layer class, function pair, value-and-gradient function or model."""

    name: str  # qualified: "pkg.module.Linear", or "pkg.module.affine" for a pair
    kind: str  # one of KINDS
    obj: Any  # the class or function, or the (forward_fn, backward_fn) tuple

    @property
    def short_name(self) -> str:
        return self.name.rpartition(".")[2]


def case_rng(seed: int, name: str) -> np.random.Generator:
    """The generator handed to `make_case`: fixed by the run's seed and the target's name only,
    so serial runs, xdist workers and the CLI build identical cases."""
    return streams.stream(seed, streams.DISCOVERY_CASE, streams.key(name))


def split_specs(values: Iterable[str]) -> list[str]:
    """Module names from ini lines / flags, split on commas and whitespace, duplicates dropped."""
    out: list[str] = []
    for value in values:
        for part in value.replace(",", " ").split():
            if part not in out:
                out.append(part)
    return out


def import_spec(spec: str) -> ModuleType:
    """Import a module or package by dotted name; a missing one is a usage error."""
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (spec == missing or spec.startswith(missing + ".")):
            raise  # the module exists but one of its own imports is missing
        raise GradcheckUsageError(
            f"gradcheck discovery: cannot import {spec!r} ({exc}); name an importable module "
            "or package (installed, or on sys.path / pytest's `pythonpath` ini option)"
        ) from None


def iter_modules(spec: str) -> list[ModuleType]:
    """The module `spec` and, for a package, all its submodules (imported, `__main__` skipped)."""
    root = import_spec(spec)
    modules = [root]
    path = getattr(root, "__path__", None)
    if path is None:
        return modules
    names = sorted(
        info.name
        for info in pkgutil.walk_packages(path, prefix=root.__name__ + ".")
        if info.name.rpartition(".")[2] != "__main__"
    )
    for name in names:
        parts = name[len(root.__name__) + 1 :].split(".")
        if any(p.startswith("_") for p in parts):
            continue
        modules.append(importlib.import_module(name))
    return modules


def is_stub(fn: Any) -> bool:
    """True if `fn`'s body does nothing but raise NotImplementedError (or is `...` / `pass`)."""
    fn = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return False
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # docstring (or a bare `...`, also fine)
    for stmt in body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue
        if isinstance(stmt, ast.Raise) and _names_not_implemented(stmt.exc):
            continue
        return False
    return True


def _names_not_implemented(exc: ast.expr | None) -> bool:
    if isinstance(exc, ast.Call):
        exc = exc.func
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def is_layer_class(cls: Any) -> bool:
    """A class with callable `forward` and `backward` whose forward is not a stub."""
    if not inspect.isclass(cls):
        return False
    forward, backward = getattr(cls, "forward", None), getattr(cls, "backward", None)
    if not (callable(forward) and callable(backward)):
        return False
    if inspect.isabstract(cls) or cls.__dict__.get(DECLARATION, ...) is None:
        return False
    return not is_stub(forward)


def is_model_class(cls: Any) -> bool:
    """A class with a callable `loss` that is not a layer (no `forward` and `backward` pair: a
    `forward` for predictions alone is fine, as for `check`), declaring `gradcheck_case` (a
    model checked through its loss; many classes have a `loss` method, so only declared ones
    are taken)."""
    if not inspect.isclass(cls) or not callable(getattr(cls, "loss", None)):
        return False
    if callable(getattr(cls, "forward", None)) and callable(getattr(cls, "backward", None)):
        return False
    return not inspect.isabstract(cls) and callable(getattr(cls, DECLARATION, None))


def kind_of(target: Any) -> str:
    """The kind of a discovered object as discovery's built-in rules see it: for the built-in
    `pytest_gradcheck_make_case`, which receives the object without its kind."""
    if isinstance(target, tuple):
        return PAIR
    if inspect.isclass(target):
        return MODEL if is_model_class(target) else CLASS
    return FUNCTION


def _pair_half(name: str, namespace: Mapping[str, Any]) -> bool:
    """True if `name` is the forward or backward half of an X_forward/X_backward pair."""
    for own, other in ((FORWARD_SUFFIX, BACKWARD_SUFFIX), (BACKWARD_SUFFIX, FORWARD_SUFFIX)):
        stem = name[: -len(own)]
        if name.endswith(own) and stem and inspect.isfunction(namespace.get(stem + other)):
            return True
    return False


def _hook_kind(hook: Any, name: str, obj: Any) -> str | None:
    """The kind a `pytest_gradcheck_discover_target` implementation gives `obj`, if any."""
    if hook is None:
        return None
    kind: str | None = hook.pytest_gradcheck_discover_target(name=name, obj=obj)
    if kind is not None and kind not in (CLASS, FUNCTION, MODEL):
        raise GradcheckUsageError(
            f"gradcheck discovery: pytest_gradcheck_discover_target returned {kind!r} for "
            f"{name}; return one of {CLASS!r}, {FUNCTION!r}, {MODEL!r} or None "
            "(pairs are found by their X_forward/X_backward names)"
        )
    return kind


def _defined_in(obj: Any, module: ModuleType) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _line(obj: Any) -> int:
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 0


def targets_in_module(module: ModuleType, hook: Any = None) -> list[DiscoveredTarget]:
    """The targets defined in `module`, in source order. `hook` (a hook relay) is asked first
    about every public class and function (`pytest_gradcheck_discover_target`)."""
    found: list[tuple[int, DiscoveredTarget]] = []
    namespace: Mapping[str, Any] = vars(module)
    for name, obj in namespace.items():
        if name.startswith("_") or not _defined_in(obj, module):
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        qual = f"{module.__name__}.{name}"
        kind = _hook_kind(hook, qual, obj)
        if kind is not None:
            found.append((_line(obj), DiscoveredTarget(qual, kind, obj)))
        elif inspect.isclass(obj):
            if is_layer_class(obj):
                found.append((_line(obj), DiscoveredTarget(qual, CLASS, obj)))
            elif is_model_class(obj):
                found.append((_line(obj), DiscoveredTarget(qual, MODEL, obj)))
        elif DECLARATION in vars(obj) and not _pair_half(name, namespace):
            found.append((_line(obj), DiscoveredTarget(qual, FUNCTION, obj)))
        elif name.endswith(FORWARD_SUFFIX):
            stem = name[: -len(FORWARD_SUFFIX)]
            backward = namespace.get(stem + BACKWARD_SUFFIX)
            if stem and inspect.isfunction(backward) and _defined_in(backward, module):
                pair = (obj, backward)
                pair_name = f"{module.__name__}.{stem}"
                found.append((_line(obj), DiscoveredTarget(pair_name, PAIR, pair)))
    found.sort(key=lambda t: t[0])
    return [t for _, t in found]


def find_targets(specs: Iterable[str], hook: Any = None) -> list[DiscoveredTarget]:
    """Every target in the named modules/packages (submodules included), without duplicates.
    `hook` is the hook relay whose `pytest_gradcheck_discover_target` is asked first.

    Raises `GradcheckUsageError` for a name that cannot be imported; any other exception
    raised while importing a module propagates.
    """
    seen: set[str] = set()
    targets = []
    for spec in specs:
        for module in iter_modules(spec):
            for t in targets_in_module(module, hook):
                if t.name not in seen:
                    seen.add(t.name)
                    targets.append(t)
    return targets


def to_case(value: Any, target: DiscoveredTarget) -> Case:
    """Normalise what a `gradcheck_case` declaration returned into a `Case`.

    Layer classes and models: a `Case`, or `(layer, inputs)` / `(layer, inputs, options)`
    where `inputs` is a tuple of forward's (or the model's `loss`) arguments (a single array is
    taken as the only input). Function pairs and value-and-gradient functions: a `Case` (its
    layer may be None: the discovered function or pair), or the tuple of arguments of the
    (forward) function.
    """
    by_arguments = target.kind in (PAIR, FUNCTION)
    if isinstance(value, Case):
        if value.layer is None and by_arguments:
            value.layer = target.obj
        if value.layer is None:
            raise GradcheckUsageError(
                f"{target.name}: {DECLARATION} returned a Case without "
                "a layer; put the layer instance in Case(layer=...)"
            )
        value.inputs = _as_inputs(value.inputs)
        value.options = dict(value.options or {})
        return value
    if by_arguments and isinstance(value, (tuple, list)):
        return Case(target.obj, tuple(value))
    if not by_arguments and isinstance(value, (tuple, list)) and len(value) in (2, 3):
        options = dict(value[2]) if len(value) == 3 else {}
        return Case(value[0], _as_inputs(value[1]), options)
    expected = (
        f"the {'forward ' if target.kind == PAIR else ''}function's argument tuple or a Case"
        if by_arguments
        else f"({target.kind if target.kind == MODEL else 'layer'}, inputs), "
        "(..., inputs, options) or a Case"
    )
    raise GradcheckUsageError(
        f"{target.name}: {DECLARATION} returned {type(value).__name__}; return {expected}"
    )


def _as_inputs(inputs: Any) -> tuple[Any, ...]:
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs)
    return (inputs,)


def how_to_declare(target: DiscoveredTarget) -> str:
    """The fix to suggest when a target has no usable declaration."""
    if target.kind in (PAIR, FUNCTION):
        fn = (target.obj[0] if target.kind == PAIR else target.obj).__name__
        return (
            f"set `{fn}.{DECLARATION} = lambda rng: (x, w, ...)` returning example arguments, "
            "or implement pytest_gradcheck_make_case in conftest.py"
        )
    if target.kind == MODEL:
        return (
            f"add a classmethod `{DECLARATION}(cls, rng)` to {target.short_name} returning "
            "(model, loss arguments), or implement pytest_gradcheck_make_case in conftest.py"
        )
    return (
        f"add a classmethod `{DECLARATION}(cls, rng)` to {target.short_name} returning "
        "(layer, inputs), implement pytest_gradcheck_make_case in conftest.py, or set "
        f"`{DECLARATION} = None` in the class body if it is not a layer to check"
    )


def build_case(target: DiscoveredTarget, hook: Any, seed: int) -> Case:
    """Ask the hooks for the target's `Case`; raise `SkipCase` if none can be built."""
    case = hook.pytest_gradcheck_make_case(
        target=target.obj, name=target.name, rng=case_rng(seed, target.name)
    )
    if case is None:
        raise SkipCase(f"{target.name}: no example inputs: {how_to_declare(target)}")
    if not isinstance(case, Case):
        case = to_case(case, target)
    return case
