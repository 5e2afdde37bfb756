"""Helpers shared by the pipeline suites: hand-made nights and whole-database snapshots."""

from __future__ import annotations

from datetime import date, datetime

from psycopg2 import sql

from dbt_project.contract.ownership import REQUIRED_TABLES
from dbt_project.contract.tables import contract
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.extract.unload import Relation, unload_night
from dbt_project.facts.names import ANALYTICS_SCHEMA, BUILD_SCHEMA, LEDGER_SCHEMA
from dbt_project.facts.roles import EXTRACT_LOGIN
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.postgres.source_schema import create_source_tables
from tests.datagen import Shop
from tests.tls_server import LOGIN_PASSWORD


def initialised_shop(
    databases, first: date, last: date, *, seed: int, dbt: DbtProject | None = None
) -> tuple[PgSettings, PgSettings]:
    """A source with generated orders from ``first`` to ``last`` and an analytics
    database, both made ready by `init` as an administrator."""
    source, target = databases("src"), databases("tgt")
    conn = connect(source)
    create_source_tables(conn)
    conn.commit()
    Shop(conn, seed=seed).history(first, last)
    conn.close()
    Pipeline(
        dbt=dbt or DbtProject(),
        source=Database.from_settings(source),
        analytics=Database.from_settings(target),
    ).init()
    return source, target


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
    rows: dict[str, list[tuple]],
    lookback_days: int = 2,
    with_primary_keys: bool = True,
):
    """Stand in for dbt: put ``rows`` in the five built relations, then unload them."""
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(BUILD_SCHEMA)))
        for name in REQUIRED_TABLES:
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
            for row in rows.get(name, []):
                cur.execute(
                    sql.SQL("insert into {} values ({})").format(
                        sql.Identifier(BUILD_SCHEMA, name),
                        sql.SQL(", ").join(sql.Placeholder() for _ in row),
                    ),
                    row,
                )
    relations = {name: Relation(BUILD_SCHEMA, name) for name in REQUIRED_TABLES}
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
