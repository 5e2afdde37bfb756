"""The operational (source) tables and the sample data that fills them."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from psycopg2 import sql

from dbt_project.facts.business_calendar import BUSINESS_TIMEZONE
from dbt_project.settings import current

# Creation order respects the foreign keys; loading uses the same order.
SOURCE_TABLES = ("customers", "products", "orders", "order_items")

_DDL = """
create schema if not exists {schema};

create table if not exists {schema}.customers (
    customer_id bigint primary key,
    name text not null,
    email text not null unique,
    region text not null,
    created_at timestamptz not null
);

create table if not exists {schema}.products (
    product_id bigint primary key,
    name text not null,
    category text not null,
    price numeric(12, 2) not null check (price >= 0)
);

create table if not exists {schema}.orders (
    order_id bigint primary key,
    customer_id bigint not null references {schema}.customers (customer_id),
    ordered_at timestamptz not null,
    status text not null
        check (status in ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    updated_at timestamptz not null
);

create table if not exists {schema}.order_items (
    order_item_id bigint primary key,
    order_id bigint not null references {schema}.orders (order_id),
    product_id bigint not null references {schema}.products (product_id),
    quantity integer not null check (quantity > 0),
    unit_price numeric(12, 2) not null check (unit_price >= 0)
);

-- A night reads one business day plus the orders updated in its window:
-- these keep that cheap however long the history grows.
create index if not exists orders_ordered_at_idx on {schema}.orders (ordered_at);
create index if not exists orders_updated_at_idx on {schema}.orders (updated_at);
create index if not exists orders_customer_id_idx on {schema}.orders (customer_id);
create index if not exists order_items_order_id_idx on {schema}.order_items (order_id);
"""


def create_source_tables(conn, schema: str = "public") -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(_DDL).format(schema=sql.Identifier(schema)))


def seeds_dir() -> Path:
    return current().project_dir / "seeds"


# The sample's timestamps, moved together so that its history ends on a chosen day.
_SAMPLE_TIMESTAMPS = {"customers": ("created_at",), "orders": ("ordered_at", "updated_at")}


def source_is_empty(conn, schema: str = "public") -> bool:
    """True when no operational table holds a row: the only source sample rows may enter."""
    with conn.cursor() as cur:
        for table in SOURCE_TABLES:
            cur.execute(
                sql.SQL("select exists (select from {})").format(sql.Identifier(schema, table))
            )
            if cur.fetchone()[0]:
                return False
    return True


def load_sample_data(
    conn, schema: str = "public", *, end_date: date | None = None
) -> dict[str, int]:
    """Insert the sample rows that are not there yet; existing rows are never touched.

    With ``end_date`` every timestamp moves by the same whole number of days so that
    the last sample business day (in the business time zone) is ``end_date``: a
    deployment initialised today gets a history that ends today, and its first night
    has a real day to load. Without it the rows keep the dates of the CSV files.
    Returns the number of rows inserted per table.
    """
    inserted: dict[str, int] = {}
    with conn.cursor() as cur:
        copied = {table: _copy_sample(conn, cur, schema, table) for table in SOURCE_TABLES}
        if end_date is not None:
            _shift_sample(cur, end_date)
        for table, columns in copied.items():
            cur.execute(
                sql.SQL(
                    "insert into {target} ({columns}) select {columns} from {sample} "
                    "on conflict do nothing"
                ).format(
                    target=sql.Identifier(schema, table),
                    columns=columns,
                    sample=_sample_table(table),
                )
            )
            inserted[table] = cur.rowcount
    return inserted


def _sample_table(table: str) -> sql.Identifier:
    return sql.Identifier(f"_sample_{table}")


def _copy_sample(conn, cur, schema: str, table: str) -> sql.Composed:
    """Copy one CSV into a temporary table shaped like the source table; its columns."""
    sample, operational = _sample_table(table), sql.Identifier(schema, table)
    cur.execute(
        sql.SQL(
            "create temporary table {sample} (like {operational} including defaults) on commit drop"
        ).format(sample=sample, operational=operational)
    )
    with (seeds_dir() / f"{table}.csv").open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in header)
        handle.seek(0)
        cur.copy_expert(
            sql.SQL("copy {sample} ({columns}) from stdin with (format csv, header true)")
            .format(sample=sample, columns=columns)
            .as_string(conn),
            handle,
        )
    return columns


def _shift_sample(cur, end_date: date) -> None:
    cur.execute(
        sql.SQL("select max((ordered_at at time zone %s)::date) from {}").format(
            _sample_table("orders")
        ),
        (BUSINESS_TIMEZONE,),
    )
    (last,) = cur.fetchone()
    days = (end_date - last).days
    for table, columns in _SAMPLE_TIMESTAMPS.items():
        cur.execute(
            sql.SQL("update {} set {}").format(
                _sample_table(table),
                sql.SQL(", ").join(
                    sql.SQL("{c} = {c} + make_interval(days => %(days)s)").format(
                        c=sql.Identifier(c)
                    )
                    for c in columns
                ),
            ),
            {"days": days},
        )


def history_bounds(conn, schema: str = "public") -> tuple[date | None, date | None]:
    """The first and last business day with an order (None, None for no orders).

    Ends the connection's transaction (a read, left open, would block set_session):
    call it with nothing uncommitted.
    """
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "select min((ordered_at at time zone %(tz)s)::date), "
                "max((ordered_at at time zone %(tz)s)::date) from {}"
            ).format(sql.Identifier(schema, "orders")),
            {"tz": BUSINESS_TIMEZONE},
        )
        first, last = cur.fetchone()
    conn.rollback()
    return first, last


def day_counts(
    conn, first: date, last: date, schema: str = "public"
) -> tuple[dict[date, tuple[int, int]], int]:
    """Orders placed on each business day from ``first`` to ``last`` and their customers
    (days without any are absent), and the source's number of customers: what a
    reprocessing plan sizes its chunks by. One range scan of the ordered_at index; ends
    the connection's transaction, as ``history_bounds`` does."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "select (ordered_at at time zone %(tz)s)::date as day, count(*), "
                "count(distinct customer_id) from {} "
                "where ordered_at >= %(first)s::timestamp at time zone %(tz)s "
                "and ordered_at < (%(last)s::date + 1)::timestamp at time zone %(tz)s "
                "group by 1"
            ).format(sql.Identifier(schema, "orders")),
            {"tz": BUSINESS_TIMEZONE, "first": first, "last": last},
        )
        found = {day: (orders, customers) for day, orders, customers in cur.fetchall()}
        cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, "customers")))
        (customers,) = cur.fetchone()
    conn.rollback()
    return found, customers
