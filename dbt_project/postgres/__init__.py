"""PostgreSQL: connections, the source's operational tables and sample data, the
analytics tables and roles, and the functions' logins."""

from __future__ import annotations

from dbt_project.postgres.connection import Database, PgSettings, connect, ensure_database, redact

__all__ = ["Database", "PgSettings", "connect", "ensure_database", "redact"]
