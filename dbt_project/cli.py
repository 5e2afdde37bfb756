"""The ``etl`` command: the same pipeline functions the Lambda handlers call."""

from __future__ import annotations

import argparse
import json
import sys

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError

from . import cli_options
from .business_calendar import (
    MAX_BACKFILL_DAYS_LAMBDA,
    check_lookback,
    check_run_date,
    date_range,
    parse_date,
    previous_business_day,
    utc_now,
)
from .errors import ConfigError, EtlError, StageError
from .layout import DATA_PREFIX, MANIFEST_NAME
from .settings import Settings


def _database(settings: Settings, url: str | None, flag: str, env: str):
    from .db import Database, PgSettings

    if not url:
        raise ConfigError(
            f"no database given: pass {flag} postgresql://user:pass@host/db or set {env}"
        )
    return Database.from_settings(
        PgSettings.from_url(url),
        limits=settings.limits,
        connect_wait_seconds=settings.connect_wait_seconds,
    )


def _source(args):
    return _database(args.settings, args.source_url, "--source-url", "ETL_SOURCE_URL")


def _target(args):
    return _database(args.settings, args.target_url, "--target-url", "ETL_TARGET_URL")


def _open_stage(args, uri: str | None):
    from .stage import open_stage

    return open_stage(uri, s3_max_attempts=args.settings.s3_max_attempts)


def _stage(args):
    return _open_stage(args, args.stage)


def _night_inputs(args) -> tuple:
    """The checked run date and lookback, before any connection: the Lambda's bounds.

    Without --date, the latest finished business day, as the schedule would run it.
    """
    latest = previous_business_day(utc_now())
    day = check_run_date(parse_date(args.date, "--date"), "--date") if args.date else latest
    return day, check_lookback(args.lookback_days)


def _night_options(args, day) -> dict:
    """The freshness gate guards the latest night, unless skipped; a full refresh owns
    the whole history and needs none."""
    full = getattr(args, "full_refresh", False)
    gate = day == previous_business_day(utc_now()) and not args.skip_freshness and not full
    return {"freshness_gate": gate, "full_refresh": full}


def _dbt(args):
    from .dbt_runner import DbtProject

    return DbtProject(settings=args.settings)


def split_manifest_uri(uri: str) -> tuple[str, str]:
    """``<stage>/etl-data/D/_manifest.json`` -> (stage URI, key)."""
    marker = uri.rfind(DATA_PREFIX)
    if marker < 0 or not uri.endswith(MANIFEST_NAME):
        raise ConfigError(
            f"{uri!r} is not a manifest: give the path or s3:// URI ending in "
            f"{DATA_PREFIX}YYYY-MM-DD/{MANIFEST_NAME}"
        )
    return uri[:marker] or ".", uri[marker:]


def _sample_end_date(args):
    from .business_calendar import parse_date

    return parse_date(args.sample_end_date, "--sample-end-date") if args.sample_end_date else None


def cmd_dev_db(args) -> int:
    from . import devdb

    if args.action == "stop":
        stopped = devdb.stop(args.settings)
        print("local PostgreSQL stopped" if stopped else "the local PostgreSQL was not running")
        return 0
    result = devdb.prepare(args.settings, sample_end_date=_sample_end_date(args))
    inserted = ", ".join(f"{table} +{count}" for table, count in result.inserted.items())
    print(f"source database ready: {result.source.display} ({inserted})")
    print(f"analytics database:    {result.target.display}")
    if not result.server.embedded:
        print("an external server is in use: point dbt at it with")
        for key, value in result.source.dbt_env().items():
            if not key.startswith("DBT_ENV_SECRET"):
                print(f"  export {key}={value}")
    print("next: dbt build")
    return 0


def cmd_init(args) -> int:
    from .business_calendar import business_date, utc_now
    from .pipeline import init

    result = init(
        source=_source(args),
        target=_target(args),
        dbt=_dbt(args),
        sample_data=args.sample_data,
        sample_end_date=_sample_end_date(args) or business_date(utc_now()),
    )
    if result.sample_rows is not None:
        print("sample data: " + ", ".join(f"{t} +{n}" for t, n in result.sample_rows.items()))
    if result.sample_note:
        print(result.sample_note)
    print(
        f"source tables ready; analytics tables, ledger, roles and {result.views_built} views ready"
    )
    return 0


def cmd_extract(args) -> int:
    from .pipeline import extract

    day, lookback_days = _night_inputs(args)
    stage = _stage(args)
    result = extract(
        day,
        source=_source(args),
        stage=stage,
        dbt=_dbt(args),
        lookback_days=lookback_days,
        gzip_level=args.settings.gzip_level,
        **_night_options(args, day),
    )
    print(
        f"{result.run_date}: {result.rows_extracted} rows in {result.seconds:.1f}s; "
        f"manifest {stage.describe(result.manifest_key)}"
    )
    return 0


def cmd_load(args) -> int:
    from .pipeline import load, raise_for_analytics, test_analytics

    stage_uri, key = split_manifest_uri(args.manifest)
    target = _target(args)
    result = load(target=target, stage=_open_stage(args, stage_uri), manifest=key)
    print(
        f"{result.run_date}: {result.status}, {result.rows_loaded} rows changed "
        f"in {result.seconds:.1f}s"
    )
    if result.status == "loaded" and not args.skip_tests:
        raise_for_analytics(test_analytics(target=target, dbt=_dbt(args), loads=[result]))
    return 0


