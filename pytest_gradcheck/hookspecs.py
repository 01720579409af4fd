"""Hook specifications: how other projects teach pytest-gradcheck their layer conventions.

Implement any of these in a `conftest.py` or a plugin (the names must be kept exactly). The
built-in conventions in `pytest_gradcheck.conventions` are ordinary implementations of the same
hooks, marked `trylast`, so yours run first and can override them. Outside pytest, the plain
`check()` API uses a plugin manager of its own; add plugins to it with
`pytest_gradcheck.register(obj)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from .access import LayerAccess, Param
    from .discovery import Case
    from .result import CheckResult

hookspec = pluggy.HookspecMarker("pytest")


@hookspec(firstresult=True)
def pytest_gradcheck_adapt(obj: Any, label: str | None, hook: Any) -> LayerAccess | None:
    """Wrap the object handed to a check into a `LayerAccess`.

    Called once at the start of every check with the object as given (`check(obj, ...)`), the
    label the caller chose, if any, and the hook relay in use (for an adapter that calls the
    finer-grained hooks below, as `ObjectAccess(obj, hook)` does). Return a `LayerAccess`
    (subclass `ObjectAccess` to change one aspect of an ordinary layer) or None to let the next
    implementation try. The built-ins accept a `(forward_fn, backward_fn)` pair, any object
    with `forward` and `backward` methods, a model with a `loss` method and a value-and-gradient
    function (`pytest_gradcheck.shapes`; the README's "What you can check").
    """


@hookspec(firstresult=True)
def pytest_gradcheck_sublayers(layer: Any) -> list[tuple[str, Any]] | None:
    """List the direct sub-layers of `layer` as (name, sub_layer) pairs.

    Called for the checked layer and recursively for every sub-layer found, once per check.
    Names form the report's row paths (`layers.2.gamma`). Return None to defer. The built-in
    finds a `layers` list or tuple and attributes that are themselves layers.
    """


@hookspec(firstresult=True)
def pytest_gradcheck_layer_parameters(layer: Any, path: str) -> list[Param] | None:
    """List the parameters of one layer (not of its sub-layers) as `Param`s.

    Called after the first forward pass (so lazily created parameters exist), for every layer in
    the tree; `path` is the layer's position (empty for the checked layer) and should prefix
    each `Param.name`. Return None to let the next implementation try, an empty list for a
    layer without parameters. The built-ins know `params`/`grads`, `parameters`/`gradients`
    and attribute pairs such as `W`/`dW` and `weights`/`dweights`.
    """


@hookspec
def pytest_gradcheck_train_mode(layer: Any) -> list[str]:
    """Switch one layer into training / batch-statistics mode for the check.

    Called once per layer in the tree before the first forward pass; the checker restores every
    attribute afterwards, so implementations just set what they need. Return a list of short
    descriptions of what was switched (shown in the report), empty if nothing applied.
    """


@hookspec
def pytest_gradcheck_random_sources(layer: Any) -> list[Any]:
    """Return random streams one layer uses that are not reachable from its attributes.

    Called once per layer in the tree. Items may be `np.random.Generator`, `RandomState`,
    `random.Random`, or any object with `getstate()`/`setstate()`. Every returned stream is put
    back to the same state before each evaluation and restored after the check. Streams held in
    the layer's attributes, numpy's global RNG and Python's `random` are handled without this.
    """


@hookspec
def pytest_gradcheck_loss_terms(layer: Any) -> list[Callable[[Any], float]]:
    """Return extra terms of the checked objective, each a callable `term(layer) -> float`.

    Called once per check for the checked layer. Use it for a regulariser whose gradient the
    layer's backward adds to its parameter gradients: the numeric side must see the same
    objective. The results of all implementations are added up.
    """


@hookspec(firstresult=True)
def pytest_gradcheck_discover_target(name: str, obj: Any) -> str | None:
    """Say whether discovery should check `obj`, and as what.

    Called while discovery scans a module (`gradcheck_discover`, `--gradcheck-discover`,
    `python -m pytest_gradcheck`), once for every public class and function defined in it,
    before the built-in rules; `name` is its qualified name (`pkg.module.Dense`). Return the
    kind of target it is: `"class"` (a layer class), `"model"` (a class checked through its
    `loss` method) or `"function"` (a value-and-gradient function); or None to leave it to
    the next implementation and in the end to the built-in rules (classes with `forward` and
    `backward`, `X_forward`/`X_backward` pairs, functions and models that declare
    `gradcheck_case`). A target found this way is built by `pytest_gradcheck_make_case` and
    checked through `pytest_gradcheck_adapt` like any other.
    """


@hookspec(firstresult=True)
def pytest_gradcheck_make_case(target: Any, name: str, rng: np.random.Generator) -> Case | None:
    """Build a checkable instance and inputs for a discovered target.

    `target` is the class or function, or the `(X_forward, X_backward)` tuple; `name` its
    qualified name (`pkg.module.Linear`, `pkg.module.affine`). Called once per target when its
    discovered test item runs (`gradcheck_discover`), and by `python -m pytest_gradcheck`.
    `rng` depends only on the run's seed and `name`, so every run and xdist worker builds the
    same case. Return a `Case` (or what a `gradcheck_case` declaration may return), or None to
    defer; raise `pytest_gradcheck.SkipCase("why, and how to fix it")` to report the target as
    skipped. The built-in calls the class's `gradcheck_case(rng)` classmethod, or the
    function's (for a pair the forward function's) `gradcheck_case` attribute, and skips
    targets without one.
    """


@hookspec
def pytest_gradcheck_result(result: CheckResult) -> None:
    """Receive each finished check result, passed or failed (for custom reporting).

    Called after every check, before a failure is raised. The return value is ignored.
    """
