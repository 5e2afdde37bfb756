"""After a night's load the analytics tests look only at what the night wrote, a full
`dbt test` at every row; and the ranking's totals and index that top_customers reads."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta

import pytest

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.analytics_schema import (
    CUSTOMER_TOTALS,
    REVENUE_RANK_INDEX,
    create_analytics_tables,
)
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests.datagen import Shop
from tests.integration._dbt_helpers import reads_outside_the_dag
from tests.pipeline_helpers import as_extract_login

FIRST = date(2026, 3, 1)
LAST = date(2026, 3, 10)
OLD_DAY = date(2026, 3, 3)


def _execute(settings, statement: str, params=()) -> list[tuple]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.fixture(scope="module")
def loaded(module_database, tmp_path_factory):
    source_settings, target_settings = module_database("src"), module_database("tgt")
    conn = connect(source_settings)
    with conn:
        create_source_tables(conn)
    Shop(conn, seed=20261128).history(FIRST, LAST)
    conn.close()
    source = Database.from_settings(source_settings)
    target = Database.from_settings(target_settings)
    dbt = DbtProject()
    Pipeline(dbt=dbt, source=source, analytics=target).init()
    source = Database.from_settings(as_extract_login(source_settings))
    stage = LocalStage(tmp_path_factory.mktemp("stage"))
    # The history up to the day before, then the night of LAST.
    Pipeline(dbt=dbt, source=source, analytics=target, stage=stage).run_night(
        NightRequest(LAST - timedelta(days=1), full_refresh=True)
    )
    night = Pipeline(dbt=dbt, source=source, analytics=target, stage=stage).run_night(
        NightRequest(LAST, lookback_days=2)
    )
    assert night.tests.passed, night.tests.failures
    return target, target_settings, dbt, night


def test_a_night_tests_its_days_and_a_full_run_every_day(loaded):
    target, settings, dbt, night = loaded
    # given: an old day whose two summaries no longer reconcile
    _execute(
        settings,
        "update analytics.product_sales_summary set revenue = revenue + 1 "
        "where sales_date = %s and product_id = "
        "(select min(product_id) from analytics.product_sales_summary where sales_date = %s)",
        (OLD_DAY, OLD_DAY),
    )
    try:
        # when / then: the night's tests do not look at that day, a full run does
        assert Pipeline(dbt=dbt, analytics=target).test_analytics([night.load]).passed
        full = Pipeline(dbt=dbt, analytics=target).test_analytics()
        assert not full.passed
        assert any("reconcile" in failure for failure in full.failures)
        # and tests that cover the night before, which wrote that day, see it
        earlier = replace(night.load, run_date=LAST - timedelta(days=1))
        assert not Pipeline(dbt=dbt, analytics=target).test_analytics([earlier, night.load]).passed
    finally:
        _execute(
            settings,
            "update analytics.product_sales_summary set revenue = revenue - 1 "
            "where sales_date = %s and product_id = "
            "(select min(product_id) from analytics.product_sales_summary where sales_date = %s)",
            (OLD_DAY, OLD_DAY),
        )


def test_the_nightly_selection_leaves_out_what_constraints_enforce(loaded):
    target, _, dbt, night = loaded
    assert Pipeline(dbt=dbt, analytics=target).test_analytics([night.load]).passed
    results = json.loads((dbt.target_path("analytics") / "run_results.json").read_text())
    names = {result["unique_id"].split(".")[2] for result in results["results"]}
    assert "assert_daily_and_product_summaries_reconcile" in names
    assert not any(name.startswith("not_null_") for name in names)
    assert not any("top_customers" in name for name in names)
    # and no test reads a view or mart that it does not depend on
    assert reads_outside_the_dag(dbt.target_path("analytics")) == {}


def test_the_load_keeps_the_totals_the_ranking_reads(loaded):
    _, settings, _, _ = loaded
    [(kept, latest, count)] = _execute(
        settings,
        f"select revenue_of_all_customers, latest_as_of_date, customer_count "
        f"from analytics.{CUSTOMER_TOTALS}",
    )
    [(summed, newest, counted)] = _execute(
        settings,
        "select sum(total_revenue), max(as_of_date), count(*) from analytics.customer_analytics",
    )
    assert (kept, latest, count) == (summed, newest, counted)


def test_init_upgrades_a_database_without_the_totals_or_the_index(loaded):
    _, settings, _, _ = loaded
    _execute(settings, f"drop table analytics.{CUSTOMER_TOTALS} cascade")
    _execute(settings, f"drop index analytics.{REVENUE_RANK_INDEX}")
    conn = connect(settings)
    with conn:
        create_analytics_tables(conn)
    conn.close()
    assert _execute(settings, "select to_regclass(%s)", (f"analytics.{REVENUE_RANK_INDEX}",)) != [
        (None,)
    ]
    [(kept,)] = _execute(
        settings, f"select revenue_of_all_customers from analytics.{CUSTOMER_TOTALS}"
    )
    [(summed,)] = _execute(settings, "select sum(total_revenue) from analytics.customer_analytics")
    assert kept == summed
