"""The nightly round trip, run by the three functions as deployed, in the Lambda-like sandbox.

Each function is assembled as its CDK assets are made (the handler folder and the
common layer without what ``ASSET_EXCLUDE`` leaves out, the dependencies layer
whole, boto3 from the runtime) and runs read-only, without /dev/shm, with the
environment the stack gives it. Only the endpoints differ: the functions' network is
a loopback-only namespace in which two PostgreSQL servers (the source and the
analytics database, password authentication over TCP) and a moto S3 / Secrets
Manager server listen, and ``ETL_PG_SSLMODE=prefer`` because the embedded server is
built without TLS.
"""

from __future__ import annotations

import ast
import csv
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from dbt_project.facts.names import MARTS
from dbt_project.local import server as local_pg
from dbt_project.local.demo import EXAMPLE_QUERIES, run_example_queries
from dbt_project.postgres.connection import Database, PgSettings, ensure_database
from infra import lambda_defaults as defaults  # noqa: E402
from infra.constructs import functions as functions_module  # noqa: E402
from infra.constructs.functions import (  # noqa: E402
    ASSET_EXCLUDE,
    DB_INITIALIZER,
    EXTRACT,
    LOAD,
    FunctionSpec,
)
from infra.packaging.layers import RUNTIME_PROVIDED, common_sources  # noqa: E402
from tests import reference

from .lambda_sandbox import (
    DEFAULT_REGION,
    Invocation,
    NetworkNamespace,
    SandboxUnavailable,
    invoke,
)

LAST_SAMPLE_DAY = date(2026, 11, 25)
HISTORY_NIGHT = date(2026, 11, 24)
# What each function's environment names (infra/constructs/functions.py).
USES = {
    EXTRACT.name: ("SOURCE", "bucket"),
    LOAD.name: ("ANALYTICS", "bucket"),
    DB_INITIALIZER.name: ("SOURCE", "ANALYTICS"),
}
MOTO_PORT = 4566


@dataclass
class Vpc:
    """What the functions reach, and how this process reaches it (``network.call``)."""

    network: NetworkNamespace
    databases: dict[str, PgSettings]  # SOURCE / TARGET, as the master user
    secret_arns: dict[str, str]
    endpoint: str
    bucket: str

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=DEFAULT_REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any key
        )


def start_database(data_dir: Path, port: int, name: str) -> PgSettings:
    """A server of its own, as RDS and Aurora are, holding one database ``name``."""
    server = local_pg.start_embedded(data_dir, port, password=secrets.token_urlsafe(16))
    settings = PgSettings.from_url(server.url)
    ensure_database(settings, name)
    return settings.with_database(name)


def start_services(network: NetworkNamespace, stack: ExitStack) -> Vpc:
    """Runs inside ``network``: the two databases, moto, the secrets and the bucket."""
    from moto.server import ThreadedMotoServer

    root = Path(tempfile.mkdtemp(prefix="etlsbx-"))  # short: the sockets live there
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    databases = {}
    # Database names as the stack makes them (infra/constructs/databases.py); one
    # loopback address, so the second server takes the next port.
    for prefix, port, name in (("SOURCE", 5432, "shop"), ("ANALYTICS", 5433, "analytics")):
        stack.callback(local_pg.stop_embedded, root / prefix.lower())
        databases[prefix] = start_database(root / prefix.lower(), port, name)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    moto.start()
    stack.callback(moto.stop)
    vpc = Vpc(
        network=network,
        databases=databases,
        secret_arns={},
        endpoint=f"http://127.0.0.1:{MOTO_PORT}",
        bucket=f"shopetl-stage-{secrets.token_hex(6)}",
    )
    vpc.client("s3").create_bucket(
        Bucket=vpc.bucket, CreateBucketConfiguration={"LocationConstraint": DEFAULT_REGION}
    )
    for prefix, settings in databases.items():
        vpc.secret_arns[prefix] = vpc.client("secretsmanager").create_secret(
            Name=f"rds!{prefix.lower()}-{secrets.token_hex(4)}",
            SecretString=json.dumps({"username": settings.user, "password": settings.password}),
        )["ARN"]
    return vpc


@pytest.fixture
def vpc() -> Iterator[Vpc]:
    try:
        network = NetworkNamespace()
    except SandboxUnavailable as reason:
        pytest.fail(f"Lambda sandbox unavailable: {reason}")
    with network, ExitStack() as stack:
        yield network.call(start_services, network, stack)


