"""dbt's behavior flags name the same module with the runner's frame walk as with
dbt-common's own ``inspect.stack()`` search (dbt_project/dbt_runner/flag_sources.py)."""

from __future__ import annotations

import json
import subprocess
import sys

# In a fresh interpreter: a module of its own (a file, as an adapter's is) declares
# flags without a source, once with dbt-common's search and once with the runner's.
PROBE = """
import importlib, json, pathlib, sys, tempfile
from dbt_project.dbt_runner.flag_sources import name_flag_sources_cheaply

folder = pathlib.Path(tempfile.mkdtemp()) / "an_adapter"
folder.mkdir()
(folder / "__init__.py").write_text("")
(folder / "impl.py").write_text(
    "from dbt_common.behavior_flags import Behavior\\n"
    "def declare(flags):\\n"
    "    return Behavior(flags, {'on_flag': True})\\n"
)
sys.path.insert(0, str(folder.parent))
declaring = importlib.import_module("an_adapter.impl")
flags = [
    {"name": "off_flag", "default": False, "description": "off"},
    {"name": "on_flag", "default": False, "docs_url": "https://example.com"},
    {"name": "sourced", "default": False, "description": "d", "source": "a.named.module"},
]

def sources():
    behavior = declaring.declare(flags)
    return [getattr(behavior, f["name"])._behavior_change_event.flag_source for f in flags]

theirs = sources()
name_flag_sources_cheaply()
print(json.dumps({"theirs": theirs, "ours": sources()}))
"""


def test_flags_without_a_source_name_the_declaring_module_as_dbt_does():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    sources = json.loads(done.stdout)

    assert sources["theirs"] == ["an_adapter.impl", "an_adapter.impl", "a.named.module"]
    assert sources["ours"] == sources["theirs"]
