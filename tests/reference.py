"""An independent computation of the three marts, in Python, from raw source rows.

It shares no code with the dbt models: the business rules are written again here,
with zoneinfo and Decimal, so that a mistake in either shows up as a difference.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from dbt_project.db import PgSettings, connect

TOKYO = ZoneInfo("Asia/Tokyo")
CENT = Decimal("0.01")


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fetch_source(settings: PgSettings, schema: str = "public") -> dict[str, list[tuple]]:
    conn = connect(settings)
    rows = {}
    with conn, conn.cursor() as cur:
        cur.execute(f"select customer_id, name, region from {schema}.customers")  # noqa: S608
        rows["customers"] = cur.fetchall()
        cur.execute(f"select product_id, name, category from {schema}.products")  # noqa: S608
        rows["products"] = cur.fetchall()
        cur.execute(f"select order_id, customer_id, ordered_at, status from {schema}.orders")  # noqa: S608
        rows["orders"] = cur.fetchall()
        cur.execute(f"select order_id, product_id, quantity, unit_price from {schema}.order_items")  # noqa: S608
        rows["order_items"] = cur.fetchall()
    conn.close()
    return rows


def marts(source: dict[str, list[tuple]], as_of: date | None = None) -> dict[str, dict]:
    """Full-history marts keyed by primary key, over orders of business days <= as_of."""
    customers = {c[0]: c for c in source["customers"]}
    products = {p[0]: p for p in source["products"]}
    orders = {}
    for order_id, customer_id, ordered_at, status in source["orders"]:
        day = ordered_at.astimezone(TOKYO).date()
        if status != "cancelled" and (as_of is None or day <= as_of):
            orders[order_id] = (customer_id, day)
    items = defaultdict(list)
    for order_id, product_id, quantity, unit_price in source["order_items"]:
        if order_id in orders:
            items[order_id].append((product_id, quantity, unit_price))

    cust = defaultdict(lambda: {"orders": set(), "items": 0, "revenue": Decimal(0), "days": []})
    prod = defaultdict(lambda: {"orders": set(), "units": 0, "revenue": Decimal(0)})
    daily = defaultdict(
        lambda: {"orders": set(), "customers": set(), "units": 0, "revenue": Decimal(0)}
    )
    for order_id, (customer_id, day) in orders.items():
        region = customers[customer_id][2]
        c, d = cust[customer_id], daily[(day, region)]
        c["orders"].add(order_id)
        c["days"].append(day)
        d["orders"].add(order_id)
        d["customers"].add(customer_id)
        for product_id, quantity, unit_price in items[order_id]:
            amount = quantity * unit_price
            c["items"] += quantity
            c["revenue"] += amount
            d["units"] += quantity
            d["revenue"] += amount
            p = prod[(day, product_id)]
            p["orders"].add(order_id)
            p["units"] += quantity
            p["revenue"] += amount

    last_day = max((day for _, day in orders.values()), default=None)
    customer_rows = {}
    for customer_id, c in cust.items():
        count = len(c["orders"])
        customer_rows[customer_id] = {
            "customer_name": customers[customer_id][1],
            "region": customers[customer_id][2],
            "total_orders": count,
            "total_items": c["items"],
            "total_revenue": money(c["revenue"]),
            "avg_order_value": money(c["revenue"] / count),
            "first_order_date": min(c["days"]),
            "last_order_date": max(c["days"]),
            "as_of_date": as_of or last_day,
        }
    product_rows = {
        key: {
            "product_name": products[key[1]][1],
            "category": products[key[1]][2],
            "order_count": len(p["orders"]),
            "units_sold": p["units"],
            "revenue": money(p["revenue"]),
        }
        for key, p in prod.items()
    }
    daily_rows = {
        key: {
            "order_count": len(d["orders"]),
            "customer_count": len(d["customers"]),
            "units_sold": d["units"],
            "revenue": money(d["revenue"]),
            "avg_order_value": money(d["revenue"] / len(d["orders"])),
        }
        for key, d in daily.items()
    }
    return {
        "customer_analytics": customer_rows,
        "product_sales_summary": product_rows,
        "daily_sales_summary": daily_rows,
    }


def read_marts(settings: PgSettings, schema: str = "analytics") -> dict[str, dict]:
    """The same shape, read from loaded (or built) tables."""
    conn = connect(settings)
    found: dict[str, dict] = {}
    with conn, conn.cursor() as cur:
        for table, key_len in (
            ("customer_analytics", 1),
            ("product_sales_summary", 2),
            ("daily_sales_summary", 2),
        ):
            cur.execute(f"select * from {schema}.{table}")  # noqa: S608
            names = [d.name for d in cur.description]
            rows = {}
            for row in cur.fetchall():
                key = row[0] if key_len == 1 else tuple(row[:key_len])
                rows[key] = dict(zip(names[key_len:], row[key_len:], strict=True))
            found[table] = rows
    conn.close()
    return found
