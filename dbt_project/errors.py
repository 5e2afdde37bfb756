"""Errors a user can cause. Each message says what is wrong and what to do about it.

The CLI prints ``str(error)`` as one line and exits non-zero; Lambda handlers
log it and re-raise so that the invocation is marked failed.
"""

# A database message quotes what it refused (a value, a line of a file), however long:
# it is cut to about this many characters before it reaches an error, a log or SNS.
MESSAGE_LIMIT = 300


def brief(text: object, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters. It reads only a little more than
    ``limit`` of a long text, so a quoted 100 MB value is never copied whole."""
    text = str(text)
    line = " ".join(text[: limit * 4].split())
    return line if len(line) <= limit and len(text) <= limit * 4 else line[: limit - 1] + "…"


def database_message(exc: BaseException) -> str:
    """What PostgreSQL said, cut: its primary message when it gave one."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return brief(primary or exc)


class EtlError(Exception):
    """Base class of every error the project raises on purpose."""

    exit_code = 2


class ConfigError(EtlError):
    """Bad input: a date, a flag, an event, a URL, a missing setting."""


class DatabaseUnavailable(EtlError):
    """A database could not be reached within the connect bound."""

    exit_code = 3


class ExtractBusy(EtlError):
    """Another extract holds the source's extract lock."""

    exit_code = 3

    def __init__(self, message: str):
        super().__init__(f"{message}; nothing was built or staged: run again once it has finished")


class LoadTimedOut(EtlError):
    """The load did not finish within its time limit; it was rolled back."""

    exit_code = 3


class CredentialsError(EtlError):
    """A secret is missing, unreadable, or its credentials are rejected."""

    exit_code = 3


class LoginRefused(CredentialsError):
    """The database itself refused the login: credentials, grants or TLS."""


class DataTestsFailed(EtlError):
    """dbt models or data tests failed; nothing was unloaded or loaded."""

    exit_code = 4

    def __init__(self, message: str, failures: list[str]):
        super().__init__(message)
        self.failures = failures


class SourceStale(DataTestsFailed):
    """The source's newest change is older than the freshness gate allows."""


class SourceClockAhead(DataTestsFailed):
    """The source holds changes later than now: a clock ahead, or rows no clock wrote."""


class StageError(EtlError):
    """A stage file or manifest is missing, corrupted, or does not match the contract."""

    exit_code = 5


class SchemaRefused(ConfigError):
    """A contract change the analytics tables cannot take without losing data; nothing
    was changed. ``refusals`` lists each one (table, column, message)."""

    def __init__(self, message: str, refusals=()):
        super().__init__(message)
        self.refusals = list(refusals)


class SourceColumnsChanged(DataTestsFailed):
    """A column a model reads is gone from its input: dropped or renamed."""
