"""The nightly job end to end on real PostgreSQL and real dbt runs, through the CLI's functions."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import date, timedelta

import pytest

from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from dbt_project.settings import current
from dbt_project.stage import LocalStage
from tests import reference
from tests.datagen import Shop
from tests.pipeline_helpers import as_extract_login, snapshot

FIRST = date(2026, 3, 1)
HISTORY_END = date(2026, 3, 15)
HISTORY_LOOKBACK = (HISTORY_END - FIRST).days + 1
NIGHTS = 4
LOOKBACK_DAYS = 2
# The shared shop's history: long enough that reading it whole is far more than any
# bound a night's reads may keep (about 1,000 orders against a window of about 20).
LONG_FIRST = HISTORY_END - timedelta(days=89)
# Rows of `orders` a windowed night may read per order its window touches: its models
# and data tests read the window's orders through indexes, about eighteen times in all.
READS_PER_WINDOW_ORDER = 25
# Sessions a night may open on the source: dbt's, one for each of its two threads and
# one for its hooks, and the check's own (dbt by itself logs in again for every node).
LOGINS_PER_NIGHT = 6


@pytest.fixture(scope="module")
def dbt():
    return DbtProject()


def prepare_shop(databases, tmp_path, dbt, first: date = FIRST):
    source_settings, target_settings = databases("src"), databases("tgt")
    conn = connect(source_settings)
    with conn:
        create_source_tables(conn)
    shop = Shop(conn, seed=20261127)
    shop.history(first, HISTORY_END)
    source, target = (
        Database.from_settings(source_settings),
        Database.from_settings(target_settings),
    )
    Pipeline(dbt=dbt, source=source, analytics=target).init()
    stage = LocalStage(tmp_path / "stage")
    source = Database.from_settings(as_extract_login(source_settings))

    parts = Pipeline(dbt=dbt, source=source, analytics=target, stage=stage)

    def night(day, run_tests=True, **request):
        return parts.run_night(NightRequest(day, **request), run_tests=run_tests)

    night(HISTORY_END, lookback_days=(HISTORY_END - first).days + 1, run_tests=False)
    return shop, night, source_settings, target_settings, stage


@pytest.fixture
def shop_env(new_database, tmp_path, dbt):
    """A shop with a loaded history, for a test that changes it."""
    return prepare_shop(new_database, tmp_path, dbt)


@pytest.fixture(scope="module")
def loaded_shop(module_database, tmp_path_factory, dbt):
    """The same with a longer history, shared by tests that leave its numbers unchanged."""
    return prepare_shop(module_database, tmp_path_factory.mktemp("shop"), dbt, LONG_FIRST)


def without_as_of(marts):
    customers = {
        k: {c: v for c, v in row.items() if c != "as_of_date"}
        for k, row in marts["customer_analytics"].items()
    }
    return {**marts, "customer_analytics": customers}


def test_nights_with_late_cancellations_reproduce_a_full_rebuild(shop_env):
    shop, night, source, target, _ = shop_env
    last = HISTORY_END
    nights = [(HISTORY_END, HISTORY_LOOKBACK)]
    late_cancelled = []
    for i in range(1, NIGHTS + 1):
        day = HISTORY_END + timedelta(days=i)
        before = reference.order_states(source)
        shop.orders_on(day, 12)
        shop.late_changes(day, 5)  # cancellations and status changes of older orders
        shop.orders_on(
            day + timedelta(days=1), 2
        )  # already in the source at 02:00, not yet counted
        late_cancelled += reference.late_cancellations(
            before, reference.order_states(source), day, LOOKBACK_DAYS
        )
        result = night(day, lookback_days=LOOKBACK_DAYS, run_tests=i == NIGHTS)
        nights.append((day, LOOKBACK_DAYS))
        last = day
    # The data holds the path under test: a counted order cancelled after its day left
    # the lookback window, so only the night's late-update rule can fix that day.
    assert late_cancelled, "no order was cancelled after its day left the lookback window"
    assert result.tests is not None and result.tests.passed, result.tests
    shop_rows = reference.fetch_source(source)
    expected = reference.marts(shop_rows, as_of=last)
    actual = reference.read_marts(target)
    assert without_as_of(actual) == without_as_of(expected)
    assert len(actual["daily_sales_summary"]) > 20
    # Each customer's row is as of the last night that touched it, never before its
    # last order.
    customers = actual["customer_analytics"]
    touched = reference.as_of_dates(shop_rows, nights)
    assert {c: row["as_of_date"] for c, row in customers.items()} == {
        c: touched.get(c) for c in customers
    }
    assert all(row["last_order_date"] <= row["as_of_date"] for row in customers.values())
    assert len(set(touched.values())) > 1  # not every customer as of the last night


def test_rerun_duplicate_delivery_and_an_empty_day_change_nothing(shop_env):
    shop, night, source, target, stage = shop_env
    numbers = reference.read_marts(target)
    # Re-running the last loaded day: a new extraction with identical numbers.
    rerun = night(HISTORY_END, run_tests=False)
    assert rerun.load.status == "loaded"
    days = [rerun.load.tables[n] for n in ("product_sales_summary", "daily_sales_summary")]
    assert all(t.inserted == t.updated == t.deleted == 0 for t in days)
    # A customer row carries its version: the newer read re-states each owned row.
    customers = rerun.load.tables["customer_analytics"]
    assert (customers.inserted, customers.deleted) == (0, 0)
    assert customers.updated == customers.rows_in_file > 0
    assert reference.read_marts(target) == numbers
    # The same manifest delivered again is a no-op, ledger included.
    state = snapshot(target)
    assert (
        main(
            [
                "load",
                "--manifest",
                stage.describe(rerun.extract.manifest_key),
                "--analytics-url",
                target.url,
                "--skip-tests",
            ]
        )
        == 0
    )
    assert snapshot(target) == state
    # A day with no orders: the customers of the day before (still in the 2-day
    # window) are re-stated as of the new day, with the same numbers.
    numbers_before = without_as_of(reference.read_marts(target))
    quiet = night(HISTORY_END + timedelta(days=1), run_tests=False)
    assert quiet.load.tables["customer_analytics"].updated > 0
    after = reference.read_marts(target)
    assert without_as_of(after) == numbers_before
    # A day whose whole window holds no orders and no changes touches nothing.
    empty = night(HISTORY_END + timedelta(days=3), run_tests=False)
    assert empty.extract.rows_extracted == 0
    changes = {n: (t.inserted, t.updated, t.deleted) for n, t in empty.load.tables.items()}
    assert set(changes.values()) == {(0, 0, 0)}
    assert reference.read_marts(target) == after


# A session that stays open reports what it read when it ends a transaction, or, if it
# did so less than a second before, once it has been idle for up to 10 s (PostgreSQL's
# PGSTAT_IDLE_INTERVAL): a session idle for longer has reported everything.
REPORTED_AFTER_IDLE = 11


def source_activity(settings) -> tuple[int, int]:
    """Rows of ``orders`` read so far (scanned, or fetched through an index) and the
    sessions opened on the database so far, once every other session has reported them:
    dbt's sessions by ending, the pipeline's own (which stays open) by having been idle
    long enough."""
    conn = connect(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        for _ in range(600):
            cur.execute(
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and backend_type = 'client backend' and pid <> pg_backend_pid() "
                "and (state <> 'idle' or state_change > now() - make_interval(secs => %s))",
                (REPORTED_AFTER_IDLE,),
            )
            if cur.fetchone() == (0,):
                break
            time.sleep(0.1)
        cur.execute("select pg_stat_clear_snapshot()")
        cur.execute(
            "select seq_tup_read + coalesce(idx_tup_fetch, 0) from pg_stat_user_tables "
            "where relid = 'public.orders'::regclass"
        )
        (read,) = cur.fetchone()
        cur.execute("select sessions from pg_stat_database where datname = current_database()")
        (sessions,) = cur.fetchone()
    conn.close()
    return read, sessions


def test_a_windowed_night_reads_its_window_not_the_history(loaded_shop):
    _, night, source, _, _ = loaded_shop
    # given the source's statistics up to date, as autovacuum keeps a shop's (a table
    # never analyzed is planned from guesses, and read whole)
    conn = connect(source)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("analyze public.orders, public.order_items, public.customers")
    conn.close()
    # when the last day runs again as a night, on a history of three months
    before, sessions_before = source_activity(source)
    result = night(HISTORY_END, lookback_days=LOOKBACK_DAYS, run_tests=False)
    after, sessions_after = source_activity(source)
    read = after - before
    # then it read a few times the orders its window touches, far from the history
    shop = reference.fetch_source(source)
    window = len(reference.touched_orders(shop, HISTORY_END, LOOKBACK_DAYS))
    history = len(shop.orders)
    print(f"a night read {read} rows of orders: {window} in its window, {history} in all")
    assert READS_PER_WINDOW_ORDER * window < history  # a whole read would break the bound
    assert read <= READS_PER_WINDOW_ORDER * window
    # and its dbt build logged in once per thread, not once for each of its nodes (a
    # login on the deployed path is a TLS handshake and an IAM authentication); the
    # count includes this check's own session from before
    logins = sessions_after - sessions_before
    tests = sum(result.extract.dbt_tests.values())
    print(f"the night opened {logins} sessions; its build ran {tests} data tests")
    assert tests > 4 * LOGINS_PER_NIGHT
    assert logins <= LOGINS_PER_NIGHT


def test_each_node_s_sql_is_a_file_only_with_dbt_s_output_on(loaded_shop, tmp_path):
    _, _, source, _, _ = loaded_shop
    extracted = {}
    for verbose in (False, True):  # ETL_DBT_VERBOSE unset, then 1
        settings = replace(current(), work_dir=tmp_path / str(verbose), dbt_verbose=verbose)
        dbt = DbtProject(settings=settings)
        Pipeline(
            dbt=dbt,
            source=Database.from_settings(as_extract_login(source)),
            stage=LocalStage(tmp_path / f"stage-{verbose}"),
        ).extract(NightRequest(HISTORY_END, lookback_days=LOOKBACK_DAYS))
        target = dbt.target_path("source")
        results = json.loads((target / "run_results.json").read_text())["results"]
        compiled = {
            r["unique_id"]: r["compiled_code"]
            for r in results
            if r["unique_id"].startswith("model.") and r["compiled_code"]
        }
        files = {
            path.relative_to(target).parts[0]: path.read_text()
            for path in target.glob("*/shop/models/marts/customer_analytics.sql")
        }
        extracted[verbose] = compiled, files
    # then the run results keep each model's compiled SQL either way
    quiet, verbose = extracted[False][0], extracted[True][0]
    assert quiet.keys() == verbose.keys() and "model.shop.customer_analytics" in quiet
    # and only with dbt's output on are there files of it, as dbt writes them
    assert extracted[False][1] == {}
    files = extracted[True][1]
    assert files.keys() == {"compiled", "run"}
    assert files["compiled"] == verbose["model.shop.customer_analytics"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--date", "2026-02-30"], "not a real calendar date"),
        (["run", "--date", "2026-03-16'; drop table orders; --"], "not a real calendar date"),
        (["backfill", "--start", "2026-03-20", "--end", "2026-03-16"], "before it starts"),
        (["run", "--date", "2026-03-16", "--lookback-days", "0"], "lookback_days"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_changes_nothing(loaded_shop, capsys, args, message):
    _, _, source, target, stage = loaded_shop
    before = snapshot(target)
    databases = ["--source-url", source.url, "--analytics-url", target.url]
    code = main([*args, *databases, "--stage", str(stage.root)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(target) == before
    assert stage.list("etl-data/2026-03-16/") == []


def test_missing_or_wrong_database_settings_are_clear(capsys, tmp_path, pg_server):
    assert main(["run", "--date", "2026-03-16", "--stage", str(tmp_path)]) == 2
    assert "--source-url" in capsys.readouterr().err
    wrong = pg_server.with_credentials("postgres", "not-the-password").url
    assert main(["init", "--source-url", wrong, "--analytics-url", wrong]) == 3
    assert "rejected the credentials" in capsys.readouterr().err
