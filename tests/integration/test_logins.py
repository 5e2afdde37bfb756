"""The functions' logins on real PostgreSQL: each does its whole job, and is refused
everything outside it, with the server's own error."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg2
import pytest
from psycopg2 import sql

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import CredentialsError
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.pipeline_helpers import initialised_shop

FIRST = date(2026, 3, 1)
LAST = date(2026, 3, 10)
# On AWS these logins use IAM tokens; here a password stands in for the token.
PASSWORD = "login-test"


def as_login(admin: PgSettings, login: str) -> PgSettings:
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("alter role {} password %s").format(sql.Identifier(login)), (PASSWORD,))
    conn.close()
    return admin.with_credentials(login, PASSWORD)


@pytest.fixture(scope="module")
def logins(module_database, tmp_path_factory):
    """A source and an analytics database made by `init` as an administrator."""
    dbt = DbtProject()
    source, target = initialised_shop(module_database, FIRST, LAST, seed=20261130, dbt=dbt)
    return {
        "source": source,
        "target": target,
        "extract": as_login(source, EXTRACT_LOGIN),
        "load": as_login(target, LOAD_LOGIN),
        "dbt": dbt,
        "stage": LocalStage(tmp_path_factory.mktemp("stage")),
    }


def test_a_whole_night_runs_with_only_the_functions_logins(logins):
    # given only the two logins: dbt builds and tests as etl_extract, loads as etl_load
    def night(day, lookback):
        return Pipeline(
            dbt=logins["dbt"],
            source=Database.from_settings(logins["extract"]),
            analytics=Database.from_settings(logins["load"]),
            stage=logins["stage"],
        ).run_night(NightRequest(day, lookback_days=lookback))

    # when the history and then one more night run
    nights = [(LAST - timedelta(days=1), (LAST - FIRST).days), (LAST, 2)]
    for day, lookback in nights:
        result = night(day, lookback)

    # then the analytics-side tests passed and the numbers are the independent ones
    assert result.tests is not None and result.tests.passed, result.tests.failures
    shop = reference.fetch_source(logins["source"])
    expected = reference.marts(shop, as_of=LAST)
    actual = reference.read_marts(logins["target"])
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    # each customer's numbers, as of the last night that touched it
    customers, numbers = actual["customer_analytics"], expected["customer_analytics"]
    assert {c: {**row, "as_of_date": None} for c, row in customers.items()} == {
        c: {**row, "as_of_date": None} for c, row in numbers.items()
    }
    touched = reference.as_of_dates(shop, nights)
    assert {c: row["as_of_date"] for c, row in customers.items()} == {
        c: touched.get(c) for c in customers
    }


def refusal(settings: PgSettings, statement: str) -> str:
    """The server's error for ``statement`` run as ``settings``' login; fails if allowed."""
    conn = connect(settings, wait_seconds=0)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    except psycopg2.Error as exc:
        return exc.diag.message_primary
    finally:
        conn.close()
    raise AssertionError(f"{settings.user} was allowed: {statement}")


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        (
            "insert into public.customers values (999999, 'x', 'x@x', '東京', now())",
            "permission denied for table customers",
        ),
        ("update public.orders set status = 'cancelled'", "permission denied for table orders"),
        ("delete from public.order_items", "permission denied for table order_items"),
        ("create table public.stolen (id int)", "permission denied for schema public"),
        ("drop table public.products", "must be owner of table products"),
        ("create role intruder", "permission denied to create role"),
        ("create database other", "permission denied to create database"),
    ],
)
def test_the_extract_login_is_refused_outside_its_job(logins, statement, error):
    assert refusal(logins["extract"], statement) == error


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("drop table analytics.customer_analytics", "must be owner of table customer_analytics"),
        (
            "truncate analytics.daily_sales_summary",
            "permission denied for table daily_sales_summary",
        ),
        ("create table analytics.stolen (id int)", "permission denied for schema analytics"),
        ("alter table ledger.load_ledger add column x int", "must be owner of table load_ledger"),
        (
            "create view analytics.top_customers_copy as select 1",
            "permission denied for schema analytics",
        ),
        ("create role intruder", "permission denied to create role"),
    ],
)
def test_the_load_login_is_refused_outside_its_job(logins, statement, error):
    assert refusal(logins["load"], statement) == error


def test_neither_login_reads_the_other_sides_data(logins):
    # the load login reaches the source server but none of its operational rows
    load_on_source = logins["load"].with_database(logins["source"].dbname)
    assert refusal(load_on_source, "select * from public.customers") == (
        "permission denied for table customers"
    )
    # the extract login may not even connect to the analytics database
    extract_on_target = logins["extract"].with_database(logins["target"].dbname)
    with pytest.raises(CredentialsError, match="permission denied for database") as refused:
        connect(extract_on_target, wait_seconds=0)
    assert refused.value.exit_code == 3
    assert "refused the connection" in str(refused.value)


def test_init_again_keeps_the_logins_as_they_are(logins):
    # a second init (every deploy runs it) changes no grant and no data
    def grants():
        conn = connect(logins["source"])
        with conn.cursor() as cur:
            cur.execute(
                "select grantee, table_name, privilege_type "
                "from information_schema.role_table_grants "
                "where grantee in (%s, %s) order by 1, 2, 3",
                (EXTRACT_LOGIN, LOAD_LOGIN),
            )
            rows = cur.fetchall()
        conn.close()
        return rows

    before = grants()
    Pipeline(
        dbt=logins["dbt"],
        source=Database.from_settings(logins["source"]),
        analytics=Database.from_settings(logins["target"]),
    ).init()
    assert grants() == before
    assert ("etl_extract", "orders", "SELECT") in before


def test_init_renames_the_build_schema_an_earlier_version_called_etl(logins):
    # given a source as an earlier version left it: the nightly models in schema etl
    conn = connect(logins["source"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("alter schema nightly rename to etl")
        cur.execute("create table if not exists etl.int_customer_days (customer_id bigint)")
        cur.execute("select count(*) from etl.int_customer_days")
        (rows,) = cur.fetchone()
    # when init gives the extract login its schema
    create_extract_login(conn, logins["source"].dbname)
    # then the same schema, with its incremental state, is called nightly, owned by the login
    with conn.cursor() as cur:
        cur.execute(
            "select nspname, pg_get_userbyid(nspowner) from pg_namespace "
            "where nspname in ('etl', 'nightly')"
        )
        assert cur.fetchall() == [("nightly", EXTRACT_LOGIN)]
        cur.execute("select count(*) from nightly.int_customer_days")
        assert cur.fetchone() == (rows,)
    conn.close()
