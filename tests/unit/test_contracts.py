"""Contracts read from model YAML: what is accepted, and what is refused before any SQL."""

from __future__ import annotations

import pytest
import yaml

from dbt_project.contract.ownership import marts
from dbt_project.contract.tables import NightOwns, contract, load_contracts, normalise_type
from dbt_project.errors import StageError
from dbt_project.facts.names import MARTS


def write_models(root, *models) -> None:
    folder = root / "models" / "marts"
    folder.mkdir(parents=True)
    (folder / "_marts__models.yml").write_text(yaml.safe_dump({"version": 2, "models": models}))


def model(**changes) -> dict:
    base = {
        "name": "sales",
        "columns": [
            {"name": "sales_date", "data_type": "DATE", "constraints": [{"type": "primary_key"}]},
            {"name": "region", "data_type": "text", "constraints": [{"type": "not_null"}]},
            {"name": "amount", "data_type": "Numeric(14, 2)"},
        ],
        "constraints": [{"type": "check", "name": "amount_ok", "expression": "amount >= 0"}],
        "config": {"meta": {"night_owns": {"days": "sales_date"}}},
    }
    base.update(changes)
    return base


def test_a_contract_is_read_with_its_key_not_nulls_checks_and_normalised_types(tmp_path):
    write_models(tmp_path, model())
    table = load_contracts(tmp_path)["sales"]
    assert table.primary_key == ("sales_date",)
    assert [(c.name, c.data_type, c.not_null) for c in table.columns] == [
        ("sales_date", "date", False),
        ("region", "text", True),
        ("amount", "numeric(14,2)", False),
    ]
    assert [(c.name, c.expression) for c in table.checks] == [("amount_ok", "amount >= 0")]
    assert table.as_manifest()["primary_key"] == ["sales_date"]
    assert table.night_owns == NightOwns("days", "sales_date")


def test_a_model_level_primary_key_wins(tmp_path):
    write_models(
        tmp_path,
        model(
            name="daily", constraints=[{"type": "primary_key", "columns": ["sales_date", "region"]}]
        ),
    )
    assert load_contracts(tmp_path)["daily"].primary_key == ("sales_date", "region")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"columns": [{"name": "x", "data_type": "int"}], "constraints": []},
            "declares no primary key",
        ),
        (
            {"columns": [{"name": "x; drop table t", "data_type": "text"}]},
            "unusable column",
        ),
        ({"columns": [{"name": "x", "data_type": "text); drop table t; --"}]}, "unusable column"),
        (
            {"columns": [{"name": "x", "data_type": "int", "constraints": [{"type": "unique"}]}]},
            "a constraint other than not_null or primary_key",
        ),
        (
            {"constraints": [{"type": "check", "expression": "x > 0"}]},
            "every check constraint needs a name",
        ),
        ({"constraints": [{"type": "foreign_key"}]}, "unsupported constraint 'foreign_key'"),
        ({"config": {}}, "does not say which keys a night owns"),
        ({"config": {"meta": {"night_owns": {"weeks": "sales_date"}}}}, "night_owns must be"),
        ({"config": {"meta": {"night_owns": {"days": "region"}}}}, "not a date column"),
        ({"config": {"meta": {"night_owns": {"customers": "amount"}}}}, "not a bigint column"),
        (
            {
                "columns": [
                    {
                        "name": "sales_date",
                        "data_type": "date",
                        "constraints": [{"type": "primary_key"}],
                    },
                    {"name": "n", "data_type": "bigint", "config": {"meta": {"default": [1]}}},
                ]
            },
            "has a default that is not a single value",
        ),
    ],
)
def test_a_contract_that_sql_could_not_safely_use_is_refused(tmp_path, changes, message):
    write_models(tmp_path, model(**changes))
    with pytest.raises(ValueError, match=message):
        load_contracts(tmp_path)


def test_the_project_declares_a_keyed_contract_for_each_mart():
    for name in MARTS:
        table = contract(name)
        assert table.primary_key and set(table.primary_key) <= set(table.column_names)


def test_the_marts_the_cdk_app_names_are_the_marts_of_the_models_yaml():
    # facts.names.MARTS is what the dashboard draws; the data path reads the YAML
    assert marts() == MARTS


def test_a_default_for_the_rows_already_loaded_is_read_as_text(tmp_path):
    columns = [
        *model()["columns"],
        {"name": "lines", "data_type": "bigint", "config": {"meta": {"default": 0}}},
    ]
    write_models(tmp_path, model(columns=columns))
    assert load_contracts(tmp_path)["sales"].columns[-1].default == "0"


def test_a_table_outside_the_contract_is_a_stage_error():
    with pytest.raises(StageError, match="'orders' is not part of the analytics contract"):
        contract("orders")


def test_type_spelling_is_normalised():
    assert normalise_type("  NUMERIC(12, 2) ") == "numeric(12,2)"
    assert normalise_type("timestamp   with time zone") == "timestamp with time zone"
