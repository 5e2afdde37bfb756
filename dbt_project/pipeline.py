"""The nightly job: extract (dbt build + unload) and load, for one night or a plan of
chunks (a backfill, a full refresh).

A ``Pipeline`` is what a night runs on: the source and analytics databases, the stage
between them and the dbt project. The CLI, the demo and the Lambda handlers build one
and call its methods, and nothing deeper.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from dbt_project.dbt_runner import DbtProject, connection_failed, invoke_dbt, raise_for_failures
from dbt_project.errors import ConfigError, DataTestsFailed
from dbt_project.extract import ExtractResult, extract
from dbt_project.facts.names import ANALYTICS_TARGET
from dbt_project.load import LoadResult, load_manifest
from dbt_project.plan import COST, Chunk, CostModel, DayCount, Plan, plan_chunks
from dbt_project.postgres import Database
from dbt_project.postgres.analytics_schema import (
    create_analytics_tables,
    create_roles,
    plan_upgrade,
    set_reader_password,
)
from dbt_project.postgres.logins import create_extract_login, create_load_login
from dbt_project.postgres.schema_plan import SchemaPlan
from dbt_project.postgres.source_schema import (
    create_source_tables,
    day_counts,
    history_bounds,
    load_sample_data,
    source_is_empty,
)
from dbt_project.request import BackfillRequest, NightRequest
from dbt_project.settings import DEFAULT_GZIP_LEVEL
from dbt_project.stage import Stage
from dbt_project.upgrade import (
    REPROCESS_BY_HAND,
    ModelChanges,
    UpgradePlan,
    model_changes,
    record_deployment,
)

ANALYTICS_SELECTOR = "analytics_side"
# After a night: only the days its window's nights wrote, and no test that repeats a
# constraint of the loaded tables (selectors.yml).
NIGHTLY_ANALYTICS_SELECTOR = "analytics_nightly"
SOURCE_HAS_ROWS = "the source tables already hold rows: no sample data was added"
# What `init` says of code it removed from the build schema, where dbt makes none: only
# someone with etl_extract's rights can have put it there.
REMOVED_FROM_BUILD_SCHEMA = "removed code from the build schema that only etl_extract could add"


# The analytics-side test whose rows are volume anomalies (models/analytics).
VOLUME_ANOMALY_TEST = "test.shop.is_empty_volume_anomalies_"


@dataclass
class AnalyticsTests:
    passed: bool
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Tests of severity warn that found rows: the night stands, the report says so.
    warnings: list[str] = field(default_factory=list)
    # Region-days (by measure) outside the usual band: models/analytics/volume_anomalies.
    volume_anomalies: int = 0


@dataclass
class NightResult:
    run_date: date
    extract: ExtractResult
    load: LoadResult
    tests: AnalyticsTests | None
    seconds: float


@dataclass
class InitResult:
    sample_rows: dict[str, int] | None
    views_built: int
    # Why no sample rows were added, when they were asked for.
    sample_note: str | None = None
    # What the analytics tables took to reach the contracts.
    upgrade: SchemaPlan | None = None
    # The marts whose logic changed since the last init, and the reprocessing asked for.
    models: ModelChanges | None = None
    # Code found in the build schema and removed (logins.remove_planted_code).
    removed: list[str] = field(default_factory=list)


@dataclass
class PlannedUpgrade:
    """`etl plan`'s answer, rendered while its connection was open."""

    plan: UpgradePlan
    document: dict
    lines: list[str]


def _tested_window(loads: Sequence[LoadResult]) -> dict[str, object] | None:
    """run_date and lookback_days spanning the loads' nights (the days each wrote carry
    its run date in the ledger's day versions); None (every row) when there is none or
    one of them was a full refresh, which owns every day."""
    if not loads or any(load.full_refresh for load in loads):
        return None
    last = max(load.run_date for load in loads)
    first = min(load.run_date for load in loads)
    return {"run_date": last.isoformat(), "lookback_days": (last - first).days + 1}


def raise_for_analytics(tests: AnalyticsTests | None) -> None:
    if tests is not None and not tests.passed:
        raise DataTestsFailed(
            "the load committed, but data tests on the analytics side failed: "
            + "; ".join(tests.failures)
            + ". Inspect those tables, fix the cause, and re-run the day",
            failures=tests.failures,
        )