def stack_environment(spec: FunctionSpec, own: dict[str, str]) -> dict[str, str]:
    """The environment the stack gives ``spec``: the ``environment=`` argument of the
    ``lambda_.Function`` call in ``Functions._function``, read from its source and
    evaluated with that method's names (``own`` is its ``environment`` parameter)."""
    tree = ast.parse(Path(functions_module.__file__).read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "lambda_.Function"
    ]
    assert len(calls) == 1, "Functions._function should make every function"
    (argument,) = (keyword.value for keyword in calls[0].keywords if keyword.arg == "environment")
    names = {
        **vars(functions_module),  # the module's helpers the argument may call
        "defaults": defaults,
        "spec": spec,
        "statement_timeout": spec.timeout.minus(defaults.STATEMENT_TIMEOUT_MARGIN),
        "environment": own,
    }
    code = compile(ast.Expression(argument), functions_module.__file__, "eval")
    return eval(code, names)  # noqa: S307 - the project's own infra source


def deployed_environment(spec: FunctionSpec, vpc: Vpc) -> dict[str, str]:
    """The stack's environment for ``spec`` with the sandbox's endpoints, and what the
    Lambda runtime adds (credentials, active tracing)."""
    environment = {}
    for use in USES[spec.name]:
        if use == "bucket":
            environment["S3_BUCKET"] = vpc.bucket
            continue
        database = vpc.databases[use]
        environment[f"{use}_DB_HOST"] = database.host
        environment[f"{use}_DB_PORT"] = str(database.port)
        environment[f"{use}_DB_NAME"] = database.dbname
        environment[f"{use}_DB_SECRET_ARN"] = vpc.secret_arns[use]
    return {
        **stack_environment(spec, environment),
        "ETL_PG_SSLMODE": "prefer",  # the embedded server has no TLS; RDS forces it
        "AWS_ENDPOINT_URL": vpc.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "_X_AMZN_TRACE_ID": f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};"
        f"Parent={secrets.token_hex(8)};Sampled=1",
    }


def s3_created_event(vpc: Vpc, key: str) -> dict[str, Any]:
    """The notification S3 sends the load function for a new object (key URL-encoded)."""
    head = vpc.network.call(vpc.client("s3").head_object, Bucket=vpc.bucket, Key=key)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": DEFAULT_REGION,
                "eventTime": "2026-11-25T17:02:41.512Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AROAEXAMPLEEXTRACT:extract"},
                "requestParameters": {"sourceIPAddress": "10.0.3.17"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5Jg",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "ManifestCreated",
                    "bucket": {
                        "name": vpc.bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{vpc.bucket}",
                    },
                    "object": {
                        "key": quote_plus(key),
                        "size": head["ContentLength"],
                        "eTag": head["ETag"].strip('"'),
                        "sequencer": "0055AED6DCD90281E5",
                    },
                },
            }
        ]
    }


def staged_files(vpc: Vpc, run_date: str) -> list[str]:
    """Checks that the day's manifest and every file it names are in the bucket."""
    s3 = vpc.client("s3")
    prefix = f"etl-data/{run_date}/"
    keys = {
        item["Key"]: item["Size"]
        for item in s3.list_objects_v2(Bucket=vpc.bucket, Prefix=prefix)["Contents"]
    }
    manifest = json.loads(
        s3.get_object(Bucket=vpc.bucket, Key=prefix + "_manifest.json")["Body"].read()
    )
    assert manifest["run_date"] == run_date
    assert set(MARTS) <= {entry["table"] for entry in manifest["files"]}
    for entry in manifest["files"]:
        assert keys.get(entry["key"]) == entry["bytes"], entry["key"]
    for key in manifest["dbt_artifacts"]:
        assert key in keys, key
    return sorted(keys)


def check_analytics(vpc: Vpc) -> list[tuple[str, list[str], list[tuple]]]:
    """The loaded marts against an independent computation; the four example queries."""
    expected = reference.marts(
        reference.fetch_source(vpc.databases["SOURCE"]), as_of=LAST_SAMPLE_DAY
    )
    actual = reference.read_marts(vpc.databases["ANALYTICS"])
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]

    # Each customer is as of the last night that touched it: the history's or the last.
    shop = reference.fetch_source(vpc.databases["SOURCE"])
    as_of = reference.as_of_dates(shop, [(HISTORY_NIGHT, 90), (LAST_SAMPLE_DAY, 2)])
    customers = actual["customer_analytics"]
    assert customers.keys() == expected["customer_analytics"].keys()
    for customer, row in customers.items():
        assert row == {**expected["customer_analytics"][customer], "as_of_date": as_of[customer]}
        assert row["last_order_date"] <= row["as_of_date"]
    assert set(as_of.values()) == {HISTORY_NIGHT, LAST_SAMPLE_DAY}
    assert all(expected.values())
    target = Database.from_settings(vpc.databases["ANALYTICS"])
    try:
        return run_example_queries(target)
    finally:
        target.close()


