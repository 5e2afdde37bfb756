"""dbt's parsed project: kept once per process, shipped with the common layer.

A parse costs more than a night's build, so a process parses a project once per set
of inputs and keeps the result (``remembered``/``remember``), and a cold start reads
the parse shipped beside the project (``load_shipped_parse``) when it provably fits.
The shipped parse is read only from files that no other user could have written: it
is unpickled (ten to twenty times faster than dbt's msgpack in a fresh process).
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import logging
import pickle
import shutil
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

from dbt_project.errors import ConfigError
from dbt_project.facts.names import (
    ANALYTICS_DATABASE,
    ANALYTICS_TARGET,
    DBNAME_VARIABLES,
    DEV_TARGET,
    SOURCE_DATABASE,
    SOURCE_TARGET,
)
from dbt_project.files import unsafe_reason
from dbt_project.settings import scoped_environ

# Vars that only macros read while a node runs. Any other var may shape the parsed
# project (the sources' schema does), so a change to it means a new parse.
RUNTIME_VARS = frozenset({"run_date", "lookback_days", "owned_customers"})
# What dbt parses: a change to any of these files means a new parse.
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "selectors.yml")
_PROJECT_FOLDERS = ("models", "macros", "data-tests", "seeds")
# The parse shipped with the project (the common layer's, see infra/packaging/layers.py): per
# target, <target>.msgpack (dbt's serialized Manifest) and <target>.json (its inputs).
SHIPPED_PARSE_DIR = ".dbt-parse"
# dbt parses for the database each target has in the stack, whatever database a call
# reaches, and on fixed connection settings: host, port, user, TLS settings, PGOPTIONS
# and the password leave dbt's manifest unchanged, and of the database name only the
# nodes' and sources' `database` and `relation_name` hold it (a test compares a moved
# parse with dbt's own for another name). So one parse serves every database: a call
# for another one gets a copy with those two fields moved (``for_database``), and dbt's
# partial parse in the work folder, whose check hashes the connection settings, serves
# the next process whatever server and database it reaches.
PARSE_DATABASES = {
    SOURCE_TARGET: SOURCE_DATABASE,
    DEV_TARGET: SOURCE_DATABASE,
    ANALYTICS_TARGET: ANALYTICS_DATABASE,
}
_PARSE_CONNECTION = {
    "ETL_PG_HOST": "localhost",
    "ETL_PG_PORT": "5432",
    "ETL_PG_USER": "dbt_parse",
    "ETL_PG_SSLMODE": "prefer",
    "ETL_PG_SSLROOTCERT": "",
    "DBT_ENV_SECRET_PG_PASSWORD": "",
}

log = logging.getLogger(__name__)


def parsed_files(root: Path) -> list[Path]:
    paths = [root / name for name in _PROJECT_FILES]
    for folder in _PROJECT_FOLDERS:
        paths += sorted((root / folder).rglob("*"))
    return [p for p in paths if p.is_file()]


def content_fingerprint(root: Path) -> str:
    """Digest of the names (relative to ``root``), sizes and contents of the files dbt
    parses: unlike modification times, it survives the copy into a layer."""
    digest = hashlib.sha256()
    for path in parsed_files(root):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _engine() -> dict[str, str]:
    from dbt.adapters.postgres.__version__ import version as postgres
    from dbt.version import __version__ as core

    return {"dbt-core": core, "dbt-postgres": postgres}


def parse_vars(dbt_vars) -> dict[str, object]:
    """The vars a parse depends on: all but the runtime ones."""
    return {k: v for k, v in (dbt_vars or {}).items() if k not in RUNTIME_VARS}


def parse_inputs(target: str, dbt_vars) -> dict[str, str]:
    """The inputs of a parse that are not project files."""
    return {
        "target": target,
        "database": PARSE_DATABASES[target],
        "vars": json.dumps(parse_vars(dbt_vars), sort_keys=True),
    }


def parse_env(target: str) -> dict[str, str]:
    """The profile variables dbt parses ``target`` with (it connects to nothing)."""
    return {**_PARSE_CONNECTION, DBNAME_VARIABLES[target]: PARSE_DATABASES[target]}


def for_database(manifest, target: str, database: str):
    """``manifest``, parsed for ``target``'s parse database, as dbt would have parsed it
    for ``database``: itself when that is the same name, else a copy."""
    parsed_for = PARSE_DATABASES[target]
    if database == parsed_for:
        return manifest
    moved = _copy(manifest)
    old, new = f'"{parsed_for}".', f'"{database}".'
    nodes = [*moved.nodes.values(), *moved.sources.values()]
    nodes += [node for disabled in moved.disabled.values() for node in disabled]
    for node in nodes:
        if getattr(node, "database", None) != parsed_for:
            continue
        node.database = database
        relation = getattr(node, "relation_name", None)
        if relation and relation.startswith(old):
            node.relation_name = new + relation[len(old) :]
    if moved.flat_graph:
        moved.build_flat_graph()
    return moved


def _copy(manifest):
    """A deep copy of ``manifest`` (dbt's lock cannot be copied: a new one is made)."""
    buffer = io.BytesIO()
    _ManifestPickler(buffer).dump(manifest)
    return _unpickled(buffer.getvalue())


def _python() -> str:
    return "{}.{}".format(*sys.version_info[:2])


def ship_parse(root: Path, target: str) -> Path:
    """Parse the project at ``root`` for ``target`` (on ``parse_env``), and write the
    result under ``root``/.dbt-parse for ``load_shipped_parse``: dbt's
    Manifest as msgpack (read by any Python) and pickled (read ten times faster, by
    the Python that wrote it), and the parse's manifest.json."""
    from dbt.cli.main import dbtRunner
    from dbt.parser.manifest import extended_mashumaro_encoder

    from dbt_project.dbt_runner import json_schemas

    folder = root / SHIPPED_PARSE_DIR
    folder.mkdir(exist_ok=True)
    json_schemas.install()
    with tempfile.TemporaryDirectory() as scratch, scoped_environ(parse_env(target)):
        parsed = dbtRunner().invoke(
            [
                *("--quiet", "--log-level-file", "none", "parse", "--no-partial-parse"),
                *("--project-dir", str(root), "--profiles-dir", str(root), "--target", target),
                *("--target-path", f"{scratch}/target", "--log-path", f"{scratch}/logs"),
            ]
        )
        if not parsed.success or parsed.result is None:
            raise ConfigError(f"dbt could not parse {root} for target {target}: {parsed.exception}")
        shutil.copyfile(f"{scratch}/target/manifest.json", folder / f"{target}.manifest.json")
    manifest = parsed.result
    (folder / f"{target}.msgpack").write_bytes(manifest.to_msgpack(extended_mashumaro_encoder))
    manifest.build_flat_graph()  # no project paths in it: it holds wherever the project moves
    with (folder / f"{target}.pickle").open("wb") as out:
        _ManifestPickler(out).dump(manifest)
    stamp = {
        "engine": _engine(),
        "fingerprint": content_fingerprint(root),
        "inputs": parse_inputs(target, None),
        "python": _python(),
        "root": str(root),
    }
    (folder / f"{target}.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    # The schemas a cold start's dbt would build: those this parse needed, and more.
    json_schemas.write(folder / json_schemas.FILE_NAME, every=True)
    return folder


def _stale(root: Path, stamp: dict, target: str, dbt_vars) -> str | None:
    """Why the shipped parse described by ``stamp`` does not fit this call, if it does not."""
    if stamp.get("engine") != _engine():
        return f"parsed by {stamp.get('engine')}, this is {_engine()}"
    if stamp.get("inputs") != parse_inputs(target, dbt_vars):
        return "parsed for other settings (target, parse database or vars)"
    if stamp.get("fingerprint") != content_fingerprint(root):
        return "the project files changed since"
    return None


def load_shipped_parse(root: Path, target: str, env: dict[str, str], dbt_vars=None):
    """The Manifest shipped under ``root``/.dbt-parse for this call, or None when there
    is none or it does not fit (another dbt, other inputs, changed files): then dbt
    parses as without one."""
    folder = root / SHIPPED_PARSE_DIR
    try:
        stamp = json.loads((folder / f"{target}.json").read_text())
    except (OSError, ValueError):
        return None
    reason = _stale(root, stamp, target, dbt_vars) or _planted(folder, target, stamp)
    if reason is None:
        manifest = _read_manifest(folder, target, stamp)
        # env_var() values the project files read while parsing: only ``env``'s are known.
        changed = [k for k, v in manifest.env_vars.items() if env.get(k) != v]
        reason = f"{', '.join(sorted(changed))} changed since" if changed else None
    if reason is not None:
        log.info("Not using the shipped dbt parse of %s: %s", target, reason)
        return None
    _move_root(manifest, stamp["root"], str(root))
    if not manifest.flat_graph:  # the pickle ships it built, msgpack does not
        manifest.build_flat_graph()
    return manifest


class _ManifestPickler(pickle.Pickler):
    """Pickles dbt's Manifest by its fields. dbt 1.11's own ``__reduce_ex__`` passes
    them by position and leaves ``fixtures`` out, which shifts every later one; its
    lock cannot be pickled and is made anew on reading."""

    def __init__(self, out):
        from dbt.contracts.graph.manifest import Manifest

        super().__init__(out, protocol=5)
        self.manifest_class = Manifest

    def reducer_override(self, obj):  # called for every object in the graph: kept cheap
        if type(obj) is not self.manifest_class:
            return NotImplemented
        state = {name: value for name, value in vars(obj).items() if name != "_lock"}
        return copyreg.__newobj__, (self.manifest_class,), state


def _unpickle(path: Path):
    """A Manifest that _ManifestPickler wrote: the layer's own artifact, read only after
    its stamp matched and no other user could have written it."""
    return _unpickled(path.read_bytes())


def _unpickled(data: bytes):
    manifest = pickle.loads(data)  # noqa: S301 - this process's own or the layer's bytes
    manifest._lock = type(manifest).__dataclass_fields__["_lock"].default_factory()
    return manifest


def _shipped_file(folder: Path, target: str, stamp: dict) -> Path:
    """The copy this Python reads: the pickle it wrote, else dbt's msgpack."""
    pickled = folder / f"{target}.pickle"
    if stamp.get("python") == _python() and pickled.exists():
        return pickled
    return folder / f"{target}.msgpack"


def _planted(folder: Path, target: str, stamp: dict) -> str | None:
    """Why another user could have written the parse this process would read: then it
    is not read (a pickle runs what it holds). Root may own it: a layer under /opt."""
    for path in (folder, _shipped_file(folder, target, stamp)):
        try:
            reason = unsafe_reason(path, root_may_own=True)
        except OSError as exc:
            return f"{path} cannot be checked ({exc.strerror})"
        if reason is not None:
            return f"{path}: {reason}"
    return None


def _read_manifest(folder: Path, target: str, stamp: dict):
    path = _shipped_file(folder, target, stamp)
    if path.suffix == ".pickle":
        return _unpickle(path)
    from dbt.contracts.graph.manifest import Manifest
    from dbt.parser.manifest import extended_mashumuro_decoder

    return Manifest.from_msgpack(path.read_bytes(), decoder=extended_mashumuro_decoder)


def copy_shipped_manifest_json(root: Path, target: str, destination: Path) -> bool:
    """Write the shipped parse's manifest.json to ``destination``, its project paths
    pointed at ``root`` as ``load_shipped_parse`` points the Manifest's. False when
    there is none."""
    folder = root / SHIPPED_PARSE_DIR
    try:
        built = json.loads((folder / f"{target}.json").read_text())["root"]
        text = (folder / f"{target}.manifest.json").read_text()
    except (OSError, ValueError, KeyError):
        return False
    if built != str(root):
        text = text.replace(json.dumps(built)[1:-1], json.dumps(str(root))[1:-1])
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(text)
    return True


def _move_root(manifest, built: str, root: str) -> None:
    """Point the paths a parse records at the project where it now sits (in Lambda,
    /opt/dbt rather than the build's folder): seeds read their CSV from there."""
    for source_file in manifest.files.values():
        if source_file.path.project_root == built:
            source_file.path.project_root = root
    for node in manifest.nodes.values():
        if getattr(node, "root_path", None) == built:
            node.root_path = root


# Parses kept by this process, newest last: one per target and set of inputs. A Lambda
# container holds one or two; a test worker holds one per database name it reuses.
# Nothing is kept on disk between processes: in the suite no later process ever found
# an earlier one's parse (0 of 12 parses), and a pickle read back from a shared work
# folder would run whatever another user put there.
_KEPT_PARSES = 16
_parses: OrderedDict[tuple, object] = OrderedDict()


def remembered(key: tuple):
    """The Manifest this process parsed (or read) for ``key``, if it still holds it."""
    manifest = _parses.get(key)
    if manifest is not None:
        _parses.move_to_end(key)
    return manifest


def remember(key: tuple, manifest) -> None:
    _parses[key] = manifest
    _parses.move_to_end(key)
    while len(_parses) > _KEPT_PARSES:
        _parses.popitem(last=False)
