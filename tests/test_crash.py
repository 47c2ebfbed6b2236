"""kill -9 of a real `python -m checkpoint` run leaves a cache the next run resumes from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import checkpoint
from checkpoint import events as ev
from checkpoint.store import Store

TASKFILE = '''
import os, time
from checkpoint import task, requires

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ran.log")

def note(name):
    with open(LOG, "a") as f:
        f.write(name + "\\n")

@task
def leaf(i: int):
    def __() -> bytes:
        note(f"leaf({i})")
        time.sleep(0.03)
        return bytes([i % 256]) * (i * 997)
    return __

@task
def pair(i: int):
    @requires(leaf(2 * i))
    @requires(leaf(2 * i + 1))
    def __(a: bytes, b: bytes) -> int:
        note(f"pair({i})")
        time.sleep(0.03)
        return len(a) + len(b)
    return __

@task
def main():
    @requires([pair(i) for i in range(40)])
    def __(sizes):
        note("main()")
        return sum(sizes)
    return __
'''

TOTAL = 80 + 40 + 1
EXPECTED = sum(i * 997 for i in range(80))


def _stored(cache: Path) -> int:
    store = Store(cache)
    try:
        return sum(1 for family in store.families() for _ in store.entries(family))
    finally:
        store.close()


def _counted(cache: Path) -> int:
    """Stored entries, read from the indexes the way `checkpoint ls` does (read-only)."""
    store = Store(cache)
    try:
        return sum(store.count_entries(f) for f in ("taskfile.leaf", "taskfile.pair"))
    finally:
        store.close()


def test_kill_minus_9_then_resume(tmp_path: Path) -> None:
    """After kill -9 mid-run, the rerun should finish correctly and run only unfinished tasks."""
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
    log = tmp_path / "ran.log"
    cmd = [sys.executable, "-m", "checkpoint", "taskfile.py", "-j", "2"]
    env = {**os.environ, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120  # generous: the suite may run on a loaded machine
    while _counted(tmp_path / ".cache") < 20:  # until results are being stored
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no results were stored"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.2)  # orphaned pool workers notice the dead parent and exit
    stored = _stored(tmp_path / ".cache")
    assert 0 < stored < TOTAL
    log.unlink()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(EXPECTED)
    rerun = log.read_text().splitlines()
    assert len(rerun) == len(set(rerun)) == TOTAL - stored
    assert _stored(tmp_path / ".cache") == TOTAL


SEGFAULT_TASKFILE = '''
import ctypes, time
from checkpoint import requires, task

@task
def ok(i):
    def __():
        time.sleep(0.002)
        return i
    return __

@task
def crash():
    @requires([ok(i) for i in range(60)])
    def __(values):
        ctypes.string_at(0)  # a segmentation fault, as from a bug in C code
    return __

@task
def main():
    @requires([crash(), *[ok(i) for i in range(60, 100)]])
    def __(values):
        return values
    return __
'''


def test_segfault_on_thread_executor_keeps_what_was_reported_done(tmp_path: Path) -> None:
    """A task that crashes the process (threads share it) loses no result already reported
    done, and the crash report shows the task's line."""
    (tmp_path / "taskfile.py").write_text(SEGFAULT_TASKFILE)
    env = {**os.environ, "CP_CACHE_DIR": str(tmp_path / ".cache"), "PYTHONFAULTHANDLER": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "checkpoint", "run", "--executor", "thread", "-j", "2",
         "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGSEGV, proc.stderr
    done = {line.split()[2] for line in proc.stderr.splitlines() if " done " in line}
    store = Store(tmp_path / ".cache")
    try:
        stored = {meta.expr for _, meta in store.entries("taskfile.ok")}
    finally:
        store.close()
    # crash() started after its prerequisites were stored. Not all of them need be printed:
    # the line printer writes its lines every 0.1 s, and lines not yet written die with the
    # process (reporting lags storing, never the other way round).
    assert {f"ok({i})" for i in range(60)} <= stored
    assert done <= stored
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    line = SEGFAULT_TASKFILE.splitlines().index("        ctypes.string_at(0)  # a segmentation "
                                                "fault, as from a bug in C code") + 1
    assert f'taskfile.py", line {line} in __' in proc.stderr  # where: crash()'s inner function


ANNOUNCED = '''
from checkpoint import requires, task

@task
def leaf(i: int):
    def __() -> int:
        return i
    return __

@task
def top():
    @requires([leaf(i) for i in range(20)])
    def __(values: list[int]) -> int:
        return sum(values)
    return __
'''


@pytest.mark.parametrize("executor", ["thread", "inline"])
def test_a_result_is_announced_done_only_once_stored(
        make_module: Any, tmp_path: Path, executor: str) -> None:
    """Tasks sharing the process (threads, inline) may crash it: each TaskFinished comes
    only once the task's entry is committed (seen here by another connection), which is
    what lets the segfault test above trust the "done" lines."""
    mod = make_module("announced", ANNOUNCED)
    cache = tmp_path / "announced-cache"
    unstored: list[str] = []

    def check(event: ev.Event) -> None:
        if isinstance(event, ev.TaskFinished):
            store = Store(cache)
            try:
                if store.get_meta(event.task.family.dirname, event.task.id) is None:
                    unstored.append(event.task.expression())
            finally:
                store.close()

    result = checkpoint.run([mod.top()], executor=executor, max_workers=2, cache_dir=cache,
                            subscribers=[check])
    assert len(result.ran) == 21
    assert unstored == []
