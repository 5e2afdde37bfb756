"""The three Lambda handlers with real-shaped events, as the stack deploys them: extract
and load log in as etl_extract and etl_load through the IAM token path, the initializer
alone with the master secrets, every connection over verify-full; against real
PostgreSQL with TLS and a moto S3 / Secrets Manager server over HTTP."""

from __future__ import annotations

import json
from datetime import date

import boto3
import pytest
from psycopg2 import sql

from dbt_project.aws import handlers as lambda_app
from dbt_project.errors import ConfigError, CredentialsError
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.facts.stage_layout import DOCS_KEY
from dbt_project.local.demo import EXAMPLE_QUERIES, run_example_queries
from dbt_project.postgres.connection import Database, connect
from tests import reference
from tests.lambda_helpers import Context, load_handler, s3_event
from tests.pipeline_helpers import snapshot
from tests.reprocess_runner import Execution
from tests.tls_server import LOGIN_PASSWORD

LAST_SAMPLE_DAY = date(2026, 11, 25)


def test_a_whole_night_through_the_handlers(aws, capsys):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    log = aws["server"].log_size()
    assert (
        init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))[
            "status"
        ]
        == "initialised"
    )
    # The history in one manual run, then the scheduled night of the last sample day.
    extract({"run_date": "2026-11-24", "lookback_days": 90}, Context("extract"))
    first = load(s3_event(aws["bucket"], "etl-data/2026-11-24/_manifest.json"), Context("load"))
    assert first["loads"][0]["status"] == "loaded"
    night = extract(
        {
            "version": "0",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "time": "2026-11-25T17:00:00Z",
            "detail": {},
        },
        Context("extract"),
    )
    assert night["runs"][0]["run_date"] == "2026-11-25"
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=aws["bucket"])["Contents"]]
    assert "etl-data/2026-11-25/_manifest.json" in keys
    assert "etl-data/2026-11-25/_dbt/run_results.json" in keys
    data_file = next(
        k for k in keys if k.startswith("etl-data/2026-11-25/") and k.endswith(".tsv.gz")
    )
    ignored = load(s3_event(aws["bucket"], data_file), Context("load"))
    assert ignored["loads"] == [] and ignored["ignored"] == [data_file]
    result = load(s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json"), Context("load"))
    assert result["loads"][0]["status"] == "loaded"
    # the run report, kept beside the ledger by the load's own login, and the docs site
    report = result["loads"][0]["report"]
    assert report["run_date"] == "2026-11-25" and report["status"] == "loaded"
    assert reports_kept(aws["target"]) == [("2026-11-24", "loaded"), ("2026-11-25", "loaded")]
    assert DOCS_KEY in published(aws["bucket"])

    expected = reference.marts(reference.fetch_source(aws["source"]), as_of=LAST_SAMPLE_DAY)
    actual = reference.read_marts(aws["target"])
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    # Each customer is as of the last of the two nights that touched it.
    shop = reference.fetch_source(aws["source"])
    as_of = reference.as_of_dates(shop, [(date(2026, 11, 24), 90), (LAST_SAMPLE_DAY, 2)])
    customers = actual["customer_analytics"]
    assert customers.keys() == expected["customer_analytics"].keys()
    assert {c: row["as_of_date"] for c, row in customers.items()} == {
        c: as_of[c] for c in customers
    }
    for c, row in customers.items():
        assert row == {**expected["customer_analytics"][c], "as_of_date": as_of[c]}
        assert row["last_order_date"] <= row["as_of_date"]
    assert set(as_of.values()) == {date(2026, 11, 24), LAST_SAMPLE_DAY}

    # a full refresh up to the last day, run by the reprocess state machine's steps on
    # the same functions, re-states every table as of it
    output = Execution({"full_refresh": True, "end": "2026-11-25"}).run()
    assert output["report"]["last_day"] == "2026-11-25"
    assert reference.read_marts(aws["target"]) == expected

    answers = run_example_queries(Database.from_settings(aws["target"]))
    assert [q for q, _, _ in answers] == list(EXAMPLE_QUERIES)
    assert all(rows for _, _, rows in answers)
    top = answers[0]
    assert len(top[2]) == 10
    out = capsys.readouterr().out
    for metric in (
        "RecordsExtracted",
        "ExtractionTime",
        "DataLoadTime",
        "S3ReadTime",
        "RecordsLoaded_customer_analytics",
        "ColdStart",
    ):
        assert metric in out
    assert_as_deployed(aws, aws["server"].log_since(log))


def assert_as_deployed(aws, log: str) -> None:
    """Extract and load logged in only as etl_extract and etl_load, with tokens from the
    token path, the initializer alone as the master login; every session encrypted."""
    assert {user for user, _, _ in aws["tokens"].calls} == {EXTRACT_LOGIN, LOAD_LOGIN}
    assert {(host, port) for _, host, port in aws["tokens"].calls} == {
        (aws["source"].host, aws["source"].port)
    }
    sessions = [line for line in log.splitlines() if "connection authorized: user=" in line]
    users = {line.split("user=")[1].split()[0] for line in sessions}
    # the test's own checks log in as the server's superuser, postgres
    assert users == {aws["user"], EXTRACT_LOGIN, LOAD_LOGIN, "postgres"}, users
    assert all("SSL enabled (protocol=TLS" in line for line in sessions), sessions


def reports_kept(target) -> list[tuple[str, str]]:
    conn = connect(target)
    with conn.cursor() as cur:
        cur.execute("select run_date::text, status from ledger.run_reports order by run_date")
        rows = cur.fetchall()
    conn.close()
    return rows


def published(bucket: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="docs/")
    return [item["Key"] for item in listed.get("Contents", [])]


def test_duplicate_s3_delivery_is_a_no_op(aws):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    assert load(event, Context("load"))["loads"][0]["status"] == "loaded"
    before = snapshot(aws["target"])
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    assert snapshot(aws["target"]) == before


def set_password(admin, login: str, password: str) -> None:
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("alter role {} password %s").format(sql.Identifier(login)), (password,))
    conn.close()


