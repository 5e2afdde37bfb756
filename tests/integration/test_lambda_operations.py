"""The handlers as an operator sees them: bounded loads, per-invocation logs, and the
metrics that say what went wrong."""

from __future__ import annotations

import io
import json
import time

import pytest

from dbt_project.aws import handlers as lambda_app
from dbt_project.aws import observability
from dbt_project.errors import CredentialsError, DatabaseUnavailable, LoadTimedOut, LoginRefused
from dbt_project.local.server import free_port
from dbt_project.postgres.analytics_schema import LOAD_LOCK
from dbt_project.postgres.connection import connect
from tests.lambda_helpers import Context, emitted_metrics, load_handler, s3_event
from tests.pipeline_helpers import snapshot

MANIFEST = "etl-data/2026-11-25/_manifest.json"


def log_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"level"')]


# The load's time limit in the lock test, and what the handler may add around it: a
# secret read and two connections, on a machine other tests keep busy.
LIMIT_S = 3
MARGIN_S = 4


def test_a_load_waiting_on_a_stuck_lock_ends_before_the_function_would(aws):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    before = snapshot(aws["target"])
    holder = connect(aws["target"])
    try:
        # given a session that holds the load lock and never lets go
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (LOAD_LOCK,))
        # when the load runs with 3 s left beyond its reserve for the tests
        remaining = lambda_app.LOAD_TIME_RESERVE_MS + LIMIT_S * 1000
        started = time.monotonic()
        with pytest.raises(LoadTimedOut, match="another session held the load lock") as ended:
            load(s3_event(aws["bucket"], MANIFEST), Context("load", remaining_ms=remaining))
        waited = time.monotonic() - started
        print(f"the load gave up after {waited:.1f}s for a limit of {LIMIT_S}s")
        # then it ends on its own at its limit, not before and not much after, having
        # changed nothing
        assert LIMIT_S - 0.5 < waited < LIMIT_S + MARGIN_S
        assert f"time limit of {LIMIT_S}s" in str(ended.value) and ended.value.exit_code == 3
        assert snapshot(aws["target"]) == before
    finally:
        holder.close()
    # and once the lock is free the same event loads
    assert load(s3_event(aws["bucket"], MANIFEST), Context("load"))["loads"][0]["status"] == (
        "loaded"
    )


@pytest.fixture
def logs():
    """What the Powertools logger writes, invocation by invocation."""
    handler = observability.logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)

    def take() -> list[dict]:
        lines = log_lines(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
        return lines

    yield take
    handler.setStream(previous)


def test_each_invocation_logs_only_its_own_keys(aws, logs):
    init, extract = load_handler("db_initializer"), load_handler("extract")
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    logs()
    extract({"run_date": "2026-11-24"}, Context("extract"))
    first = logs()
    extract({"run_date": "2026-11-25", "lookback_days": 1}, Context("extract"))
    second = logs()
    assert {line.get("run_date") for line in first} >= {"2026-11-24"}
    # The second invocation's lines carry its own day, or none (before it is known).
    assert {line.get("run_date") for line in second} <= {"2026-11-25", None}
    assert any(line.get("run_date") == "2026-11-25" for line in second)
    assert len({line["function_request_id"] for line in second}) == 1


def test_an_unreachable_database_is_counted_as_a_connection_error(aws, monkeypatch, capsys):
    monkeypatch.setenv("SOURCE_DB_HOST", "127.0.0.1")
    monkeypatch.setenv("SOURCE_DB_PORT", str(free_port()))  # nothing listens there
    monkeypatch.setenv("ETL_CONNECT_WAIT_SECONDS", "1")
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL"):
        load_handler("extract")({"run_date": "2026-11-25"}, Context("extract"))
    out = capsys.readouterr().out
    assert "DBConnectionError" in emitted_metrics(out)
    assert "SecretRetrievalError" not in emitted_metrics(out)


def test_a_database_that_cannot_prove_its_name_is_refused_at_once(aws, monkeypatch, capsys):
    # given the source reached by a name its certificate does not carry
    monkeypatch.setenv("SOURCE_DB_HOST", "localhost")
    started = time.monotonic()
    with pytest.raises(LoginRefused, match='does not match host name "localhost"') as refused:
        load_handler("extract")({"run_date": "2026-11-25"}, Context("extract"))
    # then the function refused it, an answer rather than an outage: no retries
    assert "failed the TLS check" in str(refused.value)
    assert time.monotonic() - started < 10
    assert "DBConnectionError" in emitted_metrics(capsys.readouterr().out)


def test_an_unreadable_secret_is_counted_as_a_secret_error(aws, capsys):
    # the initializer alone reads secrets
    aws["logins"]["db_initializer"]["SOURCE_DB_SECRET_ARN"] += "-gone"
    with pytest.raises(CredentialsError, match="cannot read the source database secret"):
        load_handler("db_initializer")({"sample_data": False}, Context("db_initializer"))
    out = capsys.readouterr().out
    assert "SecretRetrievalError" in emitted_metrics(out)
    assert "DBConnectionError" not in emitted_metrics(out)


def test_a_token_that_cannot_be_made_is_counted_as_a_secret_error(aws, monkeypatch, capsys):
    # without a region no IAM token can be signed
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(CredentialsError, match="cannot make an IAM authentication token for"):
        load_handler("extract")({"run_date": "2026-11-25"}, Context("extract"))
    out = capsys.readouterr().out
    assert "SecretRetrievalError" in emitted_metrics(out)
    assert "DBConnectionError" not in emitted_metrics(out)
