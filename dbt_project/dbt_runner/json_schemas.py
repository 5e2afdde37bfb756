"""dbt's JSON schemas of its own classes, kept from one process to the next.

dbt checks the project's files, the profile and a command's flags against JSON schemas
of its dataclasses, and builds each schema (with mashumaro) the first time a process
needs it. In a fresh process that is a large share of dbt's start: in one measured
parse of this project, 1.55 s of its 3.74 s went to building 25 schemas. A schema
depends only on its class, so it is the same in every process that runs the same
releases of dbt, mashumaro and Python.

The runner keeps them in a JSON file: in the work folder, rewritten when a process
built one the file lacked (not in Lambda, where no later process reads it); and
beside the shipped parse in the common layer, so that a cold Lambda start reads them
(when the layer was built with the runtime's Python and the pinned dbt and mashumaro;
else they are built there as before). JSON runs no code, but a changed schema would
change what dbt accepts: a file another user could write is not read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from dbt_project.files import status_reason

FILE_NAME = "json-schemas.json"
_RELEASES_OF = ("dbt-core", "dbt-common", "dbt-adapters", "dbt-postgres", "mashumaro")

_known: dict[str, dict] = {}
_built: set[str] = set()  # built in this process, not read from a file
_read: set[Path] = set()
_installed = False


def releases() -> str:
    """What the schemas depend on besides the classes' names."""
    versions = [f"{name}=={_version(name)}" for name in _RELEASES_OF]
    versions.append(f"python=={sys.version_info.major}.{sys.version_info.minor}")
    return hashlib.sha256(";".join(versions).encode()).hexdigest()[:16]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # a package folder without its dist-info
        return None


def _name(cls) -> str | None:
    # A class made inside a function may be made again, other each time: not kept.
    if "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def install() -> None:
    """Serve dbt's schemas from what this process knows (once per process; the runner
    calls it under its lock, before dbt runs)."""
    global _installed
    if _installed:
        return
    from dbt_common.dataclass_schema import dbtClassMixin

    build = dbtClassMixin.json_schema.__func__.__wrapped__

    def json_schema(cls):
        name = _name(cls)
        if name is not None and name in _known:
            return _known[name]
        schema = build(cls)
        if name is not None:
            _known[name] = schema
            _built.add(name)
        return schema

    # Classes that define their own (dbt's versioned artifacts) keep it.
    dbtClassMixin.json_schema = classmethod(functools.lru_cache(json_schema))
    _installed = True


def read(path: Path) -> None:
    """Learn the schemas of ``path``, once per process, unless another user could have
    written it or other releases made it. Root may own it: a layer under /opt."""
    if path in _read:
        return
    _read.add(path)
    try:
        with path.open("rb") as file:
            # The status of the file that is read, not of a path another user may swap.
            if status_reason(os.fstat(file.fileno()), root_may_own=True) is not None:
                return
            kept = json.load(file)
    except (OSError, ValueError):
        return
    if isinstance(kept, dict) and kept.get("releases") == releases():
        for name, schema in kept.get("schemas", {}).items():
            _known.setdefault(name, schema)


def built() -> bool:
    """Whether this process built a schema that no file it read or wrote held."""
    return bool(_built)


def write(path: Path, *, every: bool = False) -> None:
    """Write what this process knows to ``path`` when it built a schema ``path`` lacked
    (or ``every`` time), replacing the file at once: a reader never sees half of it."""
    if not (_built or every):
        return
    _read.discard(path)
    read(path)  # another process may have added some since
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{FILE_NAME}.", delete=False
    ) as file:
        json.dump({"releases": releases(), "schemas": _known}, file, sort_keys=True)
    try:
        os.chmod(file.name, 0o644)
        os.replace(file.name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file.name)
    _built.clear()
