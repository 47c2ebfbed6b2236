"""Cost of file inputs: a warm check of N input files against ``os.stat`` of those files.

Usage::

    .venv/bin/python benchmarks/files_bench.py            # 5,000 files, 9 rounds
    .venv/bin/python benchmarks/files_bench.py -n 1000 -r 5
    .venv/bin/python benchmarks/files_bench.py --quick       # does it still run? (tests)

In a fresh directory, N small files ``data/{i}.csv`` are written, then (in this process,
inline executor, so that the numbers are the engine's and not a pool's) these DAGs are built
once cold and then measured warm, rounds interleaved so that machine drift hits them alike:

* ``no files``: N no-op tasks ``load(i)`` summed by ``main`` (W2's shape);
* ``@requires([])``: the same, each task with an empty requirement (what declaring any
  requirement costs: the decorator, the inner function's arguments);
* ``N Files``: the same, each ``load(i)`` with ``@requires(File(f"data/{i}.csv"))``;
* ``1 directory``: one task with ``@requires(File("data"))`` (a manifest of N files);
* ``os.stat`` of the N files (the floor any file check pays) and a loop that reads
  and hashes them (what the digest cache spares).

Every warm measurement is a whole ``checkpoint.run`` (planning: outer functions, store
lookups, file checks; then reading the target's value), with new task handles, as a fresh
CLI process would make them. The files are written more than ``RACY_NS`` before the warm
runs (as a user's data usually is), so their digests are trusted. Reports medians (ms) and
the ratio (``N Files`` - ``no files``) / ``os.stat``, whose target is at most 2 (and the same
against ``@requires([])``, and against the directory, which needs no requirement per file).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

TASKFILE = '''
from checkpoint import File, requires, task

N = {n}


@task
def load(i: int):
    def __() -> int:
        return i
    return __


@task
def load_req(i: int):
    @requires([])
    def __(nothing) -> int:
        return i
    return __


@task
def load_file(i: int):
    @requires(File(f"data/{{i}}.csv"))
    def __(path) -> int:
        return i
    return __


@task
def plain():
    @requires([load(i) for i in range(N)])
    def __(values: list) -> int:
        return sum(values)
    return __


@task
def with_reqs():
    @requires([load_req(i) for i in range(N)])
    def __(values: list) -> int:
        return sum(values)
    return __


@task
def with_files():
    @requires([load_file(i) for i in range(N)])
    def __(values: list) -> int:
        return sum(values)
    return __


@task
def load_group(j: int):
    @requires([File(f"data/{{i}}.csv") for i in range(j * 100, min(N, (j + 1) * 100))])
    def __(paths) -> int:
        return j
    return __


@task
def group(j: int):
    def __() -> int:
        return j
    return __


@task
def plain_groups():
    @requires([group(j) for j in range((N + 99) // 100)])
    def __(values: list) -> int:
        return sum(values)
    return __


@task
def with_groups():
    @requires([load_group(j) for j in range((N + 99) // 100)])
    def __(values: list) -> int:
        return sum(values)
    return __


@task
def directory():
    @requires(File("data"))
    def __(path) -> int:
        return len(list(path.iterdir()))
    return __
'''


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:8.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("-n", type=int, default=5000, help="input files (default 5,000)")
    ap.add_argument("-r", "--rounds", type=int, default=9, help="rounds (default 9)")
    ap.add_argument("--quick", action="store_true",
                    help="100 files, 1 round, no wait for digests to be trusted")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 100, 1
    n = args.n

    import checkpoint
    from checkpoint import files

    with tempfile.TemporaryDirectory(prefix="cp-files-bench-") as tmp:
        os.chdir(tmp)
        os.environ["CP_CACHE_DIR"] = str(Path(tmp) / ".cache")
        data = Path("data")
        data.mkdir()
        for i in range(n):
            (data / f"{i}.csv").write_text(f"x,y\n{i},{i * i}\n")
        Path("benchtaskfile.py").write_text(textwrap.dedent(TASKFILE.format(n=n)))
        sys.path.insert(0, tmp)
        import benchtaskfile as tf  # type: ignore[import-not-found]

        groups = (n + 99) // 100
        targets: dict[str, Callable[[], object]] = {
            f"{n} tasks": tf.plain, f"{n} tasks, @requires([]) each": tf.with_reqs,
            f"{n} tasks, 1 File each": tf.with_files,
            f"{groups} tasks": tf.plain_groups, f"{groups} tasks, 100 Files each": tf.with_groups,
            "1 task, File(directory)": tf.directory,
        }
        for make in targets.values():  # cold
            checkpoint.run([make()], executor="inline")  # type: ignore[list-item]
        # Digests of files hashed within RACY_NS of their last change are not trusted yet.
        if not args.quick:
            time.sleep(files.RACY_NS / 1e9 + 0.5)
        for make in targets.values():  # warm, digests recorded as trusted
            checkpoint.run([make()], executor="inline")  # type: ignore[list-item]

        paths = [str(Path(tmp) / "data" / f"{i}.csv") for i in range(n)]

        def stat_all() -> None:
            for p in paths:
                os.stat(p)

        def hash_all() -> None:
            for p in paths:
                files.hash_file(p)

        names = [*targets, f"os.stat of {n} files", f"read + hash {n} files"]
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}

        def measure(name: str, fn: Callable[[], object]) -> object:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
            return out

        for _ in range(args.rounds):
            for name, make in targets.items():
                result = measure(name, lambda make=make: checkpoint.run(  # type: ignore[misc]
                    [make()], executor="inline"))
                assert not result.ran, f"{name}: a task ran on a warm run"  # type: ignore[attr-defined]
            measure(names[-2], stat_all)
            measure(names[-1], hash_all)
        sys.path.remove(tmp)
        os.chdir("/")

    print(f"Warm runs with {n:,} input files: median of {args.rounds} rounds, ms "
          "(CPU time of this process, then wall time)")
    for name in names:
        print(f"  {name:<32}{_median_ms(cpu[name])} {_median_ms(wall[name])}")
    med = {name: statistics.median(v) for name, v in cpu.items()}
    stat_cost = med[names[-2]]
    cases = ((names[2], names[0]), (names[2], names[1]), (names[4], names[3]), (names[5], ""))
    for files_case, plain_case in cases:
        added = med[files_case] - (med[plain_case] if plain_case else 0.0)
        print(f"{files_case}: adds {added * 1e3:.2f} ms CPU = {added / stat_cost:.2f}x os.stat"
              f" (to {plain_case or 'nothing'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
