"""What checkpoint relies on in diskcache beyond its public API (see checkpoint/_diskcache.py).

A diskcache release that changes any of it must fail here, loudly, before it damages or
slows down a store.
"""

from __future__ import annotations

import inspect
import os
import re
import sqlite3
from pathlib import Path

import diskcache
import pytest

import checkpoint
from checkpoint import _diskcache
from checkpoint._format import INLINE_MAX

PACKAGE = Path(checkpoint.__file__).parent


def _rows(directory: Path) -> dict[str, tuple[int, int, str | None, object]]:
    con = sqlite3.connect(directory / "cache.db")
    try:
        rows = con.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()
    finally:
        con.close()
    return {key: (raw, mode, filename, value) for key, raw, mode, filename, value in rows}


def test_modes_and_settings_are_diskcache_s() -> None:
    assert (diskcache.core.MODE_RAW, diskcache.core.MODE_BINARY, diskcache.core.MODE_PICKLE) == (
        _diskcache.MODE_RAW, _diskcache.MODE_BINARY, _diskcache.MODE_PICKLE)
    for name in _diskcache.SETTINGS:
        assert name in diskcache.DEFAULT_SETTINGS, name
    # An entry with an inline payload (and its metadata) stays in its row: a warm run reads
    # every entry of a family in one query.
    assert diskcache.DEFAULT_SETTINGS["disk_min_file_size"] >= INLINE_MAX + 4096


def test_the_tables_have_the_columns_the_store_reads(tmp_path: Path) -> None:
    _diskcache.open_index(tmp_path).close()
    con = sqlite3.connect(tmp_path / "cache.db")
    try:
        for table, columns in _diskcache.COLUMNS.items():
            found = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            assert columns <= found | {"rowid"}, (table, columns - found)
    finally:
        con.close()
    assert not _diskcache.bad_schema(tmp_path / "cache.db")


def test_internals_the_index_uses_exist_with_their_signatures(tmp_path: Path) -> None:
    cache = diskcache.Cache(str(tmp_path), disk=_diskcache._disk_class(), **_diskcache.SETTINGS)
    try:
        assert callable(cache._sql) and isinstance(cache._disk, diskcache.Disk)
        assert isinstance(cache._disk, _diskcache._disk_class())
        assert list(inspect.signature(diskcache.Disk.fetch).parameters) == [
            "self", "mode", "filename", "value", "read"]
        assert list(inspect.signature(diskcache.Disk.remove).parameters) == ["self", "file_path"]
        assert "retry" in inspect.signature(diskcache.Cache.transact).parameters
        assert cache._disk._directory == str(tmp_path)
    finally:
        cache.close()


def test_a_cache_has_each_member_the_typed_boundary_names(tmp_path: Path) -> None:
    """``_diskcache.Cache`` and ``Disk`` are what mypy checks the index against (diskcache
    has no type information): each member they name exists on a real cache and its disk."""
    cache = diskcache.Cache(str(tmp_path), disk=_diskcache._disk_class(), **_diskcache.SETTINGS)
    try:
        for protocol, obj in ((_diskcache.Cache, cache), (_diskcache.Disk, cache._disk)):
            names = set(protocol.__annotations__) | {
                name for name, value in vars(protocol).items()
                if callable(value) and not name.startswith("__")}
            assert names
            for name in names:
                assert hasattr(obj, name), (protocol.__name__, name)
    finally:
        cache.close()


def test_rows_are_stored_as_the_store_reads_them(tmp_path: Path) -> None:
    index = _diskcache.open_index(tmp_path)
    big = os.urandom(diskcache.DEFAULT_SETTINGS["disk_min_file_size"] + 1)
    with index.transaction():
        index.set("e:small", b"\x00payload")
        index.set("log:text", "some output")
        index.set("e:big", big)
    rows = _rows(tmp_path)
    assert rows["e:small"] == (1, _diskcache.MODE_RAW, None, b"\x00payload")  # str key as-is, raw
    assert rows["log:text"][:3] == (1, _diskcache.MODE_RAW, None)
    raw, mode, filename, _ = rows["e:big"]
    assert (raw, mode) == (1, _diskcache.MODE_BINARY)
    assert filename is not None and _diskcache._VALUE_FILE.fullmatch(filename)
    # what the Index reads back, through the batch query and one by one
    assert dict(index.values()) == {"e:small": b"\x00payload", "log:text": "some output", "e:big": big}
    assert dict(index.values(["e:big", "e:absent"])) == {"e:big": big}
    assert dict(index.scan("e:", {"small", "big", "absent"})) == {"small": b"\x00payload", "big": big}
    assert index.scan("e:", ["small"]) == {"small": b"\x00payload"}  # a file only when wanted
    assert index.keys("e:") == ["e:big", "e:small"] and len(index) == 3 and "e:big" in index
    index.close()
    read_only = _diskcache.open_read_only(tmp_path)
    assert read_only.get("e:big") == big and read_only.get("log:text") == "some output"
    read_only.close()
    assert _diskcache.count_keys(tmp_path / "cache.db", "e:") == 2


def test_a_replaced_value_file_is_deleted_only_after_commit(tmp_path: Path) -> None:
    index = _diskcache.open_index(tmp_path)
    size = diskcache.DEFAULT_SETTINGS["disk_min_file_size"] + 1
    with index.transaction():
        index.set("e:x", b"a" * size)
    (old,) = [f for _, (_, _, f, _) in _rows(tmp_path).items() if f]
    with pytest.raises(RuntimeError), index.transaction():
        index.set("e:x", b"b" * size)
        assert (tmp_path / old).exists()  # diskcache asked to delete it: held back
        raise RuntimeError("rolled back")
    assert (tmp_path / old).exists() and index.get("e:x") == b"a" * size
    with index.transaction():
        index.set("e:x", b"c" * size)
        assert (tmp_path / old).exists()
    assert not (tmp_path / old).exists() and index.get("e:x") == b"c" * size
    index.close()


def test_no_other_module_reaches_into_diskcache() -> None:
    internals = re.compile(r"\b(import diskcache|from diskcache|diskcache\.|\._sql\b|\._disk\b)")
    users = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
        if path.name != "_diskcache.py" and internals.search(path.read_text())
    )
    assert users == []
