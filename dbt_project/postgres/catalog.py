"""What a schema's tables are, read from PostgreSQL's catalog: columns with their
types as PostgreSQL spells them, primary keys, named checks, indexes, table options,
and the views that read a column.

The schema upgrade compares the analytics tables with tables PostgreSQL made from the
contracts (in the session's temporary schema), so both sides are read by the same
queries and spelt the same way: ``numeric(14,2)``, ``CHECK ((total_orders >= 1))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from psycopg2 import sql


@dataclass(frozen=True)
class CatalogColumn:
    name: str
    data_type: str  # format_type(): numeric(14,2), timestamp with time zone, ...
    not_null: bool


@dataclass
class CatalogTable:
    name: str
    columns: dict[str, CatalogColumn] = field(default_factory=dict)
    primary_key: tuple[str, ...] = ()
    checks: dict[str, str] = field(default_factory=dict)  # name: pg_get_constraintdef
    indexes: dict[str, str] = field(default_factory=dict)  # name: method and columns
    options: tuple[str, ...] = ()  # reloptions, e.g. ("fillfactor=70",)


def _in_schema(alias: str) -> sql.Composed:
    # Not ::regnamespace: a schema that does not exist yet simply has no tables.
    return sql.SQL(
        "{}.relnamespace = (select oid from pg_namespace where nspname = %(schema)s)"
    ).format(sql.Identifier(alias))


def columns_query() -> sql.Composed:
    """Parameters by name: schema, tables."""
    return sql.SQL(
        "select c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "c.reloptions from pg_class c join pg_attribute a on a.attrelid = c.oid "
        "and a.attnum > 0 and not a.attisdropped "
        "where {} and c.relkind in ('r', 'p') and c.relname = any(%(tables)s) "
        "order by c.relname, a.attnum"
    ).format(_in_schema("c"))


def constraints_query() -> sql.Composed:
    """Primary keys (their columns in key order) and check constraints.

    Parameters by name: schema, tables.
    """
    return sql.SQL(
        "select c.relname, con.contype, con.conname, pg_get_constraintdef(con.oid), "
        "array(select a.attname from unnest(con.conkey) with ordinality k (attnum, n) "
        "join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum "
        "order by k.n)::text[] "
        "from pg_constraint con join pg_class c on c.oid = con.conrelid "
        "where {} and c.relname = any(%(tables)s) and con.contype in ('p', 'c') "
        "order by 1, 3"
    ).format(_in_schema("c"))


def indexes_query() -> sql.Composed:
    """Indexes other than the primary key's. Parameters by name: schema, tables."""
    return sql.SQL(
        "select t.relname, i.relname, pg_get_indexdef(i.oid) from pg_index x "
        "join pg_class i on i.oid = x.indexrelid join pg_class t on t.oid = x.indrelid "
        "where {} and t.relname = any(%(tables)s) and not x.indisprimary order by 1, 2"
    ).format(_in_schema("t"))


def dependent_views_query() -> sql.SQL:
    """Views that read a column of a table, and the views that read those, by name.

    Parameters by name: table (regclass text), column.
    """
    return sql.SQL(
        "with recursive readers (view) as ("
        "select r.ev_class from pg_depend d join pg_rewrite r on r.oid = d.objid "
        "join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid "
        "where d.refobjid = %(table)s::regclass and a.attname = %(column)s "
        "and d.classid = 'pg_rewrite'::regclass and r.ev_class <> d.refobjid "
        "union select r.ev_class from readers v join pg_depend d on d.refobjid = v.view "
        "join pg_rewrite r on r.oid = d.objid "
        "where d.classid = 'pg_rewrite'::regclass and r.ev_class <> v.view) "
        "select distinct n.nspname, c.relname from readers v join pg_class c on c.oid = v.view "
        "join pg_namespace n on n.oid = c.relnamespace order by 1, 2"
    )


def _method_and_columns(definition: str) -> str:
    """``CREATE INDEX i ON s.t USING btree (a DESC, b)`` -> ``btree (a DESC, b)``: the
    part that does not name the schema, so an index on a temporary copy compares."""
    return definition.split(" USING ", 1)[-1]


