"""A task that cannot be pickled for a worker process (its inner function or instance holds a
lock, a client, a generator) and is not rebuilt in the worker fails alone, clearly: the
other tasks of its batch run and are stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import write

import checkpoint
from checkpoint.cli import main
from checkpoint.errors import UnpicklableTaskError
from checkpoint.taskfile import load_taskfile

TASKS = """
import threading
from checkpoint import requires, task

@task
def plain(n):
    def __():
        return n * 10
    return __

@task(version="1")  # the lock cannot be fingerprinted either
class Locked:
    def __init__(self, n):
        self.n = n
        self.gate = threading.Lock()
    def run(self):
        with self.gate:
            return self.n

@task(version="1")
def upon(t):  # its argument holds a task: never rebuilt in the worker
    gate = threading.Lock()
    @requires(t)
    def __(p):
        with gate:
            return p + 1
    return __

@task
def everything():
    @requires([plain(1), plain(2), Locked(1), upon(plain(3)), plain(4)])
    def __(values):
        return values
    return __
"""


@pytest.fixture
def tasks(tmp_path: Path) -> Any:
    return load_taskfile(write(tmp_path / "taskfile.py", TASKS))


def test_only_the_unpicklable_tasks_fail_and_say_why(tasks: Any) -> None:
    result = checkpoint.run([tasks.everything()], executor="processes", keep_going=True,
                            raise_on_failure=False)
    failed = {repr(result.plan.nodes[tid].task): err for tid, err in result.failed.items()}
    assert set(failed) == {"Locked(1)", "upon(plain(3))"}
    for err in failed.values():
        assert isinstance(err, UnpicklableTaskError) and isinstance(err, TypeError)
        assert "cannot pickle '_thread.lock' object" in str(err)
        assert "--executor threads" in str(err)
    assert "holds self.gate, which cannot be pickled" in str(failed["Locked(1)"])
    assert "Task upon(plain(3)) (taskfile.upon)" in str(failed["upon(plain(3))"])
    assert "holds 'gate', which cannot be pickled" in str(failed["upon(plain(3))"])
    # Its batch-mates (plain(3) was to hand its value over to upon in one batch) ran.
    assert {repr(t) for t in result.ran} == {"plain(1)", "plain(2)", "plain(3)", "plain(4)"}
    # On threads nothing is pickled: the failed ones run now, the others are reused.
    again = checkpoint.run([tasks.everything()], executor="threads")
    assert {repr(t) for t in again.ran} == {"Locked(1)", "upon(plain(3))", "everything()"}
    assert again.values[tasks.everything().id] == [10, 20, 1, 31, 40]


def test_the_command_line_exits_1_with_the_message(
    tasks: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--executor", "processes", "-k", "Locked(5)", "plain(5)"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "UnpicklableTaskError: Task Locked(5) (taskfile.Locked) cannot be sent" in err
    assert "Traceback" not in err
    assert checkpoint.run([tasks.plain(5)], executor="inline").ran == []  # stored
