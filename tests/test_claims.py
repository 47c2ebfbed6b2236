"""What a running task shares against other runs (:meth:`checkpoint._claims.Claims.file_deps`):
every task upstream of it that owns files, however far, on random DAGs."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from checkpoint._claims import Claims
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


@pytest.mark.parametrize("seed", range(30))
def test_a_task_shares_every_owner_of_files_upstream(make_module: Any, seed: int) -> None:
    """On a random DAG (some tasks with a TaskDirectory(), some with a Product, most with
    neither), each task shares exactly the tasks upstream of it that own files."""
    rng = random.Random(seed)
    mod = make_module(f"claimsdag{seed}", DAG_MODULE)
    size = rng.randint(2, 40)
    share = rng.choice([0.0, 0.1, 0.3])
    for i in range(size):
        kind = rng.choices(["none", "dir", "product"], [1 - share, share / 2, share / 2])[0]
        mod.DAG[i] = (kind, rng.sample(range(i), min(i, rng.randint(0, 3))))
    nodes = expand([mod.node(i) for i in range(size)])
    owners = {tid for tid, n in nodes.items()
              if n.task.spec().has_data_dir or (n.files is not None and n.files.outputs)}
    claims = _claims(nodes)
    for tid in rng.sample(list(nodes), len(nodes)):  # in any order: what is known is reused
        upstream: set[str] = set()
        stack = list(nodes[tid].deps)
        while stack:
            dep = stack.pop()
            if dep not in upstream:
                upstream.add(dep)
                stack.extend(nodes[dep].deps)
        shared = claims.file_deps(tid)
        assert len(shared) == len(set(shared))
        assert set(shared) == upstream & owners, f"task {nodes[tid].task!r}"


def test_without_files_each_task_is_looked_at_once(make_module: Any) -> None:
    """A plan without files: what each task shares is known after one look at each task
    (no walk upstream per task), and is nothing."""
    mod = make_module("claimsnone", DAG_MODULE)
    size = 300
    for i in range(size):  # each task requires all of the five before it
        mod.DAG[i] = ("none", list(range(max(0, i - 5), i)))
    nodes = expand([mod.node(size - 1)])
    claims = _claims(nodes)
    looked: list[str] = []
    owns = claims._owns_files

    def counting(tid: str) -> bool:
        looked.append(tid)
        return owns(tid)

    claims._owns_files = counting  # type: ignore[method-assign]
    assert all(claims.file_deps(tid) == [] for tid in reversed(list(nodes)))
    assert len(looked) == len(set(looked)) == size - 1  # each prerequisite, once
