"""The db_initializer as the original README drives it (`aws lambda invoke` with no
payload) and as a deployment runs it (a CloudFormation custom resource)."""

from __future__ import annotations

import csv
import json
import logging
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import boto3
import psycopg2
import pytest
from psycopg2 import sql

from dbt_project.facts.business_calendar import business_date, previous_business_day
from dbt_project.facts.names import REPROCESS_PROPERTY
from dbt_project.facts.roles import LOADER_ROLE, READER_ROLE
from dbt_project.local.demo import EXAMPLE_QUERIES
from dbt_project.pipeline import SOURCE_HAS_ROWS
from dbt_project.postgres.connection import connect
from dbt_project.postgres.source_schema import SOURCE_TABLES, history_bounds, seeds_dir
from tests import reference
from tests.integration._dbt_helpers import query
from tests.lambda_helpers import Context, load_handler
from tests.pipeline_helpers import edit, project_copy
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


# The sample's own last business day, in its CSV files.
SAMPLE_LAST_DAY = date(2026, 11, 25)
# Columns the sample's end date moves; every other column keeps the CSV's value.
SHIFTED = {"customers": {"created_at"}, "orders": {"ordered_at", "updated_at"}}


def sample_as_shifted(table: str, days: int) -> list[tuple]:
    """The CSV rows of ``table`` as the source should hold them, ``days`` later."""

    def value(column: str, text: str):
        if column in SHIFTED.get(table, ()):
            return datetime.fromisoformat(text) + timedelta(days=days)
        if column.endswith("_id") or column == "quantity":
            return int(text)
        if column in ("price", "unit_price"):
            return Decimal(text)
        return text

    with (seeds_dir() / f"{table}.csv").open(encoding="utf-8") as handle:
        return [tuple(value(c, v) for c, v in row.items()) for row in csv.DictReader(handle)]


def source_table(settings, table: str) -> list[tuple]:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("select * from {} order by 1").format(sql.Identifier("public", table)))
        rows = cur.fetchall()
    conn.close()
    return rows


def test_no_payload_fills_an_empty_source_with_a_history_ending_today(aws, frozen_clock):
    init = load_handler("db_initializer")
    # when the initializer runs with no payload on an empty source (today is not the
    # sample's own last day)
    today = business_date(frozen_clock)
    assert today != SAMPLE_LAST_DAY
    result = init({}, Context("db_initializer"))
    # then the sample rows are in, their history ending on today's business day
    assert result["status"] == "initialised" and result["sample_rows"]["orders"] > 5000
    assert result["sample_data"].startswith("loaded: customers +")
    conn = connect(aws["source"])
    first, last = history_bounds(conn)
    conn.close()
    assert last == today
    assert (last - first).days == (SAMPLE_LAST_DAY - date(2026, 8, 28)).days
    # every timestamp moved by the same whole days, every other value as in the CSV
    for table in SOURCE_TABLES:
        expected = sample_as_shifted(table, (today - SAMPLE_LAST_DAY).days)
        assert source_table(aws["source"], table) == expected, table
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


def test_the_initializer_starts_the_history_load_and_the_views_answer(
    aws, state_machine, frozen_clock
):
    # when the initializer fills an empty source
    result = load_handler("db_initializer")({}, Context("db_initializer"))

    # then it has started one execution that rebuilds the whole finished history
    started = result["history_load"]
    assert (started["state_machine"], started["input"]) == (state_machine, {"full_refresh": True})
    execution = boto3.client("stepfunctions").describe_execution(executionArn=started["execution"])
    assert json.loads(execution["input"]) == {"full_refresh": True}

    # and that execution's steps, run by the real handlers, fill the analytic views
    output = Execution(started["input"]).run()
    yesterday = previous_business_day(frozen_clock)
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
    log = aws["server"].log_size()
    load_handler("db_initializer")(
        {"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer")
    )
    # The server, which logs every DDL statement, saw the password's verifier only.
    statements = aws["server"].log_since(log)
    assert password not in statements
    assert "SCRAM-SHA-256$4096:" in statements
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


def _logs(caplog) -> list[logging.LogRecord]:
    """The function's log records so far (their extra keys are attributes)."""
    records = list(caplog.records)
    caplog.clear()
    return records


