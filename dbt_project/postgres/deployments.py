"""What the analytics database remembers of deployments: the deployed models' logic,
and the reprocessing a change of logic asked for.

``ledger.deployed_models`` holds each model's fingerprint as of the last deployment
(``dbt_runner/lineage.py``); the next one compares against it. A change that moves a
mart's numbers records a ``ledger.reprocess_requests`` row; the load of the night that
reprocesses the history marks it done, and that night's run report says which marts
were reprocessed and why.
"""

from __future__ import annotations

from datetime import date

from psycopg2 import sql
from psycopg2.extras import Json, execute_values

from dbt_project.facts.names import LEDGER_SCHEMA

_MODELS = sql.Identifier(LEDGER_SCHEMA, "deployed_models")
_REQUESTS = sql.Identifier(LEDGER_SCHEMA, "reprocess_requests")


def _exists(cur, table: str) -> bool:
    cur.execute("select to_regclass(%s) is not null", (f"{LEDGER_SCHEMA}.{table}",))
    return bool(cur.fetchone()[0])


def deployments_ddl() -> sql.Composed:
    """The two ledger tables, created if missing."""
    return sql.SQL(
        """
        create table if not exists {models} (
            model text primary key,
            checksum text not null,
            logic text not null,
            deployed_at timestamptz not null default clock_timestamp()
        );
        create table if not exists {requests} (
            request_id uuid primary key default gen_random_uuid(),
            requested_at timestamptz not null default clock_timestamp(),
            first_date date,
            last_date date,
            marts jsonb not null,
            started text not null,
            done_by_run uuid,
            done_at timestamptz
        );
        """
    ).format(models=_MODELS, requests=_REQUESTS)


def recorded_models(cur) -> dict[str, tuple[str, str]]:
    """Each deployed model's (checksum, logic); nothing before the first record."""
    if not _exists(cur, "deployed_models"):
        return {}
    cur.execute(sql.SQL("select model, checksum, logic from {}").format(_MODELS))
    return {model: (checksum, logic) for model, checksum, logic in cur.fetchall()}


def record_models(cur, models: list[tuple[str, str, str]]) -> None:
    """Make the record ``models`` (name, checksum, logic): the deployed project. A model
    whose checksum and logic are unchanged keeps its row, and so its deployed_at: an
    init that changes nothing writes nothing."""
    cur.execute(
        sql.SQL("delete from {} where not (model = any(%s))").format(_MODELS),
        ([name for name, _, _ in models],),
    )
    execute_values(
        cur,
        sql.SQL(
            "insert into {} as deployed (model, checksum, logic) values %s "
            "on conflict (model) do update set checksum = excluded.checksum, "
            "logic = excluded.logic, deployed_at = clock_timestamp() "
            "where (deployed.checksum, deployed.logic) "
            "is distinct from (excluded.checksum, excluded.logic)"
        )
        .format(_MODELS)
        .as_string(cur.connection),
        models,
    )


def loaded_history(cur) -> tuple[date, date] | None:
    """The first business day a loaded night owns and the last night loaded, if any."""
    if not _exists(cur, "day_versions") or not _exists(cur, "load_ledger"):
        return None  # a database `etl init` has not prepared yet
    cur.execute(
        sql.SQL(
            "select (select min(sales_date) from {days}), "
            "(select max(run_date) from {ledger} where loaded_at is not null)"
        ).format(
            days=sql.Identifier(LEDGER_SCHEMA, "day_versions"),
            ledger=sql.Identifier(LEDGER_SCHEMA, "load_ledger"),
        )
    )
    first, last = cur.fetchone()
    if last is None:
        return None
    return (first or last), last


def request_reprocess(cur, marts: dict[str, str], first: date, last: date, started: str) -> None:
    cur.execute(
        sql.SQL(
            "insert into {} (first_date, last_date, marts, started) values (%s, %s, %s, %s)"
        ).format(_REQUESTS),
        (first, last, Json(marts), started),
    )


def pending_requests(cur) -> list[dict]:
    if not _exists(cur, "reprocess_requests"):
        return []
    cur.execute(
        sql.SQL(
            "select requested_at, first_date, last_date, marts, started from {} "
            "where done_by_run is null order by requested_at"
        ).format(_REQUESTS)
    )
    names = ("requested_at", "first", "last", "marts", "started")
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def settle_requests() -> sql.Composed:
    """Mark every open request done by the run that restated the whole history.

    Parameter: run_id. Returns each request's marts, first and last day.
    """
    return sql.SQL(
        "update {} set done_by_run = %s, done_at = clock_timestamp() "
        "where done_by_run is null returning marts, first_date, last_date"
    ).format(_REQUESTS)


def reprocessed(rows: list[tuple]) -> dict | None:
    """The settled requests as the run report shows them: each mart with why, and the
    days the history spanned when they were asked for."""
    if not rows:
        return None
    marts: dict[str, str] = {}
    for requested, _, _ in rows:
        marts.update(requested)
    firsts = [first for _, first, _ in rows if first]
    lasts = [last for _, _, last in rows if last]
    return {
        "marts": marts,
        "from": min(firsts).isoformat() if firsts else None,
        "to": max(lasts).isoformat() if lasts else None,
    }
