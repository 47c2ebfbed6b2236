"""Damage and access problems in the store end in the project's clear cache errors (what is
wrong, which path, what to do), never in a traceback, a hang, or a crash blamed on task code;
a damaged family index is moved aside and its tasks recomputed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write

TASKFILE = """
    from checkpoint import requires, task

    @task
    def small(i: int):
        def __() -> int:
            print("computing small", i)
            return i * 10
        return __

    @task
    def big():
        def __() -> bytes:
            return b"y" * 100_000
        return __

    @task
    def main():
        @requires([small(i) for i in range(3)])
        @requires(big())
        def __(smalls: list[int], blob: bytes) -> int:
            return sum(smalls) + len(blob)
        return __
"""
VALUE = "100030"


def checkpoint(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it: a process of its own (a hang fails, not blocks)."""
    return subprocess.run(
        [sys.executable, "-m", "checkpoint", *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=dict(os.environ, CP_CACHE_DIR=str(cwd / ".cache")),
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A taskfile whose DAG has been computed once."""
    write(tmp_path / "taskfile.py", TASKFILE)
    proc = checkpoint(tmp_path, "run", "--no-progress")
    assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr
    return tmp_path


def _clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Internal error" not in proc.stderr, proc.stderr
    assert "task code raised" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("anchor", "offset"),
    [(b"CREATE TRIGGER Settings_size_delete", 12), (b"CREATE TABLE Cache", 7),
     (b"CREATE TABLE Settings ( key", 27)],
    ids=["trigger", "cache-table", "settings-column"],
)
def test_flipped_byte_in_the_index_schema_is_moved_aside(project: Path, anchor: bytes, offset: int) -> None:
    """One flipped bit in a family's SQLite schema text (not UTF-8, or a column renamed)
    should be reported, the index moved aside, and the family's tasks recomputed."""
    db = project / ".cache" / "checkpoint" / "taskfile.small" / "cache.db"
    data = bytearray(db.read_bytes())
    at = data.index(anchor) + offset
    data[at] ^= 0x80
    db.write_bytes(bytes(data))
    proc = checkpoint(project, "run", "--no-progress", "-v")
    _clean(proc)
    assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr
    assert "warning: The index of taskfile.small" in proc.stderr and "is damaged" in proc.stderr
    assert proc.stderr.count("computing small") == 3  # the family was recomputed, once
    assert list(db.parent.glob("cache.db.damaged-*"))
    proc = checkpoint(project, "run", "--no-progress")
    assert proc.returncode == 0 and "Nothing to run" in proc.stderr, proc.stderr
    for command in (["ls"], ["cache", "ls"], ["cache", "verify"]):
        proc = checkpoint(project, *command)
        _clean(proc)
        assert proc.returncode == 0, (command, proc.stderr)


def test_damaged_index_found_by_verify_and_ls(project: Path) -> None:
    """`cache verify` and `ls` on a damaged index should report it and move it aside, not crash."""
    db = project / ".cache" / "checkpoint" / "taskfile.small" / "cache.db"
    data = bytearray(db.read_bytes())
    data[data.index(b"CREATE TRIGGER Settings_size_delete") + 12] ^= 0x80
    db.write_bytes(bytes(data))
    proc = checkpoint(project, "cache", "verify")
    _clean(proc)
    assert proc.returncode == 1 and "The index of taskfile.small" in proc.stderr
    assert "is damaged (text in it is not valid UTF-8)" in proc.stderr
    proc = checkpoint(project, "ls")
    _clean(proc)
    assert proc.returncode == 0


def test_non_utf8_format_file(project: Path) -> None:
    """A FORMAT file that is not UTF-8 should be a clear store error (exit 1), not a traceback."""
    fmt = project / ".cache" / "checkpoint" / "FORMAT"
    fmt.write_bytes(b"checkpoint-store \xff2\n")
    for command in (["run", "--no-progress"], ["ls"], ["cache", "verify"]):
        proc = checkpoint(project, *command)
        _clean(proc)
        assert proc.returncode == 1, proc.stderr
        assert f"Error: The cache at {fmt.parent} has a damaged FORMAT file ({fmt}: " in proc.stderr
        assert "Use another --cache-dir, or delete" in proc.stderr
    fmt.unlink()
    os.mkfifo(fmt)
    proc = checkpoint(project, "run", "--no-progress", timeout=30)
    assert proc.returncode == 1 and "it is a FIFO, not a regular file" in proc.stderr


def test_value_file_replaced_by_a_fifo(project: Path) -> None:
    """A value file replaced by a FIFO should never be opened for reading (which blocks for
    ever): the run recomputes it, `cache verify` names it and --repair removes it."""
    blobs = project / ".cache" / "checkpoint" / "taskfile.big" / "blobs"
    (blob,) = blobs.iterdir()
    blob.unlink()
    os.mkfifo(blob)
    proc = checkpoint(project, "run", "--no-progress", "big", timeout=30)
    _clean(proc)
    assert proc.returncode == 0, proc.stderr
    assert "it is a FIFO, not a regular file" in proc.stderr and "will be recomputed" in proc.stderr
    (blob,) = blobs.iterdir()
    blob.unlink()
    os.mkfifo(blob)
    proc = checkpoint(project, "cache", "verify", timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert ("The stored result of big() (taskfile.big) is missing or corrupt (its value file "
            "cannot be read: it is a FIFO, not a regular file)") in proc.stderr
    proc = checkpoint(project, "cache", "verify", "--repair", timeout=30)
    assert proc.returncode == 1 and not list(blobs.iterdir())
    proc = checkpoint(project, "run", "--no-progress", timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr


def test_index_replaced_by_a_fifo(project: Path) -> None:
    """A family index that is not a regular file should be moved aside like a damaged one."""
    db = project / ".cache" / "checkpoint" / "taskfile.small" / "cache.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    os.mkfifo(db)
    proc = checkpoint(project, "run", "--no-progress", timeout=30)
    _clean(proc)
    assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr
    assert "is damaged (it is a FIFO)" in proc.stderr


# --- no permission ---------------------------------------------------------------------

NOBODY = 65534
AS_NOBODY = """
import os, sys
# What the commands import lazily, while this process may still read the interpreter's files:
import mmap, sqlite3, json, difflib, diskcache, cloudpickle
import checkpoint.cli, checkpoint.scheduler, checkpoint.store, checkpoint.catalog, checkpoint.maintenance
import checkpoint.explain
import checkpoint.history, checkpoint.executors, checkpoint._worker, checkpoint.progress
from checkpoint.cli import cache, clear, ls, run
os.setgroups([])
os.setresgid({uid}, {uid}, {uid})
os.setresuid({uid}, {uid}, {uid})
sys.exit(checkpoint.cli.main(sys.argv[1:]))
"""


@pytest.fixture
def user_project() -> Iterator[tuple[Path, list[str]]]:
    """A computed project, and the command that runs the CLI as a user that file permissions
    apply to: this user, or (as root, who ignores permissions, like CI) uid 65534."""
    with tempfile.TemporaryDirectory(prefix="cp-perm-") as name:  # reachable by another user
        path = Path(name)
        write(path / "taskfile.py", TASKFILE)
        if os.geteuid() == 0:
            (path / "as_nobody.py").write_text(AS_NOBODY.format(uid=NOBODY))
            command = [sys.executable, str(path / "as_nobody.py")]
            for sub in [path, *path.rglob("*")]:
                os.chown(sub, NOBODY, NOBODY)
        else:
            command = [sys.executable, "-m", "checkpoint"]
        proc = subprocess.run([*command, "run", "--no-progress", "--executor", "inline"], cwd=path,
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, CP_CACHE_DIR=str(path / ".cache")))
        assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr
        try:
            yield path, command
        finally:
            for sub in [path, *path.rglob("*")]:
                os.chmod(sub, 0o700)


@pytest.mark.parametrize("locked", ["checkpoint", "checkpoint/taskfile.small"])
def test_directory_without_permission(user_project: tuple[Path, list[str]], locked: str) -> None:
    """`chmod 000` on the store or on a family's directory should give a clear error naming
    the path and what to do (exit 1) in every command, never a traceback."""
    path, command = user_project
    directory = path / ".cache" / locked
    directory.chmod(0)
    for args in (["run", "--no-progress", "--executor", "inline"], ["ls"], ["cache", "ls"],
                 ["cache", "du"], ["clear", "-y", "small"], ["cache", "verify"]):
        proc = subprocess.run([*command, *args], cwd=path, capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, CP_CACHE_DIR=str(path / ".cache")))
        _clean(proc)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Permission denied" in proc.stderr and str(directory) in proc.stderr, (args, proc.stderr)
        assert "Check the permissions (ls -l" in proc.stderr, (args, proc.stderr)


def test_unwritable_store_is_reported_before_anything_runs(user_project: tuple[Path, list[str]]) -> None:
    """A store you may read but not write (chmod 500), and a task of a new family to run:
    a clear error before any task runs, not a result computed and then thrown away."""
    path, command = user_project
    write(path / "extra.py", """
        from pathlib import Path
        from checkpoint import task

        @task
        def extra(i: int):
            def __() -> int:
                Path("extra-ran").touch()
                return i
            return __
    """)
    with open(path / "taskfile.py", "a") as f:
        f.write("\nfrom extra import extra\n")
    if os.geteuid() == 0:
        for sub in (path / "extra.py", path / "taskfile.py"):
            os.chown(sub, NOBODY, NOBODY)
    store = path / ".cache" / "checkpoint"
    store.chmod(0o500)
    proc = subprocess.run([*command, "run", "--no-progress", "--executor", "inline", "extra(3)"],
                          cwd=path, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CP_CACHE_DIR=str(path / ".cache")))
    _clean(proc)
    assert proc.returncode == 1, proc.stderr
    assert (f"Error: Cannot store the results of extra.extra: the cache at {store} is read-only "
            "(you may not write there)") in proc.stderr
    assert "nothing was run" in proc.stderr and not (path / "extra-ran").exists()
    proc = subprocess.run([*command, "run", "--no-progress", "--executor", "inline"], cwd=path,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CP_CACHE_DIR=str(path / ".cache")))
    assert proc.returncode == 0 and proc.stdout.strip() == VALUE, proc.stderr  # fresh: still served