def end_sessions(admin, login: str) -> None:
    """As an idle timeout or a scale event would."""
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", (login,)
        )
    conn.close()


def test_a_refused_iam_token_is_replaced_once_and_the_night_succeeds(aws):
    init, extract = load_handler("db_initializer"), load_handler("extract")
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))  # a warm container: token kept
    # given the token the container holds no longer accepted, its sessions ended
    set_password(aws["source"], EXTRACT_LOGIN, "the-next-token")
    try:
        aws["tokens"].passwords[EXTRACT_LOGIN] = "the-next-token"
        end_sessions(aws["source"], EXTRACT_LOGIN)
        made = len(aws["tokens"].calls)
        # when the next night runs in the same container
        assert extract({"run_date": "2026-11-25"}, Context("extract"))["status"] == "extracted"
        # then the refused token was replaced exactly once, and the night ran
        assert len(aws["tokens"].calls) - made == 1
    finally:
        set_password(aws["source"], EXTRACT_LOGIN, LOGIN_PASSWORD)


def test_a_rotated_master_secret_is_re_read_once_by_the_initializer(aws, monkeypatch):
    init = load_handler("db_initializer")
    init({"sample_data": False}, Context("db_initializer"))  # caches the first secret
    set_password(aws["source"], aws["user"], "second-password")
    for arn in aws["arns"].values():
        aws["secrets"].put_secret_value(
            SecretId=arn,
            SecretString=json.dumps({"username": aws["user"], "password": "second-password"}),
        )
    # As in a container whose connections were dropped: warm secret cache, no connection.
    end_sessions(aws["source"], aws["user"])
    # Every GetSecretValue from here on (a cache hit never reaches the provider's _get).
    from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

    reads: list[str] = []
    fetch = SecretsProvider._get

    def counted(self, name, **sdk_options):
        reads.append(name)
        return fetch(self, name, **sdk_options)

    monkeypatch.setattr(SecretsProvider, "_get", counted)
    assert init({"sample_data": False}, Context("db_initializer"))["status"] == "initialised"
    # The stale cached password is refused once per database; each secret read once.
    assert sorted(reads) == sorted(aws["arns"].values())


def test_a_wrong_secret_or_token_fails_clearly_before_any_work(aws):
    init, extract = load_handler("db_initializer"), load_handler("extract")
    aws["secrets"].put_secret_value(
        SecretId=aws["arns"]["SOURCE"],
        SecretString=json.dumps({"username": aws["user"], "password": "wrong"}),
    )
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        init({"sample_data": True}, Context("db_initializer"))
    lambda_app.reset()
    aws["logins"]["db_initializer"]["SOURCE_DB_SECRET_ARN"] += "-missing"
    with pytest.raises(CredentialsError, match="cannot read the source database secret"):
        init({"sample_data": True}, Context("db_initializer"))
    assert not source_tables(aws["source"])
    # a token the database does not accept: refused after one fresh token
    aws["tokens"].passwords[EXTRACT_LOGIN] = "not-the-token"
    with pytest.raises(
        CredentialsError, match='password authentication failed for user "etl_extract"'
    ):
        extract({"run_date": "2026-11-25"}, Context("extract"))
    assert [user for user, _, _ in aws["tokens"].calls] == [EXTRACT_LOGIN, EXTRACT_LOGIN]
    assert boto3.client("s3").list_objects_v2(Bucket=aws["bucket"]).get("KeyCount") == 0


def source_tables(source) -> list[str]:
    conn = connect(source)
    with conn.cursor() as cur:
        cur.execute("select tablename from pg_tables where schemaname = 'public'")
        rows = [name for (name,) in cur.fetchall()]
    conn.close()
    return rows


def test_bad_events_are_refused_before_any_database_work(aws, monkeypatch):
    monkeypatch.setenv("SOURCE_DB_HOST", "unreachable.invalid")
    extract, load = load_handler("extract"), load_handler("load")
    with pytest.raises(ConfigError, match="runs in chunks on the reprocess state machine"):
        extract({"start_date": "2026-01-01", "end_date": "2026-03-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="not a real calendar date"):
        extract({"run_date": "2026-13-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="unrecognised load event"):
        load({"detail": {}}, Context("load"))
