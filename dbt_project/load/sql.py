"""The load's SQL, composed by small functions and run by ``load.py``.

Each function returns a ``psycopg2.sql`` statement (parameters by name or position
as its docstring says), so a statement can be read, printed and tested apart from
the transaction that runs it.
"""

from __future__ import annotations

from psycopg2 import sql

from dbt_project.contract.ownership import REMOVED_CUSTOMERS, Ownership
from dbt_project.contract.tables import TableContract
from dbt_project.facts.names import ANALYTICS_SCHEMA, LEDGER_SCHEMA
from dbt_project.postgres.analytics_schema import VERSION_COLUMN, staged_without_key

_LEDGER = sql.Identifier(LEDGER_SCHEMA, "load_ledger")
_REMOVED = sql.Identifier(LEDGER_SCHEMA, "removed_customers")
_VERSION = sql.Identifier(VERSION_COLUMN)
# The day a cumulative row is as of; a night's rows must all carry its run date.
AS_OF_DATE = "as_of_date"
# Closes a `with upserted as (insert ... on conflict ...` and counts what it did.
_COUNT_UPSERTED = sql.SQL(
    "returning (xmax = 0) as inserted) "
    "select count(*) filter (where inserted), count(*) filter (where not inserted) from upserted"
)


def _join(parts, separator: str = ", ") -> sql.Composed:
    return sql.SQL(separator).join(parts)


def _idents(names) -> list[sql.Identifier]:
    return [sql.Identifier(n) for n in names]


def analytics_table(name: str) -> sql.Identifier:
    return sql.Identifier(ANALYTICS_SCHEMA, name)


def incoming_table(name: str) -> sql.Identifier:
    """The temporary table a staged file is copied into (the night's incoming rows)."""
    return sql.Identifier(f"_incoming_{name}")


def owned_table(ownership: Ownership) -> sql.Identifier:
    return sql.Identifier(f"_owned_{ownership.keys_table}")


# -- the ledger -----------------------------------------------------------------------


def claim_run() -> sql.Composed:
    """Record the run; returns its id, or nothing if it was loaded before.

    Parameters: run_id, run_date, manifest_key, manifest_sha256, extracted_at,
    dbt_invocation_id.
    """
    return sql.SQL(
        "insert into {} (run_id, run_date, manifest_key, manifest_sha256, "
        "extracted_at, dbt_invocation_id) values (%s, %s, %s, %s, %s, %s) "
        "on conflict (run_id) do nothing returning run_id"
    ).format(_LEDGER)


def finish_run() -> sql.Composed:
    """Parameters: the per-table counts (JSON), run_id."""
    return sql.SQL(
        "update {} set loaded_at = clock_timestamp(), rows_loaded = %s where run_id = %s"
    ).format(_LEDGER)


def bound_waits() -> sql.SQL:
    """Lock waits of this transaction end after ``%(lock_ms)s`` milliseconds, statements
    after ``%(statement_ms)s`` (a little later, so that a lock wait says it was one)."""
    return sql.SQL(
        "select set_config('lock_timeout', %(lock_ms)s, true), "
        "set_config('statement_timeout', %(statement_ms)s, true)"
    )


# -- the incoming rows ---------------------------------------------------------------


def create_incoming_table(table: TableContract) -> sql.Composed:
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.data_type)) for c in table.columns
    ]
    if not staged_without_key(table.name):
        definitions.append(sql.SQL("primary key ({})").format(_join(_idents(table.primary_key))))
    return sql.SQL("create temporary table {} ({}) on commit drop").format(
        incoming_table(table.name), _join(definitions)
    )


def copy_into_incoming(table: TableContract) -> sql.Composed:
    return sql.SQL("copy {} ({}) from stdin").format(
        incoming_table(table.name), _join(_idents(table.column_names))
    )


def analyze(table: sql.Identifier) -> sql.Composed:
    return sql.SQL("analyze {}").format(table)


def count_other_as_of_dates(table: TableContract) -> sql.Composed:
    """Staged rows as of another day than the run date: count, earliest, latest.

    One scan of the staged rows, no index. Parameter: the run date.
    """
    as_of = sql.Identifier(AS_OF_DATE)
    return sql.SQL(
        "select count(*), min({as_of}), max({as_of}) from {staged} "
        "where {as_of} is distinct from %s"
    ).format(as_of=as_of, staged=incoming_table(table.name))


# -- keys a night owns: business days -----------------------------------------------


def count_days_after(table: str, day: str) -> sql.Composed:
    """Staged rows whose ``day`` column is after the run date: count, latest.

    One scan of the staged rows. Parameter: the run date.
    """
    return sql.SQL("select count(*), max({day}) from {staged} where {day} > %s").format(
        day=sql.Identifier(day), staged=incoming_table(table)
    )


