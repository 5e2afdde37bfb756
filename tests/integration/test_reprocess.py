"""Reprocessing in chunks: a chunked backfill, the same days night by night, and a
chunked full rebuild give the same analytics tables, equal to the independent reference;
each customer's as_of_date follows its rule (the last run that touched it).

One generated history with late changes in the backfill's range; real dbt builds on the
source, real loads into three analytics databases.
"""

from __future__ import annotations

import contextlib
import io
from datetime import date, timedelta
from itertools import pairwise

import pytest

from dbt_project import pipeline as pipeline_module
from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.pipeline import Pipeline
from dbt_project.plan import CostModel, Plan
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.deployments import request_reprocess
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import BackfillRequest, NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.datagen import Shop
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import as_extract_login, snapshot

FIRST = date(2026, 1, 26)
HISTORY_END = date(2026, 2, 9)
LAST = date(2026, 2, 13)
# A chunk's "seconds" are its orders here: budgets of 30 and 90 orders cut the
# generated days (7 to 15 orders each) into chunks of a few days.
BY_ORDERS = CostModel(fixed_seconds=0.0, seconds_per_order=1.0)
BACKFILL_BUDGET, REFRESH_BUDGET = 30 / 60, 90 / 60


def without_as_of(marts: dict) -> dict:
    customers = {
        key: {c: v for c, v in row.items() if c != "as_of_date"}
        for key, row in marts["customer_analytics"].items()
    }
    return {**marts, "customer_analytics": customers}


def as_of_dates(marts: dict) -> dict:
    return {key: row["as_of_date"] for key, row in marts["customer_analytics"].items()}


def _damage(target) -> None:
    """Numbers no run of the source would produce, on rows dated before and after the
    refresh's first chunk, and a day no history has: what a model fix must replace."""
    conn = connect(target)
    with conn, conn.cursor() as cur:
        cur.execute("update analytics.customer_analytics set total_items = total_items + 1")
        cur.execute("update analytics.daily_sales_summary set units_sold = units_sold + 1")
        cur.execute(
            "insert into analytics.product_sales_summary "
            "select sales_date + 400, product_id, product_name, category, order_count, "
            "units_sold, revenue from analytics.product_sales_summary "
            "where sales_date = %s",
            (LAST,),
        )
    conn.close()


