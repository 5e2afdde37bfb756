"""What a stage is: the interface both kinds implement, and the keys it accepts.

Writers stream: nothing holds a whole file in memory. A file becomes visible only
when its writer closes cleanly (rename locally, multipart completion on S3), so a
failed unload never leaves a half-written object that a reader could take for data.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol

from dbt_project.errors import StageError
from dbt_project.facts.stage_layout import DATA_PREFIX, DOCS_PAGES


class Writer(Protocol):
    def write(self, data: bytes) -> int: ...


class Stage(Protocol):
    uri: str

    def writer(self, key: str) -> AbstractContextManager[Writer]: ...
    def reader(self, key: str) -> AbstractContextManager[BinaryIO]: ...
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...
    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str) -> list[str]: ...
    def describe(self, key: str) -> str: ...


def read_whole(handle: BinaryIO, where: str, max_bytes: int | None) -> bytes:
    """The whole object, or StageError once it is over ``max_bytes``: never more is read."""
    if max_bytes is None:
        return handle.read()
    data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise StageError(
            f"stage file {where} is larger than {max_bytes} bytes, the most read of it; "
            "it is not what the extract writes: re-run the extract for that day"
        )
    return data


def check_key(key: str) -> str:
    """Keys are relative, under ``etl-data/``, with no way out of it (or a docs page)."""
    if key in DOCS_PAGES:
        return key
    parts = key.split("/")
    if (
        not key.startswith(DATA_PREFIX)
        or key.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or "\\" in key
        or "\x00" in key
    ):
        raise StageError(
            f"stage key {key!r} is outside {DATA_PREFIX}: manifests and files must live under "
            f"{DATA_PREFIX}YYYY-MM-DD/"
        )
    return key
