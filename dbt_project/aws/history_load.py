"""The first load of a new deployment: the whole history of the source, in chunks.

After the initializer has filled an empty source with the sample history, it starts
the reprocess state machine with a full refresh (the history load is one: the first
build of the incremental state, from nothing), so the analytic views answer within
the hour instead of after months of nights; the first scheduled night then loads the
day after it. A real source's history is loaded the same way by hand (see the README).
"""

from __future__ import annotations

import json
from datetime import datetime

from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import previous_business_day
from dbt_project.postgres.source_schema import history_bounds
from dbt_project.upgrade import REPROCESS_PAYLOAD

# The execution input of a history load: the whole history, up to the latest night.
HISTORY_LOAD = REPROCESS_PAYLOAD


def has_history(conn, *, now: datetime | None = None) -> bool:
    """Whether the source has an order on a finished business day (not only today's)."""
    first, _ = history_bounds(conn)
    latest = previous_business_day(now or business_calendar.utc_now())
    return first is not None and first <= latest


def start(state_machine_arn: str, client=None) -> dict:
    """Start the execution; the initializer returns while it runs."""
    import boto3

    client = client or boto3.client("stepfunctions")
    response = client.start_execution(
        stateMachineArn=state_machine_arn, input=json.dumps(HISTORY_LOAD)
    )
    return {
        "state_machine": state_machine_arn,
        "execution": response["executionArn"],
        "input": HISTORY_LOAD,
    }
