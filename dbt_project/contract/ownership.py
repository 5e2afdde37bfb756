"""Which keys a night owns, and the tables every night stages: what the extract
unloads and the load reads, so it belongs to neither side.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbt_project.facts.names import MARTS


@dataclass(frozen=True)
class Ownership:
    """A set of keys a night owns, and the marts whose rows those keys own."""

    keys_table: str
    key: str
    versions_table: str
    marts: tuple[str, ...]
    # Compared lexicographically; the larger version wins.
    version_columns: tuple[str, ...]


OWNERSHIPS = (
    Ownership(
        keys_table="run_window_days",
        key="sales_date",
        versions_table="day_versions",
        marts=("product_sales_summary", "daily_sales_summary"),
        # A later extraction read a later state of the source for the same day.
        version_columns=("extracted_at",),
    ),
)
# Owned customers the night has no customer_analytics row for.
REMOVED_CUSTOMERS = "run_window_removed_customers"
# What every night stages, in the order the load reads it.
REQUIRED_TABLES = (*MARTS, *(o.keys_table for o in OWNERSHIPS), REMOVED_CUSTOMERS)
