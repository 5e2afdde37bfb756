"""Parses kept in the work folder between processes: read back only for their own key,
dbt and Python, and only the newest few kept."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbt_project import dbt_parse


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
