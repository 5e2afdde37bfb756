"""Generated data the project has never seen: shop traffic for tests of the nightly
property, and gzip bombs for the stage's readers."""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from psycopg2.extras import execute_values

TOKYO = ZoneInfo("Asia/Tokyo")
REGIONS = ("東京", "大阪", "名古屋", "福岡", "札幌", "仙台")
CATEGORIES = ("本", "家電", "食品", "衣料", "玩具")


class Shop:
    """Writes customers, products and orders into a source database, day by day."""

    def __init__(
        self, conn, seed: int, customers: int = 40, products: int = 12, schema: str = "public"
    ):
        self.conn, self.schema = conn, schema
        self.rng = random.Random(seed)
        self.next_order = 1
        self.next_item = 1
        self.order_ids: list[int] = []
        self.customer_ids = list(range(1, customers + 1))
        self.prices = {
            p: Decimal(self.rng.randrange(100, 50000)) / 100 for p in range(1, products + 1)
        }
        with conn, conn.cursor() as cur:
            execute_values(
                cur,
                f"insert into {schema}.customers values %s",  # noqa: S608
                [
                    (
                        c,
                        f"顧客{c}",
                        f"c{c}-{seed}@example.jp",
                        self.rng.choice(REGIONS),
                        datetime(2025, 1, 1, tzinfo=TOKYO),
                    )
                    for c in self.customer_ids
                ],
            )
            execute_values(
                cur,
                f"insert into {schema}.products values %s",  # noqa: S608
                [
                    (p, f"商品{p}", self.rng.choice(CATEGORIES), price)
                    for p, price in self.prices.items()
                ],
            )

    def _moment(self, day: date) -> datetime:
        # A third of the orders within an hour of a Tokyo midnight, on either side.
        if self.rng.random() < 0.33:
            clock = self.rng.choice(
                [time(0, self.rng.randrange(60)), time(23, self.rng.randrange(60))]
            )
        else:
            clock = time(self.rng.randrange(24), self.rng.randrange(60), self.rng.randrange(60))
        return datetime.combine(day, clock, TOKYO)

    def orders_on(self, day: date, count: int) -> None:
        orders, items = [], []
        for _ in range(count):
            at = self._moment(day)
            status = self.rng.choice(
                ["pending", "paid", "shipped", "delivered", "delivered", "cancelled"]
            )
            orders.append((self.next_order, self.rng.choice(self.customer_ids), at, status, at))
            for _ in range(self.rng.randint(0 if self.rng.random() < 0.05 else 1, 3)):
                product = self.rng.choice(list(self.prices))
                items.append(
                    (
                        self.next_item,
                        self.next_order,
                        product,
                        self.rng.randint(1, 5),
                        self.prices[product],
                    )
                )
                self.next_item += 1
            self.order_ids.append(self.next_order)
            self.next_order += 1
        with self.conn, self.conn.cursor() as cur:
            execute_values(cur, f"insert into {self.schema}.orders values %s", orders)  # noqa: S608
            if items:
                execute_values(cur, f"insert into {self.schema}.order_items values %s", items)  # noqa: S608

    def late_changes(self, day: date, count: int) -> None:
        """Cancel or advance some older orders during business day ``day``."""
        with self.conn, self.conn.cursor() as cur:
            for order_id in self.rng.sample(self.order_ids, min(count, len(self.order_ids))):
                status = self.rng.choice(["cancelled", "cancelled", "shipped", "paid"])
                at = datetime.combine(
                    day, time(self.rng.randrange(24), self.rng.randrange(60)), TOKYO
                )
                cur.execute(
                    f"update {self.schema}.orders set status = %s, "  # noqa: S608
                    "updated_at = greatest(updated_at, %s) "
                    "where order_id = %s",
                    (status, at, order_id),
                )

    def history(self, first: date, last: date, per_day: int = 15) -> None:
        day = first
        while day <= last:
            self.orders_on(day, self.rng.randint(per_day // 2, per_day))
            day += timedelta(days=1)


def gzip_of_repeated_byte(byte: bytes, inflated: int, chunk: int) -> Iterator[bytes]:
    """One gzip member of ``inflated`` copies of ``byte`` (a multiple of ``chunk``), in
    pieces: a bomb of about 1000:1 without compressing all of it.

    Each ``chunk`` is compressed after a full flush, which resets the compressor, so
    every chunk after the first comes out as the same bytes: they are compressed once
    and repeated (1.5 GiB in under a second, where compressing it all took 9 s). The
    header and trailer (CRC-32 and length of the inflated bytes) are written here.
    """
    if inflated % chunk or inflated < 2 * chunk:
        raise ValueError(f"inflated={inflated} must be a multiple (2 or more) of {chunk}")
    piece = byte * chunk
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no header of its own
    first = raw.compress(piece) + raw.flush(zlib.Z_FULL_FLUSH)
    again = raw.compress(piece) + raw.flush(zlib.Z_FULL_FLUSH)
    last = raw.compress(piece) + raw.flush()
    crc = 0
    for _ in range(inflated // chunk):
        crc = zlib.crc32(piece, crc)
    # ID1 ID2, deflate, no flags, no time, best compression, OS unknown.
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + first
    for _ in range(inflated // chunk - 2):
        yield again
    yield last + struct.pack("<II", crc, inflated & 0xFFFFFFFF)
