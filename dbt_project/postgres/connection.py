"""Connections: one settings type for URLs and secrets, one connect with a bounded retry,
and the reusable database handle the pipeline and the Lambda functions share."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, quote, unquote, urlsplit

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from dbt_project.errors import ConfigError, CredentialsError, DatabaseUnavailable, LoginRefused
from dbt_project.facts.names import DBNAME_VARIABLES, LEGACY_SCHEMA
from dbt_project.settings import SessionLimits, current, redact

# What a server that refuses a connection says: these are answers, not outages, so
# they end the run at once (exit 3) with the server's reason instead of being retried.
# The credentials themselves were refused (the pipeline's own sessions and dbt's alike:
# a password rotated meanwhile, an expired IAM token): re-reading them may help.
CREDENTIALS_REFUSED = (
    "password authentication failed",
    "pam authentication failed",  # an RDS IAM token that is wrong or expired
    "no password supplied",
    "no pg_hba.conf entry",
)
# TLS refused: an unknown CA, a wrong host name, an expired certificate, a missing
# bundle file, a server without TLS where TLS is required.
TLS_REFUSED = ("certificate", "server does not support ssl")
_REFUSED = (
    "does not exist",  # role or database
    *TLS_REFUSED,
    "is not permitted to log in",
    "permission denied for database",
)
# What a URL without sslmode gets: a server on this machine may have no TLS at all (the
# local one has none); any other must prove who it is. ``sslmode=require`` (or
# ``prefer``) in the URL is the escape hatch for a server that cannot.
LOCAL_SSLMODE = "prefer"
REMOTE_SSLMODE = "verify-full"
TLS_FIX = (
    "give the server's CA bundle in sslrootcert and its own host name in the URL "
    "(sslmode=verify-full checks both; sslmode=require skips them)"
)


def is_loopback(host: str) -> bool:
    """A Unix socket folder, localhost or a loopback address."""
    if host.startswith("/") or host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class PgSettings:
    host: str
    port: int
    dbname: str
    user: str
    # Never printed: not in repr, not in display, redacted from URLs in messages.
    password: str = field(default="", repr=False)
    sslmode: str = LOCAL_SSLMODE
    # The CA bundle that verify-ca / verify-full check the server's certificate against.
    sslrootcert: str | None = None
    # A role every session sets at its start (``-c role=...``), dbt's too.
    role: str | None = None

    @classmethod
    def from_url(cls, url: str) -> PgSettings:
        """``postgresql://user:password@host:port/db?sslmode=...&sslrootcert=...``;
        without sslmode, ``verify-full`` unless the host is this machine's."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                f"not a PostgreSQL URL: {redact(url)!r}; use postgresql://user:password@host:port/db"
            )
        query = parse_qs(parts.query)
        host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        sslmode = LOCAL_SSLMODE if is_loopback(host) else REMOTE_SSLMODE
        dbname = unquote(parts.path.lstrip("/")) or "postgres"
        return cls(
            host=host,
            port=parts.port or 5432,
            dbname=dbname,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password or ""),
            sslmode=query.get("sslmode", [sslmode])[0],
            sslrootcert=query.get("sslrootcert", [None])[0],
        )

    def with_database(self, dbname: str) -> PgSettings:
        return replace(self, dbname=dbname)

    def with_credentials(self, user: str, password: str) -> PgSettings:
        return replace(self, user=user, password=password)

    def options(self, limits: SessionLimits) -> str | None:
        """The ``-c`` options a session starts with (libpq's ``options``, PGOPTIONS)."""
        parts = [limits.options() or ""]
        if self.role:
            parts.append("-c role=" + self.role.replace("\\", "\\\\").replace(" ", "\\ "))
        return " ".join(p for p in parts if p) or None

    @property
    def url(self) -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        if self.host.startswith("/"):
            return f"postgresql://{auth}@/{self.dbname}?host={self.host}&port={self.port}"
        query = f"sslmode={self.sslmode}"
        if self.sslrootcert:
            query += f"&sslrootcert={quote(self.sslrootcert)}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{self.dbname}?{query}"

    @property
    def display(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def dbt_env(self, target: str) -> dict[str, str]:
        """The variables ``profiles.yml`` reads for ``target``: each target takes its
        database name from a variable of its own."""
        return {
            "ETL_PG_HOST": self.host,
            "ETL_PG_PORT": str(self.port),
            "ETL_PG_USER": self.user,
            DBNAME_VARIABLES[target]: self.dbname,
            "ETL_PG_SSLMODE": self.sslmode,
            "ETL_PG_SSLROOTCERT": self.sslrootcert or "",
            "DBT_ENV_SECRET_PG_PASSWORD": self.password,
        }


def connect(
    settings: PgSettings,
    *,
    wait_seconds: float | None = None,
    connect_timeout: int = 10,
    statement_timeout_ms: int | None = None,
    limits: SessionLimits | None = None,
    application_name: str = "shop-etl",
    on_retry: Callable[[int, Exception], None] | None = None,
) -> psycopg2.extensions.connection:
    """Connect, retrying while the server is unreachable or starting, for at most ``wait_seconds``.

    Aurora Serverless v2 resuming from 0 ACU refuses or times out connections for
    ~15 s, so the pipeline waits up to ``ETL_CONNECT_WAIT_SECONDS`` (default 60) when
    the caller gives no bound. A server that answers with a refusal (credentials, an
    unknown role or database, a TLS mismatch) is not retried: the caller may re-read
    the secret.
    """
    if wait_seconds is None:
        wait_seconds = current().connect_wait_seconds
    limits = limits or SessionLimits(statement_timeout_ms=statement_timeout_ms)
    deadline = time.monotonic() + wait_seconds
    attempt, delay = 0, 0.5
    while True:
        attempt += 1
        try:
            return psycopg2.connect(
                host=settings.host,
                port=settings.port,
                dbname=settings.dbname,
                user=settings.user,
                password=settings.password or None,
                sslmode=settings.sslmode if not settings.host.startswith("/") else None,
                sslrootcert=settings.sslrootcert,
                connect_timeout=connect_timeout,
                application_name=application_name,
                options=settings.options(limits),
            )
        except psycopg2.OperationalError as exc:
            _raise_if_refused(settings, exc)
            if time.monotonic() + delay > deadline:
                raise DatabaseUnavailable(
                    f"cannot reach PostgreSQL at {settings.display} after {attempt} attempts "
                    f"over {wait_seconds:.0f}s ({first_line(str(exc))}); check that the server "
                    "is running and reachable, or raise ETL_CONNECT_WAIT_SECONDS"
                ) from exc
            if on_retry:
                on_retry(attempt, exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _raise_if_refused(settings: PgSettings, exc: psycopg2.OperationalError) -> None:
    """An answer from the server (or from TLS) ends the attempt at once, with its reason."""
    message = first_line(str(exc))
    lowered = message.lower()
    if any(p in lowered for p in CREDENTIALS_REFUSED):
        raise LoginRefused(
            f"{settings.display} rejected the credentials ({message}); "
            "check the user and password (or the secret they come from)"
        ) from exc
    if "database" in lowered and "does not exist" in lowered:
        raise ConfigError(
            f"{message} on {settings.host}:{settings.port}; create it or run `etl init` first"
        ) from exc
    if any(p in lowered for p in TLS_REFUSED):
        raise LoginRefused(
            f"{settings.display} failed the TLS check ({message}); {TLS_FIX}"
        ) from exc
    if any(p in lowered for p in _REFUSED):
        raise LoginRefused(
            f"{settings.display} refused the connection ({message}); check the login, its "
            "grants, and the TLS settings (sslmode, sslrootcert) against the server's"
        ) from exc


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def ensure_database(server: PgSettings, dbname: str) -> None:
    """Create ``dbname`` on the server if it is missing (needs CREATEDB)."""
    conn = connect(server.with_database("postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    finally:
        conn.close()


class Database:
    """Settings plus one reusable connection; re-reads credentials once if they are refused.

    ``resolve(force)`` returns the settings; with ``force=True`` it must bypass any
    cache (a rotated secret, a new IAM token). Settings older than
    ``refresh_after_seconds`` are resolved again before the next new connection
    (an IAM token is valid for 15 minutes). Warm Lambda invocations keep the
    connection.
    """

    def __init__(
        self,
        resolve: Callable[[bool], PgSettings],
        *,
        limits: SessionLimits | None = None,
        connect_wait_seconds: float | None = None,
        refresh_after_seconds: float | None = None,
    ):
        self._resolve = resolve
        self._settings: PgSettings | None = None
        self._resolved_at = 0.0
        self._conn = None
        self._role: str | None = None
        self.limits = limits or SessionLimits()
        self.connect_wait_seconds = connect_wait_seconds
        self.refresh_after_seconds = refresh_after_seconds

    @classmethod
    def from_settings(cls, settings: PgSettings, **kwargs) -> Database:
        return cls(lambda force: settings, **kwargs)

    @property
    def settings(self) -> PgSettings:
        stale = (
            self.refresh_after_seconds is not None
            and time.monotonic() - self._resolved_at > self.refresh_after_seconds
        )
        if self._settings is None or stale:
            self._settings = self._resolve(False)
            self._resolved_at = time.monotonic()
        return replace(self._settings, role=self._role) if self._role else self._settings

    def refresh_credentials(self) -> bool:
        """Re-read the credentials past any cache; True if they changed."""
        fresh = self._resolve(True)
        changed = fresh != self._settings
        self._settings, self._resolved_at = fresh, time.monotonic()
        return changed

    def act_as(self, role: str) -> None:
        """Every session from now on runs as ``role``: the open one at once, new ones
        (this handle's and dbt's) from their start."""
        self._role = role
        if self._conn is not None and not self._conn.closed:
            with self._conn.cursor() as cur:
                cur.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            self._conn.commit()  # a session setting, kept by later transactions

    def _connect(self, settings: PgSettings):
        return connect(settings, wait_seconds=self.connect_wait_seconds, limits=self.limits)

    def connection(self):
        if self._conn is not None and not self._conn.closed:
            try:
                with self._conn.cursor() as cur:
                    cur.execute("select 1")
                self._conn.rollback()
                return self._conn
            except Exception:
                self.close()
        try:
            self._conn = self._connect(self.settings)
        except CredentialsError:
            if not self.refresh_credentials():
                raise
            self._conn = self._connect(self.settings)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def adopt_legacy_schema(cur, name: str, marker_table: str) -> bool:
    """Rename the schema an earlier version called ``etl`` to ``name``, once: when it
    holds ``marker_table`` (so it is this project's) and ``name`` does not exist yet."""
    cur.execute(
        "select exists (select from pg_namespace where nspname = %s), "
        "to_regclass(format('%%I.%%I', %s, %s)) is not null",
        (name, LEGACY_SCHEMA, marker_table),
    )
    exists, legacy = cur.fetchone()
    if exists or not legacy:
        return False
    cur.execute(
        sql.SQL("alter schema {} rename to {}").format(
            sql.Identifier(LEGACY_SCHEMA), sql.Identifier(name)
        )
    )
    return True
