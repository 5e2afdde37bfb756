"""The analytics tables brought to their contracts: a plan of DDL, and refusals.

``plan`` compares each table with the table PostgreSQL makes of its contract (created
for a moment in the session's temporary schema, so types and checks are spelt alike)
and lists what to run: a missing table created; a new column added (NOT NULL only on
an empty table, or with the contract's ``default`` for the rows already loaded); a
numeric, varchar or integer widened; a NOT NULL set where no row is null, or dropped;
checks, indexes and the fillfactor made as declared. What would lose data (a dropped
or renamed column, a narrowing or another change of type, a new NOT NULL column
without a default on a table with rows, a changed primary key, a check that rows
break) is refused, one line each naming the table, the column and the path to take.
Nothing is run here; a plan with a refusal must not be applied at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg2 import sql

from dbt_project.contract.tables import Column, TableContract
from dbt_project.errors import SchemaRefused
from dbt_project.postgres import catalog, schema_ddl
from dbt_project.postgres.catalog import CatalogTable


@dataclass(frozen=True)
class WantedTable:
    """A contract and the loader's bookkeeping beside it."""

    contract: TableContract
    extra_columns: tuple[Column, ...] = ()
    fillfactor: int | None = None
    # Index name and its method-and-columns part, e.g. ("i", "(total_revenue desc, id)").
    indexes: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def columns(self) -> dict[str, Column]:
        return {c.name: c for c in (*self.contract.columns, *self.extra_columns)}

    def create(self, schema: str) -> list[sql.Composed]:
        """The table with its contract's constraints, extra columns, options and indexes."""
        extras = tuple(
            (c.name, f"{c.data_type} not null" if c.not_null else c.data_type)
            for c in self.extra_columns
        )
        statements = [self.contract.create_table_sql(schema, extras, self.fillfactor)]
        statements += [
            schema_ddl.create_index(schema, self.name, name, method_and_columns)
            for name, method_and_columns in self.indexes
        ]
        return statements


@dataclass(frozen=True)
class Change:
    table: str
    column: str | None
    summary: str
    statements: tuple[sql.Composable, ...]


@dataclass(frozen=True)
class Refusal:
    table: str
    column: str | None
    message: str


@dataclass
class SchemaPlan:
    schema: str
    changes: list[Change] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    # Tables of the schema no contract names any more: left as they are.
    notes: list[str] = field(default_factory=list)

    @property
    def statements(self) -> list[sql.Composable]:
        return [s for change in self.changes for s in change.statements]

    def sql_text(self, conn) -> list[str]:
        return [s.as_string(conn) for s in self.statements]

    def as_dict(self, conn) -> dict:
        return {
            "statements": self.sql_text(conn),
            "changes": [
                {
                    "table": c.table,
                    "column": c.column,
                    "change": c.summary,
                    "sql": [s.as_string(conn) for s in c.statements],
                }
                for c in self.changes
            ],
            "refusals": [
                {"table": r.table, "column": r.column, "message": r.message} for r in self.refusals
            ],
            "notes": list(self.notes),
        }

    def raise_if_refused(self) -> None:
        if self.refusals:
            more = len(self.refusals) - 1
            also = f" (and {more} more: `etl plan` lists them)" if more else ""
            raise SchemaRefused(
                f"{self.refusals[0].message}{also}; nothing was changed", refusals=self.refusals
            )


def _qualified(schema: str, table: str, column: str | None = None) -> str:
    return ".".join(p for p in (schema, table, column) if p)


