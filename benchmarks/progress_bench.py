"""Cost of progress reporting: a cold `checkpoint run` of N no-op tasks on a pseudo-terminal.

Usage::

    .venv/bin/python benchmarks/progress_bench.py               # 10,000 tasks, 5 rounds
    .venv/bin/python benchmarks/progress_bench.py -n 2000 -r 3 -j 2

Modes, run in turn in each round (so machine drift hits them alike), each a whole
``checkpoint run`` process with stdout and stderr on a pty (as a terminal user sees it), on a
fresh cache directory:

* ``live``: the default on a terminal (rich live display, redrawn <= 10/s);
* ``plain``: ``--no-progress`` (one line per task);
* ``quiet``: ``-q`` (no per-task output at all: the floor).

Reports the median whole-process time, the median CPU time of the run (coordinator and workers,
from wait4: steadier than wall time on a shared machine) and the median in-run wall time (the run's own
``Done in ...`` summary, which excludes start-up and imports), and the overhead of each mode
against ``plain`` and ``quiet``. The task output capture is on in every mode.

Then, in this process, the reporters' own cost: the events of a real N-task run are recorded
once and replayed into each reporter (per-event cost on the scheduler's thread), and one
frame of the live display is rendered with 1,000 tasks running (a redraw's cost; at most
10 a second). Then the coordinator's CPU time (``time.process_time``:
all its threads, not the workers; much steadier than wall time on a loaded machine) for the
same run in this process with no reporter, the plain one (to /dev/null) and the live one (a
terminal console on /dev/null, refreshing 10 times a second). Last, the cost of output
capture in a worker:
``run_batch`` (which captures) against calling ``run_one`` per task, best of 15.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKFILE = '''
from checkpoint import task, requires

@task
def noop(i: int):
    def __():
        return i
    return __

@task
def main(n: int = {n}):
    @requires([noop(i) for i in range(n)])
    def __(values):
        return sum(values)
    return __
'''

MODES = {"live": [], "plain": ["--no-progress"], "quiet": ["-q"]}


def run_in_pty(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run a command on a pty; return its wall time, its CPU time (with its workers') and output."""
    master, slave = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise SystemExit("timed out")
        try:
            data = os.read(master, 1 << 16)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status, usage = os.wait4(proc.pid, 0)  # usage includes the workers it reaped
    elapsed = time.perf_counter() - t0
    code = proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    if code != 0:
        raise SystemExit(f"{args} failed ({code}):\n{out[-2000:]}")
    return elapsed, cpu, out


