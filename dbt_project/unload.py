"""Unload: stream a built model out of PostgreSQL into the stage, compressed and hashed.

``COPY (SELECT ...) TO STDOUT`` in PostgreSQL's text format writes exactly one line
per row (newlines inside values are escaped), so counting newlines counts rows, and
the loader can ``COPY ... FROM STDIN`` the same bytes back with no parsing in Python.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass

from psycopg2 import sql

from .contracts import TableContract
from .manifest import FILE_FORMAT, FileEntry
from .stage import Stage

_CHUNK = 1024 * 1024
# gzip level 1 compresses ~4x faster than the default 6 for a slightly larger file;
# the unload is bound by compression, the stage by bytes: 1 is the better trade here.
GZIP_LEVEL = int(os.environ.get("ETL_GZIP_LEVEL", "1"))


class _CompressingSink:
    """Receives COPY output row by row, emits gzip chunks, counts rows and hashes bytes."""

    def __init__(self, out, level: int = GZIP_LEVEL):
        self.out = out
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip container
        self.sha256 = hashlib.sha256()
        self.buffer = bytearray()
        self.rows = 0
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= _CHUNK:
            self._compress()
        return len(data)

    def _compress(self) -> None:
        chunk = bytes(self.buffer)
        self.buffer.clear()
        self.rows += chunk.count(b"\n")
        self._emit(self.compressor.compress(chunk))

    def _emit(self, data: bytes) -> None:
        if data:
            self.sha256.update(data)
            self.bytes += len(data)
            self.out.write(data)

    def finish(self) -> None:
        self._compress()
        self._emit(self.compressor.flush())


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str


def unload_table(
    conn, relation: Relation, table: TableContract, stage: Stage, key: str
) -> FileEntry:
    """Stream ``relation`` (built to ``table``'s contract) into ``key`` on the stage."""
    query = sql.SQL("copy (select {columns} from {relation}) to stdout").format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names),
        relation=sql.Identifier(relation.schema, relation.name),
    )
    with stage.writer(key) as out, conn.cursor() as cur:
        sink = _CompressingSink(out)
        cur.copy_expert(query.as_string(conn), sink, size=_CHUNK)
        sink.finish()
    return FileEntry(
        table=table.name,
        key=key,
        rows=sink.rows,
        bytes=sink.bytes,
        sha256=sink.sha256.hexdigest(),
        format=FILE_FORMAT,
        **table.as_manifest(),
    )
