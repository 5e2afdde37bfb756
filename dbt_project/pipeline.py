"""The nightly job: extract (dbt build + unload) and load, for one day or a range.

The CLI and the Lambda handlers call these functions and nothing deeper.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .contracts import MARTS, contract
from .db import PgSettings, connect
from .dbt_runner import DbtProject, DbtRun, parse_date, raise_for_failures, run_vars
from .errors import ConfigError, CredentialsError, DataTestsFailed
from .load import REQUIRED_TABLES, LoadResult, load_manifest
from .manifest import Manifest, day_prefix, manifest_key
from .source_db import create_source_tables, load_sample_data
from .stage import Stage
from .target_db import create_roles, create_target_tables
from .unload import Relation, unload_table

BUSINESS_TIMEZONE = "Asia/Tokyo"
DEFAULT_LOOKBACK_DAYS = 2
MAX_BACKFILL_DAYS_LAMBDA = 31
EXTRACT_SELECTOR = "extract"
ANALYTICS_SELECTOR = "analytics_side"


class Database:
    """Settings plus one reusable connection; re-reads credentials once if they are refused.

    ``resolve(force)`` returns the settings; with ``force=True`` it must bypass any
    cache (a rotated secret). Warm Lambda invocations keep the connection.
    """

    def __init__(self, resolve: Callable[[bool], PgSettings], *, statement_timeout_ms=None):
        self._resolve = resolve
        self._settings: PgSettings | None = None
        self._conn = None
        self.statement_timeout_ms = statement_timeout_ms

    @classmethod
    def from_settings(cls, settings: PgSettings, **kwargs) -> Database:
        return cls(lambda force: settings, **kwargs)

    @property
    def settings(self) -> PgSettings:
        if self._settings is None:
            self._settings = self._resolve(False)
        return self._settings

    def connection(self):
        if self._conn is not None and not self._conn.closed:
            try:
                with self._conn.cursor() as cur:
                    cur.execute("select 1")
                self._conn.rollback()
                return self._conn
            except Exception:
                self.close()
        try:
            self._conn = connect(self.settings, statement_timeout_ms=self.statement_timeout_ms)
        except CredentialsError:
            fresh = self._resolve(True)
            if fresh == self._settings:
                raise
            self._settings = fresh
            self._conn = connect(fresh, statement_timeout_ms=self.statement_timeout_ms)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


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


def previous_business_day(moment: datetime, tz: str = BUSINESS_TIMEZONE) -> date:
    """The business day before the one ``moment`` falls in (a 02:00 Tokyo run loads yesterday)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(tz)).date() - timedelta(days=1)


def date_range(start: date | str, end: date | str, *, limit: int | None = None) -> list[date]:
    first, last = parse_date(start, "start date"), parse_date(end, "end date")
    if last < first:
        raise ConfigError(f"the range ends ({last}) before it starts ({first}); swap the dates")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if limit is not None and len(days) > limit:
        raise ConfigError(
            f"a backfill of {len(days)} days ({first}..{last}) is over the limit of {limit}; "
            f"split it into ranges of at most {limit} days"
        )
    return days


def _relations(run: DbtRun) -> dict[str, Relation]:
    nodes = json.loads(run.manifest.read_text())["nodes"]
    found = {}
    for node in nodes.values():
        if node.get("resource_type") == "model" and node["name"] in REQUIRED_TABLES:
            found[node["name"]] = Relation(node["schema"], node.get("alias") or node["name"])
    return found


