"""A reprocessing plan: a range of business days cut into windowed chunks, in day order,
each sized by a cost model to fit a time budget.

The cheapest unit of reprocessing is one windowed night over many days, not a night
per day: a night's fixed costs (dbt's own work per node, the data tests, the load,
the analytics tests) are paid once per chunk instead of once per day. So a chunk is
made as long as its budget allows, by the orders in it: what an extract of a window
costs grows with the orders it reads.

A full refresh (and the history load, which is one) rebuilds the incremental state
from nothing: its first chunk is a full-refresh night bounded by its own run date
(the first build of ``int_customer_days`` reads no later order), and the chunks
after it extend that state night by night in day order, so no step reads more than
its chunk's orders. Those chunks own their days but no customer; the last one owns
every customer and counts each once, from the state the chunks built (a customer
re-stated by every chunk that touches it would cost most of a whole build per chunk).
The first chunk's load deletes the days the history up to its run date does not
have (the later chunks add theirs back); the last chunk's, the customers it lacks.

The same plan runs locally (``etl backfill``) and on AWS (the reprocess state machine
runs each chunk through the extract function, then the load function).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import NamedTuple

from dbt_project.errors import ConfigError
from dbt_project.facts.business_calendar import MAX_LOOKBACK_DAYS
from dbt_project.request import (
    BackfillRequest,
    CustomerScope,
    NightRequest,
    Trigger,
    check_lookback,
    parse_date,
)


@dataclass(frozen=True)
class CostModel:
    """Seconds an extract of a chunk takes: a fixed part, a part per order it reads and a
    part per customer it owns (each owned customer's totals are summed again, written,
    unloaded and loaded: a one-day window pays it for nearly every order, a long one
    for each customer once)."""

    fixed_seconds: float
    seconds_per_order: float
    seconds_per_customer: float = 0.0

    def estimate(self, orders: int, customers: int = 0) -> float:
        return (
            self.fixed_seconds
            + self.seconds_per_order * orders
            + self.seconds_per_customer * customers
        )


class DayCount(NamedTuple):
    """What one business day of the source holds: its orders, and their customers."""

    orders: int
    customers: int


# Measured on a 2-core machine with the embedded PostgreSQL 18 (`python -m
# bench.calibrate`): windowed extracts of 1 to 365 days at 4,000 orders a day and
# 200,000 customers, fitted by least squares, gave 2.8 s + 28.8 µs per order + 48.6 µs
# per owned customer; the model below rounds each part up by a third or more, so a
# chunk overruns its estimate rarely. The per-order part covers what grows with the
# window (int_customer_days, the day marts, the data tests); the per-customer part,
# the owned customers' totals, their file and their load; the fixed part, dbt's own
# work per node. A slower database (db.t4g.micro) needs a smaller budget, not another
# model: the run report gives each chunk's time.
COST = CostModel(fixed_seconds=4.0, seconds_per_order=40e-6, seconds_per_customer=65e-6)
# A Standard execution keeps 25,000 history events, some 14 a chunk: a plan stays well
# inside that (and inside the 256 KB its state may hold).
MAX_CHUNKS = 1_000


@dataclass(frozen=True)
class Chunk:
    """One windowed night of a plan: the business days ``first`` to ``last``."""

    first: date
    last: date
    orders: int
    estimate_seconds: float
    # The first chunk of a full refresh: builds the incremental state from nothing.
    full_refresh: bool = False
    trigger: Trigger = Trigger.BACKFILL
    customers: CustomerScope = CustomerScope.WINDOW

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def night(self) -> NightRequest:
        """The night that runs the chunk; a reprocessing night passes no freshness gate."""
        return NightRequest(
            self.last,
            self.days,
            self.trigger,
            freshness_gate=False,
            full_refresh=self.full_refresh,
            customers=self.customers,
        )

    def event(self) -> dict:
        """The chunk as the extract function's event receives it (``{"chunk": ...}``)."""
        return {
            "run_date": self.last.isoformat(),
            "lookback_days": self.days,
            "full_refresh": self.full_refresh,
            "trigger": str(self.trigger),
            "customers": str(self.customers),
        }

    @classmethod
    def from_event(cls, event: object) -> Chunk:
        """The chunk of an extract event; its dates and window checked as a night's are."""
        keys = {"run_date", "lookback_days", "full_refresh", "trigger", "customers"}
        if not isinstance(event, dict) or set(event) != keys:
            raise ConfigError(f"a chunk must be an object with exactly the keys {sorted(keys)}")
        last = parse_date(event["run_date"], "run_date")
        days = check_lookback(event["lookback_days"])
        refresh, trigger = event["full_refresh"], event["trigger"]
        if not isinstance(refresh, bool):
            raise ConfigError(f"full_refresh must be true or false, not {refresh!r}")
        if trigger not in (Trigger.BACKFILL, Trigger.FULL_REFRESH):
            raise ConfigError(f"a chunk's trigger is backfill or full_refresh, not {trigger!r}")
        customers = event["customers"]
        if customers not in set(CustomerScope):
            raise ConfigError(f"a chunk's customers are window, none or all, not {customers!r}")
        first = last - timedelta(days=days - 1)
        return cls(first, last, 0, 0.0, refresh, Trigger(trigger), CustomerScope(customers))


