"""`python -m pytest_gradcheck PACKAGE [...]`: gradient-check every layer of a package, no tests.

Finds layer classes, `X_forward`/`X_backward` pairs, and value-and-gradient functions and models
that declare `gradcheck_case`, like `gradcheck_discover` does (asking
`pytest_gradcheck_discover_target` implementations first), builds
each through `pytest_gradcheck_make_case` on the standalone plugin manager (plugins added with
`-p MODULE`), prints the per-array table of every check, skipped targets with their reason, a
one-line-per-layer summary and a final count. Exit status: 0 all checks passed (skips allowed),
1 a check failed or errored, 2 usage error (bad option, module not importable, nothing found,
a `--json` path that cannot be written).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any, TextIO

from .api import check_target
from .discovery import DiscoveredTarget, SkipCase, find_targets, split_specs
from .errors import GradcheckUsageError
from .manager import default_hook, plugin_manager
from .options import Options, Where, resolve_seed, settable
from .report import RunRecord, check_report_path, error_record, options_header, summary_rows

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NODE_PREFIX = "gradcheck::"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_gradcheck",
        description="Gradient-check every layer class, forward/backward function pair, and "
        "value-and-gradient function and model declaring gradcheck_case found in the given "
        "modules or packages.",
        epilog="exit status: 0 all passed, 1 a check failed or errored, 2 usage error",
    )
    parser.add_argument(
        "modules",
        nargs="+",
        metavar="MODULE",
        help="importable module or package names (packages are walked)",
    )
    # Strings, parsed by the options' coercers like ini values and pytest's flags.
    for spec in settable(Where.CLI):
        parser.add_argument(spec.cli_flag, dest=spec.name, default=None, help=spec.help_line())
    parser.add_argument(
        "--json",
        metavar="PATH",
        default=None,
        help="write every result, skip and error to PATH as JSON",
    )
    parser.add_argument(
        "-p",
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and register its pytest_gradcheck_* hooks "
        "(what a conftest.py does under pytest); repeatable",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print tables of failed checks only"
    )
    return parser.parse_args(argv)


def _usage(message: str) -> int:
    print(f"python -m pytest_gradcheck: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the checks; return the exit status."""
    out = out if out is not None else sys.stdout
    args = parse_args(argv)
    pm = plugin_manager()
    added = []
    try:
        for name in args.plugin:
            try:
                plugin = importlib.import_module(name)
            except ImportError as exc:
                return _usage(f"-p {name}: cannot import it ({exc})")
            if not pm.is_registered(plugin):
                pm.register(plugin, name=f"cli-plugin:{name}")
                added.append(plugin)
        return _run(args, out)
    finally:
        for plugin in added:
            pm.unregister(plugin)


def options_from(args: argparse.Namespace) -> tuple[Options, bool]:
    """The options given on the command line, and whether the seed was drawn (seed=random)."""
    values = {
        spec.name: getattr(args, spec.name)
        for spec in settable(Where.CLI)
        if getattr(args, spec.name) is not None
    }
    resolved = resolve_seed(values)
    return Options().updated(resolved, "command line"), resolved != values


def _run(args: argparse.Namespace, out: TextIO) -> int:
    hook = default_hook()
    try:
        base, seed_drawn = options_from(args)
        if args.json:  # before the run, so a long run does not end in failing to write it
            check_report_path(args.json, f"--json {args.json}")
        targets = find_targets(split_specs(args.modules), hook)
    except GradcheckUsageError as exc:
        return _usage(str(exc))
    except Exception:
        return _usage("importing the modules failed:\n" + traceback.format_exc().rstrip())
    if not targets:
        return _usage(
            f"nothing to check found in {', '.join(args.modules)}: no layer classes, "
            "X_forward/X_backward pairs, or functions and models declaring gradcheck_case"
        )

    if seed_drawn:
        # The same header line pytest shows, so the run can be repeated with --seed.
        print(options_header(base), file=out)
    start = time.perf_counter()
    run = RunRecord(base.seed, seed_drawn)
    for target in targets:
        nodeid = NODE_PREFIX + target.name
        outcome = _check_one(target, base, hook)
        if isinstance(outcome, SkipCase):
            run.skipped.append({"nodeid": nodeid, "reason": str(outcome)})
            print(f"gradcheck {target.name}: SKIPPED  {outcome}\n", file=out)
        elif isinstance(outcome, str):
            run.errors.append(error_record(nodeid, outcome))
            print(f"gradcheck {target.name}: ERROR  {outcome}\n", file=out)
        else:
            run.results.append({**outcome.to_dict(), "nodeid": nodeid})
            if not (args.quiet and outcome.ok):
                print(f"{outcome}\n", file=out)
    elapsed = time.perf_counter() - start

    if run.results:
        print("\n".join(summary_rows(run.results)), file=out)
    failed = len(run.failed)
    passed = len(run.results) - failed
    print(
        f"gradcheck: {passed} passed, {failed} failed, {len(run.skipped)} skipped, "
        f"{len(run.errors)} error(s) in {elapsed:.2f}s (seed={base.seed})",
        file=out,
    )
    if args.json:
        try:
            run.write_report(args.json, f"--json {args.json}")
        except GradcheckUsageError as exc:
            return _usage(str(exc))  # the results are printed above
    return EXIT_FAILED if failed or run.errors else EXIT_OK


def _check_one(target: DiscoveredTarget, base: Options, hook: Any) -> Any:
    """A `CheckResult`, a `SkipCase`, or an error message for one target."""
    try:
        return check_target(target, base, hook)
    except SkipCase as exc:
        return exc
    except GradcheckUsageError as exc:
        return str(exc)
    except Exception:
        return traceback.format_exc(limit=-4).rstrip()


if __name__ == "__main__":
    sys.exit(main())
