"""What the three Lambda handlers do, behind their Powertools decorators.

Objects that are expensive to make (the dbt runner, database connections, the S3
client, secrets) live at module level so warm invocations reuse them.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

from aws_lambda_powertools.metrics import MetricUnit

from dbt_project.aws import history_load
from dbt_project.aws.events import (
    Deployment,
    ReportRequest,
    parse_extract_event,
    parse_init_event,
    parse_load_event,
)
from dbt_project.aws.observability import logger, metrics, tracer
from dbt_project.aws.resources import database, pipeline, reader_password, reset  # noqa: F401
from dbt_project.dbt_runner.docs import generate_docs, publish_docs
from dbt_project.errors import (
    DatabaseUnavailable,
    EtlError,
    LoginRefused,
    SourceClockAhead,
    SourceStale,
    brief,
)
from dbt_project.facts import business_calendar, metric_names
from dbt_project.facts.stage_layout import RUNS_PAGE_KEY
from dbt_project.load import LoadStatus, run_history
from dbt_project.load import report as reports
from dbt_project.pipeline import REMOVED_FROM_BUILD_SCHEMA, raise_for_analytics
from dbt_project.postgres.analytics_schema import last_upgrade, record_upgrade, upgraded_to
from dbt_project.request import BackfillRequest
from dbt_project.settings import Settings
from dbt_project.upgrade import REPROCESS_PAYLOAD


def _metric(name: str, unit, value: float) -> None:
    metrics.add_metric(name=name, unit=unit, value=value)


@contextmanager
def _count_connection_errors():
    """A database out of reach, or refusing the login, is a connection error."""
    try:
        yield
    except (DatabaseUnavailable, LoginRefused):
        metrics.add_metric(name=metric_names.DB_CONNECTION_ERROR, unit=MetricUnit.Count, value=1)
        raise


@tracer.capture_method
def handle_extract(event, context=None) -> dict:
    request = parse_extract_event(event)
    settings = Settings.from_env()
    with _count_connection_errors():
        parts = pipeline(settings, "SOURCE")
        if isinstance(request, BackfillRequest):
            plan = parts.plan(request)
            logger.info("planned", extra={"plan": plan.describe()})
            return plan.as_json()
        run = _extract(parts, request)
    return {
        "status": "extracted",
        "trigger": request.trigger,
        "runs": [run],
        # What the reprocess state machine reads: its paths take no array index.
        "manifest_key": run["manifest_key"],
        "rows_extracted": run["rows_extracted"],
    }


def _extract(parts, night) -> dict:
    """One night's extract: its metrics, a log line, and what the load needs."""
    logger.append_keys(run_date=night.run_date.isoformat())
    try:
        result = parts.extract(night)
    except SourceStale:
        _metric(metric_names.SOURCE_STALE, MetricUnit.Count, 1)
        raise
    except SourceClockAhead:
        _metric(metric_names.SOURCE_CLOCK_AHEAD, MetricUnit.Count, 1)
        raise
    _metric(metric_names.EXTRACTION_TIME, MetricUnit.Seconds, result.seconds)
    _metric(metric_names.RECORDS_EXTRACTED, MetricUnit.Count, result.rows_extracted)
    logger.info(
        "extracted",
        extra={
            "run_id": result.run_id,
            "rows": result.rows,
            "manifest": result.manifest_key,
            "freshness": result.freshness.state,
        },
    )
    return {
        "run_date": night.run_date.isoformat(),
        "run_id": result.run_id,
        "manifest_key": result.manifest_key,
        "rows": result.rows,
        "rows_extracted": result.rows_extracted,
        "freshness": result.freshness.as_report(),
        "seconds": round(result.seconds, 3),
    }


def _loaded(key: str, result) -> dict:
    """Metrics, the heartbeat and a log line of one delivered manifest."""
    logger.append_keys(run_date=result.run_date.isoformat())
    _metric(metric_names.S3_READ_TIME, MetricUnit.Seconds, result.read_seconds)
    _metric(metric_names.DATA_LOAD_TIME, MetricUnit.Seconds, result.seconds)
    for table, counts in result.tables.items():
        _metric(
            metric_names.records_loaded(table), MetricUnit.Count, counts.inserted + counts.updated
        )
    if result.status is LoadStatus.LOADED:
        # The heartbeat: an alarm fires when no night has loaded for 26 hours.
        _metric(metric_names.NIGHTS_LOADED, MetricUnit.Count, 1)
    logger.info(
        "loaded" if result.status is LoadStatus.LOADED else "duplicate delivery ignored",
        extra={"manifest": key, "run_id": result.run_id, "status": result.status},
    )
    return {
        "manifest_key": key,
        "run_date": result.run_date.isoformat(),
        "status": result.status,
        "rows_loaded": result.rows_loaded,
    }


