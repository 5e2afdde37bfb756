"""The analytics (target) database: tables from the contracts, the ledger, the roles."""

from __future__ import annotations

from psycopg2 import sql

from . import load_sql
from .analytics_schema import (
    ANALYTICS_SCHEMA,
    CUSTOMER_TOTALS,
    EXTRA_COLUMNS,
    FILLFACTOR,
    META_SCHEMA,
    VERSION_COLUMN,
    customer_totals_ddl,
    ledger_ddl,
)
from .contracts import MARTS, contract
from .roles import LOADER_ROLE, READER_ROLE


def create_target_tables(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create schema if not exists {}").format(sql.Identifier(ANALYTICS_SCHEMA))
        )
        for name in MARTS:
            cur.execute(
                contract(name).create_table_sql(
                    ANALYTICS_SCHEMA, EXTRA_COLUMNS.get(name, ()), FILLFACTOR.get(name)
                )
            )
        cur.execute(ledger_ddl())
        _upgrade_customer_versions(cur)
        # Also brings an earlier version's database up to date: index, table, totals.
        cur.execute(customer_totals_ddl())
        cur.execute(load_sql.refresh_customer_totals())


def _upgrade_customer_versions(cur) -> None:
    """Bring a customer_analytics table from before rows carried their version up to date.

    Such a table kept each customer's version in etl.customer_versions. Its rows get
    that version's extracted_at (or -infinity, older than any night), and its
    customers that have no row any more become removals, so that a stale night
    still cannot bring them back. Runs once: afterwards the column exists.
    """
    cur.execute(
        "select 1 from information_schema.columns "
        "where table_schema = %s and table_name = 'customer_analytics' and column_name = %s",
        (ANALYTICS_SCHEMA, VERSION_COLUMN),
    )
    if cur.fetchone() is not None:
        return
    target = sql.Identifier(ANALYTICS_SCHEMA, "customer_analytics")
    version = sql.Identifier(VERSION_COLUMN)
    cur.execute(
        sql.SQL(
            "alter table {t} add column {v} timestamptz not null default '-infinity', "
            "set (fillfactor = {f})"
        ).format(t=target, v=version, f=sql.Literal(FILLFACTOR["customer_analytics"]))
    )
    cur.execute(sql.SQL("alter table {} alter column {} drop default").format(target, version))
    cur.execute("select to_regclass(%s)", (f"{META_SCHEMA}.customer_versions",))
    if cur.fetchone()[0] is None:
        return
    old = sql.Identifier(META_SCHEMA, "customer_versions")
    cur.execute(
        sql.SQL(
            "update {t} t set {v} = o.extracted_at from {old} o where o.customer_id = t.customer_id"
        ).format(t=target, v=version, old=old)
    )
    cur.execute(
        sql.SQL(
            "insert into {removed} (customer_id, as_of_date, extracted_at, run_id) "
            "select o.customer_id, o.as_of_date, o.extracted_at, o.run_id from {old} o "
            "where not exists (select from {t} t where t.customer_id = o.customer_id) "
            "on conflict (customer_id) do nothing"
        ).format(removed=sql.Identifier(META_SCHEMA, "removed_customers"), old=old, t=target)
    )


def _ensure_role(cur, role: str) -> None:
    cur.execute("select 1 from pg_roles where rolname = %s", (role,))
    if cur.fetchone() is None:
        # NOLOGIN: these are privilege sets. Grant them to login users
        # (GRANT etl_reader TO alice) or give them a password to log in directly.
        cur.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))


def create_roles(conn, database: str) -> None:
    """A loader that may read and upsert but create or drop nothing; a read-only reader."""
    analytics, meta = sql.Identifier(ANALYTICS_SCHEMA), sql.Identifier(META_SCHEMA)
    loader, reader = sql.Identifier(LOADER_ROLE), sql.Identifier(READER_ROLE)
    with conn.cursor() as cur:
        for role in (LOADER_ROLE, READER_ROLE):
            _ensure_role(cur, role)
        statements = [
            # Temporary tables are where the loader stages each file before the upsert.
            "grant connect, temporary on database {db} to {loader}",
            "grant connect on database {db} to {reader}",
            "revoke create on schema {analytics} from public",
            "grant usage on schema {analytics} to {loader}, {reader}",
            "grant usage on schema {meta} to {loader}",
            "grant select, insert, update, delete on {marts} to {loader}",
            "grant select, insert, update, delete on all tables in schema {meta} to {loader}",
            "grant select on all tables in schema {analytics} to {reader}",
            # Views that dbt re-creates later keep the grants.
            "alter default privileges in schema {analytics} grant select on tables to {reader}",
            "alter role {reader} set search_path = {analytics}",
            "alter role {loader} set search_path = {analytics}",
            # Any login sees the views unqualified, as the example queries are written.
            "alter database {db} set search_path = {analytics}, public",
        ]
        for statement in statements:
            cur.execute(
                sql.SQL(statement).format(
                    db=sql.Identifier(database),
                    loader=loader,
                    reader=reader,
                    analytics=analytics,
                    meta=meta,
                    marts=sql.SQL(", ").join(
                        sql.Identifier(ANALYTICS_SCHEMA, m) for m in (*MARTS, CUSTOMER_TOTALS)
                    ),
                )
            )


def set_reader_password(conn, password: str) -> None:
    """Let the read-only role log in (the RDS Data API needs a login with a secret)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter role {} login password %s").format(sql.Identifier(READER_ROLE)),
            (password,),
        )
