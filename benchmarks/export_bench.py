"""Time graph exports of large DAGs: planning (expand + mark) and each export format.

Usage::

    .venv/bin/python benchmarks/export_bench.py                 # 1,000 / 10,000 / 100,000 tasks
    .venv/bin/python benchmarks/export_bench.py --sizes 100000 --shape pipeline

Two shapes: ``lattice`` (one family, each task needs two of the previous layer, 100 wide:
the choose() pattern at scale) and ``pipeline`` (four families load/train/score per item
and one summary over all scores: the case ``--families`` is for). Before timing, the first
half of the tasks (in topological order) get stored results and 1% of the others a failed
run, so the plan mixes fresh, stale and failed tasks and reads real metadata and run history. Prints a Markdown table; times in seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from checkpoint import export, requires, task
from checkpoint.graph import plan
from checkpoint.store import FailedRun, Meta, Record, Store, new_stamp

WIDTH = 100


@task
def cell(layer: int, i: int) -> Any:
    if layer:
        @requires(cell(layer - 1, i))
        @requires(cell(layer - 1, (i + 1) % WIDTH))
        def __(a: int, b: int) -> int:
            return a + b
    else:
        def __() -> int:
            return 1
    return __


@task
def top(layers: int) -> Any:
    @requires([cell(layers - 1, i) for i in range(WIDTH)])
    def __(values: list[int]) -> int:
        return sum(values)
    return __


@task
def load(i: int) -> Any:
    def __() -> int:
        return i
    return __


@task
def train(i: int) -> Any:
    @requires(load(i))
    def __(data: int) -> int:
        return data
    return __


@task
def score(i: int) -> Any:
    @requires(load(i))
    @requires(train(i))
    def __(data: int, model: int) -> int:
        return data + model
    return __


@task
def summary(n: int) -> Any:
    @requires([score(i) for i in range(n)])
    def __(scores: list[int]) -> int:
        return max(scores)
    return __


def target(shape: str, size: int) -> Any:
    if shape == "lattice":
        return top(max(1, round((size - 1) / WIDTH)))
    return summary(max(1, (size - 1) // 3))


def store_half(targets: list[Any], store: Store) -> None:
    """Store fake results for the first half of the plan and failed runs for 1% of the rest."""
    nodes = plan(targets, store).nodes
    stamps: dict[str, str] = {}
    records = []
    for tid, node in list(nodes.items())[: len(nodes) // 2]:
        t = node.task
        stamps[tid] = new_stamp()
        meta = Meta(
            expr=t.expression(), args=t.encoded, fingerprint=t.family.fingerprint[0],
            stamp=stamps[tid], deps={d: stamps[d] for d in node.deps}, duration=0.001,
            stored=time.time(),
        )
        records.append(Record(t.family.dirname, tid, meta, b""))
    store.put_many(records)
    rest = list(nodes.items())[len(nodes) // 2:]
    store.put_failed_runs(
        (node.task.family.dirname, tid, FailedRun(node.task.expression(), time.time(), 0.001, "bench"))
        for tid, node in rest[::100]
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated task counts")
    parser.add_argument("--shape", choices=["lattice", "pipeline", "both"], default="both")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes = ["lattice", "pipeline"] if args.shape == "both" else [args.shape]

    print("| shape | tasks | edges | plan s | DOT s (MB) | Mermaid s | JSON s (MB) | families DOT s | families JSON s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for shape in shapes:
        for size in sizes:
            with tempfile.TemporaryDirectory() as cache_dir:
                store = Store.open(cache_dir)
                t = target(shape, size)
                store_half([t], store)
                Store._open_stores.clear()  # time planning against a freshly opened store
                store = Store.open(cache_dir)
                t = target(shape, size)  # new handles: nothing expanded yet
                t_plan, the_plan = timed(lambda: plan([t], store))  # noqa: B023
                edges = sum(len(n.deps) for n in the_plan.nodes.values())
                t_dot, dot = timed(lambda: export.to_dot(the_plan, cache_dir=cache_dir))  # noqa: B023
                t_mmd, _ = timed(lambda: export.to_mermaid(the_plan, cache_dir=cache_dir))  # noqa: B023
                t_json, js = timed(lambda: export.to_json(the_plan, cache_dir=cache_dir))  # noqa: B023
                t_fdot, _ = timed(lambda: export.to_dot(the_plan, families=True, cache_dir=cache_dir))  # noqa: B023
                t_fjson, _ = timed(lambda: export.to_json(the_plan, families=True, cache_dir=cache_dir))  # noqa: B023
                print(
                    f"| {shape} | {len(the_plan):,} | {edges:,} | {t_plan:.2f} | "
                    f"{t_dot:.2f} ({len(dot) / 1e6:.1f}) | {t_mmd:.2f} | {t_json:.2f} ({len(js) / 1e6:.1f}) | "
                    f"{t_fdot:.3f} | {t_fjson:.3f} |",
                    flush=True,
                )
                store.close()
                Store._open_stores.clear()
    print(f"\nPython {sys.version.split()[0]}; plan = expand + mark against the store.")


if __name__ == "__main__":
    main()
