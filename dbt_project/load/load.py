"""Load one night's manifest into the analytics database, in one transaction.

What a night owns (its business days, the customers it touched) is replaced:
rows of the files are upserted, owned rows missing from them are deleted. Each
owned key carries the version that last wrote it, so a stale night delivered late
(out of order, or a re-run of an older day) never overwrites fresher numbers, and
``customer_analytics`` never goes back in time.

Where the version lives depends on how many keys a night owns. A night owns a few
business days: their versions sit in ``ledger.day_versions``. It owns thousands of
customers: each ``customer_analytics`` row carries its own version
(``as_of_date``, ``extracted_at``), compared inside the upsert, so versioning costs
no second write per customer. Only the customers a night removes (owned, but with no
row left) get a row elsewhere, in ``ledger.removed_customers``, so that a stale night
cannot bring them back.

The statements are composed in ``load_sql.py``; this module runs them and turns
what PostgreSQL refuses into the project's errors.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

import psycopg2
import psycopg2.errors
import psycopg2.extras

from dbt_project.contract.file_format import CHUNK, VerifyingReader
from dbt_project.contract.manifest import MAX_MANIFEST_BYTES, ExtractFacts, FileEntry, Manifest
from dbt_project.contract.ownership import (
    REMOVED_CUSTOMERS,
    Ownership,
    customer_mart,
    marts,
    ownerships,
    required_tables,
)
from dbt_project.contract.tables import TableContract, contract
from dbt_project.errors import ConfigError, LoadTimedOut, StageError, brief, database_message
from dbt_project.facts import business_calendar
from dbt_project.load import sql as load_sql
from dbt_project.load.staged_checks import check_as_of_dates, check_days
from dbt_project.postgres import deployments
from dbt_project.postgres.analytics_schema import (
    LOAD_LOCK,
    refresh_customer_totals,
    staged_without_key,
)
from dbt_project.stage import Stage


class LoadStatus(StrEnum):
    """What a delivered manifest came to."""

    LOADED = "loaded"
    # Its run was in the ledger already: an S3 event delivered twice, a re-sent load.
    DUPLICATE = "duplicate"


@dataclass
class TableLoad:
    rows_in_file: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped_stale: int = 0


@dataclass
class LoadResult:
    manifest_key: str
    run_id: str
    run_date: date
    status: LoadStatus
    tables: dict[str, TableLoad] = field(default_factory=dict)
    read_seconds: float = 0.0
    seconds: float = 0.0
    # What the extract said of its night, for the run report.
    extract: ExtractFacts | None = None
    full_refresh: bool = False
    dbt_artifacts: list[str] = field(default_factory=list)
    # A full refresh settles the reprocessing deployments asked for: which marts, why.
    reprocessed: dict | None = None

    @classmethod
    def of(cls, manifest: Manifest, manifest_key: str) -> LoadResult:
        return cls(
            manifest_key,
            manifest.run_id,
            manifest.run_date,
            LoadStatus.LOADED,
            extract=manifest.extract,
            full_refresh=manifest.full_refresh,
            dbt_artifacts=list(manifest.dbt_artifacts),
        )

    @property
    def rows_loaded(self) -> int:
        return sum(t.inserted + t.updated for t in self.tables.values())


def _copy_in(cur, stage: Stage, entry: FileEntry, table: TableContract) -> float:
    cur.execute(load_sql.create_incoming_table(table))
    copy = load_sql.copy_into_incoming(table).as_string(cur.connection)
    with stage.reader(entry.key) as raw:
        reader = VerifyingReader(raw, entry)
        try:
            cur.copy_expert(copy, reader, size=CHUNK)
        except psycopg2.Error as exc:
            if reader.error is not None:
                raise reader.error from None
            _copy_failed(exc, reader, entry, table)
    reader.verify()
    return reader.read_seconds


def _copy_failed(exc, reader: VerifyingReader, entry: FileEntry, table: TableContract):
    """Explain a failed COPY: a damaged file first, else the contract it breaks."""
    if isinstance(exc, psycopg2.errors.UniqueViolation):
        detail = brief(exc.diag.message_detail or "")
        raise StageError(
            f"{entry.key} holds the same {table.name} key twice ({detail}); the extract "
            "must produce one row per key: fix the model and re-run the extract"
        ) from exc
    if isinstance(exc, psycopg2.DataError | psycopg2.errors.BadCopyFileFormat):
        # A damaged file is the likelier cause: judge the whole of it first.
        reader.drain()
        reader.verify()  # raises if the bytes are not the ones the manifest describes
        raise StageError(
            f"{entry.key} does not fit the {table.name} contract "
            f"({database_message(exc)}); re-run the extract"
        ) from exc
    raise exc


def _version_values(ownership: Ownership, manifest: Manifest) -> list:
    values = {"as_of_date": manifest.run_date, "extracted_at": manifest.extracted_at}
    return [values[c] for c in ownership.version_columns]


def _apply_ownership(cur, ownership: Ownership, manifest: Manifest, result: LoadResult) -> None:
    owned = load_sql.owned_table(ownership)
    cur.execute(load_sql.select_owned_keys(ownership), _version_values(ownership, manifest))
    cur.execute(load_sql.index_owned_keys(ownership))
    cur.execute(load_sql.analyze(owned))
    for mart in ownership.marts:
        table, load = contract(mart), result.tables[mart]
        cur.execute(load_sql.count_unowned_and_stale(ownership, mart))
        unowned, load.skipped_stale = cur.fetchone()
        if unowned:
            raise StageError(
                f"{manifest.file(mart).key} has {unowned} rows outside the keys the night owns; "
                "the files do not belong together: re-run the extract for that day"
            )
        cur.execute(load_sql.delete_owned_rows_not_staged(ownership, table))
        load.deleted += cur.rowcount  # after a full refresh's own deletes
        cur.execute(
            load_sql.upsert_owned_rows(ownership, table, some_stale=bool(load.skipped_stale))
        )
        load.inserted, load.updated = cur.fetchone()
        load.unchanged = load.rows_in_file - load.inserted - load.updated - load.skipped_stale
    cur.execute(
        load_sql.record_owned_versions(ownership),
        (manifest.run_date, manifest.extracted_at, manifest.run_id),
    )


def _written_counts(cur, table) -> tuple[int, int] | None:
    cur.execute(load_sql.written_counts(table, cur.connection))
    row = cur.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def _load_customers(cur, manifest: Manifest, result: LoadResult, mart: str) -> None:
    """Upsert the customers mart with the version check inside the upsert itself."""
    table = contract(mart)
    analytics = load_sql.analytics_table(table.name)
    load = result.tables[table.name]
    version = {"as_of_date": manifest.run_date, "extracted_at": manifest.extracted_at}
    # Removals are rare and nights mostly arrive in order: look for a fresher removal
    # first, and filter the rows only when there is one.
    cur.execute(load_sql.fresher_removal_exists(), version)
    (fresher_removals,) = cur.fetchone()
    upsert = load_sql.upsert_customers(table, skip_removed=fresher_removals)
    before = _written_counts(cur, analytics)
    if before is None:
        cur.execute(load_sql.counting(upsert), version)
        load.inserted, load.updated = cur.fetchone()
    else:
        cur.execute(upsert, version)
        after = _written_counts(cur, analytics)
        load.inserted, load.updated = after[0] - before[0], after[1] - before[1]
    # Every row of a newer version is written, changed or not: the version moves on.
    load.skipped_stale = load.rows_in_file - load.inserted - load.updated
    if manifest.file(REMOVED_CUSTOMERS).rows:
        _remove_customers(cur, manifest, load, version, mart)


def _remove_customers(cur, manifest: Manifest, load: TableLoad, version: dict, mart: str) -> None:
    # The two files must not name the same customer.
    cur.execute(load_sql.count_removed_with_rows(mart), version)
    (both,) = cur.fetchone()
    if both:
        raise StageError(
            f"{manifest.file(REMOVED_CUSTOMERS).key} lists {both} customers that "
            f"{manifest.file(mart).key} has rows for; the files do not "
            "belong together: re-run the extract for that day"
        )
    cur.execute(load_sql.remove_customers(mart), {**version, "run_id": manifest.run_id})
    load.deleted += cur.rowcount


def _delete_what_the_history_lacks(cur, manifest: Manifest, result: LoadResult) -> None:
    """A full refresh owns every day up to its run date, and a night that owns every
    customer owns them all: rows its files do not have are gone from the source's
    history (or, in a history rebuilt in chunks, come back with the chunks after the
    first), so they go from the analytics side."""
    if manifest.full_refresh:
        for ownership in ownerships():
            for mart in ownership.marts:
                cur.execute(load_sql.delete_outside_keys(ownership, mart))
                result.tables[mart].deleted += cur.rowcount
            cur.execute(load_sql.delete_versions_outside_keys(ownership))
    customers = customer_mart()
    if customers and manifest.owns_every_customer:
        cur.execute(load_sql.delete_customers_not_restated(customers), (manifest.run_date,))
        result.tables[customers].deleted += cur.rowcount
        cur.execute(load_sql.delete_later_removals(), (manifest.run_date,))


def _apply_rows(cur, manifest: Manifest, result: LoadResult) -> None:
    """Both kinds of ownership; a row the analytics tables refuse is the file's fault."""
    try:
        _delete_what_the_history_lacks(cur, manifest, result)
        for ownership in ownerships():
            _apply_ownership(cur, ownership, manifest, result)
        customers = customer_mart()
        if customers:
            _load_customers(cur, manifest, result, customers)
        if customers == "customer_analytics":
            cur.execute(refresh_customer_totals())
        # The whole history is restated once the night owning every customer is in (a
        # full refresh in one night, or the last chunk of one rebuilt in chunks; not
        # its first chunk, which is marked full_refresh but owns no customer).
        if manifest.owns_every_customer:
            cur.execute(deployments.settle_requests(), (manifest.run_id,))
            result.reprocessed = deployments.reprocessed(cur.fetchall())
    except (psycopg2.errors.CheckViolation, psycopg2.errors.NotNullViolation) as exc:
        table = exc.diag.table_name or "an analytics table"
        rule = exc.diag.constraint_name or exc.diag.column_name or ""
        raise StageError(
            f"a row for {table} breaks its contract rule {rule} "
            f"({database_message(exc)}); the files of {manifest.run_date} "
            "are not what the model promises: fix the model, then re-run the extract"
        ) from exc
    except psycopg2.errors.CardinalityViolation as exc:
        raise StageError(
            f"{manifest.file(customer_mart()).key} holds the same customer_id twice; the "
            "extract must produce one row per key: fix the model and re-run the extract"
        ) from exc


