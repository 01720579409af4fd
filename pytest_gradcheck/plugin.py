"""The pytest glue: options, the `gradcheck` fixture and marker, result collection and summary.

Nothing numerical happens here; checks run through `api.run_check` with the test item's hook
relay (`item.ihook`), so plugins and the conftest files above the test, as for pytest's own
hooks, can implement ours.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from . import conventions, hookspecs
from .api import run_check
from .collect import discovered_items
from .discovery import split_specs
from .errors import GradcheckUsageError
from .items import (
    ERROR_PROPERTY,
    RESULTS_PROPERTY,
    SKIPPED_PROPERTY,
    fail_if_wrong,
    item_results_key,
    keep_result,
    marker_options,
    options_key,
    seed_drawn_key,
    take_errors,
    usage_errors_fail,
)
from .options import Options, Where, asks_for_a_drawn_seed, draw_seed, resolve_seed, settable
from .report import RunRecord, check_report_path, drawn_seed_line, error_record, options_header
from .result import CheckResult

WORKER_SEED_KEY = "gradcheck_seed"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checking of numpy layers")
    # Strings, parsed by the options' coercers (`type="float"` ini values need a recent pytest).
    for spec in settable(Where.PYTEST):
        group.addoption(spec.pytest_flag, dest=spec.ini_key, default=None, help=spec.help_line())
    for spec in settable(Where.INI):
        parser.addini(spec.ini_key, spec.help_line(), default=None)
    group.addoption(
        "--gradcheck-json",
        dest="gradcheck_json",
        default=None,
        metavar="PATH",
        help="write every gradcheck result of the run to PATH as JSON",
    )
    parser.addini("gradcheck_json", "write every gradcheck result to this JSON file", default=None)
    discover_help = (
        "modules or packages whose layer classes, X_forward/X_backward function pairs, and "
        "functions and models declaring gradcheck_case become gradcheck::<module>.<name> "
        "test items"
    )
    group.addoption(
        "--gradcheck-discover",
        dest="gradcheck_discover",
        action="append",
        default=[],
        metavar="MODULE",
        help=discover_help + " (repeatable, or comma-separated)",
    )
    parser.addini(
        "gradcheck_discover",
        discover_help + "; from the ini file only when whole directories are collected",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(**options): options for the gradcheck fixture in this test, class or "
        "module (seed, eps, rtol, atol, params, inputs, extra_loss, mode, ...); also selects "
        "with -m gradcheck",
    )
    if not config.pluginmanager.has_plugin("gradcheck-conventions"):
        config.pluginmanager.register(conventions, "gradcheck-conventions")
    config.stash[options_key], config.stash[seed_drawn_key] = base_options(config)
    report = json_report(config)
    if report and not hasattr(config, "workerinput"):  # the controller writes the file
        try:
            check_report_path(*report)
        except GradcheckUsageError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(ResultCollector(config, report), "gradcheck-results")


def json_report(config: pytest.Config) -> tuple[Path, str] | None:
    """Where the JSON report goes (made absolute now: a test that changes directory does not
    move it) and how the path was given, for messages; None without one."""
    flag = config.getoption("gradcheck_json")
    if flag:
        return Path(flag).absolute(), f"--gradcheck-json {flag}"
    ini = config.getini("gradcheck_json")
    if ini:
        return Path(ini).absolute(), f"gradcheck_json = {ini} (ini file)"
    return None


def base_options(config: pytest.Config) -> tuple[Options, bool]:
    """ini values, then command-line values on top; and whether the seed was drawn."""
    ini = {}
    for spec in settable(Where.INI):
        value = config.getini(spec.ini_key)
        if value not in (None, "", []):
            ini[spec.name] = value
    cli = {}
    for spec in settable(Where.PYTEST):
        value = config.getoption(spec.ini_key)
        if value is not None:
            cli[spec.name] = value
    drawn = asks_for_a_drawn_seed(cli if "seed" in cli else ini)
    try:
        opts = Options().updated(resolve_seed(ini, lambda: _run_seed(config)), "ini file")
        return opts.updated(resolve_seed(cli, lambda: _run_seed(config)), "command line"), drawn
    except GradcheckUsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _run_seed(config: pytest.Config) -> int:
    """The seed for `seed=random`: a fresh one, or the controller's on an xdist worker."""
    workerinput = getattr(config, "workerinput", None) or {}
    seed = workerinput.get(WORKER_SEED_KEY)
    return int(seed) if seed is not None else draw_seed()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: hand the run's seed to each worker, so `random` means one seed."""
    node.workerinput[WORKER_SEED_KEY] = node.config.stash[options_key].seed


def discover_specs(config: pytest.Config) -> list[str]:
    """Modules to discover: the flag always; the ini value unless the run names only files or
    test ids (so `pytest tests/test_x.py::test_y` does not also run every discovered check)."""
    cli = config.getoption("gradcheck_discover") or []
    if cli:
        return split_specs(cli)
    ini = config.getini("gradcheck_discover") or []
    if not ini:
        return []
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        base = config.invocation_params.dir
        if not any((base / arg.split("::")[0]).is_dir() for arg in config.args):
            return []
    return split_specs(ini)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    # tryfirst: the discovered items are in place before -k / -m deselection runs.
    specs = discover_specs(config)
    if specs:
        items.extend(discovered_items(session, specs))


