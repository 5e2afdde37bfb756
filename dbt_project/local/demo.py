"""``etl demo``: the whole pipeline on the local PostgreSQL and a local stage.

Loads the sample history in one night that owns it all, then replays the last week
night by night, as the nightly schedule would, and shows the analytic views.
"""

from __future__ import annotations

import time
import unicodedata
from datetime import timedelta

from psycopg2 import sql

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import BUSINESS_TIMEZONE, previous_business_day
from dbt_project.facts.roles import READER_ROLE
from dbt_project.local import devdb
from dbt_project.pipeline import Pipeline, raise_for_analytics
from dbt_project.postgres.connection import Database
from dbt_project.postgres.source_schema import history_bounds
from dbt_project.request import NightRequest
from dbt_project.settings import Settings
from dbt_project.stage import LocalStage

EXAMPLE_QUERIES = (
    "SELECT * FROM top_customers LIMIT 10;",
    "SELECT * FROM category_performance;",
    "SELECT * FROM regional_sales_trend WHERE region = '東京' ORDER BY date DESC LIMIT 7;",
    "SELECT * FROM weekly_sales_summary ORDER BY week_start DESC LIMIT 4;",
)
REPLAYED_NIGHTS = 7


def run_example_queries(analytics: Database) -> list[tuple[str, list[str], list[tuple]]]:
    """Run the four queries verbatim, as the read-only reader role would."""
    conn = analytics.connection()
    results = []
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("set role {}").format(sql.Identifier(READER_ROLE)))
            cur.execute("set search_path = analytics")
            for query in EXAMPLE_QUERIES:
                cur.execute(query)
                columns = [d.name for d in cur.description]
                results.append((query, columns, cur.fetchall()))
    finally:
        conn.rollback()
    return results


def format_rows(columns: list[str], rows: list[tuple]) -> str:
    """psql-style aligned text: wide results scroll rather than wrap inside cells."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]

    def width(text: str) -> int:  # CJK characters take two terminal columns
        return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)

    widths = [max([width(c)] + [width(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return " | ".join(v + " " * (w - width(v)) for v, w in zip(values, widths, strict=True))

    out = [line(columns), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} rows)")
    return "\n".join(out)


def run_demo(settings: Settings | None = None) -> int:
    from rich.console import Console

    console = Console(soft_wrap=True)
    started = time.perf_counter()
    with console.status("starting the local PostgreSQL and loading the sample data"):
        # The sample history ends on the last finished business day: every night the
        # demo replays is one the schedule could run.
        dev = devdb.prepare(
            settings, sample_end_date=previous_business_day(business_calendar.utc_now())
        )
    parts = Pipeline(
        dbt=DbtProject(settings=settings),
        source=Database.from_settings(dev.source),
        analytics=Database.from_settings(dev.analytics),
        stage=LocalStage(dev.server.data_dir.parent / "stage" if dev.server.data_dir else "stage"),
    )
    with console.status("creating the analytics tables, ledger, roles and views"):
        parts.init(sample_data=True)
    # The source side of a night runs as etl_extract, which init has just made.
    parts.source = Database.from_settings(devdb.extract_login(dev))
    first, last = history_bounds(parts.source.connection())
    # `etl dev-db` fills the sample up to today, a day that is not over yet.
    last = min(last, previous_business_day(business_calendar.utc_now()))
    history_end = last - timedelta(days=REPLAYED_NIGHTS)
    console.print(f"sample history: {first} .. {last} (business days, {BUSINESS_TIMEZONE})")
    with console.status(f"loading the history up to {history_end} in one night"):
        history = parts.run_night(
            NightRequest(history_end, lookback_days=(history_end - first).days + 1),
            run_tests=False,
        )
    console.print(
        f"history: {history.extract.rows_extracted} rows extracted, "
        f"{history.load.rows_loaded} changed in the analytics database ({history.seconds:.1f}s)"
    )
    nights = [history_end + timedelta(days=i + 1) for i in range(REPLAYED_NIGHTS)]
    night = _replay(console, nights, parts)
    raise_for_analytics(night.tests)
    console.print(f"analytics-side dbt tests passed ({night.tests.seconds:.1f}s)")

    for query, columns, rows in run_example_queries(parts.analytics):
        console.print(f"\n[bold]{query}[/bold]")
        console.print(format_rows(columns, rows), markup=False, highlight=False, soft_wrap=True)

    console.print(f"\n[bold]done in {time.perf_counter() - started:.0f}s.[/bold] Where things are:")
    console.print(f"  source database     psql '{dev.source.url}'")
    console.print(f"  analytics database  psql '{dev.analytics.url}'  (schema analytics)")
    console.print(f"  stage files         {parts.stage.root}/etl-data/")
    console.print(f"  last manifest       {parts.stage.describe(night.extract.manifest_key)}")
    console.print(f"  lineage             {lineage_hint(dev.analytics.url)}", markup=False)
    return 0


def lineage_hint(analytics_url: str) -> str:
    """How to see the lineage after the demo: the README's way, the page the deployed
    load publishes."""
    return f"etl docs --analytics-url '{analytics_url}'  (writes .etl/docs/index.html)"


def _replay(console, nights, parts: Pipeline):
    """The last nights one by one, as the schedule would run them; the last one tests."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]nightly runs"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("nights", total=len(nights))
        for day in nights:
            night = parts.run_night(NightRequest(day), run_tests=day == nights[-1])
            changes = sum(t.inserted + t.updated + t.deleted for t in night.load.tables.values())
            progress.console.print(
                f"  {day}: extracted {night.extract.rows_extracted} rows, {night.load.status}, "
                f"{changes} rows changed, {night.seconds:.1f}s"
            )
            progress.advance(task)
    return night
