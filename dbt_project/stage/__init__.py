"""The stage between the two databases: a local folder or an S3 prefix, behind one
interface (``Stage``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from dbt_project.errors import ConfigError
from dbt_project.stage.base import Stage, Writer, check_key
from dbt_project.stage.local import LocalStage
from dbt_project.stage.s3 import PART_SIZE, S3Stage, s3_client

__all__ = [
    "PART_SIZE",
    "LocalStage",
    "S3Stage",
    "Stage",
    "Writer",
    "check_key",
    "open_stage",
    "s3_client",
]


def open_stage(uri: str | None, *, s3_max_attempts: int | None = None) -> Stage:
    """``s3://bucket/prefix`` or a local folder path (``file://`` accepted)."""
    if not uri:
        raise ConfigError(
            "no stage given: pass --stage (a folder or s3://bucket/prefix) or set ETL_STAGE"
        )
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return S3Stage(parts.netloc, parts.path, client=s3_client(s3_max_attempts))
    if parts.scheme == "file":
        return LocalStage(Path(parts.path))
    if parts.scheme:
        raise ConfigError(f"unsupported stage {uri!r}: use a folder path or s3://bucket/prefix")
    return LocalStage(Path(uri))
