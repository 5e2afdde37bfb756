"""What the child processes measure: the project's code paths and the references.

Each task connects first, then times only the work it names, and returns the rows
it handled, the seconds, and anything the report needs to check the run was real.
Settings arrive as URLs, dates as ISO strings (they cross a process boundary as JSON).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import time
from datetime import date, datetime
from pathlib import Path

from psycopg2 import sql
from psycopg2.extras import execute_values

from dbt_project.contract.manifest import Manifest
from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import contract
from dbt_project.extract.unload import Relation
from dbt_project.facts.names import ANALYTICS_SCHEMA, MARTS
from dbt_project.load.load import load_manifest
from dbt_project.postgres.analytics_schema import extra_columns
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.stage import LocalStage

# The tasks of cases 6-9 live apart; the child finds every task here.
from .analytics_tasks import analytics_side, cold_night, nights, ship_project  # noqa: F401
from .reprocess_tasks import backfill_year, history_load  # noqa: F401

_CHUNK = 1024 * 1024


def _connect(url: str):
    return connect(PgSettings.from_url(url))


# -- load ------------------------------------------------------------------------------


def load_project(target: str, stage: str, manifest: str) -> dict:
    """The project's load: verify every file, version checks, deletes, upsert; one transaction."""
    conn = _connect(target)
    started = time.perf_counter()
    result = load_manifest(conn, LocalStage(Path(stage)), manifest)
    seconds = time.perf_counter() - started
    conn.close()
    tables = {name: vars(load) for name, load in result.tables.items()}
    return {
        "rows": sum(t["rows_in_file"] for t in tables.values()),
        "seconds": seconds,
        "status": result.status,
        "tables": tables,
    }


def _upsert(name: str, rows_from: sql.Composable) -> sql.Composed:
    """Plain upsert of ``rows_from`` (the contract's columns); no version or other checks.

    The analytics tables' bookkeeping columns get now(): the references write the same
    table, with the same columns, as the project.
    """
    table = contract(name)
    columns = [sql.Identifier(c) for c in table.column_names]
    extra = [sql.Identifier(c.name) for c in extra_columns(name)]
    return sql.SQL(
        "insert into {target} ({columns}) select r.*{now} from ({rows}) as r ({contract}) "
        "on conflict ({pk}) do update set {assignments}"
    ).format(
        target=sql.Identifier(ANALYTICS_SCHEMA, name),
        columns=sql.SQL(", ").join(columns + extra),
        now=sql.SQL("").join(sql.SQL(", now()") for _ in extra),
        rows=rows_from,
        contract=sql.SQL(", ").join(columns),
        pk=sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key),
        assignments=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=c)
            for c in [*columns, *extra]
            if c.string not in table.primary_key
        ),
    )


def load_copy_upsert(target: str, stage: str, manifest: str) -> dict:
    """Reference (a): the same staged files, COPY into a temp table, upsert; no checks."""
    files = LocalStage(Path(stage))
    conn = _connect(target)
    started = time.perf_counter()
    parsed = Manifest.from_json(files.get_bytes(manifest), manifest)
    rows = 0
    with conn, conn.cursor() as cur:
        for name in MARTS:
            temp = sql.Identifier(f"_plain_{name}")
            cur.execute(
                sql.SQL("create temporary table {} ({}) on commit drop").format(
                    temp,
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.data_type))
                        for c in contract(name).columns
                    ),
                )
            )
            with files.reader(parsed.file(name).key) as raw, gzip.GzipFile(fileobj=raw) as text:
                cur.copy_expert(
                    sql.SQL("copy {} from stdin").format(temp).as_string(conn), text, size=_CHUNK
                )
            cur.execute(_upsert(name, sql.SQL("select * from {}").format(temp)))
            rows += cur.rowcount
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "seconds": seconds}


