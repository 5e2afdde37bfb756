"""The lineage site as a team opens it: `etl docs` writes one page, a real headless
Chromium reads the lineage graph the page draws, and a loaded night publishes the
same page to the stage bucket."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from psycopg2 import sql

from dbt_project.aws import observability
from dbt_project.cli.main import main
from dbt_project.dbt_runner import docs
from dbt_project.errors import StageError
from dbt_project.facts import metric_names as names
from dbt_project.facts.roles import READER_ROLE
from dbt_project.facts.stage_layout import DOCS_KEY, RUNS_PAGE_KEY
from dbt_project.load import report as reports
from dbt_project.postgres.connection import connect
from dbt_project.stage import LocalStage, S3Stage
from tests.lambda_helpers import Context, emitted_metrics, load_handler, s3_event

CHROMIUM = Path("/usr/bin/chromium")
SOURCES = {f"source.shop.shop.{t}" for t in ("customers", "products", "orders", "order_items")}
MARTS = {
    f"model.shop.{m}"
    for m in ("customer_analytics", "product_sales_summary", "daily_sales_summary")
}
LOAD_KEYS = {
    f"model.shop.{m}"
    for m in ("run_window_days", "run_window_customers", "run_window_removed_customers")
}
VIEWS = {
    f"model.shop.{v}"
    for v in (
        "top_customers",
        "category_performance",
        "regional_sales_trend",
        "weekly_sales_summary",
    )
}
EXPOSURES = {"exposure.shop.example_queries", "exposure.shop.analyst_sql"}

# The lineage graph and the columns as the page holds them, read through its Angular
# services (dbt docs draws the lineage on a canvas: node names are not in the DOM).
READ_PAGE = """() => {
    const injector = angular.element(document.body).injector();
    const graph = injector.get('graph').graph.pristine;
    const nodes = {};
    for (const [id, node] of Object.entries(graph.nodes)) nodes[id] = node.data.label;
    const edges = [];
    for (const group of Object.values(graph.edges))
        for (const edge of [].concat(group)) edges.push([edge.data.source, edge.data.target]);
    const types = {};
    for (const [id, node] of Object.entries(injector.get('project').project.nodes)) {
        types[id] = {};
        for (const [name, column] of Object.entries(node.columns || {}))
            types[id][name] = column.type;
    }
    return {nodes, edges, types};
}"""
GRAPH_READY = """() => {
    try {
        const graph = angular.element(document.body).injector().get('graph').graph.pristine;
        return Object.keys(graph.nodes).length > 0;
    } catch (e) { return false; }
}"""


@pytest.fixture(scope="module")
def databases(module_database):
    return module_database("src"), module_database("tgt")


@pytest.fixture(scope="module")
def page(databases, tmp_path_factory) -> Path:
    """`etl docs` against an analytics database made by `etl init`, both given URLs
    without a password and the password in PGPASSWORD, as libpq takes it (dbt too)."""
    source, target = (d.with_credentials(d.user, "") for d in databases)
    work = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ETL_WORK_DIR", str(work))
        patch.setenv("PGPASSWORD", databases[0].password)
        assert main(["init", "--source-url", source.url, "--analytics-url", target.url]) == 0
        conn = connect(databases[1])
        for report in HISTORY:
            reports.record(conn, report)
        conn.close()
        assert main(["docs", "--analytics-url", target.url]) == 0
        again = work / "site" / "lineage.html"
        assert main(["docs", "--analytics-url", target.url, "--out", str(again)]) == 0
    assert again.is_file()
    # Without --out the page goes under the work folder (.etl/ in a checkout).
    return work / "docs" / "index.html"


def _report(day: str, status: str, run: int) -> dict:
    """A kept run report as the load writes it (load/report.py's shape)."""
    return {
        "run_date": day,
        "status": status,
        "trigger": "schedule",
        "run_id": f"00000000-0000-4000-8000-{run:012d}",
        "full_refresh": False,
        "tables": {
            "daily_sales_summary": {"inserted": 1, "updated": run, "deleted": 0, "skipped_stale": 0}
        },
        "seconds": {"extract": 2.0, "load": 0.5, "tests": 0.5},
        "dbt_tests": {
            "source": {"pass": 40},
            "analytics": {"passed": status == "loaded", "failures": []},
        },
        "freshness": {"state": "pass", "sources": []},
        "run_results_key": f"etl-data/{day}/_dbt/run_results.json",
    }


# Three nights, the failed one in the middle; a value that must not become markup.
HISTORY = (
    _report("2026-11-23", "loaded", 1),
    _report("2026-11-24", "loaded, analytics tests failed", 2),
    {**_report("2026-11-25", "loaded", 3), "trigger": "<b>manual</b>"},
)
READ_RUNS = """() => [...document.querySelectorAll('#runs tbody tr')].map(row => ({
    kind: row.className,
    cells: [...row.querySelectorAll('td')].map(cell => cell.textContent),
}))"""


@pytest.mark.slow
def test_the_run_history_page_shows_the_failures_first_in_a_real_browser(page):
    from playwright.sync_api import sync_playwright

    # given the run-history page `etl docs` wrote beside the lineage
    runs = page.with_name("runs.html")
    # when Chromium opens it
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.goto(runs.as_uri())
            rows = tab.evaluate(READ_RUNS)
            link = tab.get_attribute("a", "href")
        finally:
            browser.close()
    # then the failed night comes first, then the others newest first, with their numbers
    assert [(r["kind"], r["cells"][0], r["cells"][1]) for r in rows] == [
        ("failed", "2026-11-24", "loaded, analytics tests failed"),
        ("passed", "2026-11-25", "loaded"),
        ("passed", "2026-11-23", "loaded"),
    ]
    assert rows[1]["cells"][2] == "<b>manual</b>"  # shown as text, not markup
    assert rows[0]["cells"][3] == "daily_sales_summary +1 ~2 -0"
    assert rows[0]["cells"][4] == "source 40 pass; analytics 0 failed"
    assert rows[0]["cells"][6] == "3.0" and link == "index.html"


def test_etl_docs_says_dbt_s_own_reason_when_only_dbt_is_refused(
    databases, page, pg_server, tmp_path, monkeypatch, capsys
):
    # given a reader login that may hold one session: the pipeline's, then none for dbt
    name = f"one_{uuid.uuid4().hex[:6]}"
    conn = connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "create role {} login password 'single-session' connection limit 1 in role {}"
            ).format(sql.Identifier(name), sql.Identifier(READER_ROLE))
        )
    try:
        monkeypatch.setenv("ETL_WORK_DIR", str(tmp_path))
        out = tmp_path / "page.html"
        url = databases[1].with_credentials(name, "single-session").url
        # when `etl docs` runs
        code = main(["docs", "--analytics-url", url, "--out", str(out)])
        # then one line quotes dbt's own error, and no page was written
        lines = capsys.readouterr().err.splitlines()
        assert (code, len(lines)) == (3, 1), lines
        assert f'too many connections for role "{name}"' in lines[0], lines
        assert "dbt reported failure" not in lines[0] and not out.exists()
    finally:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))
        conn.close()


