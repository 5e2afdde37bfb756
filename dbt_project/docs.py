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

from . import metric_names
from .db import Database
from .dbt_runner import DbtProject, credentials_refused, raise_for_failures
from .errors import EtlError
from .layout import DOCS_KEY
from .pipeline import invoke_dbt
from .stage import Stage

DOCS_TARGET = "analytics"
STATIC_PAGE = "static_index.html"
# S3 serves an object with the type it was stored with: without it a presigned link
# downloads the page instead of opening it.
CONTENT_TYPE = "text/html; charset=utf-8"
# Where `etl docs` writes the page by default, under the work folder.
LOCAL_PAGE = Path("docs", "index.html")


def generate_docs(*, target: Database, dbt: DbtProject) -> Path:
    """Write dbt's ``static_index.html`` for the whole project; return its path."""
    run = invoke_dbt(
        dbt, target, ["docs", "generate", "--static", "--no-compile"], target=DOCS_TARGET
    )
    if credentials_refused(run):
        raise_for_failures(run, "dbt docs generate")
    page = run.target_path / STATIC_PAGE
    if not run.success or not page.is_file():
        names = "; ".join(str(f) for f in run.failures) or "dbt reported failure"
        raise EtlError(
            f"dbt docs generate failed: {names}. Run `dbt docs generate --static` with "
            "ETL_DBT_VERBOSE=1 to see why"
        )
    return page


def write_docs(*, target: Database, dbt: DbtProject, out: Path | str | None = None) -> Path:
    """The same page as the night publishes, copied to ``out`` (default under the work
    folder, ``.etl/`` in a checkout, beside dbt's own artifacts)."""
    out = Path(out) if out else dbt.settings.work_dir / LOCAL_PAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(generate_docs(target=target, dbt=dbt), out)
    return out


def publish_docs(page: Path, stage: Stage) -> str:
    """Put the page at ``docs/index.html`` in the stage; return where it went."""
    stage.put_bytes(DOCS_KEY, page.read_bytes(), content_type=CONTENT_TYPE)
    return stage.describe(DOCS_KEY)


def publish_night_docs(*, target: Database, dbt: DbtProject, stage: Stage) -> bool:
    """Generate and publish the site after a loaded and tested night, best effort.

    The night's data is committed and tested by then; the page only describes the
    code, and the next night publishes it again. So a failure here is a warning and
    a DocsPublishError metric (which an alarm can watch), never a failed invocation:
    that would report a good night as failed, and its retries would find a duplicate
    delivery, load nothing, and publish nothing.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    from .observability import logger, metrics

    try:
        where = publish_docs(generate_docs(target=target, dbt=dbt), stage)
    except Exception as exc:
        logger.warning(
            "the docs site was not published; the night's load stands",
            extra={"error_type": exc.__class__.__name__, "error": str(exc)},
        )
        metrics.add_metric(name=metric_names.DOCS_PUBLISH_ERROR, unit=MetricUnit.Count, value=1)
        return False
    logger.info("docs site published", extra={"docs": where})
    return True
