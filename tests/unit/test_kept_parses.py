"""Parses kept in the work folder between processes: read back only for their own key,
dbt and Python, and only the newest few kept."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from dbt_project.dbt_runner import parse_cache as dbt_parse

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeManifest:
    """Stands in for dbt's Manifest: what keep() pickles and read_kept() restores."""

    nodes: dict
    _lock: object = field(default_factory=object)


def key(n: int) -> tuple:
    return ("/project", "source", (("ETL_PG_DBNAME", f"shop_{n}"),), "{}", ())


def test_a_kept_parse_is_read_back_for_its_key_only(tmp_path):
    dbt_parse.keep(tmp_path, key(1), FakeManifest({"model.shop.a": 1}))
    assert dbt_parse.read_kept(tmp_path, key(1)).nodes == {"model.shop.a": 1}
    assert dbt_parse.read_kept(tmp_path, key(2)) is None


def test_a_parse_kept_by_another_dbt_or_python_is_not_read(tmp_path, monkeypatch):
    dbt_parse.keep(tmp_path, key(1), FakeManifest({}))
    monkeypatch.setattr(dbt_parse, "_python", lambda: "3.99")
    assert dbt_parse.read_kept(tmp_path, key(1)) is None
    monkeypatch.undo()
    monkeypatch.setattr(dbt_parse, "_engine", lambda: {"dbt-core": "0.0.0"})
    assert dbt_parse.read_kept(tmp_path, key(1)) is None


def test_a_damaged_kept_parse_is_parsed_again_not_an_error(tmp_path):
    dbt_parse.keep(tmp_path, key(1), FakeManifest({}))
    (pickled,) = tmp_path.glob("*.pickle")
    pickled.write_bytes(pickled.read_bytes()[:100])
    assert dbt_parse.read_kept(tmp_path, key(1)) is None


def test_only_the_newest_parses_are_kept(tmp_path):
    for n in range(dbt_parse._KEPT_PARSES + 3):
        dbt_parse.keep(tmp_path, key(n), FakeManifest({"n": n}))
    assert len(list(tmp_path.glob("*.pickle"))) == dbt_parse._KEPT_PARSES
    assert len(list(tmp_path.glob("*.json"))) == dbt_parse._KEPT_PARSES
    assert dbt_parse.read_kept(tmp_path, key(0)) is None
    newest = dbt_parse._KEPT_PARSES + 2
    assert dbt_parse.read_kept(tmp_path, key(newest)).nodes == {"n": newest}


def test_the_project_reads_no_profile_setting_a_parse_is_not_keyed_on():
    # A parse is reused for another login, host, port or TLS setting of the same
    # database (dbt_parse.parse_inputs). That holds while no project file reads them:
    # the target's name and the database name are in the key; nothing else is.
    reads = re.compile(r"\btarget\.(\w+)|\benv_var\(")
    found = {
        (path.relative_to(ROOT).as_posix(), match.group(0))
        for path in dbt_parse.parsed_files(ROOT)
        if path.name != "profiles.yml" and path.suffix in (".sql", ".yml", ".yaml", ".md")
        for match in reads.finditer(path.read_text(encoding="utf-8"))
        if match.group(1) not in ("name", "database", "dbname")
    }
    assert not found, f"project files read profile settings a parse is not keyed on: {found}"
