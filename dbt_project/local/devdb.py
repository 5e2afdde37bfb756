"""The local development loop: a PostgreSQL with the sample operational data."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

from psycopg2 import sql

from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import business_date
from dbt_project.facts.names import (
    ANALYTICS_DATABASE,
    ANALYTICS_TARGET,
    DEV_TARGET,
    SOURCE_DATABASE,
)
from dbt_project.facts.roles import EXTRACT_LOGIN
from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings, connect, ensure_database
from dbt_project.postgres.logins import scram_sha_256
from dbt_project.postgres.source_schema import create_source_tables, load_sample_data
from dbt_project.settings import Settings, current


@dataclass(frozen=True)
class DevDatabases:
    server: local_pg.Server
    source: PgSettings
    analytics: PgSettings
    inserted: dict[str, int]


def prepare(
    settings: Settings | None = None, *, sample_end_date: date | None = None
) -> DevDatabases:
    """Start or reuse the local server, create both databases, load the sample data.

    The sample history ends on ``sample_end_date`` (today, in the business time zone,
    unless given). Safe to re-run: existing rows are kept, only missing sample rows
    are inserted.
    """
    settings = settings or current()
    server = local_pg.server(
        settings.work_dir / "pg", url=settings.local_pg_url, port=settings.local_pg_port
    )
    base = PgSettings.from_url(server.url)
    for name in (SOURCE_DATABASE, ANALYTICS_DATABASE):
        ensure_database(base, name)
    source = base.with_database(SOURCE_DATABASE)
    conn = connect(source)
    try:
        with conn:
            create_source_tables(conn)
            end = sample_end_date or business_date(business_calendar.utc_now())
            inserted = load_sample_data(conn, end_date=end)
    finally:
        conn.close()
    return DevDatabases(server, source, base.with_database(ANALYTICS_DATABASE), inserted)


def dbt_exports(dev: DevDatabases) -> dict[str, str]:
    """What a shell exports for the dbt command to reach both databases: the source's
    settings (the dev and source targets) and the analytics database's name (the
    analytics target); the password stays out (PGPASSWORD or a password file)."""
    both = {**dev.source.dbt_env(DEV_TARGET), **dev.analytics.dbt_env(ANALYTICS_TARGET)}
    return {key: value for key, value in both.items() if not key.startswith("DBT_ENV_SECRET")}


def extract_login(dev: DevDatabases) -> PgSettings:
    """The source as etl_extract, which runs the source side of a night (``etl init``
    creates it). The embedded server trusts its loopback logins; another server gets a
    password for it, new each time."""
    source = dev.source.with_credentials(EXTRACT_LOGIN, "")
    if dev.server.embedded:
        return source
    password = secrets.token_urlsafe(24)
    conn = connect(dev.source)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("alter role {} password %s").format(sql.Identifier(EXTRACT_LOGIN)),
                (scram_sha_256(password),),
            )
    finally:
        conn.close()
    return source.with_credentials(EXTRACT_LOGIN, password)


def stop(settings: Settings | None = None) -> bool:
    """Stop the local server of this checkout; False if it was not running."""
    data_dir = (settings or current()).work_dir / "pg"
    if not (data_dir / "postmaster.pid").exists():
        return False
    local_pg.stop_embedded(data_dir)
    return True
