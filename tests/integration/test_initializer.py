"""The db_initializer as the original README drives it (`aws lambda invoke` with no
payload) and as a deployment runs it (a CloudFormation custom resource)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from pathlib import Path

import boto3
import psycopg2
import pytest
from psycopg2 import sql

from dbt_project.facts.business_calendar import business_date, previous_business_day, utc_now
from dbt_project.facts.roles import READER_ROLE
from dbt_project.local.demo import EXAMPLE_QUERIES
from dbt_project.pipeline import SOURCE_HAS_ROWS
from dbt_project.postgres.connection import connect
from dbt_project.postgres.source_schema import history_bounds
from tests import reference
from tests.lambda_helpers import Context, load_handler
from tests.reprocess_runner import Execution

ANALYTICS_MODELS = Path(__file__).resolve().parents[2] / "models" / "analytics"


def source_rows(settings) -> int:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute("select count(*) from public.orders")
        (count,) = cur.fetchone()
    conn.close()
    return count


def views(settings) -> dict[str, str]:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(
            "select viewname, definition from pg_views where schemaname = 'analytics' order by 1"
        )
        found = dict(cur.fetchall())
    conn.close()
    return found


def test_no_payload_fills_an_empty_source_with_a_history_ending_today(aws):
    init = load_handler("db_initializer")
    # when the initializer runs with no payload on an empty source
    result = init({}, Context("db_initializer"))
    # then the sample rows are in, their history ending on today's business day
    assert result["status"] == "initialised" and result["sample_rows"]["orders"] > 5000
    assert result["sample_data"].startswith("loaded: customers +")
    conn = connect(aws["source"])
    first, last = history_bounds(conn)
    conn.close()
    assert last == business_date(utc_now())
    assert (last - first).days == (date(2026, 11, 25) - date(2026, 8, 28)).days
    # and running it again adds nothing, and says why
    again = init({}, Context("db_initializer"))
    assert again["sample_rows"] is None and again["sample_data"] == SOURCE_HAS_ROWS
    assert source_rows(aws["source"]) == result["sample_rows"]["orders"]


def test_a_source_with_rows_of_its_own_never_gets_sample_rows(aws):
    conn = connect(aws["source"])
    with conn, conn.cursor() as cur:
        from dbt_project.postgres.source_schema import create_source_tables

        create_source_tables(conn)
        cur.execute(
            "insert into public.customers values "
            "(1, '本物 顧客', 'real@shop.example', '大阪', now())"
        )
    conn.close()
    result = load_handler("db_initializer")({}, Context("db_initializer"))
    assert result["sample_data"] == SOURCE_HAS_ROWS and result["sample_rows"] is None
    assert source_rows(aws["source"]) == 0


def test_sample_data_false_opts_out(aws):
    result = load_handler("db_initializer")({"sample_data": False}, Context("db_initializer"))
    assert result["sample_rows"] is None and result["sample_data"] == "not requested"
    assert source_rows(aws["source"]) == 0


@pytest.fixture
def state_machine(aws, monkeypatch):
    """A reprocess state machine on the moto endpoint: executions are recorded there (no
    step runs); the test then runs its steps through the real handlers."""
    role = boto3.client("iam").create_role(
        RoleName=f"reprocess-{uuid.uuid4().hex[:6]}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    arn = boto3.client("stepfunctions").create_state_machine(
        name=f"shop-etl-reprocess-{uuid.uuid4().hex[:6]}",
        definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Succeed"}}}),
        roleArn=role,
    )["stateMachineArn"]
    monkeypatch.setenv("REPROCESS_STATE_MACHINE_ARN", arn)
    return arn


def test_the_initializer_starts_the_history_load_and_the_views_answer(aws, state_machine):
    # when the initializer fills an empty source
    result = load_handler("db_initializer")({}, Context("db_initializer"))

    # then it has started one execution that rebuilds the whole finished history
    started = result["history_load"]
    assert (started["state_machine"], started["input"]) == (state_machine, {"full_refresh": True})
    execution = boto3.client("stepfunctions").describe_execution(executionArn=started["execution"])
    assert json.loads(execution["input"]) == {"full_refresh": True}

    # and that execution's steps, run by the real handlers, fill the analytic views
    output = Execution(started["input"]).run()
    yesterday = previous_business_day(utc_now())
    conn = connect(aws["source"])
    first, _ = history_bounds(conn)
    conn.close()
    assert (output["report"]["first_day"], output["report"]["last_day"]) == (
        first.isoformat(),
        yesterday.isoformat(),
    )
    expected = reference.marts(reference.fetch_source(aws["source"]), as_of=yesterday)
    actual = reference.read_marts(aws["target"])
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert max(key[0] for key in actual["daily_sales_summary"]) == yesterday


def custom_resource(kind: str, **extra) -> dict:
    return {
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:ap-northeast-1:123456789012:function:provider",
        "ResponseURL": "https://cloudformation-custom-resource-response.example/",
        "StackId": "arn:aws:cloudformation:ap-northeast-1:123456789012:stack/ShopEtl/x",
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "AnalyticsUpgrade",
        "ResourceType": "Custom::AnalyticsUpgrade",
        "ResourceProperties": {"CodeHash": "abc"},
        **extra,
    }


def test_a_deployment_upgrades_the_analytics_side_and_never_adds_sample_rows(aws):
    init = load_handler("db_initializer")
    created = init(custom_resource("Create"), Context("db_initializer"))
    assert created["PhysicalResourceId"] == "shop-etl-analytics"
    # every model of models/analytics: the four example views and volume_anomalies
    assert created["Data"]["Views"] == len(list(ANALYTICS_MODELS.glob("*.sql"))) == 5
    assert source_rows(aws["source"]) == 0
    deployed = views(aws["target"])

    # given a view that drifted from the deployed model
    conn = connect(aws["target"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("drop view analytics.top_customers")
        cur.execute("create view analytics.top_customers as select 1 as stale")
    conn.close()
    assert views(aws["target"]) != deployed

    # when a deployment updates the stack, the view is rebuilt from the deployed model
    update = custom_resource("Update", PhysicalResourceId="shop-etl-analytics")
    assert init(update, Context("db_initializer"))["PhysicalResourceId"] == "shop-etl-analytics"
    assert views(aws["target"]) == deployed
    # and a second run changes nothing
    init(update, Context("db_initializer"))
    assert views(aws["target"]) == deployed

    # a stack deletion leaves the data alone
    gone = init(custom_resource("Delete", PhysicalResourceId="shop-etl-analytics"), Context("x"))
    assert gone == {"PhysicalResourceId": "shop-etl-analytics"}
    assert views(aws["target"]) == deployed


def test_the_reader_login_runs_the_example_queries_with_its_secret(aws, monkeypatch):
    password = f"reader-{uuid.uuid4().hex}"
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"reader-{uuid.uuid4().hex[:6]}",
        SecretString=json.dumps({"username": READER_ROLE, "password": password}),
    )["ARN"]
    monkeypatch.setenv("READER_SECRET_ARN", arn)
    load_handler("db_initializer")(
        {"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer")
    )
    conn = psycopg2.connect(
        host=aws["target"].host,
        port=aws["target"].port,
        dbname=aws["target"].dbname,
        user=READER_ROLE,
        password=password,
    )
    with conn.cursor() as cur:
        for query in EXAMPLE_QUERIES:
            cur.execute(query)  # verbatim: the views resolve without a schema
            cur.fetchall()
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(sql.SQL("delete from analytics.customer_analytics"))
    conn.close()
