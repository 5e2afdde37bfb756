"""dbt's plugin modules searched for once per import path."""

from __future__ import annotations

import pkgutil
import sys

from dbt.plugins.manager import PluginManager

from dbt_project.dbt_runner.plugin_modules import find_plugin_modules_once


def test_the_search_runs_once_per_import_path_and_finds_what_dbt_finds(monkeypatch, tmp_path):
    find_plugin_modules_once()
    searches = []
    iter_modules = pkgutil.iter_modules

    def counted(*args, **kwargs):
        searches.append(args)
        return iter_modules(*args, **kwargs)

    monkeypatch.setattr(pkgutil, "iter_modules", counted)
    monkeypatch.syspath_prepend(str(tmp_path))
    first = PluginManager.get_prefixed_modules()
    again = PluginManager.get_prefixed_modules()
    assert len(searches) == 1 and first == again
    # What dbt's own search finds: every installed module named dbt_* (dbt_common is one).
    assert sorted(first) == sorted(name for _, name, _ in iter_modules() if name.startswith("dbt_"))
    assert "dbt_common" in first

    # A module added on a new folder of the path is found, as dbt would find it.
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "dbt_plugin_probe_mod.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "extra"))
    found = PluginManager.get_prefixed_modules()
    assert len(searches) == 2 and "dbt_plugin_probe_mod" in found
    sys.modules.pop("dbt_plugin_probe_mod", None)
