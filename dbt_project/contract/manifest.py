"""The manifest: the contract between one extract and its load.

It is written last, so its presence means every file it names is complete. The
load trusts nothing in it: names must be in the analytics contract, keys must stay
under ``etl-data/<run_date>/``, and each file is checked against its size, SHA-256
and row count while it is read.

It is parsed by one strict schema (pydantic): JSON types as written, no coercion
("5" is not 5), no unknown field at any level, every date and time an ISO string,
times with their offset. Whatever the schema refuses is named by its path in one
line, e.g. ``files[2].rows: Input should be a valid integer``.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError

from dbt_project.contract.file_format import FILE_FORMAT, MAX_UNCOMPRESSED_BYTES
from dbt_project.contract.ownership import required_tables
from dbt_project.contract.tables import contract, normalise_type
from dbt_project.errors import StageError
from dbt_project.facts.business_calendar import (
    BUSINESS_TIMEZONE,
    CLOCK_SKEW,
    MAX_LOOKBACK_DAYS,
    business_date,
)
from dbt_project.facts.stage_layout import day_prefix, manifest_key
from dbt_project.stage import check_key

# 2: each file records its uncompressed size, the loader's bound on inflating it. A
# version-1 manifest lacks it and cannot be loaded safely; one in flight at deploy time
# is refused with the version message and re-extracted.
FORMAT_VERSION = 2
# A manifest of five files is a few KB; it is read whole, so its size is bounded first.
MAX_MANIFEST_BYTES = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of a value from the manifest, cut so that an error stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _path(loc: tuple) -> str:
    """A pydantic error location as a reader writes it: ``files[2].columns[0].name``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).isidentifier():
            path += f".{part}" if path else str(part)
        else:
            path += f"[{_short(str(part), 40)}]"
    return path or "the document"


class _Strict(BaseModel):
    # Frozen: a parsed manifest is the record of what the extract wrote. No NaN or
    # Infinity: JSON has neither, and the run report kept in PostgreSQL refuses both.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class Column(_Strict):
    name: str
    type: str


class FileEntry(_Strict):
    table: str
    key: str
    rows: int
    bytes: int
    # What the file inflates to: the reader stops as soon as it would exceed it.
    uncompressed_bytes: int
    sha256: str
    columns: list[Column]
    primary_key: list[str]
    format: str = FILE_FORMAT


class ExtractFacts(_Strict):
    """What the extract knows of its night, for the run report the load sends."""

    trigger: str
    extract_seconds: Annotated[float, Field(ge=0)]
    # dbt's data tests of the build by status: pass, warn, fail, error, skipped.
    dbt_tests: dict[str, NonNegativeInt]
    freshness: str  # pass, warn or skipped
    freshness_sources: list[str] = []


class _Version(BaseModel):
    """Only the version, read first: a manifest of another version fails the schema
    for reasons that would hide the one that matters."""

    model_config = ConfigDict(extra="ignore")
    format_version: object = None


