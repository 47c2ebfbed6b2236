"""checkpoint.catalog, .maintenance and .explain: listings, clearing with counts, pruning, why and
touch as library calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from checkpoint import catalog, explain, maintenance, run
from checkpoint.graph import expand, plan
from checkpoint.store import Store

SOURCE = """
from checkpoint import requires, task

@task
def leaf(x):
    '''A leaf.'''
    def __():
        return x
    return __

@task
def pair(a, b):
    @requires(leaf(a))
    @requires(leaf(b))
    def __(x, y):
        return [x, y]
    return __

@task
def top():
    @requires([pair(1, 2), pair(2, 3)])
    def __(pairs):
        return pairs
    return __
"""


def build(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> tuple[ModuleType, Store]:
    mod = make_module("catmod", SOURCE)
    run([mod.top()], executor="inline", cache_dir=cache_dir)
    return mod, Store.open(cache_dir)


def test_list_families_and_usage(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> None:
    """list_families and disk_usage should count entries and bytes per family."""
    mod, store = build(make_module, cache_dir)
    infos = catalog.list_families({"leaf": mod.leaf, "pair": mod.pair, "top": mod.top}, store)
    assert [(i.name, i.entries) for i in infos] == [("leaf", 3), ("pair", 2), ("top", 1)]
    assert infos[0].doc == "A leaf." and infos[0].size > 0
    usage = {u.family: u.entries for u in catalog.disk_usage(store)}
    assert usage == {"catmod.leaf": 3, "catmod.pair": 2, "catmod.top": 1}


def test_dag_states(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> None:
    """dag_states should give one state per task and counts per state."""
    mod, store = build(make_module, cache_dir)
    mod.leaf(3).clear(cache_dir=str(cache_dir))
    rows, counts = catalog.dag_states(plan([mod.top()], store))
    assert counts == {"fresh": 3, "stale": 2, "missing": 1, "code changed": 0}
    assert {r.task.expression(): r.state for r in rows}["pair(2, 3)"] == "stale"


def test_clear_counts_and_downstream(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> None:
    """Clearing should report entries removed; downstream should follow dependents only."""
    mod, store = build(make_module, cache_dir)
    below = maintenance.downstream_entries(expand([mod.top()]), task=mod.leaf(2))
    assert sorted(tid for _, tid in below) == sorted([mod.pair(1, 2).id, mod.pair(2, 3).id, mod.top().id])
    removed = maintenance.clear_entries(store, [("catmod.leaf", mod.leaf(2).id), *below])
    assert removed.entries == 4 and removed.bytes > 0
    assert maintenance.clear_family(store, "catmod.leaf").entries == 2
    assert maintenance.clear_all(store).entries == 0
    assert store.families() == []


def test_prune_candidates(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> None:
    """Prune should pick orphan families, outdated entries, old ones, then the oldest over a size."""
    mod, store = build(make_module, cache_dir)
    current = {f.dirname: f.fingerprint[0] for f in (mod.leaf, mod.pair)}
    items = maintenance.prune_candidates(store, current)
    assert [(i.family, i.id, i.why) for i in items] == [("catmod.top", None, "family not in the taskfile")]
    current["catmod.top"] = mod.top.fingerprint[0]
    current["catmod.pair"] = "other"
    assert {i.why for i in maintenance.prune_candidates(store, current)} == {"outdated code"}
    current["catmod.pair"] = mod.pair.fingerprint[0]
    assert maintenance.prune_candidates(store, current) == []
    assert len(maintenance.prune_candidates(store, current, older_than=-1)) == 6
    assert len(maintenance.prune_candidates(store, current, max_size=0)) == 6
    removed = maintenance.prune(store, maintenance.prune_candidates(store, current, max_size=0))
    assert removed.entries == 6


def test_explain_and_touch(make_module: Callable[[str, str], ModuleType], cache_dir: Path) -> None:
    """explain should name changed prerequisites; touch_plan should make the plan fresh."""
    mod, store = build(make_module, cache_dir)
    # leaf(1) recomputed to another value (a forced run of the same code keeps its stamp).
    from checkpoint.store import new_stamp

    meta = store.get_meta(mod.leaf(1).family.dirname, mod.leaf(1).id)
    assert meta is not None
    meta.stamp = new_stamp()
    store.put_metas(mod.leaf(1).family.dirname, {mod.leaf(1).id: meta})
    exps = explain.explain(plan([mod.top()], store), store)
    assert [(e.task.expression(), e.reason) for e in exps] == [
        ("pair(1, 2)", "upstream changed"), ("top()", "upstream re-run")]
    assert "leaf(1) was recomputed" in exps[0].details[0]
    report = maintenance.touch_plan(plan([mod.top()], store), store)
    assert (report.touched, report.fresh, report.missing) == (2, 4, [])
    assert plan([mod.top()], store).to_run == []
    assert len(expand([mod.top()])) == 6
