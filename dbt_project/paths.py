"""Where the dbt project lives, on a laptop and inside the Lambda common-code layer."""

import os
from pathlib import Path


def project_dir() -> Path:
    """The folder holding ``dbt_project.yml``.

    Locally it is the repository root (the parent of this package). In Lambda the
    common-code layer ships the project files next to the package, so the same rule
    holds; ``ETL_DBT_PROJECT_DIR`` overrides both.
    """
    override = os.environ.get("ETL_DBT_PROJECT_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent


def work_dir() -> Path:
    """Writable scratch space: ``.etl/`` in the project locally, ``/tmp`` in Lambda."""
    override = os.environ.get("ETL_WORK_DIR")
    if override:
        return Path(override)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return Path("/tmp/etl")  # noqa: S108 - the only writable place in Lambda
    return project_dir() / ".etl"
