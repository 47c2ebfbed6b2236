"""Minimal reproductions of the engine faults the model-based fault test finds (issue 16).

Each test is a hand-written taskfile of two to four tasks and a deterministic interleaving
(a task waits at a hold point until the test lets it go on), run through the real CLI.
The faults the engine fix of issue 16 (99257d7, b2ac4dc) resolved are regression tests
now; those it has not resolved yet (or that came with it) are ``xfail(strict=True)``: when a
fix makes one pass, pytest reports it (XPASS fails a strict xfail), and the mark comes off.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write
from faultkit import env_for, executions, start

from checkpoint.cli import cli

# Helpers of every taskfile below: an O_APPEND execution log, one-shot markers, hold points.
PRELUDE = """
import os, time
from pathlib import Path
from checkpoint import TaskDirectory, requires, task

def _log(text):
    fd = os.open(os.environ["CP_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{text} {os.getpid()}\\n".encode())
    os.close(fd)

def _once(name):
    try:
        os.unlink(name)
    except FileNotFoundError:
        return False
    return True

def _hold(name):
    # With a marker "hold-NAME": say so (at-NAME), then wait for go-NAME.
    if _once(f"hold-{name}"):
        Path(f"at-{name}").touch()
        deadline = time.monotonic() + 120
        while not os.path.exists(f"go-{name}") and time.monotonic() < deadline:
            time.sleep(0.005)
"""

PENDING = "issue 16: engine fix pending"


def _taskfile(tmp_path: Path, body: str) -> Path:
    return write(tmp_path / "taskfile.py", PRELUDE + body)


def _invoke(args: list[str], tmp_path: Path) -> tuple[int, str, str]:
    # No bytecode cache: an edit that keeps the file's size within the same second would
    # otherwise be read from a stale .pyc.
    sys.dont_write_bytecode = True
    try:
        result = CliRunner().invoke(cli, args, env={"CP_EXEC_LOG": str(tmp_path / "exec.log")})
    finally:
        sys.dont_write_bytecode = False
    return result.exit_code, result.stdout, result.stderr


def _wait_file(path: Path, procs: list[subprocess.Popen[str]], limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
            return False
        time.sleep(0.005)
    return True


def _flip(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes([data[100] ^ 0x40]) + data[101:])


def _stored_blob(tmp_path: Path, family: str) -> str:
    """The value file the index names for the family's only entry."""
    from checkpoint.store import Meta

    db = tmp_path / ".cache" / "checkpoint" / f"taskfile.{family}" / "cache.db"
    con = sqlite3.connect(db, timeout=30)
    try:
        (value,) = con.execute("SELECT value FROM Cache WHERE key >= 'e:' AND key < 'e;'").fetchone()
    finally:
        con.close()
    return Meta.from_entry(bytes(value)).blob


def _entries(tmp_path: Path, family: str) -> int:
    db = tmp_path / ".cache" / "checkpoint" / f"taskfile.{family}" / "cache.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return int(con.execute("SELECT COUNT(*) FROM Cache WHERE key >= 'e:' AND key < 'e;'").fetchone()[0])
    finally:
        con.close()


def _blobs(tmp_path: Path, family: str) -> list[Path]:
    return sorted((tmp_path / ".cache" / "checkpoint" / f"taskfile.{family}" / "blobs").glob("*.bin"))


RETRY = """
@task
def m():
    def __() -> str:
        _log("m()")
        return "OLD"
    return __

@task(retries=1)
def main():
    @requires(m())
    def __(mv: str) -> str:
        if _once("fail-once"):
            raise RuntimeError("transient")
        if _once("die-once"):
            os._exit(1)
        _log("main()")
        return mv
    return __
"""


@pytest.mark.parametrize(("fault", "executor"), [("fail", "inline"), ("fail", "thread"), ("die", "process")])
def test_retry_after_prerequisite_reran_gets_the_new_value(tmp_path: Path, fault: str, executor: str) -> None:
    """A task that fails once (or whose worker dies) after its prerequisite re-ran in the
    same run should get the prerequisite's new value, not the one stored before."""
    _taskfile(tmp_path, RETRY)
    assert _invoke(["run", "--executor", executor], tmp_path)[1].strip() == "OLD"
    _taskfile(tmp_path, RETRY.replace('"OLD"', '"NEW"'))
    (tmp_path / f"{fault}-once").touch()
    code, out, err = _invoke(["run", "--executor", executor, "-j", "2"], tmp_path)
    assert (code, out.strip()) == (0, "NEW"), err
    assert _invoke(["cache", "show", "main()"], tmp_path)[1].strip() == "'NEW'"


def test_retry_on_an_empty_cache_does_not_crash(tmp_path: Path) -> None:
    """The same retry on an empty cache should not end in 'Internal error'."""
    _taskfile(tmp_path, RETRY)
    (tmp_path / "fail-once").touch()
    code, out, err = _invoke(["run", "--executor", "inline"], tmp_path)
    assert "Internal error" not in err
    assert (code, out.strip()) == (0, "OLD"), err


DAMAGE = """
@task
def m():
    def __() -> str:
        _log("m()")
        return "OLD"
    return __

@task
def big(i: int):
    def __() -> bytes:
        _log(f"big({i})")
        return bytes([i]) * 100_000
    return __

@task
def main():
    @requires(m())
    @requires([big(0), big(1)])
    def __(mv: str, bigs: list[bytes]) -> str:
        _log("main()")
        return f"{mv}:{sum(len(b) for b in bigs)}"
    return __
"""


def test_damaged_value_file_and_a_rerun_sibling_give_the_new_value(tmp_path: Path) -> None:
    """With one prerequisite edited and another's value file damaged, the run should
    recompute the damaged one and give the dependent both new values."""
    _taskfile(tmp_path, DAMAGE)
    assert _invoke(["run", "--executor", "inline"], tmp_path)[1].strip() == "OLD:200000"
    _taskfile(tmp_path, DAMAGE.replace('"OLD"', '"NEW"'))
    _flip(_blobs(tmp_path, "big")[0])
    code, out, err = _invoke(["run", "--executor", "inline"], tmp_path)
    assert (code, out.strip()) == (0, "NEW:200000"), err


@pytest.mark.parametrize("damage", ["two-files", "blobs-dir"])
def test_two_damaged_value_files_are_recomputed_once(tmp_path: Path, damage: str) -> None:
    """Two damaged value files (or a deleted blobs/) should be recomputed once each, and the run end."""
    _taskfile(tmp_path, DAMAGE)
    assert _invoke(["run", "--executor", "inline"], tmp_path)[0] == 0
    assert _invoke(["clear", "main()"], tmp_path)[0] == 0
    if damage == "two-files":
        for path in _blobs(tmp_path, "big"):
            _flip(path)
    else:
        import shutil

        shutil.rmtree(_blobs(tmp_path, "big")[0].parent)
    log = tmp_path / "exec2.log"
    proc = start(["run", "--executor", "thread"], tmp_path, env_for(tmp_path, log))
    while proc.poll() is None:  # a recompute loop is seen in the log, long before any timeout
        if max(Counter(executions(log)).values(), default=0) > 3:
            proc.kill()
            proc.communicate()
            pytest.fail(f"recompute loop: {Counter(executions(log)).most_common(2)}")
        time.sleep(0.02)
    out, err = proc.communicate()
    assert (proc.returncode, out.strip()) == (0, "OLD:200000"), err
    assert sorted(executions(log)) == ["big(0)", "big(1)", "main()"]


CLEAR = """
@task
def big():
    def __() -> bytes:
        return b"x" * 100_000
    return __

@task
def h():
    def __() -> int:
        _hold("h")
        return 1
    return __

@task
def main():
    @requires(big())
    @requires(h())
    def __(b: bytes, one: int) -> int:
        return len(b) + one
    return __
"""


def test_clear_during_a_run_does_not_crash_it(tmp_path: Path) -> None:
    """`checkpoint clear` of a prerequisite the run has just computed should not crash the run."""
    _taskfile(tmp_path, CLEAR)
    (tmp_path / "hold-h").touch()
    env = env_for(tmp_path, tmp_path / "exec.log")
    proc = start(["run", "--executor", "thread", "-j", "2"], tmp_path, env)
    assert _wait_file(tmp_path / "at-h", [proc])
    deadline = time.monotonic() + 60
    while not _blobs(tmp_path, "big"):  # big() has finished (and written its value file)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cleared = subprocess.run([sys.executable, "-m", "checkpoint", "clear", "-y", "big"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
    assert cleared.returncode == 0, cleared.stderr
    (tmp_path / "go-h").touch()
    out, err = proc.communicate(timeout=60)
    assert "Internal error" not in err, err
    # The run may recompute what was cleared, or report it (naming it).
    reported = proc.returncode == 1 and "big()" in err
    assert reported or (proc.returncode, out.strip()) == (0, "100001"), err


FILES = """
@task
def p():
    @requires(TaskDirectory())
    def __(path: Path) -> str:
        _hold("p")
        for i in range(50):
            (path / f"{i}.txt").write_text("x")
        return str(path)
    return __

@task
def r():
    @requires(p())
    def __(path: str) -> int:
        _hold("r")
        return len(os.listdir(path))
    return __
"""


@pytest.mark.parametrize("how", ["force", "clear"])
def test_data_directory_is_not_emptied_under_a_reader(tmp_path: Path, how: str) -> None:
    """`run --force p` (or `clear p`) while another run's task reads p's data directory
    should not change what that task reads."""
    _taskfile(tmp_path, FILES)
    assert _invoke(["run", "r"], tmp_path)[1].strip() == "50"
    assert _invoke(["clear", "r()"], tmp_path)[0] == 0
    env = env_for(tmp_path, tmp_path / "exec.log")
    (tmp_path / "hold-r").touch()
    reader = start(["run", "--executor", "thread", "r"], tmp_path, env)
    assert _wait_file(tmp_path / "at-r", [reader])
    (tmp_path / "hold-p").touch()
    args = ["run", "--executor", "thread", "--force", "p"] if how == "force" else ["clear", "-y", "p"]
    other = start(args, tmp_path, env)
    # Until the other command has emptied the directory (or, as it should, waits for the
    # reader: then a few seconds pass).
    _wait_file(tmp_path / "at-p", [other], limit=3.0)
    (tmp_path / "go-r").touch()
    out, err = reader.communicate(timeout=60)
    (tmp_path / "go-p").touch()
    other.communicate(timeout=60)
    assert (reader.returncode, out.strip()) == (0, "50"), err


AGAIN = """
import multiprocessing

@task
def big():
    def __() -> bytes:
        _log("big()")
        return b"z" * 100_000
    return __

@task
def reader(i: int):
    if i == 1 and multiprocessing.parent_process() is not None:
        _hold("reader")  # in a worker: submitted, its prerequisite's value not yet read
    @requires(big())
    def __(b: bytes) -> int:
        return len(b) + i
    return __

@task
def main():
    @requires([reader(0), reader(1)])
    def __(xs: list[int]) -> int:
        return sum(xs)
    return __
"""


def test_reader_given_the_damaged_value_before_it_was_recomputed_waits_for_the_new_one(tmp_path: Path) -> None:
    """A reader that was handed a damaged value before another reader found it damaged, and
    reports it only after the value was recomputed, should get the new value, not fail the
    run with "recomputed in this run and is damaged again"."""
    _taskfile(tmp_path, AGAIN)
    assert _invoke(["run", "--executor", "inline"], tmp_path)[0] == 0
    assert _invoke(["clear", "-y", "reader"], tmp_path)[0] == 0
    _flip(_blobs(tmp_path, "big")[0])
    log = tmp_path / "exec2.log"
    damaged = _stored_blob(tmp_path, "big")
    (tmp_path / "hold-reader").touch()
    proc = start(["run", "--executor", "process", "-j", "2"], tmp_path, env_for(tmp_path, log))
    assert _wait_file(tmp_path / "at-reader", [proc])
    deadline = time.monotonic() + 60
    while _stored_blob(tmp_path, "big") == damaged:  # reader(0) found it damaged; the run
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)  # recomputed it, collected it and stored it
    (tmp_path / "go-reader").touch()
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out.strip()) == (0, "200001"), err
    assert executions(log) == ["big()"]


