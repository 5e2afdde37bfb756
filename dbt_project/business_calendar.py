"""Business days: the time zone they are counted in, the nightly window, and date input.

One definition for the pipeline, the Lambda event parser, the CLI and the CDK app's
schedule. ``dbt_project.yml`` repeats the time zone and the default lookback as dbt
var defaults (dbt cannot import Python); a test keeps the two equal.
Imports nothing from the rest of the package but its errors.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .errors import ConfigError

BUSINESS_TIMEZONE = "Asia/Tokyo"
# Business days each night recomputes, the run date included: today and yesterday,
# so that an order updated after yesterday's night still lands in its day.
DEFAULT_LOOKBACK_DAYS = 2
MAX_LOOKBACK_DAYS = 400
# A Lambda invocation must end within 15 minutes. The CLI keeps the same bound: a
# mistyped year in --start would otherwise queue thousands of nights.
MAX_BACKFILL_DAYS_LAMBDA = 31
# How far another clock (the extract's, the database's) may run ahead of the loader's.
CLOCK_SKEW = timedelta(minutes=5)


def utc_now() -> datetime:
    """The clock every "not in the future" check reads; tests replace it."""
    return datetime.now(UTC)


def parse_date(value: date | str, what: str = "date") -> date:
    """A calendar date from a ``date`` or an ISO ``YYYY-MM-DD`` string, else ConfigError.

    Dates reach dbt ``--vars``, which dbt renders into SQL unescaped: only a real
    date passes.
    """
    if isinstance(value, datetime):
        return _bad(value, what)
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if len(text) != 10:
        return _bad(value, what)
    try:
        return date.fromisoformat(text)
    except ValueError:
        return _bad(value, what)


def _bad(value, what: str):
    raise ConfigError(
        f"{what} {value!r} is not a real calendar date; "
        "use the ISO form YYYY-MM-DD, e.g. 2026-11-25"
    )


def business_date(moment: datetime, tz: str = BUSINESS_TIMEZONE) -> date:
    """The business day ``moment`` falls in (a naive moment is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(tz)).date()


def previous_business_day(moment: datetime, tz: str = BUSINESS_TIMEZONE) -> date:
    """The business day before the one ``moment`` falls in (a 02:00 Tokyo run loads yesterday)."""
    return business_date(moment, tz) - timedelta(days=1)


def check_run_date(day: date, what: str = "run_date", *, now: datetime | None = None) -> date:
    """A night runs for a business day that is over: the previous business day or earlier.

    A later day would build partial numbers for today, or none for a day to come, and its
    manifest would make the real night look stale when it arrives.
    """
    latest = previous_business_day(now or utc_now())
    if day > latest:
        raise ConfigError(
            f"{what} {day} is later than {latest}, the last business day that is over "
            f"({BUSINESS_TIMEZONE}); run a day once it has ended"
        )
    return day


def date_range(start: date | str, end: date | str, *, limit: int | None = None) -> list[date]:
    first, last = parse_date(start, "start date"), parse_date(end, "end date")
    if last < first:
        raise ConfigError(f"the range ends ({last}) before it starts ({first}); swap the dates")
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if limit is not None and len(days) > limit:
        raise ConfigError(
            f"a backfill of {len(days)} days ({first}..{last}) is over the limit of {limit}; "
            f"split it into ranges of at most {limit} days"
        )
    return days


def check_lookback(value: object) -> int:
    """A lookback from a CLI flag or an event: a whole number of days in range."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LOOKBACK_DAYS:
        raise ConfigError(
            f"lookback_days must be a whole number from 1 to {MAX_LOOKBACK_DAYS}, not {value!r}"
        )
    return value
