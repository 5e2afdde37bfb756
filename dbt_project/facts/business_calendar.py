"""Business days: the time zone they are counted in, the nightly window, and the clock.

One definition for the pipeline, the Lambda event parser, the CLI and the CDK app's
schedule. ``dbt_project.yml`` repeats the time zone and the default lookback as dbt
var defaults (dbt cannot import Python); a test keeps the two equal. The checks of
dates a user gives live in ``dbt_project.request``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

BUSINESS_TIMEZONE = "Asia/Tokyo"
# Business days each night recomputes, the run date included: today and yesterday,
# so that an order updated after yesterday's night still lands in its day.
DEFAULT_LOOKBACK_DAYS = 2
MAX_LOOKBACK_DAYS = 400
# How far another clock may run ahead: the extract's or a database's of the loader's,
# the shop's of its database's (the dbt var clock_skew_minutes repeats it).
CLOCK_SKEW = timedelta(minutes=5)


def utc_now() -> datetime:
    """The clock every "not in the future" check reads. Callers read it through this
    module (``business_calendar.utc_now()``), so that a test that sets it sets it for all."""
    return datetime.now(UTC)


def business_date(moment: datetime, tz: str = BUSINESS_TIMEZONE) -> date:
    """The business day ``moment`` falls in (a naive moment is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(tz)).date()


def previous_business_day(moment: datetime, tz: str = BUSINESS_TIMEZONE) -> date:
    """The business day before the one ``moment`` falls in (a 02:00 Tokyo run loads yesterday)."""
    return business_date(moment, tz) - timedelta(days=1)
