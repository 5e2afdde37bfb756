"""The Lambda handlers as a test drives them: loaded from their files, with a context,
real-shaped S3 events, and the environment the stack gives each function, on real
PostgreSQL and moto services.

The ``aws`` fixture that sets that environment up lives in tests/conftest.py.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote_plus

from psycopg2 import sql

from dbt_project.postgres.connection import PgSettings, connect

ROOT = Path(__file__).resolve().parents[1]
# How each function logs in to its databases, as the stack deploys it (the variables
# ending in LOGIN_VARIABLES), by function name; the ``aws`` fixture sets it. A handler
# from ``load_handler`` runs with its own, whatever the process environment holds.
DEPLOYED_LOGINS: dict[str, dict[str, str]] = {}
LOGIN_VARIABLES = ("_DB_SECRET_ARN", "_DB_IAM_USER")


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}", ROOT / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = module.handler

    def as_deployed(event, context):
        logins = DEPLOYED_LOGINS.get(name)
        if logins is None:
            return handler(event, context)
        with function_logins(logins):
            return handler(event, context)

    return as_deployed


@contextmanager
def function_logins(logins: Mapping[str, str]) -> Iterator[None]:
    """The process environment with exactly ``logins`` as its login variables."""
    saved = {k: v for k, v in os.environ.items() if k.endswith(LOGIN_VARIABLES)}
    for name in saved:
        del os.environ[name]
    os.environ.update(logins)
    try:
        yield
    finally:
        for name in logins:
            os.environ.pop(name, None)
        os.environ.update(saved)


def stack_environment(spec, own: dict[str, str]) -> dict[str, str]:
    """The environment the stack gives ``spec``: the ``environment=`` argument of the
    ``lambda_.Function`` call in ``Functions._function``, read from its source and
    evaluated with that method's names (``own`` is its ``environment`` parameter)."""
    from infra import lambda_defaults as defaults
    from infra.constructs import functions as functions_module

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


def deployed_environments(
    databases: Mapping[str, PgSettings], secret_arns: Mapping[str, str], bucket: str
) -> dict[str, dict[str, str]]:
    """Each function's environment as the stack makes it (``Functions._create_functions``
    run with stand-ins for the databases and the bucket), by function name.

    ``databases`` and ``secret_arns`` by prefix, ``SOURCE`` and ``ANALYTICS``: where
    the functions find the databases and the master secrets.
    """
    from infra.constructs.functions import Functions

    def endpoint(prefix: str) -> SimpleNamespace:
        settings = databases[prefix]
        return SimpleNamespace(
            host=settings.host,
            port=settings.port,
            name=settings.dbname,
            secret=SimpleNamespace(secret_arn=secret_arns[prefix]),
        )

    made: dict[str, dict[str, str]] = {}

    def function(spec, construct_id: str, *, environment: dict[str, str]) -> None:
        made[spec.name] = stack_environment(spec, environment)

    Functions._create_functions(
        SimpleNamespace(_function=function),
        endpoint("SOURCE"),
        endpoint("ANALYTICS"),
        SimpleNamespace(bucket=SimpleNamespace(bucket_name=bucket)),
    )
    return made


def login_variables(environment: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environment.items() if k.endswith(LOGIN_VARIABLES)}


class StandInTokens:
    """IAM authentication tokens for the functions' logins. botocore signs each token
    as on AWS (these databases cannot check one), and the login's password, which
    stands in for the token, is returned in its place; ``calls`` records who asked."""

    def __init__(self, passwords: Mapping[str, str]):
        self.passwords = dict(passwords)
        self.calls: list[tuple[str, str, int]] = []

    def install(self, monkeypatch) -> None:
        import botocore.signers

        sign = botocore.signers.generate_db_auth_token

        def generate(client, DBHostname, Port, DBUsername, Region=None):  # noqa: N803
            token = sign(client, DBHostname, Port, DBUsername, Region)
            assert f"DBUser={DBUsername}" in token and "X-Amz-Signature=" in token, token
            self.calls.append((DBUsername, DBHostname, Port))
            return self.passwords[DBUsername]

        # botocore gives each new RDS client this function as its method.
        monkeypatch.setattr(botocore.signers, "generate_db_auth_token", generate)


class Context:
    def __init__(self, name, remaining_ms: int = 600_000):
        self.function_name = name
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:ap-northeast-1:123456789012:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self):
        return self.remaining_ms


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


def emitted_metrics(out: str) -> dict[str, list[float]]:
    """The metrics in the Powertools (EMF) lines of ``out``: name -> values, in order."""
    found: dict[str, list[float]] = {}
    for line in out.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = record[metric["Name"]]
                found.setdefault(metric["Name"], []).extend(
                    value if isinstance(value, list) else [value]
                )
    return found
