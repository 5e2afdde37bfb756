"""How far the incremental state on the source is built, while a full refresh is not done.

A full refresh rebuilds ``int_customer_days`` and ``int_customer_settled`` from nothing
up to its run date. When that is before the latest finished business day (a history
load or full refresh in chunks; a full refresh of an earlier day), the nights after it
must extend the state day by day, in order. A night whose window starts after the
next day to build would sum its customers over a history with a hole in it, and its
rows, dated later than the chunks still to come, would stand against them. So the
build is recorded on the source (``nightly.history_build``, one row while it is not
done) and such a night is refused until the days before it are built.

The statements are composed here and run by the extract, under its lock.
"""

from __future__ import annotations

from datetime import date, timedelta

from psycopg2 import sql

from dbt_project.errors import ExtractBusy
from dbt_project.facts.names import BUILD_SCHEMA
from dbt_project.request import NightRequest

TABLE = sql.Identifier(BUILD_SCHEMA, "history_build")


def create_table() -> sql.Composed:
    # built_through null: the first chunk has not finished.
    return sql.SQL(
        "create table if not exists {} (one boolean primary key default true check (one), "
        "built_through date, ends date not null)"
    ).format(TABLE)


def select_state() -> sql.Composed:
    return sql.SQL("select built_through, ends from {}").format(TABLE)


def start_state() -> sql.Composed:
    """A full refresh starts the build over. Parameter: the day it must reach."""
    return sql.SQL(
        "insert into {} (built_through, ends) values (null, %s) "
        "on conflict (one) do update set built_through = null, ends = excluded.ends"
    ).format(TABLE)


def extend_state() -> sql.Composed:
    """Parameter: the day a night built through (greatest() passes over a null)."""
    return sql.SQL("update {} set built_through = greatest(built_through, %(day)s::date)").format(
        TABLE
    )


def finish_state() -> sql.Composed:
    return sql.SQL("delete from {} where built_through >= ends").format(TABLE)


def _schema_exists(cur) -> bool:
    cur.execute("select to_regnamespace(%s) is not null", (BUILD_SCHEMA,))
    return cur.fetchone()[0]


def check(conn, request: NightRequest, *, latest: date) -> None:
    """Before a night's build: a full refresh starts a build that must reach ``latest``;
    any other night must start at most one day after the day the build has reached."""
    with conn, conn.cursor() as cur:
        if not _schema_exists(cur):
            return  # nothing built on this source yet: the first build bounds itself
        cur.execute(create_table())
        if request.full_refresh:
            cur.execute(start_state(), (max(latest, request.run_date),))
            return
        cur.execute(select_state())
        state = cur.fetchone()
    if state is None:
        return
    built_through, ends = state
    first = request.run_date - timedelta(days=request.lookback_days - 1)
    if built_through is not None and first <= built_through + timedelta(days=1):
        return
    reached = f"only to {built_through}" if built_through else "not yet past its first chunk"
    raise ExtractBusy(
        f"the history on the source is rebuilt {reached}, not to {ends} (a history load or "
        f"full refresh in chunks is under way, or stopped: redrive it or run its days); "
        f"this night's window starts on {first}, and would count its customers over a "
        "history with a hole in it"
    )


def record(conn, request: NightRequest) -> None:
    """After a night's build: the state is built through its run date."""
    with conn, conn.cursor() as cur:
        if not _schema_exists(cur):
            return
        cur.execute(create_table())
        cur.execute(extend_state(), {"day": request.run_date})
        cur.execute(finish_state())