def _fetch_marts(source: str, schema: str) -> dict[str, list[tuple]]:
    conn = _connect(source)
    fetched = {}
    with conn, conn.cursor() as cur:
        for name in MARTS:
            cur.execute(
                sql.SQL("select {} from {}").format(
                    sql.SQL(", ").join(sql.Identifier(c) for c in contract(name).column_names),
                    sql.Identifier(schema, name),
                )
            )
            fetched[name] = cur.fetchall()
    conn.close()
    return fetched


def load_execute_values(target: str, source: str, schema: str, page_size: int = 1000) -> dict:
    """Reference (b): rows already in Python, upserted with execute_values, one transaction."""
    fetched = _fetch_marts(source, schema)
    conn = _connect(target)
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        for name, rows in fetched.items():
            statement = _upsert(name, sql.SQL("values %s")).as_string(conn)
            execute_values(cur, statement, rows, page_size=page_size)
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": sum(len(r) for r in fetched.values()), "seconds": seconds}


def load_row_by_row(target: str, source: str, schema: str, sample: int) -> dict:
    """Reference (c): one upsert per row (executemany), timed on a random sample.

    Returns the extrapolated seconds for every row, and the sample it came from.
    """
    fetched = _fetch_marts(source, schema)
    rows = [(name, row) for name, batch in fetched.items() for row in batch]
    # A fixed, evenly mixed sample: new and conflicting rows in their true proportion.
    picked = random.Random(20261125).sample(rows, min(sample, len(rows)))  # noqa: S311
    conn = _connect(target)
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        for name in MARTS:
            batch = [row for table, row in picked if table == name]
            if batch:
                placeholders = sql.SQL("values ({})").format(
                    sql.SQL(", ").join(sql.Placeholder() * len(batch[0]))
                )
                cur.executemany(_upsert(name, placeholders).as_string(conn), batch)
    sample_seconds = time.perf_counter() - started
    conn.close()
    return {
        "rows": len(rows),
        "seconds": sample_seconds * len(rows) / len(picked),
        "sample_rows": len(picked),
        "sample_seconds": sample_seconds,
    }


# -- unload ----------------------------------------------------------------------------


def unload_project(
    source: str, schema: str, stage: str, run_date: str, lookback_days: int, extracted_at: str
) -> dict:
    """The project's unload of one night: five files (COPY, gzip, SHA-256), manifest last."""
    from dbt_project.extract.unload import unload_night

    conn = _connect(source)
    relations = {name: Relation(schema, name) for name in required_tables()}
    started = time.perf_counter()
    manifest = unload_night(
        conn,
        relations,
        LocalStage(Path(stage)),
        run_date=date.fromisoformat(run_date),
        lookback_days=lookback_days,
        extracted_at=datetime.fromisoformat(extracted_at),
    )
    seconds = time.perf_counter() - started
    conn.close()
    return {
        "rows": sum(f.rows for f in manifest.files),
        "seconds": seconds,
        "bytes": sum(f.bytes for f in manifest.files),
    }


def unload_copy_discard(source: str, schema: str) -> dict:
    """Reference: the same five ``COPY (SELECT ...) TO STDOUT``, output thrown away."""
    conn = _connect(source)
    started = time.perf_counter()
    with conn.cursor() as cur, open(os.devnull, "wb") as sink:
        rows = 0
        for name in required_tables():
            query = sql.SQL("copy (select {} from {}) to stdout").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in contract(name).column_names),
                sql.Identifier(schema, name),
            )
            cur.copy_expert(query.as_string(conn), sink, size=_CHUNK)
            rows += cur.rowcount
    conn.rollback()
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": rows, "seconds": seconds}


# -- dbt ------------------------------------------------------------------------------


