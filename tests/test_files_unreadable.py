"""Input files that exist but cannot be read: a clear error before anything runs, never a
traceback nor a manifest that silently leaves them out.

The tests run as root in CI, where permission bits stop nothing: a file root cannot read
either is a link to ``/proc/self/mem`` (reading its first page fails with EIO, Linux).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint import File, requires, task
from checkpoint.cli import cli
from checkpoint.errors import UnreadableInputError

UNREADABLE = "/proc/self/mem"

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists(UNREADABLE),
    reason="needs /proc/self/mem, a file nobody can read from its start",
)

TASKFILE = '''
from pathlib import Path

from checkpoint import File, requires, task


@task
def count(path: str):
    @requires(File(path))
    def __(data: Path) -> int:
        return len(list(data.iterdir())) if data.is_dir() else 1
    return __
'''


def _data_with_unreadable_file() -> None:
    Path("data/sub").mkdir(parents=True)
    Path("data/a.csv").write_text("a\n")
    os.symlink(UNREADABLE, "data/sub/x.csv")


@task
def count(path: str):
    @requires(File(path))
    def __(data: Path) -> int:
        return len(list(data.iterdir())) if data.is_dir() else 1
    return __


@linux_only
def test_an_unreadable_file_in_a_directory_input_is_an_error_naming_task_and_path() -> None:
    """A file under a directory input that cannot be read should stop the run before anything
    runs, naming the task, the file and the reason; nothing is stored."""
    _data_with_unreadable_file()
    with pytest.raises(UnreadableInputError) as info:
        checkpoint.run([count("data")], executor="inline")
    message = str(info.value)
    assert "data/sub/x.csv" in message and "count('data')" in message
    assert "Input/output error" in message
    assert info.value.paths == ["data/sub/x.csv"]
    assert isinstance(info.value, OSError)
    os.unlink("data/sub/x.csv")
    assert checkpoint.run([count("data")], executor="inline").ran  # nothing was stored


@linux_only
def test_an_unreadable_file_input_is_an_error() -> None:
    """A single File() that cannot be read: the same error, not a traceback."""
    os.symlink(UNREADABLE, "x.csv")
    with pytest.raises(UnreadableInputError, match=r"x\.csv \(Input/output error\), needed by Task count\('x.csv'\)"):
        checkpoint.run([count("x.csv")], executor="inline")


@linux_only
def test_the_command_line_reports_an_unreadable_input_without_a_traceback(
    tmp_path: Path, runner: CliRunner
) -> None:
    """`checkpoint run` exits 2 with the message; `ls` and `why` say why the task cannot run."""
    (tmp_path / "taskfile.py").write_text(TASKFILE)
    _data_with_unreadable_file()
    result = runner.invoke(cli, ["run", "count('data')"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr
    assert "1 unreadable input file, so nothing was run:" in result.stderr
    assert "data/sub/x.csv (Input/output error), under File('data'), needed by Task count('data')" in result.stderr
    ls = runner.invoke(cli, ["ls", "count('data')"])
    assert ls.exit_code == 0 and "input missing" in ls.stdout, ls.output
    why = runner.invoke(cli, ["why", "count('data')"])
    assert "data/sub/x.csv cannot be read" in why.stdout, why.output


def test_an_unlistable_subdirectory_is_an_error_not_an_empty_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A directory under the input that cannot be listed must not count as empty (its files
    would be silently left out of the manifest)."""
    Path("data/locked").mkdir(parents=True)
    Path("data/locked/x.csv").write_text("x\n")
    Path("data/a.csv").write_text("a\n")
    listdir = os.listdir

    def refusing(path: str | os.PathLike[str] = ".") -> list[str]:
        if os.fspath(path) == "data/locked":
            raise PermissionError(13, "Permission denied", "data/locked")
        return listdir(path)

    monkeypatch.setattr(os, "listdir", refusing)
    with pytest.raises(UnreadableInputError, match=r"data/locked \(Permission denied\)"):
        checkpoint.run([count("data")], executor="inline")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_an_error() -> None:
    """chmod 000: the same error, naming the file."""
    _data_with_unreadable_file()
    os.unlink("data/sub/x.csv")
    Path("data/sub/x.csv").write_text("x\n")
    os.chmod("data/sub/x.csv", 0)
    try:
        with pytest.raises(UnreadableInputError, match=r"data/sub/x\.csv \(Permission denied\)"):
            checkpoint.run([count("data")], executor="inline")
    finally:
        os.chmod("data/sub/x.csv", 0o644)


@linux_only
def test_an_output_that_cannot_be_read_fails_its_task_or_reruns_it(runner: CliRunner) -> None:
    """A declared output whose digest cannot be taken: the task that wrote it so fails with
    a MissingOutputError saying why; one found so when planning runs again (and rewrites it)."""
    from checkpoint import MissingOutputError, Product

    @task
    def write(bad: bool):
        @requires(Product(f"out/{bad}.txt"))
        def __(out: Path) -> int:
            if bad:
                os.symlink(UNREADABLE, out)
            else:
                out.write_text("ok\n")
            return 1
        return __

    with pytest.raises(MissingOutputError, match=r"cannot be read \(Input/output error\)"):
        write(True).run(executor="inline")
    assert write(False).run(executor="inline") == 1
    os.unlink("out/False.txt")
    os.symlink(UNREADABLE, "out/False.txt")
    from checkpoint.explain import explain
    from checkpoint.graph import plan
    from checkpoint.store import Store

    [why] = explain(plan([write(False)], Store.open()), Store.open())
    assert why.details == ["output file out/False.txt cannot be read"]
    assert checkpoint.run([write(False)], executor="inline").ran
    assert Path("out/False.txt").read_text() == "ok\n"
