"""Operating the nightly job: the source freshness gate, the heartbeat, the run report
and a full refresh, through the CLI and the handlers, on real PostgreSQL."""

from __future__ import annotations

import json
from datetime import date, timedelta

import boto3
import pytest
from psycopg2 import sql

from dbt_project.cli.main import main
from dbt_project.errors import SourceClockAhead, SourceStale
from dbt_project.extract.extract import EXTRACT_LOCK
from dbt_project.facts.business_calendar import previous_business_day
from dbt_project.load import run_history
from dbt_project.postgres.connection import connect
from tests import reference
from tests.lambda_helpers import Context, emitted_metrics, load_handler, s3_event
from tests.pipeline_helpers import as_extract_login, initialised_shop


@pytest.fixture
def latest(frozen_clock) -> date:
    """The last finished business day as the test began; the product's clock stays there."""
    return previous_business_day(frozen_clock)


def shop_until(new_database, latest: date, newest_change_hours_ago: float):
    """A shop whose history ends on the latest finished day, then its newest order
    change moved to ``newest_change_hours_ago`` hours before now."""
    source, target = initialised_shop(new_database, latest - timedelta(days=9), latest, seed=3)
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


def change_order(source, order_id: int, updated_at: str) -> None:
    """Set one order's updated_at to ``updated_at``, an SQL expression."""
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("update public.orders set updated_at = {} where order_id = %s").format(
                sql.SQL(updated_at)
            ),
            (order_id,),
        )
    conn.close()


def etl(*args, capsys) -> tuple[int, str, list[str]]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_a_stale_source_stops_the_latest_night_and_says_why(new_database, tmp_path, capsys, latest):
    source, _ = shop_until(new_database, latest, newest_change_hours_ago=60)
    # one change dated 2099 (a clock ahead, or a forged row) does not make it look fresh
    change_order(source, 1, "timestamptz '2099-01-01 00:00:00+00'")
    extract_url = as_extract_login(source).url
    stage = tmp_path / "stage"
    code, _, err = etl("extract", "--source-url", extract_url, "--stage", str(stage), capsys=capsys)
    assert code == 4 and len(err) == 1, err
    assert "the source looks stale, so the night was not run: shop.orders: newest change" in err[0]
    assert "(warn after 12 h, stop after 36 h)" in err[0] and "--skip-freshness" in err[0]
    assert not stage.exists() or not list(stage.rglob("*"))
    # once the shop writes again, the change in 2099 stops the night as its own error
    change_order(source, 2, "now() - interval '1 hour'")
    code, _, err = etl("extract", "--source-url", extract_url, "--stage", str(stage), capsys=capsys)
    assert code == 4 and len(err) == 1, err
    assert err[0].startswith(
        "etl: error: the source has changes later than now, so the night was not run: "
        "shop.orders: 1 changes later than now (the latest 2099-01-01T00:00:00+00:00, "
    )
    assert "h ahead of the database's clock; 5 minutes allowed)" in err[0]
    assert "Set the shop's clock right, or correct those rows" in err[0]
    assert "--skip-freshness" in err[0]
    assert not stage.exists() or not list(stage.rglob("*"))
    # an older day (a re-run or a backfill) skips the gate
    older = (latest - timedelta(days=3)).isoformat()
    code, _, err = etl(
        "extract",
        "--date",
        older,
        "--source-url",
        extract_url,
        "--stage",
        str(stage),
        capsys=capsys,
    )
    assert code == 0, "\n".join(err)
    # and --skip-freshness runs the latest night anyway
    code, _, err = etl(
        "extract",
        "--skip-freshness",
        "--source-url",
        extract_url,
        "--stage",
        str(stage),
        capsys=capsys,
    )
    assert code == 0, "\n".join(err)


def test_a_quiet_source_runs_and_the_report_says_so(new_database, tmp_path, capsys, latest):
    source, target = shop_until(new_database, latest, newest_change_hours_ago=20)
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
    assert code == 0, "\n".join(err)
    # stdout is one JSON document (`etl run --json | jq` works); the person's line is on stderr
    report = json.loads(out)
    assert any(line.startswith(f"{latest}  extracted") for line in err), err
    assert report["run_date"] == latest.isoformat() and report["status"] == "loaded"
    assert report["freshness"]["state"] == "warn"
    assert "shop.orders: newest change" in report["freshness"]["sources"][0]
    assert report["dbt_tests"]["source"].get("pass", 0) > 0
    assert report["dbt_tests"]["analytics"] == {
        "passed": True,
        "failures": [],
        "warnings": [],
        "volume_anomalies": 0,
    }
    assert set(report["tables"]) == {
        "customer_analytics",
        "product_sales_summary",
        "daily_sales_summary",
    }
    assert report["run_results_key"] == f"etl-data/{latest}/_dbt/run_results.json"
    assert all(report["seconds"][k] > 0 for k in ("extract", "load", "tests"))
    # and the report stays in the analytics database after the stage files are gone
    conn = connect(target)
    with conn.cursor() as cur:
        cur.execute(
            "select run_date, status, report from ledger.run_reports order by run_date desc"
        )
        rows = cur.fetchall()
    conn.close()
    assert [(r[0], r[1]) for r in rows] == [(latest, "loaded")]
    # and `etl runs` reads the history back: a table, JSON, and the filters
    analytics = ["--analytics-url", target.url]
    code, out, err = etl("runs", *analytics, capsys=capsys)
    header, line = out.splitlines()
    assert code == 0 and header.split() == list(run_history.COLUMNS), err
    assert line.split()[:4] == [latest.isoformat(), "loaded", "manual", "customer_analytics"]
    assert "freshness" in header and " warn " in line
    code, out, _ = etl("runs", "--json", *analytics, capsys=capsys)
    assert json.loads(out) == [report]
    code, out, _ = etl("runs", "--failed", *analytics, capsys=capsys)
    assert out.strip() == "no run reports match"
    later = (latest + timedelta(days=1)).isoformat()
    code, out, _ = etl("runs", "--json", "--since", later, *analytics, capsys=capsys)
    assert json.loads(out) == []
    code, out, err = etl("runs", "--limit", "0", *analytics, capsys=capsys)
    assert code == 2 and err == [
        "etl: error: --limit 0 must be a whole number of nights, at least 1"
    ]
    assert rows[0][2] == report


