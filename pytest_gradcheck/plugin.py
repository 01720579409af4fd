"""The pytest glue: options, the `gradcheck` fixture and marker, result collection and summary.

Nothing numerical happens here; checks run through `api.run_check` with pytest's hook relay, so
conftest files and plugins can implement our hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from . import conventions, hookspecs
from .api import run_check
from .errors import GradcheckUsageError
from .options import MODES, Options
from .report import summary_rows
from .result import CheckResult

# Options settable from ini files and the command line (`gradcheck_<name>`, `--gradcheck-<name>`).
SETTABLE = {
    "seed": "seed of the random cotangent, directions, samples and the global random streams",
    "eps": "finite-difference step (default: 1e-6 in float64, larger in low precision)",
    "rtol": "relative tolerance (default: 1e-5 in float64, larger in low precision)",
    "atol": "absolute tolerance added to the finite-difference noise floor (default 0)",
    "mode": f"how many evaluations to spend: {', '.join(MODES)} (default full)",
    "samples": "elements checked per array in mode=sample (default 16)",
    "directions": "random directions per array in mode=fast (default 2)",
    "auto_limit": "mode=auto checks arrays up to this size element by element (default 2048)",
}
RESULTS_PROPERTY = "gradcheck"

options_key = pytest.StashKey[Options]()
item_results_key = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradient checking of numpy layers")
    for name, help_text in SETTABLE.items():
        flag = "--gradcheck-" + name.replace("_", "-")
        group.addoption(flag, dest=f"gradcheck_{name}", default=None, help=help_text)
        parser.addini(f"gradcheck_{name}", help_text, default=None)
    group.addoption(
        "--gradcheck-json",
        dest="gradcheck_json",
        default=None,
        metavar="PATH",
        help="write every gradcheck result of the run to PATH as JSON",
    )
    parser.addini("gradcheck_json", "write every gradcheck result to this JSON file", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "gradcheck(**options): options for the gradcheck fixture in this test, class or "
        "module (seed, eps, rtol, atol, params, inputs, extra_loss, mode, ...); also selects "
        "with -m gradcheck",
    )
    if not config.pluginmanager.has_plugin("gradcheck-conventions"):
        config.pluginmanager.register(conventions, "gradcheck-conventions")
    config.stash[options_key] = base_options(config)
    config.pluginmanager.register(ResultCollector(config), "gradcheck-results")


def base_options(config: pytest.Config) -> Options:
    """ini values, then command-line values on top."""
    opts = Options()
    ini = {}
    for name in SETTABLE:
        value = config.getini(f"gradcheck_{name}")
        if value not in (None, "", []):
            ini[name] = value
    try:
        opts = opts.updated(ini, "ini file")
        cli = {}
        for name in SETTABLE:
            value = config.getoption(f"gradcheck_{name}")
            if value is not None:
                cli[name] = value
        return opts.updated(cli, "command line")
    except GradcheckUsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    o = config.stash[options_key]
    return (
        f"gradcheck: seed={o.seed} mode={o.mode} eps={o.eps or 'auto'} rtol={o.rtol or 'auto'} "
        f"atol={o.atol:g}"
    )


def marker_options(item: pytest.Item) -> Options:
    """Base options with the gradcheck markers applied: module, then class, then function."""
    opts = item.config.stash[options_key]
    for mark in reversed(list(item.iter_markers("gradcheck"))):
        if mark.args:
            raise GradcheckUsageError(
                f"{item.nodeid}: @pytest.mark.gradcheck takes keyword options only, got "
                f"positional {mark.args!r}"
            )
        opts = opts.updated(mark.kwargs, f"@pytest.mark.gradcheck on {item.nodeid}")
    return opts


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Validate marker keywords before the test runs, whether or not it uses the fixture.
    if item.get_closest_marker("gradcheck") is not None:
        try:
            marker_options(item)
        except GradcheckUsageError as exc:
            problem = str(exc)
        else:
            return
        pytest.fail(problem, pytrace=False)


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
        try:
            opts = self.options.updated(options, "gradcheck()")
            result = run_check(layer, inputs, opts, hook=item.config.hook)
        except GradcheckUsageError as exc:
            problem = str(exc)
        else:
            problem = ""
        if problem:
            # Outside the except block, so the report shows the message, not a chained traceback.
            pytest.fail(problem, pytrace=False)
        item.stash.setdefault(item_results_key, []).append(result.to_dict())
        return result

    def __call__(self, layer: Any, *inputs: Any, **options: Any) -> CheckResult:
        result = self.check(layer, *inputs, **options)
        if not result.ok:
            pytest.fail(str(result), pytrace=False)
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
    return report


class ResultCollector:
    """Gathers every result reported in the run (on the xdist controller: from all workers)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == RESULTS_PROPERTY:
                self.results.extend({**r, "nodeid": report.nodeid} for r in value)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = self.config
        if hasattr(config, "workerinput"):
            return  # xdist worker: the controller writes the file
        path = config.getoption("gradcheck_json") or config.getini("gradcheck_json")
        if path:
            payload = {"seed": config.stash[options_key].seed, "results": self.results}
            Path(path).write_text(json.dumps(payload, indent=2))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput") or not self.results:
            return
        terminalreporter.write_sep("-", f"gradcheck: {len(self.results)} check(s)")
        for line in summary_rows(self.results):
            terminalreporter.write_line(line)