def in_run_seconds(out: str) -> float | None:
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    match = re.search(r"Done in ([0-9.:]+)(s?)", text)
    if not match:
        return None
    value = match.group(1)
    if ":" in value:
        minutes, secs = value.split(":")
        return int(minutes) * 60 + float(secs)
    return float(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=10_000)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--skip-pty", action="store_true", help="only the in-process measurements")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cp-progress-bench-"))
    (work / "taskfile.py").write_text(TASKFILE.format(n=opts.tasks))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "CP_CACHE_DIR")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    exe = [sys.executable, "-m", "checkpoint"]
    whole: dict[str, list[float]] = {m: [] for m in MODES}
    inrun: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    caches: list[Path] = []
    try:
        for r in range(0 if opts.skip_pty else opts.rounds):
            for mode, flags in MODES.items():
                cache = work / f"cache-{mode}-{r}"
                caches.append(cache)
                args = [*exe, "--cache-dir", str(cache)]
                if mode == "quiet":
                    args += flags
                    flags = []
                args += ["run", "-j", str(opts.workers), *flags]
                seconds, cpu_seconds, out = run_in_pty(args, work, env)
                whole[mode].append(seconds)
                cpu[mode].append(cpu_seconds)
                wall = in_run_seconds(out)
                if wall is not None:
                    inrun[mode].append(wall)
                print(f"round {r + 1} {mode:<6} {seconds:.3f}s cpu {cpu_seconds:.3f}s"
                      + (f" (run {wall:.3f}s)" if wall else ""),
                      file=sys.stderr)
    finally:
        # Remove the caches after the last round (deleting many files slows the disk for a while).
        shutil.rmtree(work, ignore_errors=True)

    if opts.skip_pty:
        replay(opts.tasks)
        coordinator_cpu(opts.tasks, opts.rounds, opts.workers)
        capture_cost(opts.tasks)
        return
    med = {m: statistics.median(v) for m, v in whole.items()}
    cpu_med = {m: statistics.median(v) for m, v in cpu.items()}
    print(f"\n{opts.tasks:,} no-op tasks, -j {opts.workers}, {opts.rounds} rounds, medians (pty):\n")
    print("| mode | whole process s | vs plain | vs quiet | in-run s | vs plain | CPU s (all processes) | vs plain | vs quiet |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    run_med = {m: statistics.median(v) for m, v in inrun.items() if v}
    for mode in MODES:
        line = f"| {mode} | {med[mode]:.3f} | {100 * (med[mode] / med['plain'] - 1):+.1f}% | "
        line += f"{100 * (med[mode] / med['quiet'] - 1):+.1f}% | "
        if mode in run_med and "plain" in run_med:
            line += f"{run_med[mode]:.3f} | {100 * (run_med[mode] / run_med['plain'] - 1):+.1f}% | "
        else:
            line += "- | - | "
        line += (f"{cpu_med[mode]:.3f} | {100 * (cpu_med[mode] / cpu_med['plain'] - 1):+.1f}% | "
                 f"{100 * (cpu_med[mode] / cpu_med['quiet'] - 1):+.1f}% |")
        print(line)
    replay(opts.tasks)
    coordinator_cpu(opts.tasks, opts.rounds, opts.workers)
    capture_cost(opts.tasks)


def replay(n: int) -> None:
    import io

    from rich.console import Console

    import checkpoint
    from checkpoint import events as ev
    from checkpoint import requires, task
    from checkpoint.progress import LiveReporter, PlainReporter

    @task
    def noop(i: int):  # type: ignore[no-untyped-def]
        return lambda: i

    @task
    def top(k: int):  # type: ignore[no-untyped-def]
        @requires([noop(i) for i in range(k)])
        def __(values):  # type: ignore[no-untyped-def]
            return sum(values)
        return __

    recorded: list[ev.Event] = []
    cache = tempfile.mkdtemp(prefix="cp-progress-replay-")
    try:
        checkpoint.run([top(n)], executor="thread", max_workers=2, cache_dir=cache,
                       subscribers=[recorded.append])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    devnull = open(os.devnull, "w")  # noqa: SIM115
    makers = {
        "plain": lambda: PlainReporter(devnull),
        "live": lambda: LiveReporter(Console(file=devnull, force_terminal=True, width=120)),
    }
    print(f"\nReplaying the {len(recorded):,} events of a {n + 1:,}-task run (best of 5):\n")
    print("| reporter | per event us | whole replay ms |")
    print("| --- | --- | --- |")
    for name, make in makers.items():
        best = float("inf")
        for _ in range(5):
            reporter = make()
            t0 = time.perf_counter()
            for event in recorded:
                reporter(event)
            best = min(best, time.perf_counter() - t0)
            reporter.close()
        print(f"| {name} | {1e6 * best / len(recorded):.2f} | {1e3 * best:.1f} |")
    live = LiveReporter(Console(file=io.StringIO(), force_terminal=True, width=120), auto_refresh=False)
    for event in recorded:
        if isinstance(event, (ev.RunPlanned, ev.TaskStarted)):
            live(event)
        if len(live.tally.running) >= 1000:
            break
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    t0 = time.perf_counter()
    for _ in range(50):
        console.print(live.render())
    frame = (time.perf_counter() - t0) / 50
    print(f"\nOne live frame with {len(live.tally.running):,} tasks running: {1e3 * frame:.2f} ms "
          f"(at 10 frames/s: {100 * frame * 10:.1f}% of one core).")


def coordinator_cpu(n: int, rounds: int, workers: int) -> None:
    from rich.console import Console

    import checkpoint
    from checkpoint import requires, task
    from checkpoint.progress import LiveReporter, PlainReporter

    @task
    def noop(i: int):  # type: ignore[no-untyped-def]
        return lambda: i

    @task
    def top(k: int):  # type: ignore[no-untyped-def]
        @requires([noop(i) for i in range(k)])
        def __(values):  # type: ignore[no-untyped-def]
            return sum(values)
        return __

    devnull = open(os.devnull, "w")  # noqa: SIM115
    makers = {
        "none": lambda: None,
        "plain": lambda: PlainReporter(devnull),
        "live": lambda: LiveReporter(Console(file=devnull, force_terminal=True, width=120)),
    }
    cpu: dict[str, list[float]] = {m: [] for m in makers}
    wall: dict[str, list[float]] = {m: [] for m in makers}
    base = Path(tempfile.mkdtemp(prefix="cp-progress-cpu-"))
    try:
        for r in range(rounds):
            for name, make in makers.items():
                reporter = make()
                c0, w0 = time.process_time(), time.perf_counter()
                checkpoint.run([top(n)], max_workers=workers, cache_dir=base / f"{name}-{r}",
                               subscribers=[reporter] if reporter else [])
                if reporter:
                    reporter.close()
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - w0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in cpu.items()}
    wmed = {m: statistics.median(v) for m, v in wall.items()}
    print(f"\nCoordinator CPU of a {n + 1:,}-task run in this process (-j {workers}, median of {rounds}):\n")
    print("| reporter | coordinator CPU s | vs none | vs plain | wall s |")
    print("| --- | --- | --- | --- | --- |")
    for m in makers:
        print(f"| {m} | {med[m]:.3f} | {100 * (med[m] / med['none'] - 1):+.1f}% | "
              f"{100 * (med[m] / med['plain'] - 1):+.1f}% | {wmed[m]:.3f} |")


def _const(i: int):  # type: ignore[no-untyped-def]
    return lambda: i


def capture_cost(n: int) -> None:
    from checkpoint._worker import WorkItem, run_batch, run_one, uninstall_capture

    items = [WorkItem(str(i), _const(i), [], 0) for i in range(n)]
    best: dict[str, float] = {}
    for _ in range(15):
        for name, fn in (("without capture", lambda: [run_one(it, {}, False) for it in items]),
                         ("with capture", lambda: run_batch(items, {}, False))):
            t0 = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
    uninstall_capture()
    print(f"\nWorker loop over {n:,} no-op tasks (best of 15): " + ", ".join(
        f"{name} {1e6 * secs / n:.2f} us/task" for name, secs in best.items()))


if __name__ == "__main__":
    main()
