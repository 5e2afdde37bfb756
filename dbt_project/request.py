"""What a run is asked to do, checked once, whoever asks: the ``etl`` command and the
extract function's events both build these objects, so the rules live here only.

- A night runs for a business day that is over: the previous business day (Asia/Tokyo)
  or earlier. Without a date, it is the latest one, as the schedule runs it.
- The freshness gate guards the latest night only, unless it is skipped or the night
  is a full refresh (which owns the whole history).
- A backfill (a range, or a full refresh of the whole history) runs in windowed chunks
  that a plan sizes to a time budget (``dbt_project.plan``); any range will do.

Every date that reaches dbt's ``--vars`` passes ``parse_date`` first: dbt renders vars
into SQL unescaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from dbt_project.errors import ConfigError
from dbt_project.facts import business_calendar
from dbt_project.facts.business_calendar import (
    BUSINESS_TIMEZONE,
    DEFAULT_LOOKBACK_DAYS,
    MAX_LOOKBACK_DAYS,
    previous_business_day,
)

# What one chunk of a backfill may take, by default: a Lambda invocation ends at 15
# minutes, less a margin for a cold start, the unload and the estimate's error.
DEFAULT_BUDGET_MINUTES = 13.0
# A week: a budget beyond it is a typo, not a plan.
MAX_BUDGET_MINUTES = 7 * 24 * 60


class CustomerScope(StrEnum):
    """Which customers a night owns (dbt var ``owned_customers``): those of the orders its
    window touches, as every night; none, as the chunks of a history rebuilt in chunks
    before the last, which build the state and the days only; or every customer, as that
    last chunk, which then counts each one once over the whole rebuilt history."""

    WINDOW = "window"
    NONE = "none"
    ALL = "all"


class Trigger(StrEnum):
    """Who asked for a night; the run report says it."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    BACKFILL = "backfill"
    FULL_REFRESH = "full_refresh"


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


def date_range(start: date | str, end: date | str) -> tuple[date, date]:
    """The first and last day of a range, checked: real dates, in order."""
    first, last = parse_date(start, "start date"), parse_date(end, "end date")
    if last < first:
        raise ConfigError(f"the range ends ({last}) before it starts ({first}); swap the dates")
    return first, last


def check_lookback(value: object) -> int:
    """A lookback from a CLI flag or an event: a whole number of days in range."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LOOKBACK_DAYS:
        raise ConfigError(
            f"lookback_days must be a whole number from 1 to {MAX_LOOKBACK_DAYS}, not {value!r}"
        )
    return value


def check_budget(value: object, what: str = "budget_minutes") -> float:
    """A chunk's time budget in minutes, from a flag or an event."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0 < value <= MAX_BUDGET_MINUTES:
        raise ConfigError(
            f"{what} must be a number of minutes above 0 and at most {MAX_BUDGET_MINUTES}, "
            f"not {value!r}"
        )
    return float(value)


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
    customers: CustomerScope = CustomerScope.WINDOW

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

    @property
    def owns_every_customer(self) -> bool:
        """A full refresh in one night owns every customer of its history; a chunk of a
        history rebuilt in chunks, every customer (the last) or none."""
        if self.customers is CustomerScope.WINDOW:
            return self.full_refresh
        return self.customers is CustomerScope.ALL


@dataclass(frozen=True)
class BackfillRequest:
    """Business days to reprocess, in windowed chunks (``dbt_project.plan``): every day from
    ``first`` to ``last``; or, as a full refresh, the source's whole history up to
    ``last`` rebuilt from nothing (``first`` is then the source's first day, which the
    plan reads)."""

    last: date
    first: date | None = None
    full_refresh: bool = False
    budget_minutes: float = DEFAULT_BUDGET_MINUTES

    @classmethod
    def of(
        cls,
        start: date | str,
        end: date | str,
        *,
        budget_minutes: object = DEFAULT_BUDGET_MINUTES,
        what: str = "end",
        now: datetime | None = None,
    ) -> BackfillRequest:
        first, last = date_range(start, end)
        check_run_date(last, what, now=now)
        return cls(last, first, budget_minutes=check_budget(budget_minutes))

    @classmethod
    def refresh(
        cls,
        end: date | str | None = None,
        *,
        budget_minutes: object = DEFAULT_BUDGET_MINUTES,
        what: str = "end",
        now: datetime | None = None,
    ) -> BackfillRequest:
        """The whole history up to ``end`` (default: the latest finished business day)."""
        last = latest_night(now) if end is None else parse_date(end, what)
        check_run_date(last, what, now=now)
        return cls(last, full_refresh=True, budget_minutes=check_budget(budget_minutes))

    @property
    def trigger(self) -> Trigger:
        return Trigger.FULL_REFRESH if self.full_refresh else Trigger.BACKFILL
