"""The Dask executor: a real LocalCluster (2 worker processes), a real `dask scheduler` and
`dask worker` in subprocesses, and the message shown when the extra is missing."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from conftest import write

from checkpoint import events as ev
from checkpoint import run
from checkpoint._dask import run_dask_batch
from checkpoint._worker import WorkItem
from checkpoint.cli import cli, main
from checkpoint.errors import SharedCacheError, UsageError
from checkpoint.taskfile import load_taskfile

try:
    import distributed
except ImportError:  # pragma: no cover - the dev extra installs it
    distributed = None

needs_dask = pytest.mark.skipif(
    distributed is None,
    reason="distributed is not installed (pip install 'checkpoint-tool[dask]', or the dev extra)",
)

TASKFILE = """
    import os, socket, time
    from dataclasses import dataclass
    from pathlib import Path
    from checkpoint import TaskDirectory, requires, task

    class Boom(Exception):
        pass

    @dataclass
    class Point:
        x: int

    @task
    def point(x):
        def __():
            return Point(x)
        return __

    @task
    def choose(n, k):
        if 0 < k < n:
            @requires(choose(n - 1, k - 1))
            @requires(choose(n - 1, k))
            def __(a, b):
                return a + b
        else:
            def __():
                return 1
        return __

    @task
    def where(i):
        def __():
            print("running on", socket.gethostname())
            return socket.gethostname(), os.getpid()
        return __

    @task
    def boom():
        def __():
            raise Boom("no luck")
        return __

    @task
    def after_boom():
        @requires(boom())
        def __(x):
            return x
        return __

    @task(queue="narrow")
    def span(i):
        def __():
            start = time.time()
            time.sleep(0.05)
            return start, time.time()
        return __

    @task
    def flaky(counter):
        def __():
            path = Path(counter)
            n = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(n))
            print(f"attempt {n} on", socket.gethostname())
            if n < 2:
                raise Boom(f"attempt {n} fails")
            return n
        return __

    @task(queue="narrow")
    def maybe(i):
        def __():
            if i == 1:
                raise Boom(f"maybe {i}")
            return i
        return __

    @task
    def nap(i):
        def __():
            time.sleep(0.1 * i)
            return i
        return __

    @task
    def naps():
        @requires([nap(i) for i in range(1, 6)])
        def __(xs):
            return xs
        return __

    @task
    def snooze(i):
        def __():
            time.sleep(0.3)
            return i
        return __

    @task
    def snoozes():
        @requires([snooze(i) for i in range(10)])
        def __(xs):
            return xs
        return __

    @task
    def big(n):
        def __():
            return b"x" * n
        return __

    @task
    def size_of_big(n):
        @requires(big(n))
        def __(data):
            return len(data)
        return __

    @task
    def writes():
        @requires(TaskDirectory())
        def __(path):
            (path / "out.txt").write_text(str(os.getpid()))
            return str(path)
        return __
"""


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One LocalCluster with 2 single-threaded worker processes, shared by this module."""
    if distributed is None:
        pytest.skip("distributed is not installed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def tasks(tmp_path: Path) -> ModuleType:
    """The test taskfile, loaded as `checkpoint` loads one (so its code travels by value)."""
    return load_taskfile(write(tmp_path / "taskfile.py", TASKFILE))


def test_missing_extra_gives_install_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Without distributed, --executor dask should say how to install the extra and exit 2."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    write(tmp_path / "taskfile.py", TASKFILE)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--executor", "dask", "choose(2, 1)"])
    assert exit_info.value.code == 2
    assert "pip install 'checkpoint-tool[dask]'" in capsys.readouterr().err
    tasks = load_taskfile(tmp_path / "taskfile.py")
    with pytest.raises(UsageError, match=r"checkpoint-tool\[dask\]"):
        run([tasks.choose(2, 1)], executor="dask://127.0.0.1:1")


