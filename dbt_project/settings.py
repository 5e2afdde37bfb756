"""Every setting the package takes from the environment, read in this one module.

``Settings.from_env()`` reads them once, checks them, and raises ConfigError naming
the variable and what it accepts. The CLI builds one per command and each Lambda
invocation one per event; objects that need a setting receive it (or build one when
a caller gave none, which is what tests and benchmarks rely on).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from dbt_project.errors import ConfigError

# Lambda's sandbox: /tmp is the only writable place.
LAMBDA_WORK_DIR = Path("/tmp/etl")  # noqa: S108
DEFAULT_CONNECT_WAIT_SECONDS = 60.0
# gzip level 1 compresses ~4x faster than the default 6 for a slightly larger file;
# the unload is bound by compression, the stage by bytes: 1 is the better trade here.
DEFAULT_GZIP_LEVEL = 1
DEFAULT_S3_MAX_ATTEMPTS = 8
DEFAULT_LOCAL_PG_PORT = 54329
# Deployed functions reach RDS and Aurora over TLS, checking the server's certificate
# and host name against the RDS CA bundle (ETL_PG_SSLROOTCERT).
DEFAULT_FUNCTION_SSLMODE = "verify-full"
# Session limits every connection gets (dbt's too, through PGOPTIONS): a lock wait or
# a transaction left open ends with an error instead of holding a function (and the
# locks it holds) until Lambda kills it.
DEFAULT_LOCK_TIMEOUT_MS = 600_000
DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 600_000


@dataclass(frozen=True)
class SessionLimits:
    """Server-side limits of every session: ``-c`` options at connect time."""

    statement_timeout_ms: int | None = None
    lock_timeout_ms: int | None = DEFAULT_LOCK_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int | None = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS

    def options(self) -> str | None:
        values = {
            "statement_timeout": self.statement_timeout_ms,
            "lock_timeout": self.lock_timeout_ms,
            "idle_in_transaction_session_timeout": self.idle_in_transaction_timeout_ms,
        }
        return " ".join(f"-c {k}={int(v)}" for k, v in values.items() if v) or None


@dataclass(frozen=True)
class DbEndpoint:
    """Where a function finds one database, and how it logs in: as ``iam_user`` with an
    IAM authentication token, or with the username and password in ``secret_arn``."""

    host: str
    port: int
    dbname: str
    secret_arn: str | None = None
    iam_user: str | None = None


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    work_dir: Path
    in_lambda: bool = False
    statement_timeout_ms: int | None = None
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS
    idle_in_transaction_timeout_ms: int = DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS
    connect_wait_seconds: float = DEFAULT_CONNECT_WAIT_SECONDS
    gzip_level: int = DEFAULT_GZIP_LEVEL
    s3_max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    dbt_verbose: bool = False
    dbt_target_path: Path | None = None
    dbt_log_path: Path | None = None
    # The `etl` command's defaults for its flags.
    source_url: str | None = None
    analytics_url: str | None = None
    stage: str | None = None
    # libpq's PGPASSWORD, for URLs without a password: dbt gets it too.
    pg_password: str | None = field(default=None, repr=False)
    # The local development server.
    local_pg_url: str | None = None
    local_pg_port: int = DEFAULT_LOCAL_PG_PORT
    # The Lambda functions' wiring, set by the stack.
    bucket: str | None = None
    function_sslmode: str = DEFAULT_FUNCTION_SSLMODE
    # The CA bundle that verify-full checks the server's certificate against.
    sslrootcert: Path | None = None
    region: str | None = None
    endpoints: tuple[tuple[str, DbEndpoint | str], ...] = ()
    # The initializer: the state machine it starts the history load on, and the
    # secret of the read-only login it gives a password (for the RDS Data API).
    reprocess_state_machine: str | None = None
    reader_secret_arn: str | None = None
    # The load: where each night's run report is sent.
    run_reports_topic: str | None = None
    # The load: where a failed night is sent for chat (set only with Slack alerts).
    failed_nights_topic: str | None = None

    def __repr__(self) -> str:
        # A database URL may carry its password: a logged or printed Settings must not.
        shown = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in _URL_SETTINGS and value:
                value = redact(value)
            shown.append(f"{item.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = _Reader(os.environ if environ is None else environ)
        in_lambda = bool(env.text("AWS_LAMBDA_FUNCTION_NAME"))
        root = Path(env.text("ETL_DBT_PROJECT_DIR") or Path(__file__).resolve().parent.parent)
        work = env.text("ETL_WORK_DIR")
        return cls(
            project_dir=root,
            work_dir=Path(work) if work else LAMBDA_WORK_DIR if in_lambda else root / ".etl",
            in_lambda=in_lambda,
            statement_timeout_ms=env.integer("ETL_STATEMENT_TIMEOUT_MS", None, minimum=1),
            lock_timeout_ms=env.integer("ETL_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS, minimum=1),
            idle_in_transaction_timeout_ms=env.integer(
                "ETL_IDLE_IN_TRANSACTION_TIMEOUT_MS",
                DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS,
                minimum=1,
            ),
            connect_wait_seconds=env.number(
                "ETL_CONNECT_WAIT_SECONDS", DEFAULT_CONNECT_WAIT_SECONDS
            ),
            gzip_level=env.integer("ETL_GZIP_LEVEL", DEFAULT_GZIP_LEVEL, minimum=1, maximum=9),
            s3_max_attempts=env.integer(
                "ETL_S3_MAX_ATTEMPTS", DEFAULT_S3_MAX_ATTEMPTS, minimum=1, maximum=50
            ),
            dbt_verbose=env.text("ETL_DBT_VERBOSE") == "1",
            dbt_target_path=env.path("DBT_TARGET_PATH"),
            dbt_log_path=env.path("DBT_LOG_PATH"),
            source_url=env.text("ETL_SOURCE_URL"),
            # ETL_TARGET_URL: the name before "target" was left to dbt's targets.
            analytics_url=env.text("ETL_ANALYTICS_URL") or env.text("ETL_TARGET_URL"),
            stage=env.text("ETL_STAGE"),
            pg_password=env.text("PGPASSWORD"),
            local_pg_url=env.text("ETL_PG_URL"),
            local_pg_port=env.integer(
                "ETL_PG_PORT", DEFAULT_LOCAL_PG_PORT, minimum=1, maximum=65535
            ),
            bucket=env.text("S3_BUCKET"),
            function_sslmode=env.text("ETL_PG_SSLMODE") or DEFAULT_FUNCTION_SSLMODE,
            sslrootcert=env.path("ETL_PG_SSLROOTCERT"),
            region=env.text("AWS_REGION") or env.text("AWS_DEFAULT_REGION"),
            endpoints=tuple((prefix, env.endpoint(prefix)) for prefix in ("SOURCE", "ANALYTICS")),
            reprocess_state_machine=env.text("REPROCESS_STATE_MACHINE_ARN"),
            reader_secret_arn=env.text("READER_SECRET_ARN"),
            run_reports_topic=env.text("RUN_REPORTS_TOPIC_ARN"),
            failed_nights_topic=env.text("FAILED_NIGHTS_TOPIC_ARN"),
        )

    @property
    def limits(self) -> SessionLimits:
        return SessionLimits(
            self.statement_timeout_ms, self.lock_timeout_ms, self.idle_in_transaction_timeout_ms
        )

    def endpoint(self, prefix: str) -> DbEndpoint:
        """The ``SOURCE`` or ``ANALYTICS`` database of a function, or why it is not set."""
        found = dict(self.endpoints).get(prefix, f"{prefix}_DB_HOST")
        if isinstance(found, str):
            raise ConfigError(f"the function's environment lacks {found}; redeploy the stack")
        return found

    def require_bucket(self) -> str:
        if not self.bucket:
            raise ConfigError("the function's environment lacks S3_BUCKET; redeploy the stack")
        return self.bucket


# Settings that hold a database URL, password and all.
_URL_SETTINGS = frozenset({"source_url", "analytics_url", "local_pg_url"})


def redact(url: str) -> str:
    """``url`` with its password, in the user part or a ``password=`` parameter, as ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib can read: show none of it
        return "***"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        "password=***" if pair.split("=", 1)[0].lower() == "password" else pair
        for pair in parts.query.split("&")
    )
    return parts._replace(netloc=netloc, query=query if parts.query else "").geturl()


