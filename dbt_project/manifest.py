"""The manifest: the contract between one extract and its load.

It is written last, so its presence means every file it names is complete. The
load trusts nothing in it: names must be in the analytics contract, keys must stay
under ``etl-data/<run_date>/``, and each file is checked against its size, SHA-256
and row count while it is read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from .analytics_schema import REQUIRED_TABLES
from .contracts import contract, normalise_type
from .errors import StageError
from .layout import day_prefix, manifest_key
from .stage import check_key
from .staged_format import FILE_FORMAT

FORMAT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    table: str
    key: str
    rows: int
    bytes: int
    sha256: str
    columns: list[dict]
    primary_key: list[str]
    format: str = FILE_FORMAT


@dataclass(frozen=True)
class Manifest:
    run_id: str
    run_date: date
    lookback_days: int
    window_start_date: date
    business_timezone: str
    extracted_at: datetime
    dbt_invocation_id: str | None
    files: list[FileEntry]
    created_at: datetime
    dbt_artifacts: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def file(self, table: str) -> FileEntry:
        for entry in self.files:
            if entry.table == table:
                return entry
        raise StageError(f"the manifest of {self.run_date} has no file for {table}")

    def to_json(self) -> bytes:
        document = asdict(self)
        for name in ("run_date", "window_start_date", "extracted_at", "created_at"):
            document[name] = document[name].isoformat()
        return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Manifest:
        """Parse and validate before any SQL can see a value from it."""
        try:
            document = json.loads(data)
            if document.get("format_version") != FORMAT_VERSION:
                raise StageError(
                    f"manifest {key} has format_version {document.get('format_version')!r}; "
                    f"this loader reads version {FORMAT_VERSION}: upgrade the loader or re-extract"
                )
            run_date = date.fromisoformat(document["run_date"])
            files = [FileEntry(**entry) for entry in document["files"]]
            manifest = cls(
                run_id=str(document["run_id"]),
                run_date=run_date,
                lookback_days=int(document["lookback_days"]),
                window_start_date=date.fromisoformat(document["window_start_date"]),
                business_timezone=str(document["business_timezone"]),
                extracted_at=datetime.fromisoformat(document["extracted_at"]),
                dbt_invocation_id=document.get("dbt_invocation_id"),
                files=files,
                created_at=datetime.fromisoformat(document["created_at"]),
                dbt_artifacts=list(document.get("dbt_artifacts", [])),
            )
        except StageError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise StageError(
                f"manifest {key} is not a valid manifest ({exc.__class__.__name__}: {exc}); "
                "re-run the extract for that day"
            ) from exc
        manifest.validate(key)
        return manifest

    def validate(self, key: str) -> None:
        if not re.fullmatch(r"[0-9a-fA-F-]{36}", self.run_id):
            raise StageError(f"manifest {key}: run_id {self.run_id!r} is not a UUID")
        if check_key(key) != manifest_key(self.run_date):
            raise StageError(
                f"manifest {key} describes {self.run_date}; a manifest must sit at "
                f"{manifest_key(self.run_date)}"
            )
        seen: set[str] = set()
        for entry in self.files:
            expected = contract(entry.table)  # raises for a table outside the contract
            if entry.table in seen:
                raise StageError(f"manifest {key} lists {entry.table} twice")
            seen.add(entry.table)
            if not check_key(entry.key).startswith(day_prefix(self.run_date)):
                raise StageError(
                    f"manifest {key}: file {entry.key!r} is outside {day_prefix(self.run_date)}"
                )
            if entry.format != FILE_FORMAT:
                raise StageError(
                    f"manifest {key}: {entry.table} has unknown format {entry.format!r}"
                )
            if not _SHA256.match(str(entry.sha256)):
                raise StageError(f"manifest {key}: {entry.table} has no valid SHA-256")
            if int(entry.rows) < 0 or int(entry.bytes) < 0:
                raise StageError(f"manifest {key}: {entry.table} has a negative size")
            found = [(c.get("name"), normalise_type(str(c.get("type")))) for c in entry.columns]
            wanted = [(c.name, c.data_type) for c in expected.columns]
            if found != wanted or list(entry.primary_key) != list(expected.primary_key):
                raise StageError(
                    f"manifest {key}: the columns of {entry.table} differ from its contract "
                    f"(file: {found}, pk {entry.primary_key}; contract: {wanted}, pk "
                    f"{list(expected.primary_key)}); deploy the same project version on both sides"
                )
        missing = set(REQUIRED_TABLES) - seen
        if missing:
            raise StageError(f"manifest {key} lacks files for {', '.join(sorted(missing))}")
