"""The store's trust boundary: paths it reads from the index never lead outside the cache,
and a cache that another user could write to is refused (or, group-writable, warned about)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write

from checkpoint.cli import cli
from checkpoint.store import Meta, Store

TASKFILE = """
    from checkpoint import TaskDirectory, requires, task

    @task
    def big():
        def __() -> bytes:
            return b"y" * 100_000
        return __

    @task
    def small(i: int):
        def __() -> int:
            print("small", i)
            return i
        return __

    @task
    def d():
        @requires(TaskDirectory())
        def __(path) -> str:
            (path / "f.txt").write_text("made by d")
            return "d"
        return __

    @task
    def main():
        @requires(big())
        @requires(d())
        @requires([small(i) for i in range(2)])
        def __(blob: bytes, name: str, smalls: list[int]) -> int:
            return len(blob) + len(name) + sum(smalls)
        return __
"""
VALUE = 100_002


@pytest.fixture
def cache(tmp_path: Path, runner: CliRunner) -> Path:
    """The store root of a computed taskfile (in a new "process" for each invoke)."""
    write(tmp_path / "taskfile.py", TASKFILE)
    result = invoke(runner, "run", "--no-progress", "--executor", "inline")
    assert result.exit_code == 0 and result.stdout.strip() == str(VALUE), result.stderr
    return tmp_path / ".cache" / "checkpoint"


def invoke(runner: CliRunner, *args: str) -> Result:
    """The command line, as if in a process of its own (the store is opened afresh)."""
    for store in Store._open_stores.values():
        store.close()
    Store._open_stores.clear()
    result = runner.invoke(cli, list(args))
    assert "Traceback" not in result.stderr and "Internal error" not in result.stderr, result.stderr
    return result


def _db(cache: Path, family: str) -> Path:
    return cache / f"taskfile.{family}" / "cache.db"


def _set_blob(cache: Path, name: str) -> None:
    """Craft big()'s index row so that it names ``name`` as its value file."""
    with sqlite3.connect(_db(cache, "big")) as con:
        key, value = con.execute("SELECT key, value FROM Cache WHERE key LIKE 'e:%'").fetchone()
        meta = Meta.from_entry(bytes(value))
        meta.blob = name
        con.execute("UPDATE Cache SET value = ? WHERE key = ?", (meta.to_entry(None), key))