def test_a_deployment_logs_its_plan_and_starts_the_reprocess_a_changed_mart_needs(
    aws, state_machine, tmp_path, monkeypatch, caplog
):
    # given a deployed project (a copy) over an analytics database with a loaded night
    project = project_copy(tmp_path / "project")
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    init = load_handler("db_initializer")
    init(custom_resource("Create"), Context("db_initializer"))
    conn = connect(aws["target"])
    with conn, conn.cursor() as cur:
        cur.execute(
            "insert into ledger.load_ledger (run_id, run_date, manifest_key, manifest_sha256, "
            "extracted_at, loaded_at) values (gen_random_uuid(), '2026-11-20', 'k', 's', now(), "
            "now())"
        )
        cur.execute(
            "insert into ledger.day_versions values "
            "('2026-11-01', '2026-11-20', now(), gen_random_uuid())"
        )
    conn.close()
    caplog.clear()
    mart = project / "models/marts/daily_sales_summary.sql"
    update = custom_resource("Update", PhysicalResourceId="shop-etl-analytics")

    # when a deployment with the reprocessing turned off changes a day mart's SQL
    edit(mart, "count(*) as order_count", "count(1) as order_count")
    off = {**update, "ResourceProperties": {"CodeHash": "b", REPROCESS_PROPERTY: "false"}}
    answer = init(off, Context("db_initializer"))

    # then it logged its plan first, says what is needed and starts nothing
    logs = _logs(caplog)
    plan = next(r.plan for r in logs if r.getMessage() == "analytics upgrade plan")
    assert plan["changed_marts"] == {"daily_sales_summary": "its SQL changed"}
    needed = "reprocess needed from 2026-11-01 to 2026-11-20 for marts daily_sales_summary"
    assert answer["Data"]["Reprocess"].startswith(needed)
    assert not any(hasattr(r, "started") for r in logs)
    assert query(aws["target"], "select started from ledger.reprocess_requests") == [
        {
            "started": "not started, turned off (context reprocess_changed_models=false): "
            'start the reprocess state machine with {"full_refresh": true} to run it'
        }
    ]

    # when the next deployment, with the default, changes it again
    edit(mart, "count(1) as order_count", "count(*) as order_count")
    answer = init({**update, "RequestId": "again"}, Context("db_initializer"))

    # then it starts a full refresh on the reprocess state machine
    logs = _logs(caplog)
    (started,) = [r.started for r in logs if r.getMessage().startswith(needed)]
    assert (started["state_machine"], started["input"]) == (state_machine, {"full_refresh": True})
    execution = boto3.client("stepfunctions").describe_execution(executionArn=started["execution"])
    assert json.loads(execution["input"]) == {"full_refresh": True}
    requests_ = query(
        aws["target"], "select started from ledger.reprocess_requests order by requested_at"
    )
    assert requests_[-1] == {"started": f'started: {{"full_refresh": true}} on {state_machine}'}
    assert answer["Data"]["Reprocess"].startswith(needed)


def stamped(kind: str, versions: dict, stamp: str, old: dict | None = None) -> dict:
    """A deployment's event as the stack sends it: code hashes, addresses and a stamp."""
    event = custom_resource(kind, PhysicalResourceId="shop-etl-analytics")
    event["ResourceProperties"] = {**versions, "DeployStamp": stamp}
    if old is not None:
        event["OldResourceProperties"] = old
    return event


def drift_a_view(settings) -> None:
    """A view that differs from the deployed model: an upgrade rebuilds it, a skip does not."""
    conn = connect(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("drop view analytics.top_customers")
        cur.execute("create view analytics.top_customers as select 1 as stale")
    conn.close()


def upgrades(settings) -> list[tuple[str, dict]]:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute(
            "select to_char(deploy_stamp at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
            "versions from ledger.upgrades order by deploy_stamp"
        )
        found = cur.fetchall()
    conn.close()
    return found


def test_a_rollback_to_the_previous_versions_is_answered_without_work(aws):
    init = load_handler("db_initializer")
    v1, v2, v3 = {"ExtractCode": "1.zip"}, {"ExtractCode": "2.zip"}, {"ExtractCode": "3.zip"}
    s0, s1, s2, s3 = (f"2026-11-2{day}T09:00:00Z" for day in (0, 1, 2, 3))
    # given a first deployment and an update, each upgrading and recording its versions
    init(stamped("Create", v1, s1), Context("db_initializer"))
    deployed = views(aws["target"])
    drift_a_view(aws["target"])
    update = init(stamped("Update", v2, s2, old={**v1, "DeployStamp": s1}), Context("x"))
    assert (
        update["Data"]["Views"] == len(list(ANALYTICS_MODELS.glob("*.sql")))
        and views(aws["target"]) == deployed
    )
    assert upgrades(aws["target"]) == [(s1, v1), (s2, v2)]

    # when a later resource fails and CloudFormation replays the first template
    drift_a_view(aws["target"])
    rollback = init(stamped("Update", v1, s1, old={**v2, "DeployStamp": s2}), Context("x"))
    # then it succeeds without upgrading anything, and records nothing
    assert rollback["PhysicalResourceId"] == "shop-etl-analytics"
    assert "rollback" in rollback["Data"]["Skipped"]
    assert views(aws["target"]) != deployed, "the upgrade ran"
    # and so does a deployment that changed only the stamp
    same = init(stamped("Update", v2, s3, old={**v2, "DeployStamp": s2}), Context("x"))
    assert same["Data"]["Skipped"] and views(aws["target"]) != deployed
    assert upgrades(aws["target"]) == [(s1, v1), (s2, v2)]

    # while new versions upgrade even when the deployer's clock is behind (s0 < s2)
    init(stamped("Update", v3, s0, old={**v2, "DeployStamp": s3}), Context("x"))
    assert views(aws["target"]) == deployed
    assert upgrades(aws["target"]) == [(s0, v3), (s1, v1), (s2, v2)]
    # and only deployments (the master login) write that ledger, not the loader
    conn = connect(aws["target"])
    with conn.cursor() as cur:
        cur.execute(
            "select has_table_privilege(%s, 'ledger.upgrades', 'INSERT, UPDATE, DELETE')",
            (LOADER_ROLE,),
        )
        (loader_may_write,) = cur.fetchone()
    conn.close()
    assert loader_may_write is False
