"""A password rotated while the pipeline's own session stays open: dbt's new connections
are refused, the credentials are re-read once and the night goes on; if the re-read
ones are refused too, the error says credentials, never "fix the data"."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from psycopg2 import sql

from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import CredentialsError
from dbt_project.facts.roles import EXTRACT_LOGIN
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings, connect
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from tests.datagen import Shop

DAY = date(2026, 3, 10)


class RotatingSecret:
    """A secret store with a reader-side cache, as Powertools' get_secret has."""

    def __init__(self, settings: PgSettings):
        self.stored = settings
        self.cached = settings
        self.forced_reads = 0

    def resolve(self, force: bool) -> PgSettings:
        if force:
            self.forced_reads += 1
            self.cached = self.stored
        return self.cached


def set_password(admin: PgSettings, user: str, password: str) -> None:
    conn = connect(admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("alter role {} password %s").format(sql.Identifier(user)), (password,))
    conn.close()


@pytest.fixture
def rotating(new_database, pg_server, tmp_path):
    source, target = new_database("src"), new_database("tgt")
    dbt = DbtProject()
    Pipeline(
        dbt=dbt, source=Database.from_settings(source), analytics=Database.from_settings(target)
    ).init()
    # A login of its own to rotate (etl_extract is the server's, shared by other tests)
    # that may only act as etl_extract: the extract runs it as etl_extract.
    user = f"etl_{uuid.uuid4().hex[:8]}"
    conn = connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create role {} login password 'first' in role {}").format(
                sql.Identifier(user), sql.Identifier(EXTRACT_LOGIN)
            )
        )
    conn.close()
    conn = connect(source)
    Shop(conn, seed=7).history(date(2026, 3, 1), DAY)
    conn.close()
    secret = RotatingSecret(source.with_credentials(user, "first"))
    database = Database(secret.resolve)
    database.connection()  # the pipeline's session, opened before the rotation
    return {
        "admin": pg_server,
        "user": user,
        "secret": secret,
        "database": database,
        "dbt": dbt,
        "stage": LocalStage(tmp_path / "stage"),
    }


def test_a_password_rotated_under_an_open_session_is_re_read_once(rotating):
    # given the password rotated and the secret updated, the cached copy still old
    set_password(rotating["admin"], rotating["user"], "second")
    rotating["secret"].stored = rotating["secret"].stored.with_credentials(
        rotating["user"], "second"
    )

    # when the night runs: its own session still works, dbt's new ones are refused at first
    result = Pipeline(
        dbt=rotating["dbt"], source=rotating["database"], stage=rotating["stage"]
    ).extract(NightRequest(DAY))

    # then the secret was re-read exactly once and the night completed
    assert rotating["secret"].forced_reads == 1
    assert result.rows["daily_sales_summary"] > 0


def test_a_password_still_refused_after_the_re_read_is_a_credentials_error(rotating):
    # given the password rotated but the secret not updated
    set_password(rotating["admin"], rotating["user"], "third")

    with pytest.raises(CredentialsError, match="could not log in") as refused:
        Pipeline(dbt=rotating["dbt"], source=rotating["database"], stage=rotating["stage"]).extract(
            NightRequest(DAY)
        )
    assert "password authentication failed" in str(refused.value)
    assert "Fix the data" not in str(refused.value)
    assert refused.value.exit_code == 3
    assert rotating["secret"].forced_reads == 1
    assert rotating["stage"].list("etl-data/") == []
