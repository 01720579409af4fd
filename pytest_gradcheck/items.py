"""What the fixture's tests and the discovered items share: the options in force for an item,
the results kept on it, and usage errors reported as plain failures.

Below both plugin.py and collect.py, so neither has to import the other for these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .errors import GradcheckUsageError
from .options import Options
from .result import CheckResult

# Report user properties: the item's results, why a discovered target was skipped, and the
# message of a check that could not run (a usage error).
RESULTS_PROPERTY = "gradcheck"
SKIPPED_PROPERTY = "gradcheck_skipped"
ERROR_PROPERTY = "gradcheck_error"

options_key = pytest.StashKey[Options]()  # on the config: ini and command-line options
seed_drawn_key = pytest.StashKey[bool]()  # on the config: the run's seed was drawn (random)
item_results_key = pytest.StashKey[list[dict[str, Any]]]()
item_errors_key = pytest.StashKey[list[str]]()


def closest_markers(item: pytest.Item) -> list[pytest.Mark]:
    """The item's gradcheck markers, closest first: parameter (`pytest.param(...,
    marks=...)`), function, class, module. pytest lists a parametrized test's own markers
    before its parameter's, so the parameter's are moved to the front."""
    marks = list(item.iter_markers("gradcheck"))
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return marks
    params = [m for m in callspec.marks if m.name == "gradcheck"]
    ids = {id(m) for m in params}
    return params + [m for m in marks if id(m) not in ids]


def marker_options(item: pytest.Item) -> Options:
    """Base options with the gradcheck markers applied, the farthest first, so for each
    keyword the closest marker wins: module < class < function < parameter."""
    opts = item.config.stash[options_key]
    for mark in reversed(closest_markers(item)):
        if mark.args:
            raise GradcheckUsageError(
                f"{item.nodeid}: @pytest.mark.gradcheck takes keyword options only, got "
                f"positional {mark.args!r}"
            )
        opts = opts.updated(mark.kwargs, f"@pytest.mark.gradcheck on {item.nodeid}")
    return opts


@contextmanager
def usage_errors_fail(item: pytest.Item) -> Iterator[None]:
    """A usage error in the block fails the test with its message only; the message is kept
    on the item, for the summary and the JSON file should the test fail with it."""
    try:
        yield
    except GradcheckUsageError as exc:
        keep_error(item, str(exc))
        # `from None`: the report shows the message, not the usage error's traceback chained.
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


def keep_error(item: pytest.Item, message: str) -> None:
    """Record that a check on the item could not run, with why."""
    item.stash.setdefault(item_errors_key, []).append(message)


def take_errors(item: pytest.Item) -> list[str]:
    """The errors recorded on the item since the last call (each reported once)."""
    errors = item.stash.get(item_errors_key, [])
    item.stash[item_errors_key] = []
    return errors


def keep_result(item: pytest.Item, result: CheckResult) -> None:
    """Store the result on the item; the report carries it to the summary and the JSON file."""
    item.stash.setdefault(item_results_key, []).append(result.to_dict())


def fail_if_wrong(result: CheckResult) -> None:
    if not result.ok:
        pytest.fail(str(result), pytrace=False)
