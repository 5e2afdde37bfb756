"""What the Lambda functions are made of: their database logins (a secret or an IAM
token), the dbt project, the stage; each made once per environment and reused by
warm invocations.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools.metrics import MetricUnit

from dbt_project.aws.observability import metrics
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.errors import CredentialsError
from dbt_project.facts import metric_names
from dbt_project.pipeline import Pipeline
from dbt_project.postgres.connection import Database, PgSettings
from dbt_project.settings import DbEndpoint, Settings
from dbt_project.stage import S3Stage, s3_client


def _secret_failed() -> None:
    metrics.add_metric(name=metric_names.SECRET_RETRIEVAL_ERROR, unit=MetricUnit.Count, value=1)


def _secret_settings(prefix: str, endpoint: DbEndpoint, settings: Settings, force: bool):
    from aws_lambda_powertools.utilities import parameters

    arn = endpoint.secret_arn
    try:
        secret = parameters.get_secret(arn, transform="json", force_fetch=force)
    except Exception as exc:
        _secret_failed()
        raise CredentialsError(
            f"cannot read the {prefix.lower()} database secret {arn} ({exc.__class__.__name__}); "
            "check that it exists and that the function's role may read it"
        ) from exc
    if not isinstance(secret, dict) or not secret.get("username") or "password" not in secret:
        _secret_failed()
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
        _secret_failed()
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


def pipeline(settings: Settings, *prefixes: str, with_stage: bool = True) -> Pipeline:
    """The parts of a function's pipeline: the databases named by ``prefixes``
    (``SOURCE``, ``ANALYTICS``), the S3 stage and the dbt project, each made once."""
    parts = Pipeline(dbt=dbt(settings), gzip_level=settings.gzip_level)
    for prefix in prefixes:
        setattr(parts, prefix.lower(), database(settings, prefix))
    if with_stage:
        parts.stage = stage(settings)
    return parts


def reset() -> None:
    """Forget every cached object, as a cold start would."""
    for factory in (database, dbt, stage, _rds_client):
        factory.cache_clear()


def reader_password(settings: Settings) -> str | None:
    """The password of the read-only login, from the secret the stack made for it."""
    if not settings.reader_secret_arn:
        return None
    from aws_lambda_powertools.utilities import parameters

    try:
        secret = parameters.get_secret(settings.reader_secret_arn, transform="json")
        return secret["password"]
    except Exception as exc:
        _secret_failed()
        raise CredentialsError(
            f"cannot read the reader login's secret {settings.reader_secret_arn} "
            f"({exc.__class__.__name__}); check that it exists and holds a password"
        ) from exc
