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

# Report user properties: the item's results, and why a discovered target was skipped.
RESULTS_PROPERTY = "gradcheck"
SKIPPED_PROPERTY = "gradcheck_skipped"

options_key = pytest.StashKey[Options]()  # on the config: ini and command-line options
item_results_key = pytest.StashKey[list[dict[str, Any]]]()


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


@contextmanager
def usage_errors_fail() -> Iterator[None]:
    """A usage error in the block fails the test with its message only."""
    try:
        yield
    except GradcheckUsageError as exc:
        # `from None`: the report shows the message, not the usage error's traceback chained.
        raise pytest.fail.Exception(str(exc), pytrace=False) from None


def keep_result(item: pytest.Item, result: CheckResult) -> None:
    """Store the result on the item; the report carries it to the summary and the JSON file."""
    item.stash.setdefault(item_results_key, []).append(result.to_dict())


def fail_if_wrong(result: CheckResult) -> None:
    if not result.ok:
        pytest.fail(str(result), pytrace=False)
