"""Debugging from the command line: --pdb, --trace, breakpoint(), --show-locals (real terminals)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from checkpoint.cli import cli
from checkpoint.store import Store

pexpect = pytest.importorskip("pexpect")

TASKFILE = '''
from checkpoint import task, requires

@task
def base(n: int):
    def __() -> int:
        return n * 10
    return __

@task
def divide(n: int):
    @requires(base(n))
    def __(value: int) -> float:
        denominator = n - 3
        return value / denominator
    return __

@task
def stop():
    def __() -> int:
        x = 41
        breakpoint()
        return x + 1
    return __

@task
def main():
    @requires([divide(n) for n in range(5)])
    def __(values):
        return sum(values)
    return __
'''

CHECKPOINT = str(Path(sys.executable).parent / "checkpoint")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
    return tmp_path


def _spawn(project: Path, *args: str) -> Any:
    env = {**os.environ, "CP_CACHE_DIR": str(project / ".cache"), "PYTHONBREAKPOINT": ""}
    env.pop("NO_COLOR", None)
    return pexpect.spawn(CHECKPOINT, list(args), cwd=str(project), env=env, encoding="utf-8",
                         timeout=120, dimensions=(40, 120))


def _stored(project: Path, family: str, task_id: str) -> bool:
    store = Store(project / ".cache")
    try:
        return store.get_meta(family, task_id) is not None
    finally:
        store.close()


def test_pdb_opens_post_mortem_at_the_failing_line(project: Path) -> None:
    """--pdb should stop at the raising line with the task's locals; q ends with exit 1."""
    child = _spawn(project, "run", "--pdb", "-j", "2", "--no-progress")
    child.expect(r"taskfile\.py\(15\)__\(\)")
    child.expect(r"-> return value / denominator")
    child.expect_exact("(Pdb)")
    child.sendline("p denominator, value")
    child.expect_exact("(0, 30)")
    child.expect_exact("(Pdb)")
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    sys.path.insert(0, str(project))
    import taskfile

    try:
        assert not _stored(project, taskfile.divide.dirname, taskfile.divide(3).id)
        assert _stored(project, taskfile.divide.dirname, taskfile.divide(4).id)
    finally:
        sys.path.remove(str(project))


def test_trace_stops_at_the_first_line_then_stores_the_result(project: Path) -> None:
    """--trace TARGET should build prerequisites, stop at TARGET's first line, and store on c."""
    child = _spawn(project, "run", "--trace", "divide(4)", "--no-progress")
    child.expect(r"-> denominator = n - 3")
    child.expect_exact("(Pdb)")
    child.sendline("n")
    child.expect(r"-> return value / denominator")
    child.sendline("p denominator")
    child.expect_exact("1")
    child.sendline("c")
    child.expect_exact("40.0")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_breakpoint_in_an_inline_task_reaches_the_terminal(project: Path) -> None:
    """breakpoint() with --executor inline should stop in the task (the live display steps aside)."""
    child = _spawn(project, "run", "stop", "--executor", "inline")
    child.expect(r"-> return x \+ 1")
    child.expect_exact("(Pdb)")
    child.sendline("p x")
    child.expect_exact("41")
    child.sendline("c")
    child.expect(r"\b42\b")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_breakpoint_in_a_worker_process_is_a_clear_error(project: Path, runner: CliRunner) -> None:
    """breakpoint() in a process worker should fail the task with a message saying what to do."""
    result = runner.invoke(cli, ["run", "stop", "--no-progress"])
    assert result.exit_code == 1
    assert "breakpoint() was called in a task running in a worker process" in result.stderr
    assert "--executor inline" in result.stderr


def test_show_locals_adds_each_frames_variables(project: Path, runner: CliRunner) -> None:
    """--show-locals should print the failing frame's local variables."""
    result = runner.invoke(cli, ["run", "divide(3)", "--no-progress", "--show-locals"])
    assert result.exit_code == 1
    assert "denominator = 0" in result.stderr and "value = 30" in result.stderr
    plain = runner.invoke(cli, ["run", "divide(3)", "--no-progress"])
    assert "denominator = 0" not in plain.stderr
