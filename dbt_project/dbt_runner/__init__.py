"""dbt in-process, the same way on a laptop and in Lambda: the runner and what a run
came to, its parse cache, the source freshness gate and the lineage site."""

from __future__ import annotations

from dbt_project.dbt_runner.results import (
    DbtRun,
    NodeFailure,
    connection_failed,
    credentials_refused,
    raise_for_failures,
)
from dbt_project.dbt_runner.runner import DbtProject, invoke_dbt, run_vars

__all__ = [
    "DbtProject",
    "DbtRun",
    "NodeFailure",
    "connection_failed",
    "credentials_refused",
    "invoke_dbt",
    "raise_for_failures",
    "run_vars",
]
