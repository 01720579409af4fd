"""The plain-Python entry point: `check(layer, *inputs, **options)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .checker import Checker
from .discovery import DiscoveredTarget, SkipCase, build_case
from .errors import GradcheckUsageError
from .manager import default_hook
from .options import Options
from .points import run_points
from .result import CheckResult


def check(layer: Any, *inputs: Any, hook: Any = None, **options: Any) -> CheckResult:
    """Compare `layer`'s backward pass with central differences; return the per-array result.

    `layer` is an object with forward/backward (or a `(forward_fn, backward_fn)` pair);
    `inputs` are passed to forward. Options: seed, eps, rtol, atol, params, inputs, extra_loss,
    random_sources, mode, samples, directions, auto_limit, points, label (see the README).
    The layer, the inputs and every random stream are left exactly as they were.
    """
    opts = Options().updated(options, "check()")
    return run_check(layer, inputs, opts, hook)


def run_check(layer: Any, inputs: Sequence[Any], opts: Options, hook: Any = None) -> CheckResult:
    """`check` with options already resolved (used by the pytest fixture and the CLI). With
    points > 1 the same layer and inputs are checked once per point (fresh cotangent and
    directions each), merged."""
    hook = hook if hook is not None else default_hook()
    result = run_points(lambda o: Checker(layer, inputs, o, hook).run(), opts)
    hook.pytest_gradcheck_result(result=result)
    return result


def check_target(target: DiscoveredTarget, opts: Options, hook: Any) -> CheckResult:
    """Check a discovered target: its case built from each point's seed (a fresh case per
    point), the case's options on top of `opts`. Raises `SkipCase` if it cannot be built.
    A case may set `points` itself: the first case is built before the points are run."""
    first = build_case(target, hook, opts.seed)
    if "points" in first.options:
        opts = opts.updated({"points": first.options["points"]}, f"{target.name}: case")
    cases = {opts.seed: first}  # point 0 runs at the run's seed: its case is built already

    def at_point(o: Options) -> CheckResult:
        later = o.seed != opts.seed
        try:
            case = cases.pop(o.seed, None) or build_case(target, hook, o.seed)
        except SkipCase as exc:
            if not later:
                raise
            # Skipping now would throw away the verdicts of the points already checked.
            raise GradcheckUsageError(
                f"{target.name}: the case for the point at seed={o.seed} could not be built "
                f"({exc}); make gradcheck_case build a case from every rng, or pass points=1",
                label=target.name,
            ) from None
        options = dict(case.options)
        if later:  # the point's own seed, not the one the case asks for
            options.pop("seed", None)
        options.pop("points", None)
        o = o.updated({"label": target.name, **options}, f"{target.name}: case")
        return Checker(case.layer, case.inputs, o, hook).run()

    result = run_points(at_point, opts)
    hook.pytest_gradcheck_result(result=result)
    return result
