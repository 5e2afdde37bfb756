"""dbt's JSON schemas kept from one process to the next (dbt_runner/json_schemas.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dbt.contracts.project import ProjectFlags
from dbt_common.dataclass_schema import ValidationError

from dbt_project.dbt_runner import json_schemas

REPO_ROOT = Path(__file__).resolve().parents[2]

# A fresh process parses the project through the runner, as `etl` would, and says how
# many schemas it had to build itself.
_PARSE = """
import json, sys
from dbt_project.dbt_runner import json_schemas
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.postgres.connection import PgSettings

built = []
write = json_schemas.write
def counted(path, **kwargs):
    built.append(len(json_schemas._built))
    write(path, **kwargs)
json_schemas.write = counted
DbtProject().parsed_project(settings=PgSettings.from_url(sys.argv[1]), target="source")
print(json.dumps(sum(built) + len(json_schemas._built)))  # written, and not written
"""


def _parse_in_a_fresh_process(work, **env) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PARSE, "postgresql://nobody@127.0.0.1:1/shop"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "ETL_WORK_DIR": str(work), **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def served(monkeypatch):
    """This process's schemas forgotten, the cache installed."""
    monkeypatch.setattr(json_schemas, "_known", {})
    monkeypatch.setattr(json_schemas, "_built", set())
    monkeypatch.setattr(json_schemas, "_read", set())
    json_schemas.install()
    ProjectFlags.json_schema.cache_clear()


@pytest.mark.slow
def test_the_schemas_one_process_built_serve_the_next(tmp_path):
    assert _parse_in_a_fresh_process(tmp_path) > 10
    kept = json.loads((tmp_path / "dbt" / json_schemas.FILE_NAME).read_text())
    assert kept["releases"] == json_schemas.releases()
    assert _parse_in_a_fresh_process(tmp_path) == 0


@pytest.mark.slow
def test_a_lambda_process_writes_no_file_nothing_would_read(tmp_path):
    # Lambda's process is its container: a file in its /tmp would only cost its cold start.
    assert _parse_in_a_fresh_process(tmp_path, AWS_LAMBDA_FUNCTION_NAME="etl-extract") > 10
    assert not (tmp_path / "dbt" / json_schemas.FILE_NAME).exists()


def test_a_served_schema_refuses_what_dbt_s_own_refuses(tmp_path, served):
    bad = {"send_anonymous_usage_stats": "perhaps"}
    with pytest.raises(ValidationError, match="perhaps"):
        ProjectFlags.validate(bad)  # built here
    path = tmp_path / json_schemas.FILE_NAME
    json_schemas.write(path)
    json_schemas._known.clear()  # as in the next process
    json_schemas._read.clear()
    ProjectFlags.json_schema.cache_clear()

    json_schemas.read(path)
    assert not json_schemas._built
    with pytest.raises(ValidationError, match="perhaps"):
        ProjectFlags.validate(bad)  # served from the file
    assert not json_schemas._built
    ProjectFlags.validate({"send_anonymous_usage_stats": False})


def _planted(path, **schemas) -> None:
    """A schema file that would let ProjectFlags accept anything."""
    name = f"{ProjectFlags.__module__}:{ProjectFlags.__qualname__}"
    content = {"releases": json_schemas.releases(), "schemas": {name: {"type": "object"}}}
    path.write_text(json.dumps({**content, **schemas}))


@pytest.mark.parametrize(
    "plant",
    [
        pytest.param(lambda path: path.chmod(0o664), id="group-writable"),
        pytest.param(lambda path: os.chown(path, 65534, 65534), id="another-owner"),
        pytest.param(lambda path: _planted(path, releases="other"), id="other-releases"),
    ],
)
def test_a_file_another_user_could_write_or_other_releases_made_is_not_read(
    tmp_path, served, plant
):
    path = tmp_path / json_schemas.FILE_NAME
    _planted(path)
    path.chmod(0o644)
    plant(path)

    json_schemas.read(path)

    with pytest.raises(ValidationError, match="perhaps"):
        ProjectFlags.validate({"send_anonymous_usage_stats": "perhaps"})
