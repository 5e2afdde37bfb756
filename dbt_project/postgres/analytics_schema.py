"""The analytics database: tables brought to the contracts, the ledger, the roles.

The loader's bookkeeping beside each table (its version column, table options, the
ranking's index, the totals row), the ledger's tables, and the roles that read and
write them. ``schema_plan.py`` works out what bringing the tables to the contracts
takes; ``etl init`` and every deployment run it, ``etl plan`` prints it.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from psycopg2 import sql

from dbt_project.contract.ownership import customer_mart, marts
from dbt_project.contract.tables import Column, contract, load_contracts
from dbt_project.facts.names import ANALYTICS_SCHEMA, LEDGER_SCHEMA
from dbt_project.facts.roles import LOADER_ROLE, READER_ROLE
from dbt_project.postgres import schema_plan
from dbt_project.postgres.connection import adopt_legacy_schema
from dbt_project.postgres.deployments import deployments_ddl
from dbt_project.postgres.logins import scram_sha_256
from dbt_project.settings import current

# Loads run one at a time: versions are read and written by each, so two loads of
# different days must not interleave. Any constant shared by all loaders will do.
LOAD_LOCK = 0x5E7105D


# The loader's bookkeeping beside the contract: the customers mart's rows carry their
# version. A customer row's version is (as_of_date, extracted_at): cumulative numbers
# as of a later day win; for the same day, the later read of the source. Rows from
# before the column existed get -infinity, older than any night.
VERSION_COLUMN = "extracted_at"
# A night rewrites the row of every customer it owns. Free space on each page lets
# PostgreSQL put the new row version beside the old one without a new primary-key
# entry (a HOT update); the dead version is pruned when the page is next written.
# 30 % free covers a night that rewrites up to about 40 % of a page's rows.
CUSTOMERS_FILLFACTOR = 70
# top_customers ranks every customer: in this order a LIMIT reads only the rows it
# returns. Its figures over all customers (the revenue share's denominator, the latest
# as_of_date) come from one row that the load rewrites in its transaction.
REVENUE_RANK_INDEX = "customer_analytics_revenue_rank_idx"
CUSTOMER_TOTALS = "customer_totals"
# What the loader may do to each ledger table, and no more: a DELETE on the ledger or
# the reports would let a replay of an old run in, or erase what happened.
LEDGER_GRANTS = {
    "load_ledger": "select, insert, update",  # claim the run, then record its counts
    "day_versions": "select, insert, update, delete",  # a full refresh drops lost days
    # A full refresh drops the removals dated after its run date (its later chunks
    # restate those customers).
    "removed_customers": "select, insert, update, delete",
    "run_reports": "select, insert, update",  # a retried report replaces its own row
    # A full refresh's load settles the reprocessing a deployment asked for.
    "reprocess_requests": "select, update",
}
# Large objects: nothing here uses them, and any role may otherwise create them.
LARGE_OBJECT_CREATORS = ("lo_creat(integer)", "lo_create(oid)", "lo_from_bytea(oid, bytea)")


def extra_columns(mart: str) -> tuple[Column, ...]:
    if mart != customer_mart():
        return ()
    return (Column(VERSION_COLUMN, "timestamptz", not_null=True, default="-infinity"),)


def staged_without_key(table: str) -> bool:
    """The customers mart is staged without a primary key: building that index costs a
    quarter of the load, and the upsert refuses a key that appears twice all the same
    ("cannot affect row a second time"). The small files keep theirs."""
    return table == customer_mart()


def wanted_tables() -> list[schema_plan.WantedTable]:
    """Each mart as its contract and the loader's bookkeeping make it."""
    wanted = []
    for mart in marts():
        customers = mart == customer_mart()
        indexes = ()
        if mart == "customer_analytics":
            indexes = ((REVENUE_RANK_INDEX, "btree (total_revenue desc, customer_id)"),)
        wanted.append(
            schema_plan.WantedTable(
                contract(mart),
                extra_columns(mart),
                CUSTOMERS_FILLFACTOR if customers else None,
                indexes,
            )
        )
    return wanted


def _project_views() -> frozenset[str]:
    """The views dbt builds on the analytics database: models/analytics."""
    folder = Path(current().project_dir) / "models" / "analytics"
    return frozenset(p.stem for p in folder.glob("*.sql"))


def plan_upgrade(cur) -> schema_plan.SchemaPlan:
    """What bringing the analytics tables to the contracts takes (nothing is run)."""
    load_contracts()  # a contract that cannot be read is named before anything else
    return schema_plan.plan(
        cur,
        ANALYTICS_SCHEMA,
        wanted_tables(),
        managed_views=_project_views(),
        other_known=frozenset({CUSTOMER_TOTALS}),
    )


