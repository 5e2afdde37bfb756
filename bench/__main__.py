"""``python -m bench``: the quick suite (under 5 minutes on 2 cores); ``--full``: large sizes."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime

from .report import table
from .suite import CASES, DEFAULT_CASES, FULL, QUICK, run


def _machine() -> str:
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return (
        f"{os.cpu_count()} cores{memory}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", help="large sizes (1M and 4M rows)")
    parser.add_argument(
        "--case",
        action="append",
        choices=CASES,
        help="run only this case (repeatable); default: all but reprocess",
    )
    parser.add_argument(
        "--details", action="store_true", help="also list the slowest dbt nodes of the dbt rows"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any target is missed")
    args = parser.parse_args(argv)
    sizes = FULL if args.full else QUICK
    cases = tuple(args.case) if args.case else DEFAULT_CASES
    server = "ETL_PG_URL" if os.environ.get("ETL_PG_URL") else "embedded PostgreSQL"
    started = time.perf_counter()
    load_before = os.getloadavg()[0]

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    rows = run(sizes, cases=cases, progress=progress)
    command = "python -m bench" + (" --full" if args.full else "")
    print(
        f"{command} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {_machine()} — {server} — "
        f"{time.perf_counter() - started:.0f} s in all — load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    print()
    print(table(rows))
    print()
    print(
        "ratio: load and unload, the project's rows/s ÷ that reference's; memory, the larger "
        "size's peak ÷ the smaller's; history, 300-day seconds ÷ 30-day seconds; dbt, ÷ cold; "
        "night, 300-day ÷ 60-day; tests and queries, 1M customers ÷ 250k; cold, cold ÷ warm; "
        "reprocess, night by night ÷ in chunks (backfill), in chunks ÷ whole (history load)."
    )
    if args.details:
        for row in rows:
            if row.details:
                print(f"\n{row.case}: slowest nodes")
                print("\n".join("    " + line for line in row.details))
        print()
    misses = [row.case for row in rows if row.passed is False]
    print(f"{len(misses)} target(s) missed" + (": " + "; ".join(misses) if misses else ""))
    return 1 if args.strict and misses else 0


if __name__ == "__main__":
    sys.exit(main())
