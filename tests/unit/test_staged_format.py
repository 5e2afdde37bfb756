"""The staged format's two halves: what the sink writes, the reader takes back, and the
reader refuses any byte that is not what the manifest promised."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

import pytest

from dbt_project.errors import StageError
from dbt_project.staged_format import CHUNK, CompressingSink, VerifyingReader

ROWS = b"".join(b"%d\tcustomer %d\t12.50\n" % (i, i) for i in range(50_000))


@dataclass
class Promise:
    key: str
    rows: int
    bytes: int
    sha256: str


def written(data: bytes = ROWS, *, piece: int = 4096) -> tuple[bytes, Promise]:
    out = io.BytesIO()
    sink = CompressingSink(out)
    for start in range(0, len(data), piece):  # COPY hands over a row or so at a time
        sink.write(data[start : start + piece])
    sink.finish()
    body = out.getvalue()
    return body, Promise(
        "etl-data/2026-11-25/r/t.tsv.gz", sink.rows, sink.bytes, sink.sha256.hexdigest()
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