def test_cache_dir_of_another_user_is_a_clear_error(user_project: tuple[Path, list[str]]) -> None:
    """CP_CACHE_DIR inside a directory you cannot enter should be a cache error naming it,
    not "task code raised"."""
    path, command = user_project
    closed = Path(tempfile.mkdtemp(prefix="cp-closed-"))
    try:
        closed.chmod(0o700)  # root's, or (as a user) made unreachable below
        if os.geteuid() != 0:
            closed.chmod(0)
        proc = subprocess.run([*command, "run", "--no-progress", "--executor", "inline"], cwd=path,
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, CP_CACHE_DIR=str(closed / "x")))
    finally:
        closed.chmod(0o700)
        closed.rmdir()
    _clean(proc)
    assert proc.returncode == 1, proc.stderr
    assert f"Error: Cannot use the cache directory {closed / 'x'}: Permission denied" in proc.stderr


def _read_only_mount(project: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script with the project's cache mounted read-only (in a user and mount
    namespace of its own: no root needed)."""
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c",
         'mount --bind .cache .cache && mount -o remount,bind,ro .cache || exit 99\n' + script],
        cwd=project, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, CP_CACHE_DIR=str(project / ".cache"), PY=sys.executable),
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount read-only in a user namespace here: {proc.stderr.strip()}")
    return proc


@pytest.mark.parametrize("log", ["with-wal", "closed-cleanly"])
def test_read_only_cache_serves_fresh_results(project: Path, log: str) -> None:
    """A cache on a read-only mount (an archived result set) should serve everything fresh:
    run, cache show, ls, why, verify; a task that would need to run is refused up front.
    Its indexes may still have their write-ahead logs, or none (closed cleanly)."""
    if log == "closed-cleanly":
        import sqlite3

        for db in (project / ".cache" / "checkpoint").glob("*/cache.db"):
            con = sqlite3.connect(db)  # the last connection to close removes the log
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.close()
            assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
    proc = _read_only_mount(project, """
        set -e
        "$PY" -m checkpoint run --no-progress main
        "$PY" -m checkpoint run --no-progress --executor process big > /dev/null
        "$PY" -m checkpoint cache show 'small(2)'
        "$PY" -m checkpoint ls > /dev/null
        "$PY" -m checkpoint why main
        "$PY" -m checkpoint cache verify
        "$PY" -m checkpoint run --no-progress 'small(7)' || echo "exit $?"
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == [VALUE, "20"]
    assert "Nothing to run: all 5 tasks reused" in proc.stderr
    assert "Checked 5 entries: all good." in proc.stderr
    assert proc.stdout.splitlines()[-1] == "exit 1"
    assert "Error: Cannot store the results of taskfile.small: the cache at " in proc.stderr
    assert "(it is on a read-only file system)" in proc.stderr and "computing small" not in proc.stderr
    assert "Traceback" not in proc.stderr and "readonly database" not in proc.stderr


@pytest.mark.faults
def test_random_bit_flips_in_a_family_index(project: Path) -> None:
    """Seeded random bit flips in a family's index (its first pages: header, schema, rows):
    every run should print the right value, and no command should end in a traceback."""
    import random
    import shutil

    rng = random.Random(16)
    cache = project / ".cache"
    pristine = project / "pristine"
    shutil.copytree(cache, pristine)
    db = Path("checkpoint") / "taskfile.small" / "cache.db"
    size = (pristine / db).stat().st_size
    flips = 60
    for _ in range(flips):
        shutil.rmtree(cache)
        shutil.copytree(pristine, cache)
        data = bytearray((cache / db).read_bytes())
        at = rng.randrange(min(size, 16384))
        data[at] ^= 1 << rng.randrange(8)
        (cache / db).write_bytes(bytes(data))
        for command in (["run", "--no-progress"], ["cache", "verify"], ["ls"], ["run", "--no-progress"]):
            proc = checkpoint(project, *command)
            _clean(proc)
            if command[0] == "run":
                assert proc.returncode == 0 and proc.stdout.strip() == VALUE, (at, proc.stderr)
    print(f"{flips} bit flips in a family index: every run right, no traceback")
