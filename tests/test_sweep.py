"""Large sweeps: what the fast paths of expansion keep exactly as it was."""

from __future__ import annotations

import gc
from pathlib import Path

from checkpoint import requires, task
from checkpoint.graph import expand, plan
from checkpoint.store import Store
from checkpoint.task import interning


@task
def leaf(x: object):
    def __() -> object:
        return x
    return __


@task
def pair(i: int):
    @requires(leaf(i))
    @requires(leaf(i + 1))
    def __(a: object, b: object) -> list[object]:
        return [a, b]
    return __


@task
def top():
    @requires([leaf(0), pair(1), leaf(5), pair(2)])
    def __(values: list[object]) -> int:
        return len(values)
    return __


def test_expansion_order_with_leaves_and_inner_tasks() -> None:
    """Leaves join the plan where the depth-first walk meets them, as before: every task
    after its prerequisites, in declaration order."""
    order = [n.task.expression() for n in expand([top()]).values()]
    assert order == ["leaf(0)", "leaf(1)", "leaf(2)", "pair(1)", "leaf(5)", "leaf(3)",
                     "pair(2)", "top()"]


def test_a_call_made_again_is_the_same_task_only_for_the_same_argument_types() -> None:
    """While a graph expands, a call made again shares its task; 1, 1.0 and True stay three."""
    with interning():
        one = leaf(1)
        assert leaf(1) is one and leaf(x=1) is one
        assert leaf(1.0) is not one and leaf(True) is not one and leaf(1.0) is not leaf(True)
        assert leaf(1.0).encoded == '{"x":1.0}' and leaf(True).encoded == '{"x":true}'
        assert leaf("a") is leaf("a") and leaf([1]) is leaf([1])
    assert leaf(1) is not leaf(1)  # outside an expansion, each call makes its own handle
    assert leaf(1).arguments == {"x": 1} and pair(3).arguments == {"i": 3}


def test_plan_leaves_no_backlog_for_the_collector(tmp_path: Path) -> None:
    """The objects a plan makes should leave the youngest generation (the next collection
    would otherwise walk them all), unless something is frozen (then nothing is thawed)."""
    gc.collect()
    the_plan = plan([top()], Store.open(tmp_path))
    assert len(gc.get_objects(generation=0)) < 50
    assert len(the_plan) == 8
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        plan([pair(7)], Store.open(tmp_path))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_listing_plan_forgets_specs_and_plans_the_same(tmp_path: Path) -> None:
    """plan(keep_specs=False) (ls, graph, run --dry-run) should give the same nodes, order,
    prerequisites and reasons, its tasks holding no spec (inner function) afterwards."""
    store = Store.open(tmp_path)
    top().run(executor="inline", cache_dir=tmp_path)
    leaf(3).clear(cache_dir=tmp_path)
    kept = plan([top()], store)
    listing = plan([top()], store, keep_specs=False)
    assert [(tid, n.deps, n.reason) for tid, n in listing.nodes.items()] == \
        [(tid, n.deps, n.reason) for tid, n in kept.nodes.items()]
    assert {n.reason for n in listing.nodes.values()} == {None, "missing", "upstream re-run"}
    assert all(n.task._spec is None for n in listing.nodes.values())
    assert all(n.task._spec is not None for n in kept.nodes.values())


FROZEN_PROBE = '''
import gc, sys, weakref
sys.path.insert(0, {here!r})
from checkpoint import _gcpolicy
from checkpoint.graph import plan
from checkpoint.store import Store
from test_sweep import top, pair

store = Store.open({cache!r})
if {policy}:
    _gcpolicy.freeze_plans()
first = plan([top()], store)
after_first = gc.get_freeze_count()
class Cycle:
    pass
cycle = Cycle()
cycle.me = cycle  # garbage when the next plan starts
collected = weakref.ref(cycle)
del cycle
plan([pair(7)], store)
print(after_first, gc.get_freeze_count() >= after_first, collected() is None)
'''


