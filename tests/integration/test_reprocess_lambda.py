"""The reprocess state machine's steps through the real handlers (tests/reprocess_runner.py):
a chunk that fails stops the execution there; once the cause is fixed, a redrive resumes
at that chunk's failed step, and nothing is loaded twice."""

from __future__ import annotations

import json
from datetime import date, timedelta

import boto3
import pytest

from dbt_project import pipeline as pipeline_module
from dbt_project.errors import DataTestsFailed, LoadTimedOut
from dbt_project.facts.stage_layout import manifest_key
from dbt_project.plan import CostModel
from dbt_project.postgres.analytics_schema import LOAD_LOCK
from dbt_project.postgres.connection import connect
from dbt_project.postgres.source_schema import create_source_tables
from tests import reference
from tests.datagen import Shop
from tests.lambda_helpers import Context, load_handler, s3_event
from tests.reprocess_runner import Execution

FIRST, LAST = date(2026, 3, 2), date(2026, 3, 10)
# A chunk's "seconds" are its orders: 30 orders make chunks of two to four days.
BY_ORDERS = CostModel(fixed_seconds=0.0, seconds_per_order=1.0)


def ledger(target) -> list[tuple[date, str]]:
    conn = connect(target)
    with conn.cursor() as cur:
        cur.execute("select run_date, manifest_key from ledger.load_ledger order by run_date")
        rows = cur.fetchall()
    conn.close()
    return rows


def _break_a_line(source, day: date) -> tuple[int, int]:
    """A negative quantity on an order line of ``day``: the extract's dbt tests refuse it."""
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute(
            "select conname from pg_constraint where conrelid = 'order_items'::regclass "
            "and pg_get_constraintdef(oid) like '%quantity%'"
        )
        cur.execute(f'alter table order_items drop constraint "{cur.fetchone()[0]}"')
        cur.execute(
            "update order_items set quantity = -quantity where order_item_id = (select "
            "min(i.order_item_id) from order_items i join orders o using (order_id) "
            "where (o.ordered_at at time zone 'Asia/Tokyo')::date = %s) "
            "returning order_item_id, -quantity",
            (day,),
        )
        item = cur.fetchone()
    conn.close()
    return item


def _mend_the_line(source, item: tuple[int, int]) -> None:
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute("update order_items set quantity = %s where order_item_id = %s", item[::-1])
    conn.close()


@pytest.fixture
def shop(aws, monkeypatch):
    conn = connect(aws["source"])
    with conn:
        create_source_tables(conn)
    Shop(conn, seed=20261207).history(FIRST, LAST)
    conn.close()
    load_handler("db_initializer")({"sample_data": False}, Context("db_initializer"))
    monkeypatch.setattr(pipeline_module, "COST", BY_ORDERS)
    topic = boto3.client("sns").create_topic(Name="run-reports")["TopicArn"]
    queue = boto3.client("sqs").create_queue(QueueName="reports")["QueueUrl"]
    queue_arn = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    boto3.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("RUN_REPORTS_TOPIC_ARN", topic)
    return queue


def test_a_failed_chunk_is_redriven_where_it_failed_and_nothing_is_doubled(aws, shop):
    execution = Execution({"full_refresh": True, "end": str(LAST), "budget_minutes": 0.5})

    # given an order line that breaks a data test in the second chunk
    plan = load_handler("extract")({"plan": execution.execution_input}, Context("extract"))
    assert plan["count"] >= 3
    second = plan["chunks"][1]
    second_first = date.fromisoformat(second["run_date"]) - timedelta(
        days=second["lookback_days"] - 1
    )
    item = _break_a_line(aws["source"], second_first)

    # when the execution runs, it fails there: a refusal, not retried
    with pytest.raises(DataTestsFailed):
        execution.run()
    assert (execution.failed, execution.state["next"]) == ("ExtractChunk", 1)
    assert [key for _, key in ledger(aws["target"])] == [
        manifest_key(date.fromisoformat(plan["chunks"][0]["run_date"]))
    ]
    staged = boto3.client("s3").list_objects_v2(Bucket=aws["bucket"]).get("Contents", [])
    assert manifest_key(date.fromisoformat(second["run_date"])) not in {o["Key"] for o in staged}

    # and, once the line is mended, the third chunk's load meets the load lock held by
    # another session until its time limit (LoadTimedOut, retried by the state machine,
    # here failing the execution), while the S3 event's own load is on its way
    _mend_the_line(aws["source"], item)
    holder = connect(aws["target"])

    def hold_the_lock(index: int) -> None:
        if index == 2:
            with holder.cursor() as cur:
                cur.execute("select pg_advisory_xact_lock(%s)", (LOAD_LOCK,))
            execution.load_remaining_ms = 121_500  # a load time limit of 1.5 s

    execution.after_extract = hold_the_lock
    with pytest.raises(LoadTimedOut):
        execution.redrive()
    assert (execution.failed, execution.state["next"]) == ("LoadChunk", 2)
    holder.rollback()
    holder.close()
    third = execution.state["extracted"]["manifest_key"]
    delivered = load_handler("load")(s3_event(aws["bucket"], third), Context("load"))
    assert delivered["loads"][0]["status"] == "loaded"

    # then a second redrive resumes at that load, which finds it done, and goes on
    execution.load_remaining_ms = 600_000
    output = execution.redrive()

    chunks = plan["chunks"]
    extracts = [(p["chunk"], a) for step, p, a in execution.calls if step == "ExtractChunk"]
    assert [chunk for chunk, _ in extracts] == [chunks[0], chunks[1], chunks[1], *chunks[2:]]
    assert extracts[1][1] is None  # the refused one
    loads = [(p["manifest_key"], a) for step, p, a in execution.calls if step == "LoadChunk"]
    assert [(a or {}).get("loads", [{}])[0].get("status") for key, a in loads if key == third] == [
        None,
        "duplicate",
    ]
    # every chunk loaded once, in day order
    loaded = ledger(aws["target"])
    assert [d for d, _ in loaded] == [date.fromisoformat(c["run_date"]) for c in chunks]
    expected = reference.marts(reference.fetch_source(aws["source"]), as_of=LAST)
    actual = reference.read_marts(aws["target"])
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    assert actual["customer_analytics"].keys() == expected["customer_analytics"].keys()

    # and its report, sent to the RunReports topic, counts each chunk once
    report = output["report"]
    assert (report["status"], report["kind"]) == ("done", "full_refresh")
    assert (report["chunks"], report["days"]) == (plan["count"], (LAST - FIRST).days + 1)
    assert report["rows"] == sum(a["rows_extracted"] for _, a in extracts if a)
    assert report["failures"] == 2 and report["seconds"] >= 0
    assert report in received(shop)


def received(queue: str) -> list[dict]:
    """Every message the topic passed to ``queue``."""
    sqs, found = boto3.client("sqs"), []
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        found += [json.loads(json.loads(m["Body"])["Message"]) for m in messages]
        sqs.delete_message_batch(
            QueueUrl=queue,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
            ],
        )
    return found