@pytest.fixture(scope="module")
def runs(module_database, tmp_path_factory):
    """The three ways, on one generated source: the backfill in chunks and night by night
    into two analytics databases holding the same history, then the whole history rebuilt
    in chunks over the chunked backfill's tables, after their numbers were damaged."""
    dbt = DbtProject()
    source_settings = module_database("src")
    conn = connect(source_settings)
    with conn:
        create_source_tables(conn)
    shop = Shop(conn, seed=20261206)
    shop.history(FIRST, LAST)
    for day in (LAST - timedelta(days=n) for n in range(4)):
        shop.late_changes(day, 3)  # cancellations and status changes of older orders
    conn.close()
    source = Database.from_settings(source_settings)
    stage = LocalStage(tmp_path_factory.mktemp("stage"))
    targets = {name: module_database(f"tgt{name}") for name in ("chunked", "nightly")}
    parts = {
        name: Pipeline(
            dbt=dbt, source=source, analytics=Database.from_settings(settings), stage=stage
        )
        for name, settings in targets.items()
    }
    for pipeline in parts.values():
        pipeline.init()
    # The source side of a night runs as etl_extract, as the extract function does.
    extract_login = as_extract_login(source_settings)
    source = Database.from_settings(extract_login)
    for pipeline in parts.values():
        pipeline.source = source

    # The history up to HISTORY_END, extracted once and loaded into both databases.
    history = parts["chunked"].plan(BackfillRequest.refresh(HISTORY_END))
    assert len(history.chunks) == 1 and history.chunks[0].full_refresh
    [(_, night)] = parts["chunked"].run_plan(history, run_tests=False)
    parts["nightly"].load(night.extract.manifest_key)

    # 1. The backfill of the days after it, in chunks, as `etl backfill` runs it.
    request = BackfillRequest.of(
        HISTORY_END + timedelta(days=1), LAST, budget_minutes=BACKFILL_BUDGET
    )
    backfill = parts["chunked"].plan(request, BY_ORDERS)
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(pipeline_module, "COST", BY_ORDERS)
        code = main(
            [
                "backfill",
                *("--start", str(request.first), "--end", str(LAST)),
                *("--budget-minutes", str(BACKFILL_BUDGET)),
                *("--source-url", extract_login.url, "--analytics-url", targets["chunked"].url),
                *("--stage", str(stage.root)),
            ]
        )
    assert code == 0
    # 2. The same days night by night, as the schedule runs them.
    nights = []
    day = HISTORY_END + timedelta(days=1)
    while day <= LAST:
        nights.append(parts["nightly"].run_night(NightRequest(day), run_tests=False))
        day += timedelta(days=1)
    marts = {name: reference.read_marts(settings) for name, settings in targets.items()}
    # 3. The whole history rebuilt from nothing, in chunks, over damaged tables.
    _damage(targets["chunked"])
    # ... with a reprocessing that a deployment asked for still open
    conn = connect(targets["chunked"])
    with conn, conn.cursor() as cur:
        request_reprocess(cur, {"daily_sales_summary": "its SQL changed"}, FIRST, LAST, "test")
    conn.close()
    refresh = parts["chunked"].plan(
        BackfillRequest.refresh(LAST, budget_minutes=REFRESH_BUDGET), BY_ORDERS
    )
    refreshed = list(parts["chunked"].run_plan(refresh))
    return {
        "parts": parts["chunked"],
        "urls": [
            *("--source-url", extract_login.url, "--analytics-url", targets["chunked"].url),
            *("--stage", str(stage.root)),
        ],
        "target": targets["chunked"],
        "stage": stage,
        "shop": reference.fetch_source(source_settings),
        "backfill": backfill,
        "printed": printed.getvalue(),
        "nights": nights,
        "refresh": refresh,
        "refreshed": refreshed,
        "marts": marts,
        "refreshed_marts": reference.read_marts(targets["chunked"]),
        "settled_by": query(
            targets["chunked"], "select done_by_run from ledger.reprocess_requests"
        ),
    }


def test_the_plans_cut_the_ranges_into_chunks_in_day_order(runs):
    starts = {"backfill": HISTORY_END + timedelta(days=1), "refresh": FIRST}
    for name, first in starts.items():
        plan = runs[name]
        chunks = plan.chunks
        assert len(chunks) >= 2
        assert chunks[0].first == first and chunks[-1].last == LAST
        assert all(a.last + timedelta(days=1) == b.first for a, b in pairwise(chunks))
        budget = plan.request.budget_minutes * 60
        assert all(chunk.orders <= budget for chunk in chunks)
    # Only a refresh's first chunk builds from nothing.
    assert [c.full_refresh for c in runs["refresh"].chunks] == [True] + [False] * (
        len(runs["refresh"].chunks) - 1
    )
    assert not any(c.full_refresh for c in runs["backfill"].chunks)


def test_etl_backfill_prints_the_plan_a_line_per_chunk_and_the_tests(runs):
    plan, lines = runs["backfill"], runs["printed"].splitlines()
    assert lines[0] == plan.describe()
    assert lines[0].startswith(f"backfill of {plan.first}..{LAST}: {plan.days} days")
    chunk_lines = lines[1:-1]
    assert len(chunk_lines) == len(plan.chunks)
    for chunk, line in zip(plan.chunks, chunk_lines, strict=True):
        assert (
            line.startswith(f"{chunk.first}..{chunk.last}  ")
            and f"{chunk.orders:>9,} orders" in line
        )
        assert "loaded: customer_analytics +" in line and "(estimated" in line
    assert chunk_lines[-1].endswith("analytics tests passed")
    assert (
        lines[-1]
        == f"backfilled {plan.days} days, {plan.first}..{LAST}, in {len(plan.chunks)} chunks"
    )


