"""Processes a task attempt started never outlive the attempt when it ends other than by
success (a failure, an interrupt, a killed coordinator or worker), whatever process group or
session they moved to: they would write into the outputs the next attempt makes again."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from conftest import write
from faultkit import alive, env_for, start, wait_dead

import checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's /proc")

# A tool that writes its pid, computes a while, then appends a row to the task's output: in
# the task's process group ("plain"), in its own (GNU timeout), in a session of its own, or
# as a daemon (double fork and setsid: its parent exits at once).
TOOL_TASKFILE = """
    import os, subprocess, time
    from checkpoint import Product, requires, task

    @task
    def main():
        @requires(Product("out/table.csv"))
        def __(out):
            cmd = ["sh", "-c", 'echo $$ > "$1.tmp"; mv "$1.tmp" "$1"; sleep 300; echo row >> "$2"',
                   "sh", os.environ["CP_CHILD_PID"], str(out)]
            mode = os.environ["CP_TOOL_MODE"]
            if mode == "timeout":
                subprocess.run(["timeout", "600", *cmd], check=True)
            elif mode == "session":
                subprocess.run(cmd, check=True, start_new_session=True)
            elif mode == "daemon":
                subprocess.run(["sh", "-c", 'setsid "$@" </dev/null >/dev/null 2>&1 &', "sh", *cmd],
                               check=True)
                time.sleep(300)
            else:
                subprocess.run(cmd, check=True)
            return out.read_text().count("\\n")
        return __
"""

MODES = ["timeout", "session", "daemon"]


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            found.update(int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
    return found


def _wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def _start_tool_run(tmp_path: Path, mode: str, executor: str = "process") -> tuple[
        subprocess.Popen[str], set[int]]:
    """Start `checkpoint run main` and wait until its task's tool runs: (run, the tool's pids)."""
    if mode == "timeout" and shutil.which("timeout") is None:
        pytest.skip("GNU timeout is not installed")
    write(tmp_path / "taskfile.py", TOOL_TASKFILE)
    pid_file = tmp_path / "child.pid"
    env = env_for(tmp_path, CP_CHILD_PID=str(pid_file), CP_TOOL_MODE=mode)
    proc = start(["run", "--no-progress", "--executor", executor, "main"], tmp_path, env)
    _wait_for(pid_file.exists, proc, "the task started its tool")
    shell = int(pid_file.read_text())
    _wait_for(lambda: bool(_children(shell)), proc, "the tool started its sleep")
    return proc, {shell, *_children(shell)}


def _end(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("mode", MODES)
def test_kill_minus_9_ends_a_tool_in_its_own_group_or_session(tmp_path: Path, mode: str) -> None:
    """kill -9 of the coordinator: the guard of the dead worker ends the tools its task
    started even when they left the worker's process group (adv4 01)."""
    proc, tool = _start_tool_run(tmp_path, mode)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
        assert not wait_dead(tool, timeout=10), "a process a task started outlived the run"
    finally:
        _end(tool)
        proc.communicate(timeout=120)
    assert not (tmp_path / "out" / "table.csv").exists()  # the tool never wrote its row


@pytest.mark.parametrize(("mode", "executor"), [
    *((m, "process") for m in MODES), ("timeout", "thread"), ("session", "thread"),
])
def test_interrupt_ends_a_tool_in_its_own_group_or_session(
    tmp_path: Path, mode: str, executor: str,
) -> None:
    """The first Ctrl-C ends the tools tasks started, also those in a process group or
    session of their own, before the run exits (adv4 02)."""
    proc, tool = _start_tool_run(tmp_path, mode, executor)
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)  # (a tool left alive holds the run's stderr: not communicate())
        assert not wait_dead(tool, timeout=10), "a process a task started outlived the run"
    finally:
        _end(tool)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: 0 done, 1 not run" in err
    assert not (tmp_path / "out" / "table.csv").exists()


FLAKY = """
    import os, subprocess
    from pathlib import Path
    from checkpoint import Product, requires, task

    def alive(pid):
        try:
            return "\\nState:\\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    TOOLS = []  # (no warning that a Popen was dropped while its process ran)

    @task
    def flaky(session):
        @requires(Product("out/"))
        def __(out):
            pid_file = Path(os.environ["CP_CHILD_PID"])
            if pid_file.exists():  # a later attempt: is the first attempt's tool still there?
                return alive(int(pid_file.read_text()))
            tool = subprocess.Popen(
                ["sh", "-c", 'echo $$; exec sleep 300', "sh"], stdout=subprocess.PIPE, text=True,
                start_new_session=session)
            TOOLS.append(tool)
            with tool.stdout:
                pid_file.write_text(tool.stdout.readline())  # (a handshake: the tool runs)
            raise RuntimeError("the other half of the step failed")
        return __
"""


