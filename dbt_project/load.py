"""Load one night's manifest into the analytics database, in one transaction.

What a night owns (its business days, the customers it touched) is replaced:
rows of the files are upserted, owned rows missing from them are deleted. Each
owned key carries the version that last wrote it, so a stale night delivered late
(out of order, or a re-run of an older day) never overwrites fresher numbers, and
``customer_analytics`` never goes back in time.

Where the version lives depends on how many keys a night owns. A night owns a few
business days: their versions sit in ``etl.day_versions``. It owns thousands of
customers: each ``customer_analytics`` row carries its own version
(``as_of_date``, ``extracted_at``), compared inside the upsert, so versioning costs
no second write per customer. Only the customers a night removes (owned, but with no
row left) get a row elsewhere, in ``etl.removed_customers``, so that a stale night
cannot bring them back.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from datetime import date

import psycopg2
import psycopg2.errors
import psycopg2.extras
from psycopg2 import sql

from .contracts import MARTS, TableContract, contract
from .errors import ConfigError, StageError
from .manifest import FileEntry, Manifest
from .stage import Stage

ANALYTICS_SCHEMA = "analytics"
META_SCHEMA = "etl"
# Loads run one at a time: versions are read and written by each, so two loads of
# different days must not interleave. Any constant shared by all loaders will do.
_LOAD_LOCK = 0x5E7105D


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
REQUIRED_TABLES = (*MARTS, *(o.keys_table for o in OWNERSHIPS), REMOVED_CUSTOMERS)
# Columns the analytics tables have beyond their contract: the loader's bookkeeping.
# A customer row's version is (as_of_date, extracted_at): cumulative numbers as of a
# later day win; for the same day, the later read of the source.
VERSION_COLUMN = "extracted_at"
EXTRA_COLUMNS = {"customer_analytics": ((VERSION_COLUMN, "timestamptz not null"),)}
# A night rewrites the row of every customer it owns. Free space on each page lets
# PostgreSQL put the new row version beside the old one without a new primary-key
# entry (a HOT update); the dead version is pruned when the page is next written.
# 30 % free covers a night that rewrites up to about 40 % of a page's rows.
FILLFACTOR = {"customer_analytics": 70}


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
    status: str  # "loaded" or "duplicate"
    tables: dict[str, TableLoad] = field(default_factory=dict)
    read_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def rows_loaded(self) -> int:
        return sum(t.inserted + t.updated for t in self.tables.values())


class _VerifyingReader:
    """Feeds COPY FROM STDIN with decompressed bytes while checking what was promised."""

    def __init__(self, raw, entry: FileEntry):
        self.raw = raw
        self.entry = entry
        self.sha256 = hashlib.sha256()
        self.decompressor = zlib.decompressobj(31)
        self.bytes = 0
        self.rows = 0
        self.read_seconds = 0.0
        self.pending = b""
        # psycopg2 turns an exception raised in read() into QueryCanceled: keep the
        # original so the caller can report what really went wrong.
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._read()
        except BaseException as exc:
            self.error = exc
            raise

    def _read(self) -> bytes:
        while True:
            if self.pending:
                out, self.pending = self.pending, b""
                self.rows += out.count(b"\n")
                return out
            started = time.perf_counter()
            chunk = self.raw.read(1024 * 1024)
            self.read_seconds += time.perf_counter() - started
            if not chunk:
                return self._finish()
            self.bytes += len(chunk)
            if self.bytes > self.entry.bytes:
                raise StageError(
                    f"{self.entry.key} is larger than its manifest says ({self.entry.bytes} "
                    "bytes): it was changed after the extract; re-run the extract for that day"
                )
            self.sha256.update(chunk)
            try:
                self.pending = self.decompressor.decompress(chunk)
            except zlib.error as exc:
                raise StageError(
                    f"{self.entry.key} is corrupted ({exc}); re-run the extract for that day"
                ) from exc

    readline = read

    def drain(self) -> None:
        """Read what COPY left unread, so that verify() judges the whole file."""
        self.pending = b""
        while self._read():
            self.pending = b""

    def _finish(self) -> bytes:
        tail = self.decompressor.flush()
        if tail:
            self.rows += tail.count(b"\n")
            return tail
        return b""

    def verify(self) -> None:
        problems = []
        if self.bytes != self.entry.bytes:
            problems.append(f"{self.bytes} bytes instead of {self.entry.bytes}")
        if self.sha256.hexdigest() != self.entry.sha256:
            problems.append("its SHA-256 differs from the manifest's")
        if not self.decompressor.eof:
            problems.append("its gzip stream is cut short")
        if self.rows != self.entry.rows:
            problems.append(f"{self.rows} rows instead of {self.entry.rows}")
        if problems:
            raise StageError(
                f"{self.entry.key} does not match its manifest: {'; '.join(problems)}. "
                "It was changed or damaged after the extract; re-run the extract for that day"
            )


# Closes a `with upserted as (insert ... on conflict ...` and counts what it did.
_COUNT_UPSERTED = sql.SQL(
    "returning (xmax = 0) as inserted) "
    "select count(*) filter (where inserted), count(*) filter (where not inserted) from upserted"
)


def _stage_table(name: str) -> sql.Identifier:
    return sql.Identifier(f"_stage_{name}")


# customer_analytics is staged without a primary key: building that index costs a
# quarter of the load, and the upsert refuses a key that appears twice all the same
# ("cannot affect row a second time"). The small files keep theirs.
_STAGED_WITHOUT_KEY = frozenset({"customer_analytics"})


def _copy_into_stage(cur, stage: Stage, entry: FileEntry, table: TableContract) -> float:
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.column_names)
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.data_type)) for c in table.columns
    ]
    if table.name not in _STAGED_WITHOUT_KEY:
        definitions.append(
            sql.SQL("primary key ({})").format(
                sql.SQL(", ").join(sql.Identifier(k) for k in table.primary_key)
            )
        )
    cur.execute(
        sql.SQL("create temporary table {} ({}) on commit drop").format(
            _stage_table(table.name), sql.SQL(", ").join(definitions)
        )
    )
    copy = sql.SQL("copy {} ({}) from stdin").format(_stage_table(table.name), columns)
    with stage.reader(entry.key) as raw:
        reader = _VerifyingReader(raw, entry)
        try:
            cur.copy_expert(copy.as_string(cur.connection), reader, size=1024 * 1024)
        except psycopg2.Error as exc:
            if reader.error is not None:
                raise reader.error from None
            _copy_failed(exc, reader, entry, table)
    reader.verify()
    return reader.read_seconds


def _copy_failed(exc, reader, entry: FileEntry, table: TableContract):
    """Explain a failed COPY: a damaged file first, else the contract it breaks."""
    if isinstance(exc, psycopg2.errors.UniqueViolation):
        detail = (exc.diag.message_detail or "").strip()
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
            f"({(exc.diag.message_primary or str(exc)).strip()}); re-run the extract"
        ) from exc
    raise exc


def _version_values(ownership: Ownership, manifest: Manifest) -> list:
    values = {"as_of_date": manifest.run_date, "extracted_at": manifest.extracted_at}
    return [values[c] for c in ownership.version_columns]


def _apply_ownership(cur, ownership: Ownership, manifest: Manifest, result: LoadResult) -> None:
    key = sql.Identifier(ownership.key)
    owned = sql.Identifier(f"_owned_{ownership.keys_table}")
    versions = sql.Identifier(META_SCHEMA, ownership.versions_table)
    stored = sql.SQL(", ").join(
        sql.SQL("v.{}").format(sql.Identifier(c)) for c in ownership.version_columns
    )
    incoming = sql.SQL(", ").join(sql.Placeholder() for _ in ownership.version_columns)
    cur.execute(
        sql.SQL(
            "create temporary table {owned} on commit drop as "
            "select k.{key} from {keys} k left join {versions} v on v.{key} = k.{key} "
            "where v.{key} is null or row({incoming}) >= row({stored})"
        ).format(
            owned=owned,
            key=key,
            keys=_stage_table(ownership.keys_table),
            versions=versions,
            incoming=incoming,
            stored=stored,
        ),
        _version_values(ownership, manifest),
    )
    cur.execute(sql.SQL("alter table {} add primary key ({})").format(owned, key))
    cur.execute(sql.SQL("analyze {}").format(owned))

    for mart in ownership.marts:
        table = contract(mart)
        target = sql.Identifier(ANALYTICS_SCHEMA, mart)
        staged = _stage_table(mart)
        load = result.tables[mart]
        pk_match = sql.SQL(" and ").join(
            sql.SQL("s.{c} = t.{c}").format(c=sql.Identifier(c)) for c in table.primary_key
        )
        # One pass over the staged rows: those outside the night's keys (an error) and
        # those whose keys hold a fresher version (skipped).
        cur.execute(
            sql.SQL(
                "select count(*) filter (where k.{key} is null), "
                "count(*) filter (where o.{key} is null) from {staged} s "
                "left join {keys} k on k.{key} = s.{key} left join {owned} o on o.{key} = s.{key}"
            ).format(staged=staged, keys=_stage_table(ownership.keys_table), owned=owned, key=key)
        )
        unowned, load.skipped_stale = cur.fetchone()
        if unowned:
            raise StageError(
                f"{manifest.file(mart).key} has {unowned} rows outside the keys the night owns; "
                "the files do not belong together: re-run the extract for that day"
            )
        cur.execute(
            sql.SQL(
                "delete from {target} t using {owned} o where t.{key} = o.{key} "
                "and not exists (select 1 from {staged} s where {pk_match})"
            ).format(target=target, owned=owned, key=key, staged=staged, pk_match=pk_match)
        )
        load.deleted = cur.rowcount

        columns = [sql.Identifier(c) for c in table.column_names]
        non_key = [sql.Identifier(c) for c in table.column_names if c not in table.primary_key]
        changed = sql.SQL("({}) is distinct from ({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in non_key),
            sql.SQL(", ").join(sql.SQL("excluded.{}").format(c) for c in non_key),
        )
        cur.execute(
            sql.SQL(
                "with upserted as ("
                "insert into {target} as t ({columns}) "
                "select {s_columns} from {staged} s{only_owned} "
                "on conflict ({pk}) do update set {assignments} where {changed} "
                "{count_upserted}"
            ).format(
                count_upserted=_COUNT_UPSERTED,
                target=target,
                columns=sql.SQL(", ").join(columns),
                s_columns=sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in columns),
                staged=staged,
                # Every staged row is owned unless some were skipped: then no join.
                only_owned=sql.SQL(" join {owned} o on o.{key} = s.{key}").format(
                    owned=owned, key=key
                )
                if load.skipped_stale
                else sql.SQL(""),
                pk=sql.SQL(", ").join(sql.Identifier(c) for c in table.primary_key),
                assignments=sql.SQL(", ").join(
                    sql.SQL("{c} = excluded.{c}").format(c=c) for c in non_key
                ),
                changed=changed,
            )
        )
        load.inserted, load.updated = cur.fetchone()
        load.unchanged = load.rows_in_file - load.inserted - load.updated - load.skipped_stale

    cur.execute(
        sql.SQL(
            "insert into {versions} ({key}, as_of_date, extracted_at, run_id) "
            "select {key}, %s, %s, %s from {owned} "
            "on conflict ({key}) do update set as_of_date = excluded.as_of_date, "
            "extracted_at = excluded.extracted_at, run_id = excluded.run_id"
        ).format(versions=versions, key=key, owned=owned),
        (manifest.run_date, manifest.extracted_at, manifest.run_id),
    )


def _written_counts(cur, table: sql.Identifier) -> tuple[int, int] | None:
    """Rows inserted and updated in ``table`` so far by this transaction's backend.

    PostgreSQL counts them anyway (pg_stat_xact_user_tables); reading the counters
    before and after the upsert costs nothing, where a RETURNING clause would hand
    back a row per customer only to be counted. None when counting is switched off.
    """
    cur.execute(
        sql.SQL(
            "select n_tup_ins, n_tup_upd from pg_stat_xact_user_tables "
            "where relid = {}::regclass and current_setting('track_counts')::bool"
        ).format(sql.Literal(table.as_string(cur.connection)))
    )
    row = cur.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def _load_customers(cur, manifest: Manifest, result: LoadResult) -> None:
    """Upsert customer_analytics with the version check inside the upsert itself."""
    table = contract("customer_analytics")
    target = sql.Identifier(ANALYTICS_SCHEMA, table.name)
    removed = sql.Identifier(META_SCHEMA, "removed_customers")
    staged, staged_removed = _stage_table(table.name), _stage_table(REMOVED_CUSTOMERS)
    load = result.tables[table.name]
    version = {"as_of_date": manifest.run_date, "extracted_at": manifest.extracted_at}

    columns = [sql.Identifier(c) for c in table.column_names]
    non_key = [c for c in table.column_names if c not in table.primary_key] + [VERSION_COLUMN]
    # A customer removed by a fresher night must not come back with this night's
    # older row. Removals are rare and nights mostly arrive in order: look for such a
    # removal first, and filter the rows only when there is one.
    cur.execute(
        sql.SQL(
            "select exists (select from {} where (as_of_date, extracted_at) "
            ">= (%(as_of_date)s, %(extracted_at)s))"
        ).format(removed),
        version,
    )
    (fresher_removals,) = cur.fetchone()
    not_removed = sql.SQL(
        "where not exists (select from {removed} r where r.customer_id = s.customer_id "
        "and (r.as_of_date, r.extracted_at) >= (s.as_of_date, %(extracted_at)s)) "
    ).format(removed=removed)
    upsert = sql.SQL(
        "insert into {target} as t ({columns}, {version}) "
        "select {s_columns}, %(extracted_at)s from {staged} s {not_removed}"
        "on conflict (customer_id) do update set {assignments} "
        "where (t.as_of_date, t.{version}) < (excluded.as_of_date, excluded.{version})"
    ).format(
        target=target,
        columns=sql.SQL(", ").join(columns),
        version=sql.Identifier(VERSION_COLUMN),
        s_columns=sql.SQL(", ").join(sql.SQL("s.{}").format(c) for c in columns),
        staged=staged,
        not_removed=not_removed if fresher_removals else sql.SQL(""),
        assignments=sql.SQL(", ").join(
            sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in non_key
        ),
    )
    before = _written_counts(cur, target)
    if before is None:
        cur.execute(sql.SQL("with upserted as ({} {}").format(upsert, _COUNT_UPSERTED), version)
        load.inserted, load.updated = cur.fetchone()
    else:
        cur.execute(upsert, version)
        after = _written_counts(cur, target)
        load.inserted, load.updated = after[0] - before[0], after[1] - before[1]
    # Every row of a newer version is written, changed or not: the version moves on.
    load.skipped_stale = load.rows_in_file - load.inserted - load.updated

    if not manifest.file(REMOVED_CUSTOMERS).rows:
        return
    # The two files must not name the same customer. Checked after the upsert, on the
    # few removed keys through the primary key: a row this night just wrote.
    cur.execute(
        sql.SQL(
            "select count(*) from {staged} r join {target} t using (customer_id) "
            "where (t.as_of_date, t.{version}) = (%(as_of_date)s, %(extracted_at)s)"
        ).format(staged=staged_removed, target=target, version=sql.Identifier(VERSION_COLUMN)),
        version,
    )
    (both,) = cur.fetchone()
    if both:
        raise StageError(
            f"{manifest.file(REMOVED_CUSTOMERS).key} lists {both} customers that "
            f"{manifest.file(table.name).key} has rows for; the files do not belong "
            "together: re-run the extract for that day"
        )
    # Remember the removal (unless a fresher night already did), then delete the rows
    # older than it.
    cur.execute(
        sql.SQL(
            "with removal as ("
            "insert into {removed} as r (customer_id, as_of_date, extracted_at, run_id) "
            "select customer_id, %(as_of_date)s, %(extracted_at)s, %(run_id)s from {staged} "
            "on conflict (customer_id) do update set as_of_date = excluded.as_of_date, "
            "extracted_at = excluded.extracted_at, run_id = excluded.run_id "
            "where (r.as_of_date, r.extracted_at) "
            "< (excluded.as_of_date, excluded.extracted_at) "
            "returning customer_id) "
            "delete from {target} t using removal where t.customer_id = removal.customer_id "
            "and (t.as_of_date, t.{version}) < (%(as_of_date)s, %(extracted_at)s)"
        ).format(
            removed=removed,
            staged=staged_removed,
            target=target,
            version=sql.Identifier(VERSION_COLUMN),
        ),
        {**version, "run_id": manifest.run_id},
    )
    load.deleted = cur.rowcount


def _apply_rows(cur, manifest: Manifest, result: LoadResult) -> None:
    """Both kinds of ownership; a row the analytics tables refuse is the file's fault."""
    try:
        for ownership in OWNERSHIPS:
            _apply_ownership(cur, ownership, manifest, result)
        _load_customers(cur, manifest, result)
    except (psycopg2.errors.CheckViolation, psycopg2.errors.NotNullViolation) as exc:
        table = exc.diag.table_name or "an analytics table"
        rule = exc.diag.constraint_name or exc.diag.column_name or ""
        raise StageError(
            f"a row for {table} breaks its contract rule {rule} "
            f"({(exc.diag.message_primary or str(exc)).strip()}); the files of {manifest.run_date} "
            "are not what the model promises: fix the model, then re-run the extract"
        ) from exc
    except psycopg2.errors.UndefinedColumn as exc:
        raise ConfigError(
            f"the analytics tables are older than this loader "
            f"({(exc.diag.message_primary or str(exc)).strip()}); run `etl init` (or the "
            "db_initializer function) against the analytics database once to upgrade "
            "them, then load again"
        ) from exc
    except psycopg2.errors.CardinalityViolation as exc:
        raise StageError(
            f"{manifest.file('customer_analytics').key} holds the same customer_id twice; the "
            "extract must produce one row per key: fix the model and re-run the extract"
        ) from exc


