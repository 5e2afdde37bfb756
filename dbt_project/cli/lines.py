"""The one-line summaries the commands print: a night, a chunk of a backfill."""

from __future__ import annotations


def table_changes(load) -> str:
    """Rows inserted, updated and deleted per table, as one piece of a line."""
    return ", ".join(
        f"{name} +{t.inserted} ~{t.updated} -{t.deleted}" for name, t in load.tables.items()
    )


def tests_note(night) -> str:
    if night.tests is None:
        return ""
    return "  analytics tests passed" if night.tests.passed else "  ANALYTICS TESTS FAILED"


def night_line(night) -> str:
    """One line per night: rows extracted, rows changed per table, seconds, tests."""
    return (
        f"{night.run_date}  extracted {night.extract.rows_extracted:>6} rows  "
        f"{night.load.status}: {table_changes(night.load)}  {night.seconds:.1f}s"
        + tests_note(night)
    )


def chunk_line(chunk, night) -> str:
    """One line per chunk: its days, orders, rows extracted and changed, time."""
    refresh = "  (full refresh up to here)" if chunk.full_refresh else ""
    return (
        f"{chunk.first}..{chunk.last}  {chunk.days:>3} days  {chunk.orders:>9,} orders  "
        f"extracted {night.extract.rows_extracted:,} rows  {night.load.status}: "
        f"{table_changes(night.load)}  {night.seconds:.1f}s "
        f"(estimated {chunk.estimate_seconds:.1f}s){refresh}" + tests_note(night)
    )