@pytest.fixture
def flaky(make_module: Callable[[str, str], ModuleType], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("CP_CHILD_PID", str(tmp_path / "child.pid"))
    return make_module("flaky_tool", FLAKY)


@pytest.mark.parametrize("session", [False, True])
@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_a_retry_starts_after_the_failed_attempts_tools_ended(
    flaky: ModuleType, tmp_path: Path, executor: str, session: bool,
) -> None:
    """A failed attempt's tools are ended before the retry starts (adv4 03)."""
    pid = 0
    try:
        value = flaky.flaky(session).run(executor=executor, retries=1)
        pid = int((tmp_path / "child.pid").read_text())
        assert value is False, "the first attempt's tool still ran when the retry started"
    finally:
        _end({pid} if pid else set())
        for tool in flaky.TOOLS:
            tool.wait()


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_a_failed_run_leaves_no_tool_of_the_failed_task(
    flaky: ModuleType, tmp_path: Path, executor: str,
) -> None:
    """Without retries, the failed task's tools are ended before the failure is reported:
    they cannot write into what the next run makes again (adv4 03)."""
    pid = 0
    try:
        result = checkpoint.run([flaky.flaky(True)], executor=executor, raise_on_failure=False)
        assert result.failed
        pid = int((tmp_path / "child.pid").read_text())
        assert not alive(pid)
    finally:
        _end({pid} if pid else set())
        for tool in flaky.TOOLS:
            tool.wait()


SURVIVOR = """
    import os, subprocess
    from pathlib import Path
    from checkpoint import requires, task

    @task
    def starts(n):
        def __():  # a server left running on purpose
            started = subprocess.run(
                ["setsid", "sh", "-c", 'sleep 300 </dev/null >/dev/null 2>&1 & echo $!'],
                capture_output=True, text=True, check=True)
            return int(started.stdout)
        return __

    @task
    def fails():
        @requires(starts(1))
        def __(pid):
            raise RuntimeError("fails")
        return __
"""


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_what_a_successful_task_leaves_running_survives(
    make_module: Callable[[str, str], ModuleType], executor: str,
) -> None:
    """A task that succeeds may leave a process running on purpose, even when a later task
    on the same worker fails."""
    mod = make_module("survivor", SURVIVOR)
    result = checkpoint.run([mod.fails()], executor=executor, max_workers=1,
                            raise_on_failure=False)
    pid = mod.starts(1).run(executor=executor)
    try:
        assert result.failed
        assert alive(pid)
    finally:
        _end({pid})



DASK_TASKFILE = """
    import os, subprocess
    from pathlib import Path
    from checkpoint import Product, requires, task

    def alive(pid):
        try:
            return "\\nState:\\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    @task
    def main():
        @requires(Product("out/table.csv"))
        def __(out):
            tool = Path("tool.pid")
            if tool.exists():  # run again after its worker was killed: is the old tool there?
                out.write_text("row\\n")
                return "old tool alive" if alive(int(tool.read_text())) else "clean"
            Path("worker.pid").write_text(str(os.getpid()))
            subprocess.run(["sh", "-c", 'echo $$ > tool.tmp; mv tool.tmp tool.pid; sleep 300; '
                            'echo row >> "$1"', "sh", str(out)], check=True)
            return "not killed"
        return __
"""


def test_dask_worker_killed_ends_the_tools_of_its_task(tmp_path: Path) -> None:
    """A Dask worker killed mid-task (the out-of-memory killer): its guard ends the tools the
    task started, and Dask's new attempt of the task starts only once they are gone (adv4 04)."""
    pytest.importorskip("distributed")
    write(tmp_path / "taskfile.py", DASK_TASKFILE)
    proc = start(["run", "--no-progress", "--executor", "dask", "-j", "2", "main"], tmp_path,
                 env_for(tmp_path))
    tool_file = tmp_path / "tool.pid"
    tool: set[int] = set()
    try:
        _wait_for(tool_file.exists, proc, "the task started its tool")
        tool = {int(tool_file.read_text())}
        os.kill(int((tmp_path / "worker.pid").read_text()), signal.SIGKILL)
        proc.wait(timeout=120)
        assert not wait_dead(tool, timeout=10), "the killed worker's tool outlived it"
    finally:
        _end(tool)
        _end({proc.pid})
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # Dask ran the task again: only once the old tool had gone
        assert out.strip() == "clean", err
    else:  # or the task failed alone (Dask lost track of it)
        assert "WorkerDiedError" in err, err
    table = tmp_path / "out" / "table.csv"
    assert not table.exists() or table.read_text() == "row\n"  # never the old tool's row


# What a task's library leaves running when the task returns (ux6 2.0: joblib's loky pool,
# idle workers that end only after 300 s): a module-level process pool that is never shut
# down (concurrent.futures', multiprocessing's), a non-daemon multiprocessing child, a tool
# started and not waited for. Each writes
# its pids to CP_CHILD_PID. "thread" also leaves a non-daemon thread that never ends, which
# keeps its worker from exiting, as in any Python program: only an interrupt ends that run.
LEFTOVER_TASKFILE = """
    import multiprocessing, os, subprocess, threading, time
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path
    from checkpoint import requires, task

    POOL = None  # reused across calls and never shut down, as joblib's reusable executor
    POOLS = []

    def _pool():
        global POOL
        if POOL is None:
            POOL = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        return POOL

    def _leave(kind):
        if kind in ("executor", "thread"):
            pool = _pool()
            total = sum(pool.map(abs, range(-4, 0)))
            pids = list(pool._processes)
            if kind == "thread":
                threading.Thread(target=threading.Event().wait).start()
                session = subprocess.Popen(["sleep", "300"], start_new_session=True)
                pids.append(session.pid)
            return total, pids
        if kind == "pool":  # (its workers are daemons: the worker's exit ends them)
            pool = multiprocessing.get_context("fork").Pool(2)
            POOLS.append(pool)
            return sum(pool.map(abs, range(-4, 0))), [p.pid for p in pool._pool]
        if kind == "process":
            child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(300,))
            child.start()
            return 10, [child.pid]
        tool = subprocess.Popen(["sleep", "300"])
        return 10, [tool.pid]

    @task
    def leaves(i):
        def __():
            total, pids = _leave(os.environ["CP_LEAVE"])
            pid_file = Path(os.environ["CP_CHILD_PID"])
            with open(pid_file, "a") as f:
                f.write("".join(f"{p}\\n" for p in pids))
            return total + i
        return __

    @task
    def main():
        @requires([leaves(i) for i in range(2)])
        def __(values):
            return values
        return __
"""


def _leftover_run(tmp_path: Path, kind: str) -> tuple[subprocess.Popen[str], Path]:
    write(tmp_path / "taskfile.py", LEFTOVER_TASKFILE)
    pid_file = tmp_path / "child.pid"
    env = env_for(tmp_path, CP_CHILD_PID=str(pid_file), CP_LEAVE=kind)
    return start(["run", "--no-progress", "-j", "2", "main"], tmp_path, env), pid_file


def _pids(pid_file: Path) -> set[int]:
    return {int(p) for p in pid_file.read_text().split()} if pid_file.exists() else set()


@pytest.mark.parametrize("kind", ["executor", "pool", "process", "tool"])
def test_a_run_ends_when_its_tasks_are_done_whatever_they_left_running(
    tmp_path: Path, kind: str,
) -> None:
    """The pool's workers end what their tasks left running in their process group (a
    library's process pool, a child process, a tool) instead of waiting for it (ux6 2.0)."""
    proc, pid_file = _leftover_run(tmp_path, kind)
    try:
        proc.wait(timeout=120)  # (a process left alive holds the run's stdout: not communicate())
        assert not wait_dead(_pids(pid_file), timeout=10), "a process a task started outlived the run"
    finally:
        _end(_pids(pid_file))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "[10, 11]"
    assert _pids(pid_file)


def _wait_for_done(proc: subprocess.Popen[str], task: str) -> None:
    """Read the run's stderr until it reports ``task`` done (a line ``HH:MM:SS done  task``)."""
    assert proc.stderr is not None
    seen = ""
    for line in proc.stderr:
        seen += line
        if line.split()[1:3] == ["done", task]:
            return
    raise AssertionError(f"the run ended before {task} was done: {seen}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_while_the_pool_shuts_down_ends_every_process(
    tmp_path: Path, signum: int,
) -> None:
    """Tasks done, the pool waiting for a worker that cannot exit (a thread its task left
    running): Ctrl-C or SIGTERM ends the run and every process it started, also those in a
    session of their own (ux6 2.0: Ctrl-C did not end the run, SIGTERM left orphans)."""
    proc, pid_file = _leftover_run(tmp_path, "thread")
    workers: set[int] = set()
    try:
        _wait_for_done(proc, "main()")
        workers = _children(proc.pid)
        proc.send_signal(signum)
        proc.wait(timeout=120)
        left = wait_dead(_pids(pid_file) | workers, timeout=10)
        assert not left, "a process the run started outlived it"
    finally:
        _end(_pids(pid_file) | workers)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if signum == signal.SIGINT else 128 + signum), err
    started = _pids(pid_file)
    assert started
    # Nothing stored is lost: the next run reuses every task (no task starts a process).
    again = subprocess.run([sys.executable, "-m", "checkpoint", "run", "--no-progress", "main"],
                           cwd=tmp_path, env=env_for(tmp_path, CP_CHILD_PID=str(pid_file),
                                                     CP_LEAVE="tool"),
                           capture_output=True, text=True, timeout=120)
    assert (again.returncode, again.stdout.strip()) == (0, "[10, 11]"), again.stderr
    assert _pids(pid_file) == started


ATEXIT = """
    import atexit
    from pathlib import Path
    from checkpoint import task

    @task
    def registers(path):
        def __():  # as joblib does to delete its memory-mapping folders
            atexit.register(Path(path).write_text, "cleaned up")
            return 1
        return __
"""


def test_a_worker_runs_the_atexit_handlers_its_tasks_registered(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path,
) -> None:
    """A pool worker's exit runs what its tasks registered with atexit (ux6 2.0: joblib's
    folders were left to loky's resource tracker, which warned of leaked folders)."""
    mod = make_module("registers", ATEXIT)
    path = tmp_path / "cleaned"
    assert mod.registers(str(path)).run(executor="process") == 1
    assert path.read_text() == "cleaned up"
