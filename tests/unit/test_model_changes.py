"""The pure parts of shipping a model change: which marts a change reaches, which type
changes keep every value, and dbt's "column does not exist" as one line."""

from __future__ import annotations

import pytest

from dbt_project.dbt_runner.lineage import ModelFingerprint, changed_marts
from dbt_project.dbt_runner.results import NodeFailure
from dbt_project.errors import SourceColumnsChanged
from dbt_project.extract.source_columns import raise_for_missing_column
from dbt_project.postgres.catalog import is_widening

MARTS = ("customers", "days")
ANCESTORS = {"customers": {"int_days", "stg_orders"}, "days": {"stg_orders"}}


def current(**changed) -> dict[str, ModelFingerprint]:
    models = ("customers", "days", "int_days", "stg_orders")
    return {
        name: ModelFingerprint(name, *changed.get(name, (f"{name}-sql", f"{name}-logic")))
        for name in models
    }


DEPLOYED = {m.name: (m.checksum, m.logic) for m in current().values()}


@pytest.mark.parametrize(
    ("changed", "reasons"),
    [
        ({}, {}),
        ({"days": ("new-sql", "new-logic")}, {"days": "its SQL changed"}),
        (
            {"customers": ("customers-sql", "new-logic")},
            {"customers": "its contract or a macro it uses changed"},
        ),
        ({"int_days": ("x", "y")}, {"customers": "upstream int_days changed"}),
        (
            {"stg_orders": ("x", "y"), "int_days": ("x", "y")},
            {
                "customers": "upstream int_days, stg_orders changed",
                "days": "upstream stg_orders changed",
            },
        ),
    ],
    ids=["nothing", "own-sql", "macro-or-contract", "upstream", "shared-upstream"],
)
def test_a_change_reaches_the_marts_it_feeds(changed, reasons):
    assert changed_marts(DEPLOYED, current(**changed), ANCESTORS, MARTS) == reasons


def test_a_new_mart_is_reprocessed_and_nothing_is_compared_without_a_record():
    deployed = {k: v for k, v in DEPLOYED.items() if k != "days"}
    assert changed_marts(deployed, current(), ANCESTORS, MARTS) == {"days": "it is new"}
    assert changed_marts({}, current(days=("a", "b")), ANCESTORS, MARTS) == {}


@pytest.mark.parametrize(
    ("old", "new", "kept"),
    [
        ("numeric(14,2)", "numeric(16,2)", True),
        ("numeric(14,2)", "numeric(16,4)", True),
        ("numeric(14,2)", "numeric", True),
        ("numeric(14,2)", "numeric(14,3)", False),  # one digit fewer left of the point
        ("numeric(14,2)", "numeric(12,2)", False),
        ("numeric", "numeric(20,2)", False),
        ("character varying(20)", "character varying(40)", True),
        ("character varying(20)", "text", True),
        ("character varying(20)", "character varying(10)", False),
        ("text", "character varying(100)", False),
        ("integer", "bigint", True),
        ("bigint", "integer", False),
        ("bigint", "numeric(19,0)", True),
        ("bigint", "numeric(18,0)", False),
        ("date", "timestamp with time zone", False),
        ("text", "bigint", False),
    ],
)
def test_only_a_type_that_keeps_every_value_is_a_widening(old, new, kept):
    assert is_widening(old, new) is kept


def test_a_column_a_model_met_missing_is_one_line_naming_the_model():
    failure = NodeFailure(
        "model.shop.stg_shop__orders",
        "error",
        'Database Error in model stg_shop__orders column "status" does not exist LINE 5',
    )
    with pytest.raises(SourceColumnsChanged) as raised:
        raise_for_missing_column([NodeFailure("test.shop.x", "fail", "1 row"), failure])
    message = str(raised.value)
    assert message.startswith("model stg_shop__orders reads column status, which its input")
    assert "\n" not in message
    # any other failure is left to the usual message
    raise_for_missing_column([NodeFailure("model.shop.x", "error", "division by zero")])
