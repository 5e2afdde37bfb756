"""A change to the models, shipped to a loaded analytics database: a new customer
measure and a changed day mart, planned, applied and reprocessed, then compared with
an independent computation of the whole history."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, timedelta

from dbt_project.cli.main import main
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import (
    add_customer_columns,
    as_extract_login,
    catalog_snapshot,
    edit,
    generated_shop,
    pipeline_on,
    project_copy,
    snapshot,
)

FIRST = date(2026, 3, 1)
HISTORY_END = date(2026, 3, 12)
NIGHTS = 3

# The new measure: order lines per customer. Its entry in the measure list...
MEASURE = """        {
            'name': 'line_count',
            'total': 'total_lines',
            'per_order': 'count({lines}.order_id)',
            'type': 'bigint',
        },
"""
# ...its column in the contract (0 in the rows loaded so far, until the reprocess)...
COLUMN = """      - name: total_lines
        description: Order lines in those orders.
        data_type: bigint
        constraints:
          - type: not_null
        config:
          meta:
            default: 0
"""


def _add_the_measure(project) -> list[str]:
    """The whole change a data team makes for a new measure: the files it edits."""
    measures = project / "macros/customer_measures.sql"
    edit(measures, "    ]) }}\n{% endmacro %}", MEASURE + "    ]) }}\n{% endmacro %}")
    marts = add_customer_columns(project, COLUMN)
    view = project / "models/analytics/top_customers.sql"
    edit(
        view,
        "        customer_revenue_ranks.total_items,\n",
        "        customer_revenue_ranks.total_items,\n"
        "        customer_revenue_ranks.total_lines,\n",
    )
    edit(
        view,
        "        total_items,\n        total_revenue,\n        avg_order_value,\n"
        "        first_order_date,\n        last_order_date,\n        as_of_date,\n"
        "        rank() over",
        "        total_items,\n        total_lines,\n        total_revenue,\n"
        "        avg_order_value,\n        first_order_date,\n        last_order_date,\n"
        "        as_of_date,\n        rank() over",
    )
    return [str(p.relative_to(project)) for p in (measures, marts, view)]


def _change_the_day_mart(project) -> None:
    """A fixed calculation: a day's region counts only orders with at least one line."""
    edit(
        project / "models/marts/daily_sales_summary.sql",
        "    from order_totals\n    inner join customers\n"
        "        on order_totals.customer_id = customers.customer_id\n",
        "    from order_totals\n    inner join customers\n"
        "        on order_totals.customer_id = customers.customer_id\n"
        "    where order_totals.item_count > 0\n",
    )


def _expected(shop: reference.Shop, as_of: date) -> dict[str, dict]:
    """The independent computation, with the two changes written again in Python."""
    expected = reference.marts(shop, as_of)
    counted = {o["order_id"]: o for o in shop.orders if o["status"] != "cancelled"}
    counted = {k: o for k, o in counted.items() if reference.business_day(o["ordered_at"]) <= as_of}
    lines: dict[int, list[dict]] = defaultdict(list)
    for item in shop.order_items:
        if item["order_id"] in counted:
            lines[item["order_id"]].append(item)
    for customer_id, row in expected["customer_analytics"].items():
        row["total_lines"] = sum(
            len(lines[o]) for o, order in counted.items() if order["customer_id"] == customer_id
        )
    with_lines = [o for o in shop.orders if o["order_id"] in counted and lines[o["order_id"]]]
    only = reference.Shop(shop.customers, shop.products, with_lines, shop.order_items)
    daily = reference.marts(only, as_of)["daily_sales_summary"]
    expected["daily_sales_summary"] = daily
    return expected


def _actual(target) -> dict[str, dict]:
    found = reference.read_marts(target)
    for row in query(target, "select customer_id, total_lines from analytics.customer_analytics"):
        found["customer_analytics"][row["customer_id"]]["total_lines"] = row["total_lines"]
    return found