def customer_totals_ddl() -> sql.Composed:
    """The one-row table of totals over all customers."""
    return sql.SQL(
        """
        create table if not exists {totals} (
            singleton boolean primary key default true check (singleton),
            revenue_of_all_customers numeric not null,
            latest_as_of_date date,
            customer_count bigint not null
        );
        """
    ).format(totals=sql.Identifier(ANALYTICS_SCHEMA, CUSTOMER_TOTALS))


def ledger_ddl() -> sql.Composed:
    """The load ledger and the version tables, created if missing."""
    meta = sql.Identifier(LEDGER_SCHEMA)
    return sql.SQL(
        """
        create schema if not exists {meta};
        create table if not exists {meta}.load_ledger (
            run_id uuid primary key,
            run_date date not null,
            manifest_key text not null,
            manifest_sha256 text not null,
            extracted_at timestamptz not null,
            dbt_invocation_id text,
            started_at timestamptz not null default clock_timestamp(),
            loaded_at timestamptz,
            rows_loaded jsonb
        );
        create index if not exists load_ledger_run_date_idx on {meta}.load_ledger (run_date);
        create table if not exists {meta}.day_versions (
            sales_date date primary key,
            as_of_date date not null,
            extracted_at timestamptz not null,
            run_id uuid not null
        );
        create table if not exists {meta}.run_reports (
            run_id uuid primary key,
            run_date date not null,
            status text not null,
            report jsonb not null,
            reported_at timestamptz not null default clock_timestamp()
        );
        create index if not exists run_reports_run_date_idx on {meta}.run_reports (run_date);
        create table if not exists {meta}.upgrades (
            deploy_stamp timestamptz primary key,
            versions jsonb not null,
            applied_at timestamptz not null default clock_timestamp()
        );
        create table if not exists {meta}.removed_customers (
            customer_id bigint primary key,
            as_of_date date not null,
            extracted_at timestamptz not null,
            run_id uuid not null
        );
        """
    ).format(meta=meta)


def refresh_customer_totals() -> sql.Composed:
    """The totals over all customers that top_customers reads, recomputed from the rows.

    One sequential read of customer_analytics a night (tens of milliseconds per 100k
    customers), in the load's transaction, so that the view never mixes two nights.
    """
    return sql.SQL(
        "insert into {totals} (singleton, revenue_of_all_customers, latest_as_of_date, "
        "customer_count) "
        "select true, coalesce(sum(total_revenue), 0), max(as_of_date), count(*) from {customers} "
        "on conflict (singleton) do update set "
        "revenue_of_all_customers = excluded.revenue_of_all_customers, "
        "latest_as_of_date = excluded.latest_as_of_date, customer_count = excluded.customer_count"
    ).format(
        totals=sql.Identifier(ANALYTICS_SCHEMA, CUSTOMER_TOTALS),
        customers=sql.Identifier(ANALYTICS_SCHEMA, "customer_analytics"),
    )


def create_analytics_tables(conn) -> schema_plan.SchemaPlan:
    """Bring the analytics tables to the contracts, and the ledger up to date.

    In the caller's transaction, holding the load lock (no load runs between the plan
    and its DDL). A plan with a refusal raises before anything is run.
    """
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(%s)", (LOAD_LOCK,))
        adopt_legacy_schema(cur, LEDGER_SCHEMA, "load_ledger")
        upgrade = plan_upgrade(cur)
        upgrade.raise_if_refused()
        versions_added = any(
            c.column == VERSION_COLUMN and c.table == customer_mart() for c in upgrade.changes
        )
        for statement in upgrade.statements:
            cur.execute(statement)
        cur.execute(ledger_ddl())
        cur.execute(deployments_ddl())
        if versions_added:
            _copy_legacy_versions(cur)
        if customer_mart() == "customer_analytics":
            cur.execute(customer_totals_ddl())
            cur.execute(refresh_customer_totals())
    return upgrade


def _copy_legacy_versions(cur) -> None:
    """Versions an earlier loader kept in the ledger's customer_versions, into the rows.

    The general upgrade added the version column (-infinity in every row); this is the
    part it cannot express: the rows get their old version, and the customers that
    have no row any more become removals, so that a stale night still cannot bring
    them back. Runs once: only when the version column was just added.
    """
    cur.execute("select to_regclass(%s)", (f"{LEDGER_SCHEMA}.customer_versions",))
    if cur.fetchone()[0] is None:
        return
    target = sql.Identifier(ANALYTICS_SCHEMA, customer_mart())
    version = sql.Identifier(VERSION_COLUMN)
    old = sql.Identifier(LEDGER_SCHEMA, "customer_versions")
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
        ).format(removed=sql.Identifier(LEDGER_SCHEMA, "removed_customers"), old=old, t=target)
    )


def _ensure_role(cur, role: str) -> None:
    cur.execute("select 1 from pg_roles where rolname = %s", (role,))
    if cur.fetchone() is None:
        # NOLOGIN: these are privilege sets. Grant them to login users
        # (GRANT etl_reader TO alice) or give them a password to log in directly.
        cur.execute(sql.SQL("create role {} nologin").format(sql.Identifier(role)))


