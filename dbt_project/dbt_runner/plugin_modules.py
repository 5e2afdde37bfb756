"""dbt's search for plugin modules done once per import path, not at every call.

At the start of every command, dbt looks for installed modules named ``dbt_*`` that
offer plugins, by listing every folder on ``sys.path`` (``pkgutil.iter_modules``):
3 % of a warm night's profile here, for an answer that changes only when the import
path does. dbt's own test mode keeps the first answer for the whole process; this
keeps it per import path, so a folder added to ``sys.path`` is searched again.
"""

from __future__ import annotations

import sys
from functools import cache

_found: dict[tuple[str, ...], dict] = {}


@cache  # installed once per process
def find_plugin_modules_once() -> None:
    """Install the memo on dbt's plugin manager."""
    from dbt.plugins.manager import PluginManager

    search = PluginManager.get_prefixed_modules.__func__

    def get_prefixed_modules(cls):
        path = tuple(sys.path)
        if path not in _found:
            _found[path] = search(cls)
        return dict(_found[path])

    PluginManager.get_prefixed_modules = classmethod(get_prefixed_modules)
