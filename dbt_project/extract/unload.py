"""Unload: stream the night's built relations out of PostgreSQL into the stage.

Each relation goes out through ``COPY (SELECT ...) TO STDOUT`` into the staged
format's compressing sink (``staged_format.py``); the manifest naming every file
is written last, so its presence means the night's files are complete.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from psycopg2 import sql

from dbt_project.contract.file_format import CHUNK, FILE_FORMAT, CompressingSink
from dbt_project.contract.manifest import ExtractFacts, FileEntry, Manifest
from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import TableContract, contract
from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import BUSINESS_TIMEZONE
from dbt_project.facts.stage_layout import day_prefix, manifest_key
from dbt_project.settings import DEFAULT_GZIP_LEVEL
from dbt_project.stage import Stage


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str


def built_relations(dbt_manifest: Path) -> dict[str, Relation]:
    """Where dbt built each table the night stages, from its manifest.json."""
    nodes = json.loads(dbt_manifest.read_text())["nodes"]
    found, wanted = {}, required_tables()
    for node in nodes.values():
        if node.get("resource_type") == "model" and node["name"] in wanted:
            found[node["name"]] = Relation(node["schema"], node.get("alias") or node["name"])
    return found


def unload_table(
    conn,
    relation: Relation,
    table: TableContract,
    stage: Stage,
    key: str,
    *,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
) -> FileEntry:
    """Stream ``relation`` (built to ``table``'s contract) into ``key`` on the stage."""
    query = sql.SQL("copy (select {columns} from {relation}) to stdout").format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        relation=sql.Identifier(relation.schema, relation.name),
    )
    with stage.writer(key) as out, conn.cursor() as cur:
        sink = CompressingSink(out, gzip_level)
        cur.copy_expert(query.as_string(conn), sink, size=CHUNK)
        sink.finish()
    return FileEntry(
        table=table.name,
        key=key,
        rows=sink.rows,
        bytes=sink.bytes,
        uncompressed_bytes=sink.uncompressed_bytes,
        sha256=sink.sha256.hexdigest(),
        format=FILE_FORMAT,
        **table.as_manifest(),
    )


def _unload_files(conn, relations, stage: Stage, prefix: str, gzip_level: int) -> list[FileEntry]:
    # One snapshot for all five files, and nothing written on the source.
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        return [
            unload_table(
                conn,
                relations[name],
                contract(name),
                stage,
                f"{prefix}{name}.tsv.gz",
                gzip_level=gzip_level,
            )
            for name in required_tables()
        ]
    finally:
        # End the snapshot whatever happened (set_session is refused inside a
        # transaction, which would hide the real error); a dead connection has
        # nothing left to reset.
        if not conn.closed:
            conn.rollback()
            conn.set_session(isolation_level="DEFAULT", readonly=False)


def unload_night(
    conn,
    relations: dict[str, Relation],
    stage: Stage,
    *,
    run_date: date,
    lookback_days: int,
    extracted_at: datetime,
    dbt_invocation_id: str | None = None,
    artifacts: dict[str, bytes] | None = None,
    gzip_level: int = DEFAULT_GZIP_LEVEL,
    full_refresh: bool = False,
    every_customer: bool | None = None,
    facts: Callable[[], ExtractFacts] | None = None,
) -> Manifest:
    """Unload the five built relations of one night, then write its manifest, last.

    ``facts`` is asked for the night's facts once the files are written, so that the
    manifest carries the whole extract's time.
    """
    run_id = str(uuid.uuid4())
    # Files of each run sit in their own folder: a re-run never overwrites the files
    # an earlier manifest (perhaps being loaded right now) points to.
    prefix = f"{day_prefix(run_date)}{run_id}/"
    files = _unload_files(conn, relations, stage, prefix, gzip_level)
    for key, body in (artifacts or {}).items():
        stage.put_bytes(key, body)
    manifest = Manifest(
        run_id=run_id,
        run_date=run_date,
        lookback_days=lookback_days,
        window_start_date=run_date - timedelta(days=lookback_days - 1),
        business_timezone=BUSINESS_TIMEZONE,
        extracted_at=extracted_at,
        dbt_invocation_id=dbt_invocation_id,
        files=files,
        created_at=business_calendar.utc_now(),
        dbt_artifacts=sorted(artifacts or {}),
        full_refresh=full_refresh,
        every_customer=full_refresh if every_customer is None else every_customer,
        extract=facts() if facts else None,
    )
    stage.put_bytes(manifest_key(run_date), manifest.to_json())
    return manifest
