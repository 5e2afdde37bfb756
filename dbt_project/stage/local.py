"""A stage in a local folder: used by the demo and the tests, and handy for debugging
a night."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dbt_project.errors import StageError
from dbt_project.stage.base import Writer, check_key, read_whole


class LocalStage:
    """A folder on this machine."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def describe(self, key: str) -> str:
        return str(self._path(key))

    @contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError as exc:
            raise StageError(f"stage file {path} does not exist; re-run the extract") from exc
        with handle:
            yield handle

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        with self.writer(key) as handle:
            handle.write(data)

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        with self.reader(key) as handle:
            return read_whole(handle, self.describe(key), max_bytes)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file())

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self.root / check_key(prefix), ignore_errors=True)