@dataclass(frozen=True)
class Plan:
    """The chunks of one request, in day order, covering every day of its range once."""

    request: BackfillRequest
    chunks: tuple[Chunk, ...]

    @property
    def first(self) -> date:
        return self.chunks[0].first

    @property
    def last(self) -> date:
        return self.chunks[-1].last

    @property
    def days(self) -> int:
        return sum(chunk.days for chunk in self.chunks)

    @property
    def orders(self) -> int:
        return sum(chunk.orders for chunk in self.chunks)

    @property
    def estimate_seconds(self) -> float:
        return sum(chunk.estimate_seconds for chunk in self.chunks)

    def describe(self) -> str:
        what = "full refresh" if self.request.full_refresh else "backfill"
        return (
            f"{what} of {self.first}..{self.last}: {self.days} days, {self.orders:,} orders "
            f"in {len(self.chunks)} chunks of at most {self.request.budget_minutes:g} minutes "
            f"(estimated {self.estimate_seconds / 60:.1f} minutes in all)"
        )

    def as_json(self) -> dict:
        """What the state machine carries from chunk to chunk, and reports."""
        return {
            "kind": str(self.request.trigger),
            "first_day": self.first.isoformat(),
            "last_day": self.last.isoformat(),
            "days": self.days,
            "orders": self.orders,
            "budget_minutes": self.request.budget_minutes,
            "estimate_seconds": round(self.estimate_seconds, 1),
            "count": len(self.chunks),
            "chunks": [chunk.event() for chunk in self.chunks],
        }


def _too_long(day: date, orders: int, estimate: float, budget_minutes: float) -> ConfigError:
    return ConfigError(
        f"{day} alone has {orders:,} orders, estimated at {estimate / 60:.1f} minutes: over the "
        f"budget of {budget_minutes:g} minutes a chunk must fit; give the run a larger budget "
        "where it has the time (etl backfill --budget-minutes, on a machine without Lambda's "
        "15 minutes), or see 'Beyond Lambda' in infra/README.md"
    )


