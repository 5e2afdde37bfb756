"""The checks of a folder or file this process reads back: made private, or refused
with the reason another user could have written it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dbt_project.errors import ConfigError
from dbt_project.files import private_folder, unsafe_reason

FIX = "Remove it, or point ETL_WORK_DIR elsewhere."


def test_a_missing_folder_is_made_private_and_an_own_one_is_kept(tmp_path):
    made = private_folder(tmp_path / "work" / "dbt", "the work folder", fix=FIX)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert private_folder(made, "the work folder", fix=FIX) == made
    assert unsafe_reason(made) is None


def _world_writable(path: Path) -> None:
    path.mkdir()
    path.chmod(0o777)


def _file(path: Path) -> None:
    path.write_text("x")
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_world_writable, "its mode drwxrwxrwx lets other users write to it"),
        (lambda path: path.symlink_to(path.parent), "it is a symbolic link"),
        (_file, "it is not a folder"),
    ],
    ids=["world-writable", "symbolic link", "a file"],
)
def test_a_folder_another_user_could_have_written_is_refused(tmp_path, make, reason):
    path = tmp_path / "work"
    make(path)
    with pytest.raises(ConfigError) as refused:
        private_folder(path, "the work folder", fix=FIX)
    assert str(refused.value) == (
        f"the work folder {path} is not safe to read back: {reason}; another user could "
        f"plant files there. {FIX}"
    )


def test_root_may_own_an_install_tree_only_when_allowed():
    # / belongs to root, as Lambda's read-only /opt does
    root = Path("/")
    expected = (
        None if os.geteuid() == 0 else f"it belongs to user id 0, not to this user ({os.geteuid()})"
    )
    assert unsafe_reason(root) == expected
    assert unsafe_reason(root, root_may_own=True) is None
