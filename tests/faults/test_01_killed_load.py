"""Fault 1: the load process is killed (SIGKILL) in the middle of its transaction.

The loader runs as the real `etl load` in its own process. To stop it at a known
statement without any hook in the product, the test makes that statement wait on
something it holds: the stage read of a file (a response the fault proxy holds
half-sent) while COPY streams it, a table lock on ``customer_analytics`` after the
two day-owned marts have been written, or an advisory lock that a trigger on the
ledger takes inside the loader's last statement before COMMIT. pg_stat_activity
shows the loader waiting there; then it is killed.
"""

from __future__ import annotations

import pytest

from tests.faults import harness
from tests.pipeline_helpers import snapshot

GATE = 0xFA171  # an advisory lock key of the test's own
BEFORE = 2  # nights loaded before the fault; the fault hits night index 2


def _block_copy(ctx):
    ctx.rule = ctx.proxy.add("stall", method="GET", path=r"/daily_sales_summary\.tsv\.gz$")
    return 'copy "_incoming_daily_sales_summary"%', "ClientRead"


def _copy_stalled(ctx):
    # The proxy sent half of the file and holds the rest: the COPY is mid-stream.
    return ctx.rule.hits == 1 and ctx.rule.stalled.is_set()


def _release_copy(ctx):
    ctx.rule.released.set()


def _block_upsert(ctx):
    ctx.blocker = harness.admin(ctx.target, autocommit=False)
    with ctx.blocker.cursor() as cur:
        cur.execute("lock table analytics.customer_analytics in share mode")
    return '%"analytics"."customer_analytics"%', "Lock"


def _release_upsert(ctx):
    ctx.blocker.rollback()
    ctx.blocker.close()


def _block_commit(ctx):
    with ctx.admin.cursor() as cur:
        cur.execute(
            "create function ledger.fault_gate() returns trigger language plpgsql as "
            f"$$ begin perform pg_advisory_xact_lock({GATE}); return new; end $$"
        )
        cur.execute(
            "create trigger fault_gate before update on ledger.load_ledger "
            "for each row execute function ledger.fault_gate()"
        )
        cur.execute("select pg_advisory_lock(%s)", (GATE,))
    return 'update "ledger"."load_ledger"%', "Lock"


def _release_commit(ctx):
    with ctx.admin.cursor() as cur:
        cur.execute("select pg_advisory_unlock(%s)", (GATE,))


def _cleanup_commit(ctx):
    with ctx.admin.cursor() as cur:
        cur.execute("drop trigger fault_gate on ledger.load_ledger")
        cur.execute("drop function ledger.fault_gate()")


POINTS = {
    "during COPY": (
        "SIGKILL while COPY streams daily_sales_summary (3rd of 5 files) from a stalled S3 read",
        _block_copy,
        _release_copy,
        None,
        {"ledger.load_ledger"},  # the run is recorded before the first file is read
    ),
    "during the upsert": (
        "SIGKILL while the upsert of customer_analytics waits on a table lock, after the "
        "day-owned marts and their versions were written",
        _block_upsert,
        _release_upsert,
        None,
        {"analytics.product_sales_summary", "analytics.daily_sales_summary", "ledger.day_versions"},
    ),
    "just before commit": (
        "SIGKILL inside the last statement before COMMIT (the ledger update), every mart "
        "and version already written",
        _block_commit,
        _release_commit,
        _cleanup_commit,
        {
            "analytics.product_sales_summary",
            "analytics.daily_sales_summary",
            "analytics.customer_analytics",
            "ledger.day_versions",
            "ledger.load_ledger",
        },
    ),
}


class Ctx:
    pass


@pytest.mark.parametrize("point", list(POINTS))
def test_a_load_killed_mid_transaction_leaves_the_target_unchanged(
    point, fault, nights, new_target, proxy
):
    injected, block, release, cleanup, written = POINTS[point]
    record = fault(f"1. load killed {point}", injected)
    ctx = Ctx()
    ctx.proxy, ctx.target = proxy, new_target()
    ctx.admin = harness.admin(ctx.target)
    bucket = nights.bucket()
    nights.seed(ctx.target, bucket, BEFORE)
    before = snapshot(ctx.target)
    key, run_id = nights.keys[BEFORE], nights.run_ids[BEFORE]
    env = harness.cli_env(proxy.url)

    # given the loader stopped at a known statement of its transaction
    statement, waiting = block(ctx)
    loader = harness.start_etl(*harness.load_args(bucket, key, ctx.target), env=env)
    try:
        (pid, state, *_), *_ = harness.wait_for_backend(
            ctx.admin, query_like=statement, waiting=waiting, state="active"
        )
        assert state == "active"
        if block is _block_copy:
            assert _copy_stalled(ctx)
        assert written and written <= harness.locks_held_by(ctx.admin, pid)
        record.check(f"loader seen waiting in `{statement.rstrip('%')}`")
        # when it is killed
        loader.kill()
        loader.wait(30)
    finally:
        if loader.poll() is None:
            loader.kill()
        release(ctx)
    assert loader.returncode == -9
    harness.wait_until_no_loader(ctx.admin)

    # then nothing of the night is visible, and nothing is left holding a lock
    assert snapshot(ctx.target) == before
    record.check("target (analytics + etl, ledger included) unchanged")
    assert run_id not in [row[0] for row in harness.ledger(ctx.target)]
    assert harness.advisory_locks(ctx.admin) == 0
    record.check("no ledger row, no session or lock left")
    if cleanup:
        cleanup(ctx)
    proxy.clear()

    # and the next delivery of the same manifest applies it once
    code, out, err = harness.etl(*harness.load_args(bucket, key, ctx.target), env=env)
    assert code == 0 and ": loaded," in out, err
    code, out, err = harness.etl(*harness.load_args(bucket, key, ctx.target), env=env)
    assert code == 0 and ": duplicate," in out, err
    assert snapshot(ctx.target) == nights.clean[BEFORE + 1]
    record.check("redelivery loaded once, the next one a duplicate")
    harness.load_all(ctx.target, harness.stage_for(bucket), nights.fault_keys[BEFORE + 1 :])
    assert snapshot(ctx.target) == nights.final
    record.check("after the last night the target equals the clean run")
    ctx.admin.close()
