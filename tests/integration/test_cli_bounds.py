"""The CLI's date and lookback bounds: the same as the Lambda's, refused in one line
before any connection, with the databases and the stage left as they were."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dbt_project.cli.main import main
from dbt_project.facts import business_calendar
from dbt_project.facts.stage_layout import manifest_key
from dbt_project.load.load import load_manifest
from dbt_project.postgres.analytics_schema import create_analytics_tables, create_roles
from dbt_project.postgres.connection import connect
from dbt_project.stage import LocalStage
from tests.pipeline_helpers import snapshot, write_night

# 12:00 on 25 November in Tokyo: the last business day that is over is the 24th.
NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
LOADED = date(2026, 11, 20)


@pytest.fixture
def loaded(new_database, tmp_path, monkeypatch):
    """A source, a target with one loaded night, a stage, and the clock at NOW."""
    source, target = new_database("src"), new_database("tgt")
    conn = connect(target)
    with conn:
        create_analytics_tables(conn)
        create_roles(conn, target.dbname)
    conn.close()
    stage = LocalStage(tmp_path / "stage")
    write_night(
        source,
        stage,
        run_date=LOADED,
        extracted_at=datetime(2026, 11, 21, 17, 0, tzinfo=UTC),
        rows={
            "run_window_days": [{"sales_date": LOADED - timedelta(days=1)}, {"sales_date": LOADED}]
        },
    )
    conn = connect(target)
    load_manifest(conn, stage, manifest_key(LOADED))
    conn.close()
    monkeypatch.setattr(business_calendar, "utc_now", lambda: NOW)
    return source, target, stage


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--date", "2026-11-25"], "--date 2026-11-25 is later than 2026-11-24, the last"),
        (["extract", "--date", "2099-01-01"], "--date 2099-01-01 is later than 2026-11-24"),
        (
            ["backfill", "--start", "2026-11-20", "--end", "2026-11-25"],
            "--end 2026-11-25 is later than 2026-11-24",
        ),
        (
            ["backfill", "--start", "2026-09-01", "--full-refresh"],
            "--full-refresh rebuilds the whole history from its first day: drop --start",
        ),
        (["backfill", "--start", "2026-09-01"], "give --start and --end (YYYY-MM-DD), or"),
        (["backfill", "--full-refresh", "--end", "2026-11-25"], "--end 2026-11-25 is later"),
        (
            ["run", "--date", "2026-11-20", "--lookback-days", "401"],
            "lookback_days must be a whole number from 1 to 400, not 401",
        ),
        (
            ["extract", "--date", "2026-11-20", "--lookback-days", "-1"],
            "lookback_days must be a whole number from 1 to 400, not -1",
        ),
        (
            ["backfill", "--start", "2026-11-20", "--end", "2026-11-21", "--budget-minutes", "0"],
            "--budget-minutes must be a number of minutes above 0 and at most 10080, not 0.0",
        ),
    ],
)
def test_a_date_or_lookback_outside_the_bounds_is_one_line_and_changes_nothing(
    loaded, capsys, args, message
):
    source, target, stage = loaded
    before, staged = snapshot(target), stage.list("etl-data/")
    databases = ["--source-url", source.url]
    if args[0] != "extract":  # the only command without a target
        databases += ["--analytics-url", target.url]
    code = main([*args, *databases, "--stage", str(stage.root)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("etl: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(target) == before
    assert stage.list("etl-data/") == staged
