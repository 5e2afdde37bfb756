"""Fault 4: the source database restarts while the extract runs.

The source lives on a second real server so that it can be restarted. The restart
hits a known point: while dbt's build waits on a lock the test holds on the orders
table, or while the unload writes its first file (the fault proxy runs the restart
when that file's upload arrives, so every later COPY meets a fresh server).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import psycopg2
import pytest

from dbt_project.errors import DatabaseUnavailable
from dbt_project.local import server as local_pg
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from tests import reference
from tests.datagen import Shop
from tests.faults import harness
from tests.pipeline_helpers import snapshot

PASSWORD = "etl-faults"
FIRST, DAY = date(2026, 6, 1), date(2026, 6, 10)
LOOKBACK = (DAY - FIRST).days + 1  # the whole history: the night can be checked in full


class Server:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="etlpg4-"))
        self.data_dir = self.root / "data"
        self.port = local_pg.free_port()
        self.restarts = 0

    def start(self) -> PgSettings:
        server = local_pg.start_embedded(self.data_dir, self.port, password=PASSWORD)
        return PgSettings.from_url(server.url)

    def restart(self) -> None:
        local_pg.stop_embedded(self.data_dir)
        self.start()
        self.restarts += 1


@pytest.fixture(scope="module")
def source_server():
    server = Server()
    admin = server.start()
    conn = harness.admin(admin)
    with conn.cursor() as cur:
        cur.execute("create database shop")
    conn.close()
    settings = admin.with_database("shop")
    conn = connect(settings)
    with conn:
        create_source_tables(conn)
        create_extract_login(conn, settings.dbname)
    Shop(conn, seed=4).history(FIRST, DAY, per_day=10)
    conn.close()
    yield server, settings
    local_pg.stop_embedded(server.data_dir)
    shutil.rmtree(server.root, ignore_errors=True)


def _restart_when_dbt_waits(server, settings, ready: threading.Event, errors: list):
    """Hold a lock dbt's build needs; once a dbt session waits on it, restart the server."""
    holder = watcher = None
    try:
        holder = harness.admin(settings, autocommit=False)
        with holder.cursor() as cur:
            cur.execute("lock table public.orders in access exclusive mode")
        ready.set()
        # pg_stat_activity is a snapshot per transaction: watch from another session.
        watcher = harness.admin(settings)
        deadline = time.monotonic() + 120
        while True:
            with watcher.cursor() as cur:
                cur.execute(
                    "select count(*) from pg_stat_activity where datname = current_database() "
                    "and wait_event_type = 'Lock' and pid <> pg_backend_pid()"
                )
                if cur.fetchone()[0]:
                    break
            if time.monotonic() > deadline:
                raise AssertionError("dbt never waited on the orders table")
            time.sleep(0.1)
        server.restart()  # ends every session, the test's lock included
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)
    finally:
        ready.set()
        for conn in (holder, watcher):  # dead after the restart; else this frees dbt
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()


def test_a_source_restart_during_the_dbt_build(fault, source_server, dbt, moto_endpoint):
    server, settings = source_server
    record = fault(
        "4. source restarts during the dbt build",
        "source server restarted (pg_ctl stop -m fast, start) while the extract's dbt build "
        "waits on a lock the test holds on public.orders",
    )
    bucket = harness.new_bucket()
    stage = harness.stage_for(bucket)
    source = harness.extract_database(settings)
    ready, errors = threading.Event(), []
    injector = threading.Thread(
        target=_restart_when_dbt_waits, args=(server, settings, ready, errors), daemon=True
    )
    injector.start()
    ready.wait(30)
    with pytest.raises(DatabaseUnavailable) as failed:
        Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(DAY, LOOKBACK))
    injector.join(60)
    assert not errors, errors
    message = str(failed.value)
    # The build's own error for a lost connection (exit 3, retry later), not a failing test.
    assert message.startswith(
        f"the dbt build for {DAY} lost its database connection, nothing was unloaded or loaded: "
    ), message
    assert message.endswith("Re-run the same day once the database is reachable"), message
    assert any(
        text in message for text in ("terminating connection", "server closed the connection")
    ), message
    record.check(f"{type(failed.value).__name__}: {harness.said(message, 150)}")
    _then_nothing_staged_and_a_rerun_succeeds(record, stage, source, settings, dbt)


def test_a_source_restart_during_the_unload(fault, source_server, dbt, proxy, moto_endpoint):
    server, settings = source_server
    record = fault(
        "4. source restarts during the unload",
        "source server restarted when the first unloaded file (customer_analytics) reaches "
        "the stage, before the other four are read",
    )
    bucket = harness.new_bucket()
    stage = harness.stage_for(bucket, proxy.url)
    source = harness.extract_database(settings)
    proxy.add("hook", method="PUT", path=r"/customer_analytics\.tsv\.gz$", hook=server.restart)
    restarts = server.restarts
    with pytest.raises(psycopg2.OperationalError) as failed:
        Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(DAY, LOOKBACK))
    message = " ".join(str(failed.value).split())
    # libpq's error for a session whose server went away (never, say, a refused connect).
    assert server.restarts == restarts + 1
    assert "server closed the connection unexpectedly" in message, message
    record.check(f"{type(failed.value).__name__}: {harness.said(message, 150)}")
    proxy.clear()
    _then_nothing_staged_and_a_rerun_succeeds(record, stage, source, settings, dbt)


def _then_nothing_staged_and_a_rerun_succeeds(record, stage, source, settings, dbt):
    keys = stage.list("etl-data/")
    assert not [k for k in keys if k.endswith("_manifest.json") or "/_dbt/" in k], keys
    record.check(f"no manifest ({len(keys)} orphan data files that no manifest names)")
    result = Pipeline(dbt=dbt, source=source, stage=stage).extract(NightRequest(DAY, LOOKBACK))
    source.close()
    assert stage.exists(result.manifest_key)
    record.check("the re-run with the same Database object reconnects and writes the night")
    target = harness.prepare_target(harness.create_database(settings, "tgt"))
    harness.load_all(target, stage, [result.manifest_key])
    expected = reference.marts(reference.fetch_source(settings), as_of=DAY)
    assert reference.read_marts(target) == expected
    assert len(snapshot(target)["ledger.load_ledger"]) == 1
    harness.drop_databases(settings, [target.dbname])
    record.check("loaded, it equals the reference computation from the source")
