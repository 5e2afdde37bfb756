"""The cases: what is measured against what, at which sizes, and the targets.

Every measurement runs in a fresh child process (``bench.child``), so its time and
peak memory are its own; this driver only prepares data with SQL and compares. (At the
smoke test's tiny size the children that import dbt are forked from a process that
has imported it: ``Sizes.fork_dbt_children``.)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dbt_project.contract.ownership import required_tables
from dbt_project.extract.unload import Relation, unload_night
from dbt_project.facts.stage_layout import manifest_key
from dbt_project.postgres.analytics_schema import create_analytics_tables
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.postgres.source_schema import (
    create_source_tables,
    history_bounds,
    load_sample_data,
)
from dbt_project.stage import LocalStage

from . import child
from .analytics_cases import case_cold, case_night, case_queries
from .data import Night, ShopHistory, build_night, build_shop, prepare_target
from .report import Row, at_least, memory_below, seconds_at_most, time_at_most
from .reprocess_cases import case_reprocess
from .server import Databases, pg_server

CASES = ("load", "unload", "memory", "history", "dbt", "night", "queries", "cold", "reprocess")
# Without --case, every case but reprocess, which generates and rebuilds histories of
# a year (about 5 minutes at the quick sizes): `--case reprocess` runs it.
DEFAULT_CASES = CASES[:-1]
MEMORY_LIMIT_MB = 200
MEMORY_GROWTH = 1.10


@dataclass(frozen=True)
class Sizes:
    load_customers: int
    row_by_row_sample: int
    unload_customers: int
    memory_customers: tuple[int, int]
    history_days: tuple[int, int]
    orders_per_day: int
    shop_customers: int
    repeats: int
    # Extracts timed after the first in the same process (dbt imported, parsed once);
    # the fastest counts. 0: time the first, cold one.
    warm_extracts: int = 2
    # Case 6: whole nights over these histories (days); case 7: analytics databases of
    # these many customers, with this many days of the day marts.
    night_days: tuple[int, int] = (60, 300)
    # Rounds of case 6's nights: a night's time moves by a tenth between runs.
    night_repeats: int = 5
    query_customers: tuple[int, int] = (250_000, 1_000_000)
    query_days: int = 300
    # Case 9: a year's backfill at the size (its nights timed on a sample, the
    # rest extrapolated), and a history load in at least this many chunks.
    reprocess_days: int = 365
    reprocess_orders_per_day: int = 4_000
    reprocess_customers: int = 200_000
    reprocess_night_sample: int = 10
    reprocess_history_chunks: int = 4
    reprocess_history_orders_per_day: int = 4_000
    reprocess_history_customers: int = 200_000
    # Children that import dbt forked from a process that has (``child.forking``): only
    # where nothing is timed, since a fork skips the import a cold start pays.
    fork_dbt_children: bool = False


QUICK = Sizes(
    load_customers=200_000,
    row_by_row_sample=5_000,
    unload_customers=800_000,
    memory_customers=(200_000, 800_000),
    history_days=(30, 300),
    orders_per_day=4_000,
    shop_customers=50_000,
    repeats=2,
)
FULL = Sizes(
    load_customers=1_000_000,
    row_by_row_sample=20_000,
    unload_customers=4_000_000,
    memory_customers=(1_000_000, 4_000_000),
    history_days=(30, 300),
    orders_per_day=10_000,
    shop_customers=200_000,
    repeats=3,
    # About 6M orders: 365 days of 16,000.
    reprocess_history_orders_per_day=16_000,
    reprocess_history_customers=800_000,
)
# Only for the smoke test: the machinery end to end in seconds; the numbers mean nothing.
TINY = Sizes(
    load_customers=2_000,
    row_by_row_sample=200,
    unload_customers=2_000,
    memory_customers=(1_000, 2_000),
    history_days=(3, 6),
    orders_per_day=40,
    shop_customers=200,
    repeats=1,
    warm_extracts=0,
    night_days=(3, 6),
    night_repeats=1,
    query_customers=(1_000, 2_000),
    query_days=10,
    reprocess_days=8,
    reprocess_orders_per_day=40,
    reprocess_customers=200,
    reprocess_night_sample=2,
    reprocess_history_orders_per_day=40,
    # Few customers, as at the real sizes: counting them fits in a quarter's budget.
    reprocess_history_customers=20,
    fork_dbt_children=True,
)


@dataclass
class Context:
    sizes: Sizes
    databases: Databases
    scratch: Path
    progress: Callable[[str], None]
    _source: PgSettings | None = None
    _target: PgSettings | None = None
    _nights: dict[int, str] = field(default_factory=dict)
    _manifests: dict[int, Path] = field(default_factory=dict)

    @property
    def source(self) -> PgSettings:
        """Holds the nights as dbt would have built them, one schema per size."""
        if self._source is None:
            self._source = self.databases.new("marts")
        return self._source

    @property
    def target(self) -> PgSettings:
        if self._target is None:
            self._target = self.databases.new("analytics")
            with _connection(self._target) as conn, conn:
                create_analytics_tables(conn)
        return self._target

    def night_schema(self, night: Night) -> str:
        if night.customers not in self._nights:
            schema = f"night_{night.customers}"
            self.progress(f"generating a night of {night.customers:,} customers")
            with _connection(self.source) as conn:
                build_night(conn, schema, night)
            self._nights[night.customers] = schema
        return self._nights[night.customers]

    def staged_night(self, night: Night) -> Path:
        """A stage folder holding the night's files and manifest, as the extract leaves it."""
        if night.customers not in self._manifests:
            schema = self.night_schema(night)
            folder = self.scratch / f"stage-{night.customers}"
            with _connection(self.source) as conn:
                unload_night(
                    conn,
                    {name: Relation(schema, name) for name in required_tables()},
                    LocalStage(folder),
                    run_date=night.run_date,
                    lookback_days=night.lookback_days,
                    extracted_at=night.extracted_at,
                )
            self._manifests[night.customers] = folder
        return self._manifests[night.customers]

    def reset_target(self, night: Night, scenario: str) -> None:
        with _connection(self.target) as conn:
            prepare_target(conn, night, scenario)


