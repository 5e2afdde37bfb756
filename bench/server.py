"""The PostgreSQL the benchmarks run against: ``ETL_PG_URL`` if set, else an embedded one.

The embedded server lives in a temporary folder and is stopped at the end, so a
benchmark run leaves nothing behind. Each run works in its own databases, dropped
afterwards, so it can share an existing server with other work.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg2 import sql

from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings, connect


@contextmanager
def pg_server(url: str | None = None) -> Iterator[PgSettings]:
    """Superuser settings of a server for the length of the block."""
    url = url or os.environ.get("ETL_PG_URL")
    if url:
        yield PgSettings.from_url(url).with_database("postgres")
        return
    # A short path: the server's Unix socket lives in its data directory.
    root = Path(tempfile.mkdtemp(prefix="etlbench-"))
    server = local_pg.start_embedded(root / "data", local_pg.free_port())
    try:
        yield PgSettings.from_url(server.url)
    finally:
        local_pg.stop_embedded(server.data_dir)
        shutil.rmtree(root, ignore_errors=True)


class Databases:
    """Creates databases named for this run and drops them all on exit."""

    def __init__(self, server: PgSettings):
        self.server = server
        self.run = uuid.uuid4().hex[:8]
        self.created: list[str] = []

    def new(self, purpose: str) -> PgSettings:
        name = f"bench_{purpose}_{self.run}"
        self._admin(sql.SQL("create database {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.server.with_database(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self._admin(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
        self.created.clear()

    def _admin(self, statement: sql.Composable) -> None:
        conn = connect(self.server)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *exc) -> None:
        self.drop_all()
