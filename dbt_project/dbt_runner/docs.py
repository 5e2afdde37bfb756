"""The lineage site: dbt's static docs page for both sides of the pipeline, one file.

Which database it is generated against: the analytics one (target ``analytics``),
and only it. The lineage graph comes from the parsed manifest, which holds the whole
project whatever the target: the four sources, staging, intermediate, the marts, the
load keys, the views and the exposures. A target only decides what the catalog adds:
column types and relation names, read from one database. The analytics database is
the side the page's readers query (the loaded marts and the views get their real
types), and the only one the load function may reach: its login and security group
go to Aurora alone. The source side's other nodes keep their YAML documentation
(descriptions, tests, contracts) and show no column types.

No catalog merge: dbt's static page inlines one catalog, and a source-side one would
need a connection the load function does not have, or the extract staging a catalog
of its own, only to add the column types of the source-side models.
``--no-compile``: the lineage needs no compiled SQL, and SQL compiled against the
analytics target would show the source-side models reading tables of the analytics
database, where they do not exist; their raw SQL, with its ref()s, is what a reader
follows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dbt_project.dbt_runner.results import connection_failed, raise_for_failures
from dbt_project.dbt_runner.runner import DbtProject, invoke_dbt
from dbt_project.errors import EtlError
from dbt_project.facts.names import ANALYTICS_TARGET
from dbt_project.facts.stage_layout import DOCS_KEY
from dbt_project.postgres.connection import Database
from dbt_project.stage import Stage

DOCS_TARGET = ANALYTICS_TARGET
STATIC_PAGE = "static_index.html"
# S3 serves an object with the type it was stored with: without it a presigned link
# downloads the page instead of opening it.
CONTENT_TYPE = "text/html; charset=utf-8"
# Where `etl docs` writes the page by default, under the work folder.
LOCAL_PAGE = Path("docs", "index.html")


def generate_docs(*, analytics: Database, dbt: DbtProject) -> Path:
    """Write dbt's ``static_index.html`` for the whole project; return its path."""
    # A work folder another user could write to is refused before anything else; a
    # login or TLS refusal is said by the pipeline's own connection, before dbt runs.
    dbt.check_work_folder()
    analytics.connection()
    run = invoke_dbt(
        dbt, analytics, ["docs", "generate", "--static", "--no-compile"], target=DOCS_TARGET
    )
    if connection_failed(run):
        raise_for_failures(run, "dbt docs generate")
    page = run.target_path / STATIC_PAGE
    if not run.success or not page.is_file():
        names = "; ".join(str(f) for f in run.failures) or "dbt reported failure"
        raise EtlError(
            f"dbt docs generate failed: {names}. Run `dbt docs generate --static` with "
            "ETL_DBT_VERBOSE=1 to see why"
        )
    return page


def write_docs(*, analytics: Database, dbt: DbtProject, out: Path | str | None = None) -> Path:
    """The same page as the night publishes, copied to ``out`` (default under the work
    folder, ``.etl/`` in a checkout, beside dbt's own artifacts)."""
    out = Path(out) if out else dbt.settings.work_dir / LOCAL_PAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(generate_docs(analytics=analytics, dbt=dbt), out)
    return out


def publish_docs(page: Path, stage: Stage, key: str = DOCS_KEY) -> str:
    """Put a page of the site at ``key`` (default ``docs/index.html``) in the stage;
    return where it went."""
    stage.put_bytes(key, page.read_bytes(), content_type=CONTENT_TYPE)
    return stage.describe(key)
