"""What the two sides agree on, so that neither owns it: the marts' table contracts
(read from the dbt model YAML), which keys a night owns, the staged file format, and
the manifest that describes one night's files."""

from __future__ import annotations

from dbt_project.contract.file_format import CHUNK, FILE_FORMAT, CompressingSink, VerifyingReader
from dbt_project.contract.manifest import MAX_MANIFEST_BYTES, ExtractFacts, FileEntry, Manifest
from dbt_project.contract.ownership import OWNERSHIPS, REMOVED_CUSTOMERS, REQUIRED_TABLES, Ownership
from dbt_project.contract.tables import TableContract, contract, load_contracts

__all__ = [
    "CHUNK",
    "CompressingSink",
    "ExtractFacts",
    "FILE_FORMAT",
    "FileEntry",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "OWNERSHIPS",
    "Ownership",
    "REMOVED_CUSTOMERS",
    "REQUIRED_TABLES",
    "TableContract",
    "VerifyingReader",
    "contract",
    "load_contracts",
]
