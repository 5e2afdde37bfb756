"""Runs dbt in-process, the same way on a laptop and inside AWS Lambda.

Lambda has no /dev/shm, so the multiprocessing locks that dbt-core 1.11 creates
fail there; they are replaced by threading locks before dbt is first imported.
dbt runs its nodes on threads, never on processes, so this changes nothing else.
"""

from __future__ import annotations

import json
import multiprocessing.context
import os
import threading
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from dbt_project.dbt_runner import parse_cache as dbt_parse
from dbt_project.errors import (
    ConfigError,
    DatabaseUnavailable,
    DataTestsFailed,
    LoginRefused,
    brief,
)
from dbt_project.files import private_folder
from dbt_project.postgres.connection import (
    CREDENTIALS_REFUSED,
    TLS_FIX,
    TLS_REFUSED,
    Database,
    PgSettings,
)
from dbt_project.request import parse_date
from dbt_project.settings import Settings, current, quiet_dbt_tracking, scoped_environ


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

# dbt keeps global state per process: one invocation at a time, whichever DbtProject.
_DBT_LOCK = threading.Lock()
# Commands run with --no-write-json, their artifacts written by DbtProject instead.
_OWN_ARTIFACTS = frozenset({"build", "run", "test"})
# The parse each target folder's manifest.json holds, as this process wrote it.
_manifests_written: dict[Path, tuple] = {}


@dataclass(frozen=True)
class NodeFailure:
    unique_id: str
    status: str
    message: str
    # Rows a data test returned (its failures), when it is a test that ran.
    rows: int | None = None

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
    # Tests of severity warn that found rows: reported, never a failure.
    warnings: list[NodeFailure] = field(default_factory=list)

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