def _copy_files_in(cur, stage: Stage, manifest: Manifest, result: LoadResult) -> None:
    for name in required_tables():
        entry = manifest.file(name)
        result.read_seconds += _copy_in(cur, stage, entry, contract(name))
        if load_sql.AS_OF_DATE in contract(name).column_names:
            check_as_of_dates(cur, manifest, entry, contract(name))
        if not staged_without_key(name):
            # Joined to the analytics tables: the planner needs their size.
            cur.execute(load_sql.analyze(load_sql.incoming_table(name)))
        if name in marts():
            result.tables[name] = TableLoad(rows_in_file=entry.rows)
    check_days(cur, manifest)


class _Deadline:
    """A whole-load time limit, enforced by the server on every wait and statement.

    Before each step the remaining time becomes the session's lock and statement
    timeouts, so a lock held by a stuck session, or a statement that runs too long,
    ends the load with a clear error (and a rollback) before the function is killed.
    """

    def __init__(self, limit_ms: int | None):
        self.limit_ms = limit_ms
        self.ends = None if limit_ms is None else time.monotonic() + limit_ms / 1000

    def bound(self, cur) -> None:
        if self.ends is None:
            return
        remaining = int((self.ends - time.monotonic()) * 1000)
        if remaining <= 0:
            raise LoadTimedOut(self._message("before the next step could start"))
        cur.execute(
            load_sql.bound_waits(),
            {"lock_ms": str(remaining), "statement_ms": str(remaining + 1_000)},
        )

    def _message(self, what: str) -> str:
        return (
            f"the load did not finish within its time limit of {self.limit_ms / 1000:.0f}s "
            f"({what}); it was rolled back and changed nothing: load the manifest again "
            "(the S3 event's retry does) once the other session is gone"
        )

    def explain(self, exc: psycopg2.Error) -> LoadTimedOut:
        if isinstance(exc, psycopg2.errors.LockNotAvailable):
            return LoadTimedOut(self._message("another session held the load lock or a table"))
        return LoadTimedOut(self._message("a statement was still running"))


