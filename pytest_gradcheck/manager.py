"""The plugin manager used when checks run outside pytest (notebooks, scripts, the CLI).

Inside pytest the hooks are pytest's own (each test's `item.ihook`), so conftest files and
plugins can implement them; this manager carries the same hookspecs and built-in conventions for
the rest.
"""

from __future__ import annotations

from typing import Any

import pluggy

from . import conventions, hookspecs

_manager: pluggy.PluginManager | None = None
HOOK_PREFIX = "pytest_gradcheck_"


class GradcheckPluginManager(pluggy.PluginManager):
    """Accepts unmarked `pytest_gradcheck_*` functions, as pytest does for conftest files, so
    the same plugin module works under pytest and outside it."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX) and callable(getattr(plugin, name)):
            return {"wrapper": False, "hookwrapper": False, "optionalhook": False,
                    "tryfirst": False, "trylast": False, "specname": None}
        return opts


def plugin_manager() -> pluggy.PluginManager:
    """The standalone manager, created on first use with the built-in conventions registered."""
    global _manager
    if _manager is None:
        pm = GradcheckPluginManager("pytest")
        pm.add_hookspecs(hookspecs)
        pm.register(conventions, name="gradcheck-conventions")
        _manager = pm
    return _manager


def register(plugin: Any, name: str | None = None) -> None:
    """Add hook implementations (a module or an object) for checks run outside pytest."""
    plugin_manager().register(plugin, name=name)


def unregister(plugin: Any) -> None:
    plugin_manager().unregister(plugin)


def default_hook() -> Any:
    return plugin_manager().hook
