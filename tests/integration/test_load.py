"""The load's guarantees, on real PostgreSQL with hand-made nights (no dbt involved)."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tracemalloc
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from dbt_project.cli.main import main
from dbt_project.contract.file_format import CHUNK, MAX_LINE_BYTES
from dbt_project.contract.manifest import MAX_MANIFEST_BYTES
from dbt_project.errors import MESSAGE_LIMIT, ConfigError, StageError
from dbt_project.facts.stage_layout import manifest_key
from dbt_project.load import report as reports
from dbt_project.load.load import load_manifest
from dbt_project.postgres.analytics_schema import (
    LOADER_ROLE,
    READER_ROLE,
    create_analytics_tables,
    create_roles,
)
from dbt_project.postgres.connection import connect
from dbt_project.stage import LocalStage
from tests.datagen import gzip_of_repeated_byte
from tests.integration._dbt_helpers import query
from tests.pipeline_helpers import edit, project_copy, snapshot, table_rows, write_night

D = date(2026, 11, 20)
T0 = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)


def customer(cid, revenue, orders, as_of, name="山田 太郎", region="東京"):
    revenue = Decimal(revenue)
    return {
        "customer_id": cid,
        "customer_name": name,
        "region": region,
        "total_orders": orders,
        "total_items": orders * 2,
        "total_revenue": revenue,
        "avg_order_value": (revenue / orders).quantize(Decimal("0.01")),
        "first_order_date": date(2026, 9, 1),
        "last_order_date": as_of,
        "as_of_date": as_of,
    }


def product(day, pid, revenue, units=1):
    return {
        "sales_date": day,
        "product_id": pid,
        "product_name": f"商品{pid}",
        "category": "家電",
        "order_count": units,
        "units_sold": units,
        "revenue": Decimal(revenue),
    }


def region(day, name, revenue, orders=1):
    return {
        "sales_date": day,
        "region": name,
        "order_count": orders,
        "customer_count": orders,
        "units_sold": orders,
        "revenue": Decimal(revenue),
        "avg_order_value": Decimal(revenue) / orders,
    }


def night(day, *, customers=(), products=(), regions=(), owned_days=None, owned_customers=None):
    owned_days = owned_days if owned_days is not None else [day - timedelta(days=1), day]
    owned_customers = (
        owned_customers if owned_customers is not None else [c["customer_id"] for c in customers]
    )
    with_rows = {c["customer_id"] for c in customers}
    return {
        "customer_analytics": list(customers),
        "product_sales_summary": list(products),
        "daily_sales_summary": list(regions),
        "run_window_days": [{"sales_date": d} for d in owned_days],
        # What the extract ships: the owned customers left without a row.
        "run_window_removed_customers": [
            {"customer_id": c} for c in owned_customers if c not in with_rows
        ],
    }


@pytest.fixture
def env(new_database, tmp_path):
    source, target = new_database("src"), new_database("tgt")
    conn = connect(target)
    with conn:
        create_analytics_tables(conn)
        create_roles(conn, target.dbname)
    conn.close()
    stage = LocalStage(tmp_path / "stage")

    class Env:
        pass

    e = Env()
    e.source, e.target, e.stage = source, target, stage

    def extract(day, rows, at=None, **kwargs):
        at = at or datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(
            hours=17
        )
        write_night(source, stage, run_date=day, extracted_at=at, rows=rows, **kwargs)
        return manifest_key(day)

    def load(key):
        conn = connect(target)
        try:
            return load_manifest(conn, stage, key)
        finally:
            conn.close()

    e.extract, e.load = extract, load
    return e


def test_a_night_is_upserted_and_a_duplicate_delivery_changes_nothing(env):
    key = env.extract(
        D,
        night(
            D,
            customers=[customer(1, "100.00", 1, D)],
            products=[product(D, 7, "100.00")],
            regions=[region(D, "東京", "100.00")],
        ),
    )
    first = env.load(key)
    assert first.status == "loaded"
    assert first.tables["customer_analytics"].inserted == 1
    before = snapshot(env.target)
    again = env.load(key)
    assert again.status == "duplicate"
    assert snapshot(env.target) == before


def test_owned_rows_missing_from_a_later_night_are_deleted_and_others_kept(env):
    day_before = D - timedelta(days=1)
    env.load(
        env.extract(
            D,
            night(
                D,
                products=[
                    product(D, 7, "10.00"),
                    product(D, 8, "20.00"),
                    product(day_before, 9, "5.00"),
                ],
                owned_days=[day_before, D],
            ),
        )
    )
    # The next night owns D and D+1 only: product 8 of day D was fully cancelled.
    nxt = D + timedelta(days=1)
    result = env.load(
        env.extract(
            nxt,
            night(
                nxt, products=[product(D, 7, "10.00"), product(nxt, 7, "3.00")], owned_days=[D, nxt]
            ),
        )
    )
    assert result.tables["product_sales_summary"].deleted == 1
    keys = [(r[0], r[1]) for r in table_rows(env.target, "product_sales_summary")]
    assert keys == [(day_before, 9), (D, 7), (nxt, 7)]


def test_customer_analytics_never_goes_back_in_time(env):
    newer, older = D + timedelta(days=2), D
    env.load(
        env.extract(
            newer,
            night(
                newer, customers=[customer(1, "300.00", 3, newer), customer(2, "50.00", 1, newer)]
            ),
        )
    )
    # An older day loaded later, even extracted later (a backfill): customer 1 shows
    # older numbers, customer 2 is owned but absent (all cancelled as of that day).
    key = env.extract(
        older,
        night(older, customers=[customer(1, "100.00", 1, older)], owned_customers=[1, 2]),
        at=T0 + timedelta(days=5),
    )
    result = env.load(key)
    assert result.status == "loaded"
    rows = table_rows(env.target, "customer_analytics")
    assert [(r[0], r[5], r[9]) for r in rows] == [
        (1, Decimal("300.00"), newer),
        (2, Decimal("50.00"), newer),
    ]


def test_a_removed_customer_is_not_brought_back_by_a_stale_night(env):
    older, newer = D, D + timedelta(days=1)
    stale = env.extract(older, night(older, customers=[customer(2, "50.00", 1, older)]), at=T0)
    # The newer night owns customer 2 and has no row for it (its order was cancelled).
    removal = env.extract(
        newer, night(newer, customers=[], owned_customers=[2]), at=T0 + timedelta(days=1)
    )
    env.load(stale)
    assert [r[0] for r in table_rows(env.target, "customer_analytics")] == [2]
    assert env.load(removal).tables["customer_analytics"].deleted == 1
    assert table_rows(env.target, "customer_analytics") == []
    # The older night delivered again (a re-run of it, extracted later) stays out.
    rerun = env.extract(
        older, night(older, customers=[customer(2, "50.00", 1, older)]), at=T0 + timedelta(days=3)
    )
    result = env.load(rerun)
    assert result.tables["customer_analytics"].skipped_stale == 1
    assert table_rows(env.target, "customer_analytics") == []
    # A later night with a new order brings the customer back.
    later = newer + timedelta(days=1)
    env.load(env.extract(later, night(later, customers=[customer(2, "70.00", 1, later)])))
    assert [(r[0], r[5]) for r in table_rows(env.target, "customer_analytics")] == [
        (2, Decimal("70.00"))
    ]


def test_the_run_report_counts_each_kind_of_change_and_says_them(env):
    before, after = D - timedelta(days=1), D + timedelta(days=1)
    # given the night before D: customers 3 and 4, products 7 and 8 on D-1, Tokyo on D-1
    env.load(
        env.extract(
            before,
            night(
                before,
                customers=[customer(3, "10.00", 1, before), customer(4, "5.00", 1, before)],
                products=[product(before, 7, "2.00"), product(before, 8, "3.00")],
                regions=[region(before, "東京", "5.00")],
            ),
            at=T0 - timedelta(days=1),
        )
    )
    # and the night after D, loaded first: customer 1 and day D as of D+1
    env.load(
        env.extract(
            after,
            night(
                after,
                customers=[customer(1, "40.00", 2, after)],
                products=[product(D, 9, "4.00")],
                regions=[region(D, "大阪", "4.00")],
                owned_days=[D, after],
            ),
            at=T0 + timedelta(days=1),
        )
    )
    # when the night of D arrives late: customer 1 stale, 2 new, 3 changed, 4 owned
    # without a row (removed); product 7 unchanged, 8 gone, 10 new and day D stale
    key = env.extract(
        D,
        night(
            D,
            customers=[
                customer(1, "30.00", 1, D),
                customer(2, "7.00", 1, D),
                customer(3, "20.00", 2, D),
            ],
            products=[
                product(before, 7, "2.00"),
                product(before, 10, "6.00"),
                product(D, 9, "5.00"),
            ],
            regions=[region(before, "東京", "11.00"), region(D, "大阪", "9.00")],
            owned_customers=[1, 2, 3, 4],
        ),
        at=T0,
    )
    result = env.load(key)
    report = reports.build(result)
    # then each count is the one the night made
    assert report["tables"] == {
        "customer_analytics": {"inserted": 1, "updated": 1, "deleted": 1, "skipped_stale": 1},
        "product_sales_summary": {"inserted": 1, "updated": 0, "deleted": 1, "skipped_stale": 1},
        "daily_sales_summary": {"inserted": 0, "updated": 1, "deleted": 0, "skipped_stale": 1},
    }
    assert [r[0] for r in table_rows(env.target, "customer_analytics")] == [1, 2, 3]
    # and the text says them, line by line
    report["seconds"]["load"] = 1.5  # the one value that varies
    assert reports.as_text(report).splitlines() == [
        f"run report  2026-11-20  loaded  (trigger manual, run {result.run_id})",
        "  load 1.5s",
        "  freshness skipped",
        "  customer_analytics     +1 ~1 -1  (1 stale, skipped)",
        "  product_sales_summary  +1 ~0 -1  (1 stale, skipped)",
        "  daily_sales_summary    +0 ~1 -0  (1 stale, skipped)",
        "  dbt run results: etl-data/2026-11-20/_dbt/run_results.json",
    ]


def test_re_runs_of_one_day_delivered_out_of_order_keep_the_latest_read(env):
    # Three reads of day D; the manifest of the middle one is delivered last.
    key = env.extract(
        D, night(D, customers=[customer(1, "99.00", 1, D)]), at=T0 + timedelta(hours=1)
    )
    middle = env.stage.get_bytes(key)
    env.load(env.extract(D, night(D, customers=[customer(1, "10.00", 1, D)]), at=T0))
    last = env.load(
        env.extract(D, night(D, customers=[customer(1, "10.00", 1, D)]), at=T0 + timedelta(hours=2))
    )
    # Same numbers, later read: the row is re-stated with the newer version.
    assert last.tables["customer_analytics"].updated == 1
    env.stage.put_bytes(key, middle)
    result = env.load(key)
    assert result.status == "loaded"
    assert result.tables["customer_analytics"].skipped_stale == 1
    assert [(r[0], r[5]) for r in table_rows(env.target, "customer_analytics")] == [
        (1, Decimal("10.00"))
    ]


def test_a_stale_night_delivered_late_does_not_overwrite_fresher_numbers(env):
    nxt = D + timedelta(days=1)
    stale = env.extract(
        D,
        night(D, products=[product(D, 7, "99.00"), product(D - timedelta(days=1), 7, "1.00")]),
        at=T0,
    )
    fresh = env.extract(
        nxt,
        night(nxt, products=[product(D, 7, "10.00")], owned_days=[D, nxt]),
        at=T0 + timedelta(days=1),
    )
    env.load(fresh)
    env.load(stale)
    rows = {(r[0], r[1]): r[6] for r in table_rows(env.target, "product_sales_summary")}
    # Day D keeps the fresher extraction's value;
    # day D-1, owned only by the stale night, is applied.
    assert rows == {(D, 7): Decimal("10.00"), (D - timedelta(days=1), 7): Decimal("1.00")}


def _key_of(env, table):
    manifest = json.loads(env.stage.get_bytes(manifest_key(D)))
    return next(f["key"] for f in manifest["files"] if f["table"] == table)


def _rewrite_manifest(env, change):
    document = json.loads(env.stage.get_bytes(manifest_key(D)))
    change(document)
    env.stage.put_bytes(manifest_key(D), json.dumps(document).encode())


def _corrupt_file(env, table, change):
    key = _key_of(env, table)
    env.stage.put_bytes(key, change(env.stage.get_bytes(key)))


def _file_entry(document, table):
    return next(f for f in document["files"] if f["table"] == table)


BAD_INPUTS = {
    "truncated file": (
        lambda env: _corrupt_file(env, "customer_analytics", lambda b: b[: len(b) // 2]),
        "does not match its manifest",
    ),
    "flipped bytes": (
        lambda env: _corrupt_file(
            env, "customer_analytics", lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:]
        ),
        "customer_analytics",
    ),
    "rows added": (
        lambda env: _corrupt_file(
            env,
            "product_sales_summary",
            lambda b: b + gzip.compress(b"2026-11-20\t99\tx\ty\t1\t1\t1.00\n"),
        ),
        "larger than its manifest",
    ),
    "row count mismatch": (
        lambda env: _rewrite_manifest(
            env, lambda d: _file_entry(d, "daily_sales_summary").update(rows=5)
        ),
        "rows instead of 5",
    ),
    "checksum mismatch": (
        lambda env: _rewrite_manifest(
            env, lambda d: _file_entry(d, "daily_sales_summary").update(sha256="0" * 64)
        ),
        "SHA-256",
    ),
    "table outside the contract": (
        lambda env: _rewrite_manifest(
            env, lambda d: _file_entry(d, "daily_sales_summary").update(table="pg_authid")
        ),
        "not part of the analytics contract",
    ),
    "identifier with SQL": (
        lambda env: _rewrite_manifest(
            env,
            lambda d: _file_entry(d, "customer_analytics")["columns"][0].update(
                name='customer_id"; drop table analytics.customer_analytics; --'
            ),
        ),
        "differ from its contract",
    ),
    "path outside etl-data": (
        lambda env: _rewrite_manifest(
            env, lambda d: _file_entry(d, "customer_analytics").update(key="../../etc/passwd")
        ),
        "outside etl-data/",
    ),
    "columns differ from the contract": (
        lambda env: _rewrite_manifest(
            env, lambda d: _file_entry(d, "customer_analytics")["columns"].pop()
        ),
        "differ from its contract",
    ),
    "not JSON": (
        lambda env: env.stage.put_bytes(manifest_key(D), b"{not json"),
        "not a valid manifest",
    ),
    "NaN seconds": (
        lambda env: _rewrite_manifest(env, lambda d: d.update(extract=_facts(float("nan")))),
        "extract.extract_seconds: Input should be a finite number",
    ),
    "another time zone": (
        lambda env: _rewrite_manifest(env, lambda d: d.update(business_timezone="UTC")),
        "business_timezone 'UTC' is not the project's Asia/Tokyo",
    ),
    "a lookback of 0": (
        lambda env: _rewrite_manifest(env, lambda d: d.update(lookback_days=0)),
        "lookback_days 0 is not from 1 to 400",
    ),
    "a window start that is not the lookback's": (
        lambda env: _rewrite_manifest(env, lambda d: d.update(window_start_date="2099-01-01")),
        "window_start_date 2099-01-01 is not 2026-11-19",
    ),
}


def _facts(seconds: float) -> dict:
    return {"trigger": "schedule", "extract_seconds": seconds, "dbt_tests": {}, "freshness": "pass"}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_clearly_and_changes_nothing(env, case):
    # given a loaded earlier night, and a new night damaged after its manifest was written
    _loaded_night_before(env)
    env.extract(
        D,
        night(
            D,
            customers=[customer(1, "30.00", 2, D), customer(3, "5.00", 1, D)],
            products=[product(D, 7, "20.00")],
            regions=[region(D, "東京", "20.00")],
        ),
    )
    damage, message = BAD_INPUTS[case]
    damage(env)
    before = snapshot(env.target)
    # when
    with pytest.raises(StageError, match=message.replace("(", r"\(")):
        env.load(manifest_key(D))
    # then
    assert snapshot(env.target) == before


def test_a_night_planted_where_others_may_write_is_refused_with_exit_5(env, capsys):
    # given a loaded night, and the next one in a day folder any local user may write to
    _loaded_night_before(env)
    forged = customer(1, "9999999.00", 1, D, name="FORGED")
    key = env.extract(D, night(D, customers=[forged]))
    day = Path(env.stage.describe(key)).parent
    day.chmod(0o777)
    before = snapshot(env.target)
    # when the command loads it
    args = ["load", "--manifest", env.stage.describe(key), "--skip-tests"]
    code = main([*args, "--analytics-url", env.target.url])
    # then one line names the folder, why and what to do; nothing is written
    err = capsys.readouterr().err.splitlines()
    assert code == 5 and len(err) == 1, err
    assert f"stage path {day} is not safe to use: its mode drwxrwxrwx" in err[0]
    assert "chmod go-w" in err[0]
    assert snapshot(env.target) == before


def test_a_manifest_with_nan_is_one_line_exit_5_and_changes_nothing(env, capsys):
    # given a night whose manifest says it took NaN seconds (its files intact): before,
    # it loaded, and keeping its run report failed after the commit
    _loaded_night_before(env)
    key = env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)]))
    _rewrite_manifest(env, lambda d: d.update(extract=_facts(float("nan"))))
    before = snapshot(env.target)
    # when the command loads it
    args = ["load", "--manifest", env.stage.describe(key), "--analytics-url", env.target.url]
    code = main(args)
    # then exit 5 and one line that names the field and what to do; nothing is written
    err = capsys.readouterr().err.splitlines()
    assert code == 5 and len(err) == 1, err
    assert "extract.extract_seconds: Input should be a finite number" in err[0]
    assert err[0].endswith("re-run the extract for that day")
    assert snapshot(env.target) == before


def test_duplicate_keys_within_one_file_are_refused(env):
    dup = [product(D, 7, "1.00"), product(D, 7, "2.00")]
    key = env.extract(D, night(D, products=dup), with_primary_keys=False)
    before = snapshot(env.target)
    with pytest.raises(StageError, match="same product_sales_summary key twice"):
        env.load(key)
    assert snapshot(env.target) == before


def _refused_leaving_the_target_unchanged(env, customers, message):
    """Customer 1 loaded the day before; then a night of ``customers`` the load refuses."""
    before_day = D - timedelta(days=1)
    env.load(
        env.extract(before_day, night(before_day, customers=[customer(1, "5.00", 1, before_day)]))
    )
    key = env.extract(D, night(D, customers=customers), with_primary_keys=False)
    before = snapshot(env.target)
    with pytest.raises(StageError, match=message):
        env.load(key)
    assert snapshot(env.target) == before


def test_a_customer_twice_in_one_file_is_refused(env):
    dup = [customer(1, "10.00", 1, D), customer(1, "20.00", 2, D)]
    _refused_leaving_the_target_unchanged(env, dup, "holds the same customer_id twice")


def test_a_row_breaking_a_contract_rule_is_refused_with_the_rule_named(env):
    wrong_average = {**customer(1, "30.00", 2, D), "avg_order_value": Decimal("99.00")}
    _refused_leaving_the_target_unchanged(
        env, [wrong_average], "customer_analytics_avg_order_value_rounded"
    )


def test_a_customer_both_removed_and_with_a_row_is_refused(env):
    rows = night(D, customers=[customer(1, "10.00", 1, D)])
    rows["run_window_removed_customers"] = [{"customer_id": 1}]
    key = env.extract(D, rows)
    before = snapshot(env.target)
    with pytest.raises(StageError, match="lists 1 customers that .* has rows for"):
        env.load(key)
    assert snapshot(env.target) == before


def test_loader_cannot_create_or_drop_and_reader_cannot_write(env):
    env.load(env.extract(D, night(D, customers=[customer(1, "10.00", 1, D)])))
    conn = connect(env.target)
    cur = conn.cursor()
    cur.execute(f"set role {LOADER_ROLE}")
    cur.execute("update analytics.customer_analytics set total_orders = total_orders")
    for statement in (
        "create table analytics.x (i int)",
        "drop table analytics.customer_analytics",
        "create table public.x (i int)",
    ):
        cur.execute("savepoint s")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)
        cur.execute("rollback to savepoint s")
    cur.execute("reset role")
    cur.execute(f"set role {READER_ROLE}")
    cur.execute("select count(*) from analytics.customer_analytics")
    assert cur.fetchone() == (1,)
    for statement in (
        "delete from analytics.customer_analytics",
        "insert into ledger.load_ledger default values",
        "create table analytics.y (i int)",
    ):
        cur.execute("savepoint s")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute(statement)
        cur.execute("rollback to savepoint s")
    conn.rollback()
    conn.close()


def test_analytics_tables_from_before_row_versions_are_upgraded_by_init(env):
    # given an analytics database as the earlier loader left it: its bookkeeping in a
    # schema called etl, no version column on customer_analytics, versions (and a
    # removed customer) in etl.customer_versions
    conn = connect(env.target)
    with conn, conn.cursor() as cur:
        cur.execute("alter schema ledger rename to etl")
        cur.execute("alter table analytics.customer_analytics drop column extracted_at")
        cur.execute(
            "create table etl.customer_versions (customer_id bigint primary key, "
            "as_of_date date not null, extracted_at timestamptz not null, run_id uuid not null)"
        )
        cur.execute(
            "insert into analytics.customer_analytics values "
            "(1, '山田 太郎', '東京', 1, 2, 10.00, 10.00, '2026-09-01', %s, %s)",
            (D, D),
        )
        cur.execute(
            "insert into etl.customer_versions values (1, %s, %s, gen_random_uuid()), "
            "(2, %s, %s, gen_random_uuid())",
            (D, T0, D, T0),
        )
    conn.close()
    newer = D + timedelta(days=1)
    key = env.extract(newer, night(newer, customers=[customer(1, "20.00", 2, newer)]))
    # a load before the upgrade says what to do, and changes nothing
    before = snapshot(env.target)
    with pytest.raises(ConfigError, match="run `etl init`"):
        env.load(key)
    assert snapshot(env.target) == before
    # when init runs again
    conn = connect(env.target)
    with conn:
        create_analytics_tables(conn)
    conn.close()
    # then the bookkeeping is in the ledger schema, and etl names only the command
    schemas = "select nspname from pg_namespace where nspname in ('etl', 'ledger')"
    assert query(env.target, schemas) == [{"nspname": "ledger"}]
    # and the rows carry the old versions and the removed customer stays removed
    stale = env.extract(D, night(D, customers=[customer(2, "5.00", 1, D)]), at=T0)
    assert env.load(stale).tables["customer_analytics"].skipped_stale == 1
    assert env.load(key).tables["customer_analytics"].updated == 1
    assert [(r[0], r[5]) for r in table_rows(env.target, "customer_analytics")] == [
        (1, Decimal("20.00"))
    ]


def _loaded_night_before(env):
    """A night loaded three days before D, so that an unchanged target is not empty."""
    prev = D - timedelta(days=3)
    env.load(
        env.extract(
            prev,
            night(
                prev,
                customers=[customer(1, "10.00", 1, prev)],
                products=[product(prev, 7, "10.00")],
                regions=[region(prev, "大阪", "10.00")],
            ),
        )
    )


def _refused_before_any_sql(env, key, message, now=None):
    """The error ``load_manifest`` raises given a closed connection: it ran no SQL."""
    closed = connect(env.target)
    closed.close()
    with pytest.raises(StageError, match=message) as refused:
        load_manifest(closed, env.stage, key, now=now)
    assert "\n" not in str(refused.value)


def test_a_manifest_from_the_future_is_refused_before_any_sql_and_real_nights_still_load(env):
    # given a loaded night, and a self-consistent night whose extracted_at is in 2099
    _loaded_night_before(env)
    key = env.extract(
        D, night(D, customers=[customer(1, "99.00", 9, D)]), at=datetime(2099, 1, 1, tzinfo=UTC)
    )
    before = snapshot(env.target)
    # when it is loaded, then it is refused, before any SQL, and nothing changes
    with pytest.raises(StageError, match="extracted_at 2099-01-01T00:00:00[+]00:00 is later"):
        env.load(key)
    _refused_before_any_sql(env, key, "extracted_at 2099-01-01")
    assert snapshot(env.target) == before
    # and the real night of that day, extracted later, is not skipped as stale
    real = env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)]))
    assert env.load(real).tables["customer_analytics"].updated == 1


def test_a_run_date_that_has_not_begun_is_refused(env):
    # given a night of D extracted at 19:00 on D-1 in Tokyo, loaded at 21:00 the same evening
    extracted = datetime(2026, 11, 19, 10, 0, tzinfo=UTC)
    key = env.extract(D, night(D, customers=[customer(1, "10.00", 1, D)]), at=extracted)
    before = snapshot(env.target)
    message = r"run_date 2026-11-20 is later than today \(2026-11-19 in Asia/Tokyo\)"
    _refused_before_any_sql(env, key, message, now=extracted + timedelta(hours=2))
    assert snapshot(env.target) == before


def test_rows_as_of_another_day_are_refused_and_change_nothing(env):
    # given a night of D whose file stamps a customer as of a day thirty days later
    _loaded_night_before(env)
    later = D + timedelta(days=30)
    rows = night(D, customers=[customer(1, "30.00", 2, D), customer(3, "5.00", 1, later)])
    key = env.extract(D, rows)
    before = snapshot(env.target)
    # when, then
    with pytest.raises(StageError, match="has 1 rows whose as_of_date is not the run date"):
        env.load(key)
    assert snapshot(env.target) == before


FAR = date(2099, 1, 1)
LATER_DAYS = {
    # the review's forged night: an owned day in 2099, with a daily and a product row
    "an owned day in 2099": (
        {"owned_days": [D - timedelta(days=1), D, FAR], "regions": [region(FAR, "東京", "1.00")]},
        "run_window_days.tsv.gz has 1 rows whose sales_date is after the run date 2026-11-20 "
        "(up to 2099-01-01)",
    ),
    "a product row the day after": (
        {
            "owned_days": [D, D + timedelta(days=1)],
            "products": [product(D + timedelta(days=1), 7, "1.00")],
        },
        "run_window_days.tsv.gz has 1 rows whose sales_date is after",
    ),
    "a daily row in 2099 the night does not own": (
        {"regions": [region(FAR, "東京", "1.00")]},
        "daily_sales_summary.tsv.gz has 1 rows whose sales_date is after",
    ),
}


@pytest.mark.parametrize("case", sorted(LATER_DAYS))
def test_a_night_owning_a_day_after_its_run_date_is_exit_5_and_changes_nothing(env, capsys, case):
    # given a loaded night, and a night of D whose files (hashes right) reach past D
    _loaded_night_before(env)
    rows, message = LATER_DAYS[case]
    key = env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)], **rows))
    before = snapshot(env.target)
    # when the command loads it
    args = ["load", "--manifest", env.stage.describe(key), "--analytics-url", env.target.url]
    code = main(args)
    # then exit 5 and one line naming the file, the day and what to do; nothing written
    err = capsys.readouterr().err.splitlines()
    assert code == 5 and len(err) == 1, err
    assert message in err[0] and err[0].endswith("re-run the extract for that day")
    assert snapshot(env.target) == before


def test_a_manifest_over_one_mib_is_refused_unread(env):
    # given a manifest of 64 MiB (sparse: nothing written but its length)
    key = env.extract(D, night(D))
    path = Path(env.stage.describe(key))
    with path.open("r+b") as handle:
        handle.truncate(64 * MAX_MANIFEST_BYTES)
    before = snapshot(env.target)
    # when it is loaded, then it is refused without reading more than the bound
    tracemalloc.start()
    try:
        _refused_before_any_sql(env, key, f"is larger than {MAX_MANIFEST_BYTES} bytes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_MANIFEST_BYTES
    assert snapshot(env.target) == before


# 1.5 GiB of one byte: about 1.5 MB of gzip, 1:1000.
BOMB_INFLATED = 1536 * CHUNK
# Runs the load in a fresh interpreter and reports its peak resident memory.
# ru_maxrss of a child counts the pages of the parent it was forked from (a 420 MB
# parent gives 420 MB for `python -c pass`); VmHWM is the peak of the child's own
# address space after exec, zlib's C buffers included.
_LOAD_IN_A_CHILD = """
import json, sys
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.errors import StageError
from dbt_project.load import report as reports
from dbt_project.load.load import load_manifest
from dbt_project.stage import LocalStage
conn = connect(PgSettings.from_url(sys.argv[1]))
try:
    load_manifest(conn, LocalStage(sys.argv[2]), sys.argv[3])
    outcome = "loaded"
