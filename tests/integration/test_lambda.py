"""The three Lambda handlers with real-shaped events, against real PostgreSQL and a moto
S3 / Secrets Manager server over HTTP."""

from __future__ import annotations

import json
from datetime import date

import boto3
import pytest
from psycopg2 import sql

from dbt_project.aws import handlers as lambda_app
from dbt_project.errors import ConfigError, CredentialsError
from dbt_project.local.demo import EXAMPLE_QUERIES, run_example_queries
from dbt_project.postgres.connection import Database, connect
from dbt_project.settings import Settings
from tests import reference
from tests.lambda_helpers import Context, load_handler, s3_event
from tests.pipeline_helpers import snapshot

LAST_SAMPLE_DAY = date(2026, 11, 25)


def test_a_whole_night_through_the_handlers(aws, capsys):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
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


def test_duplicate_s3_delivery_is_a_no_op(aws):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    assert load(event, Context("load"))["loads"][0]["status"] == "loaded"
    before = snapshot(aws["target"])
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    assert snapshot(aws["target"]) == before


def test_a_rotated_password_is_re_read_once_and_the_night_succeeds(aws, monkeypatch):
    init, extract = load_handler("db_initializer"), load_handler("extract")
    init(
        {"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer")
    )  # caches the first secret
    conn = connect(aws["source"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter role {} password 'second-password'").format(sql.Identifier(aws["user"]))
        )
    conn.close()
    for arn in aws["arns"].values():
        aws["secrets"].put_secret_value(
            SecretId=arn,
            SecretString=json.dumps({"username": aws["user"], "password": "second-password"}),
        )
    # As in a container whose connections were dropped: warm secret cache, no connection.
    for prefix in ("SOURCE", "ANALYTICS"):
        lambda_app.database(Settings.from_env(), prefix).close()
    # Every GetSecretValue from here on (a cache hit never reaches the provider's _get).
    from aws_lambda_powertools.utilities.parameters.secrets import SecretsProvider

    reads: list[str] = []
    fetch = SecretsProvider._get

    def counted(self, name, **sdk_options):
        reads.append(name)
        return fetch(self, name, **sdk_options)

    monkeypatch.setattr(SecretsProvider, "_get", counted)
    assert extract({"run_date": "2026-11-25"}, Context("extract"))["status"] == "extracted"
    # The stale cached password is refused once; the secret is read again exactly once.
    assert reads == [aws["arns"]["SOURCE"]]
    # and the fresh secret is cached: a new connection reads nothing
    lambda_app.database(Settings.from_env(), "SOURCE").close()
    assert extract({"run_date": "2026-11-25"}, Context("extract"))["status"] == "extracted"
    assert reads == [aws["arns"]["SOURCE"]]


def test_a_wrong_or_missing_secret_fails_clearly_before_any_work(aws, monkeypatch):
    extract = load_handler("extract")
    aws["secrets"].put_secret_value(
        SecretId=aws["arns"]["SOURCE"],
        SecretString=json.dumps({"username": aws["user"], "password": "wrong"}),
    )
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        extract({"run_date": "2026-11-25"}, Context("extract"))
    lambda_app.reset()
    monkeypatch.setenv("SOURCE_DB_SECRET_ARN", aws["arns"]["SOURCE"] + "-missing")
    with pytest.raises(CredentialsError, match="cannot read the source database secret"):
        extract({"run_date": "2026-11-25"}, Context("extract"))
    assert boto3.client("s3").list_objects_v2(Bucket=aws["bucket"]).get("KeyCount") == 0


def test_bad_events_are_refused_before_any_database_work(aws, monkeypatch):
    monkeypatch.setenv("SOURCE_DB_HOST", "unreachable.invalid")
    extract, load = load_handler("extract"), load_handler("load")
    with pytest.raises(ConfigError, match="runs in chunks on the reprocess state machine"):
        extract({"start_date": "2026-01-01", "end_date": "2026-03-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="not a real calendar date"):
        extract({"run_date": "2026-13-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="unrecognised load event"):
        load({"detail": {}}, Context("load"))
