"""The ``etl`` command: the same pipeline functions the Lambda handlers call."""

from __future__ import annotations

import argparse
import os
import sys

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError

from .errors import ConfigError, EtlError, StageError


def _env_default(name: str) -> dict:
    value = os.environ.get(name)
    return {"default": value} if value else {}


def _database(url: str | None, flag: str, env: str):
    from .db import PgSettings
    from .pipeline import Database

    if not url:
        raise ConfigError(
            f"no database given: pass {flag} postgresql://user:pass@host/db or set {env}"
        )
    timeout = os.environ.get("ETL_STATEMENT_TIMEOUT_MS")
    return Database.from_settings(
        PgSettings.from_url(url), statement_timeout_ms=int(timeout) if timeout else None
    )


def _source(args):
    return _database(args.source_url, "--source-url", "ETL_SOURCE_URL")


def _target(args):
    return _database(args.target_url, "--target-url", "ETL_TARGET_URL")


def _stage(args):
    from .stage import open_stage

    return open_stage(args.stage)


def _dbt():
    from .dbt_runner import DbtProject

    return DbtProject()


def split_manifest_uri(uri: str) -> tuple[str, str]:
    """``<stage>/etl-data/D/_manifest.json`` -> (stage URI, key)."""
    from .stage import DATA_PREFIX

    marker = uri.rfind(DATA_PREFIX)
    if marker < 0 or not uri.endswith("_manifest.json"):
        raise ConfigError(
            f"{uri!r} is not a manifest: give the path or s3:// URI ending in "
            f"{DATA_PREFIX}YYYY-MM-DD/_manifest.json"
        )
    return uri[:marker] or ".", uri[marker:]


def cmd_dev_db(args) -> int:
    from . import devdb

    result = devdb.prepare()
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
    from .pipeline import init

    result = init(
        source=_source(args), target=_target(args), dbt=_dbt(), sample_data=args.sample_data
    )
    if result.sample_rows is not None:
        print("sample data: " + ", ".join(f"{t} +{n}" for t, n in result.sample_rows.items()))
    print(
        f"source tables ready; analytics tables, ledger, roles and {result.views_built} views ready"
    )
    return 0


def cmd_extract(args) -> int:
    from .pipeline import extract

    stage = _stage(args)
    result = extract(
        args.date, source=_source(args), stage=stage, dbt=_dbt(), lookback_days=args.lookback_days
    )
    print(
        f"{result.run_date}: {result.rows_extracted} rows in {result.seconds:.1f}s; "
        f"manifest {stage.describe(result.manifest_key)}"
    )
    return 0


def cmd_load(args) -> int:
    from .pipeline import load, raise_for_analytics, test_analytics
    from .stage import open_stage

    stage_uri, key = split_manifest_uri(args.manifest)
    target = _target(args)
    result = load(target=target, stage=open_stage(stage_uri), manifest=key)
    print(
        f"{result.run_date}: {result.status}, {result.rows_loaded} rows changed "
        f"in {result.seconds:.1f}s"
    )
    if result.status == "loaded" and not args.skip_tests:
        raise_for_analytics(test_analytics(target=target, dbt=_dbt()))
    return 0


def cmd_run(args) -> int:
    from .pipeline import raise_for_analytics, run_night

    night = run_night(
        args.date,
        source=_source(args),
        target=_target(args),
        stage=_stage(args),
        dbt=_dbt(),
        lookback_days=args.lookback_days,
        run_tests=not args.skip_tests,
    )
    print(_night_line(night))
    raise_for_analytics(night.tests)
    return 0


def cmd_backfill(args) -> int:
    from rich.progress import Progress

    from .pipeline import backfill, date_range, raise_for_analytics

    days = date_range(args.start, args.end)
    last = None
    with Progress(transient=True) as progress:
        task = progress.add_task("backfill", total=len(days))
        for night in backfill(
            args.start,
            args.end,
            source=_source(args),
            target=_target(args),
            stage=_stage(args),
            dbt=_dbt(),
            lookback_days=args.lookback_days,
            run_tests=not args.skip_tests,
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


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etl",
        description="Nightly dbt ETL from the shop database to the analytics database.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    def source(sub):
        sub.add_argument(
            "--source-url",
            **_env_default("ETL_SOURCE_URL"),
            help="operational database URL (or ETL_SOURCE_URL)",
        )

    def target(sub):
        sub.add_argument(
            "--target-url",
            **_env_default("ETL_TARGET_URL"),
            help="analytics database URL (or ETL_TARGET_URL)",
        )

    def stage(sub):
        sub.add_argument(
            "--stage",
            **_env_default("ETL_STAGE"),
            help="a folder or s3://bucket/prefix (or ETL_STAGE)",
        )

    def window(sub):
        sub.add_argument(
            "--lookback-days",
            type=int,
            default=2,
            help="business days each night recomputes, run date included (default 2)",
        )

    def tests(sub):
        sub.add_argument(
            "--skip-tests",
            action="store_true",
            help="do not run the analytics-side dbt tests after the load",
        )

    add("demo", cmd_demo, "run the whole pipeline on a local PostgreSQL with the sample data")
    add("dev-db", cmd_dev_db, "start the local PostgreSQL with the sample data, for `dbt build`")
    sub = add("init", cmd_init, "create the source and analytics schemas, ledger, roles and views")
    source(sub), target(sub)
    sub.add_argument(
        "--sample-data",
        action="store_true",
        help="also insert the sample rows that are missing (never overwrites)",
    )
    sub = add("run", cmd_run, "extract and load one business day")
    sub.add_argument("--date", required=True, help="business day, YYYY-MM-DD")
    source(sub), target(sub), stage(sub), window(sub), tests(sub)
    sub = add("extract", cmd_extract, "build, test and unload one business day to the stage")
    sub.add_argument("--date", required=True, help="business day, YYYY-MM-DD")
    source(sub), stage(sub), window(sub)
    sub = add("load", cmd_load, "load one manifest into the analytics database")
    sub.add_argument(
        "--manifest",
        required=True,
        help="path or s3:// URI of an etl-data/YYYY-MM-DD/_manifest.json",
    )
    target(sub), tests(sub)
    sub = add("backfill", cmd_backfill, "run every business day of a range, in order")
    sub.add_argument("--start", required=True, help="first business day, YYYY-MM-DD")
    sub.add_argument("--end", required=True, help="last business day, YYYY-MM-DD")
    source(sub), target(sub), stage(sub), window(sub), tests(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
