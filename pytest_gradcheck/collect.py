"""pytest items for discovered layers: one `gradcheck::<module>.<Name>` item per target.

The modules named by `gradcheck_discover` / `--gradcheck-discover` are scanned at collection
time (`discovery.find_targets`); each item builds its case through `pytest_gradcheck_make_case`
when it runs, so deselected items cost nothing and a target that cannot be built is skipped
with the reason. Items carry the `gradcheck` marker and report results like the fixture does.
The items sit at the rootdir: their hooks come from plugins and the conftest.py files of the
rootdir and above (`ihook`), not from those of test subdirectories.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .api import check_target
from .discovery import PAIR, DiscoveredTarget, SkipCase, find_targets
from .errors import GradcheckUsageError
from .items import (
    SKIPPED_PROPERTY,
    fail_if_wrong,
    keep_error,
    keep_result,
    marker_options,
    usage_errors_fail,
)

COLLECTOR_NAME = "gradcheck"


class GradcheckCollector(pytest.Collector):
    """Collects one `GradcheckItem` per discovered target (layer class, function pair,
    value-and-gradient function, model) in the named modules."""

    def __init__(self, *, specs: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = specs

    def collect(self) -> Iterator[GradcheckItem]:
        try:
            targets = find_targets(self.specs, self.ihook)
        except GradcheckUsageError as exc:
            raise self.CollectError(str(exc)) from None
        for target in targets:
            yield GradcheckItem.from_parent(self, name=target.name, target=target)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> Any:
        if isinstance(excinfo.value, self.CollectError):
            return str(excinfo.value.args[0])
        return super().repr_failure(excinfo)


class GradcheckItem(pytest.Item):
    """Gradient-checks one discovered target; skipped with the reason if it cannot be built."""

    def __init__(self, *, target: DiscoveredTarget, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.add_marker(pytest.mark.gradcheck)

    def runtest(self) -> None:
        hook = self.ihook  # the run's root: plugins and the rootdir's conftest.py apply
        with usage_errors_fail(self):
            opts = marker_options(self)
            try:
                result = check_target(self.target, opts, hook)
            except SkipCase as exc:
                self.user_properties.append((SKIPPED_PROPERTY, str(exc)))
                pytest.skip(str(exc))
            except GradcheckUsageError:
                raise
            except Exception as exc:
                # A declaration or hook that raises: an errored check, shown with its traceback.
                keep_error(self, f"{self.target.name}: building the case raised "
                           f"{type(exc).__name__}: {exc}")
                raise
        keep_result(self, result)
        fail_if_wrong(result)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        obj = self.target.obj[0] if self.target.kind == PAIR else self.target.obj
        path: Path | str = self.path
        line: int | None = None
        try:
            path = Path(inspect.getsourcefile(obj) or self.path)
            line = inspect.getsourcelines(obj)[1] - 1
        except (OSError, TypeError):
            pass
        return path, line, f"gradcheck {self.target.name}"


def discovered_items(session: pytest.Session, specs: list[str]) -> list[pytest.Item]:
    """Collect the discovered items through the session, so errors show as collection errors."""
    collector = GradcheckCollector.from_parent(
        session, name=COLLECTOR_NAME, nodeid=COLLECTOR_NAME, specs=specs
    )
    return list(session.genitems(collector))
