"""A stage in a local folder: used by the demo and the tests, and handy for debugging
a night.

The loader loads what it finds there, so another user of the machine must not be able
to choose it. Every folder from the stage's root down to a file, and the file itself,
is opened one name at a time from its parent's descriptor, never through a symbolic
link (``O_NOFOLLOW``), and judged by the status of what was opened
(``dbt_project.files``): it must belong to this user and be writable by no one else.
The folders the stage makes are 0700, its files 0600.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from dbt_project.errors import StageError
from dbt_project.files import status_reason
from dbt_project.stage.base import Writer, check_key, read_whole

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FIX = (
    "Give the stage a folder of this user's own that no one else may write to "
    "(chmod go-w), then re-run the extract for that day"
)


def _unsafe(where: Path, reason: str) -> StageError:
    return StageError(
        f"stage path {where} is not safe to use: {reason}; another user could plant or "
        f"change the files the load reads. {_FIX}"
    )


def _open(name: str | Path, flags: int, where: Path, *, dir_fd: int | None, missing: Path):
    """``os.open`` of one name (``where``), never through a symbolic link; a missing one
    is said as ``missing``, the file that was asked for."""
    try:
        return os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise StageError(f"stage file {missing} does not exist; re-run the extract") from exc
    except OSError as exc:
        # O_NOFOLLOW refuses a link with ELOOP, or ENOTDIR where a folder was asked for.
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        link = os.path.islink(where)
        raise _unsafe(where, "it is a symbolic link" if link else "it is not a folder") from exc


def _judged(fd: int, where: Path, *, folder: bool) -> int:
    """``fd`` if what it opened is this user's alone (and of the kind expected), else
    closed and refused."""
    info = os.fstat(fd)
    reason = status_reason(info)
    if reason is None and not (stat.S_ISDIR if folder else stat.S_ISREG)(info.st_mode):
        reason = "it is not a folder" if folder else "it is not a regular file"
    if reason is not None:
        os.close(fd)
        raise _unsafe(where, reason)
    return fd


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
    def _folder(self, names: Sequence[str], *, create: bool, missing: Path) -> Iterator[int]:
        """A descriptor of the folder ``root/names...``, each step judged; ``create``
        makes missing folders (0700) on the way, else ``missing`` is said not to exist."""
        if create:
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=0o700, parents=True)
        where = self.root
        fd = _judged(_open(where, _FOLDER, where, dir_fd=None, missing=missing), where, folder=True)
        try:
            for name in names:
                where = where / name
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=fd)
                opened = _open(name, _FOLDER, where, dir_fd=fd, missing=missing)
                inner = _judged(opened, where, folder=True)
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        *folders, name = check_key(key).split("/")
        path = self._path(key)
        with self._folder(folders, create=True, missing=path) as folder:
            part = f".part-{secrets.token_hex(8)}"
            handle = os.fdopen(_open(part, _CREATE, path, dir_fd=folder, missing=path), "wb")
            try:
                with handle:
                    yield handle
                # Visible only once complete: a reader sees the old file or the new one.
                os.replace(part, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(part, dir_fd=folder)
                raise

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        *folders, name = check_key(key).split("/")
        path = self._path(key)
        with self._folder(folders, create=False, missing=path) as folder:
            opened = _open(name, _READ, path, dir_fd=folder, missing=path)
            fd = _judged(opened, path, folder=False)
        with os.fdopen(fd, "rb") as handle:
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