@contextmanager
def _connection(settings: PgSettings):
    conn = connect(settings)
    try:
        yield conn
    finally:
        conn.close()


class BenchError(RuntimeError):
    """A measurement did not do the work it claims to measure."""


@dataclass(frozen=True)
class Task:
    """One way of doing the work: a task of ``bench.tasks``, and how to reset before it."""

    name: str
    params: dict
    before: Callable[[], None] = lambda: None
    # Slow references run once; the others in every round.
    once: bool = False


def _interleaved(repeats: int, tasks: dict[str, Task]) -> dict[str, child.Measurement]:
    """The fastest run of each task over ``repeats`` rounds, the tasks alternating.

    Alternating keeps a project run and its reference under the same conditions on
    a machine whose load changes; the fastest run is the least disturbed one.
    """
    best: dict[str, child.Measurement] = {}
    for round_number in range(max(1, repeats)):
        for label, task in tasks.items():
            if task.once and round_number:
                continue
            task.before()
            measured = child.run(task.name, **task.params)
            if label not in best or measured.seconds < best[label].seconds:
                best[label] = measured
    return best


# -- case 1 ----------------------------------------------------------------------------

# (scenario, label): see data.SCENARIOS for what the analytics tables hold before the load.
_LOAD_SCENARIOS = (
    ("changed", "all rows conflict, all changed"),
    ("half_new", "half new, half changed"),
    ("unchanged", "all rows conflict, none changed"),
)


