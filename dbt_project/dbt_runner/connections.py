"""One database session per dbt thread for a whole invocation, not one per node.

dbt-postgres closes a node's connection when the node ends, so every model and every
test logs in again: on the deployed path each login is a TLS handshake (verify-full)
and an IAM authentication, and locally a SCRAM exchange and a new server process. A
night runs some fifty nodes on two threads. Kept open, a thread's session serves its
next node; dbt still closes every session when the invocation ends, as before.

What a node leaves in its session cannot reach the next one: an open transaction is
rolled back, as closing did. Nothing else lasts: the project's macros set nothing per
session (no ``set``, no ``set_config``), dbt's own temporary tables carry a timestamp
in their names, and the settings a session needs come with each login (PGOPTIONS).
A session found broken when its node ends is closed, and the next node logs in
again. A server lost between two nodes is found by the next node's first statement,
which fails as a loss during a node always did: the night ends with the lost-connection
error (exit 3, re-run the same day) and nothing is unloaded.
"""

from __future__ import annotations

_patched = False


def keep_sessions_per_thread() -> None:
    """Make dbt-postgres keep a thread's session between nodes (once per process; the
    runner calls it under its lock, before dbt runs nodes)."""
    global _patched
    if _patched:
        return
    from dbt.adapters.postgres.connections import PostgresConnectionManager

    PostgresConnectionManager.release = _keeping_release(PostgresConnectionManager.release)
    _patched = True


def _keeping_release(closing_release):
    from dbt.adapters.contracts.connection import ConnectionState
    from psycopg2 import extensions

    reusable = {
        extensions.TRANSACTION_STATUS_IDLE,
        extensions.TRANSACTION_STATUS_INTRANS,
        extensions.TRANSACTION_STATUS_INERROR,
    }

    def release(self) -> None:
        with self.lock:
            conn = self.get_if_exists()
        if conn is None or conn.state != ConnectionState.OPEN:
            return  # never opened, or closed: dbt's release would do nothing either
        handle = conn.handle
        try:
            status = None if handle.closed else handle.get_transaction_status()
            if status not in reusable:
                raise ConnectionError("the session is gone")
            if status != extensions.TRANSACTION_STATUS_IDLE:
                handle.rollback()
            conn.transaction_open = False
        except Exception:  # noqa: BLE001 - dbt's own release closes it (or drops it)
            closing_release(self)

    return release
