"""``python -m tests.faults [--full] [pytest options]``: the fault-injection suite and its report.

Prints one line per fault (verdict, fault, what was injected, what was checked) after
the run. ``--full`` runs the 60-night soak instead of the quick 8-night one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FULL_SOAK_NIGHTS = "60"


def main(argv: list[str]) -> int:
    args = list(argv)
    if "--full" in args:
        args.remove("--full")
        os.environ["ETL_SOAK_NIGHTS"] = FULL_SOAK_NIGHTS
    os.chdir(Path(__file__).resolve().parents[2])
    # In one process (-n 0): the report is gathered by this process's hooks, and the
    # suite's package fixtures (the nights) are made once.
    return pytest.main(["tests/faults", "-q", "-p", "no:randomly", "-n", "0", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
