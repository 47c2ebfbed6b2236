"""A new family's index: started without syncs (checkpoint/_diskcache.py, ``_begin``), then
made by diskcache. It must be the index diskcache alone makes, and a process killed at any
step of its creation must leave something the next open completes into that same index."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import diskcache
import pytest

from checkpoint import _diskcache

PRAGMAS = ("auto_vacuum", "journal_mode", "page_size", "encoding", "user_version", "application_id")

# Run in a process of its own: start an index in argv[1] and kill the process (SIGKILL) at
# the argv[2]-th statement diskcache's creation runs (0: right after checkpoint's own start;
# -1: after an entry was written to the new index).
KILLED = """
import os, signal, sys
from pathlib import Path

import diskcache.core

from checkpoint import _diskcache

at = int(sys.argv[2])
count = 0
plain = diskcache.core.Cache._sql_retry


def counted(self):
    run = plain.fget(self)

    def statement(*args, **kwargs):
        global count
        count += 1
        if count == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return run(*args, **kwargs)
    return statement


diskcache.core.Cache._sql_retry = property(counted)
directory = Path(sys.argv[1])
_diskcache._begin(directory, {**diskcache.DEFAULT_SETTINGS, **_diskcache.SETTINGS})
if at == 0:
    os.kill(os.getpid(), signal.SIGKILL)
index = _diskcache.open_index(directory)
if at < 0:  # an entry written, never closed: it is in the log only
    index.set("e:kept", b"kept")
    os.kill(os.getpid(), signal.SIGKILL)
index.close()
print(count)
"""


def _shape(directory: Path) -> tuple[object, ...]:
    """An index's schema, settings and file-level pragmas, and its directory's mode."""
    con = sqlite3.connect(directory / "cache.db")
    try:
        return (
            con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall(),
            con.execute("SELECT key, value FROM Settings ORDER BY key").fetchall(),
            {pragma: con.execute(f"PRAGMA {pragma}").fetchall() for pragma in PRAGMAS},
            directory.stat().st_mode & 0o777,
        )
    finally:
        con.close()


@pytest.fixture
def diskcache_made(tmp_path: Path) -> tuple[object, ...]:
    """The shape of an index that diskcache alone made, with the store's settings."""
    directory = tmp_path / "diskcache"
    diskcache.Cache(str(directory), **_diskcache.SETTINGS).close()
    return _shape(directory)


def test_a_new_index_is_the_one_diskcache_makes(tmp_path: Path,
                                                 diskcache_made: tuple[object, ...]) -> None:
    _diskcache.open_index(tmp_path / "family").close()
    shape = _shape(tmp_path / "family")
    assert shape == diskcache_made
    assert shape[2]["auto_vacuum"] == [(1,)] and shape[2]["journal_mode"] == [("wal",)]
    assert sorted(os.listdir(tmp_path / "family")) == ["cache.db"]


def test_an_empty_index_file_is_completed(tmp_path: Path,
                                          diskcache_made: tuple[object, ...]) -> None:
    (tmp_path / "family").mkdir(mode=0o755)
    (tmp_path / "family" / "cache.db").touch()  # a crash right after the file was created
    _diskcache.open_index(tmp_path / "family").close()
    assert _shape(tmp_path / "family") == diskcache_made


def _killed_at(directory: Path, at: int) -> int | None:
    """Create an index in another process killed at statement ``at``; how many statements
    the creation took when it was not killed."""
    done = subprocess.run([sys.executable, "-c", KILLED, str(directory), str(at)],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == -signal.SIGKILL:
        return None
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def _check_kills(tmp_path: Path, diskcache_made: tuple[object, ...], steps: list[int]) -> None:
    for at in steps:
        directory = tmp_path / f"killed-{at}"
        assert _killed_at(directory, at) is None, at
        index = _diskcache.open_index(directory)  # the next run opens it: complete again
        try:
            index.set("e:x", b"value")
            assert index.get("e:x") == b"value"
            assert index.delete("e:x")
        finally:
            index.close()
        assert _shape(directory) == diskcache_made, at


def test_a_kill_after_the_start_leaves_an_index_the_next_open_completes(
        tmp_path: Path, diskcache_made: tuple[object, ...]) -> None:
    _check_kills(tmp_path, diskcache_made, [0, 1, 6])


@pytest.mark.faults
def test_a_kill_at_any_step_of_creation_leaves_an_index_the_next_open_completes(
        tmp_path: Path, diskcache_made: tuple[object, ...]) -> None:
    statements = _killed_at(tmp_path / "whole", 10**6)
    assert statements is not None and statements > 10
    _check_kills(tmp_path, diskcache_made, list(range(statements + 1)))


def test_an_entry_of_a_new_index_survives_a_kill(tmp_path: Path,
                                                 diskcache_made: tuple[object, ...]) -> None:
    assert _killed_at(tmp_path / "family", -1) is None
    index = _diskcache.open_index(tmp_path / "family")
    try:
        assert index.get("e:kept") == b"kept"
        assert index.delete("e:kept")
    finally:
        index.close()
    assert _shape(tmp_path / "family") == diskcache_made
