"""The source freshness gate: a night of the latest business day starts only if the
source is still receiving orders.

``dbt source freshness`` compares each source's newest ``loaded_at_field`` with the
thresholds declared in the sources' YAML (the vars ``freshness_warn_hours`` and
``freshness_error_hours``). Past the error threshold the night stops before anything
is built; past the warning it goes on, and the run report says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dbt_project.dbt_runner.runner import DbtProject, raise_for_failures
from dbt_project.errors import SourceStale
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


def check(source: Database, dbt: DbtProject) -> Freshness:
    """Run ``dbt source freshness``; raise SourceStale past an error threshold."""
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
            + ". Check that the shop is still writing to it; to run anyway, pass "
            '--skip-freshness (or "skip_freshness": true)',
            failures=[a.source for a in stale],
        )
    if any(a.status != "pass" and a.status != "warn" for a in ages):
        raise_for_failures(run, "the source freshness check")
    return Freshness(WARN if any(a.status == "warn" for a in ages) else PASS, ages)
