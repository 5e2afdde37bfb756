"""Manifest parsing and validation, without a database: every refusal names the problem."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from dbt_project.contract.file_format import MAX_UNCOMPRESSED_BYTES
from dbt_project.contract.manifest import FORMAT_VERSION, MAX_MANIFEST_BYTES, FileEntry, Manifest
from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import contract
from dbt_project.errors import StageError
from dbt_project.facts.stage_layout import day_prefix, manifest_key

DAY = date(2026, 11, 25)
RUN_ID = "6f1c1d4e-2b7a-4c55-9a51-0d8f0e7f3a10"
KEY = manifest_key(DAY)


def document(**changes) -> dict:
    """A manifest as the extract writes it, with ``changes`` applied."""
    files = [
        {
            "table": name,
            "key": f"{day_prefix(DAY)}{RUN_ID}/{name}.tsv.gz",
            "rows": 3,
            "bytes": 120,
            "uncompressed_bytes": 400,
            "sha256": hashlib.sha256(name.encode()).hexdigest(),
            "format": "postgresql-text+gzip",
            **contract(name).as_manifest(),
        }
        for name in required_tables()
    ]
    base = {
        "run_id": RUN_ID,
        "run_date": DAY.isoformat(),
        "lookback_days": 2,
        "window_start_date": "2026-11-24",
        "business_timezone": "Asia/Tokyo",
        "extracted_at": "2026-11-26T02:00:01+09:00",
        "dbt_invocation_id": "abc",
        "files": files,
        "created_at": "2026-11-26T02:00:09+09:00",
        "dbt_artifacts": [],
        "format_version": FORMAT_VERSION,
    }
    base.update(changes)
    return base


def parse(doc: dict, key: str = KEY) -> Manifest:
    return Manifest.from_json(json.dumps(doc).encode(), key)


def with_file(name: str, **changes) -> dict:
    doc = document()
    for entry in doc["files"]:
        if entry["table"] == name:
            entry.update(changes)
    return doc


def test_a_manifest_the_extract_writes_round_trips():
    manifest = parse(document())
    assert manifest.run_date == DAY
    assert manifest.extracted_at == datetime(2026, 11, 25, 17, 0, 1, tzinfo=UTC)
    assert [f.table for f in manifest.files] == list(required_tables())
    assert Manifest.from_json(manifest.to_json(), KEY) == manifest
    assert manifest.file("customer_analytics").rows == 3


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (document(format_version=1), "format_version 1; this loader reads version 2"),
        (document(format_version=None), "format_version None; this loader reads version 2"),
        (document(run_id="not-a-uuid"), "run_id 'not-a-uuid' is not a UUID"),
        (document(run_date="2026-02-30"), "is not a valid manifest"),
        (document(lookback_days="two"), "is not a valid manifest"),
        ({k: v for k, v in document().items() if k != "files"}, "is not a valid manifest"),
        (with_file("daily_sales_summary", table="orders"), "'orders' is not part of the"),
        (
            with_file("daily_sales_summary", key="etl-data/2026-11-24/x.tsv.gz"),
            "is outside etl-data/2026-11-25/",
        ),
        (with_file("daily_sales_summary", key="etl-data/../secrets"), "is outside etl-data/"),
        (with_file("daily_sales_summary", format="csv"), "unknown format 'csv'"),
        (with_file("daily_sales_summary", sha256="00"), "has no valid SHA-256"),
        (with_file("daily_sales_summary", rows=-1), "has a negative size"),
        (with_file("daily_sales_summary", uncompressed_bytes=-1), "has a negative size"),
        (
            with_file("daily_sales_summary", columns=[{"name": "x", "type": "text"}]),
            "the columns of daily_sales_summary differ from its contract",
        ),
        (with_file("daily_sales_summary", primary_key=["region"]), "differ from its contract"),
        (
            with_file("customer_analytics", uncompressed_bytes=MAX_UNCOMPRESSED_BYTES + 1),
            f"customer_analytics would inflate to {MAX_UNCOMPRESSED_BYTES + 1} bytes, over the "
            f"loader's bound of {MAX_UNCOMPRESSED_BYTES}",
        ),
        (
            document(business_timezone="UTC"),
            "business_timezone 'UTC' is not the project's Asia/Tokyo; deploy the same",
        ),
        (document(business_timezone="Asia/Tokyo "), "business_timezone 'Asia/Tokyo ' is not"),
        (document(lookback_days=0), "lookback_days 0 is not from 1 to 400; re-run the extract"),
        (document(lookback_days=-3), "lookback_days -3 is not from 1 to 400"),
        (
            document(lookback_days=401, window_start_date="2025-10-21"),
            "lookback_days 401 is not from 1 to 400",
        ),
        (
            document(lookback_days=10**9, full_refresh=True),
            "lookback_days 1000000000 is not from 1 to 739945",
        ),
        (
            document(window_start_date="2026-11-20"),
            "window_start_date 2026-11-20 is not 2026-11-24, the first of the 2 days up to "
            "2026-11-25",
        ),
        (document(window_start_date="2099-01-01"), "window_start_date 2099-01-01 is not"),
    ],
)
def test_a_bad_manifest_is_refused_with_what_is_wrong(doc, message):
    with pytest.raises(StageError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse(doc)


def test_a_manifest_must_sit_at_its_own_day_and_list_each_table_once():
    with pytest.raises(StageError, match="a manifest must sit at etl-data/2026-11-25/"):
        parse(document(), manifest_key(date(2026, 11, 24)))
    doubled = document()
    doubled["files"].append(dict(doubled["files"][0]))
    with pytest.raises(StageError, match="lists customer_analytics twice"):
        parse(doubled)
    missing = document()
    missing["files"] = [f for f in missing["files"] if f["table"] != "run_window_days"]
    with pytest.raises(StageError, match="lacks files for run_window_days"):
        parse(missing)


def test_a_full_refresh_looks_back_to_the_first_order_however_long_ago():
    # three years of history: over the nightly bound of 400 days, as a full refresh may be
    manifest = parse(
        document(lookback_days=1096, window_start_date="2023-11-26", full_refresh=True)
    )
    assert (manifest.lookback_days, manifest.full_refresh) == (1096, True)


def facts(**changes) -> dict:
    """The extract's facts of its night, as it writes them."""
    written = {
        "trigger": "schedule",
        "extract_seconds": 12.5,
        "dbt_tests": {"pass": 40},
        "freshness": "pass",
        "freshness_sources": [],
    }
    return {**written, **changes}


