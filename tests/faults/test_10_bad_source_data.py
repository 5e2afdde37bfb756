"""Fault 10: bad rows in the source that its constraints would have refused.

A copy of the generated shop loses two constraints and gains a negative quantity and
an order of a customer that does not exist. The extract's dbt tests must stop the
night before anything reaches the stage.
"""

from __future__ import annotations

import pytest

from dbt_project.errors import DataTestsFailed
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import connect
from dbt_project.request import NightRequest
from tests.faults import harness

ORPHAN_ORDER, MISSING_CUSTOMER = 990001, 424242


def _constraint(cur, table: str, kind: str, column: str) -> str:
    cur.execute(
        "select conname from pg_constraint where conrelid = %s::regclass and contype = %s "
        "and pg_get_constraintdef(oid) like %s",
        (table, kind, f"%{column}%"),
    )
    return cur.fetchone()[0]


def test_bad_source_rows_stop_the_night_before_the_stage(fault, nights, dbt, source_copy):
    record = fault(
        "10. bad source data",
        "on a copy of the source: the quantity check and the orders->customers foreign key "
        f"dropped, one order line in the night's window set to a negative quantity, order "
        f"{ORPHAN_ORDER} of missing customer {MISSING_CUSTOMER} added in the night's window",
    )
    day = nights.days[-1]
    settings = source_copy()
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        check = _constraint(cur, "order_items", "c", "quantity")
        foreign_key = _constraint(cur, "orders", "f", "customer_id")
        cur.execute(f'alter table order_items drop constraint "{check}"')
        cur.execute(f'alter table orders drop constraint "{foreign_key}"')
        # A line of an order the night reads: a nightly build tests its window's rows.
        cur.execute(
            "update order_items set quantity = -quantity where order_item_id = "
            "(select max(i.order_item_id) from order_items i join orders o using (order_id) "
            "where o.ordered_at < %s::date) returning order_item_id",
            (day,),
        )
        (bad_item,) = cur.fetchone()
        cur.execute(
            "insert into orders select %s, %s, max(ordered_at), 'paid', max(ordered_at) "
            "from orders where ordered_at < %s::date",
            (ORPHAN_ORDER, MISSING_CUSTOMER, day),
        )
    bucket = harness.new_bucket()
    stage = harness.stage_for(bucket)
    source = harness.extract_database(settings)

    with pytest.raises(DataTestsFailed) as failed:
        Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(day))
    failures = failed.value.failures
    message = str(failed.value)
    assert any("non_negative" in f and "quantity" in f for f in failures), failures
    assert any("relationships" in f and "customer_id" in f for f in failures), failures
    assert "non_negative" in message and "relationships" in message
    record.check(
        f"DataTestsFailed naming {len(failures)} failing nodes: "
        + ", ".join(f.split(".")[2] for f in failures if f.startswith("test."))
    )
    assert stage.list("etl-data/") == []
    record.check("nothing on the stage: no files, no dbt artifacts, no manifest")

    with conn, conn.cursor() as cur:
        cur.execute("delete from orders where order_id = %s", (ORPHAN_ORDER,))
        cur.execute(
            "update order_items set quantity = -quantity where order_item_id = %s", (bad_item,)
        )
    conn.close()
    result = Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(day))
    source.close()
    objects = {key: stage.get_bytes(key) for key in stage.list("etl-data/")}
    assert nights.rows(result.manifest_key, objects) == nights.rows(nights.keys[-1])
    record.check("once the rows are repaired the re-run writes exactly the clean night's rows")


def test_bad_rows_outside_the_window_wait_for_the_night_that_reads_them(
    fault, nights, dbt, source_copy
):
    record = fault(
        "10. bad source data outside the night's window",
        "on a copy of the source: the quantity check dropped, a line of the first day's "
        "first order set to a negative quantity",
    )
    day = nights.days[-1]
    settings = source_copy()
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        check = _constraint(cur, "order_items", "c", "quantity")
        cur.execute(f'alter table order_items drop constraint "{check}"')
        cur.execute(
            "update order_items set quantity = -quantity where order_item_id = "
            "(select min(i.order_item_id) from order_items i join orders o using (order_id) "
            "where o.order_id = (select min(order_id) from orders))"
        )
    conn.close()
    source = harness.extract_database(settings)
    stage = harness.stage_for(harness.new_bucket())
    # The night reads none of that order's numbers: it extracts as a clean night does.
    result = Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(day))
    objects = {key: stage.get_bytes(key) for key in stage.list("etl-data/")}
    assert nights.rows(result.manifest_key, objects) == nights.rows(nights.keys[-1])
    record.check("the night extracts exactly the clean night's rows")
    # A full-history test run (what `dbt build` does without run_date) still finds it.
    full = dbt.invoke(
        ["test", "--select", "stg_shop__order_items"], settings=settings, target="source"
    )
    source.close()
    assert not full.success
    assert any("non_negative" in f.unique_id for f in full.failures), full.failures
    record.check("a full-history `dbt test` names non_negative_stg_shop__order_items_quantity")
