"""TLS that checks who it talks to: a PostgreSQL server with TLS on, certificates made here.

verify-full with the right CA connects; a wrong CA or a wrong host name is refused at
once (no retry loop) with one clear line, exit 3, as is a login the server does not
know.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dbt_project.cli.main import main
from dbt_project.errors import CredentialsError
from dbt_project.local import server as local_pg
from dbt_project.postgres.connection import PgSettings, connect

PASSWORD = "tls-test"


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


def make_server_cert(ca_key, ca_cert):
    """A certificate for 127.0.0.1 only: "localhost" is a different host name."""
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
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def server_bin() -> Path:
    """Debian's PostgreSQL server: the embedded one is built without TLS support."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    assert found, (
        "the TLS tests need a PostgreSQL server built with TLS: apt-get install postgresql "
        "(.ci/run installs it)"
    )
    return found[-1].parent


def as_server_user(args: list[str], owner) -> None:
    """PostgreSQL refuses to run as root: run it as the data directory's owner."""
    extra = {"user": owner.st_uid, "group": owner.st_gid} if os.geteuid() == 0 else {}
    subprocess.run(args, check=True, capture_output=True, timeout=90, **extra)


def write_private(path: Path, body: bytes, owner, mode: int) -> None:
    path.write_bytes(body)
    if os.geteuid() == 0:
        os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(mode)


@pytest.fixture(scope="module")
def tls_server():
    """A server with ssl = on, its certificate signed by a CA made here."""
    bin_dir, folder = server_bin(), Path(tempfile.mkdtemp(prefix="etltls-"))
    data_dir, port = folder / "data", local_pg.free_port()
    data_dir.mkdir()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (folder, data_dir):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    owner = data_dir.stat()
    ca_key, ca_cert = make_ca("shop test CA")
    key, cert = make_server_cert(ca_key, ca_cert)
    write_private(folder / "pw", PASSWORD.encode(), owner, 0o600)
    as_server_user(
        [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth-local=trust"]
        + ["--auth-host=scram-sha-256", f"--pwfile={folder / 'pw'}"],
        owner,
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_private(data_dir / "server.crt", pem(cert), owner, 0o644)
    write_private(data_dir / "server.key", key_pem, owner, 0o600)
    options = f"-h 127.0.0.1 -p {port} -k {data_dir} -c ssl=on -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-w"]
    as_server_user([*pg_ctl, "-o", options, "-l", str(data_dir / "log"), "start"], owner)
    try:
        (folder / "ca.pem").write_bytes(pem(ca_cert))
        (folder / "other-ca.pem").write_bytes(pem(make_ca("some other CA")[1]))
        admin = PgSettings("127.0.0.1", port, "postgres", "postgres", PASSWORD)
        yield {"admin": admin, "ca": str(folder / "ca.pem"), "other": str(folder / "other-ca.pem")}
    finally:
        as_server_user([*pg_ctl, "-m", "fast", "stop"], owner)


def settings(server, *, host="127.0.0.1", ca=None, user="postgres", sslmode="verify-full"):
    admin = server["admin"]
    return PgSettings(host, admin.port, "postgres", user, PASSWORD, sslmode, ca or server["ca"])


def test_verify_full_with_the_right_ca_connects_over_tls(tls_server):
    conn = connect(settings(tls_server), wait_seconds=5)
    with conn.cursor() as cur:
        cur.execute("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()")
        encrypted, version = cur.fetchone()
    conn.close()
    assert encrypted and version.startswith("TLS")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"ca": "other"}, "certificate verify failed"),
        ({"host": "localhost"}, 'does not match host name "localhost"'),
    ],
)
def test_a_server_that_cannot_prove_who_it_is_is_refused_at_once(tls_server, changes, reason):
    if changes.get("ca"):
        changes = {**changes, "ca": tls_server[changes["ca"]]}
    started = time.monotonic()
    with pytest.raises(CredentialsError, match=reason) as refused:
        connect(settings(tls_server, **changes), wait_seconds=60)
    # An answer, not an outage: no retry loop over the 60 s.
    assert time.monotonic() - started < 10
    assert "sslrootcert" in str(refused.value)


def cli_line(args: list[str], capsys) -> tuple[int, list[str]]:
    code = main(args)
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("url_changes", "reason"),
    [
        ({"ca": "other"}, "certificate verify failed"),
        ({"host": "localhost"}, 'does not match host name "localhost"'),
        ({"user": "nobody"}, 'password authentication failed for user "nobody"'),
    ],
)
def test_the_cli_says_why_in_one_line_and_exits_3(
    tls_server, tmp_path, capsys, url_changes, reason
):
    if url_changes.get("ca"):
        url_changes = {**url_changes, "ca": tls_server[url_changes["ca"]]}
    url = settings(tls_server, **url_changes).url
    assert "sslmode=verify-full" in url and "sslrootcert=" in url
    args = ["extract", "--date", "2026-11-25", "--source-url", url, "--stage", str(tmp_path)]
    started = time.monotonic()
    code, lines = cli_line(args, capsys)
    assert (code, len(lines)) == (3, 1), lines
    assert reason in lines[0] and lines[0].startswith("etl: error: "), lines
    assert PASSWORD not in lines[0]
    assert time.monotonic() - started < 10
    assert not list(tmp_path.iterdir())  # nothing staged


def test_settings_never_show_the_password():
    secret = PgSettings("h", 5432, "db", "u", "s3cr3t-value", "verify-full", "/ca.pem")
    assert "s3cr3t-value" not in repr(secret)
    assert "s3cr3t-value" not in secret.display
