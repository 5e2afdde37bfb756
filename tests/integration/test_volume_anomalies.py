"""A region's day that collapses is a warning in the night's report, never a stop: the
volume_anomalies view on the analytics side and its warn-only test, after a real load."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.load import report as reports
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests.datagen import TOKYO, Shop
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import as_extract_login

FIRST, LAST = date(2026, 10, 1), date(2026, 11, 10)
# The largest of the six regions takes well above the view's floor of 50 orders a day.
ORDERS_A_DAY = 420


def test_a_collapsed_region_day_warns_in_the_report_and_the_night_stands(module_database, tmp_path):
    # given five steady weeks loaded into the analytics database
    source, target = module_database("vol_src"), module_database("vol_tgt")
    conn = connect(source)
    create_source_tables(conn)
    conn.commit()
    shop = Shop(conn, seed=20261206)
    day = FIRST
    while day <= LAST:
        shop.orders_on(day, ORDERS_A_DAY)
        day += timedelta(days=1)
    parts = Pipeline(
        dbt=DbtProject(),
        source=Database.from_settings(source),
        analytics=Database.from_settings(target),
        stage=LocalStage(tmp_path / "stage"),
    )
    parts.init()
    parts.source = Database.from_settings(as_extract_login(source))  # as the extract runs
    history = NightRequest(LAST - timedelta(days=1), (LAST - FIRST).days)
    parts.run_night(history, run_tests=False)
    # and on the last day every order of the largest region cancelled during that day
    with conn, conn.cursor() as cur:
        cur.execute("select region from customers group by region order by count(*) desc limit 1")
        (collapsed,) = cur.fetchone()
        cur.execute(
            "update orders o set status = 'cancelled', updated_at = %s from customers c "
            "where c.customer_id = o.customer_id and c.region = %s "
            "and (o.ordered_at at time zone 'Asia/Tokyo')::date = %s",
            (datetime.combine(LAST, time(23, 0), TOKYO), collapsed, LAST),
        )
    conn.close()

    # when the night of that day runs
    night = parts.run_night(NightRequest(LAST))

    # then it loaded and its tests passed, with one warning naming the anomalies
    assert night.load.status == "loaded" and night.tests.passed, night.tests.failures
    assert len(night.tests.warnings) == 1 and "volume_anomalies" in night.tests.warnings[0]
    assert night.tests.volume_anomalies == 2  # orders and revenue of that region-day
    report = reports.build(night.load, night.tests)
    assert report["status"] == reports.LOADED
    assert report["dbt_tests"]["analytics"]["volume_anomalies"] == 2
    assert "analytics test warning: is_empty_volume_anomalies_" in reports.as_text(report)
    # and the view says which day, region and measure, against which band
    found = query(
        target,
        "select sales_date, region, measure, actual_value from analytics.volume_anomalies "
        "where sales_date = %s order by measure",
        (LAST,),
    )
    assert [tuple(row.values()) for row in found] == [
        (LAST, collapsed, "order_count", 0),
        (LAST, collapsed, "revenue", 0),
    ]
