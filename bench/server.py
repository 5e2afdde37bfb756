"""The PostgreSQL the benchmarks run against: ``ETL_PG_URL`` if set, else an embedded one.

The embedded server lives in a temporary folder and is stopped at the end, so a
benchmark run leaves nothing behind. Each run works in its own databases, dropped
afterwards, so it can share an existing server with other work.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg2 import sql

from dbt_project.facts.roles import EXTRACT_LOGIN
from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings, connect
from dbt_project.postgres.logins import create_extract_login, scram_sha_256


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
        self._extract_login: tuple[str, str] | None = None

    def new(self, purpose: str) -> PgSettings:
        name = f"bench_{purpose}_{self.run}"
        self._admin(sql.SQL("create database {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.server.with_database(name)

    def extract_login(self, source: PgSettings) -> PgSettings:
        """``source`` as a login of this run that may only act as etl_extract: the source
        side of a night runs as etl_extract, and etl_extract's own password belongs to
        whoever else uses the server."""
        conn = connect(source)
        try:
            with conn:
                create_extract_login(conn, source.dbname)
        finally:
            conn.close()
        if self._extract_login is None:
            name, password = f"bench_extract_{self.run}", secrets.token_urlsafe(18)
            self._admin(
                sql.SQL("create role {} login password {} in role {}").format(
                    sql.Identifier(name),
                    sql.Literal(scram_sha_256(password)),
                    sql.Identifier(EXTRACT_LOGIN),
                )
            )
            self._extract_login = (name, password)
        return source.with_credentials(*self._extract_login)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self._admin(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )
        self.created.clear()
        if self._extract_login is not None:
            self._admin(sql.SQL("drop role {}").format(sql.Identifier(self._extract_login[0])))
            self._extract_login = None

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