class _Reader:
    """Typed reads of one environment, each failure naming the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def text(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value else None

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None

    def integer(self, name: str, default, *, minimum: int, maximum: int | None = None):
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < minimum or (maximum is not None and number > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(f"{name}={value!r} is not a whole number {bound}; fix or unset it")
        return number

    def number(self, name: str, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number >= 0:
            raise ConfigError(f"{name}={value!r} is not a number of seconds >= 0; fix or unset it")
        return number

    def endpoint(self, prefix: str) -> DbEndpoint | str:
        """The endpoint, or the name of the first variable it lacks."""
        secret, iam_user = self.text(f"{prefix}_DB_SECRET_ARN"), self.text(f"{prefix}_DB_IAM_USER")
        if not (secret or iam_user):
            return f"{prefix}_DB_SECRET_ARN"
        for name in (f"{prefix}_DB_HOST", f"{prefix}_DB_NAME"):
            if not self.text(name):
                return name
        return DbEndpoint(
            host=self.environ[f"{prefix}_DB_HOST"],
            port=self.integer(f"{prefix}_DB_PORT", 5432, minimum=1, maximum=65535),
            dbname=self.environ[f"{prefix}_DB_NAME"],
            secret_arn=secret,
            iam_user=iam_user,
        )


def current() -> Settings:
    """Settings from the environment as it is now (for callers that were given none)."""
    return Settings.from_env()


@contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables for the duration of a block, then restore them.

    dbt reads its connection from ``env_var()`` in profiles.yml, so the runner must
    put them in the process environment while dbt runs.
    """
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def quiet_dbt_tracking() -> None:
    """dbt's usage tracking waits on a host a VPC without NAT never answers."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
