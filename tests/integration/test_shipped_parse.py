"""dbt's parse shipped with the project (the common layer's): used by a cold start when
it fits, refused and parsed again when it does not.

The project is copied as the layer build copies it, parsed there, then moved: a layer
keeps neither the build's folder nor its modification times.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta

import pytest

from dbt_project.dbt_runner import parse_cache as dbt_parse
from dbt_project.dbt_runner.parse_cache import load_shipped_parse
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.facts.names import DBNAME_VARIABLES
from dbt_project.postgres.connection import connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.postgres.source_schema import create_source_tables, load_sample_data
from dbt_project.settings import scoped_environ
from infra.packaging.layers import REPO_ROOT
from tests.integration._dbt_helpers import query
from tests.lambda_helpers import login_role
from tests.pipeline_helpers import as_extract_login, project_copy

PROBE = "shipped_parse_probe"
STAGING_MODEL = "models/staging/stg_shop__customers.sql"


@pytest.fixture(scope="module")
def source(module_database):
    settings = module_database("shipped")
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        create_source_tables(conn)
        load_sample_data(conn)
        create_extract_login(conn, settings.dbname)
        cur.execute("select max((ordered_at at time zone 'Asia/Tokyo')::date) from orders")
        (last_day,) = cur.fetchone()
    conn.close()
    return as_extract_login(settings), last_day - timedelta(days=1)


@pytest.fixture
def project(tmp_path, shipped_project):
    """A copy of the shipped project (parsed for the stack's database name, not the
    source's, the build's folder then removed) for one test to change at will, moved
    (to where Lambda mounts it, in Lambda) with new modification times."""
    moved = tmp_path / "opt" / "dbt"
    shutil.copytree(shipped_project, moved, copy_function=shutil.copyfile)
    return moved


# A fresh process, as a cold Lambda start: dbt has set none of its global flags yet.
_COLD_EXTRACT = """
import json, sys
from pathlib import Path
from dbt_project.postgres.connection import Database, PgSettings
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.facts.names import DBNAME_VARIABLES
from dbt_project.pipeline import Pipeline
from dbt_project.request import NightRequest, parse_date
from dbt_project.stage import LocalStage

url, project, day, stage = sys.argv[1:]
dbt = DbtProject(root=Path(project))
database = Database.from_settings(PgSettings.from_url(url))
parts = Pipeline(dbt=dbt, source=database, stage=LocalStage(Path(stage)))
result = parts.extract(NightRequest(parse_date(day)))
with database.connection().cursor() as cur:
    cur.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'nightly' and table_name = 'stg_shop__customers'"
    )
    columns = [name for (name,) in cur.fetchall()]
