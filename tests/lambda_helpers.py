"""The Lambda handlers as a test drives them: loaded from their files, with a context,
real-shaped S3 events, and an environment of real PostgreSQL and moto services.

The ``aws`` fixture that sets that environment up lives in tests/conftest.py.
"""

from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path
from urllib.parse import quote_plus

from psycopg2 import sql

from dbt_project.postgres.connection import connect

ROOT = Path(__file__).resolve().parents[1]


def load_handler(name: str):
    spec = importlib.util.spec_from_file_location(
        f"lambda_{name}", ROOT / "lambdas" / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


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
