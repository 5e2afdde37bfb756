"""Fault 7: the master password rotates (RDS rotates the managed master secrets) while
the handlers run warm, as the stack deploys them.

Only the initializer reads the master secrets, from moto's Secrets Manager behind the
fault proxy, so the test counts every GetSecretValue. Extract and load log in as
etl_extract and etl_load with IAM tokens (a stand-in for the token generator, as in
the Lambda suite) and read no secret at all; a token the database refuses is replaced
once, and then it is a credentials error.
"""

from __future__ import annotations

import importlib
import json

import pytest
from psycopg2 import sql

from dbt_project.aws import handlers as lambda_app
from dbt_project.errors import CredentialsError
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.facts.stage_layout import day_prefix
from tests.faults import harness
from tests.lambda_helpers import Context, load_handler, login_role, s3_event
from tests.pipeline_helpers import as_login, snapshot
from tests.tls_server import LOGIN_PASSWORD

GET_SECRET = "secretsmanager.GetSecretValue"
COLD_START_FLAGS = (
    "aws_lambda_powertools.metrics.provider.cold_start",
    "aws_lambda_powertools.logging.logger",
    "aws_lambda_powertools.tracing.tracer",
)


@pytest.fixture
def lambdas(aws, nights, databases, pg_server, proxy, private_work_dir, monkeypatch):
    """The Lambda suite's handlers, each with its own logins, pointed at the generated
    shop's source (the suite's server, without TLS), a new analytics database, a bucket
    holding its nights, and the fault proxy in front of S3 and Secrets Manager."""
    from aws_lambda_powertools.utilities.parameters import base

    bucket = nights.bucket(every_night=True)
    target = databases("tgt")
    master = login_role(pg_server, "first")
    for prefix, settings in (("SOURCE", nights.source), ("ANALYTICS", target)):
        monkeypatch.setenv(f"{prefix}_DB_HOST", settings.host)
        monkeypatch.setenv(f"{prefix}_DB_PORT", str(settings.port))
        monkeypatch.setenv(f"{prefix}_DB_NAME", settings.dbname)
    monkeypatch.setenv("ETL_PG_SSLMODE", "prefer")  # the suite's server has no TLS
    monkeypatch.delenv("ETL_PG_SSLROOTCERT")
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

    def rotate(password: str, secret_password: str | None = None) -> None:
        """Change the master's password, store ``secret_password`` (default: the same) in
        both secrets, and end its sessions, as an idle timeout or a scale event would."""
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("alter role {} password %s").format(sql.Identifier(master)), (password,)
            )
        for arn in aws["arns"].values():
            aws["secrets"].put_secret_value(
                SecretId=arn,
                SecretString=json.dumps(
                    {"username": master, "password": secret_password or password}
                ),
            )
        with admin.cursor() as cur:
            cur.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where usename = %s",
                (master,),
            )

    class Lambdas:
        pass

    env = Lambdas()
    env.target, env.bucket, env.rotate, env.tokens = target, bucket, rotate, aws["tokens"]
    env.reads = lambda: len(proxy.requests("POST", target=GET_SECRET))
    rotate("first")
    yield env
    base.DEFAULT_PROVIDERS.clear()
    admin.close()


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_a_rotated_master_password_and_refused_tokens_fail_clearly_and_heal(
    fault, nights, lambdas, pg_server
):
    record = fault(
        "7. master password rotated; IAM tokens refused",
        "the master password changed and both secrets updated while the warm initializer "
        "caches the old ones, sessions ended; later a secret holding a wrong password, and "
        "a token the database refuses",
    )
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    day, key = nights.days[-1], nights.keys[-1]
    assert init({}, Context("db_initializer"))["status"] == "initialised"
    assert lambdas.reads() == 2  # one per database, cached from now on
    # The logins init made, with the password that stands in for their tokens.
    as_login(nights.source, EXTRACT_LOGIN)
    as_login(lambdas.target, LOAD_LOGIN)
    harness.load_all(lambdas.target, harness.stage_for(lambdas.bucket), nights.keys[:-1])

    # the next deployment after the rotation
    lambdas.rotate("second")
    reads = lambdas.reads()
    assert init({}, Context("db_initializer"))["status"] == "initialised"
    assert lambdas.reads() - reads == 2
    record.check("the initializer re-read each master secret exactly once")

    # the night: extract and load read no secret, they log in with tokens
    reads, tokens = lambdas.reads(), len(lambdas.tokens.calls)
    extracted = extract({"run_date": day.isoformat()}, Context("extract"))
    loaded = load(s3_event(lambdas.bucket, key), Context("load"))
    assert extracted["status"] == "extracted"
    assert loaded["loads"][0]["status"] == "loaded"
    assert lambdas.reads() == reads
    assert {user for user, _, _ in lambdas.tokens.calls[tokens:]} == {EXTRACT_LOGIN, LOAD_LOGIN}
    record.check("extract and load read no secret: IAM tokens for etl_extract and etl_load")
    night = extracted["runs"][0]["run_id"]
    assert night in [row[0] for row in harness.ledger(lambdas.target)]
    stage = harness.stage_for(lambdas.bucket)
    objects = {k: stage.get_bytes(k) for k in stage.list(day_prefix(day)) if "/_dbt/" not in k}
    assert nights.rows(key, objects) == nights.rows(key)
    record.check("the night loaded, its analytics tests passed, its rows equal the clean night's")

    # a secret that holds a wrong password; a cold load container whose tokens the
    # database does not take
    lambdas.rotate("third", secret_password="not-the-password")
    before, staged = snapshot(lambdas.target), stage.list("etl-data/")
    reads, tokens = lambdas.reads(), len(lambdas.tokens.calls)
    with pytest.raises(CredentialsError, match="rejected the credentials") as failed:
        init({}, Context("db_initializer"))
    assert lambdas.reads() - reads == 1  # the source's secret, re-read once: still wrong
    lambdas.tokens.passwords[LOAD_LOGIN] = "not-the-token"
    lambda_app.reset()
    with pytest.raises(CredentialsError, match="rejected the credentials"):
        load(s3_event(lambdas.bucket, key), Context("load"))
    assert [user for user, _, _ in lambdas.tokens.calls[tokens:]] == [LOAD_LOGIN, LOAD_LOGIN]
    assert snapshot(lambdas.target) == before and stage.list("etl-data/") == staged
    said = harness.said(str(failed.value), 110)
    record.check(f"CredentialsError after one re-read or one new token, nothing written: {said}")

    # fixed: the secret holds the password, the token is accepted again
    lambdas.rotate("third")
    lambdas.tokens.passwords[LOAD_LOGIN] = LOGIN_PASSWORD
    assert init({}, Context("db_initializer"))["status"] == "initialised"
    result = load(s3_event(lambdas.bucket, key), Context("load"))
    assert result["loads"][0]["status"] == "duplicate"
    assert snapshot(lambdas.target) == before
    record.check("fixed, both connect again (the redelivery is a duplicate: nothing changes)")
