"""Child-process tasks of the reprocess case (see ``reprocess_cases``)."""

from __future__ import annotations

import time
from datetime import date, timedelta

from .analytics_tasks import pipeline


def _timed_plan(parts, plan) -> dict:
    """Every chunk's extract and load (the analytics tests are left to the nights' own
    runs): seconds in all, and per chunk."""
    started = time.perf_counter()
    chunks = []
    for chunk, night in parts.run_plan(plan, run_tests=False):
        chunks.append(
            {
                "days": chunk.days,
                "orders": chunk.orders,
                "estimate": chunk.estimate_seconds,
                "seconds": night.seconds,
                "dbt": night.extract.dbt_seconds,
                "load": night.load.seconds,
                "rows": night.extract.rows_extracted,
            }
        )
    return {"seconds": time.perf_counter() - started, "chunks": chunks}


def backfill_year(
    source: str, extract_source: str, target: str, stage: str, first: str, last: str, sample: int
) -> dict:
    """After the history is loaded (untimed): the range as ``etl backfill`` plans it, then
    ``sample`` single nights spread over it, each a night of the default lookback."""
    from dbt_project.request import BackfillRequest, NightRequest

    parts = pipeline(source, target, stage, extract_source)
    first_day, last_day = date.fromisoformat(first), date.fromisoformat(last)
    history = parts.plan(BackfillRequest.refresh(last_day, budget_minutes=24 * 60))
    list(parts.run_plan(history, run_tests=False))
    plan = parts.plan(BackfillRequest.of(first_day, last_day))
    chunked = _timed_plan(parts, plan)
    span = (last_day - first_day).days
    days = sorted(
        {first_day + timedelta(days=span * n // max(sample - 1, 1)) for n in range(sample)}
    )
    nights = []
    for day in days:
        night = parts.run_night(NightRequest(day), run_tests=False)
        nights.append({"day": day.isoformat(), "seconds": night.seconds})
    return {
        "rows": sum(chunk["rows"] for chunk in chunked["chunks"]),
        "seconds": chunked["seconds"],
        "chunks": chunked["chunks"],
        "nights": nights,
        "days": span + 1,
    }


def history_load(
    source: str,
    extract_source: str,
    whole_target: str,
    chunked_target: str,
    stage: str,
    last: str,
    chunks: int,
    customers: int,
) -> dict:
    """The whole history rebuilt from nothing twice, into empty analytics databases: in
    one night, and in chunks of about 1/``chunks`` of its orders each (the budget is the
    estimate of that share, or of the last chunk's least: one day with every one of the
    ``customers`` counted, if that is more)."""
    from dbt_project.plan import COST
    from dbt_project.request import BackfillRequest, NightRequest

    last_day = date.fromisoformat(last)
    whole_parts = pipeline(source, whole_target, stage, extract_source)
    chunked_parts = pipeline(source, chunked_target, stage, extract_source)
    # dbt imported and parsed, as in a warm Lambda: neither run pays it.
    whole_parts.extract(NightRequest(last_day))
    whole_plan = whole_parts.plan(BackfillRequest.refresh(last_day, budget_minutes=24 * 60))
    per_day = whole_plan.orders / whole_plan.days
    share = (
        max(COST.estimate(-(-whole_plan.orders // chunks)), COST.estimate(per_day, customers)) / 60
    )
    chunked_plan = chunked_parts.plan(BackfillRequest.refresh(last_day, budget_minutes=share))
    chunked = _timed_plan(chunked_parts, chunked_plan)
    whole = _timed_plan(whole_parts, whole_plan)
    return {
        "rows": whole_plan.orders,
        "seconds": chunked["seconds"],
        "whole": whole,
        "chunked": chunked,
    }
