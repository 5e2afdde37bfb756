"""Runs dbt in-process, the same way on a laptop and inside AWS Lambda.

Lambda has no /dev/shm, so the multiprocessing locks that dbt-core 1.11 creates
fail there; they are replaced by threading locks before dbt is first imported.
dbt runs its nodes on threads, never on processes, so this changes nothing else.
Importing this module also makes the garbage collector's young collections rarer
(``_collect_garbage_less_often``), for every process that runs dbt through it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import multiprocessing.context
import os
import threading
from datetime import date
from pathlib import Path

from dbt_project.dbt_runner import event_messages, json_schemas, node_files
from dbt_project.dbt_runner import parse_cache as dbt_parse
from dbt_project.dbt_runner.connections import keep_sessions_per_thread
from dbt_project.dbt_runner.flag_sources import name_flag_sources_cheaply
from dbt_project.dbt_runner.macro_namespace import build_namespaces_quickly
from dbt_project.dbt_runner.plugin_modules import find_plugin_modules_once
from dbt_project.dbt_runner.results import (
    DbtRun,
    ErrorEvents,
    credentials_refused,
    raise_for_failures,
    summarise,
)
from dbt_project.dbt_runner.template_code import compile_templates_once
from dbt_project.errors import ConfigError
from dbt_project.files import private_folder
from dbt_project.postgres.connection import Database, PgSettings
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

# dbt's import, parse and node runs create container objects by the hundred thousand
# and keep most of them to the end of the run, so at the collector's default pace (a
# young collection every 700 new containers) it walks the same survivors over and over.
# Collector time (gc.callbacks), default against 5,000: one extract in a fresh process
# 0.57 s against 0.39 s (of some 4.5 s of CPU), `etl demo` 2.3 s against 1.4 s (of 14 s).
_YOUNG_COLLECTION_EVERY = 5_000


def _collect_garbage_less_often() -> None:
    young, *older = gc.get_threshold()
    if 0 < young < _YOUNG_COLLECTION_EVERY:  # 0: the process turned collection off
        gc.set_threshold(_YOUNG_COLLECTION_EVERY, *older)


_collect_garbage_less_often()

quiet_dbt_tracking()

# dbt keeps global state per process: one invocation at a time, whichever DbtProject.
_DBT_LOCK = threading.Lock()
# Commands run with --no-write-json, their artifacts written by DbtProject instead.
_OWN_ARTIFACTS = frozenset({"build", "run", "test"})
# The parse each target folder's manifest.json holds, as this process wrote it.
_manifests_written: dict[Path, tuple] = {}


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
        self._tuned = False

    @property
    def shipped(self) -> list[str]:
        """Targets served by the parse shipped with the project."""
        return [key[1] for key in self._shipped_keys]

    def _fingerprint(self) -> tuple:
        """Names, sizes and modification times of the files dbt parses."""
        stats = ((p, p.stat()) for p in dbt_parse.parsed_files(self.root))
        return tuple((str(p), s.st_size, s.st_mtime_ns) for p, s in stats)

    def _manifest(self, key: tuple, env: dict[str, str], dbt_vars):
        """The parsed project for ``key`` and None, or None and dbt's failed parse: this
        process's parse, else the one shipped with the project (a Lambda cold start),
        else dbt parses now (with its own partial parsing in the private work folder).
        Each is dbt's parse for the target's parse database, moved to ``key``'s."""
        manifest = dbt_parse.remembered(key)
        if manifest is not None:
            return manifest, None
        parse_key, target, database = key[:-1], key[1], key[-1]
        parsed = dbt_parse.remembered(parse_key)
        if parsed is None:
            parsed = dbt_parse.load_shipped_parse(self.root, target, env, dbt_vars)
            if parsed is not None:
                self._shipped_keys.append(key)
        if parsed is None:
            from dbt.cli.main import dbtRunner

            self._tune_dbt()
            with scoped_environ(dbt_parse.parse_env(target)):
                run = dbtRunner().invoke(self._parse_args(target, dbt_vars))
            if not run.success or run.result is None:
                return None, run
            parsed = run.result
            self.parsed.append(target)
        dbt_parse.remember(parse_key, parsed)
        manifest = dbt_parse.for_database(parsed, target, database)
        dbt_parse.remember(key, manifest)
        return manifest, None

    def _tune_dbt(self) -> None:
        """Remove costs of dbt's own (each installed once per process): behavior flags
        reading every caller's source, Jinja compiling a text at every render, event
        messages read as JSON and log lines made for no log, plugins searched for on
        every folder of the import path at every call, each node's macro namespace
        built one constructor at a time, the JSON schemas of dbt's classes built anew
        in each process, events no log or callback hears, and a file of each node's
        SQL that nothing reads."""
        if self._tuned:
            return
        name_flag_sources_cheaply()
        compile_templates_once()
        event_messages.build_messages_directly()
        event_messages.format_only_kept_lines()
        event_messages.fire_only_heard_events()
        node_files.write_only_when_asked()
        find_plugin_modules_once()
        build_namespaces_quickly()
        json_schemas.install()
        json_schemas.read(self.root / dbt_parse.SHIPPED_PARSE_DIR / json_schemas.FILE_NAME)
        json_schemas.read(self._work_folder() / json_schemas.FILE_NAME)
        self._tuned = True

    def _keep_schemas(self) -> None:
        """Write the schemas this process built for the next process on this work folder.
        Not in Lambda: its process is the container, and nothing reads /tmp after it."""
        if json_schemas.built() and not self.settings.in_lambda:
            json_schemas.write(self._work_folder() / json_schemas.FILE_NAME)

    def _work_folder(self) -> Path:
        """dbt's target and log folders sit here, and dbt reads its partial parse back
        from them: a folder another user may write to would let them choose what runs."""
        return private_folder(
            self.settings.work_dir / "dbt",
            "the work folder",
            fix="Set ETL_WORK_DIR to a folder of your own (mkdir -m 700 DIR).",
        )

    def check_work_folder(self) -> None:
        """Refuse an existing work folder another user could write, before anything
        connects; a missing one is made (privately) when dbt first runs."""
        if os.path.lexists(self.settings.work_dir / "dbt"):
            self._work_folder()

    def target_path(self, target: str) -> Path:
        """Where dbt writes the artifacts of ``target`` (its manifest, run results)."""
        if self.settings.dbt_target_path:
            return self.settings.dbt_target_path
        return self._work_folder() / f"target-{target}"

    def _paths_and_options(
        self, target: str, target_path: Path | None = None
    ) -> tuple[Path, list[str]]:
        target_path = target_path or self.target_path(target)
        log_path = self.settings.dbt_log_path or self._work_folder() / "logs"
        options = [
            *("--project-dir", str(self.root), "--profiles-dir", str(self.root)),
            *("--target", target, "--target-path", str(target_path), "--log-path", str(log_path)),
        ]
        return target_path, options

    def _parse_args(self, target: str, dbt_vars) -> list[str]:
        """dbt's parse, leaving out the runtime vars as its key does (dbt parses again
        what reads vars when --vars change). Its partial parse sits in a folder of this
        project copy's own, whatever the database: it then serves the next process's
        night, and never another copy of the project (a test's, a layer's). Shared, one
        copy's saved YAML state reached another's build: dbt's partial parse carries
        some of it over from the saved state when a YAML file changes."""
        copy = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        folder = self._work_folder() / "parses" / f"{target}-{copy}"
        _, options = self._paths_and_options(target, folder)
        vars_option = _vars_option(dbt_parse.parse_vars(dbt_vars))
        return [*self._flags(), "parse", *options, *vars_option]

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
        env = settings.dbt_env(target)
        # The session limits, and the role the pipeline's own sessions set.
        env["PGOPTIONS"] = settings.options(self.settings.limits) or ""
        # What the parsed project depends on, as for the shipped parse: the target and
        # the vars other than the runtime ones; then the database it is moved to. Another
        # login, host or port (a test's own role, a rotated user) reuses the parse, and
        # another database a copy of it.
        parse_key = (
            str(self.root),
            target,
            tuple(sorted(dbt_parse.parse_inputs(target, dbt_vars).items())),
            self._fingerprint(),
            settings.dbname,
        )
        return env, parse_key

    def parsed_project(self, *, settings: PgSettings, target: str):
        """dbt's parsed project (its Manifest object), as the next call would use it."""
        env, parse_key = self._env_and_key(settings, target, None)
        with _DBT_LOCK, scoped_environ(env):
            parsed, failed = self._manifest(parse_key, env, None)
            self._keep_schemas()
        if parsed is None:
            summary = summarise(failed, self.target_path(target))
            raise_for_failures(summary, "parsing the dbt project")
        return parsed

    def invoke(
        self,
        command: list[str],
        *,
        settings: PgSettings,
        target: str,
        dbt_vars: dict[str, object] | None = None,
    ) -> DbtRun:
        target_path, common = self._paths_and_options(target)
        options = [*common, *_vars_option(dbt_vars)]
        flags = self._flags()
        env, parse_key = self._env_and_key(settings, target, dbt_vars)
        # A parse this process or the layer already held made no target folder here, and
        # dbt given a parsed project writes into it without making it (docs generate).
        target_path.mkdir(parents=True, exist_ok=True)
        with _DBT_LOCK, scoped_environ(env):
            parsed, failed = self._manifest(parse_key, env, dbt_vars)
            if parsed is None:
                return summarise(failed, target_path)
            from dbt.cli.main import dbtRunner

            keep_sessions_per_thread()
            self._tune_dbt()
            node_files.write(self.settings.dbt_verbose)
            errors = ErrorEvents()
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
            self._keep_schemas()
        return summarise(result, target_path, errors.messages)

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
        # The shipped manifest.json names the parse database: this call's only if it is.
        shipped = (
            parse_key in self._shipped_keys and parse_key[-1] == dbt_parse.PARSE_DATABASES[target]
        )
        if not (shipped and dbt_parse.copy_shipped_manifest_json(self.root, target, path)):
            manifest.write(str(path))
        _manifests_written[target_path] = parse_key


def _vars_option(dbt_vars) -> list[str]:
    return ["--vars", json.dumps(dbt_vars)] if dbt_vars else []


def invoke_dbt(dbt: DbtProject, database: Database, command: list[str], **kwargs) -> DbtRun:
    """dbt logs in with its own connections: if the credentials it was given are refused
    (rotated since the pipeline's session opened), re-read them once and run again."""
    run = dbt.invoke(command, settings=database.settings, **kwargs)
    if credentials_refused(run) and database.refresh_credentials():
        run = dbt.invoke(command, settings=database.settings, **kwargs)
    return run
