"""The staged file format: PostgreSQL's COPY text format, gzip-compressed.

Its two halves live here together: the sink that the unload streams ``COPY ... TO
STDOUT`` into (compressing, counting rows, hashing the compressed bytes) and the
reader that the load streams into ``COPY ... FROM STDIN`` (decompressing while it
checks size, hash and row count against what the manifest promised).

A file is input from the stage, not trusted: gzip inflates up to about 1000:1, so the
reader inflates at most one chunk per read and stops as soon as the file inflates to
more than the manifest's ``uncompressed_bytes``. Its memory is a few chunks, whatever
the file holds. Two bounds hold whatever a manifest says: no file inflates to more than
``MAX_UNCOMPRESSED_BYTES``, and no line (one row) is longer than ``MAX_LINE_BYTES``,
since PostgreSQL quotes a refused value whole in its error, and the error is read into
this process.

The text format writes exactly one line per row (newlines inside values are
escaped), so counting newlines counts rows on both sides, and the bytes go back
into PostgreSQL with no parsing in Python.
"""

from __future__ import annotations

import hashlib
import io
import time
import zlib
from typing import Protocol

from dbt_project.errors import StageError
from dbt_project.settings import DEFAULT_GZIP_LEVEL

# The name a manifest gives the format, so that a loader can refuse one it cannot read.
FILE_FORMAT = "postgresql-text+gzip"
CHUNK = 1024 * 1024
# The largest file a night can stage is a full refresh's customer_analytics: about 100
# bytes a customer, some 300 MB for the few million customers whose history one
# extract can build in its 15 minutes. The bound leaves room several times over, and
# bounds what a forged manifest can make the load inflate.
MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
# A row of the marts is a few hundred bytes. At least CHUNK, so that a line inside one
# inflated chunk never needs checking on its own: only lines across chunks can grow.
MAX_LINE_BYTES = CHUNK
_GZIP_CONTAINER = 31  # zlib's wbits for a gzip header and trailer


class PromisedFile(Protocol):
    """What a manifest says of one file."""

    key: str
    rows: int
    bytes: int
    uncompressed_bytes: int
    sha256: str


class _Compressor(io.RawIOBase):
    """The sink's raw end: hands the buffered writer's whole chunks to the sink."""

    def __init__(self, sink: CompressingSink):
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.sink._take(bytes(data))


class CompressingSink:
    """Receives COPY output row by row, emits gzip chunks, counts rows and bytes, hashes.

    psycopg2 calls ``write`` once per row. That ``write`` is a C ``BufferedWriter``'s,
    so a row costs no Python call: Python runs once per chunk, in ``_Compressor``.
    """

    def __init__(self, out, level: int = DEFAULT_GZIP_LEVEL):
        self.out = out
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_CONTAINER)
        self.sha256 = hashlib.sha256()
        self.rows = 0
        self.bytes = 0
        self.uncompressed_bytes = 0
        self._buffered = io.BufferedWriter(_Compressor(self), CHUNK)
        self.write = self._buffered.write

    def _take(self, chunk: bytes) -> int:
        self.rows += chunk.count(b"\n")
        self.uncompressed_bytes += len(chunk)
        self._emit(self.compressor.compress(chunk))
        return len(chunk)

    def _emit(self, data: bytes) -> None:
        if data:
            self.sha256.update(data)
            self.bytes += len(data)
            self.out.write(data)

    def finish(self) -> None:
        self._buffered.flush()
        self._emit(self.compressor.flush())


class VerifyingReader:
    """Feeds COPY FROM STDIN with decompressed bytes while checking what was promised."""

    def __init__(self, raw, entry: PromisedFile):
        self.raw = raw
        self.entry = entry
        self.sha256 = hashlib.sha256()
        self.decompressor = zlib.decompressobj(_GZIP_CONTAINER)
        self.bytes = 0
        self.uncompressed_bytes = 0
        self.rows = 0
        # Bytes of the line under way (those after the last newline so far).
        self.line_bytes = 0
        self.read_seconds = 0.0
        self.ended = False
        # psycopg2 turns an exception raised in read() into QueryCanceled: keep the
        # original so the caller can report what really went wrong.
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._read(CHUNK if size <= 0 else min(size, CHUNK))
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self, limit: int = CHUNK) -> bytes:
        """At most ``limit`` decompressed bytes; b"" at the end of the file."""
        while True:
            # Input left over from a read cut at ``limit`` comes before new input.
            data = self.decompressor.unconsumed_tail or self._next_chunk()
            if not data:
                if self.ended:
                    return b""
                self.ended = True
                # All input is consumed: only what a cut read left inside zlib remains.
                return self._counted(self.decompressor.flush())
            try:
                out = self.decompressor.decompress(data, limit)
            except zlib.error as exc:
                raise StageError(
                    f"{self.entry.key} is corrupted ({exc}); re-run the extract for that day"
                ) from exc
            if out:
                return self._counted(out)

    def _next_chunk(self) -> bytes:
        if self.ended:
            return b""
        started = time.perf_counter()
        chunk = self.raw.read(CHUNK)
        self.read_seconds += time.perf_counter() - started
        self.bytes += len(chunk)
        if self.bytes > self.entry.bytes:
            raise StageError(
                f"{self.entry.key} is larger than its manifest says ({self.entry.bytes} "
                "bytes): it was changed after the extract; re-run the extract for that day"
            )
        self.sha256.update(chunk)
        return chunk

    def _counted(self, out: bytes) -> bytes:
        self.uncompressed_bytes += len(out)
        if self.uncompressed_bytes > min(self.entry.uncompressed_bytes, MAX_UNCOMPRESSED_BYTES):
            raise StageError(
                f"{self.entry.key} inflates to more than the {self.entry.uncompressed_bytes} "
                "bytes its manifest says; it was changed after the extract (or is built to "
                "exhaust memory): re-run the extract for that day"
            )
        newlines = out.count(b"\n")
        self.rows += newlines
        # out is at most CHUNK <= MAX_LINE_BYTES long: only its first line, which goes on
        # from the previous chunk, or its last, which runs on, can be over the bound.
        first = out.find(b"\n") if newlines else len(out)
        longest = self.line_bytes + first
        self.line_bytes = len(out) - out.rfind(b"\n") - 1 if newlines else longest
        if max(longest, self.line_bytes) > MAX_LINE_BYTES:
            raise StageError(
                f"{self.entry.key} has a line longer than {MAX_LINE_BYTES} bytes, which no row "
                "of the marts comes near; it was changed after the extract (or is built to "
                "exhaust memory): re-run the extract for that day"
            )
        return out

    readline = read

    def drain(self) -> None:
        """Read what COPY left unread, so that verify() judges the whole file."""
        while self._read():
            pass

    def verify(self) -> None:
        problems = []
        if self.bytes != self.entry.bytes:
            problems.append(f"{self.bytes} bytes instead of {self.entry.bytes}")
        if self.sha256.hexdigest() != self.entry.sha256:
            problems.append("its SHA-256 differs from the manifest's")
        if not self.decompressor.eof:
            problems.append("its gzip stream is cut short")
        elif self.uncompressed_bytes != self.entry.uncompressed_bytes:
            problems.append(
                f"it inflates to {self.uncompressed_bytes} bytes instead of "
                f"{self.entry.uncompressed_bytes}"
            )
        if self.rows != self.entry.rows:
            problems.append(f"{self.rows} rows instead of {self.entry.rows}")
        if problems:
            raise StageError(
                f"{self.entry.key} does not match its manifest: {'; '.join(problems)}. "
                "It was changed or damaged after the extract; re-run the extract for that day"
            )
