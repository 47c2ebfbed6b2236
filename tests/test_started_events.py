"""TaskStarted means a worker has the task: a batch queued behind a running one (prefetch)
is not shown as running."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

import checkpoint
from checkpoint import events as ev

SOURCE = """
import time
from checkpoint import task, requires

@task
def slow(i: int):
    def __() -> int:
        time.sleep(0.2)
        return i
    return __

@task
def main():
    @requires([slow(i) for i in range(4)])
    def __(xs: list[int]) -> int:
        return sum(xs)
    return __
"""


@pytest.mark.parametrize(("executor", "workers"), [("process", 1), ("thread", 1), ("thread", 2)])
def test_no_more_tasks_running_than_workers(
    make_module: Callable[[str, str], ModuleType], executor: str, workers: int
) -> None:
    mod = make_module("started", SOURCE)
    running: set[str] = set()
    most = 0
    started = 0

    def watch(event: ev.Event) -> None:
        nonlocal most, started
        if isinstance(event, ev.TaskStarted):
            running.add(event.task.id)
            started += 1
            most = max(most, len(running))
        elif isinstance(event, (ev.TaskFinished, ev.TaskFailed)):
            running.discard(event.task.id)

    result = checkpoint.run([mod.main()], executor=executor, max_workers=workers,
                            subscribers=[watch])
    assert result.values[mod.main().id] == 6
    assert started == 5
    assert most == workers