def create_roles(conn, database: str) -> None:
    """A loader that may read and upsert but create or drop nothing; a read-only reader."""
    names = {
        "db": sql.Identifier(database),
        "loader": sql.Identifier(LOADER_ROLE),
        "reader": sql.Identifier(READER_ROLE),
        "analytics": sql.Identifier(ANALYTICS_SCHEMA),
        "meta": sql.Identifier(LEDGER_SCHEMA),
        "marts": sql.SQL(", ").join(
            sql.Identifier(ANALYTICS_SCHEMA, m) for m in (*marts(), CUSTOMER_TOTALS)
        ),
    }
    with conn.cursor() as cur:
        for role in (LOADER_ROLE, READER_ROLE):
            _ensure_role(cur, role)
        for statement in _ROLE_STATEMENTS:
            cur.execute(sql.SQL(statement).format(**names))
        # Per table, whatever an earlier version granted on the whole schema.
        cur.execute(
            sql.SQL("revoke all on all tables in schema {meta} from {loader}").format(**names)
        )
        for table, privileges in LEDGER_GRANTS.items():
            cur.execute(
                sql.SQL("grant {} on {} to {}").format(
                    sql.SQL(privileges), sql.Identifier(LEDGER_SCHEMA, table), names["loader"]
                )
            )
        _revoke_from_public(cur, database)


_ROLE_STATEMENTS = (
    # Temporary tables are where the loader stages each file before the upsert.
    "grant connect, temporary on database {db} to {loader}",
    "grant connect on database {db} to {reader}",
    "revoke create on schema {analytics} from public",
    "grant usage on schema {analytics} to {loader}, {reader}",
    "grant usage on schema {meta} to {loader}",
    "grant select, insert, update, delete on {marts} to {loader}",
    "grant select on all tables in schema {analytics} to {reader}",
    # Views that dbt re-creates later keep the grants.
    "alter default privileges in schema {analytics} grant select on tables to {reader}",
    "alter role {reader} set search_path = {analytics}",
    "alter role {loader} set search_path = {analytics}",
    # Any login sees the views unqualified, as the example queries are written.
    "alter database {db} set search_path = {analytics}, public",
)


def _revoke_from_public(cur, database: str) -> None:
    """What every role has by default and none of the pipeline's needs beyond its own
    grants: temporary tables and large objects in the analytics database, and a
    connection to the server's postgres database. The analytics server serves this
    pipeline alone."""
    cur.execute(
        sql.SQL("revoke temporary on database {} from public").format(sql.Identifier(database))
    )
    for function in LARGE_OBJECT_CREATORS:
        cur.execute(sql.SQL("revoke execute on function {} from public").format(sql.SQL(function)))
    cur.execute(
        "select 1 from pg_database where datname = 'postgres' and datname <> %s", (database,)
    )
    if cur.fetchone():
        cur.execute("revoke connect, temporary on database postgres from public")


def set_reader_password(conn, password: str) -> None:
    """Let the read-only role log in (the RDS Data API needs a login with a secret).

    The server receives the password's SCRAM verifier, never the password."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter role {} login password %s").format(sql.Identifier(READER_ROLE)),
            (scram_sha_256(password),),
        )


def _has_upgrades(cur) -> bool:
    """Whether the upgrade ledger exists yet (an init creates it, after the first check)."""
    cur.execute("select to_regclass(%s)", (f"{LEDGER_SCHEMA}.upgrades",))
    return cur.fetchone()[0] is not None


def last_upgrade(conn) -> tuple[datetime, dict] | None:
    """The stamp and versions of the last deployment that upgraded this database, and
    None before the first (or before this ledger existed)."""
    with conn.cursor() as cur:
        if not _has_upgrades(cur):
            return None
        cur.execute(
            sql.SQL(
                "select deploy_stamp, versions from {} order by deploy_stamp desc limit 1"
            ).format(sql.Identifier(LEDGER_SCHEMA, "upgrades"))
        )
        row = cur.fetchone()
    return None if row is None else (row[0], row[1])


def upgraded_to(conn, versions: dict) -> bool:
    """Whether a deployment ever upgraded this database to ``versions``."""
    with conn.cursor() as cur:
        if not _has_upgrades(cur):
            return False
        cur.execute(
            sql.SQL("select exists (select 1 from {} where versions = %s::jsonb)").format(
                sql.Identifier(LEDGER_SCHEMA, "upgrades")
            ),
            (json.dumps(versions),),
        )
        return cur.fetchone()[0]


def record_upgrade(conn, stamp: datetime, versions: dict) -> None:
    """Note that the deployment made at ``stamp`` upgraded this database to ``versions``."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "insert into {} (deploy_stamp, versions) values (%s, %s::jsonb) "
                "on conflict (deploy_stamp) do nothing"
            ).format(sql.Identifier(LEDGER_SCHEMA, "upgrades")),
            (stamp, json.dumps(versions)),
        )
