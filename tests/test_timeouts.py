"""Per-task time limits: @task(timeout=...), run(timeout=...), checkpoint run --timeout."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner
from conftest import write
from faultkit import alive, env_for, executions, start, wait_dead

import checkpoint
from checkpoint._units import parse_duration
from checkpoint.cli import cli
from checkpoint.errors import TaskDefinitionError, TaskTimeoutError, UsageError, WorkerDiedError
from checkpoint.store import Store

SOURCE = """
    import os, signal, subprocess, time
    from checkpoint import requires, task

    def _log(text):
        fd = os.open(os.environ["CP_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{text} {os.getpid()}\\n".encode())
        os.close(fd)

    @task
    def quick(i):
        def __():
            _log(f"quick({i})")
            return i
        return __

    STOP = []

    @task(timeout=0.5)
    def hang(how):
        def __():
            _log(f"hang({how!r})")
            if how == "sleep":  # blocked in a system call
                time.sleep(300)
            elif how == "loop":  # busy in Python code (until the test ends: a thread is never
                while not STOP:     # stopped, and one spinning on would slow the whole suite)
                    pass
            elif how == "child":  # waiting for a process it started (which __exit__ waits for)
                with subprocess.Popen(["sleep", "300"]) as child:
                    _log(f"child {child.pid}")
                    child.wait()
            elif how == "swallow":  # catches every exception and goes on
                while True:
                    try:
                        time.sleep(300)
                    except BaseException:
                        pass
            elif how == "blocked":  # the timer's signal cannot reach it (as in some C code)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                time.sleep(300)
            return how
        return __

    @task
    def nap(seconds):
        def __():
            time.sleep(seconds)
        return __

    @task(timeout=30)
    def patient():
        def __():
            time.sleep(1)
            return "patient"
        return __

    @task
    def main(how):
        @requires([hang(how), *[quick(i) for i in range(6)]])
        def __(values):
            return values
        return __
"""


@pytest.fixture
def tasks(make_module: Callable[[str, str], ModuleType], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CP_EXEC_LOG", str(tmp_path / "exec.log"))
    return make_module("limited", SOURCE)


def _stored(family: str) -> int:
    return Store.open().count_entries(f"limited.{family}")


@pytest.mark.parametrize("how", ["sleep", "loop", "child"])
@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_hung_task_fails_with_timeout_and_others_go_on(
    tasks: ModuleType, tmp_path: Path, executor: str, how: str
) -> None:
    """A task past its limit should fail with TaskTimeoutError naming it and the limit, while
    the other tasks are built and stored (keep_going)."""
    try:
        result = checkpoint.run([tasks.main(how)], executor=executor, max_workers=2,
                                keep_going=True, raise_on_failure=False)
    finally:
        tasks.STOP.append(True)  # ends the busy loop of a thread left running
    [error] = result.failed.values()
    assert isinstance(error, TaskTimeoutError) and error.limit == 0.5
    assert f"Task hang({how!r}) (limited.hang) timed out" in str(error)
    assert "time limit of 0.5 s" in str(error)
    assert _stored("quick") == 6 and _stored("hang") == 0
    assert [t.expression() for t in result.skipped] == [f"main({how!r})"]
    if how == "child":  # what the task started does not outlive it
        [pid] = [int(line.split()[1]) for line in (tmp_path / "exec.log").read_text().splitlines()
                 if line.startswith("child ")]
        assert not wait_dead({pid})


@pytest.mark.parametrize("how", ["swallow", "blocked"])
def test_task_that_does_not_stop_has_its_worker_ended(
    tasks: ModuleType, tmp_path: Path, how: str
) -> None:
    """A process-pool task that ignores the stop is ended with its worker after the grace
    period: it fails as timed out (not as a dead worker), retries apply (once each, not
    forever), and the other tasks are built."""
    result = checkpoint.run([tasks.main(how)], max_workers=2, keep_going=True, retries=1,
                            raise_on_failure=False)
    [error] = result.failed.values()
    assert isinstance(error, TaskTimeoutError) and not isinstance(error, WorkerDiedError)
    assert "did not stop within 2 s more, so its worker process was ended" in str(error)
    ran = executions(tmp_path / "exec.log")
    assert ran.count(f"hang({how!r})") == 2  # the first attempt and one retry
    assert _stored("quick") == 6


def test_where_it_was_is_in_the_log(tasks: ModuleType) -> None:
    """The failure's traceback should show the line the task was running at its limit."""
    events: list[object] = []
    checkpoint.run([tasks.hang("sleep")], raise_on_failure=False, subscribers=[events.append])
    [failed] = [e for e in events if isinstance(e, checkpoint.events.TaskFailed)]
    assert "time.sleep(300)" in failed.traceback
    assert failed.traceback.rstrip().endswith("so it was stopped.")


def test_thread_left_running_is_reported_as_such(tasks: ModuleType) -> None:
    """On the thread executor the run goes on past the limit, saying the thread cannot be
    stopped (the thread itself is abandoned)."""
    with pytest.raises(TaskTimeoutError, match="a thread, which cannot be stopped"):
        checkpoint.run([tasks.hang("swallow")], executor="thread")


def test_a_thread_left_running_is_not_retried(tasks: ModuleType, tmp_path: Path) -> None:
    """A timed-out task whose thread runs on fails for good, whatever its retries: a retry
    would share its data directory and files with the abandoned attempt, which may write
    there later (and overwrite what the retry stored)."""
    result = checkpoint.run([tasks.hang("swallow")], executor="thread", retries=2,
                            raise_on_failure=False)
    [error] = result.failed.values()
    assert isinstance(error, TaskTimeoutError)
    assert "so it is not retried" in str(error)
    assert executions(tmp_path / "exec.log").count("hang('swallow')") == 1


def test_family_limit_takes_precedence_over_the_runs(tasks: ModuleType) -> None:
    """run(timeout=...) applies to tasks without a limit of their own; a family's own wins."""
    assert tasks.patient().run(executor="thread", timeout=0.2) == "patient"
    with pytest.raises(TaskTimeoutError, match=r"nap\(300\).*time limit of 0.2 s"):
        tasks.nap(300).run(executor="inline", timeout=0.2)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), "10", True])
