"""A PostgreSQL server with TLS, its certificate signed by a CA made here: what the
deployed functions' verify-full connections are tested against.

Debian's PostgreSQL server runs it (the embedded one is built without TLS). It logs
every connection with its TLS state and every DDL statement, so a test can read what
the server saw. The functions' logins exist from the start, with the password that
stands in for their IAM tokens (``LOGIN_PASSWORD``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg2 import sql

from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.postgres.connection import PgSettings, connect

PASSWORD = "tls-test"
# On AWS the functions' logins use IAM tokens; here a password stands in for the token.
LOGIN_PASSWORD = "login-test"
# The host name the server's certificate names: an address, as the tests reach it.
CERTIFIED_HOST = "127.0.0.1"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert, host: str = CERTIFIED_HOST):
    """A certificate for ``host`` only (an address or a DNS name): "localhost" is a
    different host name from 127.0.0.1."""
    try:
        name = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        name = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("shop-db"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def server_bin() -> Path:
    """Debian's PostgreSQL server: the embedded one is built without TLS support."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, (
        "the TLS tests need a PostgreSQL server built with TLS: apt-get install postgresql "
        "(.ci/run installs it)"
    )
    return found[-1].parent


def _as_owner(args: list[str], owner: os.stat_result) -> None:
    """PostgreSQL refuses to run as root: run it as the data directory's owner."""
    extra = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    subprocess.run(args, check=True, capture_output=True, timeout=90, **extra)


def _write_private(path: Path, body: bytes, owner: os.stat_result, mode: int) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(body)
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(mode)


@dataclass
class TlsServer:
    """A running server; ``admin`` connects as its superuser over verify-full."""

    folder: Path
    port: int
    ca_key: object
    ca_cert: object

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def ca(self) -> str:
        """The CA bundle that verifies the server."""
        return str(self.folder / "ca.pem")

    @property
    def other_ca(self) -> str:
        """A CA bundle that does not."""
        return str(self.folder / "other-ca.pem")

    @property
    def log(self) -> Path:
        return self.data_dir / "log"

    @property
    def admin(self) -> PgSettings:
        return PgSettings(
            CERTIFIED_HOST, self.port, "postgres", "postgres", PASSWORD, "verify-full", self.ca
        )

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")

    def _install_certificate(self, key, cert) -> None:
        owner = self.data_dir.stat()
        _write_private(self.data_dir / "server.crt", pem(cert), owner, 0o644)
        _write_private(self.data_dir / "server.key", key_pem(key), owner, 0o600)

    @contextmanager
    def certificate_for(self, host: str) -> Iterator[None]:
        """While in the block, new sessions are shown a certificate of the same CA for
        ``host``; sessions already open keep theirs."""
        self._install_certificate(*make_server_cert(self.ca_key, self.ca_cert, host))
        self._reload()
        try:
            yield
        finally:
            self._install_certificate(*make_server_cert(self.ca_key, self.ca_cert))
            self._reload()

    def _reload(self) -> None:
        # A signal, not pg_reload_conf(): a session could not verify the certificate that
        # is about to go.
        pg_ctl = [str(server_bin() / "pg_ctl"), "-D", str(self.data_dir), "reload"]
        _as_owner(pg_ctl, self.data_dir.stat())
        # The postmaster reloads asynchronously: a new session shows the new certificate
        # once it has.
        time.sleep(0.5)

    def stop(self) -> None:
        pg_ctl = [str(server_bin() / "pg_ctl"), "-D", str(self.data_dir), "-w"]
        _as_owner([*pg_ctl, "-m", "fast", "stop"], self.data_dir.stat())
        shutil.rmtree(self.folder, ignore_errors=True)


def start_tls_server(
    folder: Path,
    port: int,
    *,
    ca: tuple | None = None,
    logins: tuple[str, ...] = (EXTRACT_LOGIN, LOAD_LOGIN),
) -> TlsServer:
    """initdb, a certificate for 127.0.0.1 signed by ``ca`` (key, certificate; default a
    new one), ``ssl = on``, and ``logins``."""
    bin_dir, data_dir = server_bin(), folder / "data"
    data_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (folder, data_dir):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    owner = data_dir.stat()
    _write_private(folder / "pw", PASSWORD.encode(), owner, 0o600)
    _as_owner(
        [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth-local=trust"]
        + ["--auth-host=scram-sha-256", f"--pwfile={folder / 'pw'}", "--encoding=UTF8"]
        + ["--locale=C.UTF-8"],
        owner,
    )
    ca_key, ca_cert = ca or make_ca("shop test CA")
    server = TlsServer(folder, port, ca_key, ca_cert)
    server._install_certificate(*make_server_cert(ca_key, ca_cert))
    # Every connection with its TLS state, and every DDL statement: what the tests read.
    options = (
        f"-h {CERTIFIED_HOST} -p {port} -k {data_dir} -c ssl=on -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c log_connections=on "
        "-c log_statement=ddl"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-w"]
    _as_owner([*pg_ctl, "-o", options, "-l", str(server.log), "start"], owner)
    (folder / "ca.pem").write_bytes(pem(ca_cert))
    (folder / "other-ca.pem").write_bytes(pem(make_ca("some other CA")[1]))
    create_function_logins(server.admin, logins)
    return server


def create_function_logins(admin: PgSettings, logins: tuple[str, ...]) -> None:
    """The functions' logins with the stand-in token as their password (roles are the
    server's: `etl init` in any database finds them and leaves the password alone)."""
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        for login in logins:
            cur.execute(
                sql.SQL("create role {} login password %s").format(sql.Identifier(login)),
                (LOGIN_PASSWORD,),
            )
    conn.close()
