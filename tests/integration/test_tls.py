"""TLS that checks who it talks to: a PostgreSQL server with TLS on, certificates made here.

verify-full with the right CA connects; a wrong CA or a wrong host name is refused at
once (no retry loop) with one clear line, exit 3, before dbt starts, as is a login the
server does not know. A whole night over verify-full encrypts every session, dbt's
too, and dbt checks the server's host name as the pipeline does.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import date

import pytest

from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import CredentialsError, LoginRefused
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests.tls_server import LOGIN_PASSWORD, PASSWORD


def settings(server, *, host="127.0.0.1", ca=None, user="postgres", sslmode="verify-full"):
    return PgSettings(host, server.port, "postgres", user, PASSWORD, sslmode, ca or server.ca)


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
        changes = {**changes, "ca": tls_server.other_ca}
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
        url_changes = {**url_changes, "ca": tls_server.other_ca}
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


# -- the pipeline over verify-full: every session, dbt's too -----------------------------

DAY = date(2026, 11, 25)


@pytest.fixture(scope="module")
def tls_shop(module_tls_database, tls_server):
    """A source with the sample history and an analytics database on the TLS server,
    made by `etl init` as the administrator; the URLs of the functions' logins."""
    source, target = module_tls_database("src"), module_tls_database("tgt")
    init = ["init", "--source-url", source.url, "--analytics-url", target.url]
    assert main([*init, "--sample-data", "--sample-end-date", DAY.isoformat()]) == 0
    return {
        "source": source,
        "target": target,
        "extract": source.with_credentials(EXTRACT_LOGIN, LOGIN_PASSWORD),
        "load": target.with_credentials(LOAD_LOGIN, LOGIN_PASSWORD),
    }


class SslSampler:
    """What pg_stat_ssl shows of the functions' logins' sessions, sampled while a block
    runs: (application_name, ssl) pairs."""

    def __init__(self, admin: PgSettings):
        self.admin, self.seen = admin, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        conn = connect(self.admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self._stop.wait(0.05):
                cur.execute(
                    "select a.application_name, s.ssl from pg_stat_activity a "
                    "join pg_stat_ssl s using (pid) where a.usename in (%s, %s)",
                    (EXTRACT_LOGIN, LOAD_LOGIN),
                )
                self.seen.update(cur.fetchall())
        conn.close()

    def __enter__(self) -> SslSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(10)


def authorized_connections(log: str) -> list[str]:
    return [line for line in log.splitlines() if "connection authorized: user=etl_" in line]


def test_a_whole_run_over_verify_full_encrypts_every_session_dbt_s_too(
    tls_shop, tls_server, tmp_path, capsys
):
    # given the functions' logins, verify-full against the test CA
    for name in ("extract", "load"):
        assert "sslmode=verify-full" in tls_shop[name].url
    offset = tls_server.log_size()
    # when the whole night runs: extract, load, analytics tests, report
    with SslSampler(tls_server.admin) as sampled:
        code = main(
            ["run", "--date", DAY.isoformat(), "--lookback-days", "90", "--json"]
            + ["--source-url", tls_shop["extract"].url, "--analytics-url", tls_shop["load"].url]
            + ["--stage", str(tmp_path / "stage")]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out.splitlines()[-1])["dbt_tests"]["analytics"]["passed"] is True
    # then pg_stat_ssl showed dbt's sessions and the pipeline's, all encrypted
    assert {"dbt", "shop-etl"} <= {name for name, _ in sampled.seen}, sampled.seen
    assert all(ssl for _, ssl in sampled.seen), sampled.seen
    # and the server logged every session of both logins as encrypted
    connections = authorized_connections(tls_server.log_since(offset))
    assert any(
        "user=etl_extract" in line and "application_name=dbt" in line for line in connections
    )
    assert any("user=etl_load" in line and "application_name=dbt" in line for line in connections)
    assert all(" SSL enabled (protocol=TLS" in line for line in connections), connections


def test_dbt_checks_the_server_s_host_name_as_the_pipeline_does(tls_shop, tls_server, tmp_path):
    # given the pipeline's own session open, then the server showing a certificate of the
    # same CA for another host name: only a host name check tells the two apart
    source = Database.from_settings(tls_shop["extract"])
    source.connection()
    stage = LocalStage(tmp_path / "stage")
    # when the night's dbt build opens its own connections
    with (
        tls_server.certificate_for("db.elsewhere.example"),
        pytest.raises(LoginRefused) as refused,
    ):
        Pipeline(dbt=DbtProject(), source=source, stage=stage).extract(
            NightRequest(DAY, lookback_days=2)
        )
    source.close()
    # then dbt refused the server, said as a TLS failure, and nothing was staged
    message = str(refused.value)
    assert message.startswith(f"the dbt build for {DAY} failed the TLS check"), message
    assert 'does not match host name "127.0.0.1"' in message and "sslrootcert" in message
    assert stage.list("etl-data/") == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [("ca", "certificate verify failed"), ("host", 'does not match host name "localhost"')],
)
@pytest.mark.parametrize("command", ["run", "docs"])
def test_a_server_that_cannot_prove_who_it_is_is_refused_before_dbt_starts(
    tls_shop, tls_server, tmp_path, monkeypatch, capsys, command, change, reason
):
    # given the functions' logins with the wrong CA, or the right one and another host name
    def wrong(settings: PgSettings) -> str:
        if change == "ca":
            return replace(settings, sslrootcert=tls_server.other_ca).url
        return replace(settings, host="localhost").url

    work = tmp_path / "work"
    monkeypatch.setenv("ETL_WORK_DIR", str(work))
    args = ["--analytics-url", wrong(tls_shop["load"])]
    if command == "run":
        args += ["--date", DAY.isoformat(), "--source-url", wrong(tls_shop["extract"])]
        args += ["--stage", str(tmp_path / "stage")]
    # when a command runs
    code = main([command, *args])
    # then one line says which server failed the TLS check and what to fix, exit 3
    lines = capsys.readouterr().err.splitlines()
    assert (code, len(lines)) == (3, 1), lines
    login = "etl_extract" if command == "run" else "etl_load"
    assert lines[0].startswith(f"etl: error: {login}@") and "failed the TLS check" in lines[0]
    assert reason in lines[0] and "sslrootcert" in lines[0] and LOGIN_PASSWORD not in lines[0]
    # before dbt started: it made nothing, not even its work folder
    assert not (work / "dbt").exists()
    assert not (tmp_path / "stage").exists() or not list((tmp_path / "stage").rglob("*"))
