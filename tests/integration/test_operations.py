"""Operating the nightly job: the source freshness gate, the heartbeat, the run report
and a full refresh, through the CLI and the handlers, on real PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
import pytest
from psycopg2 import sql

from dbt_project.cli.main import main
from dbt_project.errors import SourceStale
from dbt_project.extract.extract import EXTRACT_LOCK
from dbt_project.facts.business_calendar import previous_business_day, utc_now
from dbt_project.load import run_history
from dbt_project.postgres.connection import connect
from tests import reference
from tests.lambda_helpers import Context, emitted_metrics, load_handler, s3_event
from tests.pipeline_helpers import as_extract_login, initialised_shop

LATEST = previous_business_day(utc_now())


def shop_until(new_database, newest_change_hours_ago: float):
    """A shop whose history ends on the latest finished day, then its newest order
    change moved to ``newest_change_hours_ago`` hours before now."""
    source, target = initialised_shop(new_database, LATEST - timedelta(days=9), LATEST, seed=3)
    conn = connect(source)
    with conn, conn.cursor() as cur:
        # Everything at least that old: the shop stopped writing then.
        cur.execute(
            "update public.orders set "
            "updated_at = least(updated_at, now() - %(hours)s * interval '1 hour'), "
            "ordered_at = least(ordered_at, now() - %(hours)s * interval '1 hour')",
            {"hours": newest_change_hours_ago},
        )
    conn.close()
    return source, target


def etl(*args, capsys) -> tuple[int, str, list[str]]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_a_stale_source_stops_the_latest_night_and_says_why(new_database, tmp_path, capsys):
    source, _ = shop_until(new_database, newest_change_hours_ago=60)
    source = as_extract_login(source)
    stage = tmp_path / "stage"
    code, _, err = etl("extract", "--source-url", source.url, "--stage", str(stage), capsys=capsys)
    assert code == 4 and len(err) == 1, err
    assert "the source looks stale, so the night was not run: shop.orders: newest change" in err[0]
    assert "(warn after 12 h, stop after 36 h)" in err[0] and "--skip-freshness" in err[0]
    assert not stage.exists() or not list(stage.rglob("*"))
    # an older day (a re-run or a backfill) skips the gate
    older = (LATEST - timedelta(days=3)).isoformat()
    code, _, err = etl(
        "extract", "--date", older, "--source-url", source.url, "--stage", str(stage), capsys=capsys
    )
    assert code == 0, err
    # and --skip-freshness runs the latest night anyway
    code, _, err = etl(
        "extract",
        "--skip-freshness",
        "--source-url",
        source.url,
        "--stage",
        str(stage),
        capsys=capsys,
    )
    assert code == 0, err


def test_a_quiet_source_runs_and_the_report_says_so(new_database, tmp_path, capsys):
    source, target = shop_until(new_database, newest_change_hours_ago=20)
    code, out, err = etl(
        "run",
        "--json",
        "--source-url",
        as_extract_login(source).url,
        "--analytics-url",
        target.url,
        "--stage",
        str(tmp_path / "stage"),
        capsys=capsys,
    )
    assert code == 0, err
    # stdout is one JSON document (`etl run --json | jq` works); the person's line is on stderr
    report = json.loads(out)
    assert any(line.startswith(f"{LATEST}  extracted") for line in err), err
    assert report["run_date"] == LATEST.isoformat() and report["status"] == "loaded"
    assert report["freshness"]["state"] == "warn"
    assert "shop.orders: newest change" in report["freshness"]["sources"][0]
    assert report["dbt_tests"]["source"].get("pass", 0) > 0
    assert report["dbt_tests"]["analytics"] == {"passed": True, "failures": []}
    assert set(report["tables"]) == {
        "customer_analytics",
        "product_sales_summary",
        "daily_sales_summary",
    }
    assert report["run_results_key"] == f"etl-data/{LATEST}/_dbt/run_results.json"
    assert all(report["seconds"][k] > 0 for k in ("extract", "load", "tests"))
    # and the report stays in the analytics database after the stage files are gone
    conn = connect(target)
    with conn.cursor() as cur:
        cur.execute(
            "select run_date, status, report from ledger.run_reports order by run_date desc"
        )
        rows = cur.fetchall()
    conn.close()
    assert [(r[0], r[1]) for r in rows] == [(LATEST, "loaded")]
    # and `etl runs` reads the history back: a table, JSON, and the filters
    analytics = ["--analytics-url", target.url]
    code, out, err = etl("runs", *analytics, capsys=capsys)
    header, line = out.splitlines()
    assert code == 0 and header.split() == list(run_history.COLUMNS), err
    assert line.split()[:4] == [LATEST.isoformat(), "loaded", "manual", "customer_analytics"]
    assert "freshness" in header and " warn " in line
    code, out, _ = etl("runs", "--json", *analytics, capsys=capsys)
    assert json.loads(out) == [report]
    code, out, _ = etl("runs", "--failed", *analytics, capsys=capsys)
    assert out.strip() == "no run reports match"
    later = (LATEST + timedelta(days=1)).isoformat()
    code, out, _ = etl("runs", "--json", "--since", later, *analytics, capsys=capsys)
    assert json.loads(out) == []
    code, out, err = etl("runs", "--limit", "0", *analytics, capsys=capsys)
    assert code == 2 and err == [
        "etl: error: --limit 0 must be a whole number of nights, at least 1"
    ]
    assert rows[0][2] == report


def test_the_latest_night_through_the_handler_stops_on_a_stale_source(aws, capsys):
    # the sample history ends on 2026-11-25: days before the latest finished day
    load_handler("db_initializer")(
        {"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer")
    )
    capsys.readouterr()
    with pytest.raises(SourceStale, match="shop.orders: newest change"):
        load_handler("extract")({}, Context("extract"))
    assert '"SourceStale"' in capsys.readouterr().out
    result = load_handler("extract")({"skip_freshness": True}, Context("extract"))
    assert result["runs"][0]["freshness"] == {"state": "skipped", "sources": []}


@pytest.fixture
def reports_topic(aws, monkeypatch):
    """The RunReports topic, with a queue subscribed to read what was sent."""
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="RunReports")["TopicArn"]
    queue = sqs.create_queue(QueueName="reports-reader")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("RUN_REPORTS_TOPIC_ARN", topic)

    def received() -> list[dict]:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(json.loads(m["Body"])["Message"]) for m in messages]

    return received


def test_a_loaded_night_sends_one_heartbeat_and_one_report(aws, reports_topic, capsys):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25", "lookback_days": 30}, Context("extract"))
    capsys.readouterr()
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    result = load(event, Context("load"))
    out = capsys.readouterr().out
    assert emitted_metrics(out).get("NightsLoaded") == [1.0]
    report = result["loads"][0]["report"]
    assert report["run_date"] == "2026-11-25" and report["trigger"] == "manual"
    assert report["tables"]["daily_sales_summary"]["inserted"] > 0
    assert reports_topic() == [report]
    # a duplicate delivery: no heartbeat, no report
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    out = capsys.readouterr().out
    assert "NightsLoaded" not in emitted_metrics(out)
    assert reports_topic() == []


def test_a_full_refresh_repairs_corrupted_state_and_equals_a_fresh_build(
    new_database, tmp_path, capsys
):
    source, target = shop_until(new_database, newest_change_hours_ago=2)
    stage = str(tmp_path / "stage")
    source_url = as_extract_login(source).url
    common = ("--source-url", source_url, "--analytics-url", target.url, "--stage", stage)
    assert etl("run", *common, capsys=capsys)[0] == 0
    # given corrupted incremental state on the source and strays on the analytics side
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute("update nightly.int_customer_days set revenue = revenue * 3")
        cur.execute("update nightly.int_customer_settled set order_count = order_count + 1")
    conn.close()
    conn = connect(target)
    with conn, conn.cursor() as cur:
        # a day the source's history never had
        cur.execute(
            "insert into analytics.daily_sales_summary "
            "select (sales_date - 400), region, order_count, customer_count, units_sold, "
            "revenue, avg_order_value from analytics.daily_sales_summary limit 1"
        )
        cur.execute(sql.SQL("update analytics.customer_analytics set region = 'どこにも'"))
    conn.close()

    # when the full refresh runs
    code, out, err = etl("run", "--full-refresh", "--json", *common, capsys=capsys)

    # then every row equals the independent computation, strays deleted
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["full_refresh"] is True
    expected = reference.marts(reference.fetch_source(source), as_of=LATEST)
    actual = reference.read_marts(target)
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    # a full refresh owns every customer: each is as of the refreshed night
    assert actual["customer_analytics"] == expected["customer_analytics"]


def test_a_full_refresh_refuses_while_another_night_runs(new_database, tmp_path, capsys):
    source, target = shop_until(new_database, newest_change_hours_ago=2)
    holder = connect(source)
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_lock(%s)", (EXTRACT_LOCK,))
        code, _, err = etl(
            "run",
            "--full-refresh",
            "--source-url",
            as_extract_login(source).url,
            "--analytics-url",
            target.url,
            "--stage",
            str(tmp_path / "stage"),
            capsys=capsys,
        )
    finally:
        holder.close()
    assert code == 3 and len(err) == 1
    assert "another extract of this source is running" in err[0]