found = {"rows": result.rows, "shipped": dbt.shipped, "parsed": dbt.parsed, "columns": columns}
print(json.dumps(found))
"""


def _extract(project, source, tmp_path, **env) -> dict:
    settings, day = source
    args = [settings.url, str(project), day.isoformat(), str(tmp_path / "stage")]
    done = subprocess.run(
        [sys.executable, "-c", _COLD_EXTRACT, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sum(result["rows"].values()) > 0
    return result


def test_a_cold_extract_uses_the_shipped_parse(project, source, tmp_path):
    # given the shipped parse, another host and port than the build's, another folder
    # when a fresh process extracts a day
    result = _extract(project, source, tmp_path)
    # then dbt did not parse: the shipped parse served the build
    assert result["shipped"] == ["source"]
    assert PROBE not in result["columns"]


def test_a_changed_model_file_refuses_the_shipped_parse(project, source, tmp_path):
    # given a model file changed after the parse was shipped
    model = project / STAGING_MODEL
    text = model.read_text()
    model.write_text(text.replace("\nfrom ", f",\n    1 as {PROBE}\nfrom ", 1))
    # when a fresh process extracts a day
    result = _extract(project, source, tmp_path)
    # then the stale parse was refused, dbt parsed, and the build has the change
    assert result["shipped"] == []
    assert PROBE in result["columns"]


def test_other_settings_or_another_dbt_refuse_the_shipped_parse(project, source, monkeypatch):
    settings, _ = source
    env = {"ETL_SOURCE_DBNAME": settings.dbname}
    assert load_shipped_parse(project, "source", env) is not None
    # another database name does not: the runner moves the parse to it (tests below)
    assert load_shipped_parse(project, "source", {"ETL_SOURCE_DBNAME": "other"}) is not None
    # another target, or a var that shapes the parse
    assert load_shipped_parse(project, "analytics", env) is None
    assert load_shipped_parse(project, "source", env, {"source_schema": "shop"}) is None
    # vars that only macros read at run time do not
    assert load_shipped_parse(project, "source", env, {"run_date": "2026-11-01"}) is not None
    # another dbt
    monkeypatch.setattr(dbt_parse, "_engine", lambda: {"dbt-core": "0.0.0"})
    assert load_shipped_parse(project, "source", env) is None


def test_another_python_reads_the_portable_copy_and_both_copies_agree(project, source, monkeypatch):
    # given the parse as the Python that shipped it reads it (pickled, flat graph built)
    env = {"ETL_SOURCE_DBNAME": source[0].dbname}
    fast = load_shipped_parse(project, "source", env)
    # when another Python version reads it: the pickle is not for it
    monkeypatch.setattr(dbt_parse, "_python", lambda: "3.99")
    portable = load_shipped_parse(project, "source", env)
    # then it reads the msgpack copy, and both describe the same project at this folder
    assert portable is not None and portable is not fast
    assert sorted(portable.nodes) == sorted(fast.nodes) and len(fast.nodes) > 40
    assert sorted(portable.flat_graph["nodes"]) == sorted(fast.flat_graph["nodes"])
    node = "model.shop.customer_analytics"
    assert portable.nodes[node].raw_code == fast.nodes[node].raw_code
    assert {
        f.path.project_root for f in fast.files.values() if f.path.project_root.endswith("dbt")
    } == {str(project)}


class _Planted:
    """A pickle that would leave a mark if it were ever unpickled."""

    def __init__(self, mark):
        self.mark = str(mark)

    def __reduce__(self):
        return (os.mkdir, (self.mark,))


NOBODY = 65534


def test_a_shipped_parse_another_user_could_write_is_not_read(project, source, tmp_path):
    # given the shipped pickle replaced by one that leaves a mark when read: first
    # writable by the group, then owned by another user
    mark = tmp_path / "unpickled"
    pickled = project / dbt_parse.SHIPPED_PARSE_DIR / "source.pickle"
    pickled.write_bytes(pickle.dumps(_Planted(mark)))
    for plant in (lambda: pickled.chmod(0o664), lambda: os.chown(pickled, NOBODY, NOBODY)):
        pickled.chmod(0o644)
        plant()
        # when a fresh process extracts a day
        result = _extract(project, source, tmp_path)
        # then the planted file was never unpickled: dbt parsed instead
        assert not mark.exists()
        assert (result["shipped"], result["parsed"]) == ([], ["source"])


def test_a_work_folder_another_user_could_write_is_refused_in_one_line(tmp_path):
    # given a work folder that another user owns, with a file planted in dbt's target
    work = tmp_path / "shared"
    planted = work / "dbt" / "target-analytics"
    planted.mkdir(parents=True)
    (planted / "partial_parse.msgpack").write_bytes(b"not ours")
    for folder in (work, work / "dbt", planted):
        os.chown(folder, NOBODY, NOBODY)
    env = {**os.environ, "ETL_WORK_DIR": str(work)}
    url = "postgresql://nobody@127.0.0.1:1/analytics"
    # when a command that runs dbt starts
    done = subprocess.run(
        [sys.executable, "-m", "dbt_project.cli", "docs", "--analytics-url", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    # then it stops before dbt reads anything there, saying why and what to do
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"etl: error: the work folder {work / 'dbt'} is not safe to read back")
    assert "not to this user" in line and "ETL_WORK_DIR" in line and "\n" not in line
    assert (planted / "partial_parse.msgpack").read_bytes() == b"not ours"
    # and a folder of the user's own that others may write to is refused the same way
    for folder in (work, work / "dbt", planted):
        os.chown(folder, os.geteuid(), os.getegid())
    (work / "dbt").chmod(0o777)
    done = subprocess.run(
        [sys.executable, "-m", "dbt_project.cli", "docs", "--analytics-url", url],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 2 and "lets other users write to it" in done.stderr


def test_another_login_host_or_database_reuses_this_process_s_parse(
    source, pg_server, new_database, tmp_path, monkeypatch
):
    # given a checkout's project that this process parsed for the source database
    settings, _ = source
    project = project_copy(tmp_path / "checkout" / "dbt")
    monkeypatch.setenv("ETL_WORK_DIR", str(tmp_path / "work"))
    model = ["run", "--select", "stg_shop__customers"]
    first = DbtProject(root=project)
    assert first.invoke(model, settings=settings, target="source").success
    assert first.parsed == ["source"]
    # when another login reaches the same database by another host name
    role = login_role(pg_server, "second-login")
    other = replace(settings.with_credentials(role, "second-login"), host="localhost")
    second = DbtProject(root=project)
    run = second.invoke(model, settings=other, target="source")
    # then dbt did not parse again, and the model was built as that login
    assert run.success and second.parsed == []
    owner = query(
        settings,
        "select pg_get_userbyid(relowner) as owner from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'nightly' and c.relname = 'stg_shop__customers'",
    )
    assert owner == [{"owner": role}]
    # and when a third project object builds the model in another database
    elsewhere = new_database("shipped_other")
    conn = connect(elsewhere)
    with conn:
        create_source_tables(conn)
    conn.close()
    third = DbtProject(root=project)
    run = third.invoke(model, settings=elsewhere, target="source")
    # then dbt did not parse either, and the model is in that database, not the first
    assert run.success and third.parsed == []
    built = "select count(*) as n from pg_views where viewname = 'stg_shop__customers'"
    assert query(elsewhere, built) == [{"n": 1}]


def _comparable(manifest) -> dict:
    """A Manifest's content, without when it was made."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "created_at"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    content = manifest.writable_manifest().to_dict()
    content.pop("metadata")
    return strip(content)


