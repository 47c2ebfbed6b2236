"""A dying worker fails only its own task; limits never leak; retries re-run failing tasks."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write
from faultkit import executions, wait_dead, worker_pids

import checkpoint
from checkpoint import events as ev
from checkpoint.cli import cli
from checkpoint.errors import TaskFailedError, WorkerDiedError
from checkpoint.store import Store

SOURCE = """
    import os, signal, time
    from checkpoint import requires, task

    LOG = os.environ["CP_EXEC_LOG"]

    def _log(text):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{text} {os.getpid()}\\n".encode())
        os.close(fd)

    @task(queue="q")
    def job(i, how):
        def __():
            if i == 13:
                if how in ("exit", "exit-only"):
                    os._exit(3)
                if how == "segv":
                    import faulthandler
                    faulthandler.disable()  # pytest's, inherited by the fork: no dump
                    os.kill(os.getpid(), signal.SIGSEGV)
                if how == "kill":  # what the out-of-memory killer does
                    os.kill(os.getpid(), signal.SIGKILL)
                if how == "exit-twice":  # dies in its batch, again alone, then succeeds
                    fd = os.open(LOG + ".died", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                    os.write(fd, b"x")
                    os.close(fd)
                    if os.path.getsize(LOG + ".died") <= 2:
                        os._exit(3)
            if i == 5 and how not in ("exit-only", "cancel", "exit-twice"):
                raise ValueError("job 5 fails")
            _log(f"job({i})")
            time.sleep(0.002)
            return i
        return __

    @task
    def main(how):
        @requires([job(i, how) for i in range(24)])
        def __(values):
            return sum(values)
        return __
"""


@pytest.fixture
def m(make_module: Callable[[str, str], ModuleType], tmp_path: Path,
      monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CP_EXEC_LOG", str(tmp_path / "exec.log"))
    return make_module("death_tasks", SOURCE)


@pytest.mark.parametrize("how", ["exit", "segv", "kill"])
@pytest.mark.parametrize("limit", [None, 1], ids=["no-limit", "limit-1"])
def test_worker_death_fails_only_its_task(m: ModuleType, tmp_path: Path, how: str, limit: int | None) -> None:
    """With keep-going, only the task that killed its worker fails ("worker died"); the rest run."""
    limits = {"q": limit} if limit else None
    result = checkpoint.run([m.main(how)], executor="process", max_workers=2, keep_going=True,
                            rate_limits=limits, raise_on_failure=False)
    failed = {result.plan.nodes[tid].task.expression(): err for tid, err in result.failed.items()}
    assert set(failed) == {f"job(13, {how!r})", f"job(5, {how!r})"}
    died = failed[f"job(13, {how!r})"]
    assert isinstance(died, WorkerDiedError) and "worker died" in str(died) and "job(13" in str(died)
    assert isinstance(failed[f"job(5, {how!r})"], ValueError)
    assert len(result.ran) == 22 and [t.expression() for t in result.skipped] == [f"main({how!r})"]
    store = Store.open()
    stored = [i for i in range(24) if store.get_meta(m.job.dirname, m.job(i, how).id)]
    assert stored == [i for i in range(24) if i not in (5, 13)]
    log = tmp_path / "exec.log"
    assert set(executions(log)) == {f"job({i})" for i in range(24)} - {"job(5)", "job(13)"}
    assert not wait_dead(worker_pids(log)), "orphan worker processes"


def test_worker_death_stops_and_names_the_culprit(m: ModuleType) -> None:
    """Without keep-going, the error raised should name the task whose worker died."""
    with pytest.raises(WorkerDiedError, match=r"job\(13, 'exit-only'\)"):
        m.main("exit-only").run(executor="process", max_workers=2)


class _CancelsThirdBatch(Executor):
    """Runs batches on threads, except the third, which it cancels (as a shutdown would)."""

    def __init__(self) -> None:
        self.inner = ThreadPoolExecutor(2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        if self.submitted == 3:
            future: Future[Any] = Future()
            future.cancel()
            return future
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.inner.shutdown(wait, cancel_futures=cancel_futures)


@pytest.mark.parametrize(
    ("how", "error"),
    [("fail", ValueError), ("exit-only", WorkerDiedError), ("cancel", TaskFailedError)],
    ids=["fails", "worker-dies", "cancelled"],
)
def test_queue_slot_comes_back(m: ModuleType, how: str, error: type[BaseException]) -> None:
    """A task that fails, dies with its worker or is cancelled should give back its slot of a queue limited to 1."""
    executor: Executor | str = _CancelsThirdBatch() if how == "cancel" else "process"
    try:
        result = checkpoint.run([m.main(how)], executor=executor, max_workers=2, keep_going=True,
                                rate_limits={"q": 1}, raise_on_failure=False)
    finally:
        if isinstance(executor, Executor):
            executor.shutdown()
    # A slot kept by the failed task would leave the queue's other tasks waiting forever.
    [(tid, exc)] = result.failed.items()
    assert isinstance(exc, error), exc
    assert len(result.ran) == 23 and [t.expression() for t in result.skipped] == [f"main({how!r})"]
    if how == "cancel":
        assert "was cancelled by its executor" in str(exc) and result.plan.nodes[tid].task.expression() in str(exc)


def test_task_whose_worker_died_is_retried(m: ModuleType) -> None:
    """With retries, a task whose worker died (in its batch and again alone) should run again and succeed."""
    events: list[object] = []
    result = checkpoint.run([m.main("exit-twice")], executor="process", max_workers=2, retries=1,
                            subscribers=[events.append])
    assert result.values[m.main("exit-twice").id] == sum(range(24)) and len(result.ran) == 25
    [retried] = [e for e in events if isinstance(e, ev.TaskRetried)]
    assert retried.task == m.job(13, "exit-twice") and isinstance(retried.error, WorkerDiedError)


RETRY_SOURCE = """
    import os
    from pathlib import Path
    from checkpoint import task

    COUNT = Path(os.environ["CP_EXEC_LOG"])

    def _attempt():
        n = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
        COUNT.write_text(str(n))
        return n

    @task(retries=2)
    def flaky():
        def __():
            n = _attempt()
            print(f"attempt {n} says hello")
            if n < 3:
                raise RuntimeError(f"flaky failure {n}")
            return n
        return __

    @task
    def broken():
        def __():
            n = _attempt()
            raise RuntimeError(f"always fails ({n})")
        return __
"""


def test_task_retries_until_success_and_keeps_each_attempts_output(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """@task(retries=2) should re-run a failing task and keep every attempt's output in its log."""
    monkeypatch.setenv("CP_EXEC_LOG", str(tmp_path / "count"))
    m = make_module("retry_tasks", RETRY_SOURCE)
    events: list[object] = []
    assert checkpoint.run([m.flaky()], executor="process", subscribers=[events.append]).values[
        m.flaky().id] == 3
    retried = [e for e in events if isinstance(e, ev.TaskRetried)]
    assert [e.attempt for e in retried] == [1, 2]
    log = Store.open().get_log(m.flaky.dirname, m.flaky().id) or ""
    for n in (1, 2, 3):
        assert f"attempt {n} says hello" in log
    assert "--- attempt 1 of 3 failed ---" in log and "flaky failure 2" in log


def test_run_retries_then_fails(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run(retries=1) should try a failing task twice, then raise its exception."""
    monkeypatch.setenv("CP_EXEC_LOG", str(tmp_path / "count"))
    m = make_module("retry_tasks2", RETRY_SOURCE)
    with pytest.raises(RuntimeError, match=r"always fails \(2\)"):
        checkpoint.run([m.broken()], executor="inline", retries=1)
    assert (tmp_path / "count").read_text() == "2"


def test_cli_retries_option(tmp_path: Path, runner: CliRunner) -> None:
    """`checkpoint run --retries 1` should try a failing task twice and report it, exit 1."""
    write(tmp_path / "taskfile.py", RETRY_SOURCE)
    (tmp_path / "count").unlink(missing_ok=True)
    result = runner.invoke(cli, ["run", "--retries", "1", "--executor", "inline", "broken"],
                           env={"CP_EXEC_LOG": str(tmp_path / "count")})
    assert result.exit_code == 1
    assert (tmp_path / "count").read_text() == "2"
    assert "retrying broken() after attempt 1 failed" in result.stderr
    assert "always fails (2)" in result.stderr


def test_cli_reports_a_dead_worker_once_per_place(tmp_path: Path, runner: CliRunner) -> None:
    """The failed line and the failure report should each say "worker died" once, without
    repeating the task's name inside the message, and nothing else should repeat it."""
    write(tmp_path / "taskfile.py", SOURCE)
    result = runner.invoke(cli, ["run", "--no-progress", "-j", "2", "main('exit-only')"],
                           env={"CP_EXEC_LOG": str(tmp_path / "exec.log")})
    assert result.exit_code == 1
    died = [line for line in result.stderr.splitlines() if "worker died" in line]
    assert len(died) == 2, result.stderr
    assert re.search(r"failed +job\(13, 'exit-only'\) .*WorkerDiedError: worker died while", died[0])
    assert died[1].startswith(
        "Task job(13, 'exit-only') (taskfile.job) failed: WorkerDiedError: worker died while")
