"""Dask vs the process pool on one machine: per-task overhead and makespan efficiency.

    python benchmarks/dask_bench.py [--repeat 3]

Two workloads, each run cold (a fresh cache) ``--repeat`` times, medians reported:

* **overhead**: 1,000 no-op tasks and a task summing them, on 2 worker slots;
  per-task overhead = wall time of the run / 1,000.
* **makespan**: 32 independent tasks sleeping 0.5 s, on 8 worker slots; efficiency =
  ideal makespan (32 x 0.5 s / 8 = 2 s) / measured wall time.

Executors are started (and warmed up) before the clock starts, for both: a checkpoint
process pool with N workers, and a ``distributed.LocalCluster`` with N single-threaded
worker processes. Their start-up times are reported apart.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from checkpoint import requires, run, task


@task
def noop(i: int):
    def __() -> int:
        return i

    return __


@task
def total(n: int):
    @requires([noop(i) for i in range(n)])
    def __(xs: list[int]) -> int:
        return sum(xs)

    return __


@task
def nap(i: int, seconds: float):
    def __() -> int:
        time.sleep(seconds)
        return i

    return __


def _timed_runs(targets: Callable[[], list[Any]], executor: Executor, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        cache = Path(tempfile.mkdtemp(prefix="cp-dask-bench-"))
        try:
            t0 = time.perf_counter()
            run(targets(), executor=executor, cache_dir=cache)
            times.append(time.perf_counter() - t0)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return times


def _process_pool(n: int) -> tuple[Executor, float]:
    from checkpoint._pool import ProcessPoolAdapter

    t0 = time.perf_counter()
    pool = ProcessPoolAdapter(n).executor
    assert pool is not None
    list(pool.map(abs, range(n * 4)))
    return pool, time.perf_counter() - t0


def _local_cluster(n: int) -> tuple[Executor, float, Callable[[], None]]:
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    client.gather(client.map(abs, range(n * 4)))

    def close() -> None:
        client.close()
        cluster.close()

    return client.get_executor(), time.perf_counter() - t0, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    n_tasks, repeat = args.tasks, args.repeat
    rows: list[tuple[str, str, str, str]] = []

    def overhead(times: list[float]) -> str:
        return f"{statistics.median(times) / n_tasks * 1e6:,.0f} us/task ({statistics.median(times):.2f} s)"

    def efficiency(times: list[float]) -> str:
        med = statistics.median(times)
        return f"{32 * 0.5 / 8 / med:.0%} ({med:.2f} s)"

    workloads: list[tuple[int, str, Callable[[], list[Any]], Callable[[list[float]], str]]] = [
        (2, f"{n_tasks:,} no-op tasks, 2 slots: overhead", lambda: [total(n_tasks)], overhead),
        (8, "32 x 0.5 s tasks, 8 slots: efficiency", lambda: [nap(i, 0.5) for i in range(32)],
         efficiency),
    ]
    for slots, label, targets, fmt in workloads:
        pool, pool_start = _process_pool(slots)
        try:
            pool_times = _timed_runs(targets, pool, repeat)
        finally:
            pool.shutdown()
        dask_exec, dask_start, close = _local_cluster(slots)
        try:
            dask_times = _timed_runs(targets, dask_exec, repeat)
        finally:
            close()
        rows.append((label, fmt(pool_times), fmt(dask_times),
                     f"{pool_start:.2f} s / {dask_start:.2f} s"))

    header = ("workload", "process pool", "Dask LocalCluster", "start-up pool / Dask")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\nmedian of {repeat} cold runs each; start-up (cluster or pool, warmed) is excluded")


if __name__ == "__main__":
    main()
