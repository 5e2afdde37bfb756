"""The source freshness gate: a night of the latest business day starts only if the
source is still receiving orders.

``dbt source freshness`` compares each source's newest ``loaded_at_field`` with the
thresholds declared in the sources' YAML (the vars ``freshness_warn_hours`` and
``freshness_error_hours``). Past the error threshold the night stops before anything
is built; past the warning it goes on, and the run report says so.

A change later than now (plus ``CLOCK_SKEW``) is left out of that check (the sources'
``filter``): one such row would otherwise make the source look fresh for good. Such
changes stop the night as an error of their own: the shop's clock runs ahead, or the
rows were written by no clock, and either needs a person.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from psycopg2 import sql

from dbt_project.dbt_runner.runner import DbtProject, raise_for_failures
from dbt_project.errors import SourceClockAhead, SourceStale
from dbt_project.facts.business_calendar import CLOCK_SKEW
from dbt_project.postgres.connection import Database

PASS, WARN, SKIPPED = "pass", "warn", "skipped"


@dataclass(frozen=True)
class SourceAge:
    source: str
    newest: str | None  # the newest loaded_at value, ISO
    age_hours: float | None
    status: str  # pass, warn, error, runtime error
    warn_after_hours: float | None
    error_after_hours: float | None

    def describe(self) -> str:
        newest = self.newest or "no rows at all"
        age = f", {self.age_hours:.1f} h ago" if self.age_hours is not None else ""
        return (
            f"{self.source}: newest change {newest}{age} (warn after "
            f"{self.warn_after_hours:g} h, stop after {self.error_after_hours:g} h)"
        )


@dataclass(frozen=True)
class Freshness:
    state: str  # pass, warn or skipped
    sources: list[SourceAge] = field(default_factory=list)

    def as_report(self) -> dict:
        return {"state": self.state, "sources": [s.describe() for s in self.sources]}


SKIPPED_FRESHNESS = Freshness(SKIPPED)


def _hours(threshold: dict | None) -> float | None:
    if not threshold or threshold.get("count") is None:
        return None
    per = {"minute": 1 / 60, "hour": 1, "day": 24}
    return threshold["count"] * per[threshold["period"]]


def _ages(sources_json) -> list[SourceAge]:
    found = []
    for result in json.loads(sources_json.read_text())["results"]:
        criteria = result.get("criteria") or {}
        seconds = result.get("max_loaded_at_time_ago_in_s")
        found.append(
            SourceAge(
                source=result["unique_id"].split(".", 2)[-1],
                newest=result.get("max_loaded_at"),
                age_hours=None if seconds is None else seconds / 3600,
                status=result["status"],
                warn_after_hours=_hours(criteria.get("warn_after")),
                error_after_hours=_hours(criteria.get("error_after")),
            )
        )
    return found


_TO_RUN_ANYWAY = 'to run anyway, pass --skip-freshness (or "skip_freshness": true)'


def changes_ahead() -> sql.Composed:
    """Changes of one source later than the database's now plus the clock skew: their
    number, the latest, and now. The loaded_at field is indexed, so this reads only them.

    Placeholders: the table, the field; parameter ``skew``.
    """
    return sql.SQL(
        "select count(*), max({field}), now() from {table} where {field} > now() + %(skew)s"
    )


def _ahead(source: Database, manifest_json: Path, ages: list[SourceAge]) -> list[str]:
    """One line per checked source that holds changes later than now."""
    nodes = json.loads(manifest_json.read_text())["sources"]
    found = []
    conn = source.connection()
    try:
        with conn.cursor() as cur:
            for age in ages:
                # unique_id is source.<package>.<source>.<table>; age.source the last two.
                node = next(n for n in nodes.values() if n["unique_id"].endswith("." + age.source))
                field_name = node.get("loaded_at_field") or node["config"]["loaded_at_field"]
                query = changes_ahead().format(
                    table=sql.Identifier(node["schema"], node["identifier"]),
                    field=sql.Identifier(field_name),
                )
                cur.execute(query, {"skew": CLOCK_SKEW})
                count, latest, now = cur.fetchone()
                if count:
                    hours = (latest - now).total_seconds() / 3600
                    found.append(
                        f"{age.source}: {count} changes later than now (the latest "
                        f"{latest.isoformat()}, {hours:.1f} h ahead of the database's clock; "
                        f"{CLOCK_SKEW.seconds // 60} minutes allowed)"
                    )
    finally:
        conn.rollback()
    return found


def check(source: Database, dbt: DbtProject) -> Freshness:
    """Run ``dbt source freshness``; raise SourceStale past an error threshold, and
    SourceClockAhead for changes later than now."""
    run = dbt.invoke(["source", "freshness"], settings=source.settings, target="source")
    sources_json = run.target_path / "sources.json"
    if not sources_json.exists():
        raise_for_failures(run, "the source freshness check")
    ages = _ages(sources_json)
    stale = [a for a in ages if a.status == "error"]
    if stale:
        raise SourceStale(
            "the source looks stale, so the night was not run: "
            + "; ".join(a.describe() for a in stale)
            + f". Check that the shop is still writing to it; {_TO_RUN_ANYWAY}",
            failures=[a.source for a in stale],
        )
    if any(a.status != "pass" and a.status != "warn" for a in ages):
        raise_for_failures(run, "the source freshness check")
    ahead = _ahead(source, run.manifest, ages)
    if ahead:
        raise SourceClockAhead(
            "the source has changes later than now, so the night was not run: "
            + "; ".join(ahead)
            + f". Set the shop's clock right, or correct those rows; {_TO_RUN_ANYWAY}",
            failures=[line.split(":", 1)[0] for line in ahead],
        )
    return Freshness(WARN if any(a.status == "warn" for a in ages) else PASS, ages)
