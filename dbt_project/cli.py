"""The ``etl`` command."""

from __future__ import annotations

import argparse
import sys

from .errors import EtlError


def _dev_db(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="etl", description="Nightly dbt ETL from the shop database to the analytics database."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser(
        "dev-db",
        help="start (or reuse) the local PostgreSQL and load the sample data, ready for `dbt build`",
    )
    dev.set_defaults(func=_dev_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EtlError as exc:
        print(f"etl: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("etl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
