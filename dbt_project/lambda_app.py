"""What the three Lambda handlers do, behind their Powertools decorators.

Objects that are expensive to make (the dbt runner, database connections, the S3
client, secrets) live at module level so warm invocations reuse them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from functools import cache

from aws_lambda_powertools.metrics import MetricUnit

from . import metric_names
from .db import Database, PgSettings
from .dbt_runner import DbtProject
from .errors import CredentialsError, DatabaseUnavailable, LoginRefused
from .events import parse_extract_event, parse_init_event, parse_load_event
from .observability import logger, metrics, tracer
from .pipeline import extract, init, load, raise_for_analytics, test_analytics
from .settings import DbEndpoint, Settings
from .stage import S3Stage, s3_client


def _secret_settings(prefix: str, endpoint: DbEndpoint, settings: Settings, force: bool):
    from aws_lambda_powertools.utilities import parameters

    arn = endpoint.secret_arn
    try:
        secret = parameters.get_secret(arn, transform="json", force_fetch=force)
    except Exception as exc:
        metrics.add_metric(name=metric_names.SECRET_RETRIEVAL_ERROR, unit=MetricUnit.Count, value=1)
        raise CredentialsError(
            f"cannot read the {prefix.lower()} database secret {arn} ({exc.__class__.__name__}); "
            "check that it exists and that the function's role may read it"
        ) from exc
    if not isinstance(secret, dict) or not secret.get("username") or "password" not in secret:
        metrics.add_metric(name=metric_names.SECRET_RETRIEVAL_ERROR, unit=MetricUnit.Count, value=1)
        raise CredentialsError(
            f"the secret {arn} has no username/password JSON; store the RDS-style "
            '{"username": ..., "password": ...}'
        )
    return _endpoint_settings(endpoint, settings, secret["username"], secret["password"])


def _iam_settings(prefix: str, endpoint: DbEndpoint, settings: Settings, force: bool):
    """A fresh IAM authentication token (valid 15 minutes) as the login's password.

    The token is signed locally with the function's role credentials; the database
    checks it against ``rds-db:connect`` on this exact login.
    """
    try:
        token = _rds_client(settings.region).generate_db_auth_token(
            DBHostname=endpoint.host,
            Port=endpoint.port,
            DBUsername=endpoint.iam_user,
            Region=settings.region,
        )
    except Exception as exc:
        metrics.add_metric(name=metric_names.SECRET_RETRIEVAL_ERROR, unit=MetricUnit.Count, value=1)
        raise CredentialsError(
            f"cannot make an IAM authentication token for {endpoint.iam_user} on the "
            f"{prefix.lower()} database ({exc.__class__.__name__}: {exc}); check the "
            "function's role credentials and AWS_REGION"
        ) from exc
    return _endpoint_settings(endpoint, settings, endpoint.iam_user, token)


def _endpoint_settings(endpoint: DbEndpoint, settings: Settings, user: str, password: str):
    return PgSettings(
        host=endpoint.host,
        port=endpoint.port,
        dbname=endpoint.dbname,
        user=user,
        password=password,
        sslmode=settings.function_sslmode,
        sslrootcert=str(settings.sslrootcert) if settings.sslrootcert else None,
    )


@cache
def _rds_client(region: str | None):
    import boto3

    return boto3.client("rds", region_name=region)


# IAM tokens last 15 minutes: a connection opened later (dbt's, a warm invocation's)
# gets a new one.
IAM_TOKEN_REFRESH_SECONDS = 600


# Factories cached on the settings they are made from: a warm invocation with the
# same environment reuses the connection, the parsed dbt project and the S3 client.


@cache
def database(settings: Settings, prefix: str) -> Database:
    endpoint = settings.endpoint(prefix)
    resolve = _iam_settings if endpoint.iam_user else _secret_settings
    return Database(
        lambda force: resolve(prefix, endpoint, settings, force),
        limits=settings.limits,
        connect_wait_seconds=settings.connect_wait_seconds,
        refresh_after_seconds=IAM_TOKEN_REFRESH_SECONDS if endpoint.iam_user else None,
    )


@cache
def dbt(settings: Settings) -> DbtProject:
    return DbtProject(settings=settings)


@cache
def stage(settings: Settings) -> S3Stage:
    return S3Stage(settings.require_bucket(), client=s3_client(settings.s3_max_attempts))


def reset() -> None:
    """Forget every cached object, as a cold start would."""
    for factory in (database, dbt, stage, _rds_client):
        factory.cache_clear()


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
    results = []
    with _count_connection_errors():
        for day in request.days:
            logger.append_keys(run_date=day.isoformat())
            result = extract(
                day,
                source=database(settings, "SOURCE"),
                stage=stage(settings),
                dbt=dbt(settings),
                lookback_days=request.lookback_days,
                gzip_level=settings.gzip_level,
            )
            metrics.add_metric(
                name=metric_names.EXTRACTION_TIME, unit=MetricUnit.Seconds, value=result.seconds
            )
            metrics.add_metric(
                name=metric_names.RECORDS_EXTRACTED,
                unit=MetricUnit.Count,
                value=result.rows_extracted,
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
def handle_load(event, context=None) -> dict:
    settings = Settings.from_env()
    request = parse_load_event(event, settings.require_bucket())
    for key in request.ignored:
        logger.info("ignored an object that is not a manifest", extra={"key": key})
    loads = []
    target = database(settings, "TARGET")
    with _count_connection_errors():
        for key in request.manifest_keys:
            result = load(
                target=target,
                stage=stage(settings),
                manifest=key,
                time_limit_ms=_load_time_limit(context),
            )
            logger.append_keys(run_date=result.run_date.isoformat())
            metrics.add_metric(
                name=metric_names.S3_READ_TIME, unit=MetricUnit.Seconds, value=result.read_seconds
            )
            metrics.add_metric(
                name=metric_names.DATA_LOAD_TIME, unit=MetricUnit.Seconds, value=result.seconds
            )
            for table, counts in result.tables.items():
                metrics.add_metric(
                    name=metric_names.records_loaded(table),
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
            tests = test_analytics(target=target, dbt=dbt(settings))
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
                name=metric_names.ANALYTICS_TEST_TIME,
                unit=MetricUnit.Seconds,
                value=time.perf_counter() - started,
            )
    return {"status": "ok", "loads": loads, "ignored": list(request.ignored)}


@tracer.capture_method
def handle_init(event, context=None) -> dict:
    request = parse_init_event(event)
    settings = Settings.from_env()
    started = time.perf_counter()
    with _count_connection_errors():
        result = init(
            source=database(settings, "SOURCE"),
            target=database(settings, "TARGET"),
            dbt=dbt(settings),
            sample_data=request.sample_data,
            sample_end_date=request.sample_end_date,
        )
    metrics.add_metric(
        name=metric_names.INIT_TIME, unit=MetricUnit.Seconds, value=time.perf_counter() - started
    )
    if result.sample_note:
        logger.info(result.sample_note)
    return {
        "status": "initialised",
        "sample_rows": result.sample_rows,
        "sample_data": result.sample_note or _sample_summary(result.sample_rows),
        "views": result.views_built,
    }


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
        logger.error(str(exc), extra={"error_type": exc.__class__.__name__})
        raise
