"""What the fault tests share: the `etl` CLI in a subprocess, PostgreSQL probes, stage copies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from psycopg2 import sql

from dbt_project.load.load import load_manifest
from dbt_project.postgres.analytics_schema import create_analytics_tables, create_roles
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.stage import S3Stage, s3_client
from tests.pipeline_helpers import as_extract_login

ROOT = Path(__file__).resolve().parents[2]
LOADER_APPLICATION = "shop-etl"


# -- the CLI in its own process ----------------------------------------------------


def cli_env(endpoint: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    env.setdefault("ETL_CONNECT_WAIT_SECONDS", "5")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_etl(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dbt_project.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"etl did not finish in {timeout}s: {out} {err}") from None
    return process.returncode, out, err


def etl(*args: str, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    return finish(start_etl(*args, env=env), timeout)


def etl_here(*args: str, capsys) -> tuple[int, str, str]:
    """The same `etl` command, in this process (faster where no process boundary matters)."""
    from dbt_project.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def load_args(bucket: str, key: str, target: PgSettings) -> list[str]:
    return [
        "load",
        "--manifest",
        f"s3://{bucket}/{key}",
        "--analytics-url",
        target.url,
        "--skip-tests",
    ]


# -- PostgreSQL ---------------------------------------------------------------------


def admin(settings: PgSettings, autocommit: bool = True):
    conn = connect(settings, wait_seconds=10)
    conn.autocommit = autocommit
    return conn


def extract_database(source: PgSettings) -> Database:
    """The source as etl_extract, which the source side of a night runs as."""
    return Database.from_settings(as_extract_login(source))


def create_database(server: PgSettings, prefix: str) -> PgSettings:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = admin(server.with_database("postgres"))
    with conn.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    conn.close()
    return server.with_database(name)


def drop_databases(server: PgSettings, names: Iterable[str]) -> None:
    conn = admin(server.with_database("postgres"))
    with conn.cursor() as cur:
        for name in names:
            cur.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
    conn.close()


def wait_for_backend(
    conn,
    *,
    query_like: str,
    waiting: str | None = None,
    count: int = 1,
    timeout: float = 60,
    state: str | None = None,
) -> list[tuple]:
    """Wait until ``count`` loader sessions run a statement like ``query_like``.

    ``waiting`` is a pg_stat_activity wait_event_type ("Lock") or wait_event ("ClientRead");
    ``state`` its state: "active" tells a session inside the statement from one idle in
    its transaction after it (which waits on ClientRead too, showing its last query).
    Each row is (pid, state, wait_event_type, wait_event, query).
    """
    deadline = time.monotonic() + timeout
    while True:
        with conn.cursor() as cur:
            cur.execute(
                "select pid, state, wait_event_type, wait_event, query from pg_stat_activity "
                "where datname = current_database() and application_name = %s "
                "and pid <> pg_backend_pid() and query ilike %s "
                "and (%s::text is null or wait_event_type = %s or wait_event = %s) "
                "and (%s::text is null or state = %s)",
                (LOADER_APPLICATION, query_like, waiting, waiting, waiting, state, state),
            )
            rows = cur.fetchall()
        if len(rows) >= count:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"no loader session ran {query_like!r} within {timeout}s")
        time.sleep(0.05)


def wait_until_no_loader(conn, timeout: float = 60) -> None:
    """A killed client's backend lives on until it notices; wait for it to end."""
    deadline = time.monotonic() + timeout
    while True:
        with conn.cursor() as cur:
            cur.execute(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and application_name = %s and pid <> pg_backend_pid()",
                (LOADER_APPLICATION,),
            )
            (alive,) = cur.fetchone()
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{alive} loader sessions still alive after {timeout}s")
        time.sleep(0.05)


def locks_held_by(conn, pid: int) -> set[str]:
    """Relations (schema.name) on which session ``pid`` holds a RowExclusiveLock: its writes."""
    with conn.cursor() as cur:
        cur.execute(
            "select n.nspname || '.' || c.relname from pg_locks l "
            "join pg_class c on c.oid = l.relation join pg_namespace n on n.oid = c.relnamespace "
            "where l.pid = %s and l.granted and l.mode = 'RowExclusiveLock' "
            "and n.nspname in ('analytics', 'ledger')",
            (pid,),
        )
        return {row[0] for row in cur.fetchall()}


def advisory_locks(conn) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "select count(*) from pg_locks l join pg_database d on d.oid = l.database "
            "where l.locktype = 'advisory' and d.datname = current_database() "
            "and l.pid <> pg_backend_pid()"
        )
        return cur.fetchone()[0]


def ledger(settings: PgSettings) -> list[tuple]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "select run_id::text, run_date, loaded_at is not null from ledger.load_ledger "
                "order by started_at"
            )
            return cur.fetchall()
    finally:
        conn.close()


def load_all(target: PgSettings, stage, keys: Iterable[str]) -> list[str]:
    conn = connect(target)
    try:
        return [load_manifest(conn, stage, key).status for key in keys]
    finally:
        conn.close()


def analytics_only(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.startswith("analytics.")}


def without_load_counts(state: dict) -> dict:
    """The whole target, but the ledger reduced to which runs it holds.

    The ledger's per-load counts (inserted / updated / skipped) depend on the order
    the nights arrived in; the data and the versions must not.
    """
    return {
        k: (sorted((row[0], row[1]) for row in v) if k == "ledger.load_ledger" else v)
        for k, v in state.items()
    }


def prepare_target(settings: PgSettings) -> PgSettings:
    conn = connect(settings)
    with conn:
        create_analytics_tables(conn)
        create_roles(conn, settings.dbname)
    conn.close()
    return settings


def soak_nights() -> int:
    """Nights of traffic after the history night: 8, or ETL_SOAK_NIGHTS (60 for the full soak)."""
    return int(os.environ.get("ETL_SOAK_NIGHTS", "8"))


def without_as_of(marts: dict) -> dict:
    """A customer's as_of_date is the last night that touched them, not the last night."""
    customers = {
        k: {c: v for c, v in row.items() if c != "as_of_date"}
        for k, row in marts["customer_analytics"].items()
    }
    return {**marts, "customer_analytics": customers}


# -- the stage ---------------------------------------------------------------------


def new_bucket(objects: dict[str, bytes] | None = None) -> str:
    client = s3_client()
    name = f"faults-{uuid.uuid4().hex[:12]}"
    client.create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"}
    )
    for key, body in (objects or {}).items():
        client.put_object(Bucket=name, Key=key, Body=body)
    return name


def stage_for(bucket: str, endpoint: str | None = None) -> S3Stage:
    """An S3 stage whose client talks to ``endpoint`` (the fault proxy) if given."""
    if endpoint is None:
        return S3Stage(bucket)
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        return S3Stage(bucket, client=s3_client())
    finally:
        if saved is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved


def said(err: str, limit: int = 120) -> str:
    """An error line as the report quotes it: without the prefix and the run folder."""
    text = " ".join(err.split()).removeprefix("etl: error: ")
    text = re.sub(r"etl-data/\d{4}-\d\d-\d\d/[0-9a-f-]{36}/", "", text)
    return f'"{text}"' if len(text) <= limit else f'"{text[: limit - 3]}..."'