def test_not_json_at_all_is_a_stage_error():
    with pytest.raises(StageError, match="is not a valid manifest"):
        Manifest.from_json(b"\x1f\x8b not json", KEY)


def test_what_the_extract_builds_is_what_the_loader_reads():
    # given the objects the unload constructs (columns as the contract's dicts)
    manifest = parse(document())
    entry = manifest.file("daily_sales_summary")
    rebuilt = FileEntry(
        table=entry.table,
        key=entry.key,
        rows=entry.rows,
        bytes=entry.bytes,
        uncompressed_bytes=entry.uncompressed_bytes,
        sha256=entry.sha256,
        **contract("daily_sales_summary").as_manifest(),
    )
    assert rebuilt == entry
    assert json.loads(manifest.to_json())["files"][2]["uncompressed_bytes"] == 400


def with_file_at(index: int, **changes) -> dict:
    doc = document()
    doc["files"][index].update(changes)
    return doc


def with_column_extra() -> dict:
    doc = document()
    doc["files"][0]["columns"][0]["comment"] = "x"
    return doc


def _not(name: str, doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != name}


def without_file_field(index: int, name: str) -> dict:
    doc = document()
    del doc["files"][index][name]
    return doc


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"[]", "the document: Input should be an object"),
        (b"null", "the document: Input should be an object"),
        (b"42", "the document: Input should be an object"),
        (b"{not json", "the document: Invalid JSON"),
        (b"[" * 100_000, "the document: Invalid JSON: recursion limit exceeded"),
        (with_file_at(2, rows="abc"), "files[2].rows: Input should be a valid integer"),
        (with_file_at(2, rows="5"), "files[2].rows: Input should be a valid integer"),
        (with_file_at(2, rows=5.0), "files[2].rows: Input should be a valid integer"),
        (with_file_at(2, rows=True), "files[2].rows: Input should be a valid integer"),
        (with_file_at(2, rows=None), "files[2].rows: Input should be a valid integer"),
        (with_file_at(2, columns=["x"]), "files[2].columns[0]: Input should be an object"),
        (with_file_at(2, primary_key="region"), "files[2].primary_key: Input should be a valid"),
        (with_file_at(1, sha256=None), "files[1].sha256: Input should be a valid string"),
        (with_file_at(0, extra=1), "files[0].extra: Extra inputs are not permitted"),
        (with_column_extra(), "files[0].columns[0].comment: Extra inputs are not permitted"),
        (
            without_file_field(0, "uncompressed_bytes"),
            "files[0].uncompressed_bytes: Field required",
        ),
        (document(**{"5": 1}), "['5']: Extra inputs are not permitted"),
        (document(owner="me"), "owner: Extra inputs are not permitted"),
        (document(files=None), "files: Input should be a valid array"),
        (document(files={"0": {}}), "files: Input should be a valid array"),
        (_not("files", document()), "files: Field required"),
        (document(run_id=7), "run_id: Input should be a valid string"),
        (document(run_date=None), "run_date: Input should be a valid date"),
        (document(run_date="2026-02-30"), "run_date: Input should be a valid date"),
        (document(lookback_days="2"), "lookback_days: Input should be a valid integer"),
        (document(extracted_at="2026-11-26T02:00:01"), "extracted_at: Input should have timezone"),
        (document(created_at=1764090009), "created_at: Input should be"),
        (document(dbt_artifacts=[1]), "dbt_artifacts[0]: Input should be a valid string"),
        (
            document(extract=facts(extract_seconds=float("nan"))),
            "extract.extract_seconds: Input should be a finite number",
        ),
        (
            document(extract=facts(extract_seconds=float("inf"))),
            "extract.extract_seconds: Input should be a finite number",
        ),
        (
            document(extract=facts(extract_seconds=-1.0)),
            "extract.extract_seconds: Input should be greater than or equal to 0",
        ),
        (
            document(extract=facts(dbt_tests={"pass": -4})),
            "extract.dbt_tests.pass: Input should be greater than or equal to 0",
        ),
    ],
)
def test_every_malformed_field_is_one_line_that_names_it(raw, where):
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    with pytest.raises(StageError) as refused:
        Manifest.from_json(data, KEY)
    message = str(refused.value)
    assert message.startswith(f"manifest {KEY} is not a valid manifest: {where}"), message
    assert "\n" not in message and len(message) < 400
    assert refused.value.__cause__ is None  # no pydantic report chained under it


