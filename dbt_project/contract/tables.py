"""The marts' dbt contracts, read from the model YAML: one definition of each table.

The extract checks its files against them, the load refuses a manifest that differs
from them, and ``etl init`` brings the analytics tables to them, so the source
model and the target table cannot drift apart. Each mart also says there which keys a
night owns (``config.meta.night_owns``), so a new mart is SQL and YAML only.
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


# What a night may own of a mart: whole business days (by a date column of the mart),
# or customers (by customer_id). dbt_project/contract/ownership.py turns each into the
# keys the load reads.
OWNED_KINDS = ("days", "customers")


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    not_null: bool = False
    # An SQL literal the rows already loaded get when the column is added to a table
    # that has rows (config.meta.default); a reprocess then restates them.
    default: str | None = None


@dataclass(frozen=True)
class NightOwns:
    """A mart's ``config.meta.night_owns``: ``{days: <date column>}`` or
    ``{customers: customer_id}``."""

    kind: str
    column: str


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
    # None for the load keys (models/load_keys), which are not marts.
    night_owns: NightOwns | None = None

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


def _meta(properties: dict) -> dict:
    """``config.meta`` (dbt 1.10+), or the older top-level ``meta``."""
    config = properties.get("config") or {}
    return {**(properties.get("meta") or {}), **(config.get("meta") or {})}


def _default(name: str, column: dict) -> str | None:
    value = _meta(column).get("default")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"model {name}: column {column['name']!r} has a default that is not a single value"
        )
    return str(value)


def _night_owns(name: str, model: dict, columns: list[Column]) -> NightOwns | None:
    owns = _meta(model).get("night_owns")
    if owns is None:
        return None
    names = [c.name for c in columns]
    if not isinstance(owns, dict) or len(owns) != 1 or next(iter(owns)) not in OWNED_KINDS:
        raise ValueError(
            f"model {name}: night_owns must be {{days: <a date column>}} or "
            f"{{customers: customer_id}}, not {owns!r}"
        )
    kind, column = next(iter(owns.items()))
    wanted = "date" if kind == "days" else "bigint"
    if column not in names or columns[names.index(column)].data_type != wanted:
        raise ValueError(
            f"model {name}: night_owns {kind} names {column!r}, which is not a {wanted} column "
            "of the model"
        )
    if kind == "customers" and column != "customer_id":
        raise ValueError(f"model {name}: a mart owned by customers is keyed by customer_id")
    return NightOwns(kind, column)


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
        columns.append(
            Column(
                column["name"],
                data_type,
                not_null="not_null" in kinds,
                default=_default(name, column),
            )
        )
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
    owns = _night_owns(name, model, columns)
    return TableContract(name, tuple(columns), tuple(primary_key), tuple(checks), owns)


def _model_files(root: Path) -> list[Path]:
    folders = (root / "models" / "marts", root / "models" / "load_keys")
    return sorted(p for folder in folders for p in folder.rglob("*.yml"))


def load_contracts(root: Path | None = None) -> dict[str, TableContract]:
    """Every model under models/marts and models/load_keys, by name, in file order.

    dbt_project.yml enforces contracts on both folders, so each of these models
    declares its columns with data types and a primary key. Read again when a file
    changes, or for another project folder (ETL_DBT_PROJECT_DIR).
    """
    root = (root or current().project_dir).resolve()
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in _model_files(root))
    return _read_contracts(root, stamp)


@cache
def _read_contracts(root: Path, stamp: tuple) -> dict[str, TableContract]:
    contracts: dict[str, TableContract] = {}
    marts = root / "models" / "marts"
    for path in _model_files(root):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for model in document.get("models", []) or []:
            table = _model_contract(model)
            if path.is_relative_to(marts) and table.night_owns is None:
                raise ValueError(
                    f"model {table.name} ({path.name}) does not say which keys a night owns: "
                    "add config: {meta: {night_owns: {days: <its date column>}}} "
                    "(or {customers: customer_id})"
                )
            contracts[model["name"]] = table
    return contracts


def contract(name: str) -> TableContract:
    contracts = load_contracts()
    if name not in contracts:
        raise StageError(
            f"table {name!r} is not part of the analytics contract "
            f"({', '.join(sorted(contracts))}); the manifest is not one this project wrote"
        )
    return contracts[name]