def _dbt_parse(project, target: str, env: dict[str, str], scratch):
    from dbt.cli.main import dbtRunner

    with scoped_environ(env):
        done = dbtRunner().invoke(
            [
                *("--quiet", "parse", "--no-partial-parse", "--target", target),
                *("--project-dir", str(project), "--profiles-dir", str(project)),
                *("--target-path", str(scratch / target), "--log-path", str(scratch / "logs")),
            ]
        )
    assert done.success, done.exception
    return done.result


@pytest.mark.parametrize("target", ["source", "analytics"])
def test_a_parse_moved_to_another_database_is_the_parse_dbt_makes_for_it(project, target, tmp_path):
    # given dbt's parse for the target's parse database, its flat graph built
    env = dbt_parse.parse_env(target)
    parsed = _dbt_parse(project, target, env, tmp_path)
    parsed.build_flat_graph()
    before = _comparable(parsed)
    # when it is moved to another database
    moved = dbt_parse.for_database(parsed, target, "elsewhere_db")
    # then it is what dbt parses for that database, flat graph included
    variable = DBNAME_VARIABLES[target]
    direct = _dbt_parse(project, target, {**env, variable: "elsewhere_db"}, tmp_path)
    assert _comparable(moved) == _comparable(direct)
    assert before != _comparable(direct)  # the database shows in the parse
    graph = moved.flat_graph["nodes"]["model.shop.customer_analytics"]
    assert graph["database"] == "elsewhere_db"
    assert graph["relation_name"].startswith('"elsewhere_db".')
    # and the parse it was moved from is unchanged, and served as it is for its own
    assert _comparable(parsed) == before
    assert dbt_parse.for_database(parsed, target, dbt_parse.PARSE_DATABASES[target]) is parsed