def test_worker_refuses_task_whose_data_dir_it_cannot_see(tmp_path: Path) -> None:
    """A worker should fail a TaskDirectory task whose directory it cannot see, clearly."""
    import cloudpickle

    item = WorkItem("abc", lambda path: 1, [tmp_path / "nowhere"], 0)
    [out] = run_dask_batch(cloudpickle.dumps(([item], {})))
    assert isinstance(out.error, SharedCacheError)
    assert "must be on a filesystem that the coordinator and every worker share" in str(out.error)


@needs_dask
def test_client_executor_runs_tasks_on_workers(client: Any, tasks: ModuleType) -> None:
    """run(executor=client.get_executor()) should build on the workers and reuse results next time."""
    seen: list[ev.Event] = []
    result = run([tasks.choose(5, 2), tasks.where(1)], executor=client.get_executor(),
                 subscribers=[seen.append])
    assert result.values[tasks.choose(5, 2).id] == 10
    host, pid = result.values[tasks.where(1).id]
    worker_pids = set(client.run(os.getpid).values())
    assert pid in worker_pids and host == socket.gethostname()
    assert sum(isinstance(e, ev.TaskFinished) for e in seen) == len(result.ran) == 12
    [finished] = [e for e in seen if isinstance(e, ev.TaskFinished) and e.task == tasks.where(1)]
    assert finished.output == f"running on {host}\n"  # captured on the worker
    assert finished.worker == f"{host}:{pid}"  # the run history's "where"
    again = run([tasks.choose(5, 2)], executor=client.get_executor())
    assert again.ran == [] and again.values[tasks.choose(5, 2).id] == 10
    # Only the coordinator opens the store's SQLite index: workers never import diskcache.
    assert not any(client.run(lambda: "diskcache" in sys.modules).values())


@needs_dask
def test_taskfile_class_values_load_as_that_class_in_later_runs(
    client: Any, tasks: ModuleType, tmp_path: Path
) -> None:
    """A stored instance of a taskfile class should load as that very class in a later process."""
    assert tasks.point(3).run(executor=client.get_executor()) == tasks.Point(3)
    write(tmp_path / "later.py", """
        from pathlib import Path
        from checkpoint import run
        from checkpoint.taskfile import load_taskfile
        m = load_taskfile(Path("taskfile.py"))
        result = run([m.point(3)], executor="inline")
        print(result.ran == [], type(result.values[m.point(3).id]) is m.Point)
    """)
    later = subprocess.run([sys.executable, "later.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert later.stdout.split() == ["True", "True"], later.stderr


@needs_dask
def test_dask_address_connects_and_leaves_cluster_running(client: Any, tasks: ModuleType) -> None:
    """dask://HOST:PORT, tcp://HOST:PORT and a Client should use that scheduler; only
    checkpoint's own clients are closed."""
    address = client.scheduler.address.removeprefix("tcp://")
    assert tasks.choose(4, 2).run(executor=f"dask://{address}") == 6
    result = run([tasks.choose(5, 1)], executor=f"tcp://{address}")
    assert result.values[tasks.choose(5, 1).id] == 5 and len(result.ran) == 4
    assert tasks.choose(6, 1).run(executor=client) == 6
    assert client.status == "running"
    # ours and the scheduler's own "fire-and-forget" client (it forgets closed ones in a while)
    deadline = time.monotonic() + 60
    while client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.clients)) > 2:
        assert time.monotonic() < deadline, "checkpoint's clients were not closed"
        time.sleep(0.05)
    assert len(client.nthreads()) == 2


@needs_dask
def test_failures_reraise_taskfile_exception_and_keep_going(client: Any, tasks: ModuleType) -> None:
    """A task's own exception class (defined in the taskfile) should come back; -k goes on."""
    with pytest.raises(tasks.Boom, match="no luck"):
        tasks.after_boom().run(executor=client.get_executor())
    result = run([tasks.after_boom(), tasks.choose(3, 1)], executor=client.get_executor(),
                 keep_going=True, raise_on_failure=False)
    assert [type(e) for e in result.failed.values()] == [tasks.Boom]
    assert result.skipped == [tasks.after_boom()]
    assert result.values[tasks.choose(3, 1).id] == 3


