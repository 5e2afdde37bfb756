"""The deployed functions' logins and what each may do, created by the initializer.

- ``etl_extract`` on the source: reads the four operational tables and builds dbt's
  models in its own schema (``etl``), which it owns. It writes nothing else, creates
  nothing outside that schema and manages no role.
- ``etl_load`` on the analytics database: a member of ``etl_loader`` (read and upsert
  the marts, write the ledger) and ``etl_reader`` (read the views, for the
  analytics-side dbt tests). It owns nothing, so it can drop nothing.

Neither has a password: on AWS they log in with IAM authentication tokens (the
``rds_iam`` role, granted where it exists), so no secret of theirs exists to leak or
rotate. Elsewhere an administrator may give them one (``alter role ... password``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

from psycopg2 import sql

from dbt_project.facts.names import BUILD_SCHEMA
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN, LOADER_ROLE, READER_ROLE
from dbt_project.postgres.connection import adopt_legacy_schema
from dbt_project.postgres.source_schema import SOURCE_TABLES

# RDS and Aurora: members of this role log in with IAM authentication tokens.
RDS_IAM_ROLE = "rds_iam"


def ensure_login(cur, name: str) -> None:
    """A login with no special attribute, whatever an earlier version created."""
    cur.execute("select 1 from pg_roles where rolname = %s", (name,))
    verb = "alter" if cur.fetchone() else "create"
    cur.execute(
        sql.SQL("{} role {} login nosuperuser nocreatedb nocreaterole noreplication").format(
            sql.SQL(verb), sql.Identifier(name)
        )
    )
    cur.execute("select 1 from pg_roles where rolname = %s", (RDS_IAM_ROLE,))
    if cur.fetchone():
        cur.execute(
            sql.SQL("grant {} to {}").format(sql.Identifier(RDS_IAM_ROLE), sql.Identifier(name))
        )


def create_extract_login(conn, database: str, source_schema: str = "public") -> None:
    login, schema = sql.Identifier(EXTRACT_LOGIN), sql.Identifier(BUILD_SCHEMA)
    with conn.cursor() as cur:
        ensure_login(cur, EXTRACT_LOGIN)
        cur.execute(
            sql.SQL("grant connect, temporary on database {} to {}").format(
                sql.Identifier(database), login
            )
        )
        cur.execute(
            sql.SQL("grant usage on schema {} to {}").format(sql.Identifier(source_schema), login)
        )
        cur.execute(
            sql.SQL("grant select on {} to {}").format(
                sql.SQL(", ").join(sql.Identifier(source_schema, t) for t in SOURCE_TABLES), login
            )
        )
        # int_customer_days: the state of the nightly build, kept between nights.
        adopt_legacy_schema(cur, BUILD_SCHEMA, "int_customer_days")
        cur.execute(sql.SQL("create schema if not exists {}").format(schema))
        cur.execute(sql.SQL("alter schema {} owner to {}").format(schema, login))
        _hand_over_objects(cur, BUILD_SCHEMA, EXTRACT_LOGIN)


def _hand_over_objects(cur, schema: str, owner: str) -> None:
    """Objects an earlier version built there as the master user: dbt must replace them."""
    cur.execute(
        "select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = %s and c.relkind in ('r', 'v', 'm', 'p') "
        "and pg_get_userbyid(c.relowner) <> %s",
        (schema, owner),
    )
    kinds = {"r": "table", "p": "table", "v": "view", "m": "materialized view"}
    for name, kind in cur.fetchall():
        cur.execute(
            sql.SQL("alter {} {} owner to {}").format(
                sql.SQL(kinds[kind]), sql.Identifier(schema, name), sql.Identifier(owner)
            )
        )


def create_load_login(conn, database: str) -> None:
    """The load's login; the roles it joins come from ``target_db.create_roles``."""
    with conn.cursor() as cur:
        ensure_login(cur, LOAD_LOGIN)
        cur.execute(
            sql.SQL("grant {}, {} to {}").format(
                sql.Identifier(LOADER_ROLE), sql.Identifier(READER_ROLE), sql.Identifier(LOAD_LOGIN)
            )
        )
        # Only the pipeline's roles (and the owner) may connect to the analytics
        # database: a login made for another purpose on the same server may not.
        cur.execute(
            sql.SQL("revoke connect on database {} from public").format(sql.Identifier(database))
        )


# -- passwords sent as SCRAM verifiers ---------------------------------------------------

SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def _saslprep(password: str) -> str:
    """RFC 4013 SASLprep, as PostgreSQL applies it before hashing; a password it
    cannot prepare is used as is, as PostgreSQL does."""
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not prepared or any(test(ch) for ch in prepared for test in prohibited):
        return password
    if any(map(stringprep.in_table_d1, prepared)) and (
        any(map(stringprep.in_table_d2, prepared))
        or not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1]))
    ):
        return password
    return prepared


def scram_sha_256(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677):
    ``alter role ... password`` takes it as is, so the password itself never reaches
    the server, its statement log or pg_stat_statements."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(
        "sha256", _saslprep(password).encode("utf-8"), salt, SCRAM_ITERATIONS
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
