"""kill -9 at random moments (computing, storing, clearing): the next run resumes correctly.

Each kill is followed by checks on the cache it left: every stored entry verifies and
decodes to the right value, every stored TaskDirectory is complete, the killed run's workers
are gone, and the killed run computed only tasks the plan said were unfinished. The final run
must then compute the tasks the plan lists as missing or stale, of the others it lists only
those early cutoff does not keep, nothing that was stored and fresh, and print the right
digest. ``make test`` runs a handful of kills; ``make test-faults`` runs 30+.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from faultkit import env_for, executions, install_graph, start, wait_dead, worker_pids

from checkpoint._types import Reason
from checkpoint.graph import plan
from checkpoint.store import Store
from checkpoint.taskfile import load_taskfile


class _Graph:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.taskfile = install_graph(tmp_path)
        self.module: ModuleType = load_taskfile(self.taskfile)
        self.cache = tmp_path / ".cache"

    def unfinished(self, *, stale_only: bool = False) -> set[str]:
        """Expressions of the tasks the planner would run now (on a fresh view of the store);
        with ``stale_only``, those whose own entry is missing or stale (not the ones listed
        only because a prerequisite runs: early cutoff may keep them)."""
        store = Store(self.cache)
        try:
            p = plan([self.module.main()], store)
            return {p.nodes[tid].task.expression() for tid in p.to_run
                    if not stale_only or p.nodes[tid].reason != Reason.UPSTREAM_RERUN}
        finally:
            store.close()

    def check_store(self) -> int:
        """Every stored entry verifies and holds the right value; return how many there are."""
        store = Store(self.cache)
        m = self.module
        count = 0
        try:
            for family in store.families():
                for tid, meta in store.entries(family):
                    value = store.load_value(family, tid)
                    name, arg = meta.expr.rstrip(")").split("(")
                    if name in ("leaf", "leaf_z"):
                        assert value == m.leaf_value(int(arg)), meta.expr
                        if name == "leaf" and int(arg) % 10 == 3:
                            data = store.data_dir(family, tid) / "value.bin"
                            assert data.read_bytes() == value, meta.expr
                    elif name == "mid":
                        assert value == m.mid_value(int(arg)), meta.expr
                    else:
                        assert value == m.expected_main(), meta.expr
                    count += 1
        finally:
            store.close()
        return count

    def clear_script(self, rng: random.Random) -> str:
        ops = []
        for _ in range(3):
            kind = rng.choice(["family", "entry", "entry"])
            if kind == "family":
                ops.append(f"m.{rng.choice(['leaf', 'leaf_z', 'mid'])}.clear()")
            else:
                ops.append(f"m.leaf({rng.randrange(0, 200, 2)}).clear(); m.mid({rng.randrange(40)}).clear()")
        return (
            "import sys; sys.path.insert(0, '.'); import faultgraph as m\n" + "\n".join(ops) + "\n"
        )


def _kill_loop(tmp_path: Path, kills: int, seed: int) -> tuple[int, int]:
    """Kill runs (and clears) at random moments, checking the store after each; return
    (kills, kills that cut a run or clear short with work left to resume)."""
    rng = random.Random(seed)
    g = _Graph(tmp_path)
    tried = midway = 0
    for k in range(kills):
        before = g.unfinished()
        log = tmp_path / f"exec{k}.log"
        env = env_for(tmp_path, log)
        if k % 4 == 3:
            proc = subprocess.Popen(
                [sys.executable, "-c", g.clear_script(rng)], cwd=tmp_path, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            time.sleep(rng.uniform(0.0, 0.6))
        else:
            proc = start([str(g.taskfile), "-j", "2"], tmp_path, env)
            time.sleep(rng.uniform(0.3, 1.6))
        proc.kill()
        _, err = proc.communicate()
        tried += 1
        assert proc.returncode in (0, -9), err
        ran = executions(log)
        assert len(ran) == len(set(ran)), "a task was computed twice in one run"
        assert set(ran) <= before, f"re-ran finished tasks: {sorted(set(ran) - before)}"
        assert not wait_dead(worker_pids(log) - {proc.pid}), "orphan worker processes"
        g.check_store()
        midway += proc.returncode == -9 and bool(g.unfinished())
    # The last run finishes and computes what was unfinished: every task whose entry is
    # missing or stale, and of their dependents those whose prerequisites' values changed
    # (the values are deterministic, so a recomputed one keeps its stamp: early cutoff).
    before, stale = g.unfinished(), g.unfinished(stale_only=True)
    log = tmp_path / "final.log"
    proc = start([str(g.taskfile), "-j", "2"], tmp_path, env_for(tmp_path, log))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == g.module.expected_main()  # a str prints as it is
    ran = executions(log)
    assert len(ran) == len(set(ran)), "a task was computed twice in one run"
    assert stale <= set(ran) <= before, (sorted(stale - set(ran)), sorted(set(ran) - before))
    assert g.check_store() == 241
    assert g.unfinished() == set()
    return tried, midway


def test_kill_9_at_random_moments_resumes_short(tmp_path: Path) -> None:
    """A few kill -9s of real runs and clears should leave a cache the next run finishes correctly."""
    tried, midway = _kill_loop(tmp_path, kills=5, seed=1)
    assert tried == 5 and midway >= 1, "no kill landed while there was work left: nothing was proved"


@pytest.mark.faults
def test_kill_9_at_random_moments_resumes_long(tmp_path: Path) -> None:
    """Thirty-odd kill -9s at random moments should each leave a correct, resumable cache."""
    kills = int(os.environ.get("CP_FAULT_KILLS", "32"))
    tried, midway = _kill_loop(tmp_path, kills=kills, seed=int(os.environ.get("CP_FAULT_SEED", "7")))
    print(f"\nkill -9: {tried} kills, {midway} of them mid-work; every resume correct")
    assert tried == kills and midway >= 1, "no kill landed while there was work left"
