"""Fault 8: a tampered manifest is rejected before any SQL runs.

Two proofs that no SQL ran. The test holds the load's advisory lock on the target
while `etl load` runs: the loader's first statement takes that lock, so a loader
that got as far as SQL would wait and time out; it must instead exit at once with
the manifest's error. And ``load_manifest`` given an already closed connection must
raise the manifest's error, not "connection already closed".
"""

from __future__ import annotations

import json
import time

import pytest

from dbt_project.errors import StageError
from dbt_project.load.load import load_manifest
from dbt_project.postgres.analytics_schema import LOAD_LOCK
from dbt_project.stage import s3_client
from tests.faults import harness
from tests.pipeline_helpers import snapshot

NIGHT = 2
SQL = '"; drop table analytics.customer_analytics; --'


def _file(table):
    return lambda m: next(f for f in m["files"] if f["table"] == table)


CASES = {
    "table outside the contract": (
        lambda m: _file("daily_sales_summary")(m).update(table="pg_authid"),
        "not part of the analytics contract",
    ),
    "table name with SQL": (
        lambda m: _file("daily_sales_summary")(m).update(table="daily_sales_summary" + SQL),
        "not part of the analytics contract",
    ),
    "column name with SQL": (
        lambda m: _file("customer_analytics")(m)["columns"][0].update(name="customer_id" + SQL),
        "differ from its contract",
    ),
    "column type with SQL": (
        lambda m: _file("customer_analytics")(m)["columns"][1].update(type="text" + SQL),
        "differ from its contract",
    ),
    "run_id with SQL": (
        lambda m: m.update(run_id="00000000-0000-0000-0000-000000000000'); delete from x; --"),
        "is not a UUID",
    ),
    "path outside etl-data/ (..)": (
        lambda m: _file("customer_analytics")(m).update(key="etl-data/../../etc/passwd"),
        "outside etl-data/",
    ),
    "path outside etl-data/ (absolute)": (
        lambda m: _file("customer_analytics")(m).update(key="/etc/passwd"),
        "outside etl-data/",
    ),
    "path of another day": (
        lambda m: _file("customer_analytics")(m).update(
            key="etl-data/2026-01-01/x/customer_analytics.tsv.gz"
        ),
        "is outside etl-data/20",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_manifest_is_rejected_before_any_sql(
    case, fault, nights, new_target, capsys, monkeypatch
):
    tamper, message = CASES[case]
    record = fault(
        f"8. tampered manifest: {case}",
        f"night {NIGHT}'s manifest on S3 edited ({case}); `etl load` run while the test "
        "holds the load lock",
    )
    target = new_target()
    bucket = nights.bucket()
    nights.seed(target, bucket, NIGHT)
    key = nights.keys[NIGHT]
    manifest = json.loads(nights.objects[key])
    tamper(manifest)
    s3_client().put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    before = snapshot(target)
    conn = harness.admin(target)
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_lock(%s)", (LOAD_LOCK,))
    try:
        started = time.monotonic()
        # A loader that reached SQL would wait on the lock until this timeout cancels it.
        monkeypatch.setenv("ETL_STATEMENT_TIMEOUT_MS", "10000")
        code, out, err = harness.etl_here(*harness.load_args(bucket, key, target), capsys=capsys)
        elapsed = time.monotonic() - started
    finally:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_unlock(%s)", (LOAD_LOCK,))
    assert code == 5, (out, err)
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    record.check(f"rejected in {elapsed:.1f}s with the load lock held, exit 5: {harness.said(err)}")

    closed = harness.admin(target)
    closed.close()
    with pytest.raises(StageError, match=message):
        load_manifest(closed, harness.stage_for(bucket), key)
    record.check("load_manifest on a closed connection raises the same error")
    assert snapshot(target) == before
    assert harness.advisory_locks(conn) == 0
    record.check("target and ledger unchanged, no lock left")
    conn.close()