def select_owned_keys(ownership: Ownership) -> sql.Composed:
    """The night's keys whose stored version is not fresher than the night's.

    Parameters: the night's version values, in ``ownership.version_columns`` order.
    """
    key = sql.Identifier(ownership.key)
    return sql.SQL(
        "create temporary table {owned} on commit drop as "
        "select k.{key} from {keys} k left join {versions} v on v.{key} = k.{key} "
        "where v.{key} is null or row({incoming}) >= row({stored})"
    ).format(
        owned=owned_table(ownership),
        key=key,
        keys=incoming_table(ownership.keys_table),
        versions=sql.Identifier(LEDGER_SCHEMA, ownership.versions_table),
        incoming=_join(sql.Placeholder() for _ in ownership.version_columns),
        stored=_join(sql.SQL("v.{}").format(c) for c in _idents(ownership.version_columns)),
    )


def index_owned_keys(ownership: Ownership) -> sql.Composed:
    return sql.SQL("alter table {} add primary key ({})").format(
        owned_table(ownership), sql.Identifier(ownership.key)
    )


def count_unowned_and_stale(ownership: Ownership, mart: str) -> sql.Composed:
    """One pass over a mart's staged rows: those outside the night's keys (an error)
    and those whose keys hold a fresher version (skipped)."""
    return sql.SQL(
        "select count(*) filter (where k.{key} is null), "
        "count(*) filter (where o.{key} is null) from {staged} s "
        "left join {keys} k on k.{key} = s.{day} left join {owned} o on o.{key} = s.{day}"
    ).format(
        staged=incoming_table(mart),
        keys=incoming_table(ownership.keys_table),
        owned=owned_table(ownership),
        key=sql.Identifier(ownership.key),
        day=sql.Identifier(ownership.column(mart)),
    )


def _pk_match(table: TableContract) -> sql.Composed:
    return _join(
        (sql.SQL("s.{c} = t.{c}").format(c=c) for c in _idents(table.primary_key)), " and "
    )


def delete_owned_rows_not_staged(ownership: Ownership, table: TableContract) -> sql.Composed:
    """Rows of owned keys that the night's file no longer has (a cancelled product-day)."""
    return sql.SQL(
        "delete from {target} t using {owned} o where t.{day} = o.{key} "
        "and not exists (select 1 from {staged} s where {pk_match})"
    ).format(
        target=analytics_table(table.name),
        owned=owned_table(ownership),
        key=sql.Identifier(ownership.key),
        day=sql.Identifier(ownership.column(table.name)),
        staged=incoming_table(table.name),
        pk_match=_pk_match(table),
    )


def upsert_owned_rows(
    ownership: Ownership, table: TableContract, *, some_stale: bool
) -> sql.Composed:
    """Insert or change the staged rows of owned keys; returns (inserted, updated).

    Unchanged rows are not rewritten. Every staged row is owned unless some were
    skipped as stale: only then is the join to the owned keys needed.
    """
    columns = _idents(table.column_names)
    non_key = _idents(c for c in table.column_names if c not in table.primary_key)
    only_owned = sql.SQL("")
    if some_stale:
        only_owned = sql.SQL(" join {owned} o on o.{key} = s.{day}").format(
            owned=owned_table(ownership),
            key=sql.Identifier(ownership.key),
            day=sql.Identifier(ownership.column(table.name)),
        )
    return sql.SQL(
        "with upserted as ("
        "insert into {target} as t ({columns}) "
        "select {s_columns} from {staged} s{only_owned} "
        "on conflict ({pk}) do update set {assignments} "
        "where ({t_non_key}) is distinct from ({excluded_non_key}) "
        "{count_upserted}"
    ).format(
        target=analytics_table(table.name),
        columns=_join(columns),
        s_columns=_join(sql.SQL("s.{}").format(c) for c in columns),
        staged=incoming_table(table.name),
        only_owned=only_owned,
        pk=_join(_idents(table.primary_key)),
        assignments=_join(sql.SQL("{c} = excluded.{c}").format(c=c) for c in non_key),
        t_non_key=_join(sql.SQL("t.{}").format(c) for c in non_key),
        excluded_non_key=_join(sql.SQL("excluded.{}").format(c) for c in non_key),
        count_upserted=_COUNT_UPSERTED,
    )


def record_owned_versions(ownership: Ownership) -> sql.Composed:
    """Parameters: as_of_date, extracted_at, run_id."""
    key = sql.Identifier(ownership.key)
    return sql.SQL(
        "insert into {versions} ({key}, as_of_date, extracted_at, run_id) "
        "select {key}, %s, %s, %s from {owned} "
        "on conflict ({key}) do update set as_of_date = excluded.as_of_date, "
        "extracted_at = excluded.extracted_at, run_id = excluded.run_id"
    ).format(
        versions=sql.Identifier(LEDGER_SCHEMA, ownership.versions_table),
        key=key,
        owned=owned_table(ownership),
    )


# -- keys a night owns: customers, versioned in their own rows ----------------------


def fresher_removal_exists() -> sql.Composed:
    """Parameters by name: as_of_date, extracted_at."""
    return sql.SQL(
        "select exists (select from {} where (as_of_date, extracted_at) "
        ">= (%(as_of_date)s, %(extracted_at)s))"
    ).format(_REMOVED)


