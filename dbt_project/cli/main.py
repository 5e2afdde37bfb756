"""The ``etl`` command: the same pipeline the Lambda handlers run, and the laptop's tools."""

from __future__ import annotations

import argparse
import sys

import psycopg2
from botocore.exceptions import BotoCoreError, ClientError

from dbt_project.cli import options as cli_options
from dbt_project.cli.commands import (
    cmd_backfill,
    cmd_ci,
    cmd_demo,
    cmd_dev_db,
    cmd_docs,
    cmd_extract,
    cmd_init,
    cmd_load,
    cmd_plan,
    cmd_run,
    cmd_runs,
)
from dbt_project.errors import EtlError, StageError, brief
from dbt_project.settings import Settings

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
        ("source", "analytics", "sample_data", "sample_end_date"),
    ),
    (
        "plan",
        cmd_plan,
        "show what `etl init` would change in the analytics tables and which marts it would "
        "reprocess; changes nothing",
        ("analytics", "json"),
    ),
    (
        "run",
        cmd_run,
        "extract and load one business day",
        ("date", "source", "analytics", "stage", "window", "skip_tests", "skip_freshness")
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
        ("manifest", "analytics", "skip_tests"),
    ),
    (
        "backfill",
        cmd_backfill,
        "reprocess a range of business days (or the whole history) in windowed chunks",
        ("start", "end", "refresh_all", "budget", "source", "analytics", "stage", "skip_tests"),
    ),
    ("docs", cmd_docs, "write the lineage site (dbt docs) as one HTML file", ("analytics", "out")),
    (
        "ci",
        cmd_ci,
        "build and test only the models changed since the deployed night, and their children",
        ("source", "stage", "dbt_target", "state_key", "json"),
    ),
    (
        "runs",
        cmd_runs,
        "list the last nights' run reports from the analytics database",
        ("analytics", "since", "failed", "limit", "json"),
    ),
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
        sub.set_defaults(func=function, command=name)
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
        print(f"etl: database error: {brief(exc)}", file=sys.stderr)
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