@tracer.capture_method
def handle_load(event, context=None) -> dict:
    settings = Settings.from_env()
    request = parse_load_event(event, settings.require_bucket())
    if isinstance(request, ReportRequest):
        return _reprocess_report(settings, request)
    for key in request.ignored:
        logger.info("ignored an object that is not a manifest", extra={"key": key})
    parts = pipeline(settings, "ANALYTICS")
    loads, results = [], []
    with _count_connection_errors():
        for key in request.manifest_keys:
            result = parts.load(key, time_limit_ms=_load_time_limit(context))
            loads.append(_loaded(key, result))
            results.append(result)
        loaded = [r for r in results if r.status is LoadStatus.LOADED]
        if loaded:
            tests = parts.test_analytics(loaded)
            logger.info(
                "analytics tests",
                extra={
                    "passed": tests.passed,
                    "failures": tests.failures,
                    "warnings": tests.warnings,
                    "seconds": tests.seconds,
                },
            )
            _metric(metric_names.ANALYTICS_TEST_TIME, MetricUnit.Seconds, tests.seconds)
            _metric(metric_names.VOLUME_ANOMALIES, MetricUnit.Count, tests.volume_anomalies)
            for item, result in zip(loads, results, strict=True):
                if result.status is LoadStatus.LOADED:
                    item["report"] = _report(settings, parts.analytics, result, tests)
            raise_for_analytics(tests)
            _publish_docs(parts)
    return {"status": "ok", "loads": loads, "ignored": list(request.ignored)}


def _publish_docs(parts) -> bool:
    """Generate and publish the lineage site after a loaded and tested night, best effort.

    The night's data is committed and tested by then; the page only describes the
    code, and the next night publishes it again. So a failure here is a warning and
    a DocsPublishError metric (which an alarm can watch), never a failed invocation:
    that would report a good night as failed, and its retries would find a duplicate
    delivery, load nothing, and publish nothing.
    """
    try:
        page = generate_docs(analytics=parts.analytics, dbt=parts.dbt)
        where = publish_docs(page, parts.stage)
        runs = run_history.write_page(
            parts.analytics.connection(),
            page.with_name(run_history.PAGE_NAME),
            business_calendar.utc_now(),
        )
        publish_docs(runs, parts.stage, RUNS_PAGE_KEY)
    except Exception as exc:
        logger.warning(
            "the docs site was not published; the night's load stands",
            extra={"error_type": exc.__class__.__name__, "error": brief(exc)},
        )
        _metric(metric_names.DOCS_PUBLISH_ERROR, MetricUnit.Count, 1)
        return False
    logger.info("docs site published", extra={"docs": where})
    return True


def _report(settings: Settings, analytics, result, tests) -> dict:
    """Keep the night's report and send it, each best effort.

    The report holds the analytics tests' outcome, which exists only once the load has
    committed (dbt tests the committed rows over its own connections), so it cannot be
    written in the load's transaction. Once the night is committed, failing the
    invocation would only make its retry find a duplicate, which reports nothing: a
    report that cannot be kept or sent is a warning and a RunReportError metric, and the
    whole report is in this function's log line either way.
    """
    report = reports.build(result, tests)
    _best_effort("kept", lambda: reports.record(analytics.connection(), report))
    if settings.run_reports_topic:
        _best_effort("sent", lambda: reports.publish(settings.run_reports_topic, report))
    if settings.failed_nights_topic and report["status"] != reports.LOADED:
        _best_effort(
            "sent to chat",
            lambda: reports.publish_failed(settings.failed_nights_topic, report),
        )
    logger.info("run report", extra={"report": report})
    return report


def _best_effort(what: str, step) -> None:
    try:
        step()
    except Exception as exc:
        logger.warning(
            f"the run report could not be {what}; the night's load stands",
            extra={"error": f"{exc.__class__.__name__}: {brief(exc)}"},
        )
        _metric(metric_names.RUN_REPORT_ERROR, MetricUnit.Count, 1)


def _reprocess_report(settings: Settings, request: ReportRequest) -> dict:
    """The reprocess state machine's run report, sent once every chunk is loaded."""
    report = reports.build_reprocess(
        request.plan, request.rows, request.execution, now=business_calendar.utc_now()
    )
    if settings.run_reports_topic:
        reports.publish(settings.run_reports_topic, report)
    logger.info("reprocess report", extra={"report": report})
    return report


