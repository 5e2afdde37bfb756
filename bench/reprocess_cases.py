"""Case 9: reprocessing. A year's backfill as ``etl backfill`` plans it (windowed chunks)
against the same year night by night, and the history load in chunks against one
whole-history build.

The driver generates the shops with SQL; each measurement runs in a fresh child process.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import child
from .data import ShopHistory, build_shop
from .report import Row, at_least, time_at_most

BACKFILL_SPEEDUP = 8.0
CHUNKED_HISTORY = 1.3


def _shop(ctx, name: str, orders_per_day: int, customers: int):
    shop = ShopHistory(
        days=ctx.sizes.reprocess_days, orders_per_day=orders_per_day, customers=customers
    )
    ctx.progress(
        f"reprocess: generating {shop.days} days of {orders_per_day:,} orders a day ({name})"
    )
    source = ctx.databases.new(f"reprocess_{name}")
    from .suite import _connection

    with _connection(source) as conn:
        build_shop(conn, shop)
    return shop, source


def _backfill(ctx, shop, source) -> Iterator[Row]:
    ctx.progress("reprocess: the history, then the year in chunks and a sample of its nights")
    measured = child.run(
        "backfill_year",
        source=source.url,
        extract_source=ctx.databases.extract_login(source).url,
        target=ctx.databases.new("reprocess_backfill").url,
        stage=str(ctx.scratch / "reprocess-backfill"),
        first=shop.first_day.isoformat(),
        last=shop.last_day.isoformat(),
        sample=ctx.sizes.reprocess_night_sample,
    )
    extra = measured.extra
    nights = [night["seconds"] for night in extra["nights"]]
    per_night = sum(nights) / len(nights)
    all_nights = per_night * extra["days"]
    chunks = extra["chunks"]
    yield Row(
        f"9 backfill of {extra['days']} days, {shop.orders_per_day:,} orders a day: in chunks",
        measured.rows,
        measured.seconds,
        measured.peak_mb,
        note=f"{len(chunks)} chunk(s) of "
        + ", ".join(
            f"{c['days']} days {c['seconds']:.1f} s (est. {c['estimate']:.0f})" for c in chunks
        ),
    )
    yield Row(
        f"9 backfill of {extra['days']} days: night by night (extrapolated)",
        None,
        all_nights,
        ratio=all_nights / measured.seconds,
        target=at_least(BACKFILL_SPEEDUP),
        note=f"{per_night:.2f} s a night, mean of {len(nights)} nights spread over the range",
    )


def _history(ctx, shop, source) -> Iterator[Row]:
    ctx.progress(f"reprocess: the history load of {shop.days * shop.orders_per_day:,} orders")
    measured = child.run(
        "history_load",
        source=source.url,
        extract_source=ctx.databases.extract_login(source).url,
        whole_target=ctx.databases.new("reprocess_whole").url,
        chunked_target=ctx.databases.new("reprocess_chunked").url,
        stage=str(ctx.scratch / "reprocess-history"),
        last=shop.last_day.isoformat(),
        chunks=ctx.sizes.reprocess_history_chunks,
        customers=shop.customers,
    )
    whole, chunked = measured.extra["whole"], measured.extra["chunked"]
    largest = max(c["orders"] for c in chunked["chunks"]) / measured.rows
    yield Row(
        f"9 history load of {measured.rows:,} orders: one whole-history night",
        measured.rows,
        whole["seconds"],
        note=f"dbt {whole['chunks'][0]['dbt']:.1f} + load {whole['chunks'][0]['load']:.1f} s",
    )
    yield Row(
        f"9 history load of {measured.rows:,} orders: in chunks",
        measured.rows,
        chunked["seconds"],
        measured.peak_mb,
        ratio=chunked["seconds"] / whole["seconds"],
        target=time_at_most(CHUNKED_HISTORY),
        note=f"{len(chunked['chunks'])} chunks, the largest {largest:.0%} of the orders: "
        + ", ".join(f"{c['seconds']:.1f}" for c in chunked["chunks"])
        + " s",
    )


def case_reprocess(ctx) -> Iterator[Row]:
    sizes = ctx.sizes
    shop, source = _shop(ctx, "year", sizes.reprocess_orders_per_day, sizes.reprocess_customers)
    yield from _backfill(ctx, shop, source)
    if (sizes.reprocess_history_orders_per_day, sizes.reprocess_history_customers) != (
        shop.orders_per_day,
        shop.customers,
    ):
        shop, source = _shop(
            ctx,
            "history",
            sizes.reprocess_history_orders_per_day,
            sizes.reprocess_history_customers,
        )
    yield from _history(ctx, shop, source)