def load_manifest(
    conn,
    stage: Stage,
    manifest_key: str,
    *,
    now: datetime | None = None,
    time_limit_ms: int | None = None,
) -> LoadResult:
    """Apply one manifest. Any failure rolls the whole night back.

    ``now`` is the moment of loading (the clock by default): a manifest that claims a
    later one is refused. ``time_limit_ms`` bounds the whole load, lock wait included.
    """
    started = time.perf_counter()
    raw = stage.get_bytes(manifest_key, max_bytes=MAX_MANIFEST_BYTES)
    manifest = Manifest.from_json(raw, manifest_key)
    manifest.check_not_from_the_future(manifest_key, now or business_calendar.utc_now())
    result = LoadResult.of(manifest, manifest_key)
    deadline = _Deadline(time_limit_ms)
    try:
        with conn, conn.cursor() as cur:
            deadline.bound(cur)
            cur.execute("select pg_advisory_xact_lock(%s)", (LOAD_LOCK,))
            # The staged files are joined to the tables whole: with the 4 MB default
            # every hash of a large night spills to disk. Only for this transaction.
            cur.execute("set local work_mem = '64MB'")
            cur.execute(
                load_sql.claim_run(),
                (
                    manifest.run_id,
                    manifest.run_date,
                    manifest_key,
                    hashlib.sha256(raw).hexdigest(),
                    manifest.extracted_at,
                    manifest.dbt_invocation_id,
                ),
            )
            if cur.fetchone() is None:
                result.status = LoadStatus.DUPLICATE
                return result
            deadline.bound(cur)
            _copy_files_in(cur, stage, manifest, result)
            deadline.bound(cur)
            _apply_rows(cur, manifest, result)
            counts = {name: vars(load) for name, load in result.tables.items()}
            cur.execute(load_sql.finish_run(), (psycopg2.extras.Json(counts), manifest.run_id))
    except (psycopg2.errors.LockNotAvailable, psycopg2.errors.QueryCanceled) as exc:
        if deadline.ends is None:
            raise
        raise deadline.explain(exc) from exc
    except (psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedTable) as exc:
        raise ConfigError(
            f"the analytics tables are older than this loader "
            f"({database_message(exc)}); run `etl init` (or the "
            "db_initializer function) against the analytics database once to upgrade "
            "them, then load again"
        ) from exc
    finally:
        result.seconds = time.perf_counter() - started
    return result
