"""The three Lambda handlers with real-shaped events, against real PostgreSQL and a moto
S3 / Secrets Manager server over HTTP."""

from __future__ import annotations

import importlib.util
import json
import uuid
from datetime import date
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pytest
from psycopg2 import sql

from dbt_project import lambda_app, observability
from dbt_project.db import Database, connect
from dbt_project.demo import EXAMPLE_QUERIES, run_example_queries
from dbt_project.errors import ConfigError, CredentialsError
from dbt_project.settings import Settings
from tests import reference
from tests.pipeline_helpers import snapshot

ROOT = Path(__file__).resolve().parents[2]
LAST_SAMPLE_DAY = date(2026, 11, 25)


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}", ROOT / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


class Context:
    def __init__(self, name):
        self.function_name = name
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:ap-northeast-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self):
        return 600_000


def login_role(admin, password):
    """A password-authenticated owner for one test, so its password can be rotated."""
    name = f"etl_{uuid.uuid4().hex[:8]}"
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create role {} login superuser password %s").format(sql.Identifier(name)),
            (password,),
        )
    conn.close()
    return name


@pytest.fixture
def aws(new_database, s3_bucket, monkeypatch, tmp_path, pg_server):
    source, target = new_database("src"), new_database("tgt")
    user = login_role(pg_server, "first-password")
    secrets = boto3.client("secretsmanager")
    arns = {}
    for prefix, settings in (("SOURCE", source), ("TARGET", target)):
        arns[prefix] = secrets.create_secret(
            Name=f"{prefix.lower()}-{uuid.uuid4().hex[:6]}",
            SecretString=json.dumps({"username": user, "password": "first-password"}),
        )["ARN"]
        monkeypatch.setenv(f"{prefix}_DB_HOST", settings.host)
        monkeypatch.setenv(f"{prefix}_DB_PORT", str(settings.port))
        monkeypatch.setenv(f"{prefix}_DB_NAME", settings.dbname)
        monkeypatch.setenv(f"{prefix}_DB_SECRET_ARN", arns[prefix])
    for key, value in {
        "S3_BUCKET": s3_bucket,
        "POWERTOOLS_SERVICE_NAME": "shop-etl",
        "POWERTOOLS_METRICS_NAMESPACE": "ShopEtl",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "ETL_PG_SSLMODE": "prefer",
        "ETL_WORK_DIR": str(tmp_path / "work"),
        "ETL_CONNECT_WAIT_SECONDS": "3",
        "ETL_STATEMENT_TIMEOUT_MS": "120000",
    }.items():
        monkeypatch.setenv(key, value)
    # The Powertools objects were made when this module was imported; in Lambda the
    # environment is set before any import.
    monkeypatch.setattr(observability.metrics, "namespace", "ShopEtl")
    monkeypatch.setattr(observability.metrics, "service", "shop-etl")
    lambda_app.reset()
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    yield {
        "source": source,
        "target": target,
        "user": user,
        "arns": arns,
        "bucket": s3_bucket,
        "secrets": secrets,
    }
    lambda_app.reset()


def s3_event(bucket, key):
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "ap-northeast-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": quote_plus(key), "size": 1234},
                },
            }
        ]
    }


def test_a_whole_night_through_the_handlers(aws, capsys):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    assert init({"sample_data": True}, Context("db_initializer"))["status"] == "initialised"
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
    drop = lambda m: {k: {c: v for c, v in r.items() if c != "as_of_date"} for k, r in m.items()}  # noqa: E731
    assert drop(actual["customer_analytics"]) == drop(expected["customer_analytics"])

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
    init({"sample_data": True}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    assert load(event, Context("load"))["loads"][0]["status"] == "loaded"
    before = snapshot(aws["target"])
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    assert snapshot(aws["target"]) == before


def test_a_rotated_password_is_re_read_once_and_the_night_succeeds(aws, monkeypatch):
    init, extract = load_handler("db_initializer"), load_handler("extract")
    init({"sample_data": True}, Context("db_initializer"))  # caches the first secret
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
    for prefix in ("SOURCE", "TARGET"):
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
    with pytest.raises(ConfigError, match="over the limit of 31"):
        extract({"start_date": "2026-01-01", "end_date": "2026-03-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="not a real calendar date"):
        extract({"run_date": "2026-13-01"}, Context("extract"))
    with pytest.raises(ConfigError, match="unrecognised load event"):
        load({"detail": {}}, Context("load"))
