"""Slim CI for model changes: build and test only what a change touches.

The extract stages dbt's manifest of every night (``etl-data/<day>/_dbt/manifest.json``):
the project as deployed. Against it, ``dbt build --select state:modified+ --defer``
builds the models whose SQL or config differ, and everything downstream of them, in a
development database; every model it does not build is read where the deployed night
built it. A pull request then costs what it changed, not the whole project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dbt_project.dbt_runner.runner import DbtProject, DbtRun
from dbt_project.errors import StageError
from dbt_project.facts.stage_layout import DATA_PREFIX, DBT_ARTIFACTS_FOLDER
from dbt_project.postgres.connection import PgSettings
from dbt_project.stage import Stage

MANIFEST = "manifest.json"
# The most a deployed manifest is read: dbt's own for this project is a few MB.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclass
class SlimBuild:
    state_key: str  # the deployed manifest compared against
    run: DbtRun
    built: list[str]  # unique ids of the nodes dbt ran, in run order


def latest_deployed_manifest(stage: Stage) -> str:
    """The key of the newest night's dbt manifest in the stage."""
    suffix = f"/{DBT_ARTIFACTS_FOLDER}{MANIFEST}"
    keys = [k for k in stage.list(DATA_PREFIX) if k.endswith(suffix)]
    if not keys:
        raise StageError(
            f"no deployed dbt manifest in {stage.uri} (looked for {DATA_PREFIX}"
            f"YYYY-MM-DD{suffix}); run a night there first, or pass another --stage"
        )
    return max(keys)  # the day is the key's first part: ISO dates sort as days


def build_changed(
    dbt: DbtProject, database: PgSettings, stage: Stage, *, target: str, state_key: str | None
) -> SlimBuild:
    """``dbt build`` of the nodes changed since the deployed manifest, and their children."""
    key = state_key or latest_deployed_manifest(stage)
    state = dbt.target_path(target).parent / "deployed-state"
    state.mkdir(parents=True, exist_ok=True)
    (state / MANIFEST).write_bytes(stage.get_bytes(key, max_bytes=MAX_MANIFEST_BYTES))
    command = ["build", "--select", "state:modified+", "--defer", "--state", str(state)]
    run = dbt.invoke(command, settings=database, target=target)
    return SlimBuild(key, run, _built(run.run_results))


def _built(run_results: Path) -> list[str]:
    if not run_results.exists():
        return []
    results = json.loads(run_results.read_text())["results"]
    # The project's on-run-start hook runs with every build: it is not a changed node.
    return [r["unique_id"] for r in results if not r["unique_id"].startswith("operation.")]