@dataclass
class Pipeline:
    """The parts a night runs on. A part a command does not use may be None (``etl
    extract`` has no analytics database); asking for it then says which is missing."""

    dbt: DbtProject | None = None
    source: Database | None = None
    analytics: Database | None = None
    stage: Stage | None = None
    gzip_level: int = DEFAULT_GZIP_LEVEL

    def _part(self, name: str):
        part = getattr(self, name)
        if part is None:
            raise ConfigError(f"this command needs the {name} (none was given)")
        return part

    def extract(self, request: NightRequest) -> ExtractResult:
        return extract(
            request,
            source=self._part("source"),
            stage=self._part("stage"),
            dbt=self._part("dbt"),
            gzip_level=self.gzip_level,
        )

    def load(self, manifest_key: str, *, time_limit_ms: int | None = None) -> LoadResult:
        return load_manifest(
            self._part("analytics").connection(),
            self._part("stage"),
            manifest_key,
            time_limit_ms=time_limit_ms,
        )

    def test_analytics(self, loads: Sequence[LoadResult] = ()) -> AnalyticsTests:
        """The data tests of the analytics side, run against the loaded tables and views:
        after ``loads``, only what their nights wrote; without them, every row."""
        started = time.perf_counter()
        window = _tested_window(loads)
        selector = ANALYTICS_SELECTOR if window is None else NIGHTLY_ANALYTICS_SELECTOR
        run = invoke_dbt(
            self._part("dbt"),
            self._part("analytics"),
            ["test", "--selector", selector],
            target=ANALYTICS_TARGET,
            dbt_vars=window,
        )
        if connection_failed(run):  # not the data's fault: say what it is
            raise_for_failures(run, "the analytics-side dbt tests")
        return AnalyticsTests(
            passed=run.success,
            failures=[str(f) for f in run.failures],
            seconds=time.perf_counter() - started,
            warnings=[str(w) for w in run.warnings],
            volume_anomalies=sum(
                w.rows or 0 for w in run.warnings if w.unique_id.startswith(VOLUME_ANOMALY_TEST)
            ),
        )

    def run_night(
        self,
        request: NightRequest,
        *,
        run_tests: bool = True,
        earlier_loads: Sequence[LoadResult] = (),
    ) -> NightResult:
        """Extract, load and test one night. The tests also cover ``earlier_loads`` (a
        backfill's nights before this one)."""
        started = time.perf_counter()
        extracted = self.extract(request)
        loaded = self.load(extracted.manifest_key)
        tests = None
        if run_tests:
            tests = self.test_analytics([*earlier_loads, loaded])
        return NightResult(
            extracted.run_date, extracted, loaded, tests, time.perf_counter() - started
        )

    def plan(self, request: BackfillRequest, cost: CostModel | None = None) -> Plan:
        """The chunks of ``request``, sized by the orders each day of the source holds
        (``cost``: the measured model unless given). A full refresh starts at the
        source's first business day with an order."""
        conn = self._part("source").connection()
        first = request.first
        if first is None:
            first, _ = history_bounds(conn)
            if first is None or first > request.last:
                raise ConfigError(
                    f"the source has no order on or before {request.last}: nothing to refresh"
                )
        counts, customers = day_counts(conn, first, request.last)
        days = {day: DayCount(*count) for day, count in counts.items()}
        return plan_chunks(request, first, days, customers, cost or COST)

    def run_plan(
        self, plan: Plan, *, run_tests: bool = True, start: int = 0
    ) -> Iterator[tuple[Chunk, NightResult]]:
        """Each chunk from ``start`` on, in order: extract, then load. The analytics tests
        run once, after the last chunk, over what every chunk wrote."""
        loads: list[LoadResult] = []
        for index in range(start, len(plan.chunks)):
            chunk = plan.chunks[index]
            last = index == len(plan.chunks) - 1
            night = self.run_night(chunk.night(), run_tests=run_tests and last, earlier_loads=loads)
            loads.append(night.load)
            yield chunk, night

    def _parsed(self):
        return self._part("dbt").parsed_project(
            settings=self._part("analytics").settings, target=ANALYTICS_TARGET
        )

    def upgrade_plan(self) -> PlannedUpgrade:
        """What `init` (or a deployment) would do to the analytics database; changes nothing."""
        manifest = self._parsed()
        conn = self._part("analytics").connection()
        try:
            with conn.cursor() as cur:
                planned = UpgradePlan(plan_upgrade(cur), model_changes(cur, manifest))
            return PlannedUpgrade(planned, planned.as_dict(conn), planned.lines(conn))
        finally:
            conn.rollback()  # the plan's temporary tables go with it

    def _init_source(self, sample_data, sample_end_date, source_schema):
        source = self._part("source")
        inserted, note = None, None
        conn = source.connection()
        with conn:
            create_source_tables(conn, source_schema)
            if sample_data and source_is_empty(conn, source_schema):
                inserted = load_sample_data(conn, source_schema, end_date=sample_end_date)
            elif sample_data:
                note = SOURCE_HAS_ROWS
            removed = create_extract_login(conn, source.settings.dbname, source_schema)
        return inserted, note, removed

    def init(
        self,
        *,
        sample_data: bool = False,
        sample_end_date: date | None = None,
        source_schema: str = "public",
        reader_password: str | None = None,
        reprocess_started: str = f"not started: run `{REPROCESS_BY_HAND}`",
    ) -> InitResult:
        """Create what is missing on both sides and bring the analytics tables to the
        contracts; never deletes or overwrites operational rows.

        A contract change the tables cannot take without losing data is refused before
        either side is touched. Sample rows go only into a source whose tables are all
        empty, so a real shop's data is never mixed with them; ``sample_end_date``
        moves the sample history to end then. Last, the deployed models are recorded;
        ``reprocess_started`` says how the reprocessing a change of logic asks for is
        started (the caller starts it).
        """
        analytics = self._part("analytics")
        conn = analytics.connection()
        try:
            with conn.cursor() as cur:
                plan_upgrade(cur).raise_if_refused()
        finally:
            conn.rollback()
        inserted, note, removed = self._init_source(sample_data, sample_end_date, source_schema)
        with conn:
            upgrade = create_analytics_tables(conn)
            create_roles(conn, analytics.settings.dbname)
            create_load_login(conn, analytics.settings.dbname)
            if reader_password:
                set_reader_password(conn, reader_password)
        run = invoke_dbt(
            self._part("dbt"),
            analytics,
            ["run", "--select", "path:models/analytics"],
            target=ANALYTICS_TARGET,
        )
        raise_for_failures(run, "building the analytic views")
        manifest = self._parsed()
        with conn, conn.cursor() as cur:
            models = record_deployment(cur, manifest, started=reprocess_started)
        return InitResult(inserted, run.models, note, upgrade, models, removed)