@dataclass
class _Planner:
    cur: object
    schema: str
    managed_views: frozenset[str]
    plan: SchemaPlan
    dropped_views: list[tuple[str, str]] = field(default_factory=list)

    def change(self, table: str, column: str | None, summary: str, *statements) -> None:
        self.plan.changes.append(Change(table, column, summary, tuple(statements)))

    def refuse(self, table: str, column: str | None, message: str) -> None:
        self.plan.refusals.append(Refusal(table, column, message))

    def table(self, wanted: WantedTable, actual: CatalogTable, normal: CatalogTable) -> None:
        name, where = wanted.name, _qualified(self.schema, wanted.name)
        if actual.primary_key != normal.primary_key:
            self.refuse(
                name,
                ", ".join(normal.primary_key),
                f"the primary key of {where} would change from ({', '.join(actual.primary_key)}) "
                f"to ({', '.join(normal.primary_key)}): its rows cannot be carried over; "
                f"give the mart a new name, or drop {where} by hand and reprocess the history",
            )
            return
        for column in actual.columns:
            if column not in normal.columns:
                self._gone(name, column)
        self._checks_dropped(name, actual, normal)
        new_columns = []
        for column, shape in normal.columns.items():
            if column not in actual.columns:
                new_columns.append(wanted.columns[column])
                self._add(name, wanted.columns[column], shape)
            else:
                self._alter(name, actual.columns[column], shape)
        self._checks_added(wanted, actual, normal, new_columns)
        self._indexes(name, actual, normal)
        self._options(name, wanted, actual)

    def _gone(self, table: str, column: str) -> None:
        where = _qualified(self.schema, table, column)
        self.refuse(
            table,
            column,
            f"{where} is no longer in the contract, and dropping or renaming a column loses "
            f"its data: for a rename, add the new column, backfill it (a reprocess), then "
            f"drop {column} by hand (alter table {_qualified(self.schema, table)} drop column "
            f"{column}); for a drop, drop it by hand; or put it back in the contract",
        )

    def _add(self, table: str, column: Column, shape: catalog.CatalogColumn) -> None:
        where = _qualified(self.schema, table, column.name)
        target = sql.Identifier(self.schema, table)
        if not shape.not_null:
            self.change(table, column.name, f"add column {shape.data_type}",
                        schema_ddl.add_column(target, column.name, shape.data_type))  # fmt: skip
        elif not catalog.has_rows(self.cur, self.schema, table):
            self.change(
                table,
                column.name,
                f"add column {shape.data_type} not null (the table is empty)",
                schema_ddl.add_column(target, column.name, shape.data_type, not_null=True),
            )
        elif column.default is not None:
            self.change(
                table,
                column.name,
                f"add column {shape.data_type} not null, {column.default} in the rows loaded "
                "so far",
                schema_ddl.add_column(
                    target, column.name, shape.data_type, not_null=True, default=column.default
                ),
                schema_ddl.drop_default(target, column.name),
            )
        else:
            self.refuse(
                table,
                column.name,
                f"{where} is new and NOT NULL, and the table has rows: declare the value the "
                f"loaded rows get (config: {{meta: {{default: ...}}}} on the column; a "
                "reprocess restates them), or leave not_null out",
            )

    def _alter(self, table: str, old: catalog.CatalogColumn, new: catalog.CatalogColumn) -> None:
        target = sql.Identifier(self.schema, table)
        where = _qualified(self.schema, table, old.name)
        if old.data_type != new.data_type:
            if not catalog.is_widening(old.data_type, new.data_type):
                self.refuse(
                    table,
                    old.name,
                    f"{where} would change from {old.data_type} to {new.data_type}, which can "
                    f"lose data: keep {old.data_type} (or a wider type) in the contract, or add "
                    f"a new column of type {new.data_type}, backfill it, and drop {old.name} "
                    "by hand",
                )
                return
            if self._views_allow(table, old.name, f"{old.data_type} to {new.data_type}"):
                self.change(
                    table,
                    old.name,
                    f"widen {old.data_type} to {new.data_type}",
                    schema_ddl.alter_type(target, old.name, new.data_type),
                )
        if new.not_null and not old.not_null:
            nulls = catalog.count_rows_where(
                self.cur, self.schema, table, sql.SQL("{} is null").format(sql.Identifier(old.name))
            )
            if nulls:
                self.refuse(
                    table,
                    old.name,
                    f"{where} becomes NOT NULL but {nulls} rows hold null there: reprocess "
                    "the history first (with not_null left out), then add not_null",
                )
                return
            self.change(table, old.name, "set not null", schema_ddl.set_not_null(target, old.name))
        elif old.not_null and not new.not_null:
            self.change(
                table, old.name, "drop not null", schema_ddl.drop_not_null(target, old.name)
            )

    def _views_allow(self, table: str, column: str, change: str) -> bool:
        """PostgreSQL cannot change the type of a column a view reads: this project's
        views are dropped first (dbt builds them again after the upgrade); another view
        is not ours to drop."""
        views = catalog.dependent_views(self.cur, self.schema, table, column)
        foreign = [v for v in views if v[0] != self.schema or v[1] not in self.managed_views]
        if foreign:
            self.refuse(
                table,
                column,
                f"view {_qualified(*foreign[0])} reads {_qualified(self.schema, table, column)}, "
                f"whose type changes from {change}: drop that view, run `etl init`, then "
                "create it again",
            )
            return False
        self.dropped_views += [v for v in views if v not in self.dropped_views]
        return True

    def _checks_dropped(self, table: str, actual: CatalogTable, normal: CatalogTable) -> None:
        target = sql.Identifier(self.schema, table)
        for name, definition in actual.checks.items():
            if normal.checks.get(name) != definition:
                self.change(
                    table,
                    None,
                    f"drop check {name}" + (" (changed)" if name in normal.checks else ""),
                    schema_ddl.drop_constraint(target, name),
                )

    def _checks_added(self, wanted, actual, normal, new_columns: list[Column]) -> None:
        table, target = wanted.name, sql.Identifier(self.schema, wanted.name)
        expressions = {c.name: c.expression for c in wanted.contract.checks}
        for name, definition in normal.checks.items():
            if actual.checks.get(name) == definition:
                continue
            expression = expressions[name]
            breaking = catalog.count_rows_where(
                self.cur,
                self.schema,
                table,
                sql.SQL("not ({})").format(sql.SQL(expression)),
                also=[(c, normal.columns[c.name].data_type) for c in new_columns],
            )
            if breaking:
                self.refuse(
                    table,
                    None,
                    f"{breaking} rows of {_qualified(self.schema, table)} break the check "
                    f"{name} ({expression}): reprocess the history without it first, then "
                    "add it",
                )
                continue
            self.change(
                table,
                None,
                f"add check {name}",
                schema_ddl.add_check(target, name, expression),
            )

    def _indexes(self, table: str, actual: CatalogTable, normal: CatalogTable) -> None:
        for name, definition in normal.indexes.items():
            if actual.indexes.get(name) == definition:
                continue
            statements = [schema_ddl.create_index(self.schema, table, name, definition)]
            if name in actual.indexes:
                statements.insert(0, schema_ddl.drop_index(self.schema, name))
            self.change(table, None, f"index {name} {definition}", *statements)

    def _options(self, table: str, wanted: WantedTable, actual: CatalogTable) -> None:
        have = next((o for o in actual.options if o.startswith("fillfactor=")), None)
        want = f"fillfactor={wanted.fillfactor}" if wanted.fillfactor else None
        if have != want:
            self.change(
                table,
                None,
                want or "default fillfactor",
                schema_ddl.set_fillfactor(sql.Identifier(self.schema, table), wanted.fillfactor),
            )