def cmd_run(args) -> int:
    from . import reports
    from .pipeline import raise_for_analytics, run_night

    day, lookback_days = _night_inputs(args)
    source, target = _source(args), _target(args)
    night = run_night(
        day,
        source=source,
        target=target,
        stage=_stage(args),
        dbt=_dbt(args),
        lookback_days=lookback_days,
        run_tests=not args.skip_tests,
        gzip_level=args.settings.gzip_level,
        **_night_options(args, day),
    )
    print(_night_line(night))
    if night.load.status == "loaded":
        report = reports.build(night.load, night.tests)
        reports.record(target.connection(), report)
        print(json.dumps(report, ensure_ascii=False) if args.json else reports.as_text(report))
    raise_for_analytics(night.tests)
    return 0


def cmd_backfill(args) -> int:
    from rich.progress import Progress

    from .pipeline import backfill, raise_for_analytics

    days = date_range(args.start, args.end, limit=MAX_BACKFILL_DAYS_LAMBDA)
    check_run_date(days[-1], "--end")
    lookback_days = check_lookback(args.lookback_days)
    last = None
    with Progress(transient=True) as progress:
        task = progress.add_task("backfill", total=len(days))
        for night in backfill(
            days[0],
            days[-1],
            source=_source(args),
            target=_target(args),
            stage=_stage(args),
            dbt=_dbt(args),
            lookback_days=lookback_days,
            run_tests=not args.skip_tests,
            gzip_level=args.settings.gzip_level,
        ):
            progress.console.print(_night_line(night), soft_wrap=True, highlight=False)
            progress.advance(task)
            last = night
    raise_for_analytics(last.tests if last else None)
    print(f"backfilled {len(days)} days, {days[0]}..{days[-1]}")
    return 0


def _night_line(night) -> str:
    """One line per night: rows extracted, rows changed per table, seconds, tests."""
    load = night.load
    changes = ", ".join(
        f"{name} +{t.inserted} ~{t.updated} -{t.deleted}" for name, t in load.tables.items()
    )
    tests = ""
    if night.tests is not None:
        tests = "  analytics tests passed" if night.tests.passed else "  ANALYTICS TESTS FAILED"
    return (
        f"{night.run_date}  extracted {night.extract.rows_extracted:>6} rows  {load.status}: "
        f"{changes}  {night.seconds:.1f}s{tests}"
    )


def cmd_docs(args) -> int:
    from .docs import write_docs

    page = write_docs(target=_target(args), dbt=_dbt(args), out=args.out)
    print(f"docs site written: {page.resolve().as_uri()}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.settings)


# name, function, help, options
_COMMANDS = (
    ("demo", cmd_demo, "run the whole pipeline on a local PostgreSQL with the sample data", ()),
    (
        "dev-db",
        cmd_dev_db,
        "start the local PostgreSQL with the sample data, for `dbt build` (or stop it)",
        ("dev_db_action", "sample_end_date"),
    ),
    (
        "init",
        cmd_init,
        "create the source and analytics schemas, ledger, roles and views",
        ("source", "target", "sample_data", "sample_end_date"),
    ),
    (
        "run",
        cmd_run,
        "extract and load one business day",
        ("date", "source", "target", "stage", "window", "skip_tests", "skip_freshness")
        + ("full_refresh", "json"),
    ),
    (
        "extract",
        cmd_extract,
        "build, test and unload one business day to the stage",
        ("date", "source", "stage", "window", "skip_freshness", "full_refresh"),
    ),
    (
        "load",
        cmd_load,
        "load one manifest into the analytics database",
        ("manifest", "target", "skip_tests"),
    ),
    (
        "backfill",
        cmd_backfill,
        "run every business day of a range, in order",
        ("start", "end", "source", "target", "stage", "window", "skip_tests"),
    ),
    ("docs", cmd_docs, "write the lineage site (dbt docs) as one HTML file", ("target", "out")),
)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    options = cli_options.options(settings or Settings.from_env())
    parser = argparse.ArgumentParser(
        prog="etl",
        description="Nightly dbt ETL from the shop database to the analytics database.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, function, help, wanted in _COMMANDS:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=function)
        for option in wanted:
            flags, kwargs = options[option]
            sub.add_argument(*flags, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings.from_env()
    except EtlError as exc:
        print(f"etl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    args = build_parser(settings).parse_args(argv)
    args.settings = settings
    try:
        return args.func(args)
    except EtlError as exc:
        print(f"etl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg2.Error as exc:
        message = " ".join(str(exc).split())
        print(f"etl: database error: {message}", file=sys.stderr)
        return 3
    except (BotoCoreError, ClientError) as exc:
        # The stage still failing after botocore's retries: one line, like the others.
        message = " ".join(str(exc).split())
        print(f"etl: stage error: {message}", file=sys.stderr)
        return StageError.exit_code
    except KeyboardInterrupt:
        print("etl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
