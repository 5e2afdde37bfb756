"""The analytics database: tables from the contracts, the ledger, the roles.

The loader's bookkeeping beside each table (its version column, table options, the
totals row), the ledger's tables, and the roles that read and write them.
"""

from __future__ import annotations

from psycopg2 import sql

from dbt_project.contract.tables import contract
from dbt_project.facts.names import ANALYTICS_SCHEMA, LEDGER_SCHEMA, MARTS
from dbt_project.facts.roles import LOADER_ROLE, READER_ROLE
from dbt_project.postgres.connection import adopt_legacy_schema
from dbt_project.postgres.logins import scram_sha_256

# Loads run one at a time: versions are read and written by each, so two loads of
# different days must not interleave. Any constant shared by all loaders will do.
LOAD_LOCK = 0x5E7105D


# Columns the analytics tables have beyond their contract: the loader's bookkeeping.
# A customer row's version is (as_of_date, extracted_at): cumulative numbers as of a
# later day win; for the same day, the later read of the source.
VERSION_COLUMN = "extracted_at"
EXTRA_COLUMNS = {"customer_analytics": ((VERSION_COLUMN, "timestamptz not null"),)}
# A night rewrites the row of every customer it owns. Free space on each page lets
# PostgreSQL put the new row version beside the old one without a new primary-key
# entry (a HOT update); the dead version is pruned when the page is next written.
# 30 % free covers a night that rewrites up to about 40 % of a page's rows.
FILLFACTOR = {"customer_analytics": 70}
# customer_analytics is staged without a primary key: building that index costs a
# quarter of the load, and the upsert refuses a key that appears twice all the same
# ("cannot affect row a second time"). The small files keep theirs.
STAGED_WITHOUT_KEY = frozenset({"customer_analytics"})
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
    "removed_customers": "select, insert, update",
    "run_reports": "select, insert, update",  # a retried report replaces its own row
}
# Large objects: nothing here uses them, and any role may otherwise create them.
LARGE_OBJECT_CREATORS = ("lo_creat(integer)", "lo_create(oid)", "lo_from_bytea(oid, bytea)")


def customer_totals_ddl() -> sql.Composed:
    """The ranking's index and the one-row table of totals over all customers."""
    return sql.SQL(
        """
        create index if not exists {index} on {customers} (total_revenue desc, customer_id);
        create table if not exists {totals} (
            singleton boolean primary key default true check (singleton),
            revenue_of_all_customers numeric not null,
            latest_as_of_date date,
            customer_count bigint not null
        );
        """
    ).format(
        index=sql.Identifier(REVENUE_RANK_INDEX),
        customers=sql.Identifier(ANALYTICS_SCHEMA, "customer_analytics"),
        totals=sql.Identifier(ANALYTICS_SCHEMA, CUSTOMER_TOTALS),
    )


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


def create_analytics_tables(conn) -> None:
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
        adopt_legacy_schema(cur, LEDGER_SCHEMA, "load_ledger")
        cur.execute(ledger_ddl())
        _upgrade_customer_versions(cur)
        # Also brings an earlier version's database up to date: index, table, totals.
        cur.execute(customer_totals_ddl())
        cur.execute(refresh_customer_totals())


def _upgrade_customer_versions(cur) -> None:
    """Bring a customer_analytics table from before rows carried their version up to date.

    Such a table kept each customer's version in the ledger's customer_versions. Its rows get
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
    cur.execute("select to_regclass(%s)", (f"{LEDGER_SCHEMA}.customer_versions",))
    if cur.fetchone()[0] is None:
        return
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
            sql.Identifier(ANALYTICS_SCHEMA, m) for m in (*MARTS, CUSTOMER_TOTALS)
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
