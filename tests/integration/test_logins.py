"""The functions' logins on real PostgreSQL: each does its whole job, holds exactly the
privileges it needs (read from the catalog, as sets), and is refused everything outside
it, with the server's own error. The source side of a night runs as etl_extract or not
at all: what etl_extract owns never runs with a stronger login's rights."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import psycopg2
import pytest
from psycopg2 import sql

from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import ConfigError, CredentialsError
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN, LOADER_ROLE, READER_ROLE
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.pipeline_helpers import as_login, initialised_shop

FIRST = date(2026, 3, 1)
LAST = date(2026, 3, 10)


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
        ("create schema stolen", "permission denied for database {database}"),
    ],
)
def test_the_extract_login_is_refused_outside_its_job(logins, statement, error):
    database = logins["source"].dbname
    assert refusal(logins["extract"], statement) == error.format(database=database)


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
        ("create schema stolen", "permission denied for database {database}"),
        ("delete from ledger.load_ledger", "permission denied for table load_ledger"),
        ("delete from ledger.run_reports", "permission denied for table run_reports"),
        ("select lo_create(0)", "permission denied for function lo_create"),
    ],
)
def test_the_load_login_is_refused_outside_its_job(logins, statement, error):
    database = logins["target"].dbname
    assert refusal(logins["load"], statement) == error.format(database=database)


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


# -- privileges as sets, read from the catalog -----------------------------------------

_ATTRIBUTES = """
select a.name from pg_roles r, lateral (values
    ('LOGIN', r.rolcanlogin), ('SUPERUSER', r.rolsuper), ('CREATEROLE', r.rolcreaterole),
    ('CREATEDB', r.rolcreatedb), ('REPLICATION', r.rolreplication),
    ('BYPASSRLS', r.rolbypassrls)) a(name, held)
where r.rolname = %(role)s and a.held
"""
_MEMBERSHIPS = """
select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid
join pg_roles r on r.oid = m.member where r.rolname = %(role)s
"""
_DATABASES = """
select d.datname, p.name from pg_database d, unnest(array['CREATE', 'TEMPORARY', 'CONNECT']) p(name)
where d.datname = any(%(databases)s) and has_database_privilege(%(role)s, d.oid, p.name)
"""
_SCHEMAS = """
select n.nspname, p.name from pg_namespace n, unnest(array['USAGE', 'CREATE']) p(name)
where n.nspname !~ '^(pg_|information_schema$)' and has_schema_privilege(%(role)s, n.oid, p.name)
union all
select n.nspname, 'OWNER' from pg_namespace n where n.nspowner = %(role)s::regrole
"""
# Each relation's privileges, explicit (aclexplode of its ACL, through the roles the
# login is a member of, PUBLIC included) or its owner's: what the server checks.
_RELATIONS = """
select n.nspname || '.' || c.relname, a.privilege_type
from pg_class c join pg_namespace n on n.oid = c.relnamespace,
     aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
where n.nspname !~ '^(pg_|information_schema$)' and c.relkind in ('r', 'p', 'v', 'm', 'f')
  and c.relowner <> %(role)s::regrole
  and (a.grantee = 0 or pg_has_role(%(role)s, a.grantee, 'USAGE'))
