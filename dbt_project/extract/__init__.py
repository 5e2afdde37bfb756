"""The source side of a night: dbt builds the night's window, then its tables are
unloaded to the stage, the manifest last."""

from __future__ import annotations

from dbt_project.extract.extract import ExtractResult, extract, extract_lock
from dbt_project.extract.unload import Relation, built_relations, unload_night

__all__ = [
    "ExtractResult",
    "Relation",
    "built_relations",
    "extract",
    "extract_lock",
    "unload_night",
]