CONCURRENT = """
@task
def big():
    def __() -> bytes:
        _hold("big")
        _log("big()")
        return b"y" * 100_000
    return __

@task
def main():
    @requires(big())
    def __(b: bytes) -> int:
        _log("main()")
        return len(b)
    return __
"""


def _lock_holders(lockfile: Path) -> set[int]:
    inode = f":{lockfile.stat().st_ino} "
    return {int(line.split()[4]) for line in Path("/proc/locks").read_text().splitlines()
            if "POSIX" in line and "->" not in line and inode in line + " "}


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_concurrent_runs_recompute_a_damaged_prerequisite_once(tmp_path: Path) -> None:
    """Three runs that find the same damaged prerequisite should compute it (and its
    dependent) once between them."""
    _taskfile(tmp_path, CONCURRENT)
    assert _invoke(["run"], tmp_path)[0] == 0
    assert _invoke(["clear", "main()"], tmp_path)[0] == 0
    _flip(_blobs(tmp_path, "big")[0])
    log = tmp_path / "exec2.log"
    env = env_for(tmp_path, log)
    (tmp_path / "hold-big").touch()
    first = start(["run", "--executor", "thread"], tmp_path, env)
    assert _wait_file(tmp_path / "at-big", [first])  # the first run recomputes big()
    others = [start(["run", "--executor", "thread"], tmp_path, env) for _ in range(2)]
    lockfile = tmp_path / ".cache" / "checkpoint" / ".lock"
    deadline = time.monotonic() + 60
    while not {p.pid for p in others if p.poll() is None} <= _lock_holders(lockfile):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    (tmp_path / "go-big").touch()
    for proc in (first, *others):
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out.strip()) == (0, "100000"), err
    assert sorted(executions(log)) == ["big()", "main()"]