def test_a_manifest_over_the_size_bound_is_refused_before_parsing():
    padded = json.dumps(document()).encode() + b" " * MAX_MANIFEST_BYTES
    with pytest.raises(StageError, match=f"larger than {MAX_MANIFEST_BYTES} bytes"):
        Manifest.from_json(padded, KEY)


# 02:00:01 on 26 November in Tokyo: the manifest's extracted_at, the night of the 25th.
EXTRACTED = datetime(2026, 11, 25, 17, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "now"),
    [
        ({}, EXTRACTED),
        # the extract's clock up to five minutes ahead of the loader's
        ({}, EXTRACTED - timedelta(minutes=5)),
        # the business day under way has begun: not in the future
        ({"extracted_at": "2026-11-25T00:00:00+09:00"}, datetime(2026, 11, 24, 15, tzinfo=UTC)),
        # five minutes before midnight in Tokyo, the next day is within the skew
        (
            {"extracted_at": "2026-11-24T23:55:00+09:00"},
            datetime(2026, 11, 24, 14, 55, tzinfo=UTC),
        ),
    ],
)
def test_a_manifest_of_the_past_or_present_is_not_from_the_future(changes, now):
    parse(document(**changes)).check_not_from_the_future(KEY, now)


@pytest.mark.parametrize(
    ("changes", "now", "message"),
    [
        (
            {"extracted_at": "2099-01-01T00:00:00+00:00"},
            EXTRACTED,
            re.escape(
                f"manifest {KEY}: extracted_at 2099-01-01T00:00:00+00:00 is later than now "
                "(2026-11-25T17:00:01+00:00, 5 minutes of clock skew allowed); no extract "
                "wrote it: do not load it, re-run the extract for that day"
            ),
        ),
        ({}, EXTRACTED - timedelta(minutes=5, seconds=1), "extracted_at .* is later than now"),
        # 23:54:59 on the 24th in Tokyo: the 25th has not begun, even with the skew
        (
            {"extracted_at": "2026-11-24T23:00:00+09:00"},
            datetime(2026, 11, 24, 14, 54, 59, tzinfo=UTC),
            r"run_date 2026-11-25 is later than today \(2026-11-24 in Asia/Tokyo\)",
        ),
    ],
)
def test_a_manifest_from_the_future_is_refused(changes, now, message):
    manifest = parse(document(**changes))
    with pytest.raises(StageError, match=message) as refused:
        manifest.check_not_from_the_future(KEY, now)
    assert "\n" not in str(refused.value)