def _check_project_load(measured: child.Measurement, night: Night, scenario: str) -> None:
    loaded = measured.extra["tables"]["customer_analytics"]
    expected = {
        "changed": {"inserted": 0, "updated": night.customers, "deleted": night.removed},
        "half_new": {"inserted": (night.customers + 1) // 2, "updated": night.customers // 2},
        # A re-run of the same day: no number differs, but every row's version moves on.
        "unchanged": {"inserted": 0, "updated": night.customers, "deleted": 0},
        "empty": {"inserted": night.customers, "updated": 0},
    }[scenario]
    found = {key: loaded[key] for key in expected}
    if measured.extra["status"] != "loaded" or found != expected:
        raise BenchError(
            f"the project's load of scenario {scenario} did {found}, expected {expected}"
        )


def case_load(ctx: Context) -> Iterator[Row]:
    night = Night(ctx.sizes.load_customers)
    stage = ctx.staged_night(night)
    source = {"target": ctx.target.url, "source": ctx.source.url, "schema": ctx.night_schema(night)}
    files = {
        "target": ctx.target.url,
        "stage": str(stage),
        "manifest": manifest_key(night.run_date),
    }
    references = {
        "ref (a) COPY + upsert SQL, no checks": (
            Task("load_copy_upsert", files),
            at_least(0.9),
            "same .gz files, no verification",
        ),
        "ref (b) execute_values, 1000/page": (
            Task("load_execute_values", source, once=True),
            at_least(4),
            "rows already in Python",
        ),
        "ref (c) executemany, row by row": (
            Task("load_row_by_row", {**source, "sample": ctx.sizes.row_by_row_sample}, once=True),
            at_least(20),
            "extrapolated from a {sample_rows:,}-row sample",
        ),
    }
    for scenario, description in _LOAD_SCENARIOS:
        ctx.progress(f"load: {description}")

        def reset(scenario=scenario):
            ctx.reset_target(night, scenario)

        tasks = {"project": Task("load_project", files, reset)}
        for name, (task, _, _) in references.items():
            # With nothing changed only the plain upsert is worth showing beside the project.
            if scenario != "unchanged" or not task.once:
                tasks[name] = Task(task.name, task.params, reset, task.once)
        measured = _interleaved(ctx.sizes.repeats, tasks)
        project = measured.pop("project")
        _check_project_load(project, night, scenario)
        yield Row(
            f"1 load, {description}: project",
            project.rows,
            project.seconds,
            project.peak_mb,
            note="files verified, versions, deletes, upsert; one transaction",
        )
        for name, result in measured.items():
            if result.rows != night.mart_rows:
                raise BenchError(f"{name} upserted {result.rows} of {night.mart_rows} rows")
            _, target_ratio, note = references[name]
            yield Row(
                f"1 load, {description}: {name}",
                result.rows,
                result.seconds,
                result.peak_mb,
                ratio=project.rate / result.rate,
                # With nothing changed the project skips the writes: shown, not judged.
                target=target_ratio if scenario != "unchanged" else None,
                note=note.format(**result.extra),
            )


# -- case 2 ----------------------------------------------------------------------------


def _unload_task(ctx: Context, night: Night, label: str) -> Task:
    folder = ctx.scratch / f"unload-{night.customers}-{label}"
    return Task(
        "unload_project",
        {
            "source": ctx.source.url,
            "schema": ctx.night_schema(night),
            "stage": str(folder),
            "run_date": night.run_date.isoformat(),
            "lookback_days": night.lookback_days,
            "extracted_at": night.extracted_at.isoformat(),
        },
        before=lambda: shutil.rmtree(folder, ignore_errors=True),
    )


def case_unload(ctx: Context) -> Iterator[Row]:
    night = Night(ctx.sizes.unload_customers)
    schema = ctx.night_schema(night)
    ctx.progress("unload")
    measured = _interleaved(
        ctx.sizes.repeats,
        {
            "project": _unload_task(ctx, night, "case2"),
            "plain": Task("unload_copy_discard", {"source": ctx.source.url, "schema": schema}),
        },
    )
    project, plain = measured["project"], measured["plain"]
    if plain.rows != project.rows:
        raise BenchError(f"the reference unloaded {plain.rows} rows, the project {project.rows}")
    yield Row(
        "2 unload: project (COPY → gzip 1 → SHA-256 → stage, manifest)",
        project.rows,
        project.seconds,
        project.peak_mb,
        note=f"{project.extra['bytes'] / 1e6:.0f} MB of gzip written",
    )
    yield Row(
        "2 unload: plain COPY TO STDOUT, discarded",
        plain.rows,
        plain.seconds,
        plain.peak_mb,
        ratio=project.rate / plain.rate,
        target=at_least(0.7),
    )


# -- case 3 ----------------------------------------------------------------------------


def case_memory(ctx: Context) -> Iterator[Row]:
    small, large = (Night(n) for n in ctx.sizes.memory_customers)
    for operation in ("unload", "load"):
        measured = []
        for night in (small, large):
            ctx.progress(f"memory: {operation} of {night.customers:,} customers")
            if operation == "unload":
                task = _unload_task(ctx, night, "case3")
            else:
                files = {
                    "target": ctx.target.url,
                    "stage": str(ctx.staged_night(night)),
                    "manifest": manifest_key(night.run_date),
                }
                task = Task(
                    "load_project", files, lambda night=night: ctx.reset_target(night, "empty")
                )
            task.before()
            result = child.run(task.name, **task.params)
            if operation == "load":
                _check_project_load(result, night, "empty")
            measured.append((night, result))
        (_, first), (_, second) = measured
        for index, (night, result) in enumerate(measured):
            yield Row(
                f"3 memory: {operation}, {night.customers:,} customers (fresh process)",
                result.rows,
                result.seconds,
                result.peak_mb,
                ratio=second.peak_mb / first.peak_mb if index else None,
                target=memory_below(MEMORY_LIMIT_MB, MEMORY_GROWTH if index else None),
                note="ratio: peak ÷ peak of the smaller" if index else "",
            )


# -- case 4 ----------------------------------------------------------------------------


def _dbt_split(call: dict) -> str:
    other = max(0.0, call["dbt_seconds"] - call["parse"] - call["run"])
    return (
        f"parse {call['parse']:.2f} + run {call['run']:.2f} + other {other:.2f} s; "
        f"node time ({call['threads']:.0f} threads): models {call['model']:.2f}, tests on marts "
        f"{call['test'] + call['unit_test']:.2f}, tests on sources/staging "
        f"{call['staging_test']:.2f} s; {call['nodes']:.0f} nodes"
    )


def _slowest(call: dict) -> list[str]:
    return [f"{seconds:6.2f} s  {name}" for name, seconds in call["slowest"]]


def case_history(ctx: Context) -> Iterator[Row]:
    shops = []
    for days in ctx.sizes.history_days:
        shop = ShopHistory(
            days=days,
            orders_per_day=ctx.sizes.orders_per_day,
            customers=ctx.sizes.shop_customers,
        )
        ctx.progress(f"history: generating {days} days of {shop.orders_per_day:,} orders a day")
        source = ctx.databases.new(f"shop{days}d")
        with _connection(source) as conn:
            counts = build_shop(conn, shop)
        shops.append((days, shop, source, counts))
    # The sizes take turns, twice (once in the smoke test), so that both see the same
    # machine; the fastest warm call of each counts.
    calls: dict[int, list] = {days: [] for days, *_ in shops}
    measured_by_days: dict[int, child.Measurement] = {}
    for _ in range(min(2, ctx.sizes.repeats)):
        for days, shop, source, _counts in shops:
            ctx.progress(f"history: extract of {shop.last_day} over {days} days")
            day = shop.last_day.isoformat()
            measured = child.run(
                "extract_calls",
                source=ctx.databases.extract_login(source).url,
                stage=str(ctx.scratch / f"history-{days}"),
                days=[day] * (1 + ctx.sizes.warm_extracts),
                lookback_days=2,
            )
            calls[days] += measured.extra["calls"]
            measured_by_days.setdefault(days, measured)
    results = [(days, counts, measured_by_days[days], calls[days]) for days, _, _, counts in shops]
    timed = []
    for days, counts, measured, made in results:
        # The first call of the first round built the incremental state: cold.
        warm = min(made[1:] or made[:1], key=lambda call: call["seconds"])
        timed.append((days, counts, measured, made[0], warm))
    reference = timed[0][4]["seconds"]
    state = "warm" if ctx.sizes.warm_extracts else "cold"
    for index, (days, counts, measured, cold, warm) in enumerate(timed):
        yield Row(
            f"4 history: extract of one day, {days}-day history ({state})",
            warm["rows"],
            warm["seconds"],
            measured.peak_mb,
            ratio=warm["seconds"] / reference if index else None,
            target=time_at_most(1.5) if index else None,
            note=(
                f"{counts['orders']:,} orders; dbt {warm['dbt_seconds']:.2f} s "
                f"({_dbt_split(warm)}), unload {warm['unload_seconds']:.2f} s; "
                f"cold extract {cold['seconds']:.2f} s"
            ),
            details=_slowest(warm),
        )


# -- case 5 ----------------------------------------------------------------------------


def case_dbt(ctx: Context) -> Iterator[Row]:
    ctx.progress("dbt: sample data, cold and warm extracts")
    source = ctx.databases.new("sample")
    with _connection(source) as conn:
        with conn:
            create_source_tables(conn)
            load_sample_data(conn)
        _, last_day = history_bounds(conn)
    day = last_day - timedelta(days=1)
    # Two new days in turn, each a change of vars (the second one has no orders yet).
    following_days = [last_day.isoformat(), (last_day + timedelta(days=1)).isoformat()]
    measured = child.run(
        "extract_calls",
        source=ctx.databases.extract_login(source).url,
        stage=str(ctx.scratch / "sample"),
        days=[day.isoformat()] * 3 + following_days,
        lookback_days=1,
    )
    cold, *again = measured.extra["calls"][:3]
    warm = min(again, key=lambda call: call["seconds"])
    following = min(measured.extra["calls"][3:], key=lambda call: call["seconds"])
    imported = measured.extra["import_seconds"]
    cold_seconds = imported + cold["dbt_seconds"]
    yield Row(
        "5 dbt: cold, fresh process (import dbt + first build)",
        None,
        cold_seconds,
        measured.peak_mb,
        note=f"import {imported:.2f} + {_dbt_split(cold)}",
    )
    for call, name in (
        (warm, "same day, best of 2"),
        (following, "a new day: vars change, best of 2"),
    ):
        yield Row(
            f"5 dbt: warm, next call in the process ({name})",
            None,
            call["dbt_seconds"],
            None,
            ratio=call["dbt_seconds"] / cold_seconds,
            target=seconds_at_most(1.5),
            note=_dbt_split(call),
            details=_slowest(call),
        )


CASE_FUNCTIONS = {
    "load": case_load,
    "unload": case_unload,
    "memory": case_memory,
    "history": case_history,
    "dbt": case_dbt,
    "night": case_night,
    "queries": case_queries,
    "cold": case_cold,
    "reprocess": case_reprocess,
}


def run(
    sizes: Sizes,
    *,
    cases: tuple[str, ...] = DEFAULT_CASES,
    server_url: str | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> list[Row]:
    """Run ``cases`` at ``sizes`` on a fresh set of databases; returns the table's rows."""
    scratch = Path(tempfile.mkdtemp(prefix="etlbench-"))
    rows: list[Row] = []
    try:
        with (
            pg_server(server_url) as server,
            Databases(server) as databases,
            child.forking() if sizes.fork_dbt_children else nullcontext(),
        ):
            ctx = Context(sizes, databases, scratch, progress)
            for name in cases:
                rows.extend(CASE_FUNCTIONS[name](ctx))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows
