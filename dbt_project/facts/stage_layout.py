"""Where a night's files sit in the stage: one definition for the extract, the load,
the CLI, the Lambda event parser and the CDK app (bucket lifecycle, event filter, IAM).

Imports nothing from the rest of the package, so ``infra/`` can read it without
pulling in dbt, psycopg2 or boto3.
"""

from __future__ import annotations

from datetime import date

# Every staged object lives under this prefix; lifecycle rules and IAM grants name it.
DATA_PREFIX = "etl-data/"
# Written last: its arrival (and only its) starts the load.
MANIFEST_NAME = "_manifest.json"
# dbt's artifacts of the night (run_results.json, manifest.json), beside its files.
DBT_ARTIFACTS_FOLDER = "_dbt/"


def day_prefix(run_date: date) -> str:
    return f"{DATA_PREFIX}{run_date.isoformat()}/"


def manifest_key(run_date: date) -> str:
    return day_prefix(run_date) + MANIFEST_NAME


# The lineage site published after each loaded night; outside etl-data/, so it does
# not expire with the stage files.
DOCS_PREFIX = "docs/"
DOCS_KEY = DOCS_PREFIX + "index.html"
# The run history beside it: the last nights, failures first.
RUNS_PAGE_KEY = DOCS_PREFIX + "runs.html"
DOCS_PAGES = (DOCS_KEY, RUNS_PAGE_KEY)