class DbtProject:
    """Runs dbt commands on the project (warm Lambda invocations reuse one).

    The project is parsed once per target and set of inputs, and the parse is kept
    for the process (``dbt_parse``): a later call, even for another run_date or from
    another DbtProject, goes straight to running nodes. dbt re-parses on every change
    of --vars otherwise, which costs more than running the nightly build itself.

    dbt does not support concurrent invocations in one process: calls take one lock.
    """

    def __init__(self, root: Path | None = None, settings: Settings | None = None):
        self.settings = settings or current()
        self.root = root or self.settings.project_dir
        self.parsed: list[str] = []  # targets dbt parsed for this project's calls
        self._shipped_keys: list[tuple] = []  # parses read from the shipped ones

    @property
    def shipped(self) -> list[str]:
        """Targets served by the parse shipped with the project."""
        return [key[1] for key in self._shipped_keys]

    def _fingerprint(self) -> tuple:
        """Names, sizes and modification times of the files dbt parses."""
        stats = ((p, p.stat()) for p in dbt_parse.parsed_files(self.root))
        return tuple((str(p), s.st_size, s.st_mtime_ns) for p, s in stats)

    def _manifest(self, key: tuple, env: dict[str, str], dbt_vars, parse_args: list[str]):
        """The parsed project for ``key`` and None, or None and dbt's failed parse: this
        process's parse, else the one shipped with the project (a Lambda cold start),
        else dbt parses now (with its own partial parsing in the private work folder)."""
        target = key[1]
        manifest = dbt_parse.remembered(key)
        if manifest is None:
            manifest = dbt_parse.load_shipped_parse(self.root, target, env, dbt_vars)
            if manifest is not None:
                self._shipped_keys.append(key)
        if manifest is None:
            from dbt.cli.main import dbtRunner

            parsed = dbtRunner().invoke(parse_args)
            if not parsed.success or parsed.result is None:
                return None, parsed
            manifest = parsed.result
            self.parsed.append(target)
        dbt_parse.remember(key, manifest)
        return manifest, None

    def _work_folder(self) -> Path:
        """dbt's target and log folders sit here, and dbt reads its partial parse back
        from them: a folder another user may write to would let them choose what runs."""
        return private_folder(
            self.settings.work_dir / "dbt",
            "the work folder",
            fix="Set ETL_WORK_DIR to a folder of your own (mkdir -m 700 DIR).",
        )

    def target_path(self, target: str) -> Path:
        """Where dbt writes the artifacts of ``target`` (its manifest, run results)."""
        if self.settings.dbt_target_path:
            return self.settings.dbt_target_path
        return self._work_folder() / f"target-{target}"

    def _paths_and_options(self, target: str, dbt_vars) -> tuple[Path, list[str]]:
        target_path = self.target_path(target)
        log_path = self.settings.dbt_log_path or self._work_folder() / "logs"
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

    def _env_and_key(self, settings: PgSettings, target: str, dbt_vars) -> tuple[dict, tuple]:
        env = settings.dbt_env()
        # The session limits, and the role the pipeline's own sessions set.
        env["PGOPTIONS"] = settings.options(self.settings.limits) or ""
        # What the parsed project depends on, as for the shipped parse: the target, the
        # database name and the vars other than the runtime ones. Another login, host or
        # port (a test's own role, a rotated user) reuses the parse.
        parse_key = (
            str(self.root),
            target,
            tuple(sorted(dbt_parse.parse_inputs(target, env, dbt_vars).items())),
            self._fingerprint(),
        )
        return env, parse_key

    def parsed_project(self, *, settings: PgSettings, target: str):
        """dbt's parsed project (its Manifest object), as the next call would use it."""
        target_path, options = self._paths_and_options(target, None)
        flags = self._flags()
        env, parse_key = self._env_and_key(settings, target, None)
        with _DBT_LOCK, scoped_environ(env):
            parsed, failed = self._manifest(parse_key, env, None, [*flags, "parse", *options])
        if parsed is None:
            raise_for_failures(_summarise(failed, target_path), "parsing the dbt project")
        return parsed

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
        env, parse_key = self._env_and_key(settings, target, dbt_vars)
        # A parse this process or the layer already held made no target folder here, and
        # dbt given a parsed project writes into it without making it (docs generate).
        target_path.mkdir(parents=True, exist_ok=True)
        with _DBT_LOCK, scoped_environ(env):
            parsed, failed = self._manifest(parse_key, env, dbt_vars, [*flags, "parse", *options])
            if parsed is None:
                return _summarise(failed, target_path)
            from dbt.cli.main import dbtRunner

            errors = _ErrorEvents()
            runner = dbtRunner(manifest=parsed, callbacks=[errors])
            if command[0] in _OWN_ARTIFACTS:
                (target_path / "run_results.json").unlink(missing_ok=True)
                result = runner.invoke([*flags, *command, "--no-write-json", *options])
                self._write_artifacts(result, parsed, target, parse_key)
            else:
                # docs generate reads the manifest.json of the folder it writes to: this
                # parse's, not one an earlier parse left there.
                manifest_json = target_path / "manifest.json"
                if _manifests_written.get(target_path) != parse_key or not manifest_json.exists():
                    parsed.write(str(manifest_json))
                result = runner.invoke([*flags, *command, *options])
                _manifests_written.pop(target_path, None)  # dbt wrote, or left, its own
        return _summarise(result, target_path, errors.messages)

    def _write_artifacts(self, result, manifest, target: str, parse_key: tuple) -> None:
        """run_results.json from the results, and manifest.json once per target folder
        and parse (copied from the shipped parse when it served): dbt's own end-of-run
        manifest.json costs about a tenth of a warm build and a third of a second cold.
        The run results keep each node's compiled SQL. Writing needs the flags that dbt
        sets while invoked: this runs after a call."""
        target_path = self.target_path(target)
        if result.result is not None and hasattr(result.result, "write"):
            result.result.write(str(target_path / "run_results.json"))
        path = target_path / "manifest.json"
        if _manifests_written.get(target_path) == parse_key and path.exists():
            return
        shipped = parse_key in self._shipped_keys
        if not (shipped and dbt_parse.copy_shipped_manifest_json(self.root, target, path)):
            manifest.write(str(path))
        _manifests_written[target_path] = parse_key


