"""What a running task shares against other runs (:class:`checkpoint._claims.Claims`): the
locks of every task upstream of it that owns files, however far, on random DAGs."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from checkpoint._claims import Claims
from checkpoint._coordination import Coordination
from checkpoint._readiness import TaskState
from checkpoint.graph import expand

DAG_MODULE = """
    from checkpoint import Product, TaskDirectory, requires, task

    DAG = {}  # i -> (kind, prerequisites): set by the test

    @task
    def node(i: int):
        kind, deps = DAG[i]
        reqs = [node(d) for d in deps]
        if kind == "dir":
            reqs.append(TaskDirectory())
        elif kind == "product":
            reqs.append(Product(f"out/{i}.txt"))

        @requires(reqs)
        def __(values):
            return i
        return __
"""


def _claims(nodes: Any) -> Claims:
    state = SimpleNamespace(nodes=nodes, readiness=None, values=None, coordination=None,
                            store=None)
    return Claims(state, None)  # type: ignore[arg-type]


def _random_dag(mod: Any, rng: random.Random) -> Any:
    """Fill ``mod.DAG`` (some tasks with a TaskDirectory(), some with a Product, chains and
    fan-ins); return the plan's nodes."""
    size = rng.randint(5, 40)
    share = rng.choice([0.1, 0.2, 0.4])
    for i in range(size):
        kind = rng.choices(["none", "dir", "product"], [1 - share, share / 2, share / 2])[0]
        deps = rng.sample(range(i), min(i, rng.randint(0, 3)))
        if i and rng.random() < 0.5:
            deps = [*dict.fromkeys([i - 1, *deps])]
        mod.DAG[i] = (kind, deps)
    return expand([mod.node(i) for i in range(size)])


def _owners_upstream(nodes: Any) -> dict[str, set[str]]:
    """For each task, the tasks upstream of it that own files (walked in full)."""
    owners = {tid for tid, n in nodes.items()
              if n.task.spec().has_data_dir or (n.files is not None and n.files.outputs)}
    result = {}
    for tid in nodes:
        upstream: set[str] = set()
        stack = list(nodes[tid].deps)
        while stack:
            dep = stack.pop()
            if dep not in upstream:
                upstream.add(dep)
                stack.extend(nodes[dep].deps)
        result[tid] = upstream & owners
    return result


class _Counting(dict):  # type: ignore[type-arg]
    """The plan's nodes, counting lookups."""

    looked = 0

    def __getitem__(self, key: Any) -> Any:
        self.looked += 1
        return super().__getitem__(key)


def test_without_files_each_task_is_looked_at_a_few_times(make_module: Any) -> None:
    """A plan without files: that no task reads anything through its prerequisites is known
    after a few looks at each task, not a walk upstream per task."""
    mod = make_module("claimsnone", DAG_MODULE)
    size = 300
    for i in range(size):  # each task requires the five before it
        mod.DAG[i] = ("none", list(range(max(0, i - 5), i)))
    nodes = _Counting(expand([mod.node(size - 1)]))
    claims = _claims(nodes)
    assert all(claims.read_through(tid) == [] for tid in reversed(list(nodes)))
    assert nodes.looked < 10 * size


class _Readiness:
    def get(self, tid: str) -> TaskState:
        return TaskState.WAITING  # not done: share() reads no entries (no store here)


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)  # a run is here
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 2 + int(sys.argv[2][:12], 16))  # computing this task
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("seed", range(30))
def test_shared_locks_follow_the_running_tasks(make_module: Any, tmp_path: Path,
                                               seed: int) -> None:
    """A model of the counting: tasks start and return in a random order, and the reads
    of those that returned are given back at random moments. The locks this run shares are
    always those of the owners of files upstream of the tasks running or not given back,
    each once; a task whose owner another process holds is refused, and nothing of its is
    counted."""
    rng = random.Random(seed)
    nodes = _random_dag(make_module(f"claimsmodel{seed}", DAG_MODULE), rng)
    upstream = _owners_upstream(nodes)
    coordination = Coordination(tmp_path)
    state = SimpleNamespace(nodes=nodes, readiness=_Readiness(), values=None,
                            coordination=coordination, store=None)
    claims = Claims(state, None)  # type: ignore[arg-type]
    running: set[str] = set()
    returned: set[str] = set()
    holder = None
    try:
        for _ in range(150):
            step = rng.random()
            idle = [tid for tid in nodes if tid not in running]
            if step < 0.45 and idle:
                tid = rng.choice(idle)
                owners = sorted(upstream[tid] - set(coordination.readers))
                if holder is None and owners and rng.random() < 0.2:
                    # Another run computes one of them: refused, nothing counted.
                    holder = subprocess.Popen(
                        [sys.executable, "-c", HOLD, str(tmp_path / ".lock"),
                         rng.choice(owners)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
                    before = (dict(coordination.readers), dict(claims._active))
                    assert not claims.share(tid)
                    assert (dict(coordination.readers), dict(claims._active)) == before
                    assert coordination.take_blocked() == [tid]
                    holder.communicate("")
                    holder = None
                assert claims.share(tid)
                running.add(tid)
            elif step < 0.85 and running:
                tid = rng.choice(sorted(running))
                running.discard(tid)
                returned.add(tid)
                coordination.end_reads(tid)
            else:
                claims.release()
                returned.clear()
            expected = set().union(*(upstream[t] for t in running | returned))
            assert set(coordination.readers) == expected
            assert set(coordination.readers.values()) <= {1}
        for tid in running:
            coordination.end_reads(tid)
        claims.release()
        assert coordination.readers == {} and claims._active == {}
    finally:
        if holder is not None:
            holder.kill()
        coordination.close()
