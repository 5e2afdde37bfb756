"""The contracts drive the analytics tables: `etl init` applies what PostgreSQL can do
without losing data and refuses the rest, one line each, changing nothing."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from psycopg2 import sql

from dbt_project.cli.main import main
from dbt_project.contract.tables import contract
from dbt_project.errors import SchemaRefused
from dbt_project.postgres.analytics_schema import create_analytics_tables, plan_upgrade
from dbt_project.postgres.connection import connect
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import (
    add_customer_columns,
    catalog_snapshot,
    edit,
    full_row,
    project_copy,
)

D = date(2026, 3, 10)
MARTS_YML = "models/marts/_marts__models.yml"
ROWS = {
    "customer_analytics": [
        {
            "customer_id": 1,
            "customer_name": "山田 太郎",
            "region": "東京",
            "total_orders": 2,
            "total_items": 3,
            "total_revenue": Decimal("300.00"),
            "avg_order_value": Decimal("150.00"),
            "first_order_date": date(2026, 3, 1),
            "last_order_date": D,
            "as_of_date": D,
        }
    ],
    "product_sales_summary": [
        {
            "sales_date": D,
            "product_id": 7,
            "product_name": "緑茶",
            "category": "飲料",
            "order_count": 1,
            "units_sold": 2,
            "revenue": Decimal("200.00"),
        }
    ],
    "daily_sales_summary": [
        {
            "sales_date": D,
            "region": "東京",
            "order_count": 2,
            "customer_count": 1,
            "units_sold": 3,
            "revenue": Decimal("300.00"),
            "avg_order_value": Decimal("150.00"),
        }
    ],
}


@pytest.fixture
def deployed(new_database, tmp_path, monkeypatch):
    """A copy of the project and an analytics database as it deployed them, with rows,
    a view of the project's reading a mart (as dbt builds them) and none of anyone else."""
    project = project_copy(tmp_path / "project")
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    target = new_database("tgt")
    conn = connect(target)
    with conn, conn.cursor() as cur:
        create_analytics_tables(conn)
        for name, rows in ROWS.items():
            columns = contract(name).column_names
            extra = ["extracted_at"] if name == "customer_analytics" else []
            for row in rows:
                cur.execute(
                    sql.SQL("insert into {} ({}) values ({})").format(
                        sql.Identifier("analytics", name),
                        sql.SQL(", ").join(map(sql.Identifier, [*columns, *extra])),
                        sql.SQL(", ").join(sql.Placeholder() * (len(columns) + len(extra))),
                    ),
                    [
                        *full_row(contract(name), row),
                        *([datetime(2026, 3, 11, tzinfo=UTC)] * len(extra)),
                    ],
                )
        cur.execute(
            "create view analytics.category_performance as "
            "select category, sum(revenue) as revenue from analytics.product_sales_summary "
            "group by category"
        )
    conn.close()
    return project, target


def _plan(target):
    conn = connect(target)
    try:
        with conn.cursor() as cur:
            planned = plan_upgrade(cur)
            return planned, planned.sql_text(conn)
    finally:
        conn.rollback()
        conn.close()


def _apply(target):
    conn = connect(target)
    with conn:
        applied = create_analytics_tables(conn)
    conn.close()
    return applied


def test_safe_changes_are_applied_and_leave_nothing_to_do(deployed):
    project, target = deployed
    marts = project / MARTS_YML
    # given a contract with a new measure (NOT NULL, 0 in the rows loaded so far), a
    # new nullable column, a new check, a dropped check and a wider revenue
    add_customer_columns(
        project,
        "      - name: total_lines\n        data_type: bigint\n"
        "        constraints:\n          - type: not_null\n"
        "        config:\n          meta:\n            default: 0\n"
        "      - name: note\n        data_type: text\n",
    )
    edit(
        marts,
        '        expression: "avg_order_value = round(total_revenue / total_orders, 2)"\n',
        '        expression: "avg_order_value = round(total_revenue / total_orders, 2)"\n'
        "      - type: check\n        name: customer_analytics_total_lines_non_negative\n"
        '        expression: "total_lines >= 0"\n',
    )
    edit(
        marts,
        "      - type: check\n        name: daily_sales_summary_units_sold_non_negative\n"
        '        expression: "units_sold >= 0"\n',
        "",
    )
    text = marts.read_text()
    at = text.index("  - name: product_sales_summary")
    end = text.index("  - name: daily_sales_summary")
    widened = text[at:end].replace(
        "      - name: revenue\n        description: Sum of quantity x unit_price of the "
        "product's lines that day, in yen.\n        data_type: numeric(14,2)",
        "      - name: revenue\n        description: Sum of quantity x unit_price of the "
        "product's lines that day, in yen.\n        data_type: numeric(16,2)",
    )
    assert widened != text[at:end]
    marts.write_text(text[:at] + widened + text[end:])

    # when the upgrade is planned, then applied
    planned, statements = _plan(target)
    applied = _apply(target)

    # then the plan said what init did, and refused nothing
    assert not planned.refusals and not planned.notes
    summaries = {(c.table, c.column, c.summary) for c in planned.changes}
    assert summaries == {
        (
            "",
            None,
            "drop the views that read a widened column (dbt builds them again)",
        ),
        (
            "customer_analytics",
            "total_lines",
            "add column bigint not null, 0 in the rows loaded so far",
        ),
        ("customer_analytics", "note", "add column text"),
        ("customer_analytics", None, "add check customer_analytics_total_lines_non_negative"),
        ("product_sales_summary", "revenue", "widen numeric(14,2) to numeric(16,2)"),
        ("daily_sales_summary", None, "drop check daily_sales_summary_units_sold_non_negative"),
    }
    assert statements[0] == 'drop view if exists "analytics"."category_performance"'
    assert [c.summary for c in applied.changes] == [c.summary for c in planned.changes]
    # and the tables are as the contract says, the rows loaded so far kept
    columns = query(
        target,
        "select table_name, column_name, data_type, numeric_precision, is_nullable, "
        "column_default from information_schema.columns where table_schema = 'analytics' "
        "and column_name in ('total_lines', 'note', 'revenue') order by 1, 2",
    )
    assert [tuple(c.values()) for c in columns] == [
        ("customer_analytics", "note", "text", None, "YES", None),
        ("customer_analytics", "total_lines", "bigint", 64, "NO", None),
        ("daily_sales_summary", "revenue", "numeric", 14, "NO", None),
        ("product_sales_summary", "revenue", "numeric", 16, "NO", None),
    ]
    row = query(target, "select total_lines, note, total_revenue from analytics.customer_analytics")
    assert row == [{"total_lines": 0, "note": None, "total_revenue": Decimal("300.00")}]
    # and a second plan has nothing left to do
    assert _plan(target)[0].changes == []