@needs_dask
def test_a_worker_computes_with_what_the_coordinator_captured(
        client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started without LR (as on a cluster's nodes), a run with LR=0.5: the outer
    function's LR (captured, and recorded as the task's input) is what the worker computes
    with; the worker does not call the outer function again with its own environment."""
    if any(v is not None for v in client.run(lambda: os.environ.get("LR")).values()):
        pytest.skip("the cluster's workers have LR set")
    env_tasks = load_taskfile(write(tmp_path / "envtasks.py", """
        import os
        from checkpoint import task

        @task
        def train(seed: int):
            lr = float(os.environ.get("LR", "0.1"))
            def __():
                return lr * 10 + seed
            return __
    """))
    monkeypatch.setenv("LR", "0.5")
    assert env_tasks.train(1).run(executor=client.get_executor()) == 6.0


@needs_dask
def test_rate_limit_holds_on_dask(client: Any, tasks: ModuleType) -> None:
    """rate_limits={'narrow': 1} should keep the queue's tasks from overlapping on two workers."""
    spans = [tasks.span(i) for i in range(4)]
    result = run(spans, executor=client.get_executor(), rate_limits={"narrow": 1})
    intervals = sorted(result.values[t.id] for t in spans)
    assert all(end <= nxt_start for (_, end), (nxt_start, _) in zip(intervals, intervals[1:], strict=False))


@needs_dask
def test_retries_on_dask_keep_each_attempts_output(client: Any, tasks: ModuleType, tmp_path: Path) -> None:
    """run(retries=1) should re-run a task that failed on a worker and keep both attempts' output."""
    from checkpoint.store import Store

    task = tasks.flaky(str(tmp_path / "count"))
    assert run([task], executor=client.get_executor(), retries=1).values[task.id] == 2
    log = Store.open().get_log(task.family.dirname, task.id) or ""
    host = socket.gethostname()
    assert f"attempt 1 on {host}" in log and "attempt 1 fails" in log and f"attempt 2 on {host}" in log


@needs_dask
def test_failed_task_gives_back_its_queue_slot_on_dask(client: Any, tasks: ModuleType) -> None:
    """With keep-going, a task failing on a queue limited to 1 should not block the queue's others."""
    maybes = [tasks.maybe(i) for i in range(4)]
    result = run(maybes, executor=client.get_executor(), rate_limits={"narrow": 1},
                 keep_going=True, raise_on_failure=False)
    assert [type(e) for e in result.failed.values()] == [tasks.Boom]
    assert {result.values[t.id] for t in maybes if t.id in result.values} == {0, 2, 3}


@needs_dask
def test_task_directory_written_by_worker(client: Any, tasks: ModuleType, cache_dir: Path) -> None:
    """A worker should write into the task's data directory in the shared cache."""
    path = Path(tasks.writes().run(executor=client.get_executor()))
    assert path.is_relative_to(cache_dir)
    assert int((path / "out.txt").read_text()) in set(client.run(os.getpid).values())


@needs_dask
def test_cache_invisible_to_workers_fails_clearly(
    client: Any, tasks: ModuleType, monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    """When workers cannot see the cache, a TaskDirectory run should fail naming them and the fix."""
    from checkpoint import _dask

    monkeypatch.setattr(_dask, "write_marker", lambda marker, token: None)
    with pytest.raises(SharedCacheError) as info:
        tasks.writes().run(executor=client.get_executor())
    message = str(info.value)
    assert "2 Dask workers cannot see the cache directory" in message
    assert str(cache_dir) in message and "--cache-dir or CP_CACHE_DIR" in message


@needs_dask
@pytest.mark.parametrize("shared", [True, False], ids=["shared-cache", "unshared-cache"])
def test_large_results_reach_dependents(
    client: Any, tasks: ModuleType, monkeypatch: pytest.MonkeyPatch, cache_dir: Path, shared: bool
) -> None:
    """Large results should be stored and reach dependents whether or not workers see the cache."""
    from checkpoint import _dask

    if not shared:
        monkeypatch.setattr(_dask, "write_marker", lambda marker, token: None)
    assert tasks.size_of_big(100_000).run(executor=client.get_executor()) == 100_000
    assert len(list(cache_dir.glob("checkpoint/*/blobs/*.bin"))) == 1
    assert run([tasks.size_of_big(100_000)], executor="inline").ran == []


@needs_dask
def test_interrupt_cancels_batches_but_not_the_callers_cluster(client: Any, tasks: ModuleType) -> None:
    """Ctrl-C should store what finished, cancel the rest and leave the caller's client usable."""

    def interrupt(event: ev.Event) -> None:
        if isinstance(event, ev.TaskFinished):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run([tasks.naps()], executor=client.get_executor(), subscribers=[interrupt])
    result = run([tasks.naps()], executor=client.get_executor())
    assert result.values[tasks.naps().id] == [1, 2, 3, 4, 5]
    assert 1 <= len(result.reused) < 5


LOG_LEVEL_TASK = """

    @task
    def worker_log_level():
        def __():
            import logging
            handlers = logging.getLogger("distributed").handlers
            return min(h.level for h in handlers if isinstance(h, logging.StreamHandler))
        return __
"""


@needs_dask
def test_cli_local_cluster_and_no_leftover_processes(runner: Any, tmp_path: Path) -> None:
    """`checkpoint run --executor dask -j 2` should build on its own cluster and shut it down."""
    import psutil

    write(tmp_path / "taskfile.py", TASKFILE + LOG_LEVEL_TASK)
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    result = runner.invoke(cli, ["run", "--executor", "dask", "-j", "2", "choose(4, 2)",
                                 "worker_log_level()"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["6", str(logging.CRITICAL)]  # no shutdown noise on stderr
    # (multiprocessing's resource tracker is started once and serves this process until it ends)
    new = [p for p in me.children(recursive=True)
           if p.pid not in before and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())]
    assert _still_running(new) == []


def _still_running(processes: list[Any], timeout: float = 60.0) -> list[int]:
    """Wait (generously: the machine may be loaded) for processes to end; return the pids left."""
    import psutil

    def alive(p: psutil.Process) -> bool:
        try:
            return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in processes if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return [p.pid for p in left]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_dask
def test_dask_worker_subprocess_runs_taskfile_it_never_imported(tmp_path: Path) -> None:
    """A plain `dask worker` elsewhere should run a taskfile (and its helper module) by value."""
    project = tmp_path / "project"
    project.mkdir()
    write(project / "helpers.py", """
        from dataclasses import dataclass

        @dataclass
        class Point:
            x: int
            y: int

        def norm1(p):
            return abs(p.x) + abs(p.y)
    """)
    write(project / "taskfile.py", """
        import os
        from checkpoint import TaskDirectory, requires, task
        from helpers import Point, norm1

        @task
        def point(i):
            def __():
                return Point(i, -i)
            return __

        @task
        def main():
            @requires([point(i) for i in range(3)])
            @requires(TaskDirectory())
            def __(points, path):
                (path / "cwd.txt").write_text(os.getcwd())
                return sum(norm1(p) for p in points)
            return __
    """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CP_CACHE_DIR")}
    bindir = Path(sys.executable).parent
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"],
            cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        procs.append(subprocess.Popen(
            [str(bindir / "dask"), "worker", f"tcp://{address}", "--nthreads", "2",
             "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
            cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        with distributed.Client(f"tcp://{address}", timeout=30) as watcher:
            watcher.wait_for_workers(1, timeout=30)
        # One prerequisite stored by a local run: the worker must resolve its class by name.
        local = subprocess.run([str(bindir / "checkpoint"), "run", "point(1)"], cwd=project,
                               env=env, capture_output=True, text=True, timeout=120)
        assert local.returncode == 0, local.stderr
        done = subprocess.run(
            [str(bindir / "checkpoint"), "run", "--executor", f"dask://{address}", "main"],
            cwd=project, env=env, capture_output=True, text=True, timeout=120,
        )
        # A driver script that imports the taskfile as a plain module works the same way.
        write(project / "driver.py", f"""
            from taskfile import main
            if __name__ == "__main__":
                print(main().run(executor="dask://{address}", force=True))
        """)
        driven = subprocess.run(
            [sys.executable, "driver.py"], cwd=project, env=env, capture_output=True, text=True,
            timeout=120,
        )
    finally:
        for proc in reversed(procs):  # the worker first, then its scheduler
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
    assert driven.returncode == 0, driven.stderr
    assert driven.stdout.strip() == "6"
    # The run history names the Dask worker process that ran the task.
    log = subprocess.run([str(bindir / "checkpoint"), "log", "point(2)"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=60)
    assert f" on {socket.gethostname()}:{procs[1].pid}," in log.stderr, log.stdout + log.stderr
    # Started elsewhere (so it cannot import the taskfile from its directory), the worker
    # still runs the task in the project root, which it can see here (as every executor).
    [written] = (project / ".cache").glob("checkpoint/taskfile.main/data/*/cwd.txt")
    assert Path(written.read_text()).resolve() == project.resolve()



@needs_dask
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_local_cluster_exits_130_quietly_and_leaves_no_process(
    tmp_path: Path, signum: int, code: int
) -> None:
    """Ctrl-C (SIGINT to the process group) or SIGTERM should exit 130/143, store what finished,
    and leave no worker tracebacks or orphans."""
    import psutil

    from checkpoint.store import Store

    write(tmp_path / "taskfile.py", TASKFILE)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "checkpoint"), "run", "--executor", "dask", "-j", "2",
         "snoozes"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    store = Store(tmp_path / ".cache")
    deadline = time.monotonic() + 120  # generous: the suite may run on a loaded machine
    while store.count_entries("taskfile.snooze") == 0:  # until results are being stored
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    store.close()
    workers = psutil.Process(proc.pid).children(recursive=True)
    if signum == signal.SIGINT:  # Ctrl-C reaches the whole foreground process group
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    found = re.search(r"interrupted: (\d+) done, (\d+) not run", err)
    assert found and int(found[1]) >= 1 and int(found[1]) + int(found[2]) == 11, err
    store = Store(tmp_path / ".cache")
    assert store.count_entries("taskfile.snooze") == int(found[1])  # "done" is what was stored
    store.close()
    assert len(workers) >= 2
    assert _still_running(workers) == [], "Dask worker processes outlived the run"


@needs_dask
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_ends_processes_tasks_started_on_local_cluster(tmp_path: Path, signum: int) -> None:
    """After Ctrl-C or SIGTERM no process a task started on checkpoint's LocalCluster is left,
    and a task's child does not inherit an ignored SIGINT."""
    from faultkit import env_for, executions, start, wait_dead
    from test_interrupts import CHILDREN_TASKFILE, _ignores_sigint

    write(tmp_path / "taskfile.py", CHILDREN_TASKFILE)
    children = tmp_path / "children.log"
    proc = start(["run", "--executor", "dask", "-j", "2"], tmp_path,
                 env_for(tmp_path, CP_CHILD_LOG=str(children)))
    sleeps: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(executions(children)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        sleeps = {int(line.split()[0]) for line in children.read_text().splitlines()}
        assert not any(_ignores_sigint(pid) for pid in sleeps)
        if signum == signal.SIGINT:  # Ctrl-C reaches the whole foreground process group
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signum, err
        assert not wait_dead(sleeps), "processes started by tasks outlived the run"
    finally:
        for pid in (proc.pid, *sleeps):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@needs_dask
def test_time_limit_fails_the_task_and_the_others_go_on(client: Any, tasks: ModuleType) -> None:
    """A Dask task past its time limit fails as timed out (its thread cannot be stopped, which
    the message says); the other tasks are built."""
    from checkpoint.errors import TaskTimeoutError

    result = run([tasks.nap(30), tasks.choose(3, 1)], executor=client.get_executor(),
                 timeout=0.3, keep_going=True, raise_on_failure=False)
    [error] = result.failed.values()
    assert isinstance(error, TaskTimeoutError)
    assert "nap(30)" in str(error) and "a thread, which cannot be stopped" in str(error)
    assert result.values[tasks.choose(3, 1).id] == 3


ROWS = """
    import time
    from pathlib import Path
    from checkpoint import Product, requires, task

    @task
    def rows(where):
        @requires(Product(where + "/table.csv"))
        def __(out):
            here = Path(where)
            if (here / "slow").exists():  # an attempt that runs on past its time limit
                (here / "running").touch()
                end = time.time() + float((here / "slow").read_text())
                while time.time() < end and not (here / "release").exists():
                    time.sleep(0.02)
                with open(out, "a") as f:
                    f.write("late\\n")
                (here / "running").unlink()
                return None
            with open(out, "a") as f:
                f.write("row\\n")
            return [(here / "running").exists(), out.read_text()]
        return __
"""


@needs_dask
def test_a_cluster_serving_many_runs_waits_for_an_attempt_abandoned_at_its_time_limit(
    client: Any, tmp_path: Path
) -> None:
    """An attempt given up at its time limit runs on in a worker's thread: the next run on
    the same cluster (another process, as far as that thread is concerned) waits for it to
    end before running the task, so that the two never write into the same files."""
    from checkpoint.errors import TaskTimeoutError

    tasks = load_taskfile(write(tmp_path / "taskfile.py", ROWS))
    here = tmp_path / "data"
    here.mkdir()
    (here / "slow").write_text("2.8")  # ends 0.8 s after it is given up, within its limit again
    first = run([tasks.rows(str(here))], executor=client.get_executor(), timeout=2,
                raise_on_failure=False)
    assert isinstance(first.failed[tasks.rows(str(here)).id], TaskTimeoutError)
    (here / "slow").unlink()
    assert (here / "running").exists()  # the abandoned attempt still runs
    second = run([tasks.rows(str(here))], executor=client.get_executor())
    assert second.values[tasks.rows(str(here)).id] == [False, "row\n"]
    assert (here / "table.csv").read_text() == "row\n"


@needs_dask
def test_a_cluster_serving_many_runs_fails_a_task_whose_abandoned_attempt_hangs(
    client: Any, tmp_path: Path
) -> None:
    """The wait is bounded, as for a thread of the same process: still running once its
    time limit has passed again since it was given up, the earlier attempt counts as hung
    and the task fails, its Product untouched."""
    from checkpoint.errors import TaskStillRunningError, TaskTimeoutError

    tasks = load_taskfile(write(tmp_path / "taskfile.py", ROWS))
    here = tmp_path / "data"
    here.mkdir()
    (here / "slow").write_text("60")
    try:
        first = run([tasks.rows(str(here))], executor=client.get_executor(), timeout=0.5,
                    raise_on_failure=False)
        assert isinstance(first.failed[tasks.rows(str(here)).id], TaskTimeoutError)
        (here / "slow").unlink()
        second = run([tasks.rows(str(here))], executor=client.get_executor(),
                     raise_on_failure=False)
        error = second.failed[tasks.rows(str(here)).id]
        assert isinstance(error, TaskStillRunningError), error
        assert "still runs on the Dask worker" in str(error) and error.limit == 0.5
        assert not (here / "table.csv").exists() or "row" not in (here / "table.csv").read_text()
    finally:
        (here / "release").touch()  # the abandoned attempt ends
        for _ in range(250):
            if not (here / "running").exists():
                break
            time.sleep(0.02)


@needs_dask
def test_unreachable_scheduler_is_a_usage_error(tasks: ModuleType) -> None:
    """dask://HOST:PORT with nothing listening should say what to check, as a UsageError."""
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        with pytest.raises(UsageError, match=r"Cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:1\b"):
            tasks.choose(2, 1).run(executor="dask://127.0.0.1:1")
    for empty in ("dask://", "tcp://"):  # not a local cluster
        with pytest.raises(UsageError, match=f"Executor '{empty}' names no scheduler"):
            tasks.choose(2, 1).run(executor=empty)


@needs_dask
def test_a_workers_address_is_a_usage_error_saying_so(
    client: Any, tasks: ModuleType, runner: Any, tmp_path: Path
) -> None:
    """dask://<a Dask worker's address> (both print tcp://... lines) should say that the
    address is a worker's, not a scheduler's: a UsageError (exit 2), no traceback."""
    worker = next(iter(client.scheduler_info()["workers"])).removeprefix("tcp://")
    with pytest.raises(UsageError, match=(
            rf"Cannot connect to the Dask scheduler at tcp://{re.escape(worker)}: "
            r"the address answers, but as a Dask worker \(Worker\), not a scheduler")):
        tasks.choose(2, 1).run(executor=f"dask://{worker}")
    result = runner.invoke(cli, ["run", "--no-progress", "--executor", f"dask://{worker}",
                                 "choose(2, 1)"])
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and "DAG" not in result.stderr, result.stderr
    assert "not a scheduler" in result.stderr


@needs_dask
def test_an_address_that_never_answers_the_handshake_is_a_usage_error_in_time(
    tasks: ModuleType,
) -> None:
    """A server that accepts the connection but never answers (an HTTP server waits for a
    line) should give up after distributed's connect timeout, not hang."""
    import threading

    import dask

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    port = server.getsockname()[1]
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
            with pytest.raises(UsageError, match=(
                    rf"Cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:{port}: it "
                    r"accepted the connection but did not answer as a Dask scheduler")):
                tasks.choose(2, 1).run(executor=f"dask://127.0.0.1:{port}")
    finally:
        for sock in (*accepted, server):
            sock.close()


@needs_dask
def test_lost_workers_and_cancellations_become_worker_died_errors(client: Any) -> None:
    """KilledWorker, or a batch Dask cancelled on its own, should fail each task as WorkerDiedError."""
    from concurrent.futures import Future

    from distributed.scheduler import KilledWorker

    from checkpoint._dask import adapter_for_executor
    from checkpoint.errors import WorkerDiedError

    adapter = adapter_for_executor(client.get_executor(), None)
    assert adapter.workers == adapter.prefetch == 2  # a batch queued behind each running one
    items = [WorkItem("a", None, [], 0), WorkItem("b", None, [], 0)]
    for make in (lambda f: f.set_exception(KilledWorker("k", SimpleNamespace(address="tcp://w:1"), 3)), lambda f: f.cancel()):
        inner: Future[Any] = Future()
        outer: Future[Any] = Future()
        make(inner)
        adapter._transfer(inner, outer, items)
        outcomes = outer.result()
        assert [o.id for o in outcomes] == ["a", "b"]
        assert all(isinstance(o.error, WorkerDiedError) for o in outcomes)
    adapter.shutdown()
    assert client.status == "running"  # the caller's client stays open


@needs_dask
def test_tornado_report_of_a_cancelled_batch_is_dropped_but_other_errors_are_not(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelling batches on Ctrl-C should not print tornado's FutureCancelledError traceback
    (seen in CI after an interrupt), nor the relay's InvalidStateError on a future the run
    cancelled (seen here on SIGTERM); any other callback error still shows."""
    import logging
    from concurrent.futures import InvalidStateError

    from distributed.client import FutureCancelledError

    from checkpoint._dask import adapter_for_executor

    adapter_for_executor(client.get_executor(), None).shutdown()
    logger = logging.getLogger("tornado.application")
    cancelled = InvalidStateError("CANCELLED: <Future at 0x7f81578ad250 state=cancelled>")
    for exc in (FutureCancelledError("checkpoint-batch-x", "unknown"), cancelled, ValueError("real")):
        try:
            raise exc
        except Exception:
            logger.exception("Exception in callback %r", "cascade")
    assert [r.exc_info[1].__class__.__name__ for r in caplog.records if r.exc_info] == ["ValueError"]


@needs_dask
def test_taskfile_that_cannot_be_pickled_whole_still_runs(client: Any, tmp_path: Path) -> None:
    """A taskfile holding a lock (unused by tasks) should have its task code sent with each batch."""
    tasks = load_taskfile(write(tmp_path / "taskfile.py", """
        import threading
        from checkpoint import requires, task

        _lock = threading.Lock()

        @task
        def one(i):
            def __():
                return i
            return __

        @task
        def total():
            @requires([one(i) for i in range(3)])
            def __(xs):
                return sum(xs)
            return __
    """))
    assert tasks.total().run(executor=client.get_executor()) == 3


@needs_dask
def test_script_without_main_guard_gets_a_clear_message(tmp_path: Path) -> None:
    """A script running executor='dask' at import time should be told to add a __main__ guard."""
    script = write(tmp_path / "script.py", """
        from checkpoint import task

        @task
        def f():
            def __():
                return 1
            return __

        print(f().run(executor="dask", max_workers=1))
    """)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "put that code under `if __name__ == '__main__':`" in done.stderr
    assert "bootstrapping phase" not in done.stderr


@needs_dask
def test_a_cluster_serving_many_runs_uses_the_new_code_of_a_package_module(
    client: Any, tmp_path: Path
) -> None:
    """Repro 10 (/tmp/adv2): a worker imports a module of a project package (pkg/impl.py,
    which travels by reference) in one run and keeps it. After an edit and a reload in the
    session, the re-run must compute with the new code, not store the old code's result
    under the new fingerprint."""
    import importlib

    client.run(lambda: sys.path.insert(0, str(tmp_path)))
    (tmp_path / "pkg10").mkdir()
    write(tmp_path / "pkg10" / "__init__.py", "")
    write(tmp_path / "pkg10" / "impl.py", "def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        tasks = load_taskfile(write(tmp_path / "taskfile.py", """
            from checkpoint import task
            from pkg10.impl import f

            @task
            def a(i: int):
                def __():
                    return (f(), i)
                return __
        """))
        assert tasks.a(0).run(executor=client.get_executor()) == (1, 0)
        write(tmp_path / "pkg10" / "impl.py", "def f():\n    return 2\n")
        st = os.stat(tmp_path / "pkg10" / "impl.py")
        os.utime(tmp_path / "pkg10" / "impl.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        importlib.reload(sys.modules["pkg10.impl"])
        tasks = load_taskfile(tmp_path / "taskfile.py")
        assert tasks.a(0).run(executor=client.get_executor()) == (2, 0)
        assert tasks.a(1).run(executor=client.get_executor()) == (2, 1)
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("pkg10", "pkg10.impl"):
            sys.modules.pop(name, None)


@needs_dask
def test_a_task_that_cannot_be_pickled_fails_alone(client: Any, tmp_path: Path) -> None:
    """A class task holding a lock cannot go to a Dask worker: it fails clearly, its
    batch-mates run."""
    from checkpoint.errors import UnpicklableTaskError

    tasks = load_taskfile(write(tmp_path / "taskfile.py", """
        import threading
        from checkpoint import task

        @task
        def fine(i):
            def __():
                return i
            return __

        @task(version="1")
        class Held:
            def __init__(self):
                self.gate = threading.Lock()
            def run(self):
                return 1
    """))
    result = run([tasks.Held(), tasks.fine(1), tasks.fine(2)], executor=client.get_executor(),
                 keep_going=True, raise_on_failure=False)
    [error] = result.failed.values()
    assert isinstance(error, UnpicklableTaskError) and "holds self.gate" in str(error)
    assert {repr(t) for t in result.ran} == {"fine(1)", "fine(2)"}


def test_tasks_of_one_batch_do_not_share_a_captured_object(tmp_path: Path) -> None:
    """adv6 §3 on a Dask worker: the tasks of a batch, pickled together, share again there
    what they shared on the coordinator (a config from one caching loader); each completes
    its own copy (the same for a process pool's batch: tests/test_call_values.py)."""
    import cloudpickle

    from checkpoint._codec import load

    params: dict[str, int] = {}

    def fit(seed: int) -> Any:
        def inner() -> int:
            params.setdefault("seed", seed)
            return params["seed"]
        return inner

    items = [WorkItem(f"fit{s}", fit(s), [], 0) for s in range(3)]
    outcomes = run_dask_batch(cloudpickle.dumps((items, {})), cwd=str(tmp_path))
    assert [load((out.payload, False)) for out in outcomes] == [0, 1, 2]  # type: ignore[union-attr]
    assert params == {}

