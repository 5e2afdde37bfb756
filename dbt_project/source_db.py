"""The operational (source) tables and the sample data that fills them."""

from __future__ import annotations

from pathlib import Path

from psycopg2 import sql

from .settings import current

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


def load_sample_data(conn, schema: str = "public") -> dict[str, int]:
    """Insert the sample rows that are not there yet; existing rows are never touched.

    Returns the number of rows inserted per table.
    """
    inserted: dict[str, int] = {}
    with conn.cursor() as cur:
        for table in SOURCE_TABLES:
            path = seeds_dir() / f"{table}.csv"
            staging = sql.Identifier(f"_sample_{table}")
            target = sql.Identifier(schema, table)
            cur.execute(
                sql.SQL(
                    "create temporary table {staging} (like {target} including defaults) "
                    "on commit drop"
                ).format(staging=staging, target=target)
            )
            with path.open(encoding="utf-8") as handle:
                header = handle.readline().strip().split(",")
                columns = sql.SQL(", ").join(sql.Identifier(c) for c in header)
                handle.seek(0)
                cur.copy_expert(
                    sql.SQL("copy {staging} ({columns}) from stdin with (format csv, header true)")
                    .format(staging=staging, columns=columns)
                    .as_string(conn),
                    handle,
                )
            cur.execute(
                sql.SQL(
                    "insert into {target} ({columns}) select {columns} from {staging} "
                    "on conflict do nothing"
                ).format(target=target, columns=columns, staging=staging)
            )
            inserted[table] = cur.rowcount
    return inserted