def load_manifest(conn, stage: Stage, manifest_key: str) -> LoadResult:
    """Apply one manifest. Any failure rolls the whole night back."""
    started = time.perf_counter()
    raw = stage.get_bytes(manifest_key)
    manifest = Manifest.from_json(raw, manifest_key)
    result = LoadResult(manifest_key, manifest.run_id, manifest.run_date, "loaded")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (_LOAD_LOCK,))
            # The staged files are joined to the tables whole: with the 4 MB default
            # every hash of a large night spills to disk. Only for this transaction.
            cur.execute("set local work_mem = '64MB'")
            cur.execute(
                sql.SQL(
                    "insert into {} (run_id, run_date, manifest_key, manifest_sha256, "
                    "extracted_at, dbt_invocation_id) values (%s, %s, %s, %s, %s, %s) "
                    "on conflict (run_id) do nothing returning run_id"
                ).format(sql.Identifier(META_SCHEMA, "load_ledger")),
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
                result.status = "duplicate"
                return result
            for name in REQUIRED_TABLES:
                entry = manifest.file(name)
                result.read_seconds += _copy_into_stage(cur, stage, entry, contract(name))
                if name not in _STAGED_WITHOUT_KEY:
                    # Joined to the analytics tables: the planner needs their size.
                    cur.execute(sql.SQL("analyze {}").format(_stage_table(name)))
                if name in MARTS:
                    result.tables[name] = TableLoad(rows_in_file=entry.rows)
            _apply_rows(cur, manifest, result)
            cur.execute(
                sql.SQL(
                    "update {} set loaded_at = clock_timestamp(), rows_loaded = %s "
                    "where run_id = %s"
                ).format(sql.Identifier(META_SCHEMA, "load_ledger")),
                (
                    psycopg2.extras.Json(
                        {name: vars(load) for name, load in result.tables.items()}
                    ),
                    manifest.run_id,
                ),
            )
    finally:
        result.seconds = time.perf_counter() - started
    return result


def ledger_ddl() -> sql.Composed:
    meta = sql.Identifier(META_SCHEMA)
    return sql.SQL(
        """
        create schema if not exists {meta};
        create table if not exists {meta}.load_ledger (
            run_id uuid primary key,
            run_date date not null,
            manifest_key text not null,
            manifest_sha256 text not null,
            extracted_at timestamptz not null,
            dbt_invocation_id text,
            started_at timestamptz not null default clock_timestamp(),
            loaded_at timestamptz,
            rows_loaded jsonb
        );
        create index if not exists load_ledger_run_date_idx on {meta}.load_ledger (run_date);
        create table if not exists {meta}.day_versions (
            sales_date date primary key,
            as_of_date date not null,
            extracted_at timestamptz not null,
            run_id uuid not null
        );
        create table if not exists {meta}.removed_customers (
            customer_id bigint primary key,
            as_of_date date not null,
            extracted_at timestamptz not null,
            run_id uuid not null
        );
        """
    ).format(meta=meta)
