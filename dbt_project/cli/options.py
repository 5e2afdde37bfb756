"""The `etl` command's options, by name: what each one is and its default."""

from __future__ import annotations

from dbt_project.facts.business_calendar import DEFAULT_LOOKBACK_DAYS
from dbt_project.facts.stage_layout import DATA_PREFIX, MANIFEST_NAME
from dbt_project.request import DEFAULT_BUDGET_MINUTES
from dbt_project.settings import Settings


def _flag(name: str, help: str) -> tuple:
    return (name,), {"action": "store_true", "help": help}


def _default(value: str | None) -> dict:
    return {"default": value} if value else {}


def _connections(settings: Settings) -> dict:
    return {
        "source": (
            ("--source-url",),
            {
                **_default(settings.source_url),
                "help": "operational database URL (or ETL_SOURCE_URL)",
            },
        ),
        "analytics": (
            # --target-url: the name before the word "target" was left to dbt's targets.
            ("--analytics-url", "--target-url"),
            {
                **_default(settings.analytics_url),
                "dest": "analytics_url",
                "help": "analytics database URL (or ETL_ANALYTICS_URL)",
            },
        ),
        "stage": (
            ("--stage",),
            {**_default(settings.stage), "help": "a folder or s3://bucket/prefix (or ETL_STAGE)"},
        ),
    }


_DAYS = {
    "date": (
        ("--date",),
        {"help": "business day, YYYY-MM-DD (default: the latest finished one, as scheduled)"},
    ),
    "start": (("--start",), {"help": "first business day, YYYY-MM-DD"}),
    "end": (
        ("--end",),
        {"help": "last business day, YYYY-MM-DD (with --full-refresh: default the latest)"},
    ),
    "budget": (
        ("--budget-minutes",),
        {
            "type": float,
            "default": DEFAULT_BUDGET_MINUTES,
            "help": "what one chunk may take, by the cost model's estimate "
            f"(default {DEFAULT_BUDGET_MINUTES:g}, as on Lambda)",
        },
    ),
    "window": (
        ("--lookback-days",),
        {
            "type": int,
            "default": DEFAULT_LOOKBACK_DAYS,
            "help": "business days each night recomputes, run date included "
            f"(default {DEFAULT_LOOKBACK_DAYS})",
        },
    ),
}

_NIGHT = {
    "skip_tests": _flag("--skip-tests", "do not run the analytics-side dbt tests after the load"),
    "skip_freshness": _flag(
        "--skip-freshness", "run the latest night even if the source looks stale"
    ),
    "full_refresh": _flag(
        "--full-refresh",
        "rebuild the incremental state from the whole history and re-state every day and "
        "customer (deleting what the history no longer has)",
    ),
    "refresh_all": (
        ("--full-refresh",),
        {
            "action": "store_true",
            "dest": "full_refresh",
            "help": "rebuild the whole history from its first day, in chunks, deleting what "
            "the history no longer has (instead of --start)",
        },
    ),
    "json": _flag("--json", "print one JSON document on stdout (human lines go to stderr)"),
    "since": (("--since",), {"metavar": "YYYY-MM-DD", "help": "only nights from this day on"}),
    "failed": _flag("--failed", "only nights whose load or analytics tests failed"),
    "limit": (
        ("--limit",),
        {"type": int, "default": 30, "help": "at most this many nights (default 30)"},
    ),
    "manifest": (
        ("--manifest",),
        {
            "required": True,
            "help": f"path or s3:// URI of an {DATA_PREFIX}YYYY-MM-DD/{MANIFEST_NAME}",
        },
    ),
}

_SETUP = {
    "sample_data": _flag(
        "--sample-data", "also load the sample rows, if the source tables are all empty"
    ),
    "sample_end_date": (
        ("--sample-end-date",),
        {
            "metavar": "YYYY-MM-DD",
            "help": "the day the sample history ends on (default: today, Asia/Tokyo)",
        },
    ),
    "dev_db_action": (
        ("action",),
        {
            "nargs": "?",
            "choices": ("start", "stop"),
            "default": "start",
            "help": "start (or reuse) the local server, or stop it (default: start)",
        },
    ),
    "dbt_target": (
        ("--dbt-target",),
        {"default": "dev", "help": "the dbt target to build in (default dev: the dev schema)"},
    ),
    "state_key": (
        ("--state-key",),
        {
            "metavar": "KEY",
            "help": "the deployed dbt manifest to compare with "
            "(default: the newest etl-data/<day>/_dbt/manifest.json in the stage)",
        },
    ),
    "out": (("--out",), {"help": "where to write the page (default .etl/docs/index.html)"}),
}


def options(settings: Settings) -> dict:
    """Each option by name: the arguments of ``add_argument``."""
    return {**_connections(settings), **_DAYS, **_NIGHT, **_SETUP}
