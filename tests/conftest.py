"""Shared fixtures: one real PostgreSQL server per test session.

The embedded server starts in under a second; set ETL_TEST_PG_URL to a server URL
(a superuser, any database) to run the suite against an existing PostgreSQL instead.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest
from psycopg2 import sql

from dbt_project import local_pg
from dbt_project.db import PgSettings, connect

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> PgSettings:
    """Settings of a superuser connection to the test server (database ``postgres``)."""
    external = os.environ.get("ETL_TEST_PG_URL")
    if external:
        yield PgSettings.from_url(external).with_database("postgres")
        return
    # Short path: the Unix socket lives in the data directory.
    data_dir = Path(tempfile.mkdtemp(prefix="etlpg-"))
    # Password authentication over TCP, as on a real server, so credential errors are real.
    server = local_pg.start_embedded(data_dir / "data", local_pg.free_port(), password="etl-test")
    try:
        yield PgSettings.from_url(server.url)
    finally:
        local_pg.stop_embedded(server.data_dir)


class _Databases:
    """Creates empty databases on the test server and drops them at teardown."""

    def __init__(self, server: PgSettings):
        self.server = server
        self.created: list[str] = []

    def _execute(self, statement: sql.Composable) -> None:
        conn = connect(self.server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.close()

    def __call__(self, prefix: str = "t") -> PgSettings:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.server.with_database(name)

    def drop_all(self) -> None:
        for name in self.created:
            self._execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture
def new_database(pg_server):
    """A factory of empty databases, dropped after the test."""
    databases = _Databases(pg_server)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="module")
def module_database(pg_server):
    """The same, for state shared by the tests of one module."""
    databases = _Databases(pg_server)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real HTTP endpoint for S3 and Secrets Manager on loopback."""
    from moto.server import ThreadedMotoServer

    port = local_pg.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S105 - moto accepts any key
        AWS_DEFAULT_REGION="ap-northeast-1",
        AWS_REGION="ap-northeast-1",
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


@pytest.fixture
def s3_bucket(moto_endpoint):
    """A fresh bucket on the moto server."""
    from dbt_project.stage import s3_client

    name = f"stage-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"}
    )
    return name


@pytest.fixture
def aws(new_database, s3_bucket, monkeypatch, tmp_path, pg_server):
    """The Lambda functions' environment: two databases whose login is in moto's Secrets
    Manager, a stage bucket, Powertools configured, and no object cached from before."""
    import boto3

    from dbt_project import lambda_app, observability
    from tests.lambda_helpers import login_role

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
