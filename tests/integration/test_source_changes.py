"""The source changes under the models: a new column changes nothing; a column a model
reads, dropped or renamed, stops the night before anything is built or unloaded, in
one line naming the model and the column."""

from __future__ import annotations

from datetime import date

import pytest

from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import SourceColumnsChanged
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.source_schema import create_source_tables
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests import reference
from tests.datagen import Shop
from tests.pipeline_helpers import as_extract_login, snapshot

FIRST = date(2026, 5, 1)
LAST = date(2026, 5, 8)


@pytest.fixture(scope="module")
def shop(module_database, tmp_path_factory):
    source, target = module_database("src"), module_database("tgt")
    conn = connect(source)
    with conn:
        create_source_tables(conn)
    Shop(conn, seed=20261125).history(FIRST, LAST)
    conn.close()
    parts = Pipeline(
        dbt=DbtProject(),
        source=Database.from_settings(source),
        analytics=Database.from_settings(target),
        stage=LocalStage(tmp_path_factory.mktemp("stage")),
    )
    parts.init()
    # The source side of a night runs as etl_extract; the tests change the source as its
    # administrator.
    parts.source = Database.from_settings(as_extract_login(source))
    return source, target, parts


def _alter(settings, statement: str) -> None:
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def _nightly_relations(settings) -> list[tuple]:
    """The relations dbt built, by name and identity: a rebuild would replace them."""
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            "select relname, oid::bigint from pg_class "
            "where relnamespace = 'nightly'::regnamespace order by 1"
        )
        found = cur.fetchall()
    conn.close()
    return found


def test_a_new_source_column_changes_nothing(shop):
    source, target, parts = shop
    _alter(source, "alter table public.orders add column channel text not null default 'web'")
    night = parts.run_night(NightRequest(LAST, lookback_days=(LAST - FIRST).days + 1))
    assert night.tests is not None and night.tests.passed
    expected = reference.marts(reference.fetch_source(source), as_of=LAST)
    assert reference.read_marts(target) == expected


@pytest.mark.parametrize(
    ("change", "undo", "message"),
    [
        (
            "alter table public.orders rename column status to order_status",
            "alter table public.orders rename column order_status to status",
            "model stg_shop__orders reads column status of public.orders, which the source "
            "no longer has (dropped or renamed)",
        ),
        (
            "alter table public.order_items drop column unit_price cascade",
            None,
            "model stg_shop__order_items reads column unit_price of public.order_items",
        ),
    ],
    ids=["renamed", "dropped"],
)
def test_a_column_a_model_reads_gone_stops_the_night_in_one_line(
    shop, capsys, change, undo, message
):
    source, target, parts = shop
    _alter(source, change)
    day = LAST.replace(day=LAST.day + 1)
    before, built = snapshot(target), _nightly_relations(source)
    try:
        # when the next night runs
        code = main(
            ["run", "--date", day.isoformat(), "--source-url", parts.source.settings.url]
            + ["--analytics-url", target.url, "--stage", str(parts.stage.root)]
        )
        err = capsys.readouterr().err
        # then it stops in one line naming the model and the column, and nothing was
        # built (the nightly schema's views are as they were) or unloaded or loaded
        assert code == SourceColumnsChanged.exit_code
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
        assert _nightly_relations(source) == built
        assert parts.stage.list(f"etl-data/{day.isoformat()}/") == []
        assert snapshot(target) == before
    finally:
        if undo:
            _alter(source, undo)
