"""Fault 3: the target is unreachable when the load starts (Aurora Serverless v2 resuming
from 0 ACU takes ~15 s) and comes up later, on a second real server on a reserved port."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings
from tests.faults import harness
from tests.pipeline_helpers import snapshot

PASSWORD = "etl-faults"
RESUME_AFTER = 15.0


class Server:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="etlpg3-"))
        self.data_dir = self.root / "data"
        self.port = local_pg.free_port()

    def start(self) -> PgSettings:
        server = local_pg.start_embedded(self.data_dir, self.port, password=PASSWORD)
        return PgSettings.from_url(server.url)

    def stop(self) -> None:
        local_pg.stop_embedded(self.data_dir)


@pytest.fixture(scope="module")
def server():
    running = Server()
    running.start()
    yield running
    running.stop()
    shutil.rmtree(running.root, ignore_errors=True)


@pytest.fixture
def down_target(server, nights):
    """A target on the second server holding the first two nights; the server is then stopped."""
    admin = server.start()
    target = harness.prepare_target(harness.create_database(admin, "tgt"))
    bucket = nights.bucket()
    nights.seed(target, bucket, 2)
    server.stop()
    yield target, bucket
    server.start()
    harness.drop_databases(admin, [target.dbname])


def test_a_target_that_comes_up_after_15s_is_waited_for(
    fault, nights, server, down_target, moto_endpoint
):
    record = fault(
        "3. target unreachable, up after ~15 s",
        f"`etl load` started with the target server stopped; server started {RESUME_AFTER:.0f}s "
        "later on its reserved port (ETL_CONNECT_WAIT_SECONDS=60)",
    )
    target, bucket = down_target
    env = harness.cli_env(moto_endpoint, ETL_CONNECT_WAIT_SECONDS="60")
    started = time.monotonic()
    loader = harness.start_etl(*harness.load_args(bucket, nights.keys[2], target), env=env)
    try:
        time.sleep(RESUME_AFTER)
        assert loader.poll() is None, loader.communicate()
        record.check(f"loader still waiting after {RESUME_AFTER:.0f}s")
        server.start()
        code, out, err = harness.finish(loader, timeout=60)
    finally:
        if loader.poll() is None:
            loader.kill()
    elapsed = time.monotonic() - started
    assert code == 0 and ": loaded," in out, err
    assert RESUME_AFTER <= elapsed < 60
    record.check(f"load succeeded {elapsed:.1f}s after it started, within the 60s bound")
    assert snapshot(target) == nights.clean[3]
    harness.load_all(target, harness.stage_for(bucket), nights.fault_keys[3:])
    assert snapshot(target) == nights.final
    record.check("target equals the clean run, night and next night")


def test_past_the_bound_the_load_fails_cleanly_and_a_retry_succeeds(
    fault, nights, server, down_target, moto_endpoint
):
    record = fault(
        "3. target unreachable past the connect bound",
        "`etl load` with the target server stopped and ETL_CONNECT_WAIT_SECONDS=3; "
        "server started afterwards and the load retried",
    )
    target, bucket = down_target
    env = harness.cli_env(moto_endpoint, ETL_CONNECT_WAIT_SECONDS="3")
    started = time.monotonic()
    code, out, err = harness.etl(*harness.load_args(bucket, nights.keys[2], target), env=env)
    elapsed = time.monotonic() - started
    assert code == 3, (out, err)
    assert "cannot reach PostgreSQL" in err and "ETL_CONNECT_WAIT_SECONDS" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert elapsed < 3 + 5
    record.check(f"gave up after {elapsed:.1f}s, exit 3: {harness.said(err, 100)}")
    server.start()
    assert snapshot(target) == nights.clean[2]
    record.check("target unchanged")
    code, out, err = harness.etl(*harness.load_args(bucket, nights.keys[2], target), env=env)
    assert code == 0 and ": loaded," in out, err
    harness.load_all(target, harness.stage_for(bucket), nights.fault_keys[3:])
    assert snapshot(target) == nights.final
    record.check("the retry loads; target equals the clean run")