except StageError as exc:
    outcome = str(exc)
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"outcome": outcome, "peak_bytes": peak}))
"""


def _load_in_a_child(env) -> dict:
    """The night of D loaded by a fresh process: its outcome and peak memory."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_CHILD, env.target.url, env.stage.uri, manifest_key(D)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


def _swap_customer_file(env, file: tuple[Path, int, str, int], *, rows: int = 1) -> None:
    """The night of D's customer file replaced by ``file`` (its path, size, SHA-256 and
    inflated size), the manifest resealed to match."""
    path, size, sha256, inflated = file
    _corrupt_file(env, "customer_analytics", lambda _: path.read_bytes())

    def reseal(entry):
        entry.update(bytes=size, sha256=sha256, rows=rows, uncompressed_bytes=inflated)

    _rewrite_manifest(env, lambda d: reseal(_file_entry(d, "customer_analytics")))


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> tuple[Path, int, str]:
    """The bomb's path, size and SHA-256, compressed as it is written (never held whole)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tsv.gz"
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        for data in gzip_of_repeated_byte(b"\n", BOMB_INFLATED, CHUNK):
            digest.update(data)
            size += len(data)
            out.write(data)
    assert size * 900 < BOMB_INFLATED
    return path, size, digest.hexdigest()


@pytest.mark.parametrize(
    ("promised", "message"),
    [
        # the manifest promises what a small file inflates to: stopped at once
        (5000, "inflates to more than the 5000 bytes its manifest says"),
        # the manifest tells the truth: streamed a chunk at a time, refused by the table
        (BOMB_INFLATED, "does not fit the customer_analytics contract"),
    ],
    ids=["small-promise", "true-promise"],
)
def test_a_gzip_bomb_is_refused_in_bounded_memory(env, gzip_bomb, promised, message):
    # given a loaded night, and the next night's customer file swapped for a 1:1000 gzip
    # bomb, its manifest rewritten to match (size, SHA-256, rows)
    _loaded_night_before(env)
    env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)]))
    bomb, size, sha256 = gzip_bomb
    _swap_customer_file(env, (bomb, size, sha256, promised), rows=BOMB_INFLATED)
    before = snapshot(env.target)
    # when a fresh loader process loads it
    report = _load_in_a_child(env)
    print(f"gzip bomb, {promised} bytes promised: peak {report['peak_bytes'] / 2**20:.0f} MiB")
    # then it is refused, the target is unchanged, and the loader stayed small
    assert message in report["outcome"] and "\n" not in report["outcome"]
    assert snapshot(env.target) == before
    assert report["peak_bytes"] < 200 * 2**20


# An honest file of one line of 100 MiB: before the line bound, PostgreSQL's error quoted
# the line whole and the loader peaked at 843 MiB copying it.
ONE_LINE = 100 * CHUNK


def _one_line_file(path: Path, length: int) -> tuple[Path, int, str, int]:
    """A gzip of one customer row whose customer_id is ``length`` letters: its path,
    size, SHA-256 and inflated size, written as it is compressed."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    row_end = "\t山田\t東京\t1\t2\t30.00\t30.00\t2026-09-01\t2026-11-20\t2026-11-20\n".encode()
    digest, size = hashlib.sha256(), 0
    with path.open("wb") as out:
        pieces = [b"x" * CHUNK] * (length // CHUNK) + [b"x" * (length % CHUNK), row_end]
        for piece in pieces:
            data = compressor.compress(piece)
            digest.update(data)
            size += len(data)
            out.write(data)
        data = compressor.flush()
        digest.update(data)
        size += len(data)
        out.write(data)
    return path, size, digest.hexdigest(), length + len(row_end)


def test_an_honest_file_of_one_huge_line_is_refused_in_bounded_memory(env, tmp_path):
    # given the next night's customer file: one line of 100 MiB, honestly declared
    _loaded_night_before(env)
    env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)]))
    _swap_customer_file(env, _one_line_file(tmp_path / "line.tsv.gz", ONE_LINE))
    before = snapshot(env.target)
    # when a fresh loader process loads it
    report = _load_in_a_child(env)
    print(f"one line of 100 MiB: peak {report['peak_bytes'] / 2**20:.0f} MiB")
    # then it is refused at the line bound, in one short line, the loader stayed small
    outcome = report["outcome"]
    assert f"has a line longer than {MAX_LINE_BYTES} bytes" in outcome, outcome[:500]
    assert "\n" not in outcome and len(outcome) < 2 * MESSAGE_LIMIT
    assert snapshot(env.target) == before
    assert report["peak_bytes"] < 200 * 2**20


