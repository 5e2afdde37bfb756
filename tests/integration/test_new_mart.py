"""A new mart is SQL and YAML only: a fourth mart, sales by category and day, added to
a copy of the project, runs nights end to end (unload, manifest, load with its deletes
and version guard, analytics-side tests) with no change to the Python package, and
equals an independent computation."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, time, timedelta

from dbt_project.cli.main import main
from dbt_project.facts.stage_layout import manifest_key
from dbt_project.postgres.connection import connect
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.datagen import TOKYO
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import generated_shop, pipeline_on, project_copy

FIRST = date(2026, 4, 1)
HISTORY_END = date(2026, 4, 10)
MART = "category_sales_summary"

MART_SQL = """with

owned_day_orders as (
    select * from {{ ref('int_owned_day_orders') }}
),

order_items as (
    select * from {{ ref('stg_shop__order_items') }}
),

products as (
    select * from {{ ref('stg_shop__products') }}
),

final as (
    select
        owned_day_orders.sales_date,
        products.category,
        count(distinct owned_day_orders.order_id) as order_count,
        cast(sum(order_items.quantity) as bigint) as units_sold,
        cast(sum(order_items.quantity * order_items.unit_price) as numeric(14, 2)) as revenue
    from owned_day_orders
    inner join order_items
        on owned_day_orders.order_id = order_items.order_id
    inner join products
        on order_items.product_id = products.product_id
    group by
        owned_day_orders.sales_date,
        products.category
)

select * from final
"""

MART_YAML = """models:
  - name: category_sales_summary
    description: One row per business day and product category with a sold line.
    config:
      meta:
        night_owns: {days: sales_date}
    constraints:
      - type: primary_key
        columns: [sales_date, category]
      - type: check
        name: category_sales_summary_units_cover_orders
        expression: "units_sold >= order_count"
    columns:
      - name: sales_date
        description: Business day of the orders.
        data_type: date
        constraints:
          - type: not_null
      - name: category
        description: The products' category.
        data_type: text
        constraints:
          - type: not_null
      - name: order_count
        description: Distinct non-cancelled orders with a line of the category.
        data_type: bigint
        constraints:
          - type: not_null
      - name: units_sold
        description: Units of the category sold that day.
        data_type: bigint
        constraints:
          - type: not_null
      - name: revenue
        description: Sum of quantity x unit_price of those lines, in yen.
        data_type: numeric(14,2)
        constraints:
          - type: not_null
        data_tests:
          - non_negative
"""


def expected_category_days(shop: reference.Shop, last: date) -> dict[tuple, dict]:
    """Sales by category and business day, from the source rows, written again here."""
    category = {p["product_id"]: p["category"] for p in shop.products}
    days = {
        o["order_id"]: reference.business_day(o["ordered_at"])
        for o in shop.orders
        if o["status"] != "cancelled" and reference.business_day(o["ordered_at"]) <= last
    }
    found: dict[tuple, dict] = defaultdict(lambda: {"orders": set(), "units_sold": 0, "revenue": 0})
    for item in shop.order_items:
        if item["order_id"] in days:
            entry = found[(days[item["order_id"]], category[item["product_id"]])]
            entry["orders"].add(item["order_id"])
            entry["units_sold"] += item["quantity"]
            entry["revenue"] += item["quantity"] * item["unit_price"]
    return {
        key: {
            "order_count": len(e["orders"]),
            "units_sold": e["units_sold"],
            "revenue": reference.money(e["revenue"]),
        }
        for key, e in found.items()
    }


def loaded_category_days(target) -> dict[tuple, dict]:
    rows = query(target, f"select * from analytics.{MART}")  # noqa: S608
    return {
        (r["sales_date"], r["category"]): {
            "order_count": r["order_count"],
            "units_sold": r["units_sold"],
            "revenue": r["revenue"],
        }
        for r in rows
    }


def _cancel_day(source, day: date, at: date) -> None:
    """Every order of ``day`` cancelled during business day ``at``: its rows must go."""
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute(
            "update orders set status = 'cancelled', updated_at = %s "
            "where (ordered_at at time zone 'Asia/Tokyo')::date = %s",
            (datetime.combine(at, time(12), TOKYO), day),
        )
    conn.close()


def test_a_fourth_mart_added_as_sql_and_yaml_runs_nights_end_to_end(
    new_database, tmp_path, monkeypatch, capsys
):
    # given a copy of the project with a fourth mart: one SQL file and one YAML file
    project = project_copy(tmp_path / "project")
    (project / "models/marts" / f"{MART}.sql").write_text(MART_SQL)
    (project / "models/marts" / f"_{MART}__models.yml").write_text(MART_YAML)
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    source, target, shop = generated_shop(new_database, FIRST, HISTORY_END, seed=20261124)

    # when `etl init` creates its table and nights run: the history, then nights with
    # late changes, one of which cancels every order of an old day
    assert main(["init", "--source-url", source.url, "--analytics-url", target.url]) == 0
    stage = LocalStage(tmp_path / "stage")
    parts = pipeline_on(source, target, stage)
    lookback = (HISTORY_END - FIRST).days + 1
    parts.run_night(NightRequest(HISTORY_END, lookback_days=lookback), run_tests=False)
    last = HISTORY_END
    for n in range(1, 4):
        last = HISTORY_END + timedelta(days=n)
        shop.orders_on(last, 12)
        shop.late_changes(last, 4)
        if n == 2:
            _cancel_day(source, FIRST + timedelta(days=1), last)
        night = parts.run_night(NightRequest(last), run_tests=n == 3)
        if n == 2:
            assert night.load.tables[MART].deleted > 0  # the cancelled day's rows went

    # then the analytics-side tests ran on the new mart too, by the nights' days
    assert night.tests is not None and night.tests.passed, night.tests
    results = parts.dbt.target_path("analytics") / "run_results.json"
    compiled = [
        result["compiled_code"]
        for result in json.loads(results.read_text())["results"]
        if f"non_negative_{MART}_revenue" in result["unique_id"]
    ]
    assert compiled and "ledger.day_versions" in compiled[0]
    # and every row equals the independent computation
    shop_rows = reference.fetch_source(source)
    expected = expected_category_days(shop_rows, last)
    assert loaded_category_days(target) == expected
    assert not any(day == FIRST + timedelta(days=1) for day, _ in expected)
    assert len(expected) > 20

    # and an extraction delivered after a later one of the same day changes nothing
    parts.extract(NightRequest(last))
    stale = stage.get_bytes(manifest_key(last))
    parts.run_night(NightRequest(last), run_tests=False)
    before = loaded_category_days(target)
    stage.put_bytes(manifest_key(last), stale)
    late = parts.load(manifest_key(last))
    assert late.status == "loaded" and late.tables[MART].skipped_stale > 0
    assert late.tables[MART].inserted == late.tables[MART].updated == 0
    assert loaded_category_days(target) == before
