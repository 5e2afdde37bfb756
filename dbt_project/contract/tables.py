"""The marts' dbt contracts, read from the model YAML: one definition of each table.

The extract checks its files against them, the load refuses a manifest that differs
from them, and ``etl init`` creates the analytics tables from them, so the source
model and the target table cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from psycopg2 import sql

from dbt_project.errors import StageError
from dbt_project.settings import current

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TYPE = re.compile(r"^[a-z][a-z0-9 ]*(\(\d+(,\s*\d+)?\))?$")


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    not_null: bool = False


@dataclass(frozen=True)
class Check:
    name: str
    expression: str


@dataclass(frozen=True)
class TableContract:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    checks: tuple[Check, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def as_manifest(self) -> dict:
        return {
            "columns": [{"name": c.name, "type": c.data_type} for c in self.columns],
            "primary_key": list(self.primary_key),
        }

    def definitions(self, extra_columns: tuple[tuple[str, str], ...] = ()) -> sql.Composed:
        """Columns and constraints, as dbt builds them on the source side, plus
        ``extra_columns`` (name, definition) that only the analytics table has."""
        parts = [
            sql.SQL(
                "{} {} not null" if c.not_null or c.name in self.primary_key else "{} {}"
            ).format(sql.Identifier(c.name), sql.SQL(c.data_type))
            for c in self.columns
        ]
        parts += [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(definition))
            for name, definition in extra_columns
        ]
        parts.append(
            sql.SQL("primary key ({})").format(
                sql.SQL(", ").join(sql.Identifier(k) for k in self.primary_key)
            )
        )
        parts += [
            # The expressions come from this project's own model YAML.
            sql.SQL("constraint {} check ({})").format(
                sql.Identifier(c.name), sql.SQL(c.expression)
            )
            for c in self.checks
        ]
        return sql.SQL(", ").join(parts)

    def create_table_sql(
        self,
        schema: str,
        extra_columns: tuple[tuple[str, str], ...] = (),
        fillfactor: int | None = None,
    ) -> sql.Composed:
        options = sql.SQL("")
        if fillfactor is not None:
            options = sql.SQL(" with (fillfactor = {})").format(sql.Literal(int(fillfactor)))
        return sql.SQL("create table if not exists {} ({}){}").format(
            sql.Identifier(schema, self.name), self.definitions(extra_columns), options
        )


def normalise_type(data_type: str) -> str:
    return re.sub(r"\s+", " ", data_type.strip().lower()).replace(", ", ",")


def _model_contract(model: dict) -> TableContract:
    name = model["name"]
    columns = []
    primary_key: list[str] = []
    checks: list[Check] = []
    for column in model.get("columns", []):
        data_type = normalise_type(str(column["data_type"]))
        if not _IDENTIFIER.match(column["name"]) or not _TYPE.match(data_type):
            raise ValueError(f"model {name}: unusable column {column['name']!r} {data_type!r}")
        kinds = {c.get("type") for c in column.get("constraints", []) or []}
        columns.append(Column(column["name"], data_type, not_null="not_null" in kinds))
        if "primary_key" in kinds:
            primary_key.append(column["name"])
        if kinds - {"primary_key", "not_null"}:
            raise ValueError(
                f"model {name}: column {column['name']!r} has a constraint other than "
                "not_null or primary_key; declare checks at the model level, with a name"
            )
    for constraint in model.get("constraints", []) or []:
        if constraint.get("type") == "primary_key":
            primary_key = list(constraint["columns"])
        elif constraint.get("type") == "check":
            if not _IDENTIFIER.match(str(constraint.get("name", ""))):
                raise ValueError(f"model {name}: every check constraint needs a name")
            checks.append(Check(constraint["name"], str(constraint["expression"])))
        else:
            raise ValueError(f"model {name}: unsupported constraint {constraint.get('type')!r}")
    if not primary_key:
        raise ValueError(f"model {name}: the contract declares no primary key")
    return TableContract(name, tuple(columns), tuple(primary_key), tuple(checks))


@cache
def load_contracts(root: Path | None = None) -> dict[str, TableContract]:
    """Every model under models/marts and models/load_keys, by name.

    dbt_project.yml enforces contracts on both folders, so each of these models
    declares its columns with data types and a primary key.
    """
    root = root or current().project_dir
    contracts: dict[str, TableContract] = {}
    model_folders = (root / "models" / "marts", root / "models" / "load_keys")
    for path in sorted(p for folder in model_folders for p in folder.rglob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for model in document.get("models", []) or []:
            contracts[model["name"]] = _model_contract(model)
    return contracts


def contract(name: str) -> TableContract:
    contracts = load_contracts()
    if name not in contracts:
        raise StageError(
            f"table {name!r} is not part of the analytics contract "
            f"({', '.join(sorted(contracts))}); the manifest is not one this project wrote"
        )
    return contracts[name]
