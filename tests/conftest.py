"""Shared fixtures: one real PostgreSQL server per test session.

The embedded server starts in under a second; set ETL_TEST_PG_URL to a server URL
(a superuser, any database) to run the suite against an existing PostgreSQL instead.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from psycopg2 import sql

from dbt_project.facts import business_calendar
from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings, connect

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Under pytest-xdist (`-n`, `--dist loadgroup`, set in pyproject.toml) a work unit runs
# whole on one worker. These packages share expensive session or package fixtures (the
# layer builds and CDK syntheses, the sandbox's layers, the fault suite's nights), so
# each is one unit; any other module is a unit of its own, so that its module fixtures
# are set up once.
_ONE_UNIT_PACKAGES = ("tests/infra/", "tests/sandbox/", "tests/faults/")
# The longest units first, so that the last to start are short ones and no worker
# idles at the end; anything unlisted follows in file order. Seconds on 2 busy cores.
_LONGEST_FIRST = (
    "tests/faults/",  # ~150: the nights, then every fault (much of it waiting)
    "tests/infra/",  # ~80: the Lambda layers, the syntheses, the scanners
    "tests/sandbox/",  # ~75: the layers for this machine, the round trip as deployed
    "tests/integration/test_reprocess.py",  # ~120: three ways over one history
    "tests/integration/test_dbt_project.py",  # ~65: dbt as users run it, sqlfluff
    "tests/bench/",  # ~300 in five units: every benchmark case at a tiny size
    "tests/integration/test_model_changes.py",  # ~90: a change shipped to a history
    "tests/integration/test_reprocess_lambda.py",  # ~80: the steps, a failure, redrives
    "tests/integration/test_new_mart.py",  # ~60: a fourth mart, nights end to end
    "tests/integration/test_logins.py",
    "tests/integration/test_tls.py",
    "tests/integration/test_pipeline.py",  # ~35 each, down to ~20
    "tests/integration/test_lambda.py",
    "tests/integration/test_shipped_parse.py",
    "tests/integration/test_operations.py",
    "tests/integration/test_docs.py",
    "tests/integration/test_load.py",
    "tests/integration/test_initializer.py",
    "tests/integration/test_overlapping_extracts.py",
    "tests/integration/test_lambda_operations.py",
)


def _unit_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return next((p for p in _ONE_UNIT_PACKAGES if path.startswith(p)), path)


def _rank(nodeid: str) -> int:
    path = nodeid.split("::", 1)[0]
    ranks = (n for n, prefix in enumerate(_LONGEST_FIRST) if path.startswith(prefix))
    return next(ranks, len(_LONGEST_FIRST))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the markers
def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # not an xdist worker: leave the order alone
        return
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(_unit_of(item.nodeid)))
    items.sort(key=lambda item: _rank(item.nodeid))  # stable: file order within a rank


_FAULT_REPORT = pytest.StashKey[list]()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: the controller hears of a worker's end
def pytest_testnodedown(node, error):
    lines = getattr(node, "workeroutput", {}).get("fault_report")
    if lines:
        node.config.stash.setdefault(_FAULT_REPORT, []).extend(lines)


def pytest_terminal_summary(terminalreporter, config):
    """The fault suite's report (tests/faults/conftest.py), when its tests ran on a worker."""
    lines = config.stash.get(_FAULT_REPORT, [])
    if lines:
        terminalreporter.section("fault injection report")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def frozen_clock(monkeypatch) -> datetime:
    """The product's clock stopped at the test's start, for a test that compares with
    "today": a run that crosses midnight in Tokyo would otherwise change the latest night
    under it. Every caller reads the clock as ``business_calendar.utc_now()`` (a
    structure test holds that), so this one setting stops it everywhere."""
    moment = business_calendar.utc_now()
    monkeypatch.setattr(business_calendar, "utc_now", lambda: moment)
    return moment


