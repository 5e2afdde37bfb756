"""The dbt project on a real PostgreSQL: the sample data, the run-window property on
data it has never seen, invalid vars, and the SQL lint.

dbt runs as a user runs it, a subprocess of the interpreter running the tests, with the
connection settings of a fresh database and its own target and log folders; the
run-window property runs it in this process, as the functions do.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.postgres.connection import connect
from dbt_project.postgres.source_schema import create_source_tables, load_sample_data
from tests import reference
from tests.integration._dbt_helpers import (
    PROJECT_DIR,
    TOKYO,
    Shop,
    business_day,
    expected_marts,
    fetch_table,
    load_shop,
    money,
    query,
    read_seeds,
    reads_outside_the_dag,
    run_dbt,
)

MARTS = ("customer_analytics", "product_sales_summary", "daily_sales_summary")
VIEWS = ("top_customers", "category_performance", "regional_sales_trend", "weekly_sales_summary")


def utc_day(moment: datetime) -> date:
    """The wrong business day (UTC): what a time-zone bug would produce."""
    return moment.astimezone(UTC).date()


# --- 1. the sample data ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_build(pg_server, tmp_path_factory):
    """The sample data loaded as `etl dev-db` does, then a plain `dbt build`."""
    name = f"sample_{uuid.uuid4().hex[:10]}"
    admin = connect(pg_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'create database "{name}"')
    settings = pg_server.with_database(name)
    conn = connect(settings)
    with conn:
        create_source_tables(conn)
        load_sample_data(conn)
    conn.close()
    work_dir = tmp_path_factory.mktemp("sample_build")
    run = run_dbt(["build"], settings=settings, work_dir=work_dir)
    yield settings, run
    with admin.cursor() as cur:
        cur.execute(f'drop database if exists "{name}" with (force)')
    admin.close()


@pytest.fixture(scope="module")
def seeds() -> Shop:
    return read_seeds(PROJECT_DIR / "seeds")


@pytest.mark.slow
def test_sample_build_passes_every_model_and_test(sample_build):
    _, run = sample_build
    run.check()
    results = json.loads((run.target_path / "run_results.json").read_text())["results"]
    kinds = {r["unique_id"].split(".")[0] for r in results}
    assert {"model", "test", "unit_test", "exposure"} <= kinds
    # Exposures only name who reads the views: dbt reports them as nothing to run.
    assert all(
        r["status"] in ("success", "pass")
        or (r["unique_id"].startswith("exposure.") and r["status"] == "no-op")
        for r in results
    ), [(r["unique_id"], r["status"]) for r in results if r["status"] not in ("success", "pass")]


@pytest.mark.slow
def test_sample_marts_equal_an_independent_computation(sample_build, seeds):
    settings, run = sample_build
    run.check()
    expected = expected_marts(seeds)
    for mart in MARTS:
        actual = fetch_table(settings, "dev", mart)
        assert actual == expected[mart], mart
    assert {row["as_of_date"] for row in expected["customer_analytics"].values()} == {
        date(2026, 11, 25)
    }


@pytest.mark.slow
def test_sample_data_exercises_midnight_and_cancellations(sample_build, seeds):
    """The equality above means something: a UTC business day, or counting cancelled
    orders, would change named rows of the marts, and the build has the right ones."""
    settings, run = sample_build
    run.check()
    actual_daily = fetch_table(settings, "dev", "daily_sales_summary")
    expected = expected_marts(seeds)["daily_sales_summary"]

    # An order in the first hour of a Tokyo day belongs to that day, not to the UTC date.
    utc_daily = expected_marts(seeds, day_of=utc_day)["daily_sales_summary"]
    early = next(
        o
        for o in seeds.orders
        if o["ordered_at"].astimezone(TOKYO).hour == 0 and o["status"] != "cancelled"
    )
    region = next(c["region"] for c in seeds.customers if c["customer_id"] == early["customer_id"])
    key = (business_day(early["ordered_at"]), region)
    assert utc_daily.get(key) != expected[key]
    assert actual_daily[key] == expected[key]

    # A day with cancellations: its numbers leave the cancelled orders out.
    cancelled_days = {
        business_day(o["ordered_at"]) for o in seeds.orders if o["status"] == "cancelled"
    }
    with_cancelled = Shop(
        seeds.customers,
        seeds.products,
        [{**o, "status": "paid"} for o in seeds.orders],
        seeds.order_items,
    )
    naive = expected_marts(with_cancelled)["daily_sales_summary"]
    differing = [k for k in expected if k[0] in cancelled_days and naive[k] != expected[k]]
    assert differing
    for key in differing[:5]:
        assert actual_daily[key] == expected[key]

    # Late status changes exist (the nightly window must catch them).
    assert any(
        o["updated_at"] - o["ordered_at"] > timedelta(days=1) and o["status"] == "cancelled"
        for o in seeds.orders
    )


@pytest.mark.slow
def test_sample_analytics_views_answer_the_analysts_queries(sample_build, seeds):
    settings, run = sample_build
    run.check()
    expected = expected_marts(seeds)
    customers = sorted(
        expected["customer_analytics"].values(),
        key=lambda r: (-r["total_revenue"], r["customer_id"]),
    )
    in_dev = "set search_path to dev; "

    top = query(settings, in_dev + "SELECT * FROM top_customers LIMIT 10;")
    assert [r["customer_id"] for r in top] == [r["customer_id"] for r in customers[:10]]
    assert [r["revenue_rank"] for r in top] == list(range(1, 11))

    categories = query(settings, in_dev + "SELECT * FROM category_performance;")
    category_revenue: dict[str, Decimal] = defaultdict(Decimal)
    for row in expected["product_sales_summary"].values():
        category_revenue[row["category"]] += row["revenue"]
    assert {r["category"]: r["revenue"] for r in categories} == category_revenue
    assert [r["revenue_rank"] for r in categories] == list(range(1, len(categories) + 1))
    assert sum(r["revenue_share_pct"] for r in categories) == pytest.approx(100, abs=0.1)

    tokyo = query(
        settings,
        in_dev
        + "SELECT * FROM regional_sales_trend WHERE region = '東京' ORDER BY date DESC LIMIT 7;",
    )
    assert [r["date"] for r in tokyo] == [date(2026, 11, 25) - timedelta(days=n) for n in range(7)]
    for row in tokyo:
        mart_row = expected["daily_sales_summary"].get((row["date"], "東京"))
        assert row["revenue"] == (mart_row["revenue"] if mart_row else 0)
    assert tokyo[0]["revenue_7_day_moving_average"] == money(sum(r["revenue"] for r in tokyo) / 7)

    weeks = query(
        settings, in_dev + "SELECT * FROM weekly_sales_summary ORDER BY week_start DESC LIMIT 4;"
    )
    assert [w["week_start"] for w in weeks] == [
        date(2026, 11, 23) - timedelta(weeks=n) for n in range(4)
    ]
    assert weeks[0]["is_partial_week"] and not weeks[1]["is_partial_week"]
    full_week = weeks[1]
    week_days = {full_week["week_start"] + timedelta(days=n) for n in range(7)}
    daily = expected["daily_sales_summary"].values()
    assert full_week["revenue"] == sum(r["revenue"] for r in daily if r["sales_date"] in week_days)
    assert full_week["revenue_change"] == full_week["revenue"] - weeks[2]["revenue"]


@pytest.mark.slow
def test_lineage_connects_every_source_to_every_view(sample_build):
    _, run = sample_build
    run.check()
    manifest = json.loads((run.target_path / "manifest.json").read_text())
    children = manifest["child_map"]

    def descendants(node: str) -> set[str]:
        seen: set[str] = set()
        stack = [node]
        while stack:
            for child in children.get(stack.pop(), []):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    reached = set().union(*(descendants(s) for s in manifest["sources"]))
    assert {f"model.shop.{view}" for view in VIEWS} <= reached
    assert {s.split(".")[-1] for s in manifest["sources"]} == {
        "customers",
        "products",
        "orders",
        "order_items",
    }


# --- 2. the run-window property on unseen data ------------------------------------------

FIRST_DAY = date(2026, 3, 1)
LAST_DAY = date(2026, 3, 14)
GAP_DAY = date(2026, 3, 9)  # nothing ordered that day
WINDOWS = (  # (run_date, lookback_days)
    (date(2026, 3, 6), 2),
    (GAP_DAY, 1),
    (date(2026, 3, 12), 3),
)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TOKYO)


def generated_shop(seed: int = 7) -> Shop:
    """A small shop with the cases the window must get right, plus random traffic."""
    rng = random.Random(seed)  # noqa: S311 - test data
    regions = ("東京", "大阪", "福岡", "札幌")
    customers = [
        {
            "customer_id": n,
            "name": f"顧客 {n}",
            "email": f"c{n}@example.jp",
            "region": regions[n % len(regions)],
            "created_at": at(date(2026, 1, 1), 9),
        }
        for n in range(1, 21)
    ]
    products = [
        {"product_id": n, "name": f"商品 {n}", "category": f"分類 {n % 3}", "price": price}
        for n, price in enumerate((Decimal(150 * n) for n in range(1, 7)), start=1)
    ]
    orders: list[dict] = []
    items: list[dict] = []

    def order(customer, ordered_at, status="paid", updated_at=None, lines=None):
        order_id = len(orders) + 1
        orders.append(
            {
                "order_id": order_id,
                "customer_id": customer,
                "ordered_at": ordered_at,
                "status": status,
                "updated_at": updated_at or ordered_at + timedelta(minutes=5),
            }
        )
        if lines is None:
            lines = [(rng.randint(1, 6), rng.randint(1, 3)) for _ in range(rng.randint(1, 3))]
        for product_id, quantity in lines:
            items.append(
                {
                    "order_item_id": len(items) + 1,
                    "order_id": order_id,
                    "product_id": product_id,
                    "quantity": quantity,
                    "unit_price": products[product_id - 1]["price"] - rng.choice((0, 0, 0, 15)),
                }
            )

    # Late changes inside the first window (run_date 03-06, lookback 2).
    order(3, at(date(2026, 3, 2), 10), "cancelled", at(date(2026, 3, 6), 9))
    order(3, at(date(2026, 3, 2), 11), "delivered", at(date(2026, 3, 3), 9))
    order(4, at(date(2026, 3, 3), 12), "shipped", at(date(2026, 3, 5), 18))
    # Customer 19's only order: ordered and cancelled in the first window.
    order(19, at(date(2026, 3, 5), 20), "cancelled", at(date(2026, 3, 5), 21))
    # Customer 20's only orders are cancelled, one of them after its day.
    order(20, at(date(2026, 3, 1), 8), "cancelled", at(date(2026, 3, 10), 8))
    # Around midnight of the gap day: 03-08 23:50 is cancelled at 00:20 on the gap day.
    order(5, at(date(2026, 3, 8), 23, 50), "cancelled", at(GAP_DAY, 0, 20))
    order(6, at(date(2026, 3, 8), 23, 55))
    # Around the third window's end: 23:40 is in, 00:10 the next day is out.
    order(7, at(date(2026, 3, 12), 23, 40))
    order(7, at(date(2026, 3, 13), 0, 10), "cancelled", at(date(2026, 3, 13), 1))
    order(8, at(date(2026, 3, 13), 0, 5))
    # A non-cancelled order without lines: it counts as an order with no revenue.
    order(9, at(date(2026, 3, 4), 13), lines=[])

    day = FIRST_DAY
    while day <= LAST_DAY:
        if day != GAP_DAY:
            for _ in range(rng.randint(6, 10)):
                if rng.random() < 0.35:  # within an hour of midnight, either side
                    ordered_at = at(day, rng.choice((0, 23)), rng.randrange(60))
                else:
                    ordered_at = at(day, rng.randint(1, 22), rng.randrange(60))
                fate = rng.random()
                if fate < 0.1:
                    status, updated_at = "cancelled", ordered_at + timedelta(hours=2)
                elif fate < 0.25:  # cancelled days later
                    status, updated_at = "cancelled", ordered_at + timedelta(days=rng.randint(1, 6))
                elif fate < 0.5:
                    status, updated_at = "delivered", ordered_at + timedelta(days=rng.randint(1, 5))
                else:
                    status, updated_at = rng.choice(("pending", "paid")), None
                order(rng.randint(1, 18), ordered_at, status, updated_at)
        day += timedelta(days=1)
    return Shop(customers, products, orders, items)


def rename_schema(settings, old: str, new: str) -> None:
    query(settings, f'alter schema "{old}" rename to "{new}"')


@pytest.mark.slow
def test_windowed_builds_equal_full_builds_restricted_to_their_days(new_database):
    # given: the generated shop, whole in one schema and cut after each run_date in others
    settings = new_database("window")
    shop = generated_shop()
    load_shop(settings, shop, "shop_all")
    for n, (run_date, _) in enumerate(WINDOWS):
        load_shop(settings, shop.through(run_date), f"shop_through_{n}")

    # dbt runs in this process, as in the functions: one parse serves every windowed
    # build (run_date and lookback_days are runtime vars), one more each cut source.
    dbt = DbtProject()
    for n, (run_date, lookback_days) in enumerate(WINDOWS):
        # when: a windowed build over all the data (schema dev) and a full build of the
        # cut data (target source, schema etl). The first windowed build runs the
        # nightly command whole: data tests and unit tests under its vars too.
        windowed_run = dbt.invoke(
            ["build" if n == 0 else "run", "--selector", "extract"],
            settings=settings,
            target="dev",
            dbt_vars={
                "source_schema": "shop_all",
                "run_date": run_date.isoformat(),
                "lookback_days": lookback_days,
            },
        )
        assert windowed_run.success, windowed_run.failures
        if n == 0:
            assert reads_outside_the_dag(windowed_run.target_path) == {}
        full_run = dbt.invoke(
            ["run", "--selector", "extract"],
            settings=settings,
            target="source",
            dbt_vars={"source_schema": f"shop_through_{n}"},
        )
        assert full_run.success, full_run.failures
        rename_schema(settings, "dev", f"windowed_{n}")
        rename_schema(settings, "nightly", f"full_{n}")

        # then: every windowed row equals the full one, and the full build has no row
        # for an owned key that the windowed build left out
        windowed = {m: fetch_table(settings, f"windowed_{n}", m) for m in MARTS}
        full = {m: fetch_table(settings, f"full_{n}", m) for m in MARTS}
        owned_days = {k[0] for k in fetch_table(settings, f"windowed_{n}", "run_window_days")}
        owned_customers = {
            k[0] for k in fetch_table(settings, f"windowed_{n}", "run_window_customers")
        }
        lookback = {run_date - timedelta(days=d) for d in range(lookback_days)}
        assert lookback <= owned_days and max(owned_days) == run_date

        assert windowed["customer_analytics"] == {
            key: {**row, "as_of_date": run_date}
            for key, row in full["customer_analytics"].items()
            if key[0] in owned_customers
        }, run_date
        for mart in ("product_sales_summary", "daily_sales_summary"):
            assert windowed[mart] == {
                key: row for key, row in full[mart].items() if key[0] in owned_days
            }, (run_date, mart)
        assert windowed["daily_sales_summary"], run_date

        # and each window equals the reference's computation of the keys it owns (a
        # mistake shared by the windowed and the full build shows here)
        assert owned_days == reference.owned_days(shop, run_date, lookback_days), run_date
        assert owned_customers == reference.touched_customers(shop, run_date, lookback_days)
        computed = expected_marts(shop.through(run_date))
        assert windowed["customer_analytics"] == {
            key: {**row, "as_of_date": run_date}
            for key, row in computed["customer_analytics"].items()
            if key[0] in owned_customers
        }, run_date
        for mart in ("product_sales_summary", "daily_sales_summary"):
            assert windowed[mart] == {
                key: row for key, row in computed[mart].items() if key[0] in owned_days
            }, (run_date, mart)

        # and the cases the data was made for did occur
        if n == 0:
            assert {date(2026, 3, 2), date(2026, 3, 3)} <= owned_days  # late changes
            assert {19, 20} & owned_customers == {19}
            assert (19,) not in windowed["customer_analytics"]
        if n == 1:
            assert {date(2026, 3, 8), GAP_DAY} <= owned_days  # 23:50 cancelled after midnight
            assert not any(k[0] == GAP_DAY for k in windowed["daily_sales_summary"])
        if n == 2:
            orders_after = [o for o in shop.orders if business_day(o["ordered_at"]) > run_date]
            assert orders_after and not any(
                k[0] > run_date for k in windowed["product_sales_summary"]
            )


# --- 3. invalid vars ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dbt_vars", "message"),
    [
        ({"run_date": "2026-02-30"}, 'Invalid var run_date="2026-02-30"'),
        ({"run_date": "yesterday"}, 'Invalid var run_date="yesterday"'),
        (
            {"run_date": "2026-01-01'; drop table x; --"},
            'Invalid var run_date="2026-01-01\'; drop table x; --"',
        ),
        ({"run_date": "2026-11-25", "lookback_days": 0}, 'Invalid var lookback_days="0"'),
        ({"business_timezone": "Asia/Atlantis"}, 'Invalid var business_timezone="Asia/Atlantis"'),
    ],
    ids=["impossible-date", "word", "injection", "zero-lookback", "unknown-zone"],
)
def test_invalid_vars_stop_dbt_before_anything_is_built(new_database, tmp_path, dbt_vars, message):
    # given: a source database (and a table the injection attempt names)
    settings = new_database("invalid")
    conn = connect(settings)
    with conn:
        create_source_tables(conn)
        with conn.cursor() as cur:
            cur.execute("create table x (id int)")
            cur.execute("insert into x values (1)")
    conn.close()
    catalog = (
        "select n.nspname, c.relname, c.relkind from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
        " order by 1, 2"
    )
    before = query(settings, catalog)
    schemas = "select nspname from pg_namespace order by 1"
    schemas_before = query(settings, schemas)

    # when
    run = run_dbt(["build"], settings=settings, work_dir=tmp_path, dbt_vars=dbt_vars)

    # then: a clear message, and the database exactly as it was
    assert run.returncode != 0
    assert message in run.output
    if "run_date" in message:
        assert "YYYY-MM-DD" in run.output
    assert "Fix" in run.output
    assert query(settings, catalog) == before
    assert query(settings, schemas) == schemas_before
    assert query(settings, "select count(*) as n from x") == [{"n": 1}]


# --- 4. SQL style ---------------------------------------------------------------------


def test_sqlfluff_lint_of_models_and_macros_is_clean(pg_server):
    sqlfluff = Path(sys.executable).with_name("sqlfluff")
    command = [str(sqlfluff)] if sqlfluff.exists() else [sys.executable, "-m", "sqlfluff"]
    # The dbt templater compiles the project, and dbt connects while it compiles.
    env = {**os.environ, **pg_server.dbt_env("dev"), "DO_NOT_TRACK": "1"}
    result = subprocess.run(
        [*command, "lint", "models", "macros"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
