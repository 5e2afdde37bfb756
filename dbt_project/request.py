"""What a run is asked to do, checked once, whoever asks: the ``etl`` command and the
extract function's events both build these objects, so the rules live here only.

- A night runs for a business day that is over: the previous business day (Asia/Tokyo)
  or earlier. Without a date, it is the latest one, as the schedule runs it.
- The freshness gate guards the latest night only, unless it is skipped or the night
  is a full refresh (which owns the whole history).
- A backfill runs every day of a range in order; the range is bounded.

Every date that reaches dbt's ``--vars`` passes ``parse_date`` first: dbt renders vars
into SQL unescaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from dbt_project.errors import ConfigError
from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import (
    BUSINESS_TIMEZONE,
    DEFAULT_LOOKBACK_DAYS,
    MAX_LOOKBACK_DAYS,
    previous_business_day,
)

# A Lambda invocation must end within 15 minutes. The CLI keeps the same bound: a
# mistyped year in --start would otherwise queue thousands of nights.
MAX_BACKFILL_DAYS = 31


class Trigger(StrEnum):
    """Who asked for a night; the run report says it."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    BACKFILL = "backfill"


def parse_date(value: date | str, what: str = "date") -> date:
    """A calendar date from a ``date`` or an ISO ``YYYY-MM-DD`` string, else ConfigError."""
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


def latest_night(now: datetime | None = None) -> date:
    """The last business day that is over: the night a schedule would run now."""
    return previous_business_day(now or business_calendar.utc_now())


def check_run_date(day: date, what: str = "run_date", *, now: datetime | None = None) -> date:
    """A night runs for a business day that is over.

    A later day would build partial numbers for today, or none for a day to come, and its
    manifest would make the real night look stale when it arrives.
    """
    latest = latest_night(now)
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


@dataclass(frozen=True)
class NightRequest:
    """One night: the day it runs for and how."""

    run_date: date
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    trigger: Trigger = Trigger.MANUAL
    # The latest night checks that the source still receives orders first.
    freshness_gate: bool = False
    # Rebuild the incremental state from the whole history and own every day and
    # customer (the lookback is then the whole history's, found at extract time).
    full_refresh: bool = False

    @classmethod
    def of(
        cls,
        run_date: date | str | None = None,
        *,
        lookback_days: object = DEFAULT_LOOKBACK_DAYS,
        trigger: Trigger = Trigger.MANUAL,
        skip_freshness: bool = False,
        full_refresh: bool = False,
        what: str = "run_date",
        now: datetime | None = None,
    ) -> NightRequest:
        """The night of ``run_date`` (default: the latest), checked; ``what`` names the
        input in errors (``--date``, ``run_date``)."""
        latest = latest_night(now)
        day = latest if run_date is None else parse_date(run_date, what)
        check_run_date(day, what, now=now)
        gate = day == latest and not skip_freshness and not full_refresh
        return cls(day, check_lookback(lookback_days), trigger, gate, full_refresh)

    @property
    def days(self) -> tuple[date, ...]:
        return (self.run_date,)

    def nights(self) -> tuple[NightRequest, ...]:
        return (self,)


@dataclass(frozen=True)
class BackfillRequest:
    """Every business day of a range, in order, each one night of ``lookback_days``."""

    days: tuple[date, ...]
    lookback_days: int = DEFAULT_LOOKBACK_DAYS
    trigger: Trigger = Trigger.BACKFILL

    @classmethod
    def of(
        cls,
        start: date | str,
        end: date | str,
        *,
        lookback_days: object = DEFAULT_LOOKBACK_DAYS,
        what: str = "end_date",
        now: datetime | None = None,
    ) -> BackfillRequest:
        days = date_range(start, end, limit=MAX_BACKFILL_DAYS)
        check_run_date(days[-1], what, now=now)
        return cls(tuple(days), check_lookback(lookback_days))

    def nights(self) -> tuple[NightRequest, ...]:
        return tuple(NightRequest(day, self.lookback_days, self.trigger) for day in self.days)
