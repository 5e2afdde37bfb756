"""What the three Lambda handlers do, behind their Powertools decorators.

Objects that are expensive to make (the dbt runner, database connections, the S3
client, secrets) live at module level so warm invocations reuse them.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from aws_lambda_powertools.metrics import MetricUnit

from .db import PgSettings
from .dbt_runner import DbtProject
from .errors import ConfigError, CredentialsError, DatabaseUnavailable
from .events import parse_extract_event, parse_load_event
from .observability import logger, metrics, tracer
from .pipeline import Database, extract, init, load, raise_for_analytics, test_analytics
from .stage import S3Stage

_cache: dict[str, object] = {}


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"the function's environment lacks {name}; redeploy the stack")
    return value


def _secret_settings(prefix: str, force: bool) -> PgSettings:
    from aws_lambda_powertools.utilities import parameters

    arn = _env(f"{prefix}_DB_SECRET_ARN")
    try:
        secret = parameters.get_secret(arn, transform="json", force_fetch=force)
    except Exception as exc:
        metrics.add_metric(name="SecretRetrievalError", unit=MetricUnit.Count, value=1)
        raise CredentialsError(
            f"cannot read the {prefix.lower()} database secret {arn} ({exc.__class__.__name__}); "
            "check that it exists and that the function's role may read it"
        ) from exc
    if not isinstance(secret, dict) or not secret.get("username") or "password" not in secret:
        metrics.add_metric(name="SecretRetrievalError", unit=MetricUnit.Count, value=1)
        raise CredentialsError(
            f"the secret {arn} has no username/password JSON; store the RDS-style "
            '{"username": ..., "password": ...}'
        )
    return PgSettings(
        host=_env(f"{prefix}_DB_HOST"),
        port=int(os.environ.get(f"{prefix}_DB_PORT", "5432")),
        dbname=_env(f"{prefix}_DB_NAME"),
        user=secret["username"],
        password=secret["password"],
        sslmode=os.environ.get("ETL_PG_SSLMODE", "require"),
    )


def database(prefix: str) -> Database:
    key = f"db:{prefix}"
    if key not in _cache:
        timeout = os.environ.get("ETL_STATEMENT_TIMEOUT_MS")
        _cache[key] = Database(
            lambda force: _secret_settings(prefix, force),
            statement_timeout_ms=int(timeout) if timeout else None,
        )
    return _cache[key]  # type: ignore[return-value]


def dbt() -> DbtProject:
    if "dbt" not in _cache:
        _cache["dbt"] = DbtProject()
    return _cache["dbt"]  # type: ignore[return-value]


def stage() -> S3Stage:
    if "stage" not in _cache:
        _cache["stage"] = S3Stage(_env("S3_BUCKET"))
    return _cache["stage"]  # type: ignore[return-value]


@contextmanager
def _count_connection_errors():
    try:
        yield
    except DatabaseUnavailable:
        metrics.add_metric(name="DBConnectionError", unit=MetricUnit.Count, value=1)
        raise


@tracer.capture_method
def handle_extract(event) -> dict:
    request = parse_extract_event(event)
    results = []
    with _count_connection_errors():
        for day in request.days:
            logger.append_keys(run_date=day.isoformat())
            result = extract(
                day,
                source=database("SOURCE"),
                stage=stage(),
                dbt=dbt(),
                lookback_days=request.lookback_days,
            )
            metrics.add_metric(name="ExtractionTime", unit=MetricUnit.Seconds, value=result.seconds)
            metrics.add_metric(
                name="RecordsExtracted", unit=MetricUnit.Count, value=result.rows_extracted
            )
            logger.info(
                "extracted",
                extra={
                    "run_id": result.run_id,
                    "rows": result.rows,
                    "manifest": result.manifest_key,
                },
            )
            results.append(
                {
                    "run_date": day.isoformat(),
                    "run_id": result.run_id,
                    "manifest_key": result.manifest_key,
                    "rows": result.rows,
                    "seconds": round(result.seconds, 3),
                }
            )
    return {"status": "extracted", "trigger": request.trigger, "runs": results}


@tracer.capture_method
def handle_load(event) -> dict:
    request = parse_load_event(event, _env("S3_BUCKET"))
    for key in request.ignored:
        logger.info("ignored an object that is not a manifest", extra={"key": key})
    loads = []
    target = database("TARGET")
    with _count_connection_errors():
        for key in request.manifest_keys:
            result = load(target=target, stage=stage(), manifest=key)
            logger.append_keys(run_date=result.run_date.isoformat())
            metrics.add_metric(
                name="S3ReadTime", unit=MetricUnit.Seconds, value=result.read_seconds
            )
            metrics.add_metric(name="DataLoadTime", unit=MetricUnit.Seconds, value=result.seconds)
            for table, counts in result.tables.items():
                metrics.add_metric(
                    name=f"RecordsLoaded_{table}",
                    unit=MetricUnit.Count,
                    value=counts.inserted + counts.updated,
                )
            logger.info(
                "loaded" if result.status == "loaded" else "duplicate delivery ignored",
                extra={"manifest": key, "run_id": result.run_id, "status": result.status},
            )
            loads.append(
                {
                    "manifest_key": key,
                    "run_date": result.run_date.isoformat(),
                    "status": result.status,
                    "rows_loaded": result.rows_loaded,
                }
            )
        if any(item["status"] == "loaded" for item in loads):
            started = time.perf_counter()
            tests = test_analytics(target=target, dbt=dbt())
            logger.info(
                "analytics tests",
                extra={
                    "passed": tests.passed,
                    "failures": tests.failures,
                    "seconds": tests.seconds,
                },
            )
            raise_for_analytics(tests)
            metrics.add_metric(
                name="AnalyticsTestTime",
                unit=MetricUnit.Seconds,
                value=time.perf_counter() - started,
            )
    return {"status": "ok", "loads": loads, "ignored": list(request.ignored)}


@tracer.capture_method
def handle_init(event) -> dict:
    if not isinstance(event, dict) or set(event) - {"sample_data"}:
        raise ConfigError('the db_initializer event must be {} or {"sample_data": true|false}')
    sample = event.get("sample_data", False)
    if not isinstance(sample, bool):
        raise ConfigError(f"sample_data must be true or false, not {sample!r}")
    started = time.perf_counter()
    with _count_connection_errors():
        result = init(
            source=database("SOURCE"), target=database("TARGET"), dbt=dbt(), sample_data=sample
        )
    metrics.add_metric(
        name="InitTime", unit=MetricUnit.Seconds, value=time.perf_counter() - started
    )
    return {"status": "initialised", "sample_rows": result.sample_rows, "views": result.views_built}


def run(handler_fn, event, context) -> dict:
    """Log a user error as one clear line, then re-raise so the invocation counts as failed."""
    try:
        return handler_fn(event)
    except Exception as exc:
        logger.error(str(exc), extra={"error_type": exc.__class__.__name__})
        raise