@dataclass
class _Cutter:
    """Cuts days into chunks by the model; ``owned`` says whether chunks own the
    customers of their orders (a backfill's do) or none (a rebuilt history's before
    its last)."""

    request: BackfillRequest
    counts: dict[date, DayCount]
    customers: int
    cost: CostModel
    owned: bool

    @property
    def budget(self) -> float:
        return self.request.budget_minutes * 60

    def estimate(self, days: list[date], extra: float = 0.0) -> float:
        counts = [self.counts.get(day, DayCount(0, 0)) for day in days]
        owned = min(sum(c.customers for c in counts), self.customers) if self.owned else 0
        return self.cost.estimate(sum(c.orders for c in counts), owned) + extra

    def fits(self, days: list[date], extra: float = 0.0) -> bool:
        return len(days) <= MAX_LOOKBACK_DAYS and self.estimate(days, extra) <= self.budget

    def check_days(self, days: list[date]) -> None:
        for day in days:
            if not self.fits([day]):
                orders = self.counts.get(day, DayCount(0, 0)).orders
                raise _too_long(day, orders, self.estimate([day]), self.request.budget_minutes)

    def cut(self, days: list[date]) -> list[list[date]]:
        """Greedy, in day order: each chunk as long as the budget allows."""
        self.check_days(days)
        spans: list[list[date]] = []
        for day in days:
            if spans and self.fits([*spans[-1], day]):
                spans[-1].append(day)
            else:
                spans.append([day])
        return spans

    def chunk(self, days: list[date], *, extra: float = 0.0, **fields) -> Chunk:
        orders = sum(self.counts.get(day, DayCount(0, 0)).orders for day in days)
        estimate = self.estimate(days, extra)
        return Chunk(days[0], days[-1], orders, estimate, trigger=self.request.trigger, **fields)


def plan_chunks(
    request: BackfillRequest,
    first: date,
    counts: dict[date, DayCount],
    customers: int,
    cost: CostModel = COST,
) -> Plan:
    """Cut ``first``..``request.last`` into chunks, in day order, each as long as the
    budget allows (and at most the longest window a night takes); ``counts`` holds each
    day's orders and customers, ``customers`` the source's. A day that cannot fit the
    budget alone is refused before anything runs."""
    if first > request.last:
        raise ConfigError(f"nothing to reprocess: the range starts ({first}) after it ends")
    days = [first + timedelta(days=n) for n in range((request.last - first).days + 1)]
    window = _Cutter(request, counts, customers, cost, owned=True)
    if not request.full_refresh:
        chunks = [window.chunk(span) for span in window.cut(days)]
    elif window.fits(days):
        # In one night: its window is the whole history, which owns every customer.
        chunks = [window.chunk(days, full_refresh=True)]
    else:
        chunks = _rebuild(_Cutter(request, counts, customers, cost, owned=False), days)
    if len(chunks) > MAX_CHUNKS:
        raise ConfigError(
            f"{first}..{request.last} needs {len(chunks)} chunks at a budget of "
            f"{request.budget_minutes:g} minutes, over the {MAX_CHUNKS} one run takes; "
            "give each chunk a larger budget or split the range into several runs"
        )
    return Plan(request, tuple(chunks))


def _rebuild(cutter: _Cutter, days: list[date]) -> list[Chunk]:
    """A history rebuilt in chunks counts its customers once, in its last chunk: the
    chunks before it build the state and the days only (re-stating every customer each
    chunk touches would repeat most of a whole build per chunk). The last chunk is the
    longest run of final days that fits the budget with every customer counted."""
    counting = cutter.cost.seconds_per_customer * cutter.customers
    cutter.check_days(days)
    tail = [days[-1]]
    while len(tail) < len(days) and cutter.fits([days[-len(tail) - 1], *tail], counting):
        tail.insert(0, days[-len(tail) - 1])
    if not cutter.fits(tail, counting):
        raise ConfigError(
            f"counting the source's {cutter.customers:,} customers once is estimated at "
            f"{counting / 60:.1f} minutes, with its last day over the budget of "
            f"{cutter.request.budget_minutes:g} minutes a chunk must fit; give the run a "
            "larger budget where it has the time (etl backfill --budget-minutes), or see "
            "'Beyond Lambda' in infra/README.md"
        )
    spans = cutter.cut(days[: len(days) - len(tail)])
    if not spans:  # the last chunk is the whole history, counted without its customers
        return [cutter.chunk(tail, extra=counting, full_refresh=True, customers=CustomerScope.ALL)]
    chunks = [
        cutter.chunk(span, full_refresh=n == 0, customers=CustomerScope.NONE)
        for n, span in enumerate(spans)
    ]
    return [*chunks, cutter.chunk(tail, extra=counting, customers=CustomerScope.ALL)]