def test_what_the_database_quotes_reaches_the_error_cut_short(env, tmp_path):
    # given a customer_id of 900 KB, under the line bound: PostgreSQL quotes it whole
    _loaded_night_before(env)
    env.extract(D, night(D, customers=[customer(1, "30.00", 2, D)]))
    _swap_customer_file(env, _one_line_file(tmp_path / "value.tsv.gz", 900 * 1024))
    before = snapshot(env.target)
    # when it is loaded
    with pytest.raises(StageError, match="does not fit the customer_analytics contract") as refused:
        env.load(manifest_key(D))
    # then the error quotes about 300 characters of what the database said
    message = str(refused.value)
    assert "invalid input syntax for type bigint" in message
    assert "\n" not in message and len(message) < 2 * MESSAGE_LIMIT, len(message)
    assert snapshot(env.target) == before


def test_rows_are_built_by_column_name_so_a_new_column_shifts_nothing(
    new_database, tmp_path, monkeypatch
):
    # given a project whose contract gained a measure in the middle of customer_analytics
    project = project_copy(tmp_path / "project")
    edit(
        project / "models/marts/_marts__models.yml",
        "      - name: total_items\n",
        "      - name: total_lines\n        data_type: bigint\n"
        "        constraints:\n          - type: not_null\n"
        "      - name: total_items\n",
    )
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    source, target = new_database("src"), new_database("tgt")
    conn = connect(target)
    with conn:
        create_analytics_tables(conn)
    conn.close()
    stage = LocalStage(tmp_path / "stage")
    # when a night built by this module's helpers, which know nothing of it, is loaded
    at = datetime.combine(D + timedelta(days=1), datetime.min.time(), UTC)
    write_night(
        source,
        stage,
        run_date=D,
        extracted_at=at,
        rows=night(D, customers=[customer(1, "30.00", 2, D)]),
    )
    conn = connect(target)
    load_manifest(conn, stage, manifest_key(D))
    conn.close()
    # then every value is in its column, and the new one is 0
    (row,) = query(target, "select * from analytics.customer_analytics")
    assert (row["total_orders"], row["total_lines"], row["total_items"]) == (2, 0, 4)
    assert row["total_revenue"] == Decimal("30.00") and row["as_of_date"] == D