class Manifest(_Strict):
    run_id: str
    run_date: date
    lookback_days: int
    window_start_date: date
    business_timezone: str
    # With their offsets: they are compared with the loader's clock.
    extracted_at: AwareDatetime
    dbt_invocation_id: str | None
    files: list[FileEntry]
    created_at: AwareDatetime
    dbt_artifacts: list[str] = []
    format_version: int = FORMAT_VERSION
    # A full refresh owns the whole history up to run_date: the load also deletes every
    # day the files no longer have.
    full_refresh: bool = False
    # The night owns every customer (a full refresh in one night, or the last chunk of a
    # history rebuilt in chunks): the load also deletes every customer the files lack.
    # Absent (an earlier extract): as full_refresh.
    every_customer: bool | None = None
    extract: ExtractFacts | None = None

    @property
    def owns_every_customer(self) -> bool:
        return self.full_refresh if self.every_customer is None else self.every_customer

    def file(self, table: str) -> FileEntry:
        for entry in self.files:
            if entry.table == table:
                return entry
        raise StageError(f"the manifest of {self.run_date} has no file for {table}")

    def to_json(self) -> bytes:
        document = self.model_dump()
        for name in ("run_date", "window_start_date", "extracted_at", "created_at"):
            document[name] = document[name].isoformat()
        return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, key: str) -> Manifest:
        """Parse and validate before any SQL can see a value from it."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise StageError(
                f"manifest {key} is larger than {MAX_MANIFEST_BYTES} bytes; the extract writes "
                "a few KB: re-run the extract for that day"
            )
        try:
            version = _Version.model_validate_json(data).format_version
        except ValidationError:
            version = FORMAT_VERSION  # not an object, or not JSON: the schema says which
        if version != FORMAT_VERSION:
            raise StageError(
                f"manifest {key} has format_version {_short(version)}; "
                f"this loader reads version {FORMAT_VERSION}: upgrade the loader or re-extract"
            )
        try:
            manifest = cls.model_validate_json(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            message = " ".join(str(first["msg"]).split())
            raise StageError(
                f"manifest {key} is not a valid manifest: {_path(first['loc'])}: {message}"
                f"{more}; re-run the extract for that day"
            ) from None
        manifest.check_contract(key)
        return manifest

    def check_not_from_the_future(self, key: str, now: datetime) -> None:
        """Refuse a manifest that claims a time the loader has not reached.

        Such a manifest was not written by the extract, and loading it would make every
        real night after it look stale. ``extracted_at`` is a moment: it is in the future
        if it is later than now plus the clock skew allowed. ``run_date`` is a whole
        business day in the business time zone: it is in the future if it has not begun,
        that is if it is after the business date of now plus the skew. The day under way
        is not in the future (only not over: the extract refuses it, this is the bound of
        what could have happened at all). The loader's own time zone is used, not the
        manifest's, which is data like the rest.
        """
        latest = now + CLOCK_SKEW
        if self.extracted_at > latest:
            skew = f"{CLOCK_SKEW.seconds // 60} minutes of clock skew allowed"
            raise StageError(
                f"manifest {key}: extracted_at {self.extracted_at.isoformat()} is later than "
                f"now ({now.isoformat(timespec='seconds')}, {skew}); no extract wrote it: "
                "do not load it, re-run the extract for that day"
            )
        today = business_date(latest)
        if self.run_date > today:
            raise StageError(
                f"manifest {key}: run_date {self.run_date} is later than today ({today} in "
                f"{BUSINESS_TIMEZONE}); no extract wrote it: do not load it, re-run the "
                "extract for that day"
            )

    def check_contract(self, key: str) -> None:
        if not _UUID.match(self.run_id):
            raise StageError(f"manifest {key}: run_id {_short(self.run_id)} is not a UUID")
        if check_key(key) != manifest_key(self.run_date):
            raise StageError(
                f"manifest {key} describes {self.run_date}; a manifest must sit at "
                f"{manifest_key(self.run_date)}"
            )
        self._check_window(key)
        self._check_files(key)

    def _check_window(self, key: str) -> None:
        """The window as the extract computes it: the load owns and deletes by its days.

        A windowed night looks back 1 to MAX_LOOKBACK_DAYS days; a full refresh looks
        back to the source's first order, however long ago.
        """
        if self.business_timezone != BUSINESS_TIMEZONE:
            raise StageError(
                f"manifest {key}: business_timezone {_short(self.business_timezone)} is not "
                f"the project's {BUSINESS_TIMEZONE}; deploy the same project version on both "
                "sides, then re-run the extract for that day"
            )
        most = (self.run_date - date.min).days + 1 if self.full_refresh else MAX_LOOKBACK_DAYS
        if not 1 <= self.lookback_days <= most:
            raise StageError(
                f"manifest {key}: lookback_days {self.lookback_days} is not from 1 to {most}; "
                "re-run the extract for that day"
            )
        first = self.run_date - timedelta(days=self.lookback_days - 1)
        if self.window_start_date != first:
            raise StageError(
                f"manifest {key}: window_start_date {self.window_start_date} is not {first}, "
                f"the first of the {self.lookback_days} days up to {self.run_date}; re-run the "
                "extract for that day"
            )

    def _check_files(self, key: str) -> None:
        seen: set[str] = set()
        for entry in self.files:
            expected = contract(entry.table)  # raises for a table outside the contract
            if entry.table in seen:
                raise StageError(f"manifest {key} lists {entry.table} twice")
            seen.add(entry.table)
            if not check_key(entry.key).startswith(day_prefix(self.run_date)):
                raise StageError(
                    f"manifest {key}: file {_short(entry.key)} is outside "
                    f"{day_prefix(self.run_date)}"
                )
            if entry.format != FILE_FORMAT:
                raise StageError(
                    f"manifest {key}: {entry.table} has unknown format {_short(entry.format)}"
                )
            if not _SHA256.match(entry.sha256):
                raise StageError(f"manifest {key}: {entry.table} has no valid SHA-256")
            if min(entry.rows, entry.bytes, entry.uncompressed_bytes) < 0:
                raise StageError(f"manifest {key}: {entry.table} has a negative size")
            if entry.uncompressed_bytes > MAX_UNCOMPRESSED_BYTES:
                raise StageError(
                    f"manifest {key}: {entry.table} would inflate to {entry.uncompressed_bytes} "
                    f"bytes, over the loader's bound of {MAX_UNCOMPRESSED_BYTES}; no night of "
                    "this project is that large: re-run the extract for that day"
                )
            found = [(c.name, normalise_type(c.type)) for c in entry.columns]
            wanted = [(c.name, c.data_type) for c in expected.columns]
            if found != wanted or list(entry.primary_key) != list(expected.primary_key):
                raise StageError(
                    f"manifest {key}: the columns of {entry.table} differ from its contract "
                    f"(file: {found}, pk {entry.primary_key}; contract: {wanted}, pk "
                    f"{list(expected.primary_key)}); deploy the same project version on both sides"
                )
        missing = set(required_tables()) - seen
        if missing:
            raise StageError(f"manifest {key} lacks files for {', '.join(sorted(missing))}")