def test_a_wrong_pgpassword_is_one_line_before_dbt_starts(databases, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ETL_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    target = databases[1].with_credentials(databases[1].user, "")
    assert main(["docs", "--analytics-url", target.url]) == 3
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "rejected the credentials" in lines[0], lines
    assert "not-the-password" not in lines[0]
    assert not (tmp_path / "work" / "dbt").exists()  # dbt never started


def test_etl_docs_without_a_database_says_what_to_pass(monkeypatch, capsys):
    monkeypatch.delenv("ETL_ANALYTICS_URL", raising=False)
    monkeypatch.delenv("ETL_TARGET_URL", raising=False)
    assert main(["docs"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("etl: error: no database given: pass --analytics-url")
    assert err.count("\n") == 1


def reachable(edges: list[list[str]], start: set[str], without: set[str] = frozenset()) -> set:
    """The nodes below ``start``, along parent -> child edges that avoid ``without``."""
    children: dict[str, set[str]] = {}
    for parent, child in edges:
        children.setdefault(parent, set()).add(child)
    seen, stack = set(), list(start)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen and child not in without:
                seen.add(child)
                stack.append(child)
    return seen


@pytest.fixture(scope="module")
def opened(page) -> dict:
    """What Chromium shows of the page: the lineage graph and the columns' types."""
    from playwright.sync_api import sync_playwright

    # Fails rather than skips: the browser check is part of the suite (.ci/run installs it).
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: apt-get update && "
        "apt-get install -y --no-install-recommends chromium"
    )
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda error: errors.append(str(error)))
            tab.goto(f"{page.as_uri()}#!/model/model.shop.top_customers?g_v=1")
            tab.wait_for_function(GRAPH_READY, timeout=60_000)
            # The lineage panel of the opened model is drawn, not only held in memory.
            tab.locator("canvas").first.wait_for(state="visible", timeout=30_000)
            shown = tab.evaluate(READ_PAGE)
        finally:
            browser.close()
    assert errors == []
    return shown


@pytest.mark.slow
def test_the_page_shows_both_sides_connected_in_a_real_browser(page, opened):
    # given the page `etl docs` wrote: one self-contained file, as Chromium shows it
    assert page.stat().st_size > 1_000_000
    nodes, edges = opened["nodes"], opened["edges"]
    # then every layer of both sides is in the graph, by name
    for unique_id in SOURCES | MARTS | LOAD_KEYS | VIEWS | EXPOSURES:
        assert unique_id in nodes, unique_id
    assert nodes["source.shop.shop.orders"] == "shop.orders"
    assert nodes["model.shop.top_customers"] == "top_customers"
    assert nodes["exposure.shop.example_queries"] == "The README's example queries"
    assert {nodes[m] for m in nodes if m.startswith("model.shop.stg_shop__")} == {
        "stg_shop__customers",
        "stg_shop__products",
        "stg_shop__orders",
        "stg_shop__order_items",
    }
    # and connected: each view is reached from the sources, only through the marts
    assert reachable(edges, SOURCES) >= VIEWS | MARTS | LOAD_KEYS
    assert reachable(edges, SOURCES, without=MARTS) & VIEWS == set()
    for view in VIEWS:
        assert {p for p, c in edges if c == view} & MARTS, f"{view} reads no mart"
    for source in SOURCES:
        assert reachable(edges, {source}) & MARTS, f"{source} feeds no mart"
    # and the graph ends at the exposures, which read the four views
    for exposure in EXPOSURES:
        assert {p for p, c in edges if c == exposure} == VIEWS, exposure
    assert not reachable(edges, EXPOSURES)


@pytest.mark.slow
def test_the_page_shows_the_analytics_databases_column_types(opened):
    # The catalog is the analytics database's: the views' and the loaded marts' columns
    # carry the types they have there.
    assert opened["types"]["model.shop.top_customers"]["revenue_rank"] == "bigint"
    assert opened["types"]["model.shop.top_customers"]["total_revenue"] == "numeric(14,2)"
    assert opened["types"]["model.shop.customer_analytics"]["customer_id"] == "bigint"


@pytest.mark.slow
def test_a_loaded_night_publishes_the_site_to_the_stage(aws, capsys):
    init_handler, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init_handler({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    assert load(event, Context("load"))["loads"][0]["status"] == "loaded"

    s3 = boto3.client("s3")
    published = s3.get_object(Bucket=aws["bucket"], Key=DOCS_KEY)
    # text/html, so that a presigned link opens the page instead of downloading it
    assert published["ContentType"] == docs.CONTENT_TYPE
    html = published["Body"].read().decode()
    assert "exposure.shop.analyst_sql" in html and "source.shop.shop.order_items" in html
    emitted = emitted_metrics(capsys.readouterr().out)
    assert names.DOCS_PUBLISH_ERROR not in emitted
    # the sample shop's regions are under the anomaly floor: the metric says none
    assert emitted[names.VOLUME_ANOMALIES] == [0]
    # and beside it the run history, with the night just loaded
    runs = s3.get_object(Bucket=aws["bucket"], Key=RUNS_PAGE_KEY)
    assert runs["ContentType"] == docs.CONTENT_TYPE
    assert '<td class="run_date">2026-11-25</td>' in runs["Body"].read().decode()

    # A duplicate delivery loads nothing and leaves the page as it was.
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    head = s3.head_object(Bucket=aws["bucket"], Key=DOCS_KEY)
    assert head["ETag"] == published["ETag"]
    assert head["LastModified"] == published["LastModified"]


@pytest.mark.slow
def test_a_refused_publish_is_a_warning_and_a_metric_not_a_failed_night(aws, monkeypatch, capsys):
    init_handler, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init_handler({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25"}, Context("extract"))
    # given a bucket that refuses the page (a role without s3:PutObject on docs/)
    put_bytes = S3Stage.put_bytes

    def refuse_docs(self, key, data, **kwargs):
        if key == DOCS_KEY:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "PutObject")
        return put_bytes(self, key, data, **kwargs)

    monkeypatch.setattr(S3Stage, "put_bytes", refuse_docs)
    logs = io.StringIO()
    monkeypatch.setattr(observability.logger.registered_handler, "stream", logs)
    capsys.readouterr()
    # when the night loads
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    result = load(event, Context("load"))
    # then the night stands, and the logs and metrics say what did not happen
    assert result["status"] == "ok" and result["loads"][0]["status"] == "loaded"
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    warning = next(line for line in lines if line["level"] == "WARNING")
    assert "docs site was not published" in warning["message"]
    assert warning["error_type"] == "ClientError" and "AccessDenied" in warning["error"]
    assert names.DOCS_PUBLISH_ERROR in emitted_metrics(capsys.readouterr().out)
    assert not S3Stage(aws["bucket"]).exists(DOCS_KEY)


def test_the_stage_takes_the_docs_page_and_no_other_key_outside_etl_data(tmp_path):
    page = tmp_path / "static_index.html"
    page.write_text("<html></html>")
    stage = LocalStage(tmp_path / "stage")
    assert docs.publish_docs(page, stage) == str(tmp_path / "stage" / DOCS_KEY)
    assert stage.get_bytes(DOCS_KEY) == b"<html></html>"
    for key in ("docs/other.html", "docs/../etl-data/x", "docs/index.html/x", "/docs/index.html"):
        with pytest.raises(StageError, match="outside etl-data/"):
            stage.put_bytes(key, b"x")
