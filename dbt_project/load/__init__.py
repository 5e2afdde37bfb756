"""The analytics side of a night: one manifest's files verified and upserted in one
transaction, and the run report of the loaded night."""

from __future__ import annotations

from dbt_project.load.load import LoadResult, LoadStatus, TableLoad, load_manifest

__all__ = ["LoadResult", "LoadStatus", "TableLoad", "load_manifest"]
