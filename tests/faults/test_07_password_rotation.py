"""Fault 7: the database password rotates between nights, under warm Lambda containers.

The real handlers run with their secrets in moto's Secrets Manager; the fault proxy
sits in front of it too, so the test counts every GetSecretValue the handlers make.
"""

from __future__ import annotations

import importlib
import json

import pytest
from psycopg2 import sql

from dbt_project.errors import CredentialsError
from dbt_project.facts.stage_layout import day_prefix
from tests.faults import harness
from tests.lambda_helpers import Context, load_handler, s3_event
from tests.pipeline_helpers import snapshot

GET_SECRET = "secretsmanager.GetSecretValue"
COLD_START_FLAGS = (
    "aws_lambda_powertools.metrics.provider.cold_start",
    "aws_lambda_powertools.logging.logger",
    "aws_lambda_powertools.tracing.tracer",
)


@pytest.fixture
def lambdas(aws, nights, pg_server, proxy, private_work_dir, monkeypatch):
    """The Lambda suite's handler environment, pointed at the generated shop's source, a
    bucket holding its nights, and the fault proxy in front of S3 and Secrets Manager."""
    from aws_lambda_powertools.utilities.parameters import base

    bucket = nights.bucket(every_night=True)
    monkeypatch.setenv("SOURCE_DB_NAME", nights.source.dbname)
    monkeypatch.setenv("S3_BUCKET", bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("ETL_WORK_DIR", str(private_work_dir))  # dbt's parse is warm there
    base.DEFAULT_PROVIDERS.clear()  # a fresh container: its secrets client talks to the proxy
    # Powertools keeps "first invocation in this process" flags; restore them afterwards,
    # so that other suites still see their own cold start.
    for module in COLD_START_FLAGS:
        module = importlib.import_module(module)
        monkeypatch.setattr(module, "is_cold_start", module.is_cold_start)
    admin = harness.admin(pg_server.with_database("postgres"))
    user = sql.Identifier(aws["user"])

    def rotate(password: str, secret_password: str | None = None) -> None:
        """Change the role's password, store ``secret_password`` (default: the same) in both
        secrets, and end the role's sessions, as an idle timeout or a scale event would."""
        with admin.cursor() as cur:
            cur.execute(sql.SQL("alter role {} password %s").format(user), (password,))
        for arn in aws["arns"].values():
            aws["secrets"].put_secret_value(
                SecretId=arn,
                SecretString=json.dumps(
                    {"username": aws["user"], "password": secret_password or password}
                ),
            )
        with admin.cursor() as cur:
            cur.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (aws["user"],),
            )

    class Lambdas:
        pass

    env = Lambdas()
    env.target, env.bucket, env.rotate = aws["target"], bucket, rotate
    env.reads = lambda: len(proxy.requests("POST", target=GET_SECRET))
    yield env
    base.DEFAULT_PROVIDERS.clear()
    admin.close()


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_rotated_password_is_re_read_once_and_a_wrong_one_fails_clearly(
    fault, nights, lambdas, pg_server
):
    record = fault(
        "7. database password rotated between nights",
        "both databases' password changed and their secrets updated while the warm handlers "
        "cache the old secret, sessions ended; later a secret holding a wrong password",
    )
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    day, key = nights.days[-1], nights.keys[-1]
    assert init({}, Context("db_initializer"))["status"] == "initialised"
    assert lambdas.reads() == 2  # one per database, cached from now on
    harness.load_all(lambdas.target, harness.stage_for(lambdas.bucket), nights.keys[:-1])

    # the night after the rotation
    lambdas.rotate("second")
    reads = lambdas.reads()
    extracted = extract({"run_date": day.isoformat()}, Context("extract"))
    loaded = load(s3_event(lambdas.bucket, key), Context("load"))
    assert extracted["status"] == "extracted"
    assert loaded["loads"][0]["status"] == "loaded"
    assert lambdas.reads() - reads == 2
    record.check("extract and load handlers each re-read their secret exactly once")
    night = extracted["runs"][0]["run_id"]
    assert night in [row[0] for row in harness.ledger(lambdas.target)]
    stage = harness.stage_for(lambdas.bucket)
    objects = {k: stage.get_bytes(k) for k in stage.list(day_prefix(day)) if "/_dbt/" not in k}
    assert nights.rows(key, objects) == nights.rows(key)
    record.check("the night loaded, its analytics tests passed, its rows equal the clean night's")

    # a secret that holds a wrong password
    lambdas.rotate("third", secret_password="not-the-password")
    before, staged = snapshot(lambdas.target), stage.list("etl-data/")
    reads = lambdas.reads()
    with pytest.raises(CredentialsError, match="rejected the credentials") as failed:
        load(s3_event(lambdas.bucket, key), Context("load"))
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        extract({"run_date": day.isoformat()}, Context("extract"))
    assert lambdas.reads() - reads == 2
    assert snapshot(lambdas.target) == before and stage.list("etl-data/") == staged
    said = harness.said(str(failed.value), 110)
    record.check(f"CredentialsError after one re-read each, nothing written: {said}")

    # the secret is fixed: the next delivery connects
    lambdas.rotate("third")
    result = load(s3_event(lambdas.bucket, key), Context("load"))
    assert result["loads"][0]["status"] == "duplicate"
    assert snapshot(lambdas.target) == before
    record.check("with the secret fixed the redelivery connects (a duplicate: nothing changes)")
