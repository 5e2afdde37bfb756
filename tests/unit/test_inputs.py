"""What a user types or deploys, parsed without a database: URLs, dates, dbt vars,
manifest URIs and environment settings. Each bad value names itself and the fix."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from dbt_project.cli.commands import split_manifest_uri
from dbt_project.cli.main import build_parser, main
from dbt_project.dbt_runner.runner import run_vars
from dbt_project.errors import MESSAGE_LIMIT, ConfigError, brief
from dbt_project.facts.business_calendar import previous_business_day
from dbt_project.postgres.connection import PgSettings, redact
from dbt_project.request import (
    check_budget,
    check_lookback,
    check_run_date,
    date_range,
    parse_date,
)
from dbt_project.settings import LAMBDA_WORK_DIR, Settings


def test_a_url_becomes_settings_and_back():
    settings = PgSettings.from_url(
        "postgresql://etl:p%40ss@db.example:6543/shop?sslmode=verify-full"
    )
    assert settings == PgSettings("db.example", 6543, "shop", "etl", "p@ss", "verify-full")
    assert PgSettings.from_url(settings.url) == settings
    assert settings.display == "etl@db.example:6543/shop"


def test_a_socket_url_keeps_its_directory():
    settings = PgSettings.from_url("postgresql://postgres:@/postgres?host=/run/shop-pg")
    assert (settings.host, settings.port, settings.dbname) == ("/run/shop-pg", 5432, "postgres")
    assert PgSettings.from_url(settings.url).host == "/run/shop-pg"


@pytest.mark.parametrize(
    ("url", "sslmode"),
    [
        ("postgresql://etl@db.example/shop", "verify-full"),
        ("postgresql://etl@10.0.3.17:5432/shop", "verify-full"),
        ("postgresql://etl@127.0.0.1.example/shop", "verify-full"),
        # the escape hatch, for a server that cannot be verified
        ("postgresql://etl@db.example/shop?sslmode=require", "require"),
        # this machine's own servers: the local one has no TLS at all
        ("postgresql://etl@127.0.0.1:54329/shop", "prefer"),
        ("postgresql://etl@localhost/shop", "prefer"),
        ("postgresql://etl@[::1]:5432/shop", "prefer"),
        ("postgresql://postgres:@/postgres?host=/run/shop-pg", "prefer"),
    ],
)
def test_a_url_without_sslmode_checks_any_server_but_this_machine_s(url, sslmode):
    assert PgSettings.from_url(url).sslmode == sslmode


def test_a_url_that_is_not_postgresql_is_refused_without_showing_the_password():
    with pytest.raises(ConfigError, match=r"not a PostgreSQL URL: 'mysql://u:\*\*\*@h/db'"):
        PgSettings.from_url("mysql://u:secret@h/db")
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def test_settings_never_show_the_passwords_in_their_urls():
    settings = Settings.from_env(
        {
            "ETL_SOURCE_URL": "postgresql://shop:s3cr%40t@source.example:5432/shop",
            "ETL_ANALYTICS_URL": "postgresql://etl@analytics.example/db?password=t0ps3cret",
            "ETL_PG_URL": "postgresql://postgres:local-pw@127.0.0.1:54329/postgres",
        }
    )
    shown = repr(settings)
    for secret in ("s3cr", "t0ps3cret", "local-pw"):
        assert secret not in shown and secret not in str(settings)
    assert "source_url='postgresql://shop:***@source.example:5432/shop'" in shown
    assert "analytics_url='postgresql://etl@analytics.example/db?password=***'" in shown
    assert "local_pg_url='postgresql://postgres:***@127.0.0.1:54329/postgres'" in shown
    # the settings themselves keep them, for the connections
    assert settings.source_url.endswith("s3cr%40t@source.example:5432/shop")


@pytest.mark.parametrize("value", ["2026-02-30", "20261125", "2026-11-25; drop", "", "tomorrow"])
def test_a_date_that_is_not_a_calendar_date_is_refused(value):
    with pytest.raises(ConfigError, match="not a real calendar date; use the ISO form"):
        parse_date(value, "run_date")


def test_dates_ranges_and_the_business_day():
    assert parse_date(" 2026-11-25 ") == date(2026, 11, 25)
    assert date_range("2026-11-30", "2026-12-02") == (date(2026, 11, 30), date(2026, 12, 2))
    with pytest.raises(ConfigError, match="ends .* before it starts"):
        date_range("2026-11-02", "2026-11-01")
    # A range has no limit: a plan cuts it into chunks.
    assert date_range("2016-01-01", "2026-12-02")[0] == date(2016, 1, 1)
    assert check_budget(13) == 13.0 and check_budget(0.5) == 0.5
    for bad in (0, -1, True, "13", None, 7 * 24 * 60 + 1):
        with pytest.raises(ConfigError, match="budget_minutes must be a number of minutes"):
            check_budget(bad)
    # 02:00 in Tokyo is 17:00 UTC the day before; it loads the Tokyo day before it.
    assert previous_business_day(datetime(2026, 11, 25, 17, 0, tzinfo=UTC)) == date(2026, 11, 25)
    assert previous_business_day(datetime(2026, 11, 25, 14, 59, tzinfo=UTC)) == date(2026, 11, 24)


def test_a_run_date_is_at_latest_the_previous_business_day_in_tokyo():
    # 23:59 on the 25th in Tokyo: the 24th is the last day that is over
    late = datetime(2026, 11, 25, 14, 59, tzinfo=UTC)
    assert check_run_date(date(2026, 11, 24), now=late) == date(2026, 11, 24)
    with pytest.raises(ConfigError, match="--date 2026-11-25 is later than 2026-11-24, the last"):
        check_run_date(date(2026, 11, 25), "--date", now=late)
    # a minute later it is the 26th in Tokyo, and the 25th is over
    assert check_run_date(date(2026, 11, 25), now=datetime(2026, 11, 25, 15, 0, tzinfo=UTC))


@pytest.mark.parametrize("value", [0, -1, 401, 2.0, "2", True, None])
def test_a_lookback_outside_its_bounds_is_refused(value):
    with pytest.raises(ConfigError, match="lookback_days must be a whole number from 1 to 400"):
        check_lookback(value)


def test_dbt_vars_carry_only_checked_values():
    assert run_vars("2026-11-25", 3) == {"run_date": "2026-11-25", "lookback_days": 3}
    assert run_vars(None) == {}
    with pytest.raises(ConfigError, match="not a real calendar date"):
        run_vars("2026-11-25' or 1=1 --")
    with pytest.raises(ConfigError, match="lookback_days must be a positive whole number"):
        run_vars("2026-11-25", "2")


def test_a_manifest_uri_splits_into_stage_and_key():
    assert split_manifest_uri("s3://bucket/pre/etl-data/2026-11-25/_manifest.json") == (
        "s3://bucket/pre/",
        "etl-data/2026-11-25/_manifest.json",
    )
    assert split_manifest_uri("etl-data/2026-11-25/_manifest.json") == (
        ".",
        "etl-data/2026-11-25/_manifest.json",
    )
    for uri in ("s3://bucket/other/2026-11-25/_manifest.json", "/stage/etl-data/x.tsv.gz"):
        with pytest.raises(ConfigError, match="is not a manifest: give the path"):
            split_manifest_uri(uri)


def test_settings_are_read_from_the_environment_with_their_defaults():
    settings = Settings.from_env({"ETL_DBT_PROJECT_DIR": "/p"})
    assert settings.work_dir == Path("/p/.etl")
    assert (settings.gzip_level, settings.s3_max_attempts, settings.connect_wait_seconds) == (
        1,
        8,
        60.0,
    )
    in_lambda = Settings.from_env(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "extract",
            "ETL_STATEMENT_TIMEOUT_MS": "900000",
            "SOURCE_DB_HOST": "h",
            "SOURCE_DB_NAME": "shop",
            "SOURCE_DB_SECRET_ARN": "arn:secret",
        }
    )
    assert in_lambda.work_dir == LAMBDA_WORK_DIR
    assert in_lambda.statement_timeout_ms == 900_000
    assert in_lambda.endpoint("SOURCE").port == 5432
    with pytest.raises(ConfigError, match="lacks ANALYTICS_DB_SECRET_ARN; redeploy the stack"):
        in_lambda.endpoint("ANALYTICS")
    with pytest.raises(ConfigError, match="lacks S3_BUCKET"):
        in_lambda.require_bucket()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ETL_GZIP_LEVEL", "fast"),
        ("ETL_GZIP_LEVEL", "10"),
        ("ETL_STATEMENT_TIMEOUT_MS", "0"),
        ("ETL_S3_MAX_ATTEMPTS", "many"),
        ("ETL_CONNECT_WAIT_SECONDS", "-1"),
        ("ETL_PG_PORT", "70000"),
    ],
)
def test_a_bad_setting_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"{name}='{value}' is not a"):
        Settings.from_env({name: value})


def test_the_cli_reports_a_bad_setting_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("ETL_GZIP_LEVEL", "fast")
    assert main(["extract", "--date", "2026-11-25"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "etl: error: ETL_GZIP_LEVEL='fast' is not a whole number from 1 to 9; fix or unset it\n"
    )


def test_the_analytics_url_keeps_its_earlier_names():
    """--target-url and ETL_TARGET_URL, the names before "target" was left to dbt's
    targets, still give the analytics database (the new names win)."""
    old = Settings.from_env({"ETL_TARGET_URL": "postgresql://a@old/analytics"})
    assert old.analytics_url == "postgresql://a@old/analytics"
    both = Settings.from_env(
        {"ETL_TARGET_URL": "postgresql://a@old/x", "ETL_ANALYTICS_URL": "postgresql://a@new/x"}
    )
    assert both.analytics_url == "postgresql://a@new/x"
    args = build_parser(old).parse_args(["docs", "--target-url", "postgresql://a@flag/x"])
    assert args.analytics_url == "postgresql://a@flag/x"


def test_a_long_database_message_is_cut_to_one_short_line():
    quoted = 'invalid input syntax for type bigint: "' + "x" * 100_000_000 + '"'
    assert brief(quoted) == quoted[: MESSAGE_LIMIT - 1] + "…"
    assert brief("ERROR:  duplicate key\nDETAIL:  Key (id)=(1)") == (
        "ERROR: duplicate key DETAIL: Key (id)=(1)"
    )
