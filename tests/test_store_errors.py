"""A cache that cannot be used: clear errors naming the path, no traceback; 0700 directories."""

from __future__ import annotations

import os
import resource
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


def _run(runner: CliRunner, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """Run ``checkpoint ... run`` through main() (its exit-code mapping) in-process."""
    write(tmp_path / "taskfile.py", TASKFILE)
    argv = ["-f", str(tmp_path / "taskfile.py"), *args, "run", "--executor", "inline"]
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
    root.mkdir(parents=True)
    (root / "FORMAT").write_text("checkpoint-store 0\n")
    code, _, err = _run(runner, tmp_path, "--cache-dir", str(tmp_path / "old"))
    assert code == 1
    assert "another version of checkpoint" in err and str(root) in err
    assert "Traceback" not in err
    with pytest.raises(StoreVersionError, match=FORMAT):
        Store(tmp_path / "old")._ensure_root()


def test_cache_path_blocked_by_a_file(runner: CliRunner, tmp_path: Path) -> None:
    """A cache directory that cannot be created should name the path and exit 1 without a traceback."""
    (tmp_path / "afile").write_text("")
    code, _, err = _run(runner, tmp_path, "--cache-dir", str(tmp_path / "afile" / "cache"))
    assert code == 1
    assert f"Cannot use the cache directory {tmp_path / 'afile' / 'cache'}" in err
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
