"""The extract: build one night's window on the source with dbt, test it, unload it,
write the manifest last. One extract of a source at a time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import psycopg2
import psycopg2.errors

from dbt_project.contract.manifest import ExtractFacts
from dbt_project.contract.ownership import marts
from dbt_project.dbt_runner import freshness
from dbt_project.dbt_runner.runner import DbtProject, invoke_dbt, raise_for_failures, run_vars
from dbt_project.errors import ConfigError, ExtractBusy
from dbt_project.extract import history_build, source_columns
from dbt_project.extract.unload import built_relations, unload_night
from dbt_project.facts.names import SOURCE_TARGET
from dbt_project.facts.stage_layout import DBT_ARTIFACTS_FOLDER, day_prefix, manifest_key
from dbt_project.postgres.connection import Database
from dbt_project.postgres.logins import run_as_extract_login
from dbt_project.postgres.source_schema import history_bounds
from dbt_project.request import NightRequest, latest_night
from dbt_project.settings import DEFAULT_GZIP_LEVEL
from dbt_project.stage import Stage

EXTRACT_SELECTOR = "extract"
# Extracts of the same source run one at a time: two dbt builds at once would race on
# the tables they swap in, and two incremental builds of int_customer_days (or
# int_customer_settled) that own the same days would each delete them and both insert
# theirs. Any constant will do.
EXTRACT_LOCK = 0x5E7105E
_BUSY = "another extract of this source is running (it holds the extract lock)"


@dataclass
class ExtractResult:
    run_id: str
    run_date: date
    manifest_key: str
    rows: dict[str, int]
    bytes: int
    dbt_seconds: float
    unload_seconds: float
    seconds: float
    dbt_invocation_id: str | None
    trigger: str = "manual"
    freshness: freshness.Freshness = field(default_factory=lambda: freshness.SKIPPED_FRESHNESS)
    dbt_tests: dict[str, int] = field(default_factory=dict)
    full_refresh: bool = False

    @property
    def rows_extracted(self) -> int:
        return sum(self.rows[name] for name in marts())


@contextmanager
def extract_lock(source: Database, *, wait: bool = True) -> Iterator[None]:
    """Hold the source's extract lock for a block (a session lock: it outlives the
    block's transactions and ends with the session if the process dies).

    Waiting is bounded by the session's lock_timeout; ``wait=False`` refuses at once.
    """
    conn = source.connection()
    try:
        with conn.cursor() as cur:
            if wait:
                cur.execute("select pg_advisory_lock(%s), true", (EXTRACT_LOCK,))
            else:
                cur.execute("select null, pg_try_advisory_lock(%s)", (EXTRACT_LOCK,))
            taken = cur.fetchone()[1]
    except psycopg2.errors.LockNotAvailable as exc:
        conn.rollback()
        raise ExtractBusy(_BUSY + " and it did not finish within the lock timeout") from exc
    conn.rollback()  # the lock is the session's: ending the transaction keeps it
    if not taken:
        raise ExtractBusy(_BUSY)
    try:
        yield
    finally:
        _unlock(conn)


def _unlock(conn) -> None:
    # A session lost mid-run took its lock with it; say nothing that would hide why.
    try:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (EXTRACT_LOCK,))
        conn.rollback()
    except psycopg2.Error:
        pass


def _source_now(source: Database):
    """Taken before dbt reads anything: every row in the files is at least this fresh."""
    conn = source.connection()
    with conn.cursor() as cur:
        cur.execute("select now()")
        (moment,) = cur.fetchone()
    conn.rollback()
    return moment


def _test_counts(run_results: Path) -> dict[str, int]:
    """The build's data tests by status."""
    counts: dict[str, int] = {}
    for result in json.loads(run_results.read_text())["results"]:
        if result["unique_id"].startswith("test."):
            counts[result["status"]] = counts.get(result["status"], 0) + 1
    return counts


