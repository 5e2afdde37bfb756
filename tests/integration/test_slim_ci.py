"""Slim CI: `etl ci` compares the project with the manifest the last deployed night
staged, and builds and tests only the changed models and what depends on them."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

from dbt_project.cli.main import main
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, connect
from dbt_project.postgres.logins import create_extract_login
from dbt_project.postgres.source_schema import create_source_tables, load_sample_data
from dbt_project.request import NightRequest
from dbt_project.stage import LocalStage
from infra.packaging.layers import REPO_ROOT, common_sources
from tests.pipeline_helpers import as_extract_login

CHANGED = "model.shop.daily_sales_summary"


def _project_copy(folder):
    for relative, path in common_sources(REPO_ROOT):
        if relative.startswith("dbt/"):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / relative)
    return folder / "dbt"


def _descendants(manifest: dict, node: str) -> set[str]:
    found, pending = set(), [node]
    while pending:
        for child in manifest["child_map"].get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def test_a_changed_model_builds_only_itself_and_its_children(
    module_database, tmp_path, monkeypatch, capsys
):
    # given a night the deployed project ran: its manifest staged beside the files
    source = module_database("slim_ci")
    conn = connect(source)
    with conn, conn.cursor() as cur:
        create_source_tables(conn)
        load_sample_data(conn)
        create_extract_login(conn, source.dbname)
        cur.execute("select max((ordered_at at time zone 'Asia/Tokyo')::date) from orders")
        (last_day,) = cur.fetchone()
    conn.close()
    stage = LocalStage(tmp_path / "stage")
    night = Pipeline(
        dbt=DbtProject(), source=Database.from_settings(as_extract_login(source)), stage=stage
    )
    night.extract(NightRequest(last_day - timedelta(days=1)))
    # and a pull request that changes one mart's SQL
    project = _project_copy(tmp_path / "pr")
    mart = project / "models/marts/daily_sales_summary.sql"
    mart.write_text(mart.read_text().replace("count(*) as order_count", "count(1) as order_count"))

    # when CI builds what changed
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(project))
    code = main(["ci", "--source-url", source.url, "--stage", str(stage.root), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)

    # then the changed mart, its tests and its children ran, and nothing else
    deployed = json.loads(stage.get_bytes(result["state"]))
    allowed = {CHANGED} | _descendants(deployed, CHANGED)
    built = set(result["built"])
    models = {n for n in built if n.startswith("model.")}
    assert CHANGED in models and {"model.shop.regional_sales_trend"} <= models
    assert built <= allowed | {n for n in built if n.startswith("unit_test.shop.daily_sales")}
    assert "model.shop.customer_analytics" not in built
    assert not any(n.startswith("model.shop.stg_") for n in built)
    # and the unchanged project builds nothing
    monkeypatch.setenv("ETL_DBT_PROJECT_DIR", str(REPO_ROOT))
    assert main(["ci", "--source-url", source.url, "--stage", str(stage.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["built"] == []
