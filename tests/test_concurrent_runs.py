"""Two `checkpoint run` processes on one cache: both correct, no task computed twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import write
from faultkit import env_for, executions, start

from checkpoint.store import Store

TASKFILE = """
    import os, time
    from checkpoint import requires, task

    def _log(text):
        fd = os.open(os.environ["CP_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{text} {os.getpid()}\\n".encode())
        os.close(fd)

    @task
    def step(i):
        def __():
            if i == int(os.environ.get("CP_SLOW_STEP", "-1")):
                time.sleep(120)  # held (with its lock) until the test kills this run
            _log(f"step({i})")
            time.sleep(0.15)
            return bytes([i]) * (i * 3000)
        return __

    @task
    def main():
        @requires([step(i) for i in range(23)])
        def __(values):
            _log("main()")
            return sum(len(v) for v in values)
        return __
"""
EXPECTED = str(sum(i * 3000 for i in range(23)))


@pytest.mark.parametrize("delay", [0.0, 0.6], ids=["together", "staggered"])
def test_two_concurrent_runs_compute_each_task_once(tmp_path: Path, delay: float) -> None:
    """Two runs of the same 24-task graph on one cache should both succeed with 24 executions in all."""
    write(tmp_path / "taskfile.py", TASKFILE)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log)
    first = start(["run", "-j", "2", "--no-progress"], tmp_path, env)
    time.sleep(delay)
    second = start(["run", "-j", "2", "--no-progress"], tmp_path, env)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert out1.strip() == out2.strip() == EXPECTED
    ran = executions(log)
    print(f"\nconcurrent runs ({delay}s apart): {len(ran)} executions for 24 tasks")
    assert Counter(ran).most_common(1)[0][1] == 1, "a task was computed twice"
    assert len(ran) == 24
    store = Store(tmp_path / ".cache")
    try:
        checked, problems = store.verify()
    finally:
        store.close()
    assert (checked, problems) == (24, [])


def _posix_locks(path: Path) -> list[tuple[int, int]]:
    """``(pid, first byte)`` of every POSIX lock held on a file, from /proc/locks (Linux)."""
    inode = f":{path.stat().st_ino} "
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and "POSIX" in fields and inode in line + " ":
            found.append((int(fields[4]), int(fields[6])))
    return found


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux /proc/locks")
def test_killed_run_leaves_no_stuck_lock(tmp_path: Path) -> None:
    """kill -9 of a run holding a task's lock should let the waiting run take the task over and finish."""
    write(tmp_path / "taskfile.py", TASKFILE)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log)
    first = start(["run", "-j", "2", "--no-progress"], tmp_path, dict(env, CP_SLOW_STEP="0"))
    lockfile = tmp_path / ".cache" / "checkpoint" / ".lock"
    deadline = time.monotonic() + 120  # generous: the suite may run on a loaded machine
    while not lockfile.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = start(["run", "-j", "2", "--no-progress"], tmp_path, env)
    # Once the second run is there, the first locks the tasks it runs (step(0) sleeps in one).
    while not any(pid == first.pid and byte >= 2 for pid, byte in _posix_locks(lockfile)):
        assert first.poll() is None and second.poll() is None, second.communicate()
        assert time.monotonic() < deadline, "the first run never locked a task"
        time.sleep(0.02)
    first.kill()
    first.communicate()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert out.strip() == EXPECTED
    ran = executions(log)
    assert ran.count("step(0)") == 1 and len(set(ran)) == 24  # step(0) by the second run
    assert all(pid != first.pid for pid, _ in _posix_locks(lockfile))


def test_concurrent_runs_recompute_a_damaged_value_once(tmp_path: Path) -> None:
    """Three runs that each find the same damaged value: one recomputes it, the others adopt
    the repaired entry (each forces main(), which reads every step)."""
    write(tmp_path / "taskfile.py", TASKFILE)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log)
    first = start(["run", "--no-progress"], tmp_path, env)
    assert first.communicate(timeout=120)[0].strip() == EXPECTED
    blobs = sorted((tmp_path / ".cache" / "checkpoint" / "taskfile.step" / "blobs").glob("*.bin"))
    assert len(blobs) == 17  # step(6) ... step(22) are blob files
    data = bytearray(blobs[0].read_bytes())
    data[100] ^= 0xFF
    blobs[0].write_bytes(bytes(data))
    log.unlink()
    runs = [start(["run", "-j", "2", "--no-progress", "--force", "main"], tmp_path, env)
            for _ in range(3)]
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip() == EXPECTED
        assert "Internal error" not in err
    ran = Counter(executions(log))
    assert ran["main()"] == 3
    del ran["main()"]
    assert list(ran.values()) == [1], ran  # the damaged step, recomputed by one run only


DATA_DIR_TASKFILE = """
    import time
    from pathlib import Path
    from checkpoint import TaskDirectory, requires, task

    @task
    def table():
        @requires(TaskDirectory())
        def __(path: Path) -> str:
            out = path / "rows.txt"
            with out.open("w") as f:
                for i in range(1000):
                    f.write(f"row {i}\\n")
                    if i % 100 == 0:
                        f.flush()
                        time.sleep(0.01)
            return str(out)
        return __

    @task
    def count(trial: int):
        @requires(table())
        def __(rows: str) -> int:
            time.sleep(0.6)  # the forced run of table() starts meanwhile
            return len(Path(rows).read_text().splitlines())
        return __
"""