ADOPT = """
@task
def big():
    def __() -> bytes:
        _hold("big")
        return b"b" * 100_000
    return __

@task
def x():
    @requires(big())
    @requires(TaskDirectory())
    def __(b: bytes, path: Path) -> str:
        (path / "data.txt").write_text(str(len(b)))
        return str(path)
    return __

@task
def slow():
    def __() -> int:
        _hold("slow")
        return 0
    return __

@task
def main():
    @requires(x())
    @requires(slow())
    def __(path: str, zero: int) -> str:
        return (Path(path) / "data.txt").read_text()
    return __
"""

PAUSED_RUN = """
import os, sys, time
from pathlib import Path
from checkpoint import events, run
from checkpoint.taskfile import load_taskfile

def pause(event):  # a subscriber that takes its time after the plan
    if isinstance(event, events.RunPlanned):
        Path("b-planned").touch()
        while not os.path.exists("go-b"):
            time.sleep(0.01)

m = load_taskfile(Path("taskfile.py"))
result = run([m.x()], executor="thread", subscribers=[pause])
print(f"ran {len(result.ran)}, reused {len(result.reused)}", file=sys.stderr)
"""


def test_adopted_entry_keeps_its_data_directory(tmp_path: Path) -> None:
    """A run that planned while a prerequisite was damaged, and reaches a data-directory
    task after another (still running) run recomputed both, should reuse that task's entry
    with its files, not empty its directory first."""
    _taskfile(tmp_path, ADOPT)
    assert _invoke(["run"], tmp_path)[1].strip() == "100000"
    assert _invoke(["clear", "x()", "slow()"], tmp_path)[0] == 0
    _flip(_blobs(tmp_path, "big")[0])
    env = env_for(tmp_path, tmp_path / "exec.log")
    for name in ("hold-big", "hold-slow"):
        (tmp_path / name).touch()
    first = start(["run", "--executor", "thread"], tmp_path, env)
    assert _wait_file(tmp_path / "at-big", [first])  # recomputing the damaged big()
    second = subprocess.Popen([sys.executable, "-c", PAUSED_RUN], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_file(tmp_path / "b-planned", [second])  # planned with big() damaged
    (tmp_path / "go-big").touch()
    deadline = time.monotonic() + 60
    while not _entries(tmp_path, "x"):  # the first run has computed x() and stored it
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    (tmp_path / "go-b").touch()  # the second run builds x() while the first waits in slow()
    out2, err2 = second.communicate(timeout=60)
    (tmp_path / "go-slow").touch()
    out1, err1 = first.communicate(timeout=60)
    assert second.returncode == 0, err2
    _, path, _ = _invoke(["cache", "path", "x()"], tmp_path)
    directory = Path(path.strip())
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    assert files == ["data.txt"], f"the data directory of x() holds {files}; the other run: {err2}"
    assert (first.returncode, out1.strip()) == (0, "100000"), err1


PLAN = """
@task
def leaf(i: int):
    def __() -> int:
        if i == 0:
            _hold("leaf")
        _log(f"leaf({i})")
        return i
    return __

@task
def main():
    @requires([leaf(i) for i in range(5)])
    def __(xs: list[int]) -> int:
        _log("main()")
        return sum(xs)
    return __
"""

SECOND_RUN = """
import os, sys, time
from pathlib import Path
from checkpoint import events, run
from checkpoint.taskfile import load_taskfile

def wait(event):  # a subscriber that takes its time after the plan (a slow progress display)
    if isinstance(event, events.RunPlanned):
        Path("b-planned").touch()
        while not os.path.exists("a-done"):
            time.sleep(0.01)

m = load_taskfile(Path("taskfile.py"))
print(run([m.main()], executor="thread", subscribers=[wait]).values[m.main().id])
"""


def test_run_that_planned_while_another_ran_reuses_its_results(tmp_path: Path) -> None:
    """A run that planned while another run was computing, and starts after that run has
    finished, should reuse its results, not compute every task again (a 0.05-0.15 s
    stagger of two `checkpoint run` does this about one time in three)."""
    _taskfile(tmp_path, PLAN)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log)
    (tmp_path / "hold-leaf").touch()
    first = start(["run", "--executor", "thread"], tmp_path, env)
    assert _wait_file(tmp_path / "at-leaf", [first])
    second = subprocess.Popen([sys.executable, "-c", SECOND_RUN], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_file(tmp_path / "b-planned", [second])
    (tmp_path / "go-leaf").touch()
    out1, err1 = first.communicate(timeout=60)
    (tmp_path / "a-done").touch()
    out2, err2 = second.communicate(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    assert out1.strip() == out2.strip() == "10"
    ran = Counter(executions(log))
    assert max(ran.values()) == 1, f"computed by both runs: {sorted(e for e, n in ran.items() if n > 1)}"



RECOMPUTED = """
@task
def big():
    def __() -> bytes:
        _hold("big")
        _log("big()")
        return b"y" * 100_000
    return __

@task
def d():
    @requires(big())
    @requires(TaskDirectory())
    def __(b: bytes, path: Path) -> int:
        _log("d()")
        (path / "n.txt").write_text(str(len(b)))
        return len(b)
    return __

@task
def c():
    @requires(big())
    def __(b: bytes) -> int:
        _hold("c")
        _log("c()")
        return len(b) + (2 if os.path.exists("c-two") else 1)  # a new value once cleared
    return __

@task
def main():
    @requires(d())
    @requires(c())
    def __(n: int, m: int) -> int:
        _log("main()")
        return n + m
    return __
"""


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_damaged_value_recomputed_to_the_same_bytes_keeps_its_dependents_current(tmp_path: Path) -> None:
    """A large value found damaged and recomputed to the same bytes should keep its stamp:
    its fresh dependents stay current, so a run that plans after the recomputation agrees
    with the run that did it, and main() is computed once between them (the model test's
    concurrent-damage case: with a new stamp, the later run recomputed the data-directory
    dependent d() and then main() again)."""
    _taskfile(tmp_path, RECOMPUTED)
    assert _invoke(["run"], tmp_path)[1].strip() == "200001"
    assert _invoke(["clear", "c()"], tmp_path)[0] == 0
    (tmp_path / "c-two").touch()
    _flip(_blobs(tmp_path, "big")[0])
    damaged = _stored_blob(tmp_path, "big")
    log = tmp_path / "exec2.log"
    env = env_for(tmp_path, log)
    for name in ("hold-big", "hold-c"):
        (tmp_path / name).touch()
    first = start(["run", "--executor", "thread"], tmp_path, env)
    assert _wait_file(tmp_path / "at-big", [first])  # c() found big() damaged: recomputing it
    (tmp_path / "go-big").touch()
    deadline = time.monotonic() + 60
    while _stored_blob(tmp_path, "big") == damaged:  # the recomputed big() is stored
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    assert _wait_file(tmp_path / "at-c", [first])  # the first run computes c() now
    second = start(["run", "--executor", "thread"], tmp_path, env)  # plans after big() was stored
    lockfile = tmp_path / ".cache" / "checkpoint" / ".lock"
    while second.poll() is None and second.pid not in _lock_holders(lockfile):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    (tmp_path / "go-c").touch()
    for proc in (first, second):
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out.strip()) == (0, "200002"), err
    ran = Counter(executions(log))
    assert ran == Counter(["big()", "c()", "main()"]), f"computed: {sorted(ran.items())}"
    code, out, err = _invoke(["ls", "main", "--json"], tmp_path)
    assert code == 0, err
    assert {row["task"]: row["state"] for row in json.loads(out)["tasks"]} == dict.fromkeys(
        ["big()", "d()", "c()", "main()"], "fresh")


PREPARED = """
@task
def big():
    def __() -> bytes:
        _hold("big")
        _log("big()")
        return b"p" * 100_000
    return __

@task
def x():
    @requires(big())
    @requires(TaskDirectory())
    def __(b: bytes, path: Path) -> str:
        _log("x()")
        (path / "n.txt").write_text(str(len(b)))
        return str(path)
    return __

@task
def main():
    @requires(x())
    def __(path: str) -> str:
        _log("main()")
        return (Path(path) / "n.txt").read_text()
    return __
"""


def _task_locks(lockfile: Path, pid: int) -> list[int]:
    """The task bytes ``pid`` holds locked exclusively in the run lock file (Linux)."""
    inode = f":{lockfile.stat().st_ino} "
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if "POSIX" in f and "->" not in f and inode in line + " " and f[3] == "WRITE" and int(f[4]) == pid:
            if int(f[6]) >= 2:
                found.append(int(f[6]))
    return found


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_run_that_emptied_a_data_directory_adopts_what_another_run_stored_since(tmp_path: Path) -> None:
    """A run that emptied a task's data directory (its prerequisite then turned out damaged),
    and finds that another run has computed the task since (emptying and filling the
    directory itself), should reuse that entry, not compute the task a second time (the
    model test's concurrent-damage case, seed 8 step 3)."""
    _taskfile(tmp_path, PREPARED)
    assert _invoke(["run"], tmp_path)[1].strip() == "100000"
    assert _invoke(["clear", "x()"], tmp_path)[0] == 0
    _flip(_blobs(tmp_path, "big")[0])
    log = tmp_path / "exec2.log"
    env = env_for(tmp_path, log)
    (tmp_path / "hold-big").touch()
    first = start(["run", "--executor", "thread"], tmp_path, env)
    # x() was handed big()'s damaged value (its directory emptied): big() is recomputed.
    assert _wait_file(tmp_path / "at-big", [first])
    second = start(["run", "--executor", "thread"], tmp_path, env)
    lockfile = tmp_path / ".cache" / "checkpoint" / ".lock"
    deadline = time.monotonic() + 60
    while not _task_locks(lockfile, second.pid):  # the second run has taken x()
        assert second.poll() is None and time.monotonic() < deadline, second.communicate()
        time.sleep(0.005)
    (tmp_path / "go-big").touch()
    for proc in (first, second):
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out.strip()) == (0, "100000"), err
    ran = Counter(executions(log))
    assert ran == Counter(["big()", "x()", "main()"]), f"computed: {sorted(ran.items())}"
