"""``python -m bench.calibrate``: measure the reprocessing cost model (dbt_project/plan.py).

On generated shops (a year of 4,000 orders a day and 200,000 customers, and of 16,000
and 800,000 with ``--full``), after the history is loaded, it times the extract of
windows of 1 to 365 days ending on the last day, each as a backfill's chunk runs it,
and fits the seconds by least squares to a fixed part, a part per order in the window
and a part per customer the window owns. Prints each window and the fit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from .data import ShopHistory, build_shop
from .server import Databases, pg_server

WINDOWS = (1, 2, 7, 31, 91, 182, 365)
SHOPS = {False: ((4_000, 200_000),), True: ((4_000, 200_000), (16_000, 800_000))}


def _measure(databases: Databases, per_day: int, customers: int) -> list[tuple[int, int, float]]:
    from dbt_project.dbt_runner.runner import DbtProject
    from dbt_project.pipeline import Pipeline
    from dbt_project.postgres.connection import Database, connect
    from dbt_project.request import BackfillRequest, NightRequest
    from dbt_project.stage import LocalStage

    shop = ShopHistory(days=365, orders_per_day=per_day, customers=customers)
    source = databases.new(f"calibrate{per_day}")
    conn = connect(source)
    build_shop(conn, shop)
    conn.close()
    parts = Pipeline(
        dbt=DbtProject(),
        source=Database.from_settings(source),
        analytics=Database.from_settings(databases.new(f"calibrate{per_day}_analytics")),
        stage=LocalStage(Path(tempfile.mkdtemp(prefix="etlcalibrate-"))),
    )
    parts.init()
    parts.source = Database.from_settings(databases.extract_login(source))  # as deployed
    history = parts.plan(BackfillRequest.refresh(shop.last_day, budget_minutes=24 * 60))
    list(parts.run_plan(history, run_tests=False))
    found = []
    for days in WINDOWS:
        first = shop.last_day - timedelta(days=days - 1)
        started = time.perf_counter()
        result = parts.extract(NightRequest(shop.last_day, days))
        seconds = time.perf_counter() - started
        orders = per_day * days
        owned = result.rows["customer_analytics"]
        found.append((orders, owned, seconds))
        print(
            f"{per_day:>6}/day {first}..{shop.last_day} {days:>3} days: {orders:>9,} orders, "
            f"{owned:>7,} customers, {seconds:6.1f} s",
            flush=True,
        )
    return found


def _fit(points: list[tuple[int, int, float]]) -> tuple[float, float, float]:
    """Least squares of seconds = f + a * orders + b * customers (normal equations)."""
    rows = [(1.0, float(o), float(c)) for o, c, _ in points]
    ys = [s for _, _, s in points]
    m = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    v = [sum(r[i] * y for r, y in zip(rows, ys, strict=True)) for i in range(3)]
    for i in range(3):  # Gauss-Jordan on the 3x3 system
        pivot = m[i][i]
        m[i] = [x / pivot for x in m[i]]
        v[i] /= pivot
        for k in range(3):
            if k != i:
                factor = m[k][i]
                m[k] = [a - factor * b for a, b in zip(m[k], m[i], strict=True)]
                v[k] -= factor * v[i]
    return v[0], v[1], v[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibrate", description=__doc__)
    parser.add_argument("--full", action="store_true", help="also the 16,000-a-day shop")
    args = parser.parse_args(argv)
    points = []
    with pg_server() as server, Databases(server) as databases:
        for per_day, customers in SHOPS[args.full]:
            points += _measure(databases, per_day, customers)
    fixed, per_order, per_customer = _fit(points)
    print(
        f"fit: {fixed:.1f} s + {per_order * 1e6:.1f} µs per order "
        f"+ {per_customer * 1e6:.1f} µs per owned customer"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