def test_the_command_line_freezes_planning_for_good(tmp_path: Path) -> None:
    # A command that allocates after planning (a listing's rows) set off a full collection
    # over every object of the plan: 0.25 s of `ls` at 200,000 tasks, 2.6 s of a 1,000,000-
    # task dry run. The command line's process freezes them for good instead; garbage made
    # between two plans (watch mode) is still collected, not frozen with the next one.
    import subprocess
    import sys

    def probe(policy: bool) -> list[str]:
        code = FROZEN_PROBE.format(here=str(Path(__file__).parent), cache=str(tmp_path),
                                   policy=policy)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120).stdout.split()

    frozen, _, collected = probe(True)
    assert int(frozen) > 1000 and collected == "True"  # the plan and the imports
    assert probe(False)[0] == "0"  # a library's plans: nothing stays frozen


def test_int_calls_show_as_the_general_path_shows_them() -> None:
    # ls and dry runs show a million int calls through a shortcut: the same text.
    from checkpoint.task import _arg_repr

    @task
    def many(*xs: object):  # type: ignore[no-untyped-def]
        return lambda: None

    for args in [(), (3,), (-1, 2), (10**70,), (1, 10**55, 2), (1, True), (1, "a"), (2.0,)]:
        general = f"many({', '.join(_arg_repr(a, 1) for a in args)})"
        assert many(*args).expression() == general
    assert leaf(10**70).expression().endswith("...)")


def test_task_ids_from_the_family_hasher_are_task_id() -> None:
    # A handle's id is hashed from a copy of a state fed with the family's name once.
    from checkpoint.identity import task_id

    for value in [0, -3, "a", "é", "\ud800", "x\udfff y", 2.5, [1, "2"], {"k": None}]:
        made = leaf(value)
        assert made.id == task_id(leaf.name, made.encoded)
    assert top().id == task_id(top.name, "{}")


LEFT_AT_EXIT = '''
import sys
sys.path.insert(0, {here!r})
from checkpoint import _gcpolicy
from checkpoint.graph import plan
from checkpoint.store import Store
from checkpoint.task import Spec
from test_sweep import top

class Captured:
    def __init__(self, name: str) -> None:
        self.name = name
    def __del__(self) -> None:
        print(self.name, "freed", flush=True)

class Flagged(Spec):
    __slots__ = ()
    def __del__(self) -> None:
        print("spec freed", flush=True)

store = Store.open({cache!r})
if {policy}:
    _gcpolicy.freeze_plans()
earlier = plan([top()], store, keep_specs=False)
next(iter(earlier.nodes.values())).meta = Captured("earlier plan")
last = plan([top()], store)
node = next(iter(last.nodes.values()))  # a task only the plan holds
node.task._spec = Flagged(lambda c=Captured("captured"): c, [])  # the user's inner function
node.meta = Captured("last plan")  # (stands for the plan's own objects)
del earlier, last, node
print("command done", flush=True)
_gcpolicy.abandon()
print("abandoned", flush=True)
'''


def test_the_command_line_leaves_its_last_plan_to_the_operating_system(tmp_path: Path) -> None:
    # Freeing a 200,000-task plan object by object took 0.1-0.2 s of a warm run or `ls`;
    # the command line's process leaves its last plan at exit, after dropping each task's
    # inner function (what the user's code captured is freed, as before). An earlier
    # plan (--watch) is freed as before.
    import subprocess
    import sys

    def probe(policy: bool) -> list[str]:
        code = LEFT_AT_EXIT.format(here=str(Path(__file__).parent), cache=str(tmp_path),
                                   policy=policy)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=120).stdout.splitlines()

    lines = probe(True)
    assert lines[:2] == ["earlier plan freed", "command done"] and lines[-1] == "abandoned"
    assert sorted(lines[2:-1]) == ["captured freed", "spec freed"]  # not "last plan freed"
    lines = probe(False)
    assert sorted(lines[:4]) == ["captured freed", "earlier plan freed", "last plan freed",
                                 "spec freed"]
    assert lines[4:] == ["command done", "abandoned"]
