"""Task output capture (every executor) and the run history kept in the store."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest

import checkpoint
from checkpoint import events as ev
from checkpoint.history import last_log, last_runs

TASKS = '''
import sys, time
from checkpoint import task, requires

@task
def talk(i: int, quiet: bool = False):
    def __():
        if not quiet:
            for k in range(3):
                print(f"talk {i} line {k}")
                time.sleep(0.002)
            print(f"talk {i} complains", file=sys.stderr)
        return i
    return __

@task
def talks(n: int):
    @requires([talk(i) for i in range(n)])
    def __(xs):
        return xs
    return __

LOUD = True

@task
def maybe():
    def __():
        if LOUD:
            print("maybe loud")
        return 0
    return __

@task
def flaky(fail: bool):
    def __():
        print("flaky starts")
        if fail:
            raise RuntimeError("flaky failed")
        return 1
    return __
'''


@pytest.fixture
def mod(make_module: Any) -> Any:
    return make_module("talkers", TASKS)


class Outputs:
    """Collects each finished task's output and worker."""

    def __init__(self) -> None:
        self.output: dict[str, str] = {}
        self.worker: dict[str, str] = {}

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, (ev.TaskFinished, ev.TaskFailed)):
            self.output[repr(event.task)] = event.output
            self.worker[repr(event.task)] = event.worker


def _expected(i: int) -> str:
    return "".join(f"talk {i} line {k}\n" for k in range(3)) + f"talk {i} complains\n"


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_each_tasks_output_is_captured_apart(mod: Any, executor: str, capfd: pytest.CaptureFixture[str]) -> None:
    """stdout and stderr of each task should be captured on its own, with every executor, and not leak."""
    outputs = Outputs()
    checkpoint.run([mod.talks(4)], executor=executor, max_workers=2, subscribers=[outputs])
    for i in range(4):
        assert outputs.output[f"talk({i})"] == _expected(i)
        assert last_log(mod.talk(i)) is not None
        log = last_log(mod.talk(i))
        assert log is not None and log.output == _expected(i) and log.status == "done"
    assert outputs.output["talks(4)"] == ""
    captured = capfd.readouterr()
    assert "talk 0" not in captured.out and "talk 0" not in captured.err


def test_process_workers_record_their_own_host_and_pid(mod: Any) -> None:
    """A task run in a worker process should record that worker's hostname:pid, not the coordinator's."""
    outputs = Outputs()
    checkpoint.run([mod.talk(1, quiet=True)], executor="process", max_workers=1, subscribers=[outputs])
    host, pid = outputs.worker["talk(1, quiet=True)"].rsplit(":", 1)
    assert host == socket.gethostname() and int(pid) != os.getpid()
    runs = last_runs([mod.talk(1, quiet=True)])
    assert runs[mod.talk(1, quiet=True).id].worker == f"{host}:{pid}"


def test_streams_are_restored_after_an_in_process_run(mod: Any) -> None:
    """After an inline or thread run, sys.stdout and sys.stderr should be the streams from before."""
    before = sys.stdout, sys.stderr
    checkpoint.run([mod.talks(2)], executor="thread", max_workers=2)
    assert (sys.stdout, sys.stderr) == before


def test_the_log_is_the_last_runs_output(mod: Any) -> None:
    """A re-run that prints nothing should leave an empty log, not the previous run's output."""
    checkpoint.run([mod.maybe()], executor="inline")
    first = last_log(mod.maybe())
    assert first is not None and first.output == "maybe loud\n"
    mod.LOUD = False
    checkpoint.run([mod.maybe()], executor="inline", force=True)
    silent = last_log(mod.maybe())
    assert silent is not None and silent.output == "" and silent.started >= first.started


def test_failed_runs_are_recorded_then_superseded(mod: Any) -> None:
    """A failure should be the last run (output and traceback) until the task succeeds again."""
    flaky = mod.flaky(True)
    with pytest.raises(RuntimeError):
        checkpoint.run([flaky], executor="process", max_workers=1)
    log = last_log(flaky)
    assert log is not None and log.status == "failed"
    assert log.output == "flaky starts\n"
    assert "RuntimeError: flaky failed" in log.traceback and "talkers.py" in log.traceback
    assert last_runs([flaky])[flaky.id].status == "failed"
    assert last_log(mod.flaky(False)) is None
    checkpoint.run([mod.flaky(False)], executor="inline")
    ok = last_log(mod.flaky(False))
    assert ok is not None and ok.status == "done" and ok.ended >= ok.started


def test_clearing_a_task_drops_its_log(mod: Any) -> None:
    """Task.clear() should remove the entry's log with it."""
    checkpoint.run([mod.talk(3)], executor="inline")
    mod.talk(3).clear()
    assert last_log(mod.talk(3)) is None


def test_huge_output_keeps_its_end(make_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output beyond the per-task limit should keep its last part and say how much was dropped."""
    from checkpoint import _worker

    monkeypatch.setattr(_worker, "OUTPUT_LIMIT", 100)
    mod = make_module("chatty", """
        from checkpoint import task

        @task
        def chatty():
            def __():
                for i in range(1000):
                    print(f"line {i:04d}")
                return 0
            return __
    """)
    checkpoint.run([mod.chatty()], executor="inline")
    log = last_log(mod.chatty())
    assert log is not None
    head, _, kept = log.output.partition("\n")
    assert head == "[checkpoint: the first 9,900 characters of output were dropped]"
    assert len(kept) == 100 and kept.endswith("line 0999\n")


def test_plan_last_runs_matches_last_runs(mod: Any) -> None:
    """The plan-based history (for `checkpoint ls`) should agree with last_runs, failures included."""
    from checkpoint.graph import plan
    from checkpoint.history import plan_last_runs
    from checkpoint.store import Store

    checkpoint.run([mod.talks(2), mod.flaky(True)], executor="inline", keep_going=True,
                   raise_on_failure=False)
    the_plan = plan([mod.talks(2), mod.flaky(True)], Store.open())
    runs = plan_last_runs(the_plan, Store.open())
    assert runs == last_runs([n.task for n in the_plan.nodes.values()])
    assert runs[mod.flaky(True).id].status == "failed" and runs[mod.talk(0).id].status == "done"
    assert len(runs) == 4
