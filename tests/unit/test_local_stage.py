"""A local stage reads and writes only what this user alone could have written: no
symbolic link is followed, and no folder or file another user owns or may write to is
used, from the stage's root down."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dbt_project.errors import StageError
from dbt_project.stage import LocalStage

KEY = "etl-data/2026-11-20/run/customer_analytics.tsv.gz"
# nobody: a user id that is not this one (tests that need it chown as root)
ANOTHER_USER = 65534


@pytest.fixture
def stage(tmp_path) -> LocalStage:
    stage = LocalStage(tmp_path / "stage")
    stage.put_bytes(KEY, b"the extract's bytes")
    return stage


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_stage_makes_its_folders_and_files_private(stage):
    # every folder the writer made, and the file, are this user's alone
    path = Path(stage.describe(KEY))
    folders = [stage.root, *(p for p in path.parents if stage.root in p.parents)]
    assert {_mode(f) for f in folders} == {0o700}
    assert _mode(path) == 0o600
    assert stage.get_bytes(KEY) == b"the extract's bytes"


def _link_to_another_file(stage, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("not the stage's")
    path = Path(stage.describe(KEY))
    path.unlink()
    path.symlink_to(secret)
    return path


def _link_a_folder(stage, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "run").mkdir(parents=True, mode=0o700)
    (elsewhere / "run" / "customer_analytics.tsv.gz").write_bytes(b"planted")
    day = Path(stage.describe(KEY)).parents[1]
    (day / "run").rename(tmp_path / "moved")
    (day / "run").symlink_to(elsewhere / "run")
    return day / "run"


def _world_writable_folder(stage, tmp_path):
    day = Path(stage.describe(KEY)).parents[1]
    day.chmod(0o777)
    return day


def _world_writable_root(stage, tmp_path):
    stage.root.chmod(0o1777)  # as /tmp is: sticky does not keep others from planting
    return stage.root


def _group_writable_file(stage, tmp_path):
    path = Path(stage.describe(KEY))
    path.chmod(0o620)
    return path


def _another_users_folder(stage, tmp_path):
    if os.geteuid() == 0:
        folder = Path(stage.describe(KEY)).parent
        os.chown(folder, ANOTHER_USER, ANOTHER_USER)
        return folder
    # Not root: a stage at the file system's root, which root owns.
    stage.root = Path("/")
    return stage.root


PLANTED = {
    "file linked elsewhere": (_link_to_another_file, "it is a symbolic link"),
    "folder linked elsewhere": (_link_a_folder, "it is a symbolic link"),
    "world-writable folder": (_world_writable_folder, "its mode drwxrwxrwx lets other users"),
    "world-writable root": (_world_writable_root, "its mode drwxrwxrwt lets other users"),
    "group-writable file": (_group_writable_file, "its mode -rw--w---- lets other users"),
    "another user's folder": (_another_users_folder, "it belongs to user id"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_what_another_user_could_have_planted_is_not_read(stage, tmp_path, case):
    plant, reason = PLANTED[case]
    where = plant(stage, tmp_path)
    with pytest.raises(StageError) as refused:
        stage.get_bytes(KEY)
    message = str(refused.value)
    assert f"stage path {where} is not safe to use: {reason}" in message, message
    assert "another user could plant" in message and "\n" not in message


@pytest.mark.parametrize("case", ["world-writable folder", "folder linked elsewhere"])
def test_nothing_is_written_through_what_another_user_could_have_planted(stage, tmp_path, case):
    plant, reason = PLANTED[case]
    plant(stage, tmp_path)
    with pytest.raises(StageError, match=reason):
        stage.put_bytes("etl-data/2026-11-20/run/_manifest.json", b"{}")
    written = [p.name for p in tmp_path.rglob("*") if p.name.startswith(("_manifest", ".part"))]
    assert written == []


def test_a_missing_file_names_the_file(stage):
    missing = "etl-data/2026-11-21/run/customer_analytics.tsv.gz"
    with pytest.raises(StageError, match=f"stage file {stage.describe(missing)} does not exist"):
        stage.get_bytes(missing)
