"""Benchmark data, generated inside PostgreSQL with generate_series.

Two kinds: nights shaped like the real unload (the five relations dbt builds, with
``customer_analytics`` as the big one), and an operational shop history
(customers, products, orders, order_items) for the real dbt models. Values are
deterministic functions of the row number, so every run sees the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from psycopg2 import sql

from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import contract
from dbt_project.facts.names import ANALYTICS_SCHEMA, LEDGER_SCHEMA, MARTS
from dbt_project.postgres.analytics_schema import extra_columns
from dbt_project.postgres.source_schema import create_source_tables

REGIONS = ("北海道", "東北", "関東", "東京", "中部", "近畿", "大阪", "中国", "四国", "九州")
CATEGORIES = ("飲料", "食品", "家電", "本", "衣料", "玩具", "日用品", "化粧品")
FAMILY_NAMES = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤")
GIVEN_NAMES = ("太郎", "花子", "結衣", "大輔", "陽菜", "翔太", "美咲", "健太", "さくら", "悠人")
PRIOR_RUN_ID = "00000000-0000-4000-8000-000000000001"


def _array(values: tuple[str, ...]) -> str:
    return "array[" + ", ".join(f"'{v}'" for v in values) + "]"


@dataclass(frozen=True)
class Night:
    """One night's files: ``customers`` rows of customer_analytics plus a realistic rest."""

    customers: int
    run_date: date = date(2026, 11, 25)
    products: int = 500
    lookback_days: int = 2

    @property
    def first_date(self) -> date:
        return self.run_date - timedelta(days=self.lookback_days - 1)

    @property
    def extracted_at(self) -> datetime:
        # 02:00 Tokyo the next morning.
        return datetime.combine(self.run_date, datetime.min.time(), UTC) + timedelta(hours=17)

    @property
    def removed(self) -> int:
        """Owned customers left without a row (all their orders cancelled): one in 1,000."""
        return max(1, self.customers // 1000)

    @property
    def mart_rows(self) -> int:
        return self.customers + self.lookback_days * (self.products + len(REGIONS))

    @property
    def file_rows(self) -> int:
        return self.mart_rows + self.lookback_days + self.removed


# Each query yields columns of its contract, by name; a number column of the contract
# it does not name (a measure added since) is 0. ``%(as_of)s`` is the night's as-of
# day and ``%(delta)s`` shifts every amount: an earlier night of the same keys is the
# same query with another as_of and delta.
_QUERIES = {
    "customer_analytics": f"""
        select
            g.id as customer_id,
            ({_array(FAMILY_NAMES)})[1 + g.id %% 10] || ' '
                || ({_array(GIVEN_NAMES)})[1 + (g.id / 10) %% 10] as customer_name,
            ({_array(REGIONS)})[1 + (g.id * 7) %% 10] as region,
            o.total_orders,
            o.total_orders * (1 + g.id %% 4) as total_items,
            o.revenue as total_revenue,
            round(o.revenue / o.total_orders, 2) as avg_order_value,
            %(as_of)s::date - (30 + (g.id * 13) %% 700)::int as first_order_date,
            %(as_of)s::date - (g.id %% 30)::int as last_order_date,
            %(as_of)s::date as as_of_date
        from generate_series(1::bigint, %(customers)s) as g (id)
        cross join lateral (
            select
                1 + (g.id * 7919) %% 40 as total_orders,
                (((g.id * 104729) %% 2000000) / 100.0 + 100 + %(delta)s)::numeric(14, 2)
                    as revenue
        ) as o
        where %(only_even)s = false or g.id %% 2 = 0
    """,
    "product_sales_summary": f"""
        select
            d.day::date as sales_date,
            p.id as product_id,
            '商品' || p.id as product_name,
            ({_array(CATEGORIES)})[1 + p.id %% 8] as category,
            c.order_count,
            c.order_count * 2 as units_sold,
            (c.order_count * ((p.id * 37) %% 5000 + 100) + %(delta)s)::numeric(14, 2) as revenue
        from generate_series(%(first_date)s::date, %(run_date)s::date, interval '1 day')
            as d (day)
        cross join generate_series(1::bigint, %(products)s) as p (id)
        cross join lateral (
            select 1 + (p.id * 31 + extract(day from d.day)::int) %% 50 as order_count
        ) as c
    """,
    "daily_sales_summary": f"""
        select
            d.day::date as sales_date,
            r.region,
            c.order_count,
            c.order_count - c.order_count / 5 as customer_count,
            c.order_count * 2 as units_sold,
            (c.order_count * 3210 + %(delta)s)::numeric(14, 2) as revenue,
            round((c.order_count * 3210 + %(delta)s)::numeric / c.order_count, 2)
                as avg_order_value
        from generate_series(%(first_date)s::date, %(run_date)s::date, interval '1 day')
            as d (day)
        cross join unnest({_array(REGIONS)}) with ordinality as r (region, n)
        cross join lateral (
            select 100 + (r.n * 53 + extract(day from d.day)::int) %% 400 as order_count
        ) as c
    """,
    "run_window_days": """
        select d.day::date as sales_date
        from generate_series(%(first_date)s::date, %(run_date)s::date, interval '1 day')
            as d (day)
    """,
    # Owned customers left without a row: the ones past the night's own rows.
    "run_window_removed_customers": """
        select g.id as customer_id
        from generate_series(%(customers)s + 1, %(customers)s + %(removed)s) as g (id)
    """,
}


def _params(night: Night, *, prior: bool = False, only_even: bool = False) -> dict:
    return {
        # The night before also had rows for the customers this night removes.
        "customers": night.customers + (night.removed if prior else 0),
        "removed": night.removed,
        "products": night.products,
        "run_date": night.run_date,
        "first_date": night.first_date,
        "as_of": night.run_date - timedelta(days=1) if prior else night.run_date,
        "delta": -1 if prior else 0,
        "only_even": only_even,
    }


def _fill(cur, target: sql.Identifier, name: str, params: dict, extracted_at=None) -> None:
    query = f"select * from ({_QUERIES[name]}) as q"
    cur.execute(f"{query} limit 0", params)
    named = {d.name for d in cur.description}
    table = contract(name)
    values = [
        sql.SQL("q.{}").format(sql.Identifier(c.name)) if c.name in named else sql.SQL("0")
        for c in table.columns
    ]
    columns = [sql.Identifier(c) for c in table.column_names]
    if extracted_at is not None:  # an analytics table: its rows carry their version
        columns += [sql.Identifier(c.name) for c in extra_columns(name)]
        values.append(sql.SQL("%(extracted_at)s::timestamptz"))
        params = {**params, "extracted_at": extracted_at}
    insert = sql.SQL("insert into {} ({}) select {} from ").format(
        target, sql.SQL(", ").join(columns), sql.SQL(", ").join(values)
    )
    cur.execute(insert.as_string(cur) + f"({query}) as q", params)


def build_night(conn, schema: str, night: Night) -> None:
    """The five relations dbt would build for ``night``, in ``schema``, with their keys."""
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        for name in required_tables():
            cur.execute(contract(name).create_table_sql(schema))
            _fill(cur, sql.Identifier(schema, name), name, _params(night))
    vacuum(conn, [sql.Identifier(schema, name) for name in required_tables()])


# What the analytics database holds before the night is loaded.
#   changed    every key already there, from the night before: every row conflicts
#              and every value differs, so each one is really updated
#   half_new   the even customers there from the night before, the odd ones new
#   unchanged  this very night already loaded: every row conflicts, nothing differs
#   empty      nothing yet
SCENARIOS = ("changed", "half_new", "unchanged", "empty")


def prepare_target(conn, night: Night, scenario: str) -> None:
    """Reset the analytics tables, ledger and versions to ``scenario``, vacuumed."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}")
    marts = [sql.Identifier(ANALYTICS_SCHEMA, n) for n in MARTS]
    meta = [
        sql.Identifier(LEDGER_SCHEMA, n)
        for n in ("load_ledger", "day_versions", "removed_customers")
    ]
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("truncate {}").format(sql.SQL(", ").join(marts + meta)))
        if scenario != "empty":
            prior = scenario != "unchanged"
            only_even = scenario == "half_new"
            as_of = night.run_date - timedelta(days=1) if prior else night.run_date
            earlier = night.extracted_at - timedelta(days=1)
            for name in MARTS:
                params = _params(
                    night, prior=prior, only_even=only_even and name == "customer_analytics"
                )
                target = sql.Identifier(ANALYTICS_SCHEMA, name)
                _fill(cur, target, name, params, earlier if extra_columns(name) else None)
            cur.execute(
                "insert into ledger.day_versions select distinct sales_date, %s, %s, %s::uuid "
                "from analytics.product_sales_summary",
                (as_of, earlier, PRIOR_RUN_ID),
            )
    vacuum(conn, marts + meta)


def vacuum(conn, tables: list[sql.Identifier]) -> None:
    """Vacuum, analyze and checkpoint: every measured run starts from the same state."""
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("vacuum analyze {}").format(sql.SQL(", ").join(tables)))
            cur.execute("checkpoint")
    finally:
        conn.autocommit = False


@dataclass(frozen=True)
class ShopHistory:
    """An operational history of ``days`` business days ending on ``last_day``.

    Every day has the same orders, so a night's window is the same size however
    long the history is. Business day = ``ordered_at`` in Asia/Tokyo.
    """

    days: int
    orders_per_day: int
    customers: int
    products: int = 400
    last_day: date = date(2026, 11, 25)

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)


def build_shop(conn, shop: ShopHistory) -> dict[str, int]:
    """Fill the source tables; foreign keys hold by construction, so their triggers are off."""
    params = {
        "days": shop.days,
        "per_day": shop.orders_per_day,
        "customers": shop.customers,
        "products": shop.products,
        "first_day": shop.first_day,
        "last_day": shop.last_day,
    }
    with conn, conn.cursor() as cur:
        create_source_tables(conn)
        cur.execute("set local session_replication_role = replica")
        cur.execute(
            f"""
            insert into customers
            select
                g.id,
                ({_array(FAMILY_NAMES)})[1 + g.id %% 10] || ' '
                    || ({_array(GIVEN_NAMES)})[1 + (g.id / 10) %% 10],
                'customer' || g.id || '@example.jp',
                ({_array(REGIONS)})[1 + (g.id * 7) %% 10],
                timestamptz '2024-01-01 09:00+09' + (g.id %% 600) * interval '1 day'
            from generate_series(1::bigint, %(customers)s) as g (id)
            """,
            params,
        )
        cur.execute(
            f"""
            insert into products
            select
                g.id,
                '商品' || g.id,
                ({_array(CATEGORIES)})[1 + g.id %% 8],
                ((g.id * 37) %% 5000 + 100)::numeric(12, 2)
            from generate_series(1::bigint, %(products)s) as g (id)
            """,
            params,
        )
        # Orders spread over each Tokyo day; most are delivered, one in 29 is
        # cancelled, and each is last updated up to three days after it was placed.
        cur.execute(
            """
            insert into orders
            select
                o.order_id,
                1 + (o.order_id * 7919) %% %(customers)s,
                o.ordered_at,
                case
                    when o.order_id %% 29 = 0 then 'cancelled'
                    when o.ordered_at + interval '72 hours'
                        < (%(last_day)s::date + 1)::timestamp at time zone 'Asia/Tokyo'
                        then 'delivered'
                    else 'paid'
                end,
                o.ordered_at + (o.order_id %% 72) * interval '1 hour'
            from generate_series(0, %(days)s - 1) as d (n)
            cross join generate_series(1, %(per_day)s) as k (n)
            cross join lateral (
                select
                    d.n::bigint * %(per_day)s + k.n as order_id,
                    ((%(first_day)s::date + d.n)::timestamp
                        + (k.n - 0.5) * interval '86400 seconds' / %(per_day)s)
                        at time zone 'Asia/Tokyo' as ordered_at
            ) as o
            """,
            params,
        )
        cur.execute(
            """
            insert into order_items
            select
                o.order_id * 4 + i.n,
                o.order_id,
                p.product_id,
                1 + (o.order_id + i.n) %% 3,
                ((p.product_id * 37) %% 5000 + 100)::numeric(12, 2)
            from orders as o
            cross join lateral generate_series(1, 1 + (o.order_id %% 3)::int) as i (n)
            cross join lateral (
                select 1 + (o.order_id * 31 + i.n * 17) %% %(products)s as product_id
            ) as p
            """,
            params,
        )
        cur.execute("select (select count(*) from orders), (select count(*) from order_items)")
        orders, items = cur.fetchone()
    vacuum(
        conn,
        [sql.Identifier("public", t) for t in ("customers", "products", "orders", "order_items")],
    )
    return {"orders": orders, "order_items": items}