union all
select n.nspname || '.*', 'OWNER' from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname !~ '^(pg_|information_schema$)' and c.relowner = %(role)s::regrole
"""
_FUNCTIONS = """
select f, 'EXECUTE' from unnest(%(functions)s::text[]) f
where has_function_privilege(%(role)s, f, 'EXECUTE')
"""
LARGE_OBJECTS = ["lo_creat(integer)", "lo_create(oid)", "lo_from_bytea(oid, bytea)"]


def privileges(settings: PgSettings, role: str, *, postgres: bool = True) -> set[tuple[str, ...]]:
    """Everything ``role`` may do in ``settings``' database (and in the server's postgres
    database): attributes, roles, database, schema, relation and large-object
    privileges. The database itself is called "own"."""
    found: set[tuple[str, ...]] = set()
    params = {
        "role": role,
        "databases": [settings.dbname, *(["postgres"] if postgres else [])],
        "functions": LARGE_OBJECTS,
    }
    conn = connect(settings)
    with conn.cursor() as cur:
        for kind, query in (
            ("attribute", _ATTRIBUTES),
            ("member of", _MEMBERSHIPS),
            ("database", _DATABASES),
            ("schema", _SCHEMAS),
            ("relation", _RELATIONS),
            ("function", _FUNCTIONS),
        ):
            cur.execute(query, params)
            for row in cur.fetchall():
                row = tuple("own" if v == settings.dbname else v for v in row)
                found.add((kind, *row))
    conn.close()
    return found


def relations(names: str, privileges: str) -> set[tuple[str, ...]]:
    return {
        ("relation", name, privilege) for name in names.split() for privilege in privileges.split()
    }


MARTS_AND_TOTALS = (
    "analytics.customer_analytics analytics.product_sales_summary "
    "analytics.daily_sales_summary analytics.customer_totals"
)
VIEWS = (
    "analytics.top_customers analytics.category_performance analytics.regional_sales_trend "
    "analytics.weekly_sales_summary analytics.volume_anomalies"
)


def test_the_extract_login_holds_exactly_its_privileges(logins, tmp_path):
    built(logins, tmp_path)
    # (The source's server is the shop's: its postgres database is none of init's concern.)
    assert privileges(logins["source"], EXTRACT_LOGIN, postgres=False) == {
        ("attribute", "LOGIN"),
        ("database", "own", "CONNECT"),
        ("database", "own", "TEMPORARY"),  # dbt's incremental models stage there
        ("schema", "public", "USAGE"),
        ("schema", "nightly", "USAGE"),
        ("schema", "nightly", "CREATE"),
        ("schema", "nightly", "OWNER"),
        ("relation", "nightly.*", "OWNER"),
        *relations("public.customers public.orders public.order_items public.products", "SELECT"),
        # The source is the shop's server: its defaults for everyone are the shop's.
        *(("function", f, "EXECUTE") for f in LARGE_OBJECTS),
    }


def test_the_load_login_holds_exactly_its_privileges(logins):
    assert privileges(logins["target"], LOAD_LOGIN) == {
        ("attribute", "LOGIN"),
        ("member of", LOADER_ROLE),
        ("member of", READER_ROLE),
        ("database", "own", "CONNECT"),
        ("database", "own", "TEMPORARY"),  # the load's incoming tables
        ("schema", "public", "USAGE"),
        ("schema", "analytics", "USAGE"),
        ("schema", "ledger", "USAGE"),
        *relations(MARTS_AND_TOTALS, "SELECT INSERT UPDATE DELETE"),
        *relations(VIEWS, "SELECT"),
        *relations("ledger.load_ledger ledger.run_reports", "SELECT INSERT UPDATE"),
        # a full refresh deletes the days the history no longer has, and the removals
        # dated after it
        *relations("ledger.day_versions ledger.removed_customers", "SELECT INSERT UPDATE DELETE"),
        # and settles the reprocessing a deployment asked for
        *relations("ledger.reprocess_requests", "SELECT UPDATE"),
    }


def test_the_reader_holds_exactly_its_privileges(logins):
    assert privileges(logins["target"], READER_ROLE) == {
        ("database", "own", "CONNECT"),
        ("schema", "public", "USAGE"),
        ("schema", "analytics", "USAGE"),
        *relations(f"{MARTS_AND_TOTALS} {VIEWS}", "SELECT"),
    }


# -- the source side runs as etl_extract, or not at all --------------------------------

# What someone with etl_extract's rights could plant: a statement trigger on the
# incremental state that, run by anyone else, goes back to that login and takes a
# role that runs programs on the server.
TAKEOVER = """
create function nightly.takeover() returns trigger language plpgsql as $$
begin
    set role none;
    if current_user <> 'etl_extract' then
        grant pg_execute_server_program to etl_extract;
    end if;
    return null;
end $$;
create trigger takeover after insert or update or delete on nightly.int_customer_days
for each statement execute function nightly.takeover();
"""


def _execute(settings: PgSettings, statement: str, params=None) -> list[tuple]:
    conn = connect(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def built(logins, tmp_path) -> None:
    """The nightly build exists, whichever test ran first: a night as etl_extract."""
    (row,) = _execute(logins["source"], "select to_regclass('nightly.int_customer_days')")
    if row[0] is None:
        Pipeline(
            dbt=logins["dbt"],
            source=Database.from_settings(logins["extract"]),
            stage=LocalStage(tmp_path / "built"),
        ).extract(NightRequest(LAST, lookback_days=(LAST - FIRST).days + 1))


def _extract_took_over(settings: PgSettings) -> bool:
    (row,) = _execute(
        settings,
        "select pg_has_role(%s, 'pg_execute_server_program', 'MEMBER')",
        (EXTRACT_LOGIN,),
    )
    return row[0]


def test_a_superuser_never_runs_the_source_side_and_init_removes_planted_code(
    logins, tmp_path, capsys
):
    # given a trigger etl_extract planted on the incremental state
    built(logins, tmp_path)
    _execute(logins["extract"], TAKEOVER)
    try:
        # when an operator runs the night with the superuser's URL
        stage = tmp_path / "stage"
        args = ["extract", "--date", str(LAST), "--lookback-days", "2"]
        code = main([*args, "--source-url", logins["source"].url, "--stage", str(stage)])

        # then what etl_extract planted did not run with the superuser's rights
        assert not _extract_took_over(logins["source"])
        # and one line says to log in as etl_extract, and nothing was staged
        lines = capsys.readouterr().err.splitlines()
        assert (code, len(lines)) == (2, 1), lines
        assert lines[0].startswith(
            "etl: error: the source side of a night runs only as etl_extract, and postgres "
            "is a superuser"
        )
        assert "--source-url postgresql://etl_extract@" in lines[0]
        assert "aws rds generate-db-auth-token" in lines[0] and "PGPASSWORD" in lines[0]
        assert not stage.exists() or not list(stage.rglob("*"))

        # and init, run by the administrator, removes the planted code and says so
        result = Pipeline(
            dbt=logins["dbt"],
            source=Database.from_settings(logins["source"]),
            analytics=Database.from_settings(logins["target"]),
        ).init()
        assert result.removed == [
            "routine nightly.takeover()",
            "trigger takeover on nightly.int_customer_days",
        ]
        assert not _extract_took_over(logins["source"])
    finally:
        _execute(logins["source"], "revoke pg_execute_server_program from etl_extract")
        _execute(logins["source"], "drop function if exists nightly.takeover() cascade")


@pytest.fixture
def operator(logins):
    """A login of an operator that may act as etl_extract and holds nothing more."""
    name = sql.Identifier(f"operator_{uuid.uuid4().hex[:6]}")
    _execute(
        logins["source"],
        sql.SQL("create role {} login password 'operator' in role {}").format(
            name, sql.Identifier(EXTRACT_LOGIN)
        ),
    )
    yield logins["source"].with_credentials(name.string, "operator")
    _execute(logins["source"], sql.SQL("drop role {}").format(name))


# Who runs code on the incremental state, as etl_extract can see it.
WITNESS = """
create table nightly.witnessed (who text, session text);
create function nightly.witness() returns trigger language plpgsql as $$
begin
    insert into nightly.witnessed values (current_user, session_user);
    return null;
