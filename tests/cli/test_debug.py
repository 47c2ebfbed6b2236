"""Debugging from the command line: --pdb, --trace, breakpoint(), --show-locals (real terminals)."""

from __future__ import annotations

import os
import re
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
def outer():
    def __() -> float:
        print("starting outer")
        return divide(3).run(executor="inline") + 1
    return __

@task
def main():
    @requires([divide(n) for n in range(5)])
    def __(values):
        return sum(values)
    return __
'''

CHECKPOINT = str(Path(sys.executable).parent / "checkpoint")
# Generous: a loaded CI machine can take seconds to start a worker pool; a hang still fails.
TIMEOUT = 120


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
    return tmp_path


def _spawn(project: Path, *args: str) -> Any:
    env = {**os.environ, "CP_CACHE_DIR": str(project / ".cache"), "PYTHONBREAKPOINT": ""}
    env.pop("NO_COLOR", None)
    return pexpect.spawn(CHECKPOINT, list(args), cwd=str(project), env=env, encoding="utf-8",
                         timeout=TIMEOUT, dimensions=(40, 120))


def _finish(child: Any) -> int:
    """Wait for the process to end; its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def _stored(project: Path, expression: str) -> bool:
    """Whether the cache of ``project`` holds a result for the task ``expression``."""
    from checkpoint.taskfile import load_taskfile, resolve_target

    task = resolve_target(load_taskfile(project / "taskfile.py"), expression)
    store = Store(project / ".cache")
    try:
        return store.get_meta(task.family.dirname, task.id) is not None
    finally:
        store.close()


@pytest.mark.parametrize("command", ["q", "c"])
def test_pdb_opens_post_mortem_at_the_failing_line(project: Path, command: str) -> None:
    """--pdb should stop at the raising line with the task's locals; q or c ends with exit 1."""
    child = _spawn(project, "run", "--pdb", "-j", "2", "--no-progress")
    child.expect(r"taskfile\.py\(15\)__\(\)")
    child.expect(r"-> return value / denominator")
    child.expect_exact("(Pdb)")
    child.sendline("p denominator, value")
    child.expect_exact("(0, 30)")
    child.expect_exact("(Pdb)")
    child.sendline(command)
    assert _finish(child) == 1
    assert not _stored(project, "divide(3)")
    assert not _stored(project, "main()")
    assert _stored(project, "base(3)")


def test_trace_stops_at_the_first_line_then_stores_the_result(project: Path) -> None:
    """--trace TARGET should build prerequisites, stop at TARGET's first line, and store on c."""
    child = _spawn(project, "run", "--trace", "divide(4)", "--no-progress")
    child.expect(r"-> denominator = n - 3")
    child.expect_exact("(Pdb)")
    child.sendline("n")
    child.expect(r"-> return value / denominator")
    child.expect_exact("(Pdb)")
    child.sendline("p denominator, value")
    child.expect_exact("(1, 40)")
    child.expect_exact("(Pdb)")
    child.sendline("c")
    child.expect(r"\b40\.0\b")
    assert _finish(child) == 0
    assert _stored(project, "divide(4)")


def test_quitting_trace_stores_nothing(project: Path) -> None:
    """q under --trace should end the run with exit 1, say so, and store nothing of the task."""
    child = _spawn(project, "run", "--trace", "divide(4)", "--no-progress")
    child.expect(r"-> denominator = n - 3")
    child.expect_exact("(Pdb)")
    child.sendline("q")
    child.expect(r"Task divide\(4\) \(taskfile\.divide\) did not finish: You quit the debugger")
    assert _finish(child) == 1
    assert not _stored(project, "divide(4)")
    assert _stored(project, "base(4)")


def test_trace_of_a_failing_task_opens_post_mortem_then_reports(project: Path) -> None:
    """A traced task that raises should stop where it raised, then report the failure (exit 1)."""
    child = _spawn(project, "run", "--trace", "divide(3)", "--no-progress")
    child.expect(r"-> denominator = n - 3")
    child.expect_exact("(Pdb)")
    child.sendline("c")
    child.expect(r"-> return value / denominator")
    child.expect_exact("(Pdb)")
    child.sendline("q")
    child.expect(r"Task divide\(3\) \(taskfile\.divide\) failed: ZeroDivisionError")
    assert _finish(child) == 1
    assert not _stored(project, "divide(3)")


def test_breakpoint_in_an_inline_task_reaches_the_terminal(project: Path) -> None:
    """breakpoint() with --executor inline should stop in the task (the live display steps aside)."""
    child = _spawn(project, "run", "stop", "--executor", "inline")
    child.expect(r"-> return x \+ 1")
    child.expect_exact("(Pdb)")
    child.sendline("p x * 1000")
    child.expect_exact("41000")
    child.expect_exact("(Pdb)")
    child.sendline("c")
    child.expect(r"\b42\b")
    assert _finish(child) == 0
    assert _stored(project, "stop()")


def test_breakpoint_in_a_worker_process_is_a_clear_error(project: Path, runner: CliRunner) -> None:
    """breakpoint() in a process worker should fail the task with a message saying what to do."""
    result = runner.invoke(cli, ["run", "stop", "--no-progress"])
    assert result.exit_code == 1
    assert "breakpoint() was called in a task running in a worker process" in result.stderr
    assert "--executor inline" in result.stderr


def test_failure_report_shows_user_frames_and_folds_engine_frames(
    project: Path, runner: CliRunner
) -> None:
    """A failure should show the task, its output and user frames, engine frames as one line."""
    result = runner.invoke(cli, ["run", "outer", "--no-progress"])
    assert result.exit_code == 1
    report = result.stderr[result.stderr.index("Task outer() (taskfile.outer) failed"):]
    assert "ZeroDivisionError: division by zero" in report
    assert "Captured output:\n  starting outer\n" in report
    frames = [line.strip() for line in report.splitlines() if line.startswith(("  File ", "  [..."))]
    taskfile = project / "taskfile.py"
    assert len(frames) == 3, report
    lines = textwrap.dedent(TASKFILE).splitlines()
    outer_line = 1 + next(i for i, line in enumerate(lines) if "divide(3).run(" in line)
    assert frames[0] == f'File "{taskfile}", line {outer_line}, in __'
    assert re.fullmatch(r"\[\.\.\. \d+ checkpoint frames? hidden \.\.\.\]", frames[1]), report
    assert frames[2] == f'File "{taskfile}", line 15, in __'
    assert 'return divide(3).run(executor="inline") + 1' in report
    assert "scheduler.py" not in report and "_worker.py" not in report


def test_show_locals_adds_each_frames_variables(project: Path, runner: CliRunner) -> None:
    """--show-locals should print each user frame's local variables under that frame."""
    result = runner.invoke(cli, ["run", "divide(3)", "--no-progress", "--show-locals"])
    assert result.exit_code == 1
    frame = result.stderr[result.stderr.index(f'File "{project / "taskfile.py"}", line 15'):]
    assert re.search(r"denominator = 0\n\s+n = 3\n\s+value = 30\nZeroDivisionError", frame), frame
    plain = runner.invoke(cli, ["run", "divide(3)", "--no-progress"])
    assert "denominator = 0" not in plain.stderr
    assert "return value / denominator" in plain.stderr


def test_trace_messages_say_what_ran(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--trace with reused prerequisites should not end on "Nothing to run" alone: it should say
    the traced task ran under the debugger, then summarize the targets."""
    from checkpoint import debug

    monkeypatch.chdir(project)
    monkeypatch.setattr(debug, "trace_call", lambda fn, *args: fn(*args))
    runner = CliRunner()
    assert runner.invoke(cli, ["run", "base(4)", "--no-progress"]).exit_code == 0
    result = runner.invoke(cli, ["run", "--trace", "divide(4)", "--no-progress"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "Prerequisites of divide(4):"
    assert lines[1].startswith("Nothing to run: 1 task reused")
    assert lines[2] == "divide(4) ran under the debugger and is stored. The targets:"
    assert lines[3].startswith("Nothing to run: all 2 tasks reused")
    assert result.stdout.strip() == "40.0"
