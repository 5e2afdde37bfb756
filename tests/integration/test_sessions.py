"""Every session carries server-side limits: a lock wait or a transaction left open ends
with an error instead of holding the function until Lambda kills it."""

from __future__ import annotations

import time

import psycopg2
import pytest

from dbt_project.postgres.analytics_schema import LOAD_LOCK
from dbt_project.postgres.connection import Database, connect
from dbt_project.settings import SessionLimits, Settings


def test_sessions_get_the_configured_limits(pg_server):
    settings = Settings.from_env(
        {"ETL_LOCK_TIMEOUT_MS": "120000", "ETL_IDLE_IN_TRANSACTION_TIMEOUT_MS": "300000"}
    )
    conn = Database.from_settings(pg_server, limits=settings.limits).connection()
    with conn.cursor() as cur:
        cur.execute("show lock_timeout")
        assert cur.fetchone() == ("2min",)
        cur.execute("show idle_in_transaction_session_timeout")
        assert cur.fetchone() == ("5min",)
    conn.close()
    # and by default, without any setting
    assert Settings.from_env({}).limits.options() == (
        "-c lock_timeout=600000 -c idle_in_transaction_session_timeout=600000"
    )


def test_a_lock_held_elsewhere_ends_the_wait_with_an_error(pg_server):
    holder = connect(pg_server)
    waiter = connect(pg_server, limits=SessionLimits(lock_timeout_ms=300))
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (LOAD_LOCK,))
        started = time.monotonic()
        with (
            pytest.raises(psycopg2.errors.LockNotAvailable, match="lock timeout"),
            waiter.cursor() as cur,
        ):
            cur.execute("select pg_advisory_xact_lock(%s)", (LOAD_LOCK,))
        assert time.monotonic() - started < 5
    finally:
        holder.close()
        waiter.close()


def test_a_transaction_left_open_is_ended_by_the_server(pg_server):
    conn = connect(pg_server, limits=SessionLimits(idle_in_transaction_timeout_ms=300))
    with conn.cursor() as cur:
        cur.execute("select 1")  # opens a transaction, then nothing happens
    time.sleep(1.5)
    with (
        pytest.raises(
            psycopg2.OperationalError,
            match="idle-in-transaction timeout|server closed the connection",
        ),
        conn.cursor() as cur,
    ):
        cur.execute("select 1")
    conn.close()