def invoke_dbt(dbt: DbtProject, database: Database, command: list[str], **kwargs) -> DbtRun:
    """dbt logs in with its own connections: if the credentials it was given are refused
    (rotated since the pipeline's session opened), re-read them once and run again."""
    run = dbt.invoke(command, settings=database.settings, **kwargs)
    if credentials_refused(run) and database.refresh_credentials():
        run = dbt.invoke(command, settings=database.settings, **kwargs)
    return run


class _ErrorEvents:
    """dbt's own error lines, which --quiet keeps from the console: the reason of a
    failure that no node result carries (a catalog that could not be read)."""

    # Logged as a warning, yet the command fails because of it.
    _FAILING_WARNINGS = frozenset({"CatalogGenerationError"})

    def __init__(self) -> None:
        self.messages: list[str] = []

    # The exception the invocation returns anyway.
    _REPEATS_THE_EXCEPTION = frozenset({"MainEncounteredError", "MainStackTrace"})

    def __call__(self, event) -> None:
        info = event.info
        if info.name in self._REPEATS_THE_EXCEPTION:
            return
        if info.level == "error" or info.name in self._FAILING_WARNINGS:
            self.messages.append(info.msg)


def _summarise(result, target_path: Path, errors: list[str] = ()) -> DbtRun:
    nodes: list[NodeFailure] = []
    warnings: list[NodeFailure] = []
    models = 0
    for node_result in getattr(result.result, "results", None) or []:
        models += node_result.node.unique_id.startswith("model.")
        status = str(getattr(node_result.status, "value", node_result.status))
        found = NodeFailure(
            node_result.node.unique_id,
            status,
            brief(node_result.message or ""),
            getattr(node_result, "failures", None),
        )
        if status in ("error", "fail", "runtime error"):
            nodes.append(found)
        elif status == "warn":
            warnings.append(found)
    failures: list[NodeFailure] = []
    # The first reason dbt logged, when no node carries one: it comes before what it caused.
    if not nodes and not result.success and errors:
        failures.append(NodeFailure("dbt", "error", brief(errors[0])))
    if result.exception is not None:
        failures.append(NodeFailure("dbt", "error", brief(str(result.exception))))
    failures += nodes
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
        warnings=warnings,
    )


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


def _any_failure(run: DbtRun, patterns) -> bool:
    return any(p in f.message.lower() for f in run.failures for p in patterns)


def credentials_refused(run: DbtRun) -> bool:
    """One of dbt's connections had its credentials refused (a password rotated while
    the pipeline's own session stayed open, an expired IAM token)."""
    return _any_failure(run, CREDENTIALS_REFUSED)


def connection_failed(run: DbtRun) -> bool:
    """dbt could not log in, was refused by TLS, or lost its connection: not the data's
    fault, nor the project's."""
    return _any_failure(run, (*CREDENTIALS_REFUSED, *TLS_REFUSED, *_CONNECTION_LOST))


def raise_for_failures(run: DbtRun, what: str) -> None:
    if run.success:
        return
    names = "; ".join(str(f) for f in run.failures) or "dbt reported failure"
    if credentials_refused(run):
        raise LoginRefused(
            f"{what} could not log in, nothing was unloaded or loaded: {names}. Check the "
            "login's password or secret (it may have been rotated), then re-run the same day"
        )
    if _any_failure(run, TLS_REFUSED):
        raise LoginRefused(
            f"{what} failed the TLS check, nothing was unloaded or loaded: {names}; {TLS_FIX}"
        )
    if _any_failure(run, _CONNECTION_LOST):
        raise DatabaseUnavailable(
            f"{what} lost its database connection, nothing was unloaded or loaded: {names}. "
            "Re-run the same day once the database is reachable"
        )
    raise DataTestsFailed(
        f"{what} failed, nothing was unloaded or loaded: {names}. Fix the data or the model, "
        "then re-run the same day",
        failures=[f.unique_id for f in run.failures],
    )
