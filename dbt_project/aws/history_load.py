"""The first load of a new deployment: the whole history of the source in one night.

After the initializer has filled an empty source with the sample history, it starts
this night itself (an asynchronous invocation of the extract function), so the
analytic views answer within the hour instead of after months of nights; the first
scheduled night then loads the day after it. A real source's history is loaded the
same way by hand (see the README): one night whose lookback covers it.
"""

from __future__ import annotations

import json
from datetime import datetime

from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import MAX_LOOKBACK_DAYS, previous_business_day
from dbt_project.postgres.source_schema import history_bounds


def history_request(conn, *, now: datetime | None = None) -> dict | None:
    """The extract payload that loads every finished business day of the source in one
    night, or None when there is none (no orders, or only today's)."""
    first, last = history_bounds(conn)
    if first is None:
        return None
    night = min(last, previous_business_day(now or business_calendar.utc_now()))
    if night < first:
        return None
    lookback = (night - first).days + 1
    if lookback > MAX_LOOKBACK_DAYS:
        # Longer histories are loaded by hand, in several nights (see the README).
        lookback = MAX_LOOKBACK_DAYS
    # No freshness gate: the sample was written a moment ago, and a sample ending today
    # holds orders later today, which the gate would take for a clock ahead.
    return {"run_date": night.isoformat(), "lookback_days": lookback, "skip_freshness": True}


def start(function_name: str, payload: dict, client=None) -> dict:
    """Invoke the extract asynchronously: the initializer returns before it finishes."""
    import boto3

    client = client or boto3.client("lambda")
    response = client.invoke(
        FunctionName=function_name,
        InvocationType="Event",
        Payload=json.dumps(payload).encode(),
    )
    return {"function": function_name, "payload": payload, "status": response["StatusCode"]}
