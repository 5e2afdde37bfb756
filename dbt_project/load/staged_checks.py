"""What the load checks in the staged rows themselves, after COPY and before any
upsert: rows that claim another night's day could pass the version guards as that
night, so they are refused in the load's transaction."""

from __future__ import annotations

from dbt_project.contract.manifest import FileEntry, Manifest
from dbt_project.contract.ownership import ownerships
from dbt_project.contract.tables import TableContract
from dbt_project.errors import StageError
from dbt_project.load import sql as load_sql


def check_as_of_dates(cur, manifest: Manifest, entry: FileEntry, table: TableContract) -> None:
    """Rows stamped with another day than the night's would pass the version check as
    that day (a far-future as_of_date would win over every later night)."""
    cur.execute(load_sql.count_other_as_of_dates(table), (manifest.run_date,))
    other, first, last = cur.fetchone()
    if other:
        raise StageError(
            f"{entry.key} has {other} rows whose as_of_date is not the run date "
            f"{manifest.run_date} ({first}..{last}); the file does not belong to that night: "
            "re-run the extract for that day"
        )


def check_days(cur, manifest: Manifest) -> None:
    """A night owns its lookback days and the earlier days of orders changed in its
    window, never a day after its run date: no honest night would own that day again
    (and a day in 2099 would end every view's "last 30 days")."""
    for ownership in ownerships():
        columns = ((ownership.keys_table, ownership.key), *ownership.columns)
        for name, day in columns:
            cur.execute(load_sql.count_days_after(name, day), (manifest.run_date,))
            later, last = cur.fetchone()
            if later:
                raise StageError(
                    f"{manifest.file(name).key} has {later} rows whose {day} is after "
                    f"the run date {manifest.run_date} (up to {last}); a night owns no later "
                    "day, so the file does not belong to that night: re-run the extract for "
                    "that day"
                )
