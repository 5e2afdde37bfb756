"""Child-process tasks of the night, queries and cold cases (see ``analytics_cases``)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from dbt_project.postgres.connection import PgSettings

_PLAN_DEPTH = 6


def _database(url: str):
    from dbt_project.postgres.connection import Database

    return Database.from_settings(PgSettings.from_url(url))


def _plan_path(cur, query: str) -> str:
    """The plan's top nodes, outermost first, following each node's row source."""
    cur.execute("explain (format json) " + query)
    node, names = cur.fetchone()[0][0]["Plan"], []
    while node is not None and len(names) < _PLAN_DEPTH:
        name = node["Node Type"]
        if node.get("Index Name"):
            name += f" ({node['Index Name']})"
        names.append(name)
        # The row source, not a once-evaluated InitPlan beside it.
        children = [c for c in node.get("Plans", []) if c.get("Parent Relationship") != "InitPlan"]
        node = children[0] if children else None
    return " → ".join(names)


def _time_queries(url: str, repeats: int) -> list[dict]:
    from dbt_project.local.demo import EXAMPLE_QUERIES

    conn = _database(url).connection()
    timed = []
    with conn.cursor() as cur:
        cur.execute("set search_path = analytics")
        for query in EXAMPLE_QUERIES:
            cur.execute(query)  # warm the cache: every size is timed warm
            rows = len(cur.fetchall())
            best = None
            for _ in range(max(1, repeats)):
                started = time.perf_counter()
                cur.execute(query)
                cur.fetchall()
                seconds = time.perf_counter() - started
                best = seconds if best is None else min(best, seconds)
            timed.append(
                {"query": query, "rows": rows, "seconds": best, "plan": _plan_path(cur, query)}
            )
    conn.rollback()
    return timed


def analytics_side(target: str, run_date: str, repeats: int) -> dict:
    """Build the views, time the nightly analytics tests (warm: the first call parses),
    then the four example queries, each the fastest of ``repeats``."""
    from dbt_project.dbt_runner.runner import DbtProject, raise_for_failures
    from dbt_project.load.load import LoadResult
    from dbt_project.pipeline import Pipeline, invoke_dbt

    database, dbt = _database(target), DbtProject()
    run = invoke_dbt(
        dbt, database, ["run", "--select", "path:models/analytics"], target="analytics"
    )
    raise_for_failures(run, "building the analytic views")
    night = LoadResult("bench", "bench", date.fromisoformat(run_date), "loaded")
    tests = [
        Pipeline(dbt=dbt, analytics=database).test_analytics([night]) for _ in range(1 + repeats)
    ]
    if not all(t.passed for t in tests):
        raise RuntimeError(f"the analytics tests failed: {tests[0].failures}")
    queries = _time_queries(target, repeats)
    database.close()
    warm = min(t.seconds for t in tests[1:] or tests)
    return {"rows": 0, "seconds": warm, "tests_seconds": warm, "queries": queries}


def pipeline(source: str, target: str, stage: str, extract_source: str | None = None):
    """The parts of a night on these databases and a local stage, both sides ready:
    `init` runs as ``source``, the nights' source side as ``extract_source``."""
    from dbt_project.dbt_runner.runner import DbtProject
    from dbt_project.pipeline import Pipeline
    from dbt_project.stage import LocalStage

    parts = Pipeline(
        dbt=DbtProject(),
        source=_database(source),
        analytics=_database(target),
        stage=LocalStage(Path(stage)),
    )
    parts.init()
    if extract_source:
        parts.source.close()
        parts.source = _database(extract_source)
    return parts


def nights(
    source: str, extract_source: str, target: str, stage: str, day: str, repeats: int
) -> dict:
    """The whole history in one full-refresh night and one settling night, then
    ``repeats`` nights of ``day`` (extract, load, analytics tests) in the same process;
    reports each warm night. `init` runs as ``source``, the nights' source side as
    ``extract_source``."""
    from dbt_project.request import NightRequest, parse_date

    parts = pipeline(source, target, stage, extract_source)
    run_date = parse_date(day)
    parts.run_night(NightRequest(run_date, full_refresh=True), run_tests=False)
    # The first night after a full refresh sums its customers' history once to settle
    # them (int_customer_settled); the nights after it, as every night in operation,
    # find them settled. That first night is not timed.
    parts.run_night(NightRequest(run_date, lookback_days=2), run_tests=False)
    made = []
    for _ in range(max(1, repeats)):
        night = parts.run_night(NightRequest(run_date, lookback_days=2))
        if not night.tests.passed:
            raise RuntimeError(f"the analytics tests failed: {night.tests.failures}")
        made.append(
            {
                "seconds": night.seconds,
                "extract": night.extract.seconds,
                "load": night.load.seconds,
                "tests": night.tests.seconds,
                "rows": sum(night.extract.rows.values()),
            }
        )
    parts.source.close()
    parts.analytics.close()
    best = min(made, key=lambda n: n["seconds"])
    return {"rows": best["rows"], "seconds": best["seconds"], "nights": made, "best": best}


def cold_night(source: str, stage: str, day: str, warm: int) -> dict:
    """A night's extract as a fresh Lambda container runs it: the imports (timed in a
    fresh interpreter: this process has imported the package already), dbt's parse,
    the first build and the unload; then ``warm`` more in the same process."""
    import os
    import subprocess
    import sys
    import tempfile

    from bench.tasks import extract_calls

    probe = (
        "import time; started = time.perf_counter(); "
        "import dbt_project.pipeline, dbt_project.stage, dbt.cli.main; "
        "print(time.perf_counter() - started)"
    )

    def imports(**env) -> float:
        done = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env},
        )
        return float(done.stdout.strip())

    result = {"import_seconds": imports()}
    # As from a layer without bytecode: no cache to read, none written (a read-only /opt).
    with tempfile.TemporaryDirectory() as empty:
        result["source_import_seconds"] = imports(
            PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1"
        )
    result.update(extract_calls(source, stage, [day] * (1 + warm), lookback_days=1))
    return result


def ship_project(folder: str) -> dict:
    """The dbt project as the common layer ships it (``infra/packaging/layers.py``): its files
    under ``folder``, with dbt's parse for the target ``source``."""
    import shutil

    from dbt_project.dbt_runner.parse_cache import ship_parse
    from dbt_project.facts.names import SOURCE_TARGET
    from infra.packaging.layers import REPO_ROOT, common_sources

    root = Path(folder)
    for relative, path in common_sources(REPO_ROOT):
        if relative.startswith("dbt/"):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, root / relative)
    started = time.perf_counter()
    ship_parse(root / "dbt", SOURCE_TARGET)
    return {"rows": 0, "seconds": time.perf_counter() - started, "project": str(root / "dbt")}