def test_bad_limits_are_rejected(bad: object) -> None:
    """A limit must be a finite number of seconds > 0."""
    def f() -> None: ...

    with pytest.raises(TaskDefinitionError, match=r"timeout of task .*\bf must be a number of sec"):
        checkpoint.task(timeout=bad)(f)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"run's timeout must be a number of seconds"):
        checkpoint.run([], timeout=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1.5m", 90), ("1h30m", 5400), ("500ms", 0.5), ("2d", 172800)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_cli_timeout_flag(tmp_path: Path, runner: CliRunner) -> None:
    """`--timeout DURATION` limits every task without a limit of its own; a bad duration is a
    usage error (exit 2) that says what to write."""
    write(tmp_path / "taskfile.py", """
        import time
        from checkpoint import task

        @task
        def slow():
            def __():
                time.sleep(300)
            return __
    """)
    result = runner.invoke(cli, ["run", "--timeout", "0.3s", "--executor", "inline", "slow"])
    assert result.exit_code == 1
    assert "Task slow() (taskfile.slow) timed out" in result.stderr
    result = runner.invoke(cli, ["run", "--timeout", "soon", "slow"])
    assert result.exit_code == 2
    assert "'soon' is not a duration > 0; use seconds or units, e.g. 90, 90s, 15m" in result.stderr


def test_cli_hard_stop_leaves_no_process(tmp_path: Path) -> None:
    """A real `checkpoint run` whose task ignores the stop: its worker and the processes it
    started are ended, the run reports the timeout, and the other tasks are stored."""
    write(tmp_path / "taskfile.py", """
        import os, subprocess, time
        from checkpoint import requires, task

        @task
        def quick(i):
            def __():
                return i
            return __

        @task
        def stubborn():
            def __():
                child = subprocess.Popen(["sleep", "300"])
                with open(os.environ["CP_EXEC_LOG"], "a") as f:
                    f.write(f"{child.pid} {os.getpid()}\\n")
                while True:
                    try:
                        time.sleep(300)
                    except BaseException:
                        pass
            return __

        @task
        def main():
            @requires([stubborn(), *[quick(i) for i in range(4)]])
            def __(values):
                return values
            return __
    """)
    log = tmp_path / "exec.log"
    proc = start(["run", "-k", "-j", "2", "--timeout", "1", "--no-progress"], tmp_path,
                 env_for(tmp_path, log))
    try:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert ("Task stubborn() (taskfile.stubborn) timed out: still running after its time "
                "limit of 1 s, and did not stop within 2 s more") in err
        assert 'taskfile.py", line' in err  # where it was
        [(child, worker)] = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
        assert not wait_dead({child, worker})
        store = Store(tmp_path / ".cache")
        assert store.count_entries("taskfile.quick") == 4
        store.close()
    finally:
        proc.kill()
        for line in log.read_text().splitlines() if log.exists() else ():
            for pid in map(int, line.split()):
                if alive(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


ABANDONED = """
    import threading
    from checkpoint import Product, requires, task

    RELEASE = threading.Event()
    ATTEMPTS = []

    @task
    def rows():
        @requires(Product("out/rows.txt"))
        def __(out):
            ATTEMPTS.append(1)
            if len(ATTEMPTS) == 1:  # the first attempt stalls until the test releases it
                RELEASE.wait()
            with open(out, "a") as f:
                f.write("row\\n")
            return out.read_text().count("\\n")
        return __
"""


def test_a_thread_left_running_is_waited_for_by_the_next_run(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path
) -> None:
    """A task abandoned at its limit on a thread still runs, and may still write its outputs:
    the next run of this process that needs the task should wait for that attempt to end
    (saying so) before running it again, so that the two never write into the same files."""
    import warnings

    from checkpoint._worker import task_threads

    tasks = make_module("abandoned", ABANDONED)
    earlier = set(task_threads())  # (left running by other tests, some for good)
    with pytest.raises(TaskTimeoutError, match="cannot be stopped"):
        tasks.rows().run(executor="thread", timeout=0.2)
    _give_up_waiting_in(600)
    said: list[str] = []

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        said.append(str(message))
        tasks.RELEASE.set()  # the abandoned attempt may end now

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show  # type: ignore[assignment]
            value = tasks.rows().run(executor="thread", timeout=30)
    finally:
        tasks.RELEASE.set()
        for thread in set(task_threads()) - earlier:
            thread.join()
    assert value == 1
    assert (tmp_path / "out" / "rows.txt").read_text() == "row\n"
    assert len(said) == 1 and "rows() (abandoned.rows) is still running" in said[0], said


HUNG = """
    import threading
    from checkpoint import Product, requires, task

    RELEASE = threading.Event()
    ATTEMPTS = []

    @task(timeout=0.2)
    def rows():
        @requires(Product("out/rows.txt"))
        def __(out):
            ATTEMPTS.append(1)
            RELEASE.wait()  # hangs for good (until the test ends)
            out.write_text("row\\n")
            return 1
        return __

    @task
    def other(i):
        def __():
            return i
        return __

    @task
    def main():
        @requires([rows(), other(0)])
        def __(values):
            return values
        return __
"""


def _give_up_waiting_in(seconds: float) -> None:
    """Move the time at which the abandoned attempts of this process count as hung to
    ``seconds`` from now (their time limit once more after they were given up), so that a
    test does not depend on how fast a run gets to wait for them."""
    import dataclasses
    import time

    from checkpoint import _worker

    for thread, attempt in list(_worker._abandoned.items()):
        _worker._abandoned[thread] = dataclasses.replace(attempt, deadline=time.monotonic() + seconds)


@pytest.fixture
def hung(make_module: Callable[[str, str], ModuleType]) -> Iterator[ModuleType]:
    """A module whose ``rows()`` hangs in its thread until the test ends (then its thread is
    released and joined: no thread outlives the test). A run that would wait for it for good
    is released after 20 s, so that a test that fails does not hang the suite."""
    import threading

    from checkpoint._worker import task_threads

    tasks = make_module("hung", HUNG)
    earlier = set(task_threads())  # (left running by other tests, some for good)
    bound = threading.Timer(20, tasks.RELEASE.set)
    bound.start()
    try:
        yield tasks
    finally:
        bound.cancel()
        tasks.RELEASE.set()
        for thread in set(task_threads()) - earlier:
            thread.join()


def test_a_hung_abandoned_thread_fails_the_next_run_instead_of_blocking_it(
    hung: ModuleType, tmp_path: Path
) -> None:
    """A later run of this process that needs a task whose abandoned attempt never ends
    should wait for it a bounded time (the attempt's time limit once more), then fail that
    task with an error that names it and says to restart Python; its dependents are
    skipped, the tasks that do not depend on it are stored, and it is never run again
    alongside the hung attempt."""
    import time
    import warnings

    from checkpoint import _worker
    from checkpoint.errors import TaskStillRunningError

    before = set(_worker._abandoned)
    with pytest.raises(TaskTimeoutError, match="cannot be stopped"):
        hung.rows().run(executor="thread")
    [attempt] = [a for t, a in _worker._abandoned.items() if t not in before]
    assert attempt.limit == 0.2 and attempt.deadline <= time.monotonic() + 0.2
    _give_up_waiting_in(600)  # waits (and warns), until it waited long enough:
    said: list[str] = []

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        said.append(str(message))
        _give_up_waiting_in(0)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # type: ignore[assignment]
        result = checkpoint.run([hung.main(), hung.other(1)], executor="thread",
                                keep_going=True, raise_on_failure=False)
    assert not hung.RELEASE.is_set(), "the run waited for the hung thread for good"
    [(tid, error)] = result.failed.items()
    assert isinstance(error, TaskStillRunningError) and isinstance(error, TaskTimeoutError)
    assert error.limit == 0.2 and error.task == "rows()" and error.family == "hung.rows"
    assert "Task rows() (hung.rows) cannot run: an earlier attempt of it" in str(error)
    assert "restart the Python process" in str(error)
    assert [t.expression() for t in result.skipped] == ["main()"]
    assert sorted(t.expression() for t in result.ran) == ["other(0)", "other(1)"]
    assert hung.ATTEMPTS == [1]  # never run again next to the hung attempt
    store = Store.open()
    assert store.count_entries("hung.other") == 2
    assert store.count_entries("hung.rows") == 0 and store.count_entries("hung.main") == 0
    assert not (tmp_path / "out" / "rows.txt").exists()
    assert said == [
        "rows() (hung.rows) is still running in a thread of this process: an earlier run gave "
        "up on it at its time limit, and a thread cannot be stopped. This run waits for that "
        "attempt to end before running the task again, so that the two never write into the "
        "same files; if it still runs 0.2 s (its time limit) after it was given up, the task "
        "fails."
    ]
    # Without keep_going the run raises it, as for any failure.
    with pytest.raises(TaskStillRunningError, match="restart the Python process"):
        hung.main().run(executor="thread")
    assert hung.ATTEMPTS == [1]


def test_ctrl_c_ends_the_wait_for_an_abandoned_thread(hung: ModuleType, tmp_path: Path) -> None:
    """Ctrl-C while a run waits for an abandoned attempt should interrupt it at once (the
    usual KeyboardInterrupt, the signal handler given back), storing nothing for the task."""
    import threading
    import warnings

    with pytest.raises(TaskTimeoutError, match="cannot be stopped"):
        hung.rows().run(executor="thread")
    _give_up_waiting_in(600)  # as if its time limit were long

    def ctrl_c(message: Warning | str, *args: object, **kwargs: object) -> None:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

    with warnings.catch_warnings(), pytest.raises(KeyboardInterrupt):
        warnings.simplefilter("always")
        warnings.showwarning = ctrl_c  # type: ignore[assignment]
        hung.main().run(executor="thread")
    assert not hung.RELEASE.is_set(), "the run waited for the hung thread for good"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert hung.ATTEMPTS == [1]
    assert Store.open().count_entries("hung.rows") == 0
    assert not (tmp_path / "out" / "rows.txt").exists()