@tracer.capture_method
def handle_init(event, context=None) -> dict:
    """Manual runs create and fill; a deployment (a CloudFormation custom resource)
    upgrades the analytics side and never adds sample rows, once per new version."""
    request = parse_init_event(event)
    deployment = request.deployment
    if deployment is not None and deployment.kind == "Delete":
        return {"PhysicalResourceId": deployment.physical_resource_id}
    settings = Settings.from_env()
    if deployment is not None:
        skipped = _reason_to_skip(settings, deployment)
        if skipped:
            logger.info("no upgrade", extra={"reason": skipped})
            data = {"Views": 0, "Skipped": skipped}
            return {"PhysicalResourceId": deployment.physical_resource_id, "Data": data}
    wanted = deployment.reprocess if deployment is not None else True
    started = time.perf_counter()
    with _count_connection_errors():
        parts = pipeline(settings, "SOURCE", "ANALYTICS", with_stage=False)
        if deployment is not None:  # what it is about to do, before it does it
            logger.info("analytics upgrade plan", extra={"plan": parts.upgrade_plan().document})
        result = parts.init(
            sample_data=request.sample_data,
            sample_end_date=request.sample_end_date,
            reader_password=reader_password(settings),
            reprocess_started=_reprocess_note(settings, wanted),
        )
        history = _start_history_load(settings) if result.sample_rows else None
        reprocess = _start_reprocess(settings, wanted, result.models)
    if result.removed:
        logger.warning(REMOVED_FROM_BUILD_SCHEMA, extra={"removed": result.removed})
    _metric(metric_names.INIT_TIME, MetricUnit.Seconds, time.perf_counter() - started)
    if deployment is not None:
        _record_upgrade(settings, deployment)
        data = {"Views": result.views_built, "Reprocess": (reprocess or {}).get("needed", "")}
        return {"PhysicalResourceId": deployment.physical_resource_id, "Data": data}
    if result.sample_note:
        logger.info(result.sample_note)
    return {
        "status": "initialised",
        "sample_rows": result.sample_rows,
        "sample_data": result.sample_note or _sample_summary(result.sample_rows),
        "views": result.views_built,
        "history_load": history,
        "reprocess": reprocess,
    }


def _reprocess_note(settings: Settings, wanted: bool) -> str:
    """How a reprocessing this deployment asks for is started, as its request records it."""
    payload = json.dumps(REPROCESS_PAYLOAD)
    if wanted and settings.reprocess_state_machine:
        return f"started: {payload} on {settings.reprocess_state_machine}"
    why = "turned off (context reprocess_changed_models=false)"
    if wanted:
        why = "no reprocess state machine is configured"
    return f"not started, {why}: start the reprocess state machine with {payload} to run it"


def _start_reprocess(settings: Settings, wanted: bool, models) -> dict | None:
    """Start the night that reprocesses the marts whose logic changed, if asked for.

    Best effort: the tables and views are deployed by then; a night that cannot be
    started is a warning (the request stays open, `etl plan` lists it), not a failed
    deployment that CloudFormation would roll back.
    """
    needed = models.reprocess if models else None
    if needed is None:
        return None
    answer: dict = {"needed": needed.line(), "marts": needed.marts, "started": None}
    if not (wanted and settings.reprocess_state_machine):
        logger.warning(needed.line(), extra={"reprocess": _reprocess_note(settings, wanted)})
        return answer
    try:
        answer["started"] = history_load.start(settings.reprocess_state_machine)
    except Exception as exc:
        logger.warning(
            "the reprocessing night could not be started",
            extra={"needed": needed.line(), "error": f"{exc.__class__.__name__}: {exc}"},
        )
        return answer
    logger.info(needed.line(), extra={"started": answer["started"]})
    return answer


def _reason_to_skip(settings: Settings, deployment: Deployment) -> str | None:
    """Ask the analytics database's upgrade ledger only when the properties alone do not
    settle it (an unchanged Update needs no connection)."""
    reason = deployment.reason_to_skip(None, False)
    if reason or deployment.stamp is None:
        return reason
    with _count_connection_errors():
        conn = database(settings, "ANALYTICS").connection()
        try:
            applied = last_upgrade(conn)
            seen = upgraded_to(conn, dict(deployment.versions))
        finally:
            conn.close()
    return deployment.reason_to_skip(applied, seen)


def _record_upgrade(settings: Settings, deployment: Deployment) -> None:
    if deployment.stamp is None:
        return  # an event without a stamp (an older template) leaves no record
    conn = database(settings, "ANALYTICS").connection()
    try:
        with conn:
            record_upgrade(conn, deployment.stamp, dict(deployment.versions))
    finally:
        conn.close()


def _start_history_load(settings: Settings) -> dict | None:
    """The sample history loaded in chunks, started now; the schedule goes on from there."""
    if not settings.reprocess_state_machine:
        return None
    source = database(settings, "SOURCE")
    if not history_load.has_history(source.connection()):
        return None
    started = history_load.start(settings.reprocess_state_machine)
    logger.info("history load started", extra=started)
    return started


def _sample_summary(rows: dict[str, int] | None) -> str:
    if rows is None:
        return "not requested"
    return "loaded: " + ", ".join(f"{table} +{count}" for table, count in rows.items())


# What a load leaves of the function's time for the analytics-side tests and the report.
LOAD_TIME_RESERVE_MS = 120_000


def _load_time_limit(context) -> int | None:
    """The load must end, with its own error, before Lambda ends the function."""
    if context is None:
        return None
    return max(context.get_remaining_time_in_millis() - LOAD_TIME_RESERVE_MS, 1_000)


def run(handler_fn, event, context) -> dict:
    """Log a user error as one clear line, then re-raise so the invocation counts as failed."""
    try:
        return handler_fn(event, context)
    except Exception as exc:
        # Our messages are written to be read whole; anything else may quote data.
        message = str(exc) if isinstance(exc, EtlError) else brief(exc)
        logger.error(message, extra={"error_type": exc.__class__.__name__})
        raise
