"""Corrupt stored values are detected, reported by task name, and recomputed, never returned."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from conftest import write

import checkpoint
from checkpoint import events as ev
from checkpoint.cli import cli
from checkpoint.store import Store

SOURCE = """
    from checkpoint import requires, task

    CALLS = []

    @task
    def small(i):
        def __():
            CALLS.append(f"small({i})")
            return i * 10
        return __

    @task
    def big(i):
        def __():
            CALLS.append(f"big({i})")
            return bytes([i]) * 100_000
        return __

    @task
    def total():
        @requires([small(i) for i in range(3)])
        @requires([big(i) for i in range(2)])
        def __(smalls, bigs):
            CALLS.append("total()")
            return sum(smalls) + sum(len(b) + b[0] for b in bigs)
        return __
"""
EXPECTED = 30 + 200_001


@pytest.fixture
def m(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    mod = make_module("corrupt_tasks", SOURCE)
    assert mod.total().run(executor="inline") == EXPECTED
    mod.CALLS.clear()
    Store.open().close()
    return mod


def _db(task: checkpoint.Task) -> Path:
    return Store.open().root / task.family.dirname / "cache.db"


def _flip_inline(task: checkpoint.Task) -> None:
    """Flip the last byte of an entry stored inline in the index."""
    with sqlite3.connect(_db(task)) as con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = ?", ("e:" + task.id,)).fetchone()
        value = bytes(value)
        con.execute("UPDATE Cache SET value = ? WHERE key = ?",
                    (value[:-1] + bytes([value[-1] ^ 0x01]), "e:" + task.id))


def _blob(task: checkpoint.Task) -> Path:
    (path,) = (Store.open().root / task.family.dirname / "blobs").glob(task.id + ".*")
    return path


def _run(m: ModuleType, executor: str = "inline") -> tuple[object, list[ev.CorruptEntryFound]]:
    events: list[object] = []
    value = checkpoint.run([m.total()], executor=executor, subscribers=[events.append]).values[m.total().id]
    return value, [e for e in events if isinstance(e, ev.CorruptEntryFound)]


def test_corrupt_inline_prerequisite_is_recomputed(m: ModuleType) -> None:
    """A bit flip in a prerequisite's stored value should be reported and the prerequisite re-run."""
    _flip_inline(m.small(1))
    m.total().clear()
    value, found = _run(m)
    assert value == EXPECTED
    assert sorted(m.CALLS) == ["small(1)", "total()"]
    assert [e.task for e in found] == [m.small(1)] and "small(1)" in found[0].message


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("executor", ["inline", "process"])
def test_damaged_value_file_of_prerequisite_is_recomputed(m: ModuleType, damage: str, executor: str) -> None:
    """A flipped, truncated or missing value file should be detected (by the worker too) and re-run."""
    path = _blob(m.big(1))
    data = path.read_bytes()
    if damage == "flip":
        path.write_bytes(data[:500] + bytes([data[500] ^ 0x40]) + data[501:])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    m.total().clear()
    value, found = _run(m, executor)
    assert value == EXPECTED
    assert [e.task for e in found] == [m.big(1)]
    if executor == "inline":
        assert sorted(m.CALLS) == ["big(1)", "total()"]
    assert checkpoint.run([m.total()], executor="inline").ran == []


def test_corrupt_target_is_recomputed(m: ModuleType) -> None:
    """A target whose own stored value is corrupt should run again rather than return garbage."""
    _flip_inline(m.total())
    value, found = _run(m)
    assert value == EXPECTED
    assert m.CALLS == ["total()"]
    assert [e.task for e in found] == [m.total()]


def test_damaged_index_is_moved_aside_and_recomputed(m: ModuleType) -> None:
    """A damaged cache.db should be reported, moved aside, and its family's tasks re-run."""
    db = _db(m.small(0))
    db.write_bytes(b"this is not a database" * 100)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    value, found = _run(m)
    assert value == EXPECTED
    # The family's values come out the same: total() is kept (early cutoff).
    assert sorted(m.CALLS) == ["small(0)", "small(1)", "small(2)"]
    assert len(found) == 1 and found[0].task is None and "damaged" in found[0].message
    assert list(db.parent.glob("cache.db.damaged-*"))


def test_cache_verify_finds_and_repairs(m: ModuleType, runner: CliRunner, tmp_path: Path) -> None:
    """`checkpoint cache verify` should name every corrupt entry, exit 1, and --repair remove them."""
    write(tmp_path / "taskfile.py", "from corrupt_tasks import *\n")
    _flip_inline(m.small(2))
    _blob(m.big(0)).write_bytes(b"garbage")
    result = runner.invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1
    assert "small(2) (corrupt_tasks.small)" in result.stderr
    assert "big(0) (corrupt_tasks.big)" in result.stderr
    assert "Checked 6 entries: 2 bad" in result.stderr
    result = runner.invoke(cli, ["cache", "verify", "--repair", "--json"])
    assert result.exit_code == 1 and '"repaired": true' in result.stdout
    result = runner.invoke(cli, ["cache", "verify"])
    assert result.exit_code == 0, result.stderr
    assert "Checked 4 entries: all good" in result.stderr
    m.CALLS.clear()
    assert checkpoint.run([m.total()], executor="inline").values[m.total().id] == EXPECTED
    # Recomputed to the same values (the same stamps, large or small): total() is kept.
    assert sorted(m.CALLS) == ["big(0)", "small(2)"]
