"""The nightly job: extract (dbt build + unload) and load, for one day or a range.

The CLI and the Lambda handlers call these functions and nothing deeper.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

import psycopg2
import psycopg2.errors

from .business_calendar import DEFAULT_LOOKBACK_DAYS, date_range, parse_date
from .contracts import MARTS
from .db import Database
from .dbt_runner import DbtProject, DbtRun, credentials_refused, raise_for_failures, run_vars
from .errors import DataTestsFailed, ExtractBusy
from .layout import DBT_ARTIFACTS_FOLDER, day_prefix, manifest_key
from .load import LoadResult, load_manifest
from .logins import create_extract_login, create_load_login
from .settings import DEFAULT_GZIP_LEVEL
from .source_db import create_source_tables, load_sample_data, source_is_empty
from .stage import Stage
from .target_db import create_roles, create_target_tables
from .unload import built_relations, unload_night

EXTRACT_SELECTOR = "extract"
ANALYTICS_SELECTOR = "analytics_side"


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

    @property
    def rows_extracted(self) -> int:
        return sum(self.rows[name] for name in MARTS)


@dataclass
class AnalyticsTests:
    passed: bool
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class NightResult:
    run_date: date
    extract: ExtractResult
    load: LoadResult
    tests: AnalyticsTests | None
    seconds: float


def invoke_dbt(dbt: DbtProject, database: Database, command: list[str], **kwargs) -> DbtRun:
    """dbt logs in with its own connections: if the credentials it was given are refused
    (rotated since the pipeline's session opened), re-read them once and run again."""
    run = dbt.invoke(command, settings=database.settings, **kwargs)
    if credentials_refused(run) and database.refresh_credentials():
        run = dbt.invoke(command, settings=database.settings, **kwargs)
    return run


# Extracts of the same source run one at a time: two dbt builds at once would race on
# the tables they swap in, and two incremental builds of int_customer_days that own the
# same days would each delete them and both insert theirs. Any constant will do.
EXTRACT_LOCK = 0x5E7105E


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


_BUSY = "another extract of this source is running (it holds the extract lock)"


def _source_now(source: Database):
    """Taken before dbt reads anything: every row in the files is at least this fresh."""
    conn = source.connection()
    with conn.cursor() as cur:
        cur.execute("select now()")
        (moment,) = cur.fetchone()
    conn.rollback()
    return moment


def extract(
    run_date: date | str,
    *,
    source: Database,
    stage: Stage,
    dbt: DbtProject,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> ExtractResult:
    """Build the run window of ``run_date`` on the source, test it, unload it, manifest last."""
    started = time.perf_counter()
    day = parse_date(run_date, "run_date")
    dbt_vars = run_vars(day, lookback_days)
    with extract_lock(source):
        return _extract(day, dbt_vars, started, source, stage, dbt, lookback_days, gzip_level)


def _extract(day, dbt_vars, started, source, stage, dbt, lookback_days, gzip_level):
    extracted_at = _source_now(source)
    run = invoke_dbt(
        dbt,
        source,
        # Unit tests check the model logic at development time, on fixed inputs;
        # a night runs the data tests, which check the data.
        ["build", "--selector", EXTRACT_SELECTOR, "--exclude-resource-type", "unit_test"],
        target="source",
        dbt_vars=dbt_vars,
    )
    raise_for_failures(run, f"the dbt build for {day}")
    dbt_seconds = time.perf_counter() - started

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
    )
    return ExtractResult(
        run_id=manifest.run_id,
        run_date=day,
        manifest_key=manifest_key(day),
        rows={f.table: f.rows for f in manifest.files},
        bytes=sum(f.bytes for f in manifest.files),
        dbt_seconds=dbt_seconds,
        unload_seconds=time.perf_counter() - unload_started,
        seconds=time.perf_counter() - started,
        dbt_invocation_id=run.invocation_id,
    )


def load(
    *, target: Database, stage: Stage, manifest: str, time_limit_ms: int | None = None
) -> LoadResult:
    return load_manifest(target.connection(), stage, manifest, time_limit_ms=time_limit_ms)


def test_analytics(*, target: Database, dbt: DbtProject) -> AnalyticsTests:
    """The data tests of the analytics side, run against the loaded tables and views."""
    started = time.perf_counter()
    run = invoke_dbt(dbt, target, ["test", "--selector", ANALYTICS_SELECTOR], target="analytics")
    if credentials_refused(run):  # not the data's fault: say what it is
        raise_for_failures(run, "the analytics-side dbt tests")
    return AnalyticsTests(
        passed=run.success,
        failures=[str(f) for f in run.failures],
        seconds=time.perf_counter() - started,
    )


def raise_for_analytics(tests: AnalyticsTests | None) -> None:
    if tests is not None and not tests.passed:
        raise DataTestsFailed(
            "the load committed, but data tests on the analytics side failed: "
            + "; ".join(tests.failures)
            + ". Inspect those tables, fix the cause, and re-run the day",
            failures=tests.failures,
        )


def run_night(
    run_date: date | str,
    *,
    source: Database,
    target: Database,
    stage: Stage,
    dbt: DbtProject,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    run_tests: bool = True,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> NightResult:
    started = time.perf_counter()
    extracted = extract(
        run_date,
        source=source,
        stage=stage,
        dbt=dbt,
        lookback_days=lookback_days,
        gzip_level=gzip_level,
    )
    loaded = load(target=target, stage=stage, manifest=extracted.manifest_key)
    tests = test_analytics(target=target, dbt=dbt) if run_tests else None
    return NightResult(extracted.run_date, extracted, loaded, tests, time.perf_counter() - started)


def backfill(
    start: date | str,
    end: date | str,
    *,
    source: Database,
    target: Database,
    stage: Stage,
    dbt: DbtProject,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    limit: int | None = None,
    run_tests: bool = True,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> Iterator[NightResult]:
    """Every day in order; the analytics tests run once, after the last day."""
    days = date_range(start, end, limit=limit)
    for index, day in enumerate(days):
        last = index == len(days) - 1
        yield run_night(
            day,
            source=source,
            target=target,
            stage=stage,
            dbt=dbt,
            lookback_days=lookback_days,
            run_tests=run_tests and last,
            gzip_level=gzip_level,
        )


@dataclass
class InitResult:
    sample_rows: dict[str, int] | None
    views_built: int
    # Why no sample rows were added, when they were asked for.
    sample_note: str | None = None


SOURCE_HAS_ROWS = "the source tables already hold rows: no sample data was added"


def init(
    *,
    source: Database,
    target: Database,
    dbt: DbtProject,
    sample_data: bool = False,
    sample_end_date: date | None = None,
    source_schema: str = "public",
) -> InitResult:
    """Create what is missing on both sides; never deletes or overwrites operational rows.

    Sample rows go only into a source whose tables are all empty, so a real shop's data
    is never mixed with them; ``sample_end_date`` moves the sample history to end then.
    """
    inserted, note = None, None
    conn = source.connection()
    with conn:
        create_source_tables(conn, source_schema)
        if sample_data and source_is_empty(conn, source_schema):
            inserted = load_sample_data(conn, source_schema, end_date=sample_end_date)
        elif sample_data:
            note = SOURCE_HAS_ROWS
        create_extract_login(conn, source.settings.dbname, source_schema)
    conn = target.connection()
    with conn:
        create_target_tables(conn)
        create_roles(conn, target.settings.dbname)
        create_load_login(conn, target.settings.dbname)
    run = invoke_dbt(dbt, target, ["run", "--select", "path:models/analytics"], target="analytics")
    raise_for_failures(run, "building the analytic views")
    return InitResult(inserted, run.models, note)