def _node_seconds(target_path: Path) -> dict:
    """Summed execution time of a dbt run's nodes by kind, and the run's elapsed time.

    Tests defined on the sources and staging models read the whole operational
    tables; those on the marts read only the night's window: they are kept apart.
    """
    document = json.loads((target_path / "run_results.json").read_text())
    nodes = json.loads((target_path / "manifest.json").read_text())["nodes"]
    totals: dict[str, float] = {"model": 0.0, "test": 0.0, "staging_test": 0.0, "unit_test": 0.0}
    slowest = sorted(
        document["results"], key=lambda r: float(r.get("execution_time") or 0.0), reverse=True
    )
    for result in document["results"]:
        unique_id = result["unique_id"]
        kind = unique_id.split(".", 1)[0]
        if kind == "test":
            defined_in = nodes.get(unique_id, {}).get("original_file_path", "")
            if defined_in.startswith("models/staging"):
                kind = "staging_test"
        totals[kind] = totals.get(kind, 0.0) + float(result.get("execution_time") or 0.0)
    totals["run"] = float(document.get("elapsed_time") or 0.0)
    totals["nodes"] = len(document["results"])
    # The worker threads dbt ran the nodes on (the profile's `threads`).
    # (The project's hooks run on the main thread.)
    totals["threads"] = len(
        {r.get("thread_id") for r in document["results"]} - {"main", "MainThread", None}
    )
    totals["slowest"] = [
        (r["unique_id"].split(".")[2], round(float(r.get("execution_time") or 0.0), 3))
        for r in slowest[:8]
    ]
    return totals


class _ParseTimer:
    """Times dbt's manifest parsing by wrapping the function its CLI calls for it, and
    the reading of a shipped parse instead (``dbt_parse.load_shipped_parse``)."""

    def __init__(self):
        self.seconds = 0.0
        from dbt_project.dbt_runner import parse_cache as dbt_parse

        dbt_parse.load_shipped_parse = self._timed(dbt_parse.load_shipped_parse)
        try:
            import dbt.cli.requires as requires
        except ImportError:  # pragma: no cover - another dbt layout: report no parse time
            return
        original = getattr(requires, "parse_manifest", None)
        if original is None:  # pragma: no cover
            return

        requires.parse_manifest = self._timed(original)

    def _timed(self, original):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def extract_calls(source: str, stage: str, days: list[str], lookback_days: int) -> dict:
    """``pipeline.extract`` of each of ``days`` in turn, in this one fresh process.

    The first call is cold (dbt imported just before it, nothing parsed yet); later
    calls are warm, as in a warm Lambda or a backfill. Reports per call the dbt part
    (parse, node execution by type, the rest) and the unload part.
    """
    from dbt_project.dbt_runner.runner import DbtProject
    from dbt_project.pipeline import Pipeline
    from dbt_project.postgres.connection import Database
    from dbt_project.request import NightRequest, parse_date

    started = time.perf_counter()
    import dbt.cli.main  # noqa: F401 - timed: every cold start pays it

    import_seconds = time.perf_counter() - started
    parse = _ParseTimer()
    database = Database.from_settings(PgSettings.from_url(source))
    project = DbtProject()
    calls = []
    for day in days:
        shipped = len(project.shipped)
        parts = Pipeline(dbt=project, source=database, stage=LocalStage(Path(stage)))
        result = parts.extract(NightRequest(parse_date(day), lookback_days=lookback_days))
        calls.append(
            {
                "day": day,
                "seconds": result.seconds,
                "dbt_seconds": result.dbt_seconds,
                "unload_seconds": result.unload_seconds,
                "parse": parse.take(),
                "shipped_parse": len(project.shipped) > shipped,
                "rows": sum(result.rows.values()),
                **_node_seconds(_target_path("source")),
            }
        )
    database.close()
    return {
        "rows": calls[-1]["rows"],
        "seconds": calls[-1]["seconds"],
        "import_seconds": import_seconds,
        "calls": calls,
    }


def _target_path(target: str) -> Path:
    from dbt_project.dbt_runner.runner import DbtProject

    return DbtProject().target_path(target)
