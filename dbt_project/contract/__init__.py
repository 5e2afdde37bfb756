"""What the two sides agree on, so that neither owns it: the marts' table contracts
(read from the dbt model YAML), which keys a night owns, the staged file format, and
the manifest that describes one night's files."""

from __future__ import annotations

from dbt_project.contract.file_format import CHUNK, FILE_FORMAT, CompressingSink, VerifyingReader
from dbt_project.contract.manifest import MAX_MANIFEST_BYTES, ExtractFacts, FileEntry, Manifest
from dbt_project.contract.ownership import (
    REMOVED_CUSTOMERS,
    Ownership,
    customer_mart,
    marts,
    ownerships,
    required_tables,
)
from dbt_project.contract.tables import TableContract, contract, load_contracts

__all__ = [
    "CHUNK",
    "CompressingSink",
    "ExtractFacts",
    "FILE_FORMAT",
    "FileEntry",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "Ownership",
    "REMOVED_CUSTOMERS",
    "TableContract",
    "VerifyingReader",
    "contract",
    "customer_mart",
    "load_contracts",
    "marts",
    "ownerships",
    "required_tables",
]
