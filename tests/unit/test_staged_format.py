"""The staged format's two halves: what the sink writes, the reader takes back, and the
reader refuses any byte that is not what the manifest promised."""

from __future__ import annotations

import gzip
import hashlib
import io
from dataclasses import dataclass

import pytest

from dbt_project.contract import file_format
from dbt_project.contract.file_format import (
    CHUNK,
    MAX_LINE_BYTES,
    CompressingSink,
    VerifyingReader,
)
from dbt_project.errors import StageError
from tests.datagen import gzip_of_repeated_byte

ROWS = b"".join(b"%d\tcustomer %d\t12.50\n" % (i, i) for i in range(50_000))


@dataclass
class Promise:
    key: str
    rows: int
    bytes: int
    uncompressed_bytes: int
    sha256: str


def written(data: bytes = ROWS, *, piece: int = 4096) -> tuple[bytes, Promise]:
    out = io.BytesIO()
    sink = CompressingSink(out)
    for start in range(0, len(data), piece):  # COPY hands over a row or so at a time
        sink.write(data[start : start + piece])
    sink.finish()
    body = out.getvalue()
    return body, Promise(
        "etl-data/2026-11-25/r/t.tsv.gz",
        sink.rows,
        sink.bytes,
        sink.uncompressed_bytes,
        sink.sha256.hexdigest(),
    )


def read_all(reader: VerifyingReader) -> bytes:
    parts = []
    while chunk := reader.read():
        parts.append(chunk)
    reader.verify()
    return b"".join(parts)


def test_what_the_sink_writes_the_reader_returns_verified():
    body, promise = written()
    assert gzip.decompress(body) == ROWS  # a plain gzip file, readable by any tool
    assert promise.rows == ROWS.count(b"\n") and promise.bytes == len(body)
    assert promise.uncompressed_bytes == len(ROWS)
    reader = VerifyingReader(io.BytesIO(body), promise)
    assert read_all(reader) == ROWS
    assert reader.rows == promise.rows


def test_an_empty_table_is_a_valid_empty_file():
    body, promise = written(b"")
    assert promise.rows == 0
    assert read_all(VerifyingReader(io.BytesIO(body), promise)) == b""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], "gzip stream is cut short"),
        (lambda b: b + b"x", "is larger than its manifest says"),
        (lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], "corrupted|does not match"),
    ],
)
def test_a_damaged_file_is_refused(damage, message):
    body, promise = written()
    reader = VerifyingReader(io.BytesIO(damage(body)), promise)
    with pytest.raises(StageError, match=message):
        read_all(reader)


def test_a_file_swapped_for_another_valid_one_is_refused_by_its_hash():
    body, promise = written()
    other, _ = written(ROWS.replace(b"12.50", b"99.50"))
    with pytest.raises(StageError, match="SHA-256 differs|bytes instead of|larger than"):
        read_all(VerifyingReader(io.BytesIO(other), promise))


def test_a_promise_of_other_rows_is_refused():
    body, promise = written()
    promise.rows += 1
    with pytest.raises(StageError, match=f"{promise.rows - 1} rows instead of {promise.rows}"):
        read_all(VerifyingReader(io.BytesIO(body), promise))


def test_the_sink_compresses_in_chunks_not_per_write():
    out = io.BytesIO()
    sink = CompressingSink(out)
    sink.write(b"a\n" * 10)
    assert out.getvalue() == b""  # held until a chunk is full or the file ends
    sink.write(b"b\n" * CHUNK)
    assert out.getvalue() != b""


def bomb(inflated: int, byte: bytes = b"\n") -> tuple[bytes, Promise]:
    """A gzip of ``inflated`` repeated bytes (about 1000:1), with an honest promise."""
    body = b"".join(gzip_of_repeated_byte(byte, inflated, CHUNK))
    rows = inflated if byte == b"\n" else 0
    digest = hashlib.sha256(body).hexdigest()
    return body, Promise("etl-data/2026-11-25/r/t.tsv.gz", rows, len(body), inflated, digest)


