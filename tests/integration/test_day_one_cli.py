"""The first hour with the `etl` command: the example queries as any new login writes
them, and the local server's life (stop, a port another checkout holds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from dbt_project.cli.main import main
from dbt_project.facts.names import ANALYTICS_DATABASE, SOURCE_DATABASE
from dbt_project.facts.roles import READER_ROLE
from dbt_project.local import server as local_pg
from dbt_project.local.demo import EXAMPLE_QUERIES
from dbt_project.postgres.connection import connect
from tests.pipeline_helpers import as_extract_login


def test_the_example_queries_run_verbatim_as_a_fresh_login(new_database, pg_server, tmp_path):
    source, target = new_database("src"), new_database("tgt")
    assert (
        main(
            [
                "init",
                "--source-url",
                source.url,
                "--analytics-url",
                target.url,
                "--sample-data",
                "--sample-end-date",
                "2026-11-25",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                "--date",
                "2026-11-25",
                "--lookback-days",
                "90",
                "--source-url",
                as_extract_login(source).url,
                "--analytics-url",
                target.url,
                "--stage",
                str(tmp_path / "stage"),
                "--skip-tests",
            ]
        )
        == 0
    )
    # given a login made for an analyst: the reader's grants, no settings of its own
    analyst = f"analyst_{uuid.uuid4().hex[:6]}"
    conn = connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create role {} login password 'analyst' in role {}").format(
                sql.Identifier(analyst), sql.Identifier(READER_ROLE)
            )
        )
        cur.execute(
            "select count(*) from pg_db_role_setting s join pg_roles r on r.oid = s.setrole "
            "where r.rolname = %s",
            (analyst,),
        )
        assert cur.fetchone() == (0,)
    conn.close()
    # when it runs the README's four queries as written, no schema named
    conn = psycopg2.connect(
        host=target.host, port=target.port, dbname=target.dbname, user=analyst, password="analyst"
    )
    with conn.cursor() as cur:
        answers = []
        for query in EXAMPLE_QUERIES:
            cur.execute(query)
            answers.append(cur.fetchall())
    conn.close()
    # then every one answers
    assert all(answers) and len(answers[0]) == 10


def cli(args, capsys, **env) -> tuple[int, list[str], str]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        code = main(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    captured = capsys.readouterr()
    return code, captured.err.splitlines(), captured.out


def test_a_port_held_by_another_checkouts_server_is_named_and_dev_db_stop_frees_it(
    short_tmp_path, capsys
):
    port = local_pg.free_port()
    other, this = short_tmp_path / "other-checkout", short_tmp_path / "this-checkout"
    env = {"ETL_PG_PORT": str(port), "ETL_PG_URL": ""}
    # given another checkout's local server on the port
    code, _, _ = cli(
        ["dev-db", "--sample-end-date", "2026-11-25"],
        capsys,
        ETL_WORK_DIR=str(other / ".etl"),
        **env,
    )
    assert code == 0
    try:
        # when this checkout asks for the same port
        code, lines, _ = cli(["dev-db"], capsys, ETL_WORK_DIR=str(this / ".etl"), **env)
        # then it is told whose server it is and how to stop it, in one line
        assert code == 2 and len(lines) == 1, lines
        assert f"port {port} is taken by the local PostgreSQL of another checkout" in lines[0]
        assert str(other) in lines[0] and "etl dev-db stop" in lines[0]
    finally:
        # and `etl dev-db stop` in the other checkout frees it
        code, _, out = cli(["dev-db", "stop"], capsys, ETL_WORK_DIR=str(other / ".etl"), **env)
    assert (code, out) == (0, "local PostgreSQL stopped\n")
    assert not local_pg._port_open(port)
    code, _, out = cli(["dev-db", "stop"], capsys, ETL_WORK_DIR=str(other / ".etl"), **env)
    assert (code, out) == (0, "the local PostgreSQL was not running\n")


@pytest.mark.parametrize("flag", ["--sample-end-date"])
def test_a_bad_sample_end_date_is_refused(flag, capsys):
    code, lines, _ = cli(["dev-db", flag, "2026-13-01"], capsys)
    assert code == 2 and lines == [
        "etl: error: --sample-end-date '2026-13-01' is not a real calendar date; "
        "use the ISO form YYYY-MM-DD, e.g. 2026-11-25"
    ]


PROJECT_DIR = Path(__file__).resolve().parents[2]
DBT = Path(sys.executable).with_name("dbt")


def _exports(out: str) -> dict[str, str]:
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("export ")]
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def _dbt_database(target: str, exports: dict[str, str], password: str, work: Path) -> str:
    """The database dbt's ``target`` reaches in a shell that ran ``etl dev-db``'s exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETL_", "DBT_ENV_"))}
    env |= {**exports, "DBT_ENV_SECRET_PG_PASSWORD": password, "DO_NOT_TRACK": "1"}
    command = [
        *(str(DBT), "show", "--inline", "select current_database() as database_name"),
        *("--target", target, "--output", "json", "--log-format", "json"),
        *("--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR)),
        *("--target-path", str(work / target), "--log-path", str(work / "logs")),
    ]
    result = subprocess.run(
        command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    shown = [
        json.loads(line)["data"]["preview"]
        for line in result.stdout.splitlines()
        if line.startswith("{") and '"preview"' in line
    ]
    return json.loads(shown[-1])[0]["database_name"]


def test_dev_db_exports_point_each_dbt_target_at_its_own_database(
    pg_server, short_tmp_path, capsys
):
    """The README's loop on an existing server: ETL_PG_URL, `etl dev-db`, its exports,
    then `dbt test --target analytics` must reach the analytics database, not the shop."""
    admin = connect(pg_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("select datname from pg_database")
        existed = {row[0] for row in cur.fetchall()}
    try:
        # given `etl dev-db` on an existing server
        code, _, out = cli(
            ["dev-db", "--sample-end-date", "2026-11-25"],
            capsys,
            ETL_PG_URL=pg_server.url,
            ETL_WORK_DIR=str(short_tmp_path / ".etl"),
        )
        assert code == 0, out
        exports = _exports(out)
        # then it prints each target's database name, and no password
        assert exports["ETL_SOURCE_DBNAME"] == SOURCE_DATABASE
        assert exports["ETL_ANALYTICS_DBNAME"] == ANALYTICS_DATABASE
        assert pg_server.password not in out
        assert "DBT_ENV_SECRET_PG_PASSWORD" in out
        # and dbt's analytics target, in a shell that exported them, reaches the analytics
        # database (the dev target's name is the source's, checked above)
        reached = _dbt_database("analytics", exports, pg_server.password, short_tmp_path / "dbt")
        assert reached == ANALYTICS_DATABASE
    finally:
        with admin.cursor() as cur:
            for name in {SOURCE_DATABASE, ANALYTICS_DATABASE} - existed:
                cur.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
        admin.close()
