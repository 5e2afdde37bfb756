"""Both stages behave alike: streamed writes, visible only when complete, keys kept in etl-data/."""

from __future__ import annotations

import os

import pytest

from dbt_project.errors import StageError
from dbt_project.stage import PART_SIZE, LocalStage, S3Stage, open_stage


@pytest.fixture(params=["local", "s3"])
def stage(request, tmp_path):
    if request.param == "local":
        return LocalStage(tmp_path / "stage")
    bucket = request.getfixturevalue("s3_bucket")
    return open_stage(f"s3://{bucket}/team-a")


def test_a_streamed_file_round_trips_across_parts(stage):
    payload = os.urandom(PART_SIZE // 3)
    with stage.writer("etl-data/2026-11-20/run/x.gz") as out:
        for _ in range(7):  # > 2 parts on S3
            out.write(payload)
    assert stage.get_bytes("etl-data/2026-11-20/run/x.gz") == payload * 7
    assert stage.list("etl-data/2026-11-20/") == ["etl-data/2026-11-20/run/x.gz"]


def test_a_failed_write_leaves_nothing_behind(stage):
    with pytest.raises(RuntimeError), stage.writer("etl-data/2026-11-20/y.gz") as out:
        out.write(os.urandom(PART_SIZE + 10))  # one part sent: a multipart upload begun
        raise RuntimeError("the COPY broke")
    assert not stage.exists("etl-data/2026-11-20/y.gz")
    assert stage.list("etl-data/") == []
    if isinstance(stage, S3Stage):
        # no upload left open, whose parts S3 would keep (and bill) until a lifecycle rule
        uploads = stage.client.list_multipart_uploads(Bucket=stage.bucket)
        assert uploads.get("Uploads", []) == []
    else:
        assert [p.name for p in stage.root.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "key", ["../x", "etl-data/../../x", "/etc/passwd", "other/2026-11-20/x", "etl-data//x"]
)
def test_keys_outside_etl_data_are_refused(stage, key):
    with pytest.raises(StageError, match="outside etl-data/"):
        stage.put_bytes(key, b"x")


def test_a_missing_file_is_a_clear_error(stage):
    with pytest.raises(StageError, match="does not exist; re-run the extract"):
        stage.get_bytes("etl-data/2026-11-20/missing.gz")


def test_s3_stage_uses_the_prefix(s3_bucket):
    stage = open_stage(f"s3://{s3_bucket}/team-a")
    assert isinstance(stage, S3Stage)
    stage.put_bytes("etl-data/2026-11-20/_manifest.json", b"{}")
    keys = [o["Key"] for o in stage.client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["team-a/etl-data/2026-11-20/_manifest.json"]
