"""An independent computation of the three marts, in Python, from raw source rows.

It shares no code with the dbt models nor with the Python package: the business
rules (Tokyo business day, cancelled orders count nowhere, revenue = quantity x
unit_price) are written again here, with zoneinfo and Decimal, the columns compared
are written out below and the databases are read with psycopg2 directly, so that a
mistake in either (or a change to the product's contract) shows up as a difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

import psycopg2

TOKYO = ZoneInfo("Asia/Tokyo")
CENT = Decimal("0.01")
# The marts' columns, key columns first: what an analyst reads (the loader's own
# bookkeeping columns, such as extracted_at, are not the numbers).
MART_COLUMNS = {
    "customer_analytics": (
        "customer_id", "customer_name", "region", "total_orders", "total_items",
        "total_revenue", "avg_order_value", "first_order_date", "last_order_date", "as_of_date",
    ),
    "product_sales_summary": (
        "sales_date", "product_id", "product_name", "category", "order_count", "units_sold",
        "revenue",
    ),
    "daily_sales_summary": (
        "sales_date", "region", "order_count", "customer_count", "units_sold", "revenue",
        "avg_order_value",
    ),
}  # fmt: skip
MART_KEYS = {
    "customer_analytics": ("customer_id",),
    "product_sales_summary": ("sales_date", "product_id"),
    "daily_sales_summary": ("sales_date", "region"),
}


class Server(Protocol):
    """Where a database is (the tests' settings objects have these attributes)."""

    host: str
    port: int
    dbname: str
    user: str
    password: str


def _connect(settings: Server) -> psycopg2.extensions.connection:
    return psycopg2.connect(
        host=settings.host,
        port=settings.port,
        dbname=settings.dbname,
        user=settings.user,
        password=settings.password or None,
        connect_timeout=10,
    )


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


def fetch_source(settings: Server, schema: str = "public") -> Shop:
    columns = {
        "customers": "customer_id, name, region",
        "products": "product_id, name, category",
        "orders": "order_id, customer_id, ordered_at, status, updated_at",
        "order_items": "order_id, product_id, quantity, unit_price",
    }
    conn = _connect(settings)
    rows = {}
    with conn, conn.cursor() as cur:
        for table, names in columns.items():
            cur.execute(f"select {names} from {schema}.{table}")  # noqa: S608
            keys = [d.name for d in cur.description]
            rows[table] = [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]
    conn.close()
    return Shop(**rows)


def marts(shop: Shop, as_of: date) -> dict[str, dict]:
    """The marts as of ``as_of``, keyed by primary key (a customer by its id alone),
    each row without its key columns; ``as_of_date`` is ``as_of``."""
    shop = shop.through(as_of)
    if not shop.orders:
        return {"customer_analytics": {}, "product_sales_summary": {}, "daily_sales_summary": {}}
    found = {}
    for table, rows in expected_marts(shop).items():
        found[table] = {
            (key[0] if len(key) == 1 else key): {
                column: (as_of if column == "as_of_date" else value)
                for column, value in row.items()
                if column not in MART_KEYS[table]
            }
            for key, row in rows.items()
        }
    return found


def touched_orders(shop: Shop, run_date: date, lookback_days: int) -> list[dict]:
    """The orders a night's window touches: placed on one of its business days, or
    changed on one (a late cancellation) if placed by ``run_date``. Read from a source as
    it stands after the night, ``updated_at`` is each order's last change; the last
    night to touch an order is the same either way."""
    first = run_date - timedelta(days=lookback_days - 1)
    return [
        order
        for order in shop.orders
        if first <= business_day(order["ordered_at"]) <= run_date
        or (
            first <= business_day(order["updated_at"]) <= run_date
            and business_day(order["ordered_at"]) <= run_date
        )
    ]


def touched_customers(shop: Shop, run_date: date, lookback_days: int) -> set[int]:
    """The customers whose rows a night re-states."""
    return {order["customer_id"] for order in touched_orders(shop, run_date, lookback_days)}


def owned_days(shop: Shop, run_date: date, lookback_days: int) -> set[date]:
    """The business days a night recomputes: its lookback days (with or without orders)
    and the day of every order it touches."""
    lookback = {run_date - timedelta(days=n) for n in range(lookback_days)}
    touched = touched_orders(shop, run_date, lookback_days)
    return lookback | {business_day(order["ordered_at"]) for order in touched}


def as_of_dates(shop: Shop, nights: Sequence[tuple[date, int]]) -> dict[int, date]:
    """Each customer's ``as_of_date`` after ``nights`` (run date, lookback days) were
    loaded: the last night that touched it (a row never goes back in time)."""
    found: dict[int, date] = {}
    for run_date, lookback_days in nights:
        for customer_id in touched_customers(shop, run_date, lookback_days):
            found[customer_id] = max(run_date, found.get(customer_id, run_date))
    return found


def order_states(settings: Server, schema: str = "public") -> dict[int, tuple[str, date]]:
    """Each order's status and business day, to compare before and after a day's traffic."""
    conn = _connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(f"select order_id, status, ordered_at from {schema}.orders")  # noqa: S608
        states = {order_id: (status, business_day(at)) for order_id, status, at in cur.fetchall()}
    conn.close()
    return states


def late_cancellations(
    before: dict[int, tuple[str, date]],
    after: dict[int, tuple[str, date]],
    run_date: date,
    lookback_days: int,
) -> list[int]:
    """Orders that counted before a night and were cancelled for it, placed before its
    window: the path where a night fixes a day outside its lookback."""
    first = run_date - timedelta(days=lookback_days - 1)
    return sorted(
        order_id
        for order_id, (status, day) in after.items()
        if status == "cancelled"
        and order_id in before
        and before[order_id][0] != "cancelled"
        and day < first
    )


def read_marts(settings: Server, schema: str = "analytics") -> dict[str, dict]:
    """The same shape, read from loaded (or built) tables."""
    conn = _connect(settings)
    found: dict[str, dict] = {}
    with conn, conn.cursor() as cur:
        for table, names in MART_COLUMNS.items():
            key_len = len(MART_KEYS[table])
            columns = ", ".join(names)
            cur.execute(f"select {columns} from {schema}.{table}")  # noqa: S608
            names = [d.name for d in cur.description]
            rows = {}
            for row in cur.fetchall():
                key = row[0] if key_len == 1 else tuple(row[:key_len])
                rows[key] = dict(zip(names[key_len:], row[key_len:], strict=True))
            found[table] = rows
    conn.close()
    return found
