"""Which keys a night owns, and the tables every night stages: what the extract
unloads and the load reads, so it belongs to neither side.

Each mart declares its kind in its YAML (``config.meta.night_owns``, read by
``tables.py``); the keys of each kind are fixed models of ``models/load_keys``:

* ``days``: the business days the night owns (``run_window_days``), each day's version
  kept in ``ledger.day_versions``; any number of marts, each by its own date column.
* ``customers``: the customers the night owns. Their rows carry their own version
  (``as_of_date`` and the loader's ``extracted_at``), and only the few owned customers
  left without a row travel (``run_window_removed_customers``). One mart at most.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbt_project.contract.tables import load_contracts

DAYS_KEYS = "run_window_days"
# Owned customers the night has no row for in the customers mart.
REMOVED_CUSTOMERS = "run_window_removed_customers"


@dataclass(frozen=True)
class Ownership:
    """A set of owned days, and the marts whose rows those days own."""

    keys_table: str
    key: str
    versions_table: str
    # Each mart with the column that holds its day.
    columns: tuple[tuple[str, str], ...]
    # Compared lexicographically; the larger version wins.
    version_columns: tuple[str, ...]

    @property
    def marts(self) -> tuple[str, ...]:
        return tuple(mart for mart, _ in self.columns)

    def column(self, mart: str) -> str:
        return dict(self.columns)[mart]


def _owned(kind: str) -> list[tuple[str, str]]:
    return [
        (name, table.night_owns.column)
        for name, table in load_contracts().items()
        if table.night_owns is not None and table.night_owns.kind == kind
    ]


def ownerships() -> tuple[Ownership, ...]:
    """The day ownership of the project in use (none when no mart is owned by days)."""
    columns = tuple(_owned("days"))
    if not columns:
        return ()
    return (
        Ownership(
            keys_table=DAYS_KEYS,
            key="sales_date",
            versions_table="day_versions",
            columns=columns,
            # A later extraction read a later state of the source for the same day.
            version_columns=("extracted_at",),
        ),
    )


def customer_mart() -> str | None:
    """The mart owned by customers, if the project has one."""
    owned = _owned("customers")
    if len(owned) > 1:
        raise ValueError(
            f"marts {', '.join(m for m, _ in owned)} are all owned by customers; one mart "
            "may be (its rows carry the customers' versions): own the others by days"
        )
    return owned[0][0] if owned else None


def marts() -> tuple[str, ...]:
    """The marts of the project in use, in the order of their YAML."""
    return tuple(name for name, table in load_contracts().items() if table.night_owns)


def required_tables() -> tuple[str, ...]:
    """What every night stages, in the order the load reads it."""
    keys = tuple(o.keys_table for o in ownerships())
    removed = (REMOVED_CUSTOMERS,) if customer_mart() else ()
    return (*marts(), *keys, *removed)
