"""Facts about the analytics database that the extract, the load, ``etl init``, the
benchmarks and the tests share: schema names, the loader's extra columns and table
options, which keys a night owns, the tables every night stages, and the ledger.

It builds no connection and runs no SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

from .contracts import MARTS

ANALYTICS_SCHEMA = "analytics"
META_SCHEMA = "etl"
# Loads run one at a time: versions are read and written by each, so two loads of
# different days must not interleave. Any constant shared by all loaders will do.
LOAD_LOCK = 0x5E7105D


@dataclass(frozen=True)
class Ownership:
    """A set of keys a night owns, and the marts whose rows those keys own."""

    keys_table: str
    key: str
    versions_table: str
    marts: tuple[str, ...]
    # Compared lexicographically; the larger version wins.
    version_columns: tuple[str, ...]


OWNERSHIPS = (
    Ownership(
        keys_table="run_window_days",
        key="sales_date",
        versions_table="day_versions",
        marts=("product_sales_summary", "daily_sales_summary"),
        # A later extraction read a later state of the source for the same day.
        version_columns=("extracted_at",),
    ),
)
# Owned customers the night has no customer_analytics row for.
REMOVED_CUSTOMERS = "run_window_removed_customers"
# What every night stages, in the order the load reads it.
REQUIRED_TABLES = (*MARTS, *(o.keys_table for o in OWNERSHIPS), REMOVED_CUSTOMERS)
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
    meta = sql.Identifier(META_SCHEMA)
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