def plan(
    cur,
    schema: str,
    wanted: list[WantedTable],
    *,
    managed_views: frozenset[str] = frozenset(),
    other_known: frozenset[str] = frozenset(),
) -> SchemaPlan:
    """What bringing ``schema``'s tables to ``wanted`` takes. Reads the catalog and counts
    rows; creates and drops its temporary copies of the wanted tables, nothing else.

    ``managed_views`` are the views dbt builds in ``schema`` (they may be dropped and
    built again); ``other_known`` the tables besides ``wanted`` that are not strays."""
    names = [w.name for w in wanted]
    actual = catalog.read_tables(cur, schema, names)
    for table in wanted:
        for statement in table.create("pg_temp"):
            cur.execute(statement)
    normal = catalog.read_tables(cur, catalog.temporary_schema(cur), names) if wanted else {}
    for table in wanted:
        cur.execute(sql.SQL("drop table {}").format(sql.Identifier("pg_temp", table.name)))
    planner = _Planner(cur, schema, managed_views, SchemaPlan(schema))
    for table in wanted:
        if table.name in actual:
            planner.table(table, actual[table.name], normal[table.name])
        else:
            planner.change(table.name, None, "create table", *table.create(schema))
    if planner.dropped_views:
        planner.plan.changes.insert(
            0,
            Change(
                "",
                None,
                "drop the views that read a widened column (dbt builds them again)",
                (schema_ddl.drop_views(planner.dropped_views),),
            ),
        )
    if not catalog.schema_exists(cur, schema):
        planner.plan.changes.insert(
            0, Change("", None, "create schema", (schema_ddl.create_schema(schema),))
        )
    planner.plan.notes += [
        f"{_qualified(schema, t)} is no longer a mart of the project: it is left as it is "
        "(drop it by hand once nothing reads it)"
        for t in catalog.other_tables(cur, schema, [*names, *other_known])
    ]
    return planner.plan
