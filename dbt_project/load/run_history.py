"""The run history: the kept run reports (``ledger.run_reports``) as a person reads them.

``etl runs`` prints them as a table (or JSON), and the published docs site carries the
last nights as a page beside the lineage, failures first, so analysts see when their
numbers were last refreshed and whether the checks passed.
"""

from __future__ import annotations

import html
from datetime import date, datetime
from pathlib import Path

from psycopg2 import sql

from dbt_project.facts.names import LEDGER_SCHEMA
from dbt_project.facts.stage_layout import RUNS_PAGE_KEY

# A night whose load committed and whose checks passed; any other status is a failure.
PASSED = "loaded"
DEFAULT_NIGHTS = 30
# Beside the lineage page, under the same name locally and in the stage.
PAGE_NAME = Path(RUNS_PAGE_KEY).name
COLUMNS = ("run_date", "status", "trigger", "rows", "dbt_tests", "freshness", "seconds")


def recent_reports(
    conn, *, since: date | None = None, failed_only: bool = False, limit: int = DEFAULT_NIGHTS
) -> list[dict]:
    """The newest ``limit`` reports (one per run), newest night first."""
    filters = [sql.SQL("true")]
    params: list = []
    if since is not None:
        filters.append(sql.SQL("run_date >= %s"))
        params.append(since)
    if failed_only:
        filters.append(sql.SQL("status <> %s"))
        params.append(PASSED)
    query = sql.SQL(
        "select report from {} where {} order by run_date desc, reported_at desc limit %s"
    ).format(sql.Identifier(LEDGER_SCHEMA, "run_reports"), sql.SQL(" and ").join(filters))
    with conn.cursor() as cur:
        cur.execute(query, [*params, limit])
        rows = [row[0] for row in cur.fetchall()]
    conn.rollback()
    return rows


def failures_first(reports: list[dict]) -> list[dict]:
    """Failed nights first, each group newest first (the order ``recent_reports`` gives)."""
    return [r for r in reports if r["status"] != PASSED] + [
        r for r in reports if r["status"] == PASSED
    ]


def _rows(report: dict) -> str:
    """Rows changed per table: ``customer_analytics +3 ~10 -1``."""
    return ", ".join(
        f"{name} +{t['inserted']} ~{t['updated']} -{t['deleted']}"
        for name, t in report["tables"].items()
    )


def _tests(report: dict) -> str:
    source = report["dbt_tests"]["source"]
    analytics = report["dbt_tests"]["analytics"]
    parts = [f"source {', '.join(f'{n} {s}' for s, n in sorted(source.items())) or 'none'}"]
    if analytics:
        failed = len(analytics.get("failures", []))
        parts.append(
            "analytics passed" if analytics.get("passed") else f"analytics {failed} failed"
        )
    return "; ".join(parts)


def _seconds(report: dict) -> float:
    return round(sum(v for v in report["seconds"].values() if v is not None), 1)


def summary(report: dict) -> dict:
    """The columns a person reads, by name."""
    return {
        "run_date": report["run_date"],
        "status": report["status"],
        "trigger": report["trigger"],
        "rows": _rows(report),
        "dbt_tests": _tests(report),
        "freshness": report["freshness"]["state"],
        "seconds": _seconds(report),
    }


def as_text(reports: list[dict]) -> str:
    """One line per night under a header, columns aligned."""
    if not reports:
        return "no run reports match"
    lines = [summary(r) for r in reports]
    names = COLUMNS
    widths = {n: max(len(n), *(len(str(line[n])) for line in lines)) for n in names}
    header = "  ".join(n.ljust(widths[n]) for n in names).rstrip()
    body = ["  ".join(str(line[n]).ljust(widths[n]) for n in names).rstrip() for line in lines]
    return "\n".join([header, *body])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shop-etl run history</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
tr.failed td {{ background: #fde2e2; }}
</style></head>
<body>
<h1>Run history</h1>
<p>The last {count} nights loaded into the analytics database, failures first
(generated {generated}). <a href="index.html">Lineage</a></p>
<table id="runs">
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body></html>
"""


def as_html(reports: list[dict], generated: str) -> str:
    """A self-contained page of the nights, failures first; every value escaped."""
    ordered = failures_first(reports)
    names = COLUMNS
    rows = []
    for report in ordered:
        line = summary(report)
        kind = "failed" if report["status"] != PASSED else "passed"
        cells = "".join(f'<td class="{n}">{html.escape(str(line[n]))}</td>' for n in names)
        rows.append(f'<tr class="{kind}">{cells}</tr>')
    return _PAGE.format(
        count=len(ordered),
        generated=html.escape(generated),
        head="".join(f"<th>{html.escape(n)}</th>" for n in names),
        rows="\n".join(rows),
    )


def write_page(conn, path: Path, now: datetime) -> Path:
    """The run-history page of the last nights, at ``path``."""
    page = as_html(recent_reports(conn), generated=now.isoformat(timespec="minutes"))
    path.write_text(page, encoding="utf-8")
    return path