def pytest_report_header(config: pytest.Config) -> str:
    specs = discover_specs(config)
    return options_header(config.stash[options_key]) + (
        f" discover={','.join(specs)}" if specs else ""
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Validate marker keywords before the test runs, whether or not it uses the fixture.
    if item.get_closest_marker("gradcheck") is not None:
        with usage_errors_fail(item):
            marker_options(item)


class GradcheckFixture:
    """Callable fixture: `gradcheck(layer, *inputs, **options)` checks and fails the test on error.

    `gradcheck.check(...)` runs the same check and returns the result without failing, for tests
    that inspect a result themselves. `gradcheck.options` shows the options in force.
    """

    def __init__(self, item: pytest.Item) -> None:
        self._item = item

    @property
    def options(self) -> Options:
        return marker_options(self._item)

    def check(self, layer: Any, *inputs: Any, **options: Any) -> CheckResult:
        item = self._item
        with usage_errors_fail(item):
            opts = self.options.updated(options, "gradcheck()")
            # item.ihook: only the conftest files above the test apply, as for pytest's hooks.
            result = run_check(layer, inputs, opts, hook=item.ihook)
        keep_result(item, result)
        return result

    def __call__(self, layer: Any, *inputs: Any, **options: Any) -> CheckResult:
        result = self.check(layer, *inputs, **options)
        fail_if_wrong(result)
        return result


@pytest.fixture
def gradcheck(request: pytest.FixtureRequest) -> GradcheckFixture:
    """Check a layer's backward pass: `gradcheck(layer, *inputs, **options)`."""
    return GradcheckFixture(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    # Results travel on the report (builtin types only), so xdist brings them to the controller.
    if report.when == "call":
        results = item.stash.get(item_results_key, [])
        if results:
            report.user_properties.append((RESULTS_PROPERTY, results))
    # A usage error counts as an errored check only if it failed the test (not if the test
    # expected it and caught the failure).
    errors = take_errors(item)
    if errors and report.failed:
        report.user_properties.append((ERROR_PROPERTY, errors))
    return report


class ResultCollector:
    """Gathers every result reported in the run (on the xdist controller: from all workers)."""

    def __init__(self, config: pytest.Config, report: tuple[Path, str] | None) -> None:
        self.config = config
        self.report = report  # the JSON file and how its path was given
        self.report_error: str | None = None  # why it could not be written
        self.run = RunRecord(config.stash[options_key].seed, config.stash[seed_drawn_key])
        self.order: dict[str, int] = {}  # nodeid -> collection index, for a stable report order

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.order = {item.nodeid: i for i, item in enumerate(session.items)}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.order:
            self.order = {nodeid: i for i, nodeid in enumerate(ids)}

    def _ordered(self) -> RunRecord:
        """The run in collection order, so serial and xdist runs report alike (stable sort)."""

        def by_order(rows: list[Any]) -> list[Any]:
            return sorted(rows, key=lambda r: self.order.get(r["nodeid"], len(self.order)))

        run = self.run
        return replace(run, results=by_order(run.results), skipped=by_order(run.skipped),
                       errors=by_order(run.errors))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == ERROR_PROPERTY:  # on the report of the phase that failed
                messages = cast(list[str], value)
                self.run.errors.extend(error_record(report.nodeid, m) for m in messages)
            elif report.when != "call":
                continue  # item properties are copied onto every phase's report
            elif key == RESULTS_PROPERTY:
                rows = cast(list[dict[str, Any]], value)
                self.run.results.extend({**r, "nodeid": report.nodeid} for r in rows)
            elif key == SKIPPED_PROPERTY:
                self.run.skipped.append({"nodeid": report.nodeid, "reason": str(value)})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = self.config
        if hasattr(config, "workerinput"):
            return  # xdist worker: the controller writes the file
        if not self.report:
            return
        try:
            self._ordered().write_report(*self.report)
        except GradcheckUsageError as exc:
            # The run's results are still printed (the terminal summary comes after this).
            self.report_error = f"ERROR: {exc}"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.USAGE_ERROR
            if not config.pluginmanager.has_plugin("terminalreporter"):
                print(self.report_error, file=sys.stderr)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        run = self.run
        if run.results or run.skipped or run.errors:
            checks = len(run.results) + len(run.errors)
            terminalreporter.write_sep("-", f"gradcheck: {checks} check(s): {run.counts()}")
            full = (
                self.config.option.verbose > 0
                or self.config.stash[options_key].summary == "full"
            )
            for line in self._ordered().summary(full):
                terminalreporter.write_line(line)
        if run.seed_drawn:  # in every run that drew it, -q too (-q hides the report header)
            terminalreporter.write_line(drawn_seed_line(run.seed, "--gradcheck-seed"))
        if self.report_error:
            terminalreporter.write_line(self.report_error, red=True, bold=True)
