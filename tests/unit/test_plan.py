"""The plan of a reprocessing run: chunks in day order, each sized to fit its budget."""

from datetime import date, timedelta
from itertools import pairwise

import pytest

from dbt_project.errors import ConfigError
from dbt_project.facts.business_calendar import MAX_LOOKBACK_DAYS
from dbt_project.plan import MAX_CHUNKS, Chunk, CostModel, DayCount, plan_chunks
from dbt_project.request import BackfillRequest, Trigger

FIRST = date(2025, 1, 1)
# Ten seconds a chunk, a second per 1,000 orders and per 1,000 owned customers.
MODEL = CostModel(fixed_seconds=10.0, seconds_per_order=1e-3, seconds_per_customer=1e-3)
# A shop of 20,000 customers, 3,000 of them ordering on a day.
CUSTOMERS = 20_000


def days(n: int, orders: int, customers: int = 3_000) -> dict[date, DayCount]:
    return {FIRST + timedelta(days=i): DayCount(orders, customers) for i in range(n)}


def backfill(n: int, budget_minutes: float) -> BackfillRequest:
    return BackfillRequest(FIRST + timedelta(days=n - 1), FIRST, budget_minutes=budget_minutes)


def refresh(n: int, budget_minutes: float) -> BackfillRequest:
    last = FIRST + timedelta(days=n - 1)
    return BackfillRequest(last, full_refresh=True, budget_minutes=budget_minutes)


def test_a_year_is_cut_into_chunks_that_fill_the_budget_in_day_order():
    # 7 days: 10 + 28 s of orders + 20 s for every customer (21,000 is more than there are)
    # is 58 s and fits a minute; 8 days (62 s) do not.
    plan = plan_chunks(backfill(365, 1.0), FIRST, days(365, 4_000), CUSTOMERS, MODEL)
    assert [c.days for c in plan.chunks] == [7] * 52 + [1]
    assert plan.chunks[0].first == FIRST and plan.last == FIRST + timedelta(days=364)
    assert all(a.last + timedelta(days=1) == b.first for a, b in pairwise(plan.chunks))
    assert plan.chunks[0].estimate_seconds == pytest.approx(58.0)
    assert all(c.estimate_seconds <= 60 for c in plan.chunks)
    assert (plan.days, plan.orders) == (365, 365 * 4_000)
    assert {(c.full_refresh, c.customers) for c in plan.chunks} == {(False, "window")}


def test_quiet_days_cost_only_the_fixed_part_and_a_chunk_spans_at_most_a_window():
    plan = plan_chunks(backfill(1000, 60.0), FIRST, {}, CUSTOMERS, MODEL)
    assert [c.days for c in plan.chunks] == [MAX_LOOKBACK_DAYS, MAX_LOOKBACK_DAYS, 200]
    assert {c.estimate_seconds for c in plan.chunks} == {10.0}


def test_a_full_refresh_builds_from_nothing_first_and_counts_customers_last():
    # 30 days in one night: 10 + 120 + 20 = 150 s, over a minute. The last chunk counts
    # every customer (20 s): 7 days (10 + 28 + 20 = 58 s); the chunks before it own none:
    # 12 days each (10 + 48 = 58 s).
    plan = plan_chunks(refresh(30, 1.0), FIRST, days(30, 4_000), CUSTOMERS, MODEL)
    assert [c.days for c in plan.chunks] == [12, 11, 7]
    assert [c.full_refresh for c in plan.chunks] == [True, False, False]
    assert [c.customers for c in plan.chunks] == ["none", "none", "all"]
    assert [c.night().owns_every_customer for c in plan.chunks] == [False, False, True]
    assert {c.trigger for c in plan.chunks} == {Trigger.FULL_REFRESH}
    first = plan.chunks[0].night()
    assert (first.run_date, first.lookback_days, first.full_refresh, first.freshness_gate) == (
        FIRST + timedelta(days=11),
        12,
        True,
        False,
    )
    # within the budget, it is one night whose window owns every customer of the history
    (whole,) = plan_chunks(refresh(30, 3.0), FIRST, days(30, 4_000), CUSTOMERS, MODEL).chunks
    assert (whole.full_refresh, whole.customers, whole.night().owns_every_customer) == (
        True,
        "window",
        True,
    )


def test_a_chunk_travels_as_the_extract_s_event_and_back():
    plan = plan_chunks(backfill(30, 1.0), FIRST, days(30, 4_000), CUSTOMERS, MODEL)
    as_json = plan.as_json()
    assert as_json["count"] == len(as_json["chunks"]) == 5
    assert as_json["chunks"][1] == {
        "run_date": "2025-01-14",
        "lookback_days": 7,
        "full_refresh": False,
        "trigger": "backfill",
        "customers": "window",
    }
    again = Chunk.from_event(as_json["chunks"][1])
    assert (again.first, again.last) == (plan.chunks[1].first, plan.chunks[1].last)
    assert again.night() == plan.chunks[1].night()


def test_a_single_day_over_the_budget_is_refused_up_front_in_one_line():
    counts = days(10, 4_000)
    counts[FIRST + timedelta(days=6)] = DayCount(100_000, 50_000)  # 10 + 100 + 20 s
    with pytest.raises(ConfigError) as refused:
        plan_chunks(backfill(10, 1.0), FIRST, counts, CUSTOMERS, MODEL)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("2025-01-07 alone has 100,000 orders, estimated at 2.2 minutes")
    assert "budget of 1 minutes" in message and "--budget-minutes" in message
    assert "Beyond Lambda" in message


def test_a_history_whose_customers_alone_exceed_the_budget_is_refused():
    with pytest.raises(ConfigError, match="counting the source's 1,000,000 customers once"):
        plan_chunks(refresh(30, 1.0), FIRST, days(30, 4_000), 1_000_000, MODEL)


def test_a_plan_beyond_one_run_is_refused():
    with pytest.raises(ConfigError, match=f"over the {MAX_CHUNKS} one run takes"):
        plan_chunks(backfill(2500, 0.2), FIRST, days(2500, 1_000, 0), CUSTOMERS, MODEL)