def full_history_lookback(source: Database, run_date: date) -> int:
    """The lookback that makes ``run_date``'s window the source's whole history."""
    first, _ = history_bounds(source.connection())
    if first is None or first > run_date:
        raise ConfigError(f"the source has no order on or before {run_date}: nothing to refresh")
    return (run_date - first).days + 1


def extract(
    request: NightRequest,
    *,
    source: Database,
    stage: Stage,
    dbt: DbtProject,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> ExtractResult:
    """Build the run window of ``request``'s night on the source, test it, unload it,
    manifest last.

    Its freshness gate first checks that the source still receives orders (the latest
    night only). A full refresh rebuilds the incremental state from the whole history up
    to its run date and owns every day and customer; it refuses at once if another
    extract is running. A night that would leave a hole in a history still being
    rebuilt (``history_build``) is refused. It runs as etl_extract or not at all
    (``run_as_extract_login``), before anything else.
    """
    started = time.perf_counter()
    run_as_extract_login(source)
    with extract_lock(source, wait=not request.full_refresh):
        # A column a model reads, dropped or renamed in the source, stops the night first.
        source_columns.check(
            source.connection(), dbt.parsed_project(settings=source.settings, target=SOURCE_TARGET)
        )
        gate = request.freshness_gate
        fresh = freshness.check(source, dbt) if gate else freshness.SKIPPED_FRESHNESS
        if request.full_refresh:
            lookback = full_history_lookback(source, request.run_date)
            request = replace(request, lookback_days=lookback)
        run_vars(request.run_date, request.lookback_days)  # checked before anything is built
        history_build.check(source.connection(), request, latest=latest_night())
        result = _build_and_unload(request, fresh, source, stage, dbt, gzip_level)
        history_build.record(source.connection(), request)
    result.seconds = time.perf_counter() - started
    return result


def _build_and_unload(request, fresh, source, stage, dbt, gzip_level) -> ExtractResult:
    started = time.perf_counter()
    day, lookback_days = request.run_date, request.lookback_days
    extracted_at = _source_now(source)
    command = ["build", "--selector", EXTRACT_SELECTOR, "--exclude-resource-type", "unit_test"]
    # Unit tests check the model logic at development time, on fixed inputs; a night
    # runs the data tests, which check the data.
    run = invoke_dbt(
        dbt,
        source,
        command + (["--full-refresh"] if request.full_refresh else []),
        target=SOURCE_TARGET,
        dbt_vars=run_vars(day, lookback_days, owned_customers=str(request.customers)),
    )
    source_columns.raise_for_missing_column(run.failures)
    raise_for_failures(run, f"the dbt build for {day}")
    dbt_seconds = time.perf_counter() - started
    tests = _test_counts(run.run_results)
    unload_started = time.perf_counter()
    artifacts = {
        f"{day_prefix(day)}{DBT_ARTIFACTS_FOLDER}{path.name}": path.read_bytes()
        for path in (run.run_results, run.manifest)
    }
    manifest = unload_night(
        source.connection(),
        built_relations(run.manifest),
        stage,
        run_date=day,
        lookback_days=lookback_days,
        extracted_at=extracted_at,
        dbt_invocation_id=run.invocation_id,
        artifacts=artifacts,
        gzip_level=gzip_level,
        full_refresh=request.full_refresh,
        every_customer=request.owns_every_customer,
        facts=lambda: ExtractFacts(
            trigger=str(request.trigger),
            extract_seconds=round(time.perf_counter() - started, 3),
            dbt_tests=tests,
            freshness=fresh.state,
            freshness_sources=[s.describe() for s in fresh.sources],
        ),
    )
    return ExtractResult(
        run_id=manifest.run_id,
        run_date=day,
        manifest_key=manifest_key(day),
        rows={f.table: f.rows for f in manifest.files},
        bytes=sum(f.bytes for f in manifest.files),
        dbt_seconds=dbt_seconds,
        unload_seconds=time.perf_counter() - unload_started,
        seconds=0.0,
        dbt_invocation_id=run.invocation_id,
        trigger=str(request.trigger),
        freshness=fresh,
        dbt_tests=tests,
        full_refresh=request.full_refresh,
    )
