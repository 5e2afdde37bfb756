"""Helpers shared by the pipeline suites: hand-made nights and whole-database snapshots."""

from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

from psycopg2 import sql

from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import TableContract, contract
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.extract.unload import Relation, unload_night
from dbt_project.facts.names import ANALYTICS_SCHEMA, BUILD_SCHEMA, LEDGER_SCHEMA
from dbt_project.facts.roles import EXTRACT_LOGIN
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.postgres.source_schema import create_source_tables
from tests.datagen import Shop
from tests.tls_server import LOGIN_PASSWORD


def generated_shop(
    databases, first: date, last: date, *, seed: int
) -> tuple[PgSettings, PgSettings, Shop]:
    """A source with generated orders from ``first`` to ``last`` (the Shop adds more) and
    an empty analytics database."""
    source, target = databases("src"), databases("tgt")
    conn = connect(source)
    with conn:
        create_source_tables(conn)
    shop = Shop(conn, seed=seed)
    shop.history(first, last)
    return source, target, shop


def pipeline_on(source: PgSettings, target: PgSettings, stage) -> Pipeline:
    """The parts a night runs on, for two test databases `etl init` prepared and a
    stage; the source side as etl_extract, as the extract function runs it."""
    return Pipeline(
        dbt=DbtProject(),
        source=Database.from_settings(as_extract_login(source)),
        analytics=Database.from_settings(target),
        stage=stage,
    )


def initialised_shop(
    databases, first: date, last: date, *, seed: int, dbt: DbtProject | None = None
) -> tuple[PgSettings, PgSettings]:
    """A source with generated orders from ``first`` to ``last`` and an analytics
    database, both made ready by `init` as an administrator."""
    source, target, shop = generated_shop(databases, first, last, seed=seed)
    shop.conn.close()
    Pipeline(
        dbt=dbt or DbtProject(),
        source=Database.from_settings(source),
        analytics=Database.from_settings(target),
    ).init()
    return source, target


_NUMBERS = ("bigint", "integer", "smallint", "numeric")


def full_row(table: TableContract, values: dict) -> list:
    """``values`` (by column name) in the order of ``table``'s columns. A number column
    the caller does not name (a measure added to the contract since the test was
    written) is 0; any other column must be named."""
    row = []
    for column in table.columns:
        if column.name in values:
            row.append(values[column.name])
        elif column.data_type.startswith(_NUMBERS):
            row.append(0)
        else:
            raise KeyError(f"a {table.name} row needs a value for {column.name}")
    unknown = set(values) - set(table.column_names)
    if unknown:
        raise KeyError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    return row


def as_login(admin: PgSettings, login: str) -> PgSettings:
    """``admin``'s database as ``login`` (a login `etl init` made), whose password is set
    to the one that stands in for its IAM token on AWS."""
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter role {} password %s").format(sql.Identifier(login)), (LOGIN_PASSWORD,)
        )
    conn.close()
    return admin.with_credentials(login, LOGIN_PASSWORD)


def as_extract_login(admin: PgSettings) -> PgSettings:
    """The source as etl_extract: the source side of a night runs as nothing else."""
    return as_login(admin, EXTRACT_LOGIN)


def write_night(
    source: PgSettings,
    stage,
    *,
    run_date: date,
    extracted_at: datetime,
    rows: dict[str, list[dict]],
    lookback_days: int = 2,
    with_primary_keys: bool = True,
):
    """Stand in for dbt: put ``rows`` (each a dict by column name) in the relations a
    night stages, then unload them."""
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(BUILD_SCHEMA)))
        for name in required_tables():
            table = contract(name)
            cur.execute(
                sql.SQL("drop table if exists {}").format(sql.Identifier(BUILD_SCHEMA, name))
            )
            ddl = table.create_table_sql(BUILD_SCHEMA)
            if not with_primary_keys:
                ddl = sql.SQL("create table {} as select * from ({}) t").format(
                    sql.Identifier(BUILD_SCHEMA, name),
                    sql.SQL("select {} limit 0").format(
                        sql.SQL(", ").join(
                            sql.SQL("null::{} as {}").format(
                                sql.SQL(c.data_type), sql.Identifier(c.name)
                            )
                            for c in table.columns
                        )
                    ),
                )
            cur.execute(ddl)
            for values in rows.get(name, []):
                cur.execute(
                    sql.SQL("insert into {} ({}) values ({})").format(
                        sql.Identifier(BUILD_SCHEMA, name),
                        sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
                        sql.SQL(", ").join(sql.Placeholder() for _ in table.columns),
                    ),
                    full_row(table, values),
                )
    relations = {name: Relation(BUILD_SCHEMA, name) for name in required_tables()}
    manifest = unload_night(
        conn,
        relations,
        stage,
        run_date=run_date,
        lookback_days=lookback_days,
        extracted_at=extracted_at,
    )
    conn.close()
    return manifest