def extract(
    run_date: date | str,
    *,
    source: Database,
    stage: Stage,
    dbt: DbtProject,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> ExtractResult:
    """Build the run window of ``run_date`` on the source, test it, unload it, manifest last."""
    started = time.perf_counter()
    day = parse_date(run_date, "run_date")
    dbt_vars = run_vars(day, lookback_days)
    conn = source.connection()
    with conn.cursor() as cur:
        # Taken before dbt reads anything: every row in the files is at least this fresh.
        cur.execute("select now()")
        (extracted_at,) = cur.fetchone()
    conn.rollback()

    run = dbt.invoke(
        # Unit tests check the model logic at development time, on fixed inputs;
        # a night runs the data tests, which check the data.
        ["build", "--selector", EXTRACT_SELECTOR, "--exclude-resource-type", "unit_test"],
        settings=source.settings,
        target="source",
        dbt_vars=dbt_vars,
    )
    raise_for_failures(run, f"the dbt build for {day}")
    dbt_seconds = time.perf_counter() - started

    unload_started = time.perf_counter()
    artifacts = {
        f"{day_prefix(day)}_dbt/{path.name}": path.read_bytes()
        for path in (run.run_results, run.manifest)
    }
    manifest = unload_night(
        source.connection(),
        _relations(run),
        stage,
        run_date=day,
        lookback_days=lookback_days,
        extracted_at=extracted_at,
        dbt_invocation_id=run.invocation_id,
        artifacts=artifacts,
    )
    files = manifest.files
    key = manifest_key(day)
    return ExtractResult(
        run_id=manifest.run_id,
        run_date=day,
        manifest_key=key,
        rows={f.table: f.rows for f in files},
        bytes=sum(f.bytes for f in files),
        dbt_seconds=dbt_seconds,
        unload_seconds=time.perf_counter() - unload_started,
        seconds=time.perf_counter() - started,
        dbt_invocation_id=run.invocation_id,
    )


def unload_night(
    conn,
    relations: dict[str, Relation],
    stage: Stage,
    *,
    run_date: date,
    lookback_days: int,
    extracted_at: datetime,
    dbt_invocation_id: str | None = None,
    artifacts: dict[str, bytes] | None = None,
) -> Manifest:
    """Unload the five built relations of one night, then write its manifest, last."""
    run_id = str(uuid.uuid4())
    # Files of each run sit in their own folder: a re-run never overwrites the files
    # an earlier manifest (perhaps being loaded right now) points to.
    files_prefix = f"{day_prefix(run_date)}{run_id}/"
    # One snapshot for all five files, and nothing written on the source.
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        files = [
            unload_table(
                conn, relations[name], contract(name), stage, f"{files_prefix}{name}.tsv.gz"
            )
            for name in REQUIRED_TABLES
        ]
    finally:
        # End the snapshot whatever happened (set_session is refused inside a
        # transaction, which would hide the real error); a dead connection has
        # nothing left to reset.
        if not conn.closed:
            conn.rollback()
            conn.set_session(isolation_level="DEFAULT", readonly=False)
    for key, body in (artifacts or {}).items():
        stage.put_bytes(key, body)
    manifest = Manifest(
        run_id=run_id,
        run_date=run_date,
        lookback_days=lookback_days,
        window_start_date=run_date - timedelta(days=lookback_days - 1),
        business_timezone=BUSINESS_TIMEZONE,
        extracted_at=extracted_at,
        dbt_invocation_id=dbt_invocation_id,
        files=files,
        created_at=datetime.now(UTC),
        dbt_artifacts=sorted(artifacts or {}),
    )
    stage.put_bytes(manifest_key(run_date), manifest.to_json())
    return manifest


def load(*, target: Database, stage: Stage, manifest: str) -> LoadResult:
    return load_manifest(target.connection(), stage, manifest)


def test_analytics(*, target: Database, dbt: DbtProject) -> AnalyticsTests:
    """The data tests of the analytics side, run against the loaded tables and views."""
    started = time.perf_counter()
    run = dbt.invoke(
        ["test", "--selector", ANALYTICS_SELECTOR],
        settings=target.settings,
        target="analytics",
    )
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
) -> NightResult:
    started = time.perf_counter()
    extracted = extract(run_date, source=source, stage=stage, dbt=dbt, lookback_days=lookback_days)
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
        )


@dataclass
class InitResult:
    sample_rows: dict[str, int] | None
    views_built: int


def init(
    *,
    source: Database,
    target: Database,
    dbt: DbtProject,
    sample_data: bool = False,
    source_schema: str = "public",
) -> InitResult:
    """Create what is missing on both sides; never deletes or overwrites operational rows."""
    conn = source.connection()
    with conn:
        create_source_tables(conn, source_schema)
        inserted = load_sample_data(conn, source_schema) if sample_data else None
    conn = target.connection()
    with conn:
        create_target_tables(conn)
        create_roles(conn, target.settings.dbname)
    run = dbt.invoke(
        ["run", "--select", "path:models/analytics"],
        settings=target.settings,
        target="analytics",
    )
    raise_for_failures(run, "building the analytic views")
    return InitResult(inserted, run.models)
