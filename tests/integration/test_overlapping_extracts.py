"""Two extracts of the same source at once (a manual run during the scheduled one, an
S3 retry, a second deployment's schedule) run one after the other, so the design
needs no reserved concurrency: the second waits for the source's extract lock, or
says it could not have it, and never builds beside the first."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import date

from dbt_project.extract.extract import EXTRACT_LOCK
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, connect
from dbt_project.stage import LocalStage
from tests import reference
from tests.pipeline_helpers import as_extract_login, initialised_shop

DAY = date(2026, 4, 10)


def shop(new_database):
    return initialised_shop(new_database, date(2026, 4, 1), DAY, seed=11)


def etl_extract(source, stage, tmp_path, name, project, **env) -> subprocess.Popen:
    """`etl extract` in its own process, as a second Lambda container would run it: on
    the project as the common layer ships it, with its own dbt folders."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dbt_project.cli",
            "extract",
            "--date",
            DAY.isoformat(),
            "--lookback-days",
            "10",
            "--stage",
            str(stage.root),
        ],
        env={
            **os.environ,
            "ETL_SOURCE_URL": as_extract_login(source).url,
            "ETL_DBT_PROJECT_DIR": str(project),
            "ETL_WORK_DIR": str(tmp_path / name),  # each process its own dbt folders
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_extract_waits_for_the_first_and_both_stay_whole(
    new_database, tmp_path, shipped_project
):
    source, target = shop(new_database)
    stage = LocalStage(tmp_path / "stage")

    # when two extracts of the same day start together
    first = etl_extract(source, stage, tmp_path, "a", shipped_project)
    second = etl_extract(source, stage, tmp_path, "b", shipped_project)
    results = [p.communicate(timeout=300) + (p.returncode,) for p in (first, second)]

    # then both succeed, one after the other (two run folders, one manifest: the later)
    tails = [(out[-3000:], err[-2000:]) for out, err, _ in results]
    assert [code for _, _, code in results] == [0, 0], tails
    runs = {key.split("/")[2] for key in stage.list("etl-data/") if key.endswith(".tsv.gz")}
    assert len(runs) == 2
    loaded = Pipeline(analytics=Database.from_settings(target), stage=stage).load(
        f"etl-data/{DAY}/_manifest.json"
    )
    assert loaded.status == "loaded"
    expected = reference.marts(reference.fetch_source(source), as_of=DAY)
    actual = reference.read_marts(target)
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert actual["product_sales_summary"] == expected["product_sales_summary"]


def test_an_extract_that_cannot_have_the_lock_says_so_and_stages_nothing(
    new_database, tmp_path, shipped_project
):
    source, _ = shop(new_database)
    stage = LocalStage(tmp_path / "stage")
    holder = connect(source)
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (EXTRACT_LOCK,))
        started = time.monotonic()
        waiting = etl_extract(
            source, stage, tmp_path, "w", shipped_project, ETL_LOCK_TIMEOUT_MS="3000"
        )
        out, err, code = waiting.communicate(timeout=120) + (waiting.returncode,)
    finally:
        holder.close()
    assert code == 3, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and "another extract of this source is running" in lines[0], err
    assert "did not finish within the lock timeout" in lines[0]
    assert time.monotonic() - started < 60
    assert stage.list("etl-data/") == []
