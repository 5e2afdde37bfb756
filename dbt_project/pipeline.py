"""The nightly job: extract (dbt build + unload) and load, for one day or a range.

The CLI and the Lambda handlers call these functions and nothing deeper.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from .business_calendar import DEFAULT_LOOKBACK_DAYS, date_range
from .db import Database
from .dbt_runner import DbtProject, credentials_refused, raise_for_failures
from .errors import DataTestsFailed
from .extract import ExtractResult, extract, invoke_dbt
from .load import LoadResult, load_manifest
from .logins import create_extract_login, create_load_login
from .settings import DEFAULT_GZIP_LEVEL
from .source_db import create_source_tables, load_sample_data, source_is_empty
from .stage import Stage
from .target_db import create_roles, create_target_tables, set_reader_password

ANALYTICS_SELECTOR = "analytics_side"
# After a night: only the days its window's nights wrote, and no test that repeats a
# constraint of the loaded tables (selectors.yml).
NIGHTLY_ANALYTICS_SELECTOR = "analytics_nightly"


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


def load(
    *, target: Database, stage: Stage, manifest: str, time_limit_ms: int | None = None
) -> LoadResult:
    return load_manifest(target.connection(), stage, manifest, time_limit_ms=time_limit_ms)


def _tested_window(loads: Sequence[LoadResult]) -> dict[str, object] | None:
    """run_date and lookback_days spanning the loads' nights (the days each wrote carry
    its run date in etl.day_versions); None (every row) when there is none or one of
    them was a full refresh, which owns every day."""
    if not loads or any(load.full_refresh for load in loads):
        return None
    last = max(load.run_date for load in loads)
    first = min(load.run_date for load in loads)
    return {"run_date": last.isoformat(), "lookback_days": (last - first).days + 1}


def test_analytics(
    *, target: Database, dbt: DbtProject, loads: Sequence[LoadResult] = ()
) -> AnalyticsTests:
    """The data tests of the analytics side, run against the loaded tables and views:
    after ``loads``, only what their nights wrote; without them, every row."""
    started = time.perf_counter()
    window = _tested_window(loads)
    selector = ANALYTICS_SELECTOR if window is None else NIGHTLY_ANALYTICS_SELECTOR
    run = invoke_dbt(
        dbt, target, ["test", "--selector", selector], target="analytics", dbt_vars=window
    )
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
    earlier_loads: Sequence[LoadResult] = (),
    **extract_options,
) -> NightResult:
    """Extract, load and test one day; ``extract_options`` go to ``extract`` (trigger,
    freshness_gate, full_refresh). The tests also cover ``earlier_loads`` (a backfill's
    nights before this one)."""
    started = time.perf_counter()
    extracted = extract(
        run_date,
        source=source,
        stage=stage,
        dbt=dbt,
        lookback_days=lookback_days,
        gzip_level=gzip_level,
        **extract_options,
    )
    loaded = load(target=target, stage=stage, manifest=extracted.manifest_key)
    tests = None
    if run_tests:
        tests = test_analytics(target=target, dbt=dbt, loads=[*earlier_loads, loaded])
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
    loads: list[LoadResult] = []
    for index, day in enumerate(days):
        last = index == len(days) - 1
        night = run_night(
            day,
            source=source,
            target=target,
            stage=stage,
            dbt=dbt,
            lookback_days=lookback_days,
            run_tests=run_tests and last,
            gzip_level=gzip_level,
            earlier_loads=loads,
        )
        loads.append(night.load)
        yield night


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
    reader_password: str | None = None,
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
        if reader_password:
            set_reader_password(conn, reader_password)
    run = invoke_dbt(dbt, target, ["run", "--select", "path:models/analytics"], target="analytics")
    raise_for_failures(run, "building the analytic views")
    return InitResult(inserted, run.models, note)