def test_the_nightly_round_trip_as_deployed(vpc, assemble):
    started = time.monotonic()
    specs = (DB_INITIALIZER, EXTRACT, LOAD)
    functions = {
        spec.name: assemble(
            spec.name, runtime_packages=sorted(RUNTIME_PROVIDED), exclude=ASSET_EXCLUDE
        )
        for spec in specs
    }
    environments = {spec.name: deployed_environment(spec, vpc) for spec in specs}
    invocations: list[Invocation] = []
    seconds: list[str] = []

    def call(name: str, event: dict[str, Any]) -> dict[str, Any]:
        begun = time.monotonic()
        outcome = invoke(functions[name], event, env=environments[name], network=vpc.network)
        seconds.append(f"{name} {time.monotonic() - begun:.1f}s")
        invocations.append(outcome)
        assert outcome.error is None and outcome.returncode == 0, (
            f"{name} failed: {outcome.error}\n{outcome.stderr[-4000:]}\n{outcome.stdout[-4000:]}"
        )
        return outcome.result

    initialised = call(DB_INITIALIZER.name, {"sample_data": True, "sample_end_date": "2026-11-25"})
    assert initialised["status"] == "initialised" and initialised["sample_rows"]

    # The history in one manual run, loaded on the manifest's S3 event.
    history = call(EXTRACT.name, {"run_date": HISTORY_NIGHT.isoformat(), "lookback_days": 90})
    assert [run["run_date"] for run in history["runs"]] == ["2026-11-24"]
    first = call(LOAD.name, s3_created_event(vpc, "etl-data/2026-11-24/_manifest.json"))
    assert [(item["run_date"], item["status"]) for item in first["loads"]] == [
        ("2026-11-24", "loaded")
    ]

    # The scheduled night: 02:00 in Tokyo extracts the business day before.
    night = call(EXTRACT.name, {"scheduled_time": "2026-11-25T17:00:00Z"})
    assert night["trigger"] == "schedule"
    assert [run["run_date"] for run in night["runs"]] == ["2026-11-25"]
    second = call(LOAD.name, s3_created_event(vpc, night["runs"][0]["manifest_key"]))
    assert [(item["run_date"], item["status"]) for item in second["loads"]] == [
        ("2026-11-25", "loaded")
    ]

    for run_date in ("2026-11-24", "2026-11-25"):
        keys = vpc.network.call(staged_files, vpc, run_date)
        assert any(key.endswith(".tsv.gz") for key in keys), keys

    answers = vpc.network.call(check_analytics, vpc)
    assert [query for query, _, _ in answers] == list(EXAMPLE_QUERIES)
    assert all(rows for _, _, rows in answers)

    # What the functions saw while they ran: Lambda's surroundings, not this machine's.
    order = (DB_INITIALIZER, EXTRACT, LOAD, EXTRACT, LOAD)
    for outcome, spec in zip(invocations, order, strict=True):
        assert outcome.facts["dev_shm"] is False
        assert outcome.facts["interfaces"] == ["lo"]
        assert outcome.facts["max_rss_mb"] < spec.memory_size, (spec.name, outcome.facts)
    print(f"round trip in {time.monotonic() - started:.1f}s:", ", ".join(seconds))


def test_the_deployed_assets_hold_the_dbt_project_and_dbt_s_own_files(assemble):
    """What dbt reads at run time survives the asset excludes and the layer build."""
    function = assemble(EXTRACT.name, exclude=ASSET_EXCLUDE)
    left_out = [name for name, _ in common_sources() if not (function.opt / name).is_file()]
    assert not left_out, (
        f"the common layer's asset leaves out {left_out}: ASSET_EXCLUDE "
        f"{ASSET_EXCLUDE} of infra/constructs/functions.py matches those folders at any depth"
    )
    site = function.opt / "python"
    stripped = [
        row[0]
        for record in site.glob("*.dist-info/RECORD")
        for row in csv.reader(record.read_text().splitlines())
        if row and row[0].startswith("dbt/include/") and not (site / row[0]).is_file()
    ]
    assert not stripped, (
        f"the dependencies layer lacks {len(stripped)} files dbt loads, e.g. "
        f"{sorted(stripped)[:5]}: the layer build (infra/packaging/layers.py) strips their folders"
    )
