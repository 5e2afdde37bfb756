"""Files this process reads back that another local user could have planted.

The work folder (dbt's target and logs, the kept dbt parses) and a local stage hold
files that are read again later: a parse is unpickled, a manifest is loaded. If
another user of the machine can write there, they choose what this process runs or
loads. So such a folder, and each file read from it, must belong to the user running
the command (or to root, for read-only install trees such as Lambda's /opt) and be
writable by no one else.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from dbt_project.errors import ConfigError

_OTHERS_MAY_WRITE = stat.S_IWGRP | stat.S_IWOTH


def unsafe_reason(path: Path, *, root_may_own: bool = False) -> str | None:
    """Why another user could have written ``path`` (not following a symbolic link),
    or None when only this user (or root, if allowed) could have."""
    return status_reason(path.lstat(), root_may_own=root_may_own)


def status_reason(info: os.stat_result, *, root_may_own: bool = False) -> str | None:
    """``unsafe_reason`` of a status already taken: an ``os.fstat`` of an open file
    judges the very file that will be read, not a path another user may swap."""
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link"
    owners = {os.geteuid(), 0} if root_may_own else {os.geteuid()}
    if info.st_uid not in owners:
        return f"it belongs to user id {info.st_uid}, not to this user ({os.geteuid()})"
    if info.st_mode & _OTHERS_MAY_WRITE:
        return f"its mode {stat.filemode(info.st_mode)} lets other users write to it"
    return None


def private_folder(path: Path, what: str, *, fix: str) -> Path:
    """``path`` as a folder only this user may write to: made (mode 0700) if missing,
    else checked; ConfigError naming the folder, the reason and ``fix`` otherwise."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    reason = unsafe_reason(path)
    if reason is None and not path.is_dir():
        reason = "it is not a folder"
    if reason is not None:
        raise ConfigError(
            f"{what} {path} is not safe to read back: {reason}; another user could plant "
            f"files there. {fix}"
        )
    return path