CRAFTED = ["relative", "absolute"]
COMMANDS = [("clear", "-y", "big()"), ("clear", "-y", "big"), ("cache", "verify", "--repair"),
            ("run", "--no-progress", "--force", "big"), ("clear", "-y", "--all")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("crafted", CRAFTED)
def test_crafted_value_file_name_never_leads_outside(cache: Path, runner: CliRunner, tmp_path: Path,
                                                   crafted: str, command: tuple[str, ...]) -> None:
    """An index row naming ../../../../precious.txt (or an absolute path) as its value file
    should count as damaged: never read, never deleted, by any command."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    _set_blob(cache, "../../../../precious.txt" if crafted == "relative" else str(precious))
    result = invoke(runner, *command)
    assert result.exit_code in (0, 1), result.stderr
    assert precious.read_text() == "keep me"
    if command[0] == "cache":
        assert "is unreadable" in result.stderr
    result = invoke(runner, "run", "--no-progress", "big")
    assert result.exit_code == 0 and result.stdout.startswith("b'yyy"), result.stderr
    assert precious.read_text() == "keep me"


def test_crafted_task_id_and_diskcache_file_never_lead_outside(cache: Path, runner: CliRunner,
                                                             tmp_path: Path) -> None:
    """A row whose key is not a task id, or whose diskcache value file is a path elsewhere,
    should not make `cache verify --repair` or `clear` delete outside the cache."""
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "keep.txt").write_text("keep me")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    with sqlite3.connect(_db(cache, "small")) as con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key LIKE 'e:%'").fetchone()
        con.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, mode, "
                    "value) VALUES (?, 1, 0, NULL, 0, 1, ?)", ("e:../../../outside", value))
        # A log row whose value diskcache keeps in a file: crafted to name a file elsewhere.
        con.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, mode, "
                    "filename, value) VALUES (?, 1, 0, NULL, 0, 3, ?, NULL)",
                    ("log:" + "0" * 32, "../../../precious.txt"))
    result = invoke(runner, "cache", "verify", "--repair")
    assert result.exit_code == 1 and "The metadata of entry ../../../outside" in result.stderr
    assert (outside / "data" / "keep.txt").read_text() == "keep me"
    store = Store.open()
    assert store.get_log("taskfile.small", "0" * 32) is None  # never read from elsewhere
    store.delete("taskfile.small", "0" * 32)  # deletes the crafted log row, not the file
    assert precious.read_text() == "keep me"
    result = invoke(runner, "clear", "-y", "--all")
    assert result.exit_code == 0
    assert precious.read_text() == "keep me"
    assert (outside / "data" / "keep.txt").read_text() == "keep me"


DATA_COMMANDS = [("clear", "-y", "d()"), ("clear", "-y", "d"), ("cache", "verify", "--repair"),
                 ("run", "--no-progress", "--force", "d"), ("clear", "-y", "--all")]


@pytest.mark.parametrize("command", DATA_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("link", ["data", "data/ID"])
def test_planted_data_symlink_is_never_followed(cache: Path, runner: CliRunner, tmp_path: Path,
                                              link: str, command: tuple[str, ...]) -> None:
    """A `data/` directory (or one task's data directory) replaced by a link to a directory
    outside the cache should never be emptied or written through."""
    data = cache / "taskfile.d" / "data"
    (tid,) = [p.name for p in data.iterdir()]
    outside = tmp_path / "outside"
    (outside / tid).mkdir(parents=True)
    (outside / "keep.txt").write_text("keep me")
    (outside / tid / "keep.txt").write_text("keep me")
    planted = data if link == "data" else data / tid
    shutil.rmtree(planted)
    planted.symlink_to(outside)
    result = invoke(runner, *command)
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == sorted([
        "keep.txt", tid, f"{tid}/keep.txt"])
    if command[0] == "run":
        if link == "data":  # shared by the family: refused, with what to do
            assert result.exit_code == 1
            assert "is a symbolic link, not a directory; checkpoint never follows links" in result.stderr
        else:  # the entry's own directory: the link is replaced by a directory of the cache
            assert result.exit_code == 0, result.stderr
            assert not planted.is_symlink() and (planted / "f.txt").read_text() == "made by d"
    elif command[0] == "cache":
        assert result.exit_code == 1 and "symbolic link" in result.stderr
        assert not planted.is_symlink()  # the link is removed, never what it points to
    else:
        assert result.exit_code == 0, result.stderr


def test_family_directory_symlink_is_refused(cache: Path, runner: CliRunner, tmp_path: Path) -> None:
    """A family directory that is a link to elsewhere should be refused by name; clearing
    it removes the link only."""
    family = cache / "taskfile.small"
    outside = tmp_path / "elsewhere"
    family.rename(outside)
    family.symlink_to(outside)
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 1
    assert f"The cache of taskfile.small at {family} is a symbolic link, not a directory" in result.stderr
    result = invoke(runner, "cache", "verify")
    assert result.exit_code == 1 and "is a symbolic link" in result.stderr
    result = invoke(runner, "clear", "-y", "small")
    assert result.exit_code == 0 and not family.exists() and (outside / "cache.db").exists()
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 0 and result.stdout.strip() == str(VALUE), result.stderr


# --- ownership (as ssh's StrictModes) -----------------------------------------------------

OTHER = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files to another user")


@needs_root
@pytest.mark.parametrize("which", ["cache-dir", "root", "family", "index"])
def test_cache_of_another_user_is_refused(cache: Path, runner: CliRunner, which: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory, store, family or index owned by another user should be refused
    (exit 2) with what to do; CP_SHARED_CACHE=1 accepts it."""
    path = {"cache-dir": cache.parent, "root": cache, "family": cache / "taskfile.small",
            "index": _db(cache, "small")}[which]
    os.chown(path, OTHER, -1)
    for command in (("run", "--no-progress"), ("ls",), ("cache", "show", "small(1)")):
        result = invoke(runner, *command)
        assert result.exit_code == 2, (command, result.stderr)
        assert f"Error: The cache at {path} belongs to user " in result.stderr
        assert "loading it runs code as you" in result.stderr and "CP_SHARED_CACHE=1" in result.stderr
    monkeypatch.setenv("CP_SHARED_CACHE", "1")
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 0 and result.stdout.strip() == str(VALUE), result.stderr


@needs_root
def test_verify_checks_every_file(cache: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """`cache verify` should name a value file of another user or writable by others."""
    (blob,) = (cache / "taskfile.big" / "blobs").iterdir()
    os.chown(blob, OTHER, -1)
    result = invoke(runner, "cache", "verify")
    assert result.exit_code == 1 and f"The cache at {blob} belongs to user" in result.stderr
    monkeypatch.setenv("CP_SHARED_CACHE", "1")
    blob.chmod(0o666)
    assert invoke(runner, "cache", "verify").exit_code == 0  # no one else may enter the store
    cache.chmod(0o711)  # now they may
    result = invoke(runner, "cache", "verify")
    assert result.exit_code == 1 and f"The cache at {blob} is writable by every user" in result.stderr
    blob.chmod(0o644)
    assert invoke(runner, "cache", "verify").exit_code == 0


@pytest.mark.parametrize("which", ["root", "family"])
def test_world_writable_cache_is_refused(cache: Path, runner: CliRunner, which: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A store or family directory that every user may write to should be refused, even
    with CP_SHARED_CACHE=1 (a family directory only if others may enter the store)."""
    path = cache if which == "root" else cache / "taskfile.small"
    path.chmod(path.stat().st_mode | stat.S_IWOTH)
    if which == "family":
        assert invoke(runner, "run", "--no-progress").exit_code == 0  # the store is 0700
        cache.chmod(0o755)
    monkeypatch.setenv("CP_SHARED_CACHE", "1")
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 2
    assert f"Error: The cache at {path} is writable by every user" in result.stderr
    assert f"chmod o-w {path}" in result.stderr


def test_sticky_shared_directory_is_a_fine_cache_dir(tmp_path: Path, runner: CliRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache directory like /tmp (everyone may write, sticky bit) is fine: the store in it
    is private to you."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("CP_CACHE_DIR", str(shared))
    write(tmp_path / "taskfile.py", TASKFILE)
    result = invoke(runner, "run", "--no-progress", "--executor", "inline")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    assert stat.S_IMODE((shared / "checkpoint").stat().st_mode) == 0o700


@needs_root
def test_group_writable_cache_is_warned_about(cache: Path, runner: CliRunner,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A store that a group may write to should run, with a loud warning that says how to
    fix it or accept it (CP_SHARED_CACHE=1 silences it)."""
    os.chown(cache, -1, OTHER)
    cache.chmod(0o770)
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 0 and result.stdout.strip() == str(VALUE), result.stderr
    assert result.stderr.startswith(f"warning: The cache at {cache} is writable by group ")
    assert f"chmod g-w {cache}" in result.stderr and "CP_SHARED_CACHE=1" in result.stderr
    assert result.stderr.count("warning:") == 1
    monkeypatch.setenv("CP_SHARED_CACHE", "1")
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_group_writable_directories_inside_a_private_store_are_fine(
        cache: Path, runner: CliRunner, tmp_path: Path) -> None:
    """With umask 002 the directories a store makes are group-writable; inside a store that
    only you may enter that lets no one in: no warning, nothing for `cache verify`."""
    for path in (cache / "taskfile.small", cache / "taskfile.big" / "blobs", _db(cache, "small")):
        path.chmod(path.stat().st_mode | stat.S_IWGRP)
    result = invoke(runner, "run", "--no-progress")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    result = invoke(runner, "cache", "verify")
    assert result.exit_code == 0 and "all good" in result.stderr, result.stderr