def snapshot(target: PgSettings) -> dict[str, list[tuple]]:
    """Every row of every table the load may touch, in a stable order."""
    conn = connect(target)
    found: dict[str, list[tuple]] = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in (%s, %s) and table_type = 'BASE TABLE' order by 1, 2",
            (ANALYTICS_SCHEMA, LEDGER_SCHEMA),
        )
        for schema, name in cur.fetchall():
            cur.execute(
                sql.SQL("select * from {} order by 1, 2").format(sql.Identifier(schema, name))
                if name != "load_ledger"
                else sql.SQL(
                    "select run_id, run_date, rows_loaded::text from {} order by 1"
                ).format(sql.Identifier(schema, name))
            )
            found[f"{schema}.{name}"] = cur.fetchall()
    conn.close()
    return found


def table_rows(target: PgSettings, name: str) -> list[tuple]:
    conn = connect(target)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("select {} from {} order by 1, 2").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in contract(name).column_names),
                sql.Identifier(ANALYTICS_SCHEMA, name),
            )
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def project_copy(folder: Path) -> Path:
    """A copy of the dbt project (what the common layer ships of it) in ``folder``, for a
    test that changes a model: point ETL_DBT_PROJECT_DIR at it."""
    from infra.packaging.layers import REPO_ROOT, common_sources

    for relative, path in common_sources(REPO_ROOT):
        if relative.startswith("dbt/"):
            copy = folder / relative.removeprefix("dbt/")
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
    return folder


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must be there, once) in a copied project file."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def catalog_snapshot(settings: PgSettings) -> dict:
    """The analytics and ledger tables' columns, constraints, indexes, views and rows:
    what a refused upgrade must leave exactly as it was."""
    conn = connect(settings)
    found = {}
    with conn, conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name, column_name, data_type, numeric_precision, "
            "numeric_scale, is_nullable, column_default from information_schema.columns "
            "where table_schema in (%s, %s) order by 1, 2, ordinal_position",
            (ANALYTICS_SCHEMA, LEDGER_SCHEMA),
        )
        found["columns"] = cur.fetchall()
        cur.execute(
            "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "from pg_constraint where connamespace = %s::regnamespace order by 1, 2",
            (ANALYTICS_SCHEMA,),
        )
        found["constraints"] = cur.fetchall()
        cur.execute(
            "select indexname, indexdef from pg_indexes where schemaname = %s order by 1",
            (ANALYTICS_SCHEMA,),
        )
        found["indexes"] = cur.fetchall()
        cur.execute(
            "select viewname, definition from pg_views where schemaname = %s order by 1",
            (ANALYTICS_SCHEMA,),
        )
        found["views"] = cur.fetchall()
    conn.close()
    found["rows"] = snapshot(settings)
    return found


# The last column of customer_analytics' contract, where a test adds one after it.
_AS_OF_DATE = """      - name: as_of_date
        description: >
          The business day the totals are complete for: run_date in a windowed
          build, the latest business day of any order in a full-history build.
        data_type: date
        constraints:
          - type: not_null
"""


def add_customer_columns(project: Path, columns_yaml: str) -> Path:
    """Add columns (YAML, as in the models file) to customer_analytics' contract."""
    marts = project / "models/marts/_marts__models.yml"
    edit(marts, _AS_OF_DATE, _AS_OF_DATE + columns_yaml)
    return marts
