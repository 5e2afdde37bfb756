"""Helpers of the dbt project's integration tests: running dbt, loading source rows,
and the marts computed again in plain Python.

The Python computation shares nothing with the SQL: it applies the business rules
(Tokyo business day, cancelled orders count nowhere, revenue = quantity x unit_price)
with zoneinfo and Decimal, so a mistake on either side shows up as a difference.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from psycopg2 import sql
from psycopg2.extras import execute_values

from dbt_project.db import PgSettings, connect
from dbt_project.source_db import SOURCE_TABLES, create_source_tables

PROJECT_DIR = Path(__file__).resolve().parents[2]
TOKYO = ZoneInfo("Asia/Tokyo")
CENT = Decimal("0.01")

# Primary keys of the tables the tests compare.
MART_KEYS = {
    "customer_analytics": ("customer_id",),
    "product_sales_summary": ("sales_date", "product_id"),
    "daily_sales_summary": ("sales_date", "region"),
    "run_window_days": ("sales_date",),
    "run_window_customers": ("customer_id",),
}


# --- running dbt ---------------------------------------------------------------------


@dataclass(frozen=True)
class DbtRun:
    returncode: int
    output: str
    target_path: Path

    def check(self) -> DbtRun:
        assert self.returncode == 0, f"dbt failed:\n{self.output[-6000:]}"
        return self


def dbt_command() -> list[str]:
    """The dbt of the interpreter running the tests."""
    script = Path(sys.executable).with_name("dbt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dbt.cli.main"]


def run_dbt(
    args: list[str],
    *,
    settings: PgSettings,
    work_dir: Path,
    dbt_vars: dict | None = None,
    target: str = "dev",
) -> DbtRun:
    """Run dbt on the project against ``settings``, with its own target and log
    folders under ``work_dir``. ``target`` picks the schema: dev, or etl for ``source``."""
    target_path = work_dir / "target"
    command = [
        *dbt_command(),
        *args,
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_path),
        "--log-path",
        str(work_dir / "logs"),
    ]
    if dbt_vars is not None:
        command += ["--vars", json.dumps(dbt_vars)]
    env = {**os.environ, **settings.dbt_env(), "DO_NOT_TRACK": "1", "ETL_DBT_TARGET": target}
    result = subprocess.run(
        command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600
    )
    return DbtRun(result.returncode, result.stdout + result.stderr, target_path)


# --- source rows ---------------------------------------------------------------------


@dataclass
class Shop:
    """Source rows as the tests hold them: dicts with Python values."""

    customers: list[dict]
    products: list[dict]
    orders: list[dict]
    order_items: list[dict]

    def rows(self, table: str) -> list[dict]:
        return getattr(self, table)

    def through(self, last_day: date) -> Shop:
        """The shop without the orders of business days after ``last_day``."""
        orders = [o for o in self.orders if business_day(o["ordered_at"]) <= last_day]
        kept = {o["order_id"] for o in orders}
        items = [i for i in self.order_items if i["order_id"] in kept]
        return Shop(self.customers, self.products, orders, items)


def business_day(moment: datetime) -> date:
    return moment.astimezone(TOKYO).date()


def read_seeds(seeds_dir: Path) -> Shop:
    def read(name: str) -> list[dict]:
        with (seeds_dir / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))

    return Shop(
        customers=[{**c, "customer_id": int(c["customer_id"])} for c in read("customers")],
        products=[
            {**p, "product_id": int(p["product_id"]), "price": Decimal(p["price"])}
            for p in read("products")
        ],
        orders=[
            {
                **o,
                "order_id": int(o["order_id"]),
                "customer_id": int(o["customer_id"]),
                "ordered_at": datetime.fromisoformat(o["ordered_at"]),
                "updated_at": datetime.fromisoformat(o["updated_at"]),
            }
            for o in read("orders")
        ],
        order_items=[
            {
                "order_item_id": int(i["order_item_id"]),
                "order_id": int(i["order_id"]),
                "product_id": int(i["product_id"]),
                "quantity": int(i["quantity"]),
                "unit_price": Decimal(i["unit_price"]),
            }
            for i in read("order_items")
        ],
    )


def load_shop(settings: PgSettings, shop: Shop, schema: str) -> None:
    """Create the source tables in ``schema`` and insert the shop's rows."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            create_source_tables(conn, schema)
            for table in SOURCE_TABLES:
                rows = shop.rows(table)
                if not rows:
                    continue
                columns = list(rows[0])
                execute_values(
                    cur,
                    sql.SQL("insert into {} ({}) values %s")
                    .format(
                        sql.Identifier(schema, table),
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                    )
                    .as_string(conn),
                    [tuple(row[c] for c in columns) for row in rows],
                    page_size=1000,
                )
    finally:
        conn.close()