def test_chunked_backfill_nights_and_full_rebuild_equal_the_reference(runs):
    expected = without_as_of(reference.marts(runs["shop"], as_of=LAST))
    assert len(expected["daily_sales_summary"]) > 50
    for name, marts in runs["marts"].items():
        assert without_as_of(marts) == expected, name
    assert without_as_of(runs["refreshed_marts"]) == expected
    assert runs["refreshed"][-1][1].tests.passed


def test_each_customer_is_as_of_the_last_run_that_touched_it(runs):
    shop = runs["shop"]
    history = [(HISTORY_END, (HISTORY_END - FIRST).days + 1)]
    chunk_runs = [(chunk.last, chunk.days) for chunk in runs["backfill"].chunks]
    night_runs = [(night.run_date, 2) for night in runs["nights"]]
    rules = {
        "chunked": reference.as_of_dates(shop, history + chunk_runs),
        "nightly": reference.as_of_dates(shop, history + night_runs),
    }
    for name, marts in runs["marts"].items():
        found = as_of_dates(marts)
        assert found == {c: rules[name][c] for c in found}, name
    # A history rebuilt in chunks counts every customer in its last chunk.
    assert set(as_of_dates(runs["refreshed_marts"]).values()) == {LAST}
    # By design the three differ: a chunk dates its customers by its own last day.
    assert as_of_dates(runs["marts"]["chunked"]) != as_of_dates(runs["marts"]["nightly"])


def test_a_chunked_refresh_replaces_every_row_and_deletes_only_at_its_ends(runs):
    # Over damaged numbers and a day no history has, the refresh leaves the reference's
    # numbers (the test above). Its first chunk's load deleted the days the history up
    # to it lacks; the chunks between wrote days only; the last, every customer.
    first, *between, last = [night.load for _, night in runs["refreshed"]]
    assert first.full_refresh and not any(load.full_refresh for load in (*between, last))
    assert first.tables["product_sales_summary"].deleted > 0  # that day, and every later one
    for load in (first, *between):
        assert load.tables["customer_analytics"].rows_in_file == 0
    assert all(load.tables[t].deleted == 0 for load in (*between, last) for t in load.tables)
    customers = last.tables["customer_analytics"]
    assert customers.rows_in_file == len(runs["refreshed_marts"]["customer_analytics"])
    assert customers.updated == customers.rows_in_file  # each damaged row replaced
    days = {key[0] for key in runs["refreshed_marts"]["daily_sales_summary"]}
    assert (min(days), max(days)) == (FIRST, LAST)


def test_a_night_that_would_leave_a_hole_in_a_history_being_rebuilt_is_refused(runs, capsys):
    parts, target, stage, refresh = runs["parts"], runs["target"], runs["stage"], runs["refresh"]
    # given a full refresh in chunks whose first chunk is done
    first = refresh.chunks[0]
    list(parts.run_plan(Plan(refresh.request, (first,)), run_tests=False))
    before, staged = snapshot(target), stage.list("etl-data/")

    # when the night of LAST comes, as the schedule would bring it between two chunks
    code = main(["run", "--date", str(LAST), "--skip-tests", *runs["urls"]])

    # then it is refused in one line that says why and what to do, and changes nothing
    err = capsys.readouterr().err
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert f"rebuilt only to {first.last}" in err and "redrive it or run its days" in err
    assert snapshot(target) == before and stage.list("etl-data/") == staged
    # and once the chunks after it are done, the same night runs
    list(parts.run_plan(refresh, run_tests=False, start=1))
    assert main(["run", "--date", str(LAST), "--skip-tests", *runs["urls"]]) == 0
    assert without_as_of(reference.read_marts(target)) == without_as_of(runs["refreshed_marts"])


def test_a_chunked_refresh_settles_the_reprocess_request_with_its_last_chunk(runs):
    # the first chunk is the one marked full_refresh; only the last restates every customer
    chunks = runs["refreshed"]
    assert len(chunks) > 1 and chunks[0][0].full_refresh
    (last_load,) = [night.load for _, night in chunks[-1:]]
    assert runs["settled_by"] == [{"done_by_run": last_load.run_id}]