def test_forced_run_waits_for_readers_of_its_data_directory(tmp_path: Path) -> None:
    """`run --force table` while another run reads table()'s files: the reader sees all of
    them (the forced run empties the directory only once the reader is done)."""
    write(tmp_path / "taskfile.py", DATA_DIR_TASKFILE)
    env = env_for(tmp_path, tmp_path / "exec.log")
    assert start(["run", "--no-progress", "table"], tmp_path, env).communicate(timeout=60)
    for trial in range(3):
        reader = start(["run", "--no-progress", f"count({trial})"], tmp_path, env)
        time.sleep(0.3)
        forced = start(["run", "--no-progress", "--force", "table"], tmp_path, env)
        out, err = reader.communicate(timeout=60)
        forced.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert out.strip() == "1000", f"trial {trial}: the reader saw {out.strip()} rows"
        assert forced.returncode == 0


def test_clear_during_a_run_never_crashes_either_side(tmp_path: Path) -> None:
    """`checkpoint clear` of the families a run is computing and reading: both exit 0, the run
    prints the right value, and the next run computes only what was cleared."""
    write(tmp_path / "taskfile.py", TASKFILE)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log)
    for trial, delay in enumerate((0.3, 0.9, 1.6)):
        run = start(["run", "-j", "2", "--no-progress"], tmp_path, env)
        time.sleep(delay)
        clear = start(["clear", "-y", "step"], tmp_path, env)
        cleared_out, cleared_err = clear.communicate(timeout=60)
        out, err = run.communicate(timeout=120)
        assert clear.returncode == 0, cleared_err
        assert run.returncode == 0, err
        assert out.strip() == EXPECTED, f"trial {trial}"
        assert "Internal error" not in err + cleared_err
    again = start(["run", "--no-progress"], tmp_path, env).communicate(timeout=120)[0]
    assert again.strip() == EXPECTED


PRODUCT_TASKFILE = """
    import time
    from pathlib import Path
    from checkpoint import Product, requires, task

    @task
    def table():
        @requires(Product("out/rows.txt"))
        def __(out: Path) -> str:
            with out.open("w") as f:
                for i in range(1000):
                    f.write(f"row {i}\\n")
                    if i % 100 == 0:
                        f.flush()
                        time.sleep(0.01)
            return str(out)
        return __

    @task
    def count(trial: int):
        @requires(table())
        def __(rows: str) -> int:
            time.sleep(0.6)  # the forced run of table() starts meanwhile
            return len(Path(rows).read_text().splitlines())
        return __
"""


def test_forced_run_waits_for_readers_of_its_declared_outputs(tmp_path: Path) -> None:
    """`run --force table` while another run reads the Product table() wrote: the reader
    sees the whole file (the forced run rewrites it only once the reader is done)."""
    write(tmp_path / "taskfile.py", PRODUCT_TASKFILE)
    env = env_for(tmp_path, tmp_path / "exec.log")
    assert start(["run", "--no-progress", "table"], tmp_path, env).communicate(timeout=60)
    for trial in range(3):
        reader = start(["run", "--no-progress", f"count({trial})"], tmp_path, env)
        time.sleep(0.3)
        forced = start(["run", "--no-progress", "--force", "table"], tmp_path, env)
        out, err = reader.communicate(timeout=60)
        forced.communicate(timeout=60)
        assert reader.returncode == 0, err
        assert out.strip() == "1000", f"trial {trial}: the reader saw {out.strip()} rows"
        assert forced.returncode == 0


CLEARED_PREREQUISITE_TASKFILE = """
    import os, time
    from pathlib import Path
    from checkpoint import TaskDirectory, requires, task

    @task
    def render():
        @requires(TaskDirectory())
        def __(d: Path) -> str:
            for i in range(3):
                (d / f"fig{i}.png").write_text("png")
            return str(d)
        return __

    @task
    def slow():
        def __() -> int:
            Path("slow-started").write_text("")
            while not Path("go").exists():  # until the test has cleared render()
                time.sleep(0.02)
            return 1
        return __

    @task
    def pick():
        @requires(render())
        def __(figdir: str) -> str:
            return figdir
        return __

    @task
    def main():
        @requires(pick() if os.environ.get("CP_TEST_THROUGH") else render())
        @requires(slow())
        def __(figdir: str, _: int) -> int:
            return len(list(Path(figdir).glob("*.png")))
        return __
"""


@pytest.mark.parametrize("through", [False, True], ids=["direct", "through"])
@pytest.mark.parametrize("what", [["render"], ["render()"], ["--all"]],
                         ids=["family", "entry", "all"])