def _etl(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_new_measure_and_a_fixed_day_mart_ship_to_a_loaded_history(
    new_database, tmp_path, monkeypatch, capsys
):
    # given a deployed-like state: a copy of the project, a history and nights loaded
    project = project_copy(tmp_path / "project")
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    source, target, shop = generated_shop(new_database, FIRST, HISTORY_END, seed=20261123)
    stage = LocalStage(tmp_path / "stage")
    urls = ["--analytics-url", target.url]
    assert _etl(capsys, "init", "--source-url", source.url, *urls)[0] == 0
    parts = pipeline_on(source, target, stage)
    lookback = (HISTORY_END - FIRST).days + 1
    parts.run_night(NightRequest(HISTORY_END, lookback_days=lookback), run_tests=False)
    last = HISTORY_END
    for _ in range(NIGHTS):
        last += timedelta(days=1)
        shop.orders_on(last, 12)
        shop.late_changes(last, 4)
        parts.run_night(NightRequest(last), run_tests=False)
    loaded = snapshot(target)

    # when the data team adds a measure (three files) and fixes a day mart's calculation
    assert _add_the_measure(project) == [
        "macros/customer_measures.sql",
        "models/marts/_marts__models.yml",
        "models/analytics/top_customers.sql",
    ]
    _change_the_day_mart(project)

    # then `etl plan --json` shows the column to add and both marts, and changes nothing
    before = catalog_snapshot(target)
    code, out, err = _etl(capsys, "plan", *urls, "--json")
    assert code == 0, "\n".join(err)
    plan = json.loads(out)
    changes = plan["analytics_tables"]["changes"]
    assert [(c["table"], c["column"]) for c in changes] == [("customer_analytics", "total_lines")]
    assert changes[0]["sql"] == [
        'alter table "analytics"."customer_analytics" add column "total_lines" bigint '
        "default '0' not null",
        'alter table "analytics"."customer_analytics" alter column "total_lines" drop default',
    ]
    assert plan["changed_marts"] == {
        "customer_analytics": "its contract or a macro it uses changed",
        "daily_sales_summary": "its SQL changed",
    }
    assert plan["reprocess"] == {
        "marts": plan["changed_marts"],
        "from": FIRST.isoformat(),
        "to": last.isoformat(),
    }
    assert catalog_snapshot(target) == before

    # and `etl init` applies the column, keeps every row, and says what to reprocess
    code, out, err = _etl(capsys, "init", "--source-url", source.url, *urls)
    assert code == 0, "\n".join(err)
    assert "analytics.customer_analytics.total_lines: add column bigint not null" in out
    assert f"reprocess needed from {FIRST} to {last} for marts customer_analytics" in out
    kept = snapshot(target)
    customers = query(target, "select total_lines from analytics.customer_analytics")
    assert {row["total_lines"] for row in customers} == {0}
    # (the new column is the table's last; every other value is as it was)
    kept["analytics.customer_analytics"] = [r[:-1] for r in kept["analytics.customer_analytics"]]
    assert {k: v for k, v in kept.items() if k.startswith("analytics.")} == {
        k: v for k, v in loaded.items() if k.startswith("analytics.")
    }

    # and a night before the reprocess still runs (the new measure's state grows a column)
    last += timedelta(days=1)
    shop.orders_on(last, 12)
    parts.run_night(NightRequest(last), run_tests=False)

    # when the reprocess runs (what a deployment starts: a full refresh night)
    code, out, err = _etl(
        capsys, "run", "--date", last.isoformat(), "--full-refresh", "--json",
        "--source-url", as_extract_login(source).url, *urls, "--stage", str(stage.root),
    )  # fmt: skip
    assert code == 0, "\n".join(err)
    report = json.loads(out)
    assert report["reprocessed"] == {
        "marts": {
            "customer_analytics": "its contract or a macro it uses changed",
            "daily_sales_summary": "its SQL changed",
        },
        "from": FIRST.isoformat(),
        "to": (last - timedelta(days=1)).isoformat(),
    }

    # then every row equals a fresh full build, computed independently
    shop_rows = reference.fetch_source(source)
    assert _actual(target) == _expected(shop_rows, last)
    # and nothing is left to do
    code, out, err = _etl(capsys, "plan", *urls, "--json")
    assert code == 0, "\n".join(err)
    again = json.loads(out)
    assert again["analytics_tables"]["changes"] == [] and again["changed_marts"] == {}
    assert again["pending_reprocessing"] == []
