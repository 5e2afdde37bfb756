"""Runs dbt in-process, the same way on a laptop and inside AWS Lambda.

Lambda has no /dev/shm, so the multiprocessing locks that dbt-core 1.11 creates
fail there; they are replaced by threading locks before dbt is first imported.
dbt runs its nodes on threads, never on processes, so this changes nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing.context
import os
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .business_calendar import parse_date
from .db import PgSettings
from .errors import ConfigError, DatabaseUnavailable, DataTestsFailed, LoginRefused
from .settings import Settings, current, quiet_dbt_tracking, scoped_environ


def _shm_usable() -> bool:
    shm = "/dev/shm"  # noqa: S108 - probing for it, not writing to it
    return os.path.isdir(shm) and os.access(shm, os.W_OK)


def _use_thread_locks() -> None:
    def lock(self, *args, **kwargs):
        return threading.Lock()

    def rlock(self, *args, **kwargs):
        return threading.RLock()

    multiprocessing.context.BaseContext.Lock = lock
    multiprocessing.context.BaseContext.RLock = rlock


if not _shm_usable():
    _use_thread_locks()

quiet_dbt_tracking()


@dataclass(frozen=True)
class NodeFailure:
    unique_id: str
    status: str
    message: str

    def __str__(self) -> str:
        name = (
            self.unique_id.split(".", 2)[-1] if self.unique_id.count(".") >= 2 else self.unique_id
        )
        return (
            f"{name} ({self.status}: {self.message})" if self.message else f"{name} ({self.status})"
        )


@dataclass
class DbtRun:
    success: bool
    invocation_id: str | None
    target_path: Path
    failures: list[NodeFailure] = field(default_factory=list)
    models: int = 0  # models that ran (hooks and tests not counted)

    @property
    def run_results(self) -> Path:
        return self.target_path / "run_results.json"

    @property
    def manifest(self) -> Path:
        return self.target_path / "manifest.json"


def run_vars(
    run_date: date | str | None, lookback_days: int | None = None, **extra
) -> dict[str, object]:
    """Validated dbt vars: dbt renders vars into SQL unescaped, so only checked values pass."""
    values: dict[str, object] = {}
    if run_date is not None:
        values["run_date"] = parse_date(run_date, "run_date").isoformat()
    if lookback_days is not None:
        if (
            not isinstance(lookback_days, int)
            or isinstance(lookback_days, bool)
            or lookback_days < 1
        ):
            raise ConfigError(
                f"lookback_days must be a positive whole number, not {lookback_days!r}"
            )
        values["lookback_days"] = lookback_days
    values.update(extra)
    return values


# Vars that only macros read while a node runs. Any other var may shape the parsed
# project (the sources' schema does), so a change to it means a new parse.
_RUNTIME_VARS = frozenset({"run_date", "lookback_days"})
# What dbt parses: a change to any of these files means a new parse.
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "selectors.yml")
_PROJECT_FOLDERS = ("models", "macros", "tests/dbt", "seeds")
# The parse shipped with the project (the common layer's, see infra/layers.py): per
# target, <target>.msgpack (dbt's serialized Manifest) and <target>.json (its inputs).
SHIPPED_PARSE_DIR = ".dbt-parse"
# Profile values that shape the parsed project: nodes and sources name their database.
# Host, port, user, TLS settings and PGOPTIONS leave dbt's manifest unchanged, and the
# password is never part of it: one layer's parse serves every deployment's endpoints.
_PARSE_ENV = ("ETL_PG_DBNAME",)

log = logging.getLogger(__name__)


def _parsed_files(root: Path) -> list[Path]:
    paths = [root / name for name in _PROJECT_FILES]
    for folder in _PROJECT_FOLDERS:
        paths += sorted((root / folder).rglob("*"))
    return [p for p in paths if p.is_file()]


def content_fingerprint(root: Path) -> str:
    """Digest of the names (relative to ``root``), sizes and contents of the files dbt
    parses: unlike modification times, it survives the copy into a layer."""
    digest = hashlib.sha256()
    for path in _parsed_files(root):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _engine() -> dict[str, str]:
    from dbt.adapters.postgres.__version__ import version as postgres
    from dbt.version import __version__ as core

    return {"dbt-core": core, "dbt-postgres": postgres}


def parse_inputs(target: str, env: dict[str, str], dbt_vars) -> dict[str, str]:
    """The inputs of a parse that are not project files (nor secrets)."""
    kept = {k: v for k, v in (dbt_vars or {}).items() if k not in _RUNTIME_VARS}
    return {
        "target": target,
        **{name: env.get(name, "") for name in _PARSE_ENV},
        "vars": json.dumps(kept, sort_keys=True),
    }


def ship_parse(root: Path, target: str, env: dict[str, str]) -> Path:
    """Parse the project at ``root`` for ``target`` with the profile variables ``env``,
    and write the result under ``root``/.dbt-parse for ``load_shipped_parse``."""
    from dbt.cli.main import dbtRunner
    from dbt.parser.manifest import extended_mashumaro_encoder

    with tempfile.TemporaryDirectory() as scratch, scoped_environ(env):
        parsed = dbtRunner().invoke(
            [
                *("--quiet", "--log-level-file", "none", "parse", "--no-partial-parse"),
                *("--project-dir", str(root), "--profiles-dir", str(root), "--target", target),
                *("--target-path", f"{scratch}/target", "--log-path", f"{scratch}/logs"),
            ]
        )
    if not parsed.success or parsed.result is None:
        raise ConfigError(f"dbt could not parse {root} for target {target}: {parsed.exception}")
    folder = root / SHIPPED_PARSE_DIR
    folder.mkdir(exist_ok=True)
    (folder / f"{target}.msgpack").write_bytes(parsed.result.to_msgpack(extended_mashumaro_encoder))
    stamp = {
        "engine": _engine(),
        "fingerprint": content_fingerprint(root),
        "inputs": parse_inputs(target, env, None),
        "root": str(root),
    }
    (folder / f"{target}.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return folder


def _stale(root: Path, stamp: dict, target: str, env: dict[str, str], dbt_vars) -> str | None:
    """Why the shipped parse described by ``stamp`` does not fit this call, if it does not."""
    if stamp.get("engine") != _engine():
        return f"parsed by {stamp.get('engine')}, this is {_engine()}"
    if stamp.get("inputs") != parse_inputs(target, env, dbt_vars):
        return "parsed for other settings (database name or vars)"
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
    reason = _stale(root, stamp, target, env, dbt_vars)
    if reason is None:
        from dbt.contracts.graph.manifest import Manifest
        from dbt.parser.manifest import extended_mashumuro_decoder

        data = (folder / f"{target}.msgpack").read_bytes()
        manifest = Manifest.from_msgpack(data, decoder=extended_mashumuro_decoder)
        # env_var() values the project files read while parsing: only ``env``'s are known.
        changed = [k for k, v in manifest.env_vars.items() if env.get(k) != v]
        reason = f"{', '.join(sorted(changed))} changed since" if changed else None
    if reason is not None:
        log.info("Not using the shipped dbt parse of %s: %s", target, reason)
        return None
    _move_root(manifest, stamp["root"], str(root))
    manifest.build_flat_graph()
    return manifest


def _move_root(manifest, built: str, root: str) -> None:
    """Point the paths a parse records at the project where it now sits (in Lambda,
    /opt/dbt rather than the build's folder): seeds read their CSV from there."""
    for source_file in manifest.files.values():
        if source_file.path.project_root == built:
            source_file.path.project_root = root
    for node in manifest.nodes.values():
        if getattr(node, "root_path", None) == built:
            node.root_path = root


class DbtProject:
    """One dbt runner for the life of the process (warm Lambda invocations reuse it).

    The project is parsed once per target and kept: a later call, even for another
    run_date, goes straight to running nodes. dbt re-parses on every change of
    --vars otherwise, which costs more than running the nightly build itself.

    dbt does not support concurrent invocations in one process: callers run one at a
    time (the functions that run dbt have reserved concurrency 1).
    """

    def __init__(self, root: Path | None = None, settings: Settings | None = None):
        self.settings = settings or current()
        self.root = root or self.settings.project_dir
        self._manifests: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self.shipped: list[str] = []  # targets served by the shipped parse

    def _fingerprint(self) -> tuple:
        """Names, sizes and modification times of the files dbt parses."""
        stats = ((p, p.stat()) for p in _parsed_files(self.root))
        return tuple((str(p), s.st_size, s.st_mtime_ns) for p, s in stats)

    def _runner(self, key: tuple, parse_args: list[str]):
        """A dbtRunner holding the parsed project for ``key``, parsing it if needed."""
        from dbt.cli.main import dbtRunner

        manifest = self._manifests.get(key)
        if manifest is None:
            parsed = dbtRunner().invoke(parse_args)
            if not parsed.success or parsed.result is None:
                return None, parsed
            manifest = self._manifests[key] = parsed.result
        return dbtRunner(manifest=manifest), None

    def target_path(self, target: str) -> Path:
        """Where dbt writes the artifacts of ``target`` (its manifest, run results)."""
        scratch = self.settings.work_dir / "dbt"
        return self.settings.dbt_target_path or scratch / f"target-{target}"

    def _paths_and_options(self, target: str, dbt_vars) -> tuple[Path, list[str]]:
        target_path = self.target_path(target)
        log_path = self.settings.dbt_log_path or self.settings.work_dir / "dbt" / "logs"
        options = [
            *("--project-dir", str(self.root), "--profiles-dir", str(self.root)),
            *("--target", target, "--target-path", str(target_path), "--log-path", str(log_path)),
        ]
        if dbt_vars:
            options += ["--vars", json.dumps(dbt_vars)]
        return target_path, options

    def _flags(self) -> list[str]:
        flags = []
        if self.settings.in_lambda:
            flags += ["--log-format", "json"]
        if not self.settings.dbt_verbose:
            # Failures come back in the results and reach our own error messages.
            # dbt's debug log file costs about a tenth of a warm build, and in Lambda
            # it lands in a /tmp nobody reads: ETL_DBT_VERBOSE=1 brings both back.
            flags += ["--quiet", "--log-level-file", "none"]
        return flags

    def invoke(
        self,
        command: list[str],
        *,
        settings: PgSettings,
        target: str,
        dbt_vars: dict[str, object] | None = None,
    ) -> DbtRun:
        target_path, options = self._paths_and_options(target, dbt_vars)
        flags = self._flags()
        env = settings.dbt_env()
        env["PGOPTIONS"] = self.settings.limits.options() or ""
        # What the parsed project depends on; the password and the runtime vars do not
        # change it.
        parse_key = (
            target,
            tuple(sorted((k, v) for k, v in env.items() if "SECRET" not in k)),
            json.dumps({k: v for k, v in (dbt_vars or {}).items() if k not in _RUNTIME_VARS}),
            self._fingerprint(),
        )
        with self._lock, scoped_environ(env):
            if parse_key not in self._manifests:
                shipped = load_shipped_parse(self.root, target, env, dbt_vars)
                if shipped is not None:
                    self._manifests[parse_key] = shipped
                    self.shipped.append(target)
            runner, failed_parse = self._runner(parse_key, [*flags, "parse", *options])
            result = failed_parse or runner.invoke([*flags, *command, *options])
            if runner is not None and not (target_path / "manifest.json").exists():
                # After the call: writing needs the flags that dbt sets while invoked.
                self._manifests[parse_key].write(str(target_path / "manifest.json"))
        return _summarise(result, target_path)


def _summarise(result, target_path: Path) -> DbtRun:
    failures: list[NodeFailure] = []
    models = 0
    if result.exception is not None:
        failures.append(NodeFailure("dbt", "error", _one_line(str(result.exception))))
    for node_result in getattr(result.result, "results", None) or []:
        models += node_result.node.unique_id.startswith("model.")
        status = str(getattr(node_result.status, "value", node_result.status))
        if status in ("error", "fail", "runtime error"):
            failures.append(
                NodeFailure(
                    node_result.node.unique_id, status, _one_line(node_result.message or "")
                )
            )
    invocation_id = None
    run_results = target_path / "run_results.json"
    if run_results.exists():
        invocation_id = json.loads(run_results.read_text())["metadata"].get("invocation_id")
    return DbtRun(
        success=bool(result.success) and not failures,
        invocation_id=invocation_id,
        target_path=target_path,
        failures=failures,
        models=models,
    )


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# Messages of a lost or refused connection: the data is not at fault, a re-run is the fix.
_CONNECTION_LOST = (
    "server closed the connection",
    "could not connect to server",
    "connection refused",
    "terminating connection",
    "connection to server",
    "the database system is starting up",
    "the database system is shutting down",
)


# Messages of credentials refused to one of dbt's connections (a password rotated while
# the pipeline's own session stayed open, an expired IAM token).
_CREDENTIALS_REFUSED = ("password authentication failed", "pam authentication failed")


def credentials_refused(run: DbtRun) -> bool:
    return any(p in f.message.lower() for f in run.failures for p in _CREDENTIALS_REFUSED)


def raise_for_failures(run: DbtRun, what: str) -> None:
    if run.success:
        return
    names = "; ".join(str(f) for f in run.failures) or "dbt reported failure"
    if credentials_refused(run):
        raise LoginRefused(
            f"{what} could not log in, nothing was unloaded or loaded: {names}. Check the "
            "login's password or secret (it may have been rotated), then re-run the same day"
        )
    if any(p in f.message.lower() for f in run.failures for p in _CONNECTION_LOST):
        raise DatabaseUnavailable(
            f"{what} lost its database connection, nothing was unloaded or loaded: {names}. "
            "Re-run the same day once the database is reachable"
        )
    raise DataTestsFailed(
        f"{what} failed, nothing was unloaded or loaded: {names}. Fix the data or the model, "
        "then re-run the same day",
        failures=[f.unique_id for f in run.failures],
    )
