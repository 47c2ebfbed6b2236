"""A cache that cannot be used: clear errors naming the path, no traceback; 0700 directories."""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write

from checkpoint.cli import main
from checkpoint.errors import StoreVersionError
from checkpoint.store import FORMAT, Store

TASKFILE = """
    from checkpoint import task

    @task
    def main():
        def __():
            return b"x" * 3_000_000
        return __
"""


def _run(runner: CliRunner, tmp_path: Path, *args: str, command: tuple[str, ...] = ("run",)
         ) -> tuple[int, str, str]:
    """Run ``checkpoint ... run`` (or another command) through main() (its exit-code mapping)
    in-process."""
    write(tmp_path / "taskfile.py", TASKFILE)
    argv = ["-f", str(tmp_path / "taskfile.py"), *args, *command]
    if command == ("run",):
        argv += ["--executor", "inline"]
    code: int | str | None = 0
    with runner.isolation() as (out, err, *_):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code
    assert isinstance(code, int)
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_cache_directory_is_private(runner: CliRunner, tmp_path: Path) -> None:
    """A new cache directory and its store root should be readable by the owner only (0700)."""
    code, _, err = _run(runner, tmp_path, "--cache-dir", str(tmp_path / "new-cache"))
    assert code == 0, err
    for path in (tmp_path / "new-cache", tmp_path / "new-cache" / "checkpoint"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_store_version_mismatch_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    """A cache written by another store format should fail with what to do, exit 1, no traceback."""
    root = tmp_path / "old" / "checkpoint"
    assert _run(runner, tmp_path, "--cache-dir", str(tmp_path / "old"))[0] == 0
    for store in Store._open_stores.values():  # a new process, as it were
        store.close()
    Store._open_stores.clear()
    (root / "FORMAT").write_text("checkpoint-store 0\n")
    for command in [("run",), ("ls",), ("ls", "main"), ("clear", "-y", "main"), ("cache", "ls"),
                    ("cache", "verify"), ("log", "main")]:
        code, _, err = _run(runner, tmp_path, "--cache-dir", str(tmp_path / "old"), command=command)
        assert code == 1, (command, err)
        assert "another version of checkpoint" in err and str(root) in err, command
        assert "Use another --cache-dir, or delete" in err and "Traceback" not in err
    assert (root / "taskfile.main" / "cache.db").exists()  # nothing was removed
    with pytest.raises(StoreVersionError, match=FORMAT):
        Store(tmp_path / "old").tree.ensure()


def test_cache_path_blocked_by_a_file(runner: CliRunner, tmp_path: Path) -> None:
    """A cache directory under a file is bad input: exit 2 naming the path and the file,
    without a traceback (the exit-code table)."""
    (tmp_path / "afile").write_text("")
    code, _, err = _run(runner, tmp_path, "--cache-dir", str(tmp_path / "afile" / "cache"))
    assert code == 2
    assert (f"The cache directory {tmp_path / 'afile' / 'cache'} is inside the file "
            f"{tmp_path / 'afile'}") in err
    assert "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_cache_directory(runner: CliRunner, tmp_path: Path) -> None:
    """A read-only cache directory should give a clear error naming it."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        code, _, err = _run(runner, tmp_path, "--cache-dir", str(ro / "cache"))
    finally:
        ro.chmod(0o700)
    assert code == 1 and str(ro / "cache") in err and "Traceback" not in err


def test_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    """Running out of space while storing should name the cache path, exit 1, without a traceback."""
    write(tmp_path / "taskfile.py", TASKFILE)

    def small_files() -> None:  # files cannot grow past 1 MB: writing the value fails
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    proc = subprocess.run(
        [sys.executable, "-m", "checkpoint", "run", "--executor", "inline"], cwd=tmp_path,
        env=dict(os.environ, CP_CACHE_DIR=str(tmp_path / ".cache")), preexec_fn=small_files,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert f"Cannot write to the cache at {tmp_path / '.cache' / 'checkpoint'}" in proc.stderr
    assert "Traceback" not in proc.stderr


SMALL_TASKS = """
    import os
    from checkpoint import requires, task

    @task
    def big():
        def __():
            return os.urandom(3_000_000)
        return __

    @task
    def small(i):
        def __():
            return os.urandom(2_000)
        return __

    @task
    def many():
        @requires([small(i) for i in range(600)])
        def __(values):
            return len(values)
        return __
"""


def _on_tmpfs(tmp_path: Path, options: str, target: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run a target with its cache on a fresh tmpfs mounted with ``options`` (in a user and
    mount namespace of its own: no root needed); return the run and how many value files it
    left there."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    write(tmp_path / "taskfile.py", SMALL_TASKS)
    script = (
        f'mount -t tmpfs -o {options} tmpfs "$0" || exit 99\n'
        '"$@"; rc=$?\n'
        'echo "value files left: $(find "$0" -name "*.bin" | wc -l)" >&2\n'
        "exit $rc\n"
    )
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(mnt), sys.executable, "-m", "checkpoint",
         "run", "--no-progress", "-j", "2", target],
        cwd=tmp_path, env=dict(os.environ, CP_CACHE_DIR=str(mnt / "cache")),
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()}")
    return proc, int(proc.stderr.rsplit("value files left: ", 1)[1].split()[0])


@pytest.mark.parametrize(
    ("size", "target", "message"),
    [("1m", "big", "No space left on device"), ("300k", "many", "database or disk is full")],
    ids=["value-file", "index"],
)
def test_really_full_disk_is_a_clear_error(tmp_path: Path, size: str, target: str, message: str) -> None:
    """A cache on a full filesystem should fail naming the path and what to do, leaving no partial files."""
    proc, left = _on_tmpfs(tmp_path, f"size={size}", target)
    assert proc.returncode == 1, proc.stderr
    cache = tmp_path / "tiny" / "cache" / "checkpoint"
    assert f"Error: Cannot write to the cache at {cache}/taskfile." in proc.stderr
    assert message in proc.stderr and "Free some space or choose another --cache-dir." in proc.stderr
    assert "Traceback" not in proc.stderr
    assert left == 0  # a value file that could not be written completely is removed


def test_read_only_filesystem_is_a_clear_error(tmp_path: Path) -> None:
    """A cache on a read-only filesystem should fail naming the path (even for root), exit 1."""
    proc, _ = _on_tmpfs(tmp_path, "ro", "many")
    assert proc.returncode == 1, proc.stderr
    assert f"Error: Cannot use the cache directory {tmp_path / 'tiny' / 'cache'}: Read-only file system." in proc.stderr
    assert "Choose a writable location with --cache-dir or CP_CACHE_DIR." in proc.stderr
    assert "Traceback" not in proc.stderr


PROJECT_PATHS = """
    import os
    from checkpoint import task

    @task
    def where():
        def __():
            return {"file": os.path.abspath("in.txt"), "tags": {"b", "a", "c"}}
        return __
"""


def test_a_cache_older_versions_cannot_read_is_marked_for_them(tmp_path: Path) -> None:
    """Values holding project paths (or sets) are stored with references that versions
    before format 3 cannot decode (a task of theirs failed with "unknown persistent id"):
    the cache says format 3, which they refuse cleanly. A cache of format 2 is read as it
    is, and marked 3 once opened."""
    import checkpoint
    from checkpoint.taskfile import load_taskfile

    (tmp_path / "in.txt").write_text("x")
    tasks = load_taskfile(write(tmp_path / "taskfile.py", PROJECT_PATHS))
    value = tasks.where().run(executor="inline")
    root = tmp_path / ".cache" / "checkpoint"
    assert (root / "FORMAT").read_text().strip() not in ("checkpoint-store 2", "")
    assert (root / "FORMAT").read_text().strip() == FORMAT == "checkpoint-store 3"
    for store in Store._open_stores.values():  # a new process, as it were
        store.close()
    Store._open_stores.clear()
    (root / "FORMAT").write_text("checkpoint-store 2\n")  # as a format-2 version left it
    again = checkpoint.run([tasks.where()], executor="inline")
    assert not again.ran and again.values[tasks.where().id] == value
    assert (root / "FORMAT").read_text().strip() == FORMAT
