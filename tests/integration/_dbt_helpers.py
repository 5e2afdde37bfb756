"""Helpers of the dbt project's integration tests: running dbt and loading source rows.

The marts computed again in plain Python live in tests/reference.py.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from psycopg2 import sql
from psycopg2.extras import execute_values

from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.postgres.source_schema import SOURCE_TABLES, create_source_tables
from tests.reference import TOKYO, Shop, business_day, expected_marts, money

__all__ = ["TOKYO", "Shop", "business_day", "expected_marts", "money"]  # used by the tests

PROJECT_DIR = Path(__file__).resolve().parents[2]

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
    env = {**os.environ, **settings.dbt_env(target), "DO_NOT_TRACK": "1", "ETL_DBT_TARGET": target}
    result = subprocess.run(
        command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=600
    )
    return DbtRun(result.returncode, result.stdout + result.stderr, target_path)


# --- source rows ---------------------------------------------------------------------


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


# --- dbt's artifacts ---------------------------------------------------------------------


def reads_outside_the_dag(target_path: Path) -> dict[str, list[str]]:
    """For each node of the invocation whose artifacts are in ``target_path``: the
    relations dbt builds that its compiled SQL reads and its depends_on does not name.
    dbt starts a node once its own parents are done, so such a read may find the
    relation missing (a fresh schema, a --select without it) or being replaced."""
    manifest = json.loads((target_path / "manifest.json").read_text())
    built = {
        node["relation_name"]: unique_id
        for unique_id, node in manifest["nodes"].items()
        if node.get("relation_name") and node["resource_type"] in ("model", "seed", "snapshot")
    }
    outside = {}
    for result in json.loads((target_path / "run_results.json").read_text())["results"]:
        node = manifest["nodes"].get(result["unique_id"])
        if node is None or not result.get("compiled_code"):
            continue
        allowed = {*node["depends_on"]["nodes"], result["unique_id"]}
        read = {
            unique_id
            for relation, unique_id in built.items()
            if relation in result["compiled_code"] and unique_id not in allowed
        }
        if read:
            outside[result["unique_id"]] = sorted(read)
    return outside