def test_a_prerequisite_cleared_between_its_run_and_its_readers_is_recomputed(
    tmp_path: Path, what: list[str], through: bool
) -> None:
    """`checkpoint clear` of a finished TaskDirectory() task while the run still has to start
    the task that reads its files (``through``: got through another task, pick()): the run
    sees that it is gone (even when its whole family index was deleted under the run's open
    connection) and computes it again, so the reader finds its files; nothing wrong is
    printed or stored."""
    write(tmp_path / "taskfile.py", CLEARED_PREREQUISITE_TASKFILE)
    log = tmp_path / "exec.log"
    env = env_for(tmp_path, log, **({"CP_TEST_THROUGH": "1"} if through else {}))
    run = start(["run", "--no-progress", "-j", "2", "main"], tmp_path, env)
    deadline = time.monotonic() + 60
    while not (tmp_path / "slow-started").exists() and run.poll() is None:
        assert time.monotonic() < deadline, "slow() never started"
        time.sleep(0.02)
    clear = start(["clear", "-y", *what], tmp_path, env)
    cleared_out, cleared_err = clear.communicate(timeout=60)
    (tmp_path / "go").write_text("")
    out, err = run.communicate(timeout=120)
    assert clear.returncode == 0, cleared_err
    assert run.returncode == 0, err
    assert out.strip() == "3"
    assert "was removed or replaced while this run needed it" in err
    again = start(["run", "--no-progress", "main"], tmp_path, env).communicate(timeout=60)
    assert again[0].strip() == "3"


THROUGH_TASKFILE = """
    import os, time
    from pathlib import Path
    from checkpoint import Product, TaskDirectory, requires, task

    PRODUCT = os.environ.get("CP_TEST_PRODUCT") == "1"

    @task
    def train(seed: int):
        if PRODUCT:
            @requires(Product(f"models/{seed}/"))
            def __(d: Path) -> str:
                d.mkdir(parents=True, exist_ok=True)
                for i in range(3):
                    (d / f"shard{i}.bin").write_text(f"{seed}-{i}-{os.urandom(4).hex()}")
                return str(d)
            return __

        @requires(TaskDirectory())
        def __(d: Path) -> str:
            for i in range(3):
                (d / f"shard{i}.bin").write_text(f"{seed}-{i}-{os.urandom(4).hex()}")
            return str(d)
        return __

    @task
    def best():
        @requires([train(s) for s in (1, 2)])
        def __(dirs: list[str]) -> str:
            return dirs[1]  # the best model's directory: read through this task
        return __

    @task
    def evaluate():
        @requires(best())
        def __(d: str) -> str:
            def shards() -> list[str]:
                files = [Path(d, f"shard{i}.bin") for i in range(3)]
                return [f.read_text() if f.exists() else "missing" for f in files]

            before = shards()
            Path("reading").write_text("")
            while not Path("go").exists():  # until the other command has had its go
                time.sleep(0.02)
            after = shards()
            return "same" if before == after else f"CHANGED: {before} -> {after}"
        return __

    @task
    def probe():
        def __() -> int:
            Path("probe-ran").write_text("")
            return 1
        return __
"""


@pytest.mark.parametrize("kind, other", [
    ("datadir", "force"), ("datadir", "clear"), ("product", "force"),
])
def test_a_reader_of_files_got_through_another_task_holds_their_lock(
    tmp_path: Path, kind: str, other: str
) -> None:
    """evaluate() reads train(2)'s files through best(), which returns their path. Another
    command that would empty or rewrite them (`run --force 'train(2)'`, `clear 'train(2)'`)
    while evaluate() reads waits until it is done: evaluate() sees the same files throughout,
    then the other command does its work."""
    write(tmp_path / "taskfile.py", THROUGH_TASKFILE)
    env = env_for(tmp_path, tmp_path / "exec.log", CP_TEST_PRODUCT=str(int(kind == "product")))
    _, err = start(["run", "--no-progress", "best"], tmp_path, env).communicate(timeout=60)
    assert "Internal error" not in err
    reader = start(["run", "--no-progress", "evaluate"], tmp_path, env)
    while not (tmp_path / "reading").exists():
        assert reader.poll() is None, reader.communicate()
        time.sleep(0.02)
    if other == "force":
        # train(2) is tried before probe(): once probe() ran (one worker), the forced run has
        # either rewritten train(2)'s files (no lock) or is waiting for the reader.
        command = start(["run", "--no-progress", "-j", "1", "--force", "train(2)", "probe"],
                        tmp_path, env)
        while not (tmp_path / "probe-ran").exists():
            assert command.poll() is None, command.communicate()
            time.sleep(0.02)
    else:
        command = start(["clear", "-y", "train(2)"], tmp_path, env)
        assert command.stderr is not None
        while True:  # until the clear says it waits, or ends (having removed them)
            line = command.stderr.readline()
            if not line or "Waiting for a run" in line:
                break
    (tmp_path / "go").write_text("")
    out, err = reader.communicate(timeout=60)
    other_out, other_err = command.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert command.returncode == 0, other_err
    assert out.strip() == "same", f"evaluate() read train(2)'s files while {other} changed them"
    again = start(["run", "--no-progress", "evaluate"], tmp_path, env).communicate(timeout=60)
    assert again[0].strip() == "same"
