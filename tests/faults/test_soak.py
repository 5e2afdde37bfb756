"""Soak: every night of the generated shop (8 by default, ETL_SOAK_NIGHTS=60 for the full
run) through the real extract and load, compared in full with the independent Python
computation; then the same nights loaded by overlapping processes in a shuffled order."""

from __future__ import annotations

import random
import time

from dbt_project.postgres.analytics_schema import LOAD_LOCK
from tests import reference
from tests.faults import harness
from tests.pipeline_helpers import snapshot

PROCESSES = 4


def test_soak_nights_in_order_equal_the_reference(fault, nights, new_target):
    count = len(nights.keys) - 1
    record = fault(
        f"soak. {count} nights in order",
        f"{count} consecutive nights of generated traffic (new orders, late cancellations and "
        f"status changes, next-day orders already present), extracted by dbt in "
        f"{nights.seconds:.0f}s, loaded in order",
    )
    assert count == harness.soak_nights()
    target = new_target()
    started = time.perf_counter()
    statuses = harness.load_all(
        target, harness.stage_for(nights.bucket(every_night=True)), nights.keys
    )
    seconds = time.perf_counter() - started
    assert statuses == ["loaded"] * len(nights.keys)
    ledger = harness.ledger(target)
    assert sorted(row[0] for row in ledger) == sorted(nights.run_ids)
    assert all(row[2] for row in ledger)
    record.check(f"{len(ledger)} ledger rows, one per night, all loaded ({seconds:.1f}s of loads)")

    # The generated traffic holds the path under test: a counted order cancelled after
    # its day left the lookback window.
    assert nights.late_cancelled, "no order was cancelled after its day left the lookback window"
    shop = reference.fetch_source(nights.source)
    expected = reference.marts(shop, as_of=nights.days[-1])
    actual = reference.read_marts(target)
    for table in expected:
        missing = expected[table].keys() - actual[table].keys()
        extra = actual[table].keys() - expected[table].keys()
        assert not missing and not extra, (table, sorted(missing)[:5], sorted(extra)[:5])
    assert harness.without_as_of(actual) == harness.without_as_of(expected)
    customers = actual["customer_analytics"]
    touched = reference.as_of_dates(shop, list(zip(nights.days, nights.lookbacks, strict=True)))
    assert {c: row["as_of_date"] for c, row in customers.items()} == {
        c: touched.get(c) for c in customers
    }
    assert all(row["last_order_date"] <= row["as_of_date"] for row in customers.values())
    sizes = ", ".join(f"{len(rows)} {table}" for table, rows in actual.items())
    record.check(
        f"every row equals the reference computed from the source ({sizes}); each "
        f"customer as of the last night that touched it; "
        f"{len(nights.late_cancelled)} cancellations older than the lookback window"
    )


def test_soak_nights_loaded_by_overlapping_processes(fault, nights, new_target, moto_endpoint):
    rng = random.Random(len(nights.keys))
    deliveries = list(range(len(nights.keys)))
    deliveries += rng.sample(deliveries, max(2, len(deliveries) // 4))  # some arrive twice
    rng.shuffle(deliveries)
    record = fault(
        f"soak. {len(nights.keys) - 1} nights loaded concurrently",
        f"{len(deliveries)} `etl load` processes ({len(deliveries) - len(nights.keys)} duplicate "
        f"deliveries) in a shuffled order, {PROCESSES} at a time, the first {PROCESSES} released "
        "together from the load lock",
    )
    bucket = nights.bucket(every_night=True)
    in_order = new_target()
    harness.load_all(in_order, harness.stage_for(bucket), nights.keys)
    expected = snapshot(in_order)

    target = new_target()
    env = harness.cli_env(moto_endpoint)
    gate = harness.admin(target)
    with gate.cursor() as cur:
        cur.execute("select pg_advisory_lock(%s)", (LOAD_LOCK,))
    pending = list(deliveries)
    running: list = []
    results: list[tuple[int, int, str, str]] = []
    started = time.perf_counter()
    released = False
    try:
        while pending or running:
            while pending and len(running) < PROCESSES:
                index = pending.pop(0)
                args = harness.load_args(bucket, nights.keys[index], target)
                running.append((index, harness.start_etl(*args, env=env)))
            if not released:
                harness.wait_for_backend(
                    gate,
                    query_like="select pg_advisory_xact_lock%",
                    waiting="Lock",
                    count=PROCESSES,
                )
                with gate.cursor() as cur:
                    cur.execute("select pg_advisory_unlock(%s)", (LOAD_LOCK,))
                released = True
            for item in list(running):
                index, process = item
                if process.poll() is not None:
                    running.remove(item)
                    results.append((index, *harness.finish(process)))
            time.sleep(0.05)
    finally:
        for _, process in running:
            process.kill()
        gate.close()
    seconds = time.perf_counter() - started

    assert all(code == 0 for _, code, _, _ in results), [r for r in results if r[1]]
    loaded = sorted(index for index, _, out, _ in results if ": loaded," in out)
    duplicates = sorted(index for index, _, out, _ in results if ": duplicate," in out)
    assert loaded == list(range(len(nights.keys)))
    assert len(duplicates) == len(deliveries) - len(nights.keys)
    record.check(
        f"{PROCESSES} loads seen queued at once; each night loaded exactly once, "
        f"{len(duplicates)} duplicates ({seconds:.1f}s)"
    )
    state = snapshot(target)
    assert harness.analytics_only(state) == harness.analytics_only(expected)
    assert harness.without_load_counts(state) == harness.without_load_counts(expected)
    record.check("marts, versions and ledger runs equal the in-order load: nothing lost or doubled")
