"""The deployed functions' logins and what each may do, created by the initializer.

- ``etl_extract`` on the source: reads the four operational tables and builds dbt's
  models in its own schema (``nightly``), which it owns. It writes nothing else, creates
  nothing outside that schema and manages no role.
- ``etl_load`` on the analytics database: a member of ``etl_loader`` (read and upsert
  the marts, write the ledger) and ``etl_reader`` (read the views, for the
  analytics-side dbt tests). It owns nothing, so it can drop nothing.

Neither has a password: on AWS they log in with IAM authentication tokens (the
``rds_iam`` role, granted where it exists), so no secret of theirs exists to leak or
rotate. Elsewhere an administrator may give them one (``alter role ... password``).

Owning a schema is running code as whoever writes or reads it: ``etl_extract`` can put
a trigger, a rule, a row security policy or a function a view calls on what it owns,
and that code runs with the rights of the session that touches it. So the source side
of a night (dbt and the unload) runs only as ``etl_extract`` (``run_as_extract_login``),
and ``init``, the one step a stronger login runs on the source, removes such code from
the schema before it hands the schema's objects over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

from psycopg2 import sql

from dbt_project.errors import ConfigError
from dbt_project.facts.names import BUILD_SCHEMA
from dbt_project.facts.roles import EXTRACT_LOGIN, LOAD_LOGIN, LOADER_ROLE, READER_ROLE
from dbt_project.postgres.connection import Database, adopt_legacy_schema
from dbt_project.postgres.source_schema import SOURCE_TABLES

# RDS and Aurora: members of this role log in with IAM authentication tokens.
RDS_IAM_ROLE = "rds_iam"
# RDS and Aurora: the master user's role, short of a superuser in name only.
RDS_SUPERUSER_ROLE = "rds_superuser"
# How an operator runs the source side as etl_extract (README.md, "Operations").
LOG_IN_AS_EXTRACT = (
    f"log in as {EXTRACT_LOGIN} instead: --source-url "
    f"postgresql://{EXTRACT_LOGIN}@<host>:<port>/<database> with its password, or on RDS an "
    "IAM token from `aws rds generate-db-auth-token`, in PGPASSWORD (README.md, Operations)"
)


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


def create_extract_login(conn, database: str, source_schema: str = "public") -> list[str]:
    """etl_extract, its grants and its schema; returns the code removed from that schema
    (``remove_planted_code``), which a reader of the result should hear about."""
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
        removed = remove_planted_code(cur, BUILD_SCHEMA)
        cur.execute(sql.SQL("alter schema {} owner to {}").format(schema, login))
        _hand_over_objects(cur, BUILD_SCHEMA, EXTRACT_LOGIN)
    return removed


# Code that runs as whoever touches a relation, by kind: dbt creates none of it in the
# build schema (its views' own _RETURN rules and the triggers behind foreign keys are
# PostgreSQL's, and stay).
_PLANTED_CODE = """
select 'trigger', t.tgname, c.relname from pg_trigger t join pg_class c on c.oid = t.tgrelid
where c.relnamespace = %(schema)s::regnamespace and not t.tgisinternal
union all
select 'rule', r.rulename, c.relname from pg_rewrite r join pg_class c on c.oid = r.ev_class
where c.relnamespace = %(schema)s::regnamespace and r.rulename <> '_RETURN'
union all
select 'policy', p.polname, c.relname from pg_policy p join pg_class c on c.oid = p.polrelid
where c.relnamespace = %(schema)s::regnamespace
union all
select 'routine', p.oid::regprocedure::text, null from pg_proc p
where p.pronamespace = %(schema)s::regnamespace
order by 1, 3, 2
"""


def remove_planted_code(cur, schema: str) -> list[str]:
    """Drop every trigger, rule, row security policy and routine in ``schema``; return
    what was there, as ``"trigger x on nightly.t"``.

    A function there is dropped with what uses it (a view that calls it, say): dbt
    builds such a view again, and a function a view calls runs with the rights of
    whoever reads the view.
    """
    cur.execute(_PLANTED_CODE, {"schema": schema})
    found = cur.fetchall()
    removed = []
    for kind, name, relation in found:
        if kind == "routine":
            # regprocedure's text is the routine's quoted, qualified signature.
            cur.execute(sql.SQL("drop routine if exists {} cascade").format(sql.SQL(name)))
            removed.append(f"routine {name}")
            continue
        cur.execute(
            sql.SQL("drop {} if exists {} on {}").format(
                sql.SQL(kind), sql.Identifier(name), sql.Identifier(schema, relation)
            )
        )
        removed.append(f"{kind} {name} on {schema}.{relation}")
    return removed


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


# -- the source side runs as etl_extract -----------------------------------------------

# Direct memberships that give a login nothing beyond etl_extract's rights.
_HARMLESS_MEMBERSHIPS = frozenset({EXTRACT_LOGIN, RDS_IAM_ROLE})
_SESSION = """
select r.rolname, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
    r.rolbypassrls,
    exists (select from pg_roles where rolname = %(rds_superuser)s)
        and pg_has_role(r.oid, %(rds_superuser)s, 'MEMBER'),
    array(select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid
          where m.member = r.oid order by 1),
    exists (select from pg_roles where rolname = %(extract)s)
        and pg_has_role(r.oid, %(extract)s,
            case when current_setting('server_version_num')::int >= 160000
                 then 'SET' else 'MEMBER' end)
