"""Fault 2: the same manifest loaded by two processes at the same time (S3 delivers
an event twice, two load functions run at once)."""

from __future__ import annotations

import pytest

from dbt_project.postgres.analytics_schema import LOAD_LOCK
from tests.faults import harness
from tests.pipeline_helpers import snapshot

MODES = {
    "released together": (
        "two `etl load` processes of one manifest, both held at the load lock by the test "
        "and released at the same instant"
    ),
    "free race": "two `etl load` processes of one manifest started at the same instant",
}


@pytest.mark.parametrize("mode", list(MODES))
def test_two_loads_of_one_manifest_apply_it_once(mode, fault, nights, new_target, moto_endpoint):
    record = fault(f"2. same manifest loaded twice at once, {mode}", MODES[mode])
    target = new_target()
    bucket = nights.bucket()
    nights.seed(target, bucket, 2)
    key, run_id = nights.keys[2], nights.run_ids[2]
    env = harness.cli_env(moto_endpoint)
    conn = harness.admin(target)
    gated = mode == "released together"
    if gated:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (LOAD_LOCK,))

    loaders = [harness.start_etl(*harness.load_args(bucket, key, target), env=env) for _ in "ab"]
    try:
        if gated:
            harness.wait_for_backend(
                conn, query_like="select pg_advisory_xact_lock%", waiting="Lock", count=2
            )
            record.check("both seen waiting at the load lock")
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(%s)", (LOAD_LOCK,))
        results = [harness.finish(p) for p in loaders]
    finally:
        for p in loaders:
            if p.poll() is None:
                p.kill()

    assert [code for code, _, _ in results] == [0, 0], results
    statuses = sorted(out.split(": ", 1)[1].split(",")[0] for _, out, _ in results)
    assert statuses == ["duplicate", "loaded"], results
    duplicate = next(out for _, out, _ in results if "duplicate" in out)
    assert "0 rows changed" in duplicate
    record.check("one reported loaded, the other duplicate with 0 rows changed")
    assert [row[0] for row in harness.ledger(target)].count(run_id) == 1
    assert snapshot(target) == nights.clean[3]
    record.check("one ledger row; target equals the clean run after that night")
    harness.load_all(target, harness.stage_for(bucket), nights.fault_keys[3:])
    assert snapshot(target) == nights.final
    record.check("the next night loads on top and equals the clean run")
    conn.close()