def fetch_table(settings: PgSettings, schema: str, table: str) -> dict[tuple, dict]:
    """A table's rows keyed by its primary key (MART_KEYS)."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("select * from {}").format(sql.Identifier(schema, table)))
            names = [d.name for d in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()
    key = MART_KEYS[table]
    return {tuple(row[k] for k in key): row for row in rows}


def query(settings: PgSettings, statement: str, params: tuple = ()) -> list[dict]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            if cur.description is None:
                return []
            names = [d.name for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


# --- the marts, again, in Python -------------------------------------------------------


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def expected_marts(shop: Shop, day_of=business_day) -> dict[str, dict[tuple, dict]]:
    """The full-history marts of ``shop``. ``day_of`` maps ordered_at to the business
    day (the tests pass a wrong one to show that the data would expose it)."""
    customers = {c["customer_id"]: c for c in shop.customers}
    products = {p["product_id"]: p for p in shop.products}
    counted = {o["order_id"]: o for o in shop.orders if o["status"] != "cancelled"}
    lines: dict[int, list[dict]] = defaultdict(list)
    for item in shop.order_items:
        if item["order_id"] in counted:
            lines[item["order_id"]].append(item)

    def order_units(order_id: int) -> int:
        return sum(i["quantity"] for i in lines[order_id])

    def order_revenue(order_id: int) -> Decimal:
        return sum((i["quantity"] * i["unit_price"] for i in lines[order_id]), Decimal(0))

    as_of = max(day_of(o["ordered_at"]) for o in shop.orders)
    by_customer: dict[int, list[dict]] = defaultdict(list)
    by_day_region: dict[tuple, list[dict]] = defaultdict(list)
    by_day_product: dict[tuple, dict] = defaultdict(
        lambda: {"orders": set(), "units": 0, "revenue": Decimal(0)}
    )
    for order in counted.values():
        day = day_of(order["ordered_at"])
        by_customer[order["customer_id"]].append(order)
        by_day_region[(day, customers[order["customer_id"]]["region"])].append(order)
        for item in lines[order["order_id"]]:
            entry = by_day_product[(day, item["product_id"])]
            entry["orders"].add(order["order_id"])
            entry["units"] += item["quantity"]
            entry["revenue"] += item["quantity"] * item["unit_price"]

    customer_rows = {}
    for customer_id, orders in by_customer.items():
        revenue = sum((order_revenue(o["order_id"]) for o in orders), Decimal(0))
        days = [day_of(o["ordered_at"]) for o in orders]
        customer_rows[(customer_id,)] = {
            "customer_id": customer_id,
            "customer_name": customers[customer_id]["name"],
            "region": customers[customer_id]["region"],
            "total_orders": len(orders),
            "total_items": sum(order_units(o["order_id"]) for o in orders),
            "total_revenue": money(revenue),
            "avg_order_value": money(revenue / len(orders)),
            "first_order_date": min(days),
            "last_order_date": max(days),
            "as_of_date": as_of,
        }
    product_rows = {
        (day, product_id): {
            "sales_date": day,
            "product_id": product_id,
            "product_name": products[product_id]["name"],
            "category": products[product_id]["category"],
            "order_count": len(entry["orders"]),
            "units_sold": entry["units"],
            "revenue": money(entry["revenue"]),
        }
        for (day, product_id), entry in by_day_product.items()
    }
    daily_rows = {}
    for (day, region), orders in by_day_region.items():
        revenue = sum((order_revenue(o["order_id"]) for o in orders), Decimal(0))
        daily_rows[(day, region)] = {
            "sales_date": day,
            "region": region,
            "order_count": len(orders),
            "customer_count": len({o["customer_id"] for o in orders}),
            "units_sold": sum(order_units(o["order_id"]) for o in orders),
            "revenue": money(revenue),
            "avg_order_value": money(revenue / len(orders)),
        }
    return {
        "customer_analytics": customer_rows,
        "product_sales_summary": product_rows,
        "daily_sales_summary": daily_rows,
    }
