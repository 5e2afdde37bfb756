"""dbt's behavior flags name their source module without reading every caller's source.

Each dbt invocation builds a new adapter, and each of the adapter's behavior flags
names the module that declared it, for the warning dbt prints when the flag is off.
dbt-common 1.x finds that module with ``inspect.stack()``: it reads the source lines
of every frame on the stack and matches each frame's file against every loaded
module, for each flag, whether or not a warning is ever printed. In a process that
has loaded many modules that costs more than the rest of the adapter's setup (in the
test suite it was the largest single item of its profile).

The replacement walks the same frames and takes the module name each frame's code
runs in, which is the module ``inspect.getmodule`` finds for it, without touching a
file. The name only appears in that warning.
"""

from __future__ import annotations

import sys

_patched = False


def name_flag_sources_cheaply() -> None:
    """Install the frame walk as dbt's default flag source (once per process; the
    runner calls it under its lock, before dbt builds an adapter)."""
    global _patched
    if _patched:
        return
    from dbt_common import behavior_flags

    behavior_flags.BehaviorFlagRendered._default_source = staticmethod(
        _caller_outside(behavior_flags.__name__)
    )
    _patched = True


def _caller_outside(module_name: str):
    def default_source() -> str:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_globals.get("__name__")
            if name and name != module_name:
                return name
            frame = frame.f_back
        return "Unknown"

    return default_source
