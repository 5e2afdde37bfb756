"""Fault 6: a stage file changed after its manifest was written."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from dbt_project.stage import s3_client
from tests.faults import harness
from tests.pipeline_helpers import snapshot

NIGHT = 2


def _entry(manifest: dict, table: str) -> dict:
    return next(f for f in manifest["files"] if f["table"] == table)


def _truncate(body: bytes, manifest: dict, entry: dict) -> bytes:
    return body[: len(body) // 2]


def _flip_header(body: bytes, manifest: dict, entry: dict) -> bytes:
    # The gzip MTIME field: still a valid gzip stream with the same rows, so only
    # the SHA-256 can tell.
    return body[:4] + bytes([body[4] ^ 0xFF]) + body[5:]


def _flip_payload(body: bytes, manifest: dict, entry: dict) -> bytes:
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x55]) + body[middle + 1 :]


def _append_rows(body: bytes, manifest: dict, entry: dict) -> bytes:
    first_line = gzip.decompress(body).split(b"\n", 1)[0] + b"\n"
    return body + gzip.compress(first_line)


def _rows_added_and_manifest_resealed(body: bytes, manifest: dict, entry: dict) -> bytes:
    # A customer the night did not remove, appended; the file recompressed and the
    # manifest's sizes and SHA-256 rewritten to match: only the row count is left.
    rows = gzip.decompress(body) + b"987654\n"
    changed = gzip.compress(rows)
    entry.update(
        bytes=len(changed),
        sha256=hashlib.sha256(changed).hexdigest(),
        uncompressed_bytes=len(rows),
    )
    return changed


# The error the loader gives for each change, filled in with the file's key, the
# manifest's bytes and rows, and the changed file's size.
CASES = {
    "truncated": (
        _truncate,
        "customer_analytics",
        "{key} does not match its manifest: {size} bytes instead of {bytes}; "
        "its SHA-256 differs from the manifest's",
    ),
    "gzip header byte flipped": (
        _flip_header,
        "customer_analytics",
        "{key} does not match its manifest: its SHA-256 differs from the manifest's. "
        "It was changed or damaged after the extract",
    ),
    "payload byte flipped": (
        _flip_payload,
        "product_sales_summary",
        "{key} is corrupted (Error -3 while decompressing data: ",
    ),
    "rows appended": (
        _append_rows,
        "daily_sales_summary",
        "{key} is larger than its manifest says ({bytes} bytes): it was changed after the extract",
    ),
    "a row added, manifest size and SHA-256 rewritten to match": (
        _rows_added_and_manifest_resealed,
        "run_window_removed_customers",
        "{key} does not match its manifest: {rows_plus_one} rows instead of {rows}. "
        "It was changed or damaged after the extract",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_stage_file_is_refused_and_changes_nothing(
    case, fault, nights, new_target, capsys
):
    change, table, expected_error = CASES[case]
    record = fault(
        f"6. stage file changed after the manifest: {case}",
        f"{table} file of night {NIGHT} on S3 {case}; loaded with `etl load`",
    )
    target = new_target()
    bucket = nights.bucket()
    nights.seed(target, bucket, NIGHT)
    key = nights.keys[NIGHT]
    client = s3_client()
    manifest = json.loads(nights.objects[key])
    entry = _entry(manifest, table)
    original = nights.objects[entry["key"]]
    manifest_bytes = entry["bytes"]
    changed = change(original, manifest, entry)
    client.put_object(Bucket=bucket, Key=entry["key"], Body=changed)
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    before = snapshot(target)

    code, out, err = harness.etl_here(*harness.load_args(bucket, key, target), capsys=capsys)
    assert code == 5, (out, err)
    assert "re-run the extract for that day" in err
    expected = expected_error.format(
        key=entry["key"],
        bytes=manifest_bytes,
        rows=entry["rows"],
        rows_plus_one=entry["rows"] + 1,
        size=len(changed),
    )
    assert expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    record.check(f"refused, exit 5: {harness.said(err)}")
    assert snapshot(target) == before
    assert nights.run_ids[NIGHT] not in [row[0] for row in harness.ledger(target)]
    record.check("target and ledger unchanged")

    # A re-extract writes the night anew: here, the original bytes and manifest again.
    client.put_object(Bucket=bucket, Key=entry["key"], Body=original)
    client.put_object(Bucket=bucket, Key=key, Body=nights.objects[key])
    code, out, err = harness.etl_here(*harness.load_args(bucket, key, target), capsys=capsys)
    assert code == 0 and ": loaded," in out, err
    harness.load_all(target, harness.stage_for(bucket), nights.fault_keys[NIGHT + 1 :])
    assert snapshot(target) == nights.final
    record.check("the intact night then loads; target equals the clean run")