from pg_roles r where r.rolname = session_user
"""


def extract_role(conn) -> str | None:
    """The role the source side must SET to run as etl_extract, or None when the
    session is etl_extract's own; ConfigError for a login that may not.

    A login that may SET ROLE etl_extract and holds nothing more (no attribute, no role
    but etl_extract and rds_iam) runs as etl_extract: code etl_extract owns could SET
    ROLE back to it, and find nothing more there. A superuser, rds_superuser (RDS's
    master user) or a login with more rights is refused: SET ROLE would not stop that
    code from using them.
    """
    with conn.cursor() as cur:
        cur.execute(_SESSION, {"rds_superuser": RDS_SUPERUSER_ROLE, "extract": EXTRACT_LOGIN})
        user, superuser, *attributes, rds_superuser, memberships, may_set = cur.fetchone()
    if user == EXTRACT_LOGIN:
        return None
    if superuser or rds_superuser:
        what = "a superuser" if superuser else f"a member of {RDS_SUPERUSER_ROLE}"
        raise ConfigError(_refusal(user, f"is {what}"))
    names = ("CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
    extra = [name for name, held in zip(names, attributes, strict=True) if held]
    extra += [f"role {role}" for role in memberships if role not in _HARMLESS_MEMBERSHIPS]
    if extra:
        raise ConfigError(_refusal(user, "holds " + ", ".join(extra)))
    if not may_set:
        raise ConfigError(
            f"{user} may not act as {EXTRACT_LOGIN}, which runs the source side of a night "
            f"(run `etl init` if it does not exist yet); nothing was built or staged: "
            + LOG_IN_AS_EXTRACT
        )
    return EXTRACT_LOGIN


def _refusal(user: str, what: str) -> str:
    return (
        f"the source side of a night runs only as {EXTRACT_LOGIN}, and {user} {what}: code "
        f"{EXTRACT_LOGIN} owns in schema {BUILD_SCHEMA} (a trigger, a rule, a function a view "
        f"calls) would run with those rights. Nothing was built or staged; " + LOG_IN_AS_EXTRACT
    )


def run_as_extract_login(source: Database) -> None:
    """Before the source side builds or reads anything: go on as etl_extract, the
    pipeline's connections and dbt's alike (``Database.act_as``), or refuse."""
    conn = source.connection()
    try:
        role = extract_role(conn)
        _require_build_schema(conn)
    finally:
        conn.rollback()
    if role is not None:
        source.act_as(role)


def _require_build_schema(conn) -> None:
    """The schema dbt builds in exists and is etl_extract's: `etl init` made it so."""
    with conn.cursor() as cur:
        cur.execute(
            "select pg_get_userbyid(nspowner) from pg_namespace where nspname = %s",
            (BUILD_SCHEMA,),
        )
        found = cur.fetchone()
    if found is None or found[0] != EXTRACT_LOGIN:
        whose = "does not exist" if found is None else f"belongs to {found[0]}"
        raise ConfigError(
            f"the schema {BUILD_SCHEMA}, which only {EXTRACT_LOGIN} builds in, {whose}; run "
            "`etl init` (the db_initializer) first, then the night again"
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
