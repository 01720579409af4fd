"""The plain-Python entry point: `check(layer, *inputs, **options)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .checker import Checker
from .manager import default_hook
from .options import Options
from .result import CheckResult


def check(layer: Any, *inputs: Any, hook: Any = None, **options: Any) -> CheckResult:
    """Compare `layer`'s backward pass with central differences; return the per-array result.

    `layer` is an object with forward/backward (or a `(forward_fn, backward_fn)` pair);
    `inputs` are passed to forward. Options: seed, eps, rtol, atol, params, inputs, extra_loss,
    random_sources, mode, samples, directions, auto_limit, label (see the README).
    The layer, the inputs and every random stream are left exactly as they were.
    """
    opts = Options().updated(options, "check()")
    return run_check(layer, inputs, opts, hook)


def run_check(layer: Any, inputs: Sequence[Any], opts: Options, hook: Any = None) -> CheckResult:
    """`check` with options already resolved (used by the pytest fixture and the CLI)."""
    hook = hook if hook is not None else default_hook()
    result = Checker(layer, inputs, opts, hook).run()
    hook.pytest_gradcheck_result(result=result)
    return result
