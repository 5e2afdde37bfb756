"""Manifest parsing and validation, without a database: every refusal names the problem."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime

import pytest

from dbt_project.analytics_schema import REQUIRED_TABLES
from dbt_project.contracts import contract
from dbt_project.errors import StageError
from dbt_project.layout import day_prefix, manifest_key
from dbt_project.manifest import Manifest

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
            "sha256": hashlib.sha256(name.encode()).hexdigest(),
            "format": "postgresql-text+gzip",
            **contract(name).as_manifest(),
        }
        for name in REQUIRED_TABLES
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
        "format_version": 1,
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
    assert [f.table for f in manifest.files] == list(REQUIRED_TABLES)
    assert Manifest.from_json(manifest.to_json(), KEY) == manifest
    assert manifest.file("customer_analytics").rows == 3


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (document(format_version=2), "format_version 2; this loader reads version 1"),
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
        (
            with_file("daily_sales_summary", columns=[{"name": "x", "type": "text"}]),
            "the columns of daily_sales_summary differ from its contract",
        ),
        (with_file("daily_sales_summary", primary_key=["region"]), "differ from its contract"),
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


def test_not_json_at_all_is_a_stage_error():
    with pytest.raises(StageError, match="is not a valid manifest"):
        Manifest.from_json(b"\x1f\x8b not json", KEY)
