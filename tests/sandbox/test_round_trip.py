"""The nightly round trip, run by the three functions as deployed, in the Lambda-like sandbox.

Each function is assembled as its CDK assets are made (the handler folder and the
common layer without what ``ASSET_EXCLUDE`` leaves out, the dependencies layer
whole, boto3 from the runtime) and runs read-only, without /dev/shm, with the
environment the stack gives it: extract and load log in as etl_extract and etl_load
with IAM tokens, the initializer alone with the master secrets, every session over
verify-full. What differs is what the sandbox cannot have: the functions' network is a
loopback-only namespace in which two PostgreSQL servers with TLS (the source and the
analytics database) and a moto S3 / Secrets Manager server listen; the layer's CA
bundle is the test CA that signed the servers' certificates; and a stand-in signs
each IAM token (botocore's own signer runs first) and returns the password that
stands in for it.
"""

from __future__ import annotations

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
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.local.demo import EXAMPLE_QUERIES, run_example_queries
from dbt_project.postgres.connection import Database, PgSettings, ensure_database
from infra import lambda_defaults as defaults  # noqa: E402
from infra.constructs.functions import (  # noqa: E402
    ASSET_EXCLUDE,
    DB_INITIALIZER,
    EXTRACT,
    LOAD,
    FunctionSpec,
)
from infra.packaging.layers import RUNTIME_PROVIDED, common_sources  # noqa: E402
from tests import reference
from tests.lambda_helpers import deployed_environments
from tests.tls_server import LOGIN_PASSWORD, TlsServer, make_ca, pem, start_tls_server

from .lambda_sandbox import (
    DEFAULT_REGION,
    Invocation,
    NetworkNamespace,
    SandboxUnavailable,
    invoke,
)

LAST_SAMPLE_DAY = date(2026, 11, 25)
HISTORY_NIGHT = date(2026, 11, 24)
MOTO_PORT = 4566
# Each database's server, as the stack makes them (infra/constructs/databases.py): one
# loopback address, so the second server takes the next port; each server knows the
# login of the function that uses it.
SERVERS = {
    "SOURCE": (5432, "shop", EXTRACT_LOGIN),
    "ANALYTICS": (5433, "analytics", LOAD_LOGIN),
}
# Run in each function before its handler: botocore signs the IAM token as on AWS, the
# login's password comes back in its place.
STAND_IN_TOKENS = f"""
import botocore.signers
_sign = botocore.signers.generate_db_auth_token
def _stand_in_token(client, DBHostname, Port, DBUsername, Region=None):
    token = _sign(client, DBHostname, Port, DBUsername, Region)
    assert "X-Amz-Signature=" in token and "DBUser=" + DBUsername in token, token
    return {LOGIN_PASSWORD!r}
botocore.signers.generate_db_auth_token = _stand_in_token
"""


@dataclass
class Vpc:
    """What the functions reach, and how this process reaches it (``network.call``)."""

    network: NetworkNamespace
    servers: dict[str, TlsServer]
    databases: dict[str, PgSettings]  # SOURCE / ANALYTICS, as the master user
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


def start_services(network: NetworkNamespace, stack: ExitStack) -> Vpc:
    """Runs inside ``network``: the two databases, moto, the secrets and the bucket."""
    from moto.server import ThreadedMotoServer

    root = Path(tempfile.mkdtemp(prefix="etlsbx-"))  # short: the sockets live there
    root.chmod(0o755)  # the servers run as another user, in folders of their own below
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    ca = make_ca("sandbox test CA")
    servers, databases = {}, {}
    for prefix, (port, name, login) in SERVERS.items():
        servers[prefix] = start_tls_server(root / prefix.lower(), port, ca=ca, logins=(login,))
        stack.callback(servers[prefix].stop)
        ensure_database(servers[prefix].admin, name)
        databases[prefix] = servers[prefix].admin.with_database(name)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT, verbose=False)
    moto.start()
    stack.callback(moto.stop)
    vpc = Vpc(
        network=network,
        servers=servers,
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


def deployed_environment(spec: FunctionSpec, vpc: Vpc) -> dict[str, str]:
    """The stack's environment for ``spec`` with the sandbox's endpoints, and what the
    Lambda runtime adds (credentials, active tracing)."""
    environments = deployed_environments(vpc.databases, vpc.secret_arns, vpc.bucket)
    return {
        **environments[spec.name],
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


def trust_the_test_ca(function, vpc: Vpc) -> None:
    """The layer's CA bundle (ETL_PG_SSLROOTCERT) holds the CA that signed the servers'
    certificates, where the deployed one holds Amazon RDS's."""
    bundle = function.opt / Path(defaults.RDS_CA_BUNDLE_PATH).relative_to("/opt")
    assert bundle.is_file(), bundle
    bundle.unlink()  # a hard link into the layer build: replace it, never write through
    bundle.write_bytes(pem(vpc.servers["SOURCE"].ca_cert))


def sessions(server: TlsServer, since: int = 0) -> list[str]:
    """The server's log of the sessions it authorized, from the offset ``since``."""
    return [
        line
        for line in server.log_since(since).splitlines()
        if "connection authorized: user=" in line
    ]


def logged_in(lines: list[str]) -> set[str]:
    return {line.split("user=")[1].split()[0] for line in lines}


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
    for function in functions.values():
        trust_the_test_ca(function, vpc)
    environments = {spec.name: deployed_environment(spec, vpc) for spec in specs}
    assert environments[EXTRACT.name]["SOURCE_DB_IAM_USER"] == EXTRACT_LOGIN
    assert environments[LOAD.name]["ANALYTICS_DB_IAM_USER"] == LOAD_LOGIN
    invocations: list[Invocation] = []
    seconds: list[str] = []

    def call(name: str, event: dict[str, Any]) -> dict[str, Any]:
        begun = time.monotonic()
        outcome = invoke(
            functions[name],
            event,
            env=environments[name],
            network=vpc.network,
            setup=STAND_IN_TOKENS,
        )
        seconds.append(f"{name} {time.monotonic() - begun:.1f}s")
        invocations.append(outcome)
        assert outcome.error is None and outcome.returncode == 0, (
            f"{name} failed: {outcome.error}\n{outcome.stderr[-4000:]}\n{outcome.stdout[-4000:]}"
        )
        return outcome.result

    initialised = call(DB_INITIALIZER.name, {"sample_data": True, "sample_end_date": "2026-11-25"})
    assert initialised["status"] == "initialised" and initialised["sample_rows"]
    initialised_at = {prefix: server.log_size() for prefix, server in vpc.servers.items()}

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

    # After the initializer, extract and load logged in as their own logins only; every
    # session of the round trip was encrypted.
    after = {p: logged_in(sessions(vpc.servers[p], at)) for p, at in initialised_at.items()}
    assert after == {"SOURCE": {EXTRACT_LOGIN}, "ANALYTICS": {LOAD_LOGIN}}
    for server in vpc.servers.values():
        assert all("SSL enabled (protocol=TLS" in line for line in sessions(server))

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
