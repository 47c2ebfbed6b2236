"""Ctrl-C and SIGTERM: stop, kill workers, keep what finished, exit 130 / 143."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from conftest import write
from faultkit import alive, env_for, executions, start, wait_dead, worker_pids

import checkpoint
from checkpoint.errors import TerminatedError
from checkpoint.store import Store

SLOW_TASKFILE = """
    import os, time
    from checkpoint import requires, task

    def _log(text):
        fd = os.open(os.environ["CP_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{text} {os.getpid()}\\n".encode())
        os.close(fd)

    @task
    def step(i):
        def __():
            started = os.environ.get("CP_START_LOG")
            if started:  # the readiness signal: a task is running, the run's guard is set
                with open(started, "a") as f:
                    f.write(f"step({i})\\n")
            time.sleep(float(os.environ.get("CP_STEP_SECONDS", "0.1")))
            _log(f"step({i})")
            return i * i
        return __

    @task
    def main():
        @requires([step(i) for i in range(int(os.environ.get("CP_STEPS", "30")))])
        def __(values):
            return sum(values)
        return __
"""


def _signal_source(sig: str) -> str:
    return f"""
        import os, signal
        from checkpoint import requires, task

        @task
        def a():
            def __():
                return 1
            return __

        @task
        def b():
            @requires(a())
            def __(x):
                return x + 1
            return __

        @task
        def c():
            @requires(b())
            def __(x):
                os.kill(os.getpid(), signal.{sig})
                return x + 1
            return __
    """


@pytest.mark.parametrize(
    ("sig", "exc_type"), [("SIGINT", KeyboardInterrupt), ("SIGTERM", TerminatedError)],
    ids=["sigint", "sigterm"],
)
def test_library_raises_on_signal_and_keeps_finished(
    make_module: Callable[[str, str], ModuleType], sig: str, exc_type: type[BaseException]
) -> None:
    """A signal during run() should raise KeyboardInterrupt/TerminatedError and keep finished results."""
    m = make_module("sigtasks", _signal_source(sig))
    before = signal.getsignal(signal.SIGTERM)
    events: list[object] = []
    with pytest.raises(exc_type):
        checkpoint.run([m.c()], executor="inline", subscribers=[events.append])
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    store = Store.open()
    assert store.get_meta(m.a.dirname, m.a().id) is not None
    assert store.get_meta(m.b.dirname, m.b().id) is not None
    assert store.get_meta(m.c.dirname, m.c().id) is None
    interrupted = [e for e in events if isinstance(e, checkpoint.events.RunInterrupted)]
    assert interrupted == [checkpoint.events.RunInterrupted(done=2, not_run=1)]


def test_interrupt_before_anything_runs_is_reported_like_any_other(
    make_module: Callable[[str, str], ModuleType],
) -> None:
    """Ctrl-C while the run sorts out what it reuses (a long pass on a large graph) ends
    it the same way as later: RunInterrupted counts every task as not run."""
    m = make_module("firstpass", _signal_source("SIGINT"))
    checkpoint.run([m.a()], executor="inline")
    events: list[object] = []

    def interrupt_at_first_reuse(event: object) -> None:
        events.append(event)
        if isinstance(event, checkpoint.events.TaskReused) and len(events) < 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.run([m.c()], executor="inline", subscribers=[interrupt_at_first_reuse])
    interrupted = [e for e in events if isinstance(e, checkpoint.events.RunInterrupted)]
    assert interrupted == [checkpoint.events.RunInterrupted(done=0, not_run=2)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _stored_steps(tmp_path: Path) -> set[str]:
    """Expressions of the ``step`` tasks stored in the test's cache."""
    store = Store(tmp_path / ".cache")
    try:
        return {meta.expr for _, meta in store.entries("taskfile.step")}
    finally:
        store.close()


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``condition`` (generously: the suite may run on a loaded machine) while ``proc`` runs."""
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"]
)
def test_cli_interrupt_stops_workers_and_keeps_finished(tmp_path: Path, signum: int, code: int) -> None:
    """An interrupted `checkpoint run` should kill its workers, store what finished and exit 130/143."""
    write(tmp_path / "taskfile.py", SLOW_TASKFILE)
    log = tmp_path / "exec.log"
    proc = start(["run", "-j", "2"], tmp_path, env_for(tmp_path, log))
    # Ready once some results are stored: the run is under way, with more to do.
    _wait_until(lambda: len(_stored_steps(tmp_path)) >= 3, proc, "three results were stored")
    # Ctrl-C reaches the whole foreground process group; SIGTERM usually only the main process.
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    found = re.search(r"interrupted: (\d+) done, (\d+) not run", err)
    assert found, err
    assert err.lower().count("interrupted") == 1, err  # said once, not by both CLI and summary
    done, not_run = int(found[1]), int(found[2])
    stored = _stored_steps(tmp_path)
    # "done" is what was stored (a result computed but not yet collected is not kept).
    assert 3 <= done == len(stored) < 31 and done + not_run == 31
    assert not wait_dead(worker_pids(log)), "worker processes outlived the run"
    # Resume: exactly the tasks that had not been stored are computed now, each once.
    log2 = tmp_path / "exec2.log"
    proc = start(["run", "-j", "2"], tmp_path, env_for(tmp_path, log2, CP_STEP_SECONDS="0"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == str(sum(i * i for i in range(30)))
    rerun = executions(log2)  # main does not log
    assert len(rerun) == len(set(rerun)) == not_run - 1
    assert set(rerun) == {f"step({i})" for i in range(30)} - stored


def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    """A second Ctrl-C should end the process at once, even while a thread still runs a task."""
    write(tmp_path / "taskfile.py", SLOW_TASKFILE)
    log, started = tmp_path / "exec.log", tmp_path / "started.log"
    env = env_for(tmp_path, log, CP_STEPS="3", CP_STEP_SECONDS="60", CP_START_LOG=str(started))
    proc = start(["run", "--executor", "thread", "-j", "2"], tmp_path, env)
    _wait_until(lambda: len(executions(started)) >= 2, proc, "both threads were running a task")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    while line and not line.startswith("interrupted"):  # the progress summary comes first
        line = proc.stderr.readline()
    assert line.startswith("interrupted: 0 done, 4 not run"), line
    assert alive(proc.pid)  # Python waits for the threads still sleeping in their tasks
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.returncode in (-signal.SIGINT, 130)


CHILDREN_TASKFILE = """
    import os, subprocess
    from checkpoint import requires, task

    @task
    def waits(i):
        def __():
            child = subprocess.Popen(["sleep", "300"])
            fd = os.open(os.environ["CP_CHILD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"{child.pid} {os.getpid()}\\n".encode())
            os.close(fd)
            child.wait()  # the child ended early: returns a value all the same
            return i
        return __

    @task
    def main():
        @requires([waits(i) for i in range(2)])
        def __(values):
            return values
        return __
"""


GRANDCHILD_TASKFILE = """
    import os, subprocess
    from checkpoint import Product, requires, task

    @task
    def main():
        @requires(Product("out/table.csv"))
        def __(out):
            # A tool that writes its pid, computes a while, then appends a row.
            subprocess.run(["sh", "-c", 'echo $$ > "$1"; sleep 300; echo row >> "$2"', "sh",
                            os.environ["CP_CHILD_PID"], str(out)], check=True)
            return out.read_text().count("\\n")
        return __
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_minus_9_of_the_coordinator_ends_the_processes_tasks_started(tmp_path: Path) -> None:
    """kill -9 of the coordinator should end not only its workers but every process their
    tasks started: one left alive would write into the outputs the next run makes again."""
    write(tmp_path / "taskfile.py", GRANDCHILD_TASKFILE)
    pid_file = tmp_path / "child.pid"
    env = env_for(tmp_path, CP_CHILD_PID=str(pid_file))
    proc = start(["run", "--no-progress", "main"], tmp_path, env)
    _wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", proc,
                "the task started its tool")
    shell = int(pid_file.read_text())
    _wait_until(lambda: bool(_children(shell)), proc, "the tool started its sleep")
    tool = {shell, *_children(shell)}
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)  # (the tool holds the run's stdout: communicate() would wait)
        assert not wait_dead(tool, timeout=10), "a process a task started outlived the run"
    finally:
        for pid in tool:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate(timeout=120)
    assert not (tmp_path / "out" / "table.csv").exists()  # the tool never wrote its row


def _ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


@pytest.mark.parametrize("executor", ["process", "thread"])
@pytest.mark.parametrize(
    ("how", "code"), [("ctrl-c", 130), ("sigint", 130), ("sigterm", 143), ("sighup", 129)],
)
def test_interrupt_leaves_no_child_process_of_a_task(
    tmp_path: Path, executor: str, how: str, code: int
) -> None:
    """Ctrl-C (SIGINT to the foreground group) or a signal to the coordinator alone should end
    the processes tasks started, with the workers, and store no result cut short by it."""
    write(tmp_path / "taskfile.py", CHILDREN_TASKFILE)
    children = tmp_path / "children.log"
    env = env_for(tmp_path, CP_CHILD_LOG=str(children))
    proc = start(["run", "--executor", executor, "-j", "2"], tmp_path, env)
    _wait_until(lambda: len(executions(children)) == 2, proc, "both tasks started a child")
    sleeps = {int(line.split()[0]) for line in children.read_text().splitlines()}
    # A task's child starts with the default action for SIGINT (not ignored, as it was when
    # it inherited the worker's SIG_IGN), so a second Ctrl-C would reach it anyway.
    assert not any(_ignores_sigint(pid) for pid in sleeps)
    workers = worker_pids(children) - {proc.pid}
    signum = {"ctrl-c": signal.SIGINT, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM,
              "sighup": signal.SIGHUP}[how]
    try:
        if how == "ctrl-c":  # what a terminal does: the whole foreground process group
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        assert "Traceback" not in err
        assert "interrupted: 0 done, 3 not run" in err, err
        assert not wait_dead(sleeps | workers), "processes of the run outlived it"
    finally:  # a failure leaves nothing behind either
        for pid in (proc.pid, *workers, *sleeps):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    store = Store(tmp_path / ".cache")
    try:  # a task whose child the signal ended returned early: that value is not stored
        assert store.count_entries("taskfile.waits") == 0
    finally:
        store.close()


def test_ctrl_z_stops_worker_processes_too(tmp_path: Path) -> None:
    """Ctrl-Z in a terminal should stop the workers (which lead their own process groups) with
    the coordinator; `fg` continues them all and the run ends as usual."""
    pexpect = pytest.importorskip("pexpect")
    write(tmp_path / "taskfile.py", SLOW_TASKFILE)
    log, started = tmp_path / "exec.log", tmp_path / "started.log"
    env = env_for(tmp_path, log, CP_STEPS="4", CP_STEP_SECONDS="1", CP_START_LOG=str(started),
                  PS1="$ ", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    shell = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], cwd=str(tmp_path), env=env,
                          encoding="utf-8", timeout=120, dimensions=(40, 120))
    try:
        shell.expect_exact("$ ")
        shell.sendline("checkpoint run -j 2 --no-progress")
        deadline = time.monotonic() + 120
        while len(executions(started)) < 2:  # both workers are running a task
            assert time.monotonic() < deadline
            time.sleep(0.02)
        shell.sendcontrol("z")
        shell.expect("Stopped")
        coordinators = [p for p in _children(shell.pid) if "checkpoint" in _cmdline(p)]
        assert len(coordinators) == 1
        workers = _group_leaders(coordinators[0])
        assert len(workers) == 2
        deadline = time.monotonic() + 120
        while not all(_state(pid) == "T" for pid in workers):
            assert time.monotonic() < deadline, [_state(pid) for pid in workers]
            time.sleep(0.02)
        shell.sendline("fg")
        shell.expect_exact("Done in")
        shell.expect_exact("$ ")
        shell.sendline("echo exit=$?")
        shell.expect(r"exit=(\d+)")
        assert shell.match.group(1) == "0", shell.before
        assert len(executions(log)) == 4
    finally:
        shell.close(force=True)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _children(parent: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


def _group_leaders(parent: int) -> set[int]:
    """The coordinator's children that lead a process group of their own (its workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and int(fields[2]) == int(entry.name):
                found.add(int(entry.name))
    return found