@pytest.fixture
def short_tmp_path():
    """A fresh folder with a short path, for a PostgreSQL data folder: the server's Unix
    socket lives there, and socket paths stop at 107 bytes (tmp_path under an xdist
    worker is too long for that)."""
    path = Path(tempfile.mkdtemp(prefix="etlt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _session_work_dir(tmp_path_factory):
    """dbt's target and log folders for this session (ETL_WORK_DIR), unless set.

    The default, ``.etl/`` in the checkout, would be shared by parallel workers and by
    other runs in the same tree; dbt must not write one target folder twice at once.
    """
    if os.environ.get("ETL_WORK_DIR"):
        yield
        return
    os.environ["ETL_WORK_DIR"] = str(tmp_path_factory.mktemp("etl-work"))
    try:
        yield
    finally:
        os.environ.pop("ETL_WORK_DIR", None)


@pytest.fixture(scope="session")
def shipped_project(tmp_path_factory) -> Path:
    """The dbt project as the common layer ships it: its files and dbt's parse for the
    target ``source`` (``ship_parse``), built in one folder and moved to another, as a
    layer is. For a process that stands for a Lambda container; read only. Built once
    per run: the xdist workers share the run's folder, and the first to come builds it."""
    import fcntl

    from dbt_project.dbt_runner.parse_cache import ship_parse
    from dbt_project.facts.names import SOURCE_TARGET
    from tests.pipeline_helpers import project_copy

    run_folder = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        run_folder = run_folder.parent  # this run's, above each worker's own
    shipped = run_folder / "shipped-dbt" / "dbt"
    with (run_folder / "shipped-dbt.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not shipped.is_dir():
            built = project_copy(Path(tempfile.mkdtemp(dir=run_folder)) / "dbt")
            ship_parse(built, SOURCE_TARGET)
            shipped.parent.mkdir()
            shutil.move(built, shipped)
    return shipped


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
    settings = PgSettings.from_url(server.url)
    try:
        _one_scram_iteration(settings, "etl-test")
        yield settings
    finally:
        local_pg.stop_embedded(server.data_dir)
        # Tens of megabytes per worker and run, in a TMPDIR that may be memory.
        shutil.rmtree(data_dir, ignore_errors=True)


def _one_scram_iteration(superuser: PgSettings, password: str) -> None:
    """The suite's own superuser logs in some 1,700 times a run; PostgreSQL's
    4096 SCRAM iterations cost each login about 5 ms of the client's CPU and 1.5 ms of
    the server's. The functions' logins keep theirs: the product hashes their passwords."""
    conn = connect(superuser)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("set scram_iterations = 1")
        cur.execute("alter role current_user password %s", (password,))
    conn.close()


# Database names in use by this process. A name is reused once its database is dropped,
# so that a worker's names stay short and few (what dbt's parse holds of a name is moved
# to another one by a copy, not a parse: dbt_project.dbt_runner.parse_cache).
_NAMES_IN_USE: set[str] = set()
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _free_name(prefix: str) -> str:
    n = 0
    while f"{prefix}_{_WORKER}_{n}" in _NAMES_IN_USE:
        n += 1
    return f"{prefix}_{_WORKER}_{n}"


def _drop(name: str) -> sql.Composed:
    return sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))


class _Databases:
    """Creates empty databases on the test server and drops them at teardown."""

    def __init__(self, server: PgSettings):
        self.server = server
        self.created: list[str] = []

    def _execute(self, *statements: sql.Composable) -> None:
        conn = connect(self.server)
        conn.autocommit = True  # one statement at a time: create database runs in none
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        conn.close()

    def __call__(self, prefix: str = "t") -> PgSettings:
        name = _free_name(prefix)
        _NAMES_IN_USE.add(name)
        self.created.append(name)
        # The drop clears a database left by an earlier run on an ETL_TEST_PG_URL server.
        self._execute(_drop(name), sql.SQL("create database {}").format(sql.Identifier(name)))
        return self.server.with_database(name)

    def drop_all(self) -> None:
        if self.created:
            self._execute(*map(_drop, self.created))
            _NAMES_IN_USE.difference_update(self.created)


@pytest.fixture
def new_database(pg_server):
    """A factory of empty databases, dropped after the test."""
    databases = _Databases(pg_server)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def tls_server():
    """A server with TLS on, for verify-full against the suite's test CA; the functions'
    logins exist on it with the password that stands in for their IAM tokens. One per
    worker, started by the first test that asks."""
    from tests.tls_server import start_tls_server

    server = start_tls_server(Path(tempfile.mkdtemp(prefix="etltls-")), local_pg.free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_database(tls_server):
    """A factory of empty databases on the TLS server, dropped after the test."""
    databases = _Databases(tls_server.admin)
    yield databases
    databases.drop_all()


@pytest.fixture(scope="module")
def module_tls_database(tls_server):
    """The same, for state shared by the tests of one module."""
    databases = _Databases(tls_server.admin)
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
def aws(tls_database, tls_server, s3_bucket, monkeypatch, tmp_path):
    """The Lambda functions as the stack deploys them, on real PostgreSQL and moto.

    Two databases on the TLS server, reached with verify-full against the test CA (in
    place of the RDS bundle); each function's logins as the stack wires them: the
    initializer with the master login, whose password is in moto's Secrets Manager,
    extract and load as etl_extract and etl_load with IAM tokens from a stand-in
    generator. A stage bucket, Powertools configured, and no object cached from before.
    """
    import boto3

    from dbt_project.aws import handlers as lambda_app
    from dbt_project.aws import observability
    from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
    from tests import lambda_helpers
    from tests.tls_server import LOGIN_PASSWORD

    source, target = tls_database("src"), tls_database("tgt")
    user = lambda_helpers.login_role(tls_server.admin, "first-password")
    secrets = boto3.client("secretsmanager")
    arns = {}
    databases = {"SOURCE": source, "ANALYTICS": target}
    for prefix in databases:
        arns[prefix] = secrets.create_secret(
            Name=f"{prefix.lower()}-{uuid.uuid4().hex[:6]}",
            SecretString=json.dumps({"username": user, "password": "first-password"}),
        )["ARN"]
    functions = lambda_helpers.deployed_environments(databases, arns, s3_bucket)
    # What the functions share: where the databases are and how TLS is checked.
    shared = {
        key: value
        for environment in functions.values()
        for key, value in environment.items()
        if key.startswith(("SOURCE_DB_", "ANALYTICS_DB_", "ETL_PG_SSL", "S3_BUCKET"))
        and not key.endswith(lambda_helpers.LOGIN_VARIABLES)
    }
    for key, value in {
        **shared,
        "ETL_PG_SSLROOTCERT": tls_server.ca,  # the test CA in place of the RDS bundle
        "POWERTOOLS_SERVICE_NAME": "shop-etl",
        "POWERTOOLS_METRICS_NAMESPACE": "ShopEtl",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "ETL_WORK_DIR": str(tmp_path / "work"),
        "ETL_CONNECT_WAIT_SECONDS": "3",
        "ETL_STATEMENT_TIMEOUT_MS": "120000",
    }.items():
        monkeypatch.setenv(key, value)
    logins = {name: lambda_helpers.login_variables(env) for name, env in functions.items()}
    monkeypatch.setattr(lambda_helpers, "DEPLOYED_LOGINS", logins)
    tokens = lambda_helpers.StandInTokens(
        {EXTRACT_LOGIN: LOGIN_PASSWORD, LOAD_LOGIN: LOGIN_PASSWORD}
    )
    tokens.install(monkeypatch)
    # The Powertools objects were made when this module was imported; in Lambda the
    # environment is set before any import.
    monkeypatch.setattr(observability.metrics, "namespace", "ShopEtl")
    monkeypatch.setattr(observability.metrics, "service", "shop-etl")
    lambda_app.reset()
    # Each test is a new container: Powertools' "first invocation" flags start set.
    for flag_module in (
        "aws_lambda_powertools.metrics.provider.cold_start",
        "aws_lambda_powertools.logging.logger",
        "aws_lambda_powertools.tracing.tracer",
    ):
        monkeypatch.setattr(importlib.import_module(flag_module), "is_cold_start", True)
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    yield {
        "source": source,
        "target": target,
        "user": user,
        "arns": arns,
        "bucket": s3_bucket,
        "secrets": secrets,
        "logins": logins,
        "tokens": tokens,
        "server": tls_server,
    }
    lambda_app.reset()
