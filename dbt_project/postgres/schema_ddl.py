"""The DDL of the schema upgrade, composed by small functions and run elsewhere.

Types and check expressions come from this project's own model YAML (the contract
reader admits only plain type names and named checks); names are identifiers and
defaults are literals.
"""

from __future__ import annotations

from psycopg2 import sql


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("create schema if not exists {}").format(sql.Identifier(schema))


def create_index(schema: str, table: str, name: str, method_and_columns: str) -> sql.Composed:
    """``method_and_columns`` as the catalog spells it: ``btree (a DESC, b)``."""
    return sql.SQL("create index {} on {} using {}").format(
        sql.Identifier(name), sql.Identifier(schema, table), sql.SQL(method_and_columns)
    )


def drop_index(schema: str, name: str) -> sql.Composed:
    return sql.SQL("drop index {}").format(sql.Identifier(schema, name))


def add_column(
    table: sql.Identifier,
    column: str,
    data_type: str,
    *,
    not_null: bool = False,
    default: str | None = None,
) -> sql.Composed:
    """A column; with ``default``, the value the rows already there get (PostgreSQL
    stores it once, not in each row)."""
    parts = [sql.SQL("alter table {} add column {} {}").format(
        table, sql.Identifier(column), sql.SQL(data_type)
    )]  # fmt: skip
    if default is not None:
        parts.append(sql.SQL("default {}").format(sql.Literal(default)))
    if not_null:
        parts.append(sql.SQL("not null"))
    return sql.SQL(" ").join(parts)


def drop_default(table: sql.Identifier, column: str) -> sql.Composed:
    """A default only fills the rows already loaded: the load writes every column."""
    return sql.SQL("alter table {} alter column {} drop default").format(
        table, sql.Identifier(column)
    )


def alter_type(table: sql.Identifier, column: str, data_type: str) -> sql.Composed:
    return sql.SQL("alter table {} alter column {} type {}").format(
        table, sql.Identifier(column), sql.SQL(data_type)
    )


def set_not_null(table: sql.Identifier, column: str) -> sql.Composed:
    return sql.SQL("alter table {} alter column {} set not null").format(
        table, sql.Identifier(column)
    )


def drop_not_null(table: sql.Identifier, column: str) -> sql.Composed:
    return sql.SQL("alter table {} alter column {} drop not null").format(
        table, sql.Identifier(column)
    )


def add_check(table: sql.Identifier, name: str, expression: str) -> sql.Composed:
    return sql.SQL("alter table {} add constraint {} check ({})").format(
        table, sql.Identifier(name), sql.SQL(expression)
    )


def drop_constraint(table: sql.Identifier, name: str) -> sql.Composed:
    return sql.SQL("alter table {} drop constraint {}").format(table, sql.Identifier(name))


def set_fillfactor(table: sql.Identifier, fillfactor: int | None) -> sql.Composed:
    if fillfactor is None:
        return sql.SQL("alter table {} reset (fillfactor)").format(table)
    return sql.SQL("alter table {} set (fillfactor = {})").format(
        table, sql.Literal(int(fillfactor))
    )


def drop_views(views: list[tuple[str, str]]) -> sql.Composed:
    """In one statement, so that views reading other views go together."""
    return sql.SQL("drop view if exists {}").format(
        sql.SQL(", ").join(sql.Identifier(schema, name) for schema, name in views)
    )