def test_the_latest_night_through_the_handler_stops_on_a_stale_source(aws, capsys, frozen_clock):
    # the sample history ends on 2026-11-25: days before the latest finished day
    load_handler("db_initializer")(
        {"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer")
    )
    capsys.readouterr()
    with pytest.raises(SourceStale, match="shop.orders: newest change"):
        load_handler("extract")({}, Context("extract"))
    assert set(emitted_metrics(capsys.readouterr().out)) >= {"SourceStale"}
    # a change later than now, in a source that is written again: an error of its own
    change_order(aws["source"], 1, "now() + interval '1 hour'")
    change_order(aws["source"], 2, "now() - interval '1 hour'")
    with pytest.raises(SourceClockAhead, match="shop.orders: 1 changes later than now"):
        load_handler("extract")({}, Context("extract"))
    emitted = emitted_metrics(capsys.readouterr().out)
    assert "SourceClockAhead" in emitted and "SourceStale" not in emitted
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


def test_a_loaded_night_sends_one_heartbeat_and_one_report(aws, reports_topic, capsys, caplog):
    init, extract, load = (load_handler(n) for n in ("db_initializer", "extract", "load"))
    init({"sample_data": True, "sample_end_date": "2026-11-25"}, Context("db_initializer"))
    extract({"run_date": "2026-11-25", "lookback_days": 30}, Context("extract"))
    # given a ledger.run_reports that refuses every report (as a revoked grant would)
    conn = connect(aws["target"])
    with conn, conn.cursor() as cur:
        cur.execute("alter table ledger.run_reports add constraint refused check (false)")
    conn.close()
    capsys.readouterr()
    event = s3_event(aws["bucket"], "etl-data/2026-11-25/_manifest.json")
    result = load(event, Context("load"))
    out = capsys.readouterr().out
    assert emitted_metrics(out).get("NightsLoaded") == [1.0]
    report = result["loads"][0]["report"]
    assert report["run_date"] == "2026-11-25" and report["trigger"] == "manual"
    assert report["tables"]["daily_sales_summary"]["inserted"] > 0
    assert reports_topic() == [report]
    # the report not kept is a warning and a metric; the night stands, sent and logged
    assert emitted_metrics(out).get("RunReportError") == [1.0]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [w.getMessage() for w in warnings] == [
        "the run report could not be kept; the night's load stands"
    ]
    assert 'violates check constraint "refused"' in warnings[0].error
    # a duplicate delivery: no heartbeat, no report
    assert load(event, Context("load"))["loads"][0]["status"] == "duplicate"
    out = capsys.readouterr().out
    assert "NightsLoaded" not in emitted_metrics(out)
    assert reports_topic() == []


def test_a_full_refresh_repairs_corrupted_state_and_equals_a_fresh_build(
    new_database, tmp_path, capsys, latest
):
    source, target = shop_until(new_database, latest, newest_change_hours_ago=2)
    stage = str(tmp_path / "stage")
    source_url = as_extract_login(source).url
    common = ("--source-url", source_url, "--analytics-url", target.url, "--stage", stage)
    assert etl("run", *common, capsys=capsys)[0] == 0
    # given corrupted incremental state on the source and strays on the analytics side
    conn = connect(source)
    with conn, conn.cursor() as cur:
        cur.execute("update nightly.int_customer_days set revenue = revenue * 3")
        cur.execute("update nightly.int_customer_settled set order_count = order_count + 1")
        # a stray day of a customer, a month before the first order: no window owns it,
        # so only a rebuild (dbt's --full-refresh), not a whole-history window, drops it
        cur.execute(
            "insert into nightly.int_customer_days "
            "(customer_id, order_date, item_count, revenue, order_count) "
            "select customer_id, min(order_date) over () - 30, 1, 999.00, 1 "
            "from nightly.int_customer_days order by customer_id limit 1"
        )
    conn.close()
    conn = connect(target)
    with conn, conn.cursor() as cur:
        # a day the source's history never had
        cur.execute(
            "create temporary table stray as select * from analytics.daily_sales_summary limit 1"
        )
        cur.execute("update stray set sales_date = sales_date - 400")
        cur.execute("insert into analytics.daily_sales_summary select * from stray")
        cur.execute(sql.SQL("update analytics.customer_analytics set region = 'どこにも'"))
    conn.close()

    # when the full refresh runs
    code, out, err = etl("run", "--full-refresh", "--json", *common, capsys=capsys)

    # then every row equals the independent computation, strays deleted
    assert code == 0, "\n".join(err)
    assert json.loads(out.splitlines()[-1])["full_refresh"] is True
    expected = reference.marts(reference.fetch_source(source), as_of=latest)
    actual = reference.read_marts(target)
    assert actual["daily_sales_summary"] == expected["daily_sales_summary"]
    assert actual["product_sales_summary"] == expected["product_sales_summary"]
    # a full refresh owns every customer: each is as of the refreshed night
    assert actual["customer_analytics"] == expected["customer_analytics"]


def test_a_full_refresh_refuses_while_another_night_runs(new_database, tmp_path, capsys, latest):
    source, target = shop_until(new_database, latest, newest_change_hours_ago=2)
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