def _refuse_narrower_revenue(marts):
    edit(
        marts,
        "      - name: total_revenue\n"
        "        description: Sum of quantity x unit_price over those orders, in yen.\n"
        "        data_type: numeric(14,2)",
        "      - name: total_revenue\n"
        "        description: Sum of quantity x unit_price over those orders, in yen.\n"
        "        data_type: numeric(12,2)",
    )


def _rename(marts):
    edit(marts, "      - name: customer_name\n", "      - name: customer_full_name\n")


def _drop(marts):
    edit(
        marts,
        "      - name: customer_name\n"
        "        description: The customer's name at the time of the build.\n"
        "        data_type: text\n"
        "        constraints:\n"
        "          - type: not_null\n",
        "",
    )


def _new_key(marts):
    edit(marts, "        columns: [sales_date, product_id]", "        columns: [sales_date]")


def _not_null_without_default(marts):
    add_customer_columns(
        marts.parents[2],
        "      - name: total_lines\n        data_type: bigint\n"
        "        constraints:\n          - type: not_null\n",
    )


def _check_the_rows_break(marts):
    edit(
        marts,
        '        expression: "total_orders >= 1"\n',
        '        expression: "total_orders >= 5"\n',
    )


def _view_of_someone_else(marts, target):
    conn = connect(target)
    with conn, conn.cursor() as cur:
        cur.execute(
            "create view analytics.my_revenue as select sum(revenue) "
            "from analytics.product_sales_summary"
        )
    conn.close()
    text = marts.read_text()
    at = text.index("  - name: product_sales_summary")
    end = text.index("  - name: daily_sales_summary")
    widened = text[at:end].replace("data_type: numeric(14,2)", "data_type: numeric(18,2)")
    marts.write_text(text[:at] + widened + text[end:])


@pytest.mark.parametrize(
    ("change", "table", "column", "message"),
    [
        (_drop, "customer_analytics", "customer_name", "is no longer in the contract"),
        (_rename, "customer_analytics", "customer_name", "for a rename, add the new column"),
        (
            _refuse_narrower_revenue,
            "customer_analytics",
            "total_revenue",
            "would change from numeric(14,2) to numeric(12,2), which can lose data",
        ),
        (
            _new_key,
            "product_sales_summary",
            "sales_date",
            "the primary key of analytics.product_sales_summary would change",
        ),
        (_not_null_without_default, "customer_analytics", "total_lines", "is new and NOT NULL"),
        (
            _check_the_rows_break,
            "customer_analytics",
            None,
            "1 rows of analytics.customer_analytics break the check",
        ),
        (
            _view_of_someone_else,
            "product_sales_summary",
            "revenue",
            "view analytics.my_revenue reads analytics.product_sales_summary.revenue",
        ),
    ],
    ids=["drop", "rename", "narrowing", "primary-key", "not-null", "check", "foreign-view"],
)
def test_a_lossy_change_is_refused_in_one_line_and_changes_nothing(
    deployed, new_database, capsys, change, table, column, message
):
    project, target = deployed
    marts = project / MARTS_YML
    if change is _view_of_someone_else:
        change(marts, target)
    else:
        change(marts)
    source = new_database("src")
    before = catalog_snapshot(target)

    # when `etl init` meets the change
    code = main(["init", "--source-url", source.url, "--analytics-url", target.url])

    # then it exits non-zero with one line naming the table and the column, and the
    # analytics database and the source are as they were
    err = capsys.readouterr().err
    assert code == SchemaRefused.exit_code != 0
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err and f"analytics.{table}" in err
    assert column is None or column in err
    assert catalog_snapshot(target) == before
    assert query(source, "select count(*) as n from pg_tables where schemaname = 'public'") == [
        {"n": 0}
    ]
    # and the plan lists it too, changing nothing; `etl plan` exits non-zero (once:
    # it parses the copied project)
    if change is _drop:
        code = main(["plan", "--analytics-url", target.url, "--json"])
        out, err = capsys.readouterr()
        assert code == SchemaRefused.exit_code and err.count("\n") == 1, err
        refusals = json.loads(out)["analytics_tables"]["refusals"]
        assert [(r["table"], r["column"]) for r in refusals] == [(table, column)]
    planned, _ = _plan(target)
    assert any(message in r.message for r in planned.refusals)
    with pytest.raises(SchemaRefused):
        planned.raise_if_refused()
    assert catalog_snapshot(target) == before