def test_the_bombs_are_whole_gzip_files_of_their_bytes():
    # The bombs are assembled from one compressed chunk repeated: the standard library
    # reads them back whole (its CRC-32 and length checks included), at about 1000:1.
    for byte in (b"\n", b"x"):
        body, _ = bomb(8 * CHUNK, byte)
        assert gzip.decompress(body) == byte * (8 * CHUNK)
        assert len(body) * 900 < 8 * CHUNK


def test_each_read_inflates_at_most_one_chunk():
    # given 64 MiB that compress into less than one chunk of input
    body, promise = bomb(64 * CHUNK)
    assert len(body) < CHUNK // 10
    reader = VerifyingReader(io.BytesIO(body), promise)
    sizes = []
    while chunk := reader.read(CHUNK):
        sizes.append(len(chunk))
    reader.verify()
    assert max(sizes) <= CHUNK and sum(sizes) == 64 * CHUNK
    assert max(len(reader.read(100)) for _ in range(3)) == 0  # and nothing after the end


def test_a_file_that_inflates_beyond_its_promise_is_stopped_at_once():
    # given a manifest that promises a few KB, for a file that inflates to 64 MiB
    body, promise = bomb(64 * CHUNK)
    promise.uncompressed_bytes = 5000
    reader = VerifyingReader(io.BytesIO(body), promise)
    with pytest.raises(StageError, match="inflates to more than the 5000 bytes its manifest says"):
        read_all(reader)
    # one read of at most a chunk was inflated, then the reader stopped
    assert reader.uncompressed_bytes <= CHUNK


def test_a_promise_of_a_larger_inflated_size_is_refused():
    body, promise = written()
    promise.uncompressed_bytes += 1
    with pytest.raises(StageError, match=f"inflates to {len(ROWS)} bytes instead of"):
        read_all(VerifyingReader(io.BytesIO(body), promise))


def test_small_reads_stay_small_and_lose_nothing():
    body, promise = written()
    reader = VerifyingReader(io.BytesIO(body), promise)
    parts = []
    while chunk := reader.read(1000):
        assert len(chunk) <= 1000
        parts.append(chunk)
    reader.verify()
    assert b"".join(parts) == ROWS


@pytest.mark.parametrize("read_size", [CHUNK, 1000])
def test_a_line_of_the_bound_passes_and_one_byte_more_is_refused(read_size):
    # given rows around one as long as the bound, inflated across several reads
    short = b"1\tx\n" * 1000
    for length, refused in ((MAX_LINE_BYTES, False), (MAX_LINE_BYTES + 1, True)):
        body, promise = written(short + b"y" * length + b"\n" + short, piece=65536)
        reader = VerifyingReader(io.BytesIO(body), promise)
        if not refused:
            while reader.read(read_size):
                pass
            reader.verify()
            continue
        with pytest.raises(StageError, match=f"has a line longer than {MAX_LINE_BYTES} bytes"):
            while reader.read(read_size):
                pass
        assert reader.uncompressed_bytes <= len(short) + MAX_LINE_BYTES + read_size


def test_one_endless_line_is_stopped_within_a_chunk_of_the_bound():
    # given an honest promise of 64 MiB without a newline
    body, promise = bomb(64 * CHUNK, b"x")
    reader = VerifyingReader(io.BytesIO(body), promise)
    with pytest.raises(StageError, match="has a line longer than"):
        read_all(reader)
    assert reader.uncompressed_bytes <= MAX_LINE_BYTES + CHUNK


def test_the_inflated_size_is_bounded_whatever_the_promise(monkeypatch):
    # given a promise the manifest's check let through, over a bound lowered to 8 MiB
    monkeypatch.setattr(file_format, "MAX_UNCOMPRESSED_BYTES", 8 * CHUNK)
    body, promise = bomb(64 * CHUNK)
    reader = VerifyingReader(io.BytesIO(body), promise)
    with pytest.raises(StageError, match="inflates to more than"):
        read_all(reader)
    assert reader.uncompressed_bytes <= 9 * CHUNK