def upsert_customers(table: TableContract, *, skip_removed: bool) -> sql.Composed:
    """Write each staged customer whose stored row is older than the night's version.

    A customer removed by a fresher night must not come back with this night's older
    row; that filter is added only when such a removal exists (``skip_removed``).
    Parameters by name: extracted_at.
    """
    columns = _idents(table.column_names)
    non_key = [c for c in table.column_names if c not in table.primary_key] + [VERSION_COLUMN]
    not_removed = sql.SQL("")
    if skip_removed:
        not_removed = sql.SQL(
            "where not exists (select from {removed} r where r.customer_id = s.customer_id "
            "and (r.as_of_date, r.extracted_at) >= (s.as_of_date, %(extracted_at)s)) "
        ).format(removed=_REMOVED)
    return sql.SQL(
        "insert into {target} as t ({columns}, {version}) "
        "select {s_columns}, %(extracted_at)s from {staged} s {not_removed}"
        "on conflict (customer_id) do update set {assignments} "
        "where (t.as_of_date, t.{version}) < (excluded.as_of_date, excluded.{version})"
    ).format(
        target=analytics_table(table.name),
        columns=_join(columns),
        version=_VERSION,
        s_columns=_join(sql.SQL("s.{}").format(c) for c in columns),
        staged=incoming_table(table.name),
        not_removed=not_removed,
        assignments=_join(sql.SQL("{c} = excluded.{c}").format(c=c) for c in _idents(non_key)),
    )


def counting(upsert: sql.Composable) -> sql.Composed:
    """``upsert`` made to return (inserted, updated), when PostgreSQL does not count."""
    return sql.SQL("with upserted as ({} {}").format(upsert, _COUNT_UPSERTED)


def written_counts(table: sql.Identifier, connection) -> sql.Composed:
    """Rows inserted and updated in ``table`` so far by this transaction's backend.

    PostgreSQL counts them anyway (pg_stat_xact_user_tables); reading the counters
    before and after the upsert costs nothing, where a RETURNING clause would hand
    back a row per customer only to be counted. No row when counting is off.
    """
    return sql.SQL(
        "select n_tup_ins, n_tup_upd from pg_stat_xact_user_tables "
        "where relid = {}::regclass and current_setting('track_counts')::bool"
    ).format(sql.Literal(table.as_string(connection)))


def count_removed_with_rows(mart: str) -> sql.Composed:
    """Customers the removal file names that this night also wrote a row for.

    Checked after the upsert, on the few removed keys, through the primary key.
    Parameters by name: as_of_date, extracted_at.
    """
    return sql.SQL(
        "select count(*) from {staged} r join {target} t using (customer_id) "
        "where (t.as_of_date, t.{version}) = (%(as_of_date)s, %(extracted_at)s)"
    ).format(
        staged=incoming_table(REMOVED_CUSTOMERS), target=analytics_table(mart), version=_VERSION
    )


def remove_customers(mart: str) -> sql.Composed:
    """Remember each removal (unless a fresher night did) and delete the older rows.

    Parameters by name: as_of_date, extracted_at, run_id.
    """
    return sql.SQL(
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
        removed=_REMOVED,
        staged=incoming_table(REMOVED_CUSTOMERS),
        target=analytics_table(mart),
        version=_VERSION,
    )


# -- a full refresh: what the whole history no longer has --------------------------


def delete_outside_keys(ownership: Ownership, mart: str) -> sql.Composed:
    return sql.SQL(
        "delete from {target} t where not exists (select from {keys} k where k.{key} = t.{day})"
    ).format(
        target=analytics_table(mart),
        keys=incoming_table(ownership.keys_table),
        key=sql.Identifier(ownership.key),
        day=sql.Identifier(ownership.column(mart)),
    )


def delete_versions_outside_keys(ownership: Ownership) -> sql.Composed:
    key = sql.Identifier(ownership.key)
    return sql.SQL(
        "delete from {versions} v where not exists (select from {keys} k where k.{key} = v.{key})"
    ).format(
        versions=sql.Identifier(LEDGER_SCHEMA, ownership.versions_table),
        keys=incoming_table(ownership.keys_table),
        key=key,
    )


def delete_customers_not_restated(mart: str) -> sql.Composed:
    """Rows the refresh's file lacks, and rows as of a day after its run date: a chunked
    refresh re-runs the nights that wrote those after its first chunk, whose older rows
    they would otherwise hold off. Parameter: the run date."""
    return sql.SQL(
        "delete from {target} t where t.as_of_date > %s or not exists "
        "(select from {staged} s where s.customer_id = t.customer_id)"
    ).format(target=analytics_table(mart), staged=incoming_table(mart))


def delete_later_removals() -> sql.Composed:
    """Removals as of a day after the refresh's run date, for the same reason.
    Parameter: the run date."""
    return sql.SQL("delete from {} where as_of_date > %s").format(_REMOVED)
