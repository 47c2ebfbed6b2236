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