end $$;
create trigger witness after insert on nightly.int_customer_days
for each statement execute function nightly.witness();
"""


def test_a_login_that_may_act_as_etl_extract_runs_the_source_side_as_it(logins, operator, tmp_path):
    # given an operator's login that is a member of etl_extract, and a witness on the
    # incremental state
    built(logins, tmp_path)
    _execute(logins["extract"], WITNESS)
    try:
        # when the night's source side runs with that login
        result = Pipeline(
            dbt=logins["dbt"],
            source=Database.from_settings(operator),
            stage=LocalStage(tmp_path / "stage"),
        ).extract(NightRequest(LAST, lookback_days=2))

        # then dbt and the unload ran as etl_extract, which owns all they built
        assert result.rows["daily_sales_summary"] > 0
        assert set(_execute(logins["source"], "select * from nightly.witnessed")) == {
            (EXTRACT_LOGIN, operator.user)
        }
        owners = _execute(
            logins["source"],
            "select distinct pg_get_userbyid(relowner) from pg_class "
            "where relnamespace = 'nightly'::regnamespace",
        )
        assert owners == [(EXTRACT_LOGIN,)]
    finally:
        _execute(logins["source"], "drop function nightly.witness() cascade")
        _execute(logins["source"], "drop table nightly.witnessed")


@pytest.mark.parametrize(
    ("grant", "held"),
    [
        ("createrole", "holds CREATEROLE"),
        ("in role rds_superuser", "is a member of rds_superuser"),
        (f"in role {EXTRACT_LOGIN}, {READER_ROLE}", f"holds role {READER_ROLE}"),
        ("", "may not act as etl_extract"),
    ],
)
def test_a_login_with_more_rights_than_etl_extract_is_refused(logins, tmp_path, grant, held):
    # given a login with a right beyond etl_extract's, or none of its own (RDS's
    # master user is a member of rds_superuser)
    _execute(
        logins["source"],
        "do $$ begin if not exists (select from pg_roles where rolname = 'rds_superuser') "
        "then create role rds_superuser; end if; end $$",
    )
    name = f"strong_{uuid.uuid4().hex[:6]}"
    _execute(logins["source"], f"create role {name} login password 'strong' {grant}")
    try:
        # when it runs the source side, it is refused before anything is built
        stage = LocalStage(tmp_path / "stage")
        with pytest.raises(ConfigError) as refused:
            Pipeline(
                dbt=logins["dbt"],
                source=Database.from_settings(logins["source"].with_credentials(name, "strong")),
                stage=stage,
            ).extract(NightRequest(LAST, lookback_days=2))
        assert held in str(refused.value) and "log in as etl_extract" in str(refused.value)
        assert "\n" not in str(refused.value)
        assert stage.list("etl-data/") == []
    finally:
        _execute(logins["source"], f"drop role {name}")


def test_a_source_init_has_not_prepared_is_refused_before_anything_runs(
    new_database, logins, tmp_path
):
    # given a source with the shop's tables, where `etl init` never ran
    source = new_database("bare")
    conn = connect(source)
    with conn:
        create_source_tables(conn)
    conn.close()
    stage = LocalStage(tmp_path / "stage")
    # when the night runs as etl_extract, it says what to do, and nothing is staged
    with pytest.raises(ConfigError, match="the schema nightly, which only etl_extract builds in"):
        Pipeline(
            dbt=logins["dbt"],
            source=Database.from_settings(logins["extract"].with_database(source.dbname)),
            stage=stage,
        ).extract(NightRequest(LAST, lookback_days=2))
    assert stage.list("etl-data/") == []
