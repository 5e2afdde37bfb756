"""The run report: one record per loaded night (and one per reprocessing run), what a
data team reads instead of logs.

The same report is kept in ``ledger.run_reports`` (so "what happened last week" is
answered after the stage files expired), returned by the load function, printed last
by ``etl run`` (``--json`` for machines), and published to the RunReports topic.
"""

from __future__ import annotations

import json
from datetime import date, datetime

from psycopg2 import sql
from psycopg2.extras import Json

from dbt_project.facts.names import LEDGER_SCHEMA
from dbt_project.facts.stage_layout import DBT_ARTIFACTS_FOLDER, day_prefix
from dbt_project.load.load import LoadResult

LOADED, TESTS_FAILED = "loaded", "loaded, analytics tests failed"


def build(load: LoadResult, tests=None, *, trigger: str | None = None) -> dict:
    """The report of one loaded night; ``tests`` are the analytics-side tests, if run."""
    facts = load.extract
    status = LOADED if tests is None or tests.passed else TESTS_FAILED
    return {
        "run_date": load.run_date.isoformat(),
        "status": status,
        "trigger": trigger or (facts.trigger if facts else "manual"),
        "run_id": load.run_id,
        "full_refresh": load.full_refresh,
        "tables": {
            name: {
                "inserted": t.inserted,
                "updated": t.updated,
                "deleted": t.deleted,
                "skipped_stale": t.skipped_stale,
            }
            for name, t in load.tables.items()
        },
        "seconds": {
            "extract": facts.extract_seconds if facts else None,
            "load": round(load.seconds, 3),
            "tests": round(tests.seconds, 3) if tests is not None else None,
        },
        "dbt_tests": {
            "source": facts.dbt_tests if facts else {},
            "analytics": _analytics_counts(tests),
        },
        "freshness": {
            "state": facts.freshness if facts else "skipped",
            "sources": facts.freshness_sources if facts else [],
        },
        "run_results_key": _run_results_key(load.run_date),
        # The marts a deployment's change of logic asked to reprocess, and why.
        "reprocessed": load.reprocessed,
    }


def _analytics_counts(tests) -> dict:
    if tests is None:
        return {}
    return {
        "passed": tests.passed,
        "failures": list(tests.failures),
        "warnings": list(tests.warnings),
        "volume_anomalies": tests.volume_anomalies,
    }


def _run_results_key(run_date: date) -> str:
    return f"{day_prefix(run_date)}{DBT_ARTIFACTS_FOLDER}run_results.json"


def record(conn, report: dict) -> None:
    """Keep the report beside the ledger; a re-sent report of a run replaces its own."""
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "insert into {} (run_id, run_date, status, report) values (%s, %s, %s, %s) "
                "on conflict (run_id) do update set status = excluded.status, "
                "report = excluded.report, reported_at = clock_timestamp()"
            ).format(sql.Identifier(LEDGER_SCHEMA, "run_reports")),
            (report["run_id"], report["run_date"], report["status"], Json(report)),
        )


def build_reprocess(plan: dict, rows: int, execution: dict, *, now: datetime) -> dict:
    """The report of a reprocessing run (a backfill, a full refresh) that loaded every
    chunk; each chunk's own night report was sent when it loaded."""
    started = datetime.fromisoformat(str(execution["StartTime"]).replace("Z", "+00:00"))
    return {
        "report": "reprocess",
        "status": "done",
        "kind": plan["kind"],
        "first_day": plan["first_day"],
        "last_day": plan["last_day"],
        "chunks": plan["count"],
        "days": plan["days"],
        "orders": plan["orders"],
        "rows": rows,
        "seconds": round((now - started).total_seconds(), 1),
        # The plan's estimate: seconds well above it mean a smaller budget (a slower
        # database than the cost model's).
        "estimate_seconds": plan.get("estimate_seconds"),
        # Attempts of the execution that failed and were redriven (a retried throttle or
        # timeout within a chunk is not one).
        "failures": execution.get("RedriveCount", 0),
        "execution": execution.get("Id"),
        "started_at": started.isoformat(),
        "finished_at": now.isoformat(),
    }


def _subject(report: dict) -> str:
    if report.get("report") == "reprocess":
        what = f"{report['kind']} {report['first_day']}..{report['last_day']}"
    else:
        what = report["run_date"]
    return f"shop-etl {what}: {report['status']}"[:100]


def publish(topic_arn: str, report: dict, client=None) -> None:
    import boto3

    client = client or boto3.client("sns")
    client.publish(
        TopicArn=topic_arn,
        Subject=_subject(report),
        Message=json.dumps(report, ensure_ascii=False, indent=2),
    )


def chat_notification(report: dict) -> dict:
    """A failed night's report as an AWS Chatbot custom notification.

    Chatbot posts only messages in a format it knows; a report as JSON would not appear
    in the channel. The notification says what failed and where to read the whole report.
    """
    analytics = report["dbt_tests"]["analytics"]
    failures = analytics.get("failures", [])
    title = f"shop-etl {report['run_date']}: {report['status']}"
    lines = [f"Run {report['run_id']}, trigger {report['trigger']}."]
    lines += [f"Failed analytics test: `{name}`" for name in failures]
    lines += [f"Warning: `{name}`" for name in analytics.get("warnings", [])]
    return {
        "version": "1.0",
        "source": "custom",
        "id": report["run_id"],
        "content": {
            "textType": "client-markdown",
            "title": f":warning: {title}",
            "description": "\n".join(lines),
            "nextSteps": [
                "The whole report: the RunReports topic's message of this run, "
                "or the run history page (docs/runs.html in the stage bucket)",
                f"dbt's results of the night: `{report['run_results_key']}` in the stage",
            ],
        },
        "metadata": {
            "summary": title,
            "eventType": "FailedNight",
            "additionalContext": {"run_date": report["run_date"], "run_id": report["run_id"]},
        },
    }


def publish_failed(topic_arn: str, report: dict, client=None) -> None:
    """Send a failed night to the chat topic (Slack through AWS Chatbot)."""
    import boto3

    client = client or boto3.client("sns")
    client.publish(TopicArn=topic_arn, Message=json.dumps(chat_notification(report)))


def as_text(report: dict) -> str:
    """The report as a block of lines for a terminal."""
    seconds = report["seconds"]
    lines = [
        f"run report  {report['run_date']}  {report['status']}  "
        f"(trigger {report['trigger']}, run {report['run_id']})",
        "  " + "  ".join(f"{k} {v:.1f}s" for k, v in seconds.items() if v is not None),
        f"  freshness {report['freshness']['state']}"
        + "".join(f"; {s}" for s in report["freshness"]["sources"]),
    ]
    source_tests = report["dbt_tests"]["source"]
    if source_tests:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(source_tests.items()))
        lines.append(f"  source dbt tests: {counts}")
    analytics = report["dbt_tests"]["analytics"]
    for warning in analytics.get("warnings", []):
        lines.append(f"  analytics test warning: {warning}")
    for name, t in report["tables"].items():
        lines.append(
            f"  {name:<22} +{t['inserted']} ~{t['updated']} -{t['deleted']}"
            + (f"  ({t['skipped_stale']} stale, skipped)" if t["skipped_stale"] else "")
        )
    if report.get("reprocessed"):
        done = report["reprocessed"]
        why = "; ".join(f"{mart} ({reason})" for mart, reason in done["marts"].items())
        lines.append(f"  reprocessed {done['from']}..{done['to']}: {why}")
    lines.append(f"  dbt run results: {report['run_results_key']}")
    return "\n".join(lines)