def read_tables(cur, schema: str, tables: list[str]) -> dict[str, CatalogTable]:
    """The tables of ``schema`` among ``tables``, as the catalog has them."""
    params = {"schema": schema, "tables": list(tables)}
    found: dict[str, CatalogTable] = {}
    cur.execute(columns_query(), params)
    for table, column, data_type, not_null, options in cur.fetchall():
        entry = found.setdefault(table, CatalogTable(table, options=tuple(options or ())))
        entry.columns[column] = CatalogColumn(column, data_type, not_null)
    cur.execute(constraints_query(), params)
    for table, kind, name, definition, columns in cur.fetchall():
        if kind == "p":
            found[table].primary_key = tuple(columns)
        else:
            found[table].checks[name] = definition
    cur.execute(indexes_query(), params)
    for table, name, definition in cur.fetchall():
        found[table].indexes[name] = _method_and_columns(definition)
    return found


def temporary_schema(cur) -> str:
    """The name of this session's temporary schema (it exists once a temporary table does)."""
    cur.execute("select nspname from pg_namespace where oid = pg_my_temp_schema()")
    return cur.fetchone()[0]


def dependent_views(cur, schema: str, table: str, column: str) -> list[tuple[str, str]]:
    qualified = sql.Identifier(schema, table).as_string(cur.connection)
    cur.execute(dependent_views_query(), {"table": qualified, "column": column})
    return [tuple(row) for row in cur.fetchall()]


def has_rows(cur, schema: str, table: str) -> bool:
    cur.execute(sql.SQL("select exists (select from {})").format(sql.Identifier(schema, table)))
    return bool(cur.fetchone()[0])


def count_rows_where(cur, schema: str, table: str, condition: sql.Composable, *, also=()) -> int:
    """Rows of ``table`` for which ``condition`` holds. ``also`` lists columns the table
    is about to get, as (contract column, type): each reads as the value the rows
    loaded so far would get, its default or null."""
    rows = sql.Identifier(schema, table)
    if also:
        added = [
            sql.SQL("cast({} as {}) as {}").format(
                sql.Literal(column.default), sql.SQL(data_type), sql.Identifier(column.name)
            )
            for column, data_type in also
        ]
        rows = sql.SQL("(select t.*, {} from {} t)").format(sql.SQL(", ").join(added), rows)
    cur.execute(sql.SQL("select count(*) from {} as t where {}").format(rows, condition))
    return int(cur.fetchone()[0])


def schema_exists(cur, schema: str) -> bool:
    cur.execute("select exists (select from pg_namespace where nspname = %s)", (schema,))
    return bool(cur.fetchone()[0])


def other_tables(cur, schema: str, known: list[str]) -> list[str]:
    """Tables of ``schema`` not in ``known``."""
    cur.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind in ('r', 'p') and not c.relname = any(%s) "
        "order by 1",
        (schema, list(known)),
    )
    return [name for (name,) in cur.fetchall()]


_NUMERIC = re.compile(r"^numeric(?:\((\d+),(\d+)\))?$")
_VARCHAR = re.compile(r"^character varying(?:\((\d+)\))?$")
_INTEGERS = ("smallint", "integer", "bigint")
# Digits left of the point each integer type may need.
_INTEGER_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}


def is_widening(old: str, new: str) -> bool:
    """Whether every value of type ``old`` is kept as it is by type ``new``."""
    if old in _INTEGERS:
        if new in _INTEGERS:
            return _INTEGERS.index(new) >= _INTEGERS.index(old)
        number = _NUMERIC.match(new)
        return bool(number) and (
            number.group(1) is None
            or int(number.group(1)) - int(number.group(2)) >= _INTEGER_DIGITS[old]
        )
    old_number, new_number = _NUMERIC.match(old), _NUMERIC.match(new)
    if old_number and new_number:
        if new_number.group(1) is None:
            return True
        if old_number.group(1) is None:
            return False
        (p, s), (p2, s2) = (map(int, m.groups()) for m in (old_number, new_number))
        return s2 >= s and p2 - s2 >= p - s
    old_text = _VARCHAR.match(old)
    if old_text and new == "text":
        return True
    new_text = _VARCHAR.match(new)
    if old_text and new_text:
        return new_text.group(1) is None or (
            old_text.group(1) is not None and int(new_text.group(1)) >= int(old_text.group(1))
        )
    return False
