"""Graph export: DOT, Mermaid and JSON renderings of a marked plan, and images through Graphviz.

Every function takes a *source*: a :class:`~checkpoint.task.Task`, several tasks, or an
already marked :class:`~checkpoint.graph.Plan`. Tasks are expanded and marked against the
store (``cache_dir``, else ``$CP_CACHE_DIR``, else ``./.cache``) without running anything::

    from checkpoint import export
    print(export.to_dot(choose(6, 3)))              # Graphviz DOT text
    print(export.to_mermaid(choose(6, 3)))          # Mermaid flowchart text
    doc = export.to_dict(choose(6, 3))              # the JSON document below, as a dict
    svg = export.render(choose(6, 3), "svg")        # bytes; needs Graphviz's `dot`
    export.view(choose(6, 3))                       # displays itself in Jupyter

Two views: one node per task (the default), or with ``families=True`` one node per task
family, with its task counts per state and edges labelled with how many task-level edges
they stand for. Edges point from a prerequisite to its dependent. Writers go straight over
the plan's dicts (no networkx), so a 100,000-task DAG exports in about a second (see
``benchmarks/export_bench.py``).

**States.** Each task node shows one *display state*, by colour and border style, with a
legend (the states present and their counts):

===================  =========================================================
``fresh``            stored and up to date: reused, green, solid border
``missing``          no stored result: white, dashed border
``code changed``     its family's code changed since it was stored: orange, dashed
``input changed``    a ``File()`` input's content changed: orange, dashed
``output changed``   a declared output is missing or was changed: orange, dashed
``input missing``    a ``File()`` input does not exist: red, dashed
``corrupt``          its stored entry was found damaged during a run: red, dashed
``upstream re-run``  a prerequisite runs in this plan: yellow, dashed
``upstream changed`` a prerequisite's result changed since it was stored: yellow, dashed
``forced``           asked to re-run: blue, dashed
``failed``           failed in the last run: red, bold border
===================  =========================================================

The targets have a double border (DOT) / a thick border (Mermaid). A wide fan-in (more
than :data:`FAN_IN_ROW` leaves of one family feeding one task) is drawn as a box of rows
with one edge into that task (see :func:`fan_ins`); JSON keeps every edge.

**JSON schema** (``checkpoint-graph/1``; stable: fields may be added, never renamed or
removed without a new schema string)::

    {
      "schema": "checkpoint-graph/1",
      "view": "tasks",                  # or "families"
      "targets": ["<node id>", ...],    # the nodes of the requested targets
      "nodes": [...],                   # prerequisites before dependents
      "edges": [{"source": "<node id>", "target": "<node id>"}, ...]   # prerequisite -> dependent
    }

A node of the ``tasks`` view::

    {
      "id": "<32 hex digits>",          # the task id (also its key in the cache)
      "family": "module.function",      # the task family
      "label": "choose(6, 3)",          # the task as a target expression
      "arguments": {"n": 6, "k": 3},    # bound arguments, defaults applied, in checkpoint's
                                        # canonical encoding: tuples as {"$tuple": [...]},
                                        # task arguments as {"$task": "family:id"}
      "state": "fresh",                 # "fresh" | "stale" | "failed" (failed in the last run)
      "reason": null,                   # why it is stale: "missing" | "code changed" |
                                        # "input changed" | "output changed" |
                                        # "input missing" | "upstream re-run" |
                                        # "upstream changed" | "forced" | "corrupt"
      "duration": 0.12,                 # seconds the stored result took to compute, or null
      "stored": 1764300000.0,           # when it was stored (Unix time), or null
      "last_run": {                     # the last recorded run, or null if none
        "status": "done",               # "done" | "failed"
        "started": 1764299999.9,        # Unix time (null if unknown)
        "duration": 0.12                # seconds (null if unknown)
      }
    }

A node of the ``families`` view, and its edges (which carry ``"count"``, the number of
task-level edges between the two families; a recursive family has an edge to itself)::

    {
      "id": "module.function",          # the family name
      "family": "module.function",
      "label": "choose",
      "tasks": 12,                      # number of its tasks in the graph
      "states": {"fresh": 9, "missing": 3}   # display state -> count (states present only)
    }
    {"source": "module.f", "target": "module.g", "count": 12}

**Failures of the last run.** By default they come from the store's run history
(:func:`last_run_failures`); ``failed=`` (task ids, e.g. a
:class:`~checkpoint.scheduler.RunResult`'s ``failed``) overrides it.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Union

from ._types import FamilyDir, Json, Reason, TaskId, Word
from .errors import ExportError, GraphvizNotFoundError
from .graph import Node, Plan, plan
from .store import Store
from .task import Task

SCHEMA = "checkpoint-graph/1"
"""The ``schema`` string of :func:`to_json` documents."""

LARGE_GRAPH = 300
"""Above this many task nodes a per-task picture is hard to read (suggest ``families=True``)."""

FORMATS = ("dot", "mermaid", "json", "svg", "png")



class DisplayState(Word):
    """The state a task is drawn with: fresh, the reason it would run, or failed (in the
    last run); in legend order. Every :class:`~checkpoint._types.Reason` is one."""

    FRESH = "fresh"
    MISSING = Reason.MISSING.value
    CODE_CHANGED = Reason.CODE_CHANGED.value
    INPUT_CHANGED = Reason.INPUT_CHANGED.value
    OUTPUT_CHANGED = Reason.OUTPUT_CHANGED.value
    INPUT_MISSING = Reason.INPUT_MISSING.value
    CORRUPT = Reason.CORRUPT.value
    UPSTREAM_RERUN = Reason.UPSTREAM_RERUN.value
    UPSTREAM_CHANGED = Reason.UPSTREAM_CHANGED.value
    FORCED = Reason.FORCED.value
    FAILED = "failed"


_OF_REASON = {reason: DisplayState(reason.value) for reason in Reason}  # one for each, or no import


class NodeState(Word):
    """A task node's ``state`` in the JSON document."""

    FRESH = "fresh"
    STALE = "stale"
    FAILED = "failed"

Source = Union[Task[object], Iterable[Task[object]], Plan]


@dataclass(frozen=True)
class _Look:
    fill: str
    border: str
    dashed: bool = False
    bold: bool = False


_LOOKS: dict[DisplayState, _Look] = {
    DisplayState.FRESH: _Look("#d9f2d9", "#2e7d32"),
    DisplayState.MISSING: _Look("#ffffff", "#757575", dashed=True),
    DisplayState.CODE_CHANGED: _Look("#ffe0b2", "#e65100", dashed=True),
    DisplayState.INPUT_CHANGED: _Look("#ffe0b2", "#e65100", dashed=True),
    DisplayState.OUTPUT_CHANGED: _Look("#ffe0b2", "#e65100", dashed=True),
    DisplayState.INPUT_MISSING: _Look("#ffd6d6", "#c62828", dashed=True),
    DisplayState.CORRUPT: _Look("#ffd6d6", "#c62828", dashed=True),
    DisplayState.UPSTREAM_RERUN: _Look("#fff3c4", "#b28900", dashed=True),
    DisplayState.UPSTREAM_CHANGED: _Look("#fff3c4", "#b28900", dashed=True),
    DisplayState.FORCED: _Look("#d6e4ff", "#1f4fbf", dashed=True),
    DisplayState.FAILED: _Look("#ffd6d6", "#c62828", bold=True),
}


def state_looks() -> dict[str, dict[str, Json]]:
    """How each display state is drawn: ``{state: {"fill", "border", "dashed", "bold"}}``
    (the run report draws its DAG the same way)."""
    return {state: {"fill": look.fill, "border": look.border, "dashed": look.dashed,
                    "bold": look.bold} for state, look in _LOOKS.items()}


def _dot_attrs(look: _Look) -> str:
    style = "rounded,filled" + (",dashed" if look.dashed else "") + (",bold" if look.bold else "")
    return f'fillcolor="{look.fill}", color="{look.border}", style="{style}"'


_DOT_ATTRS = {state: _dot_attrs(look) for state, look in _LOOKS.items()}
_CSS_CLASS = {state: state.replace(" ", "_").replace("-", "") for state in DisplayState}


# --- building the plan -----------------------------------------------------------------


def plan_for(
    source: Source, *, cache_dir: str | Path | None = None, code_check: bool = True
) -> Plan:
    """The marked plan of ``source`` (returned as is when it already is a :class:`Plan`)."""
    return _plan_of(source, Store.open(cache_dir), code_check)


def _plan_of(source: Source, store: Store, code_check: bool) -> Plan:
    if isinstance(source, Plan):
        return source
    tasks = [source] if isinstance(source, Task) else list(source)
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"export needs Task handles or a Plan, not {t!r} ({type(t).__name__})")
    return plan(tasks, store, code_check=code_check)


def last_run_failures(the_plan: Plan, store: Store) -> set[TaskId]:
    """Ids of the plan's tasks whose last recorded run failed (see :mod:`checkpoint.history`).

    Asks the store which tasks of each family have a failed run on record (one index query
    per family) and keeps those whose failure is more recent than their stored result.
    """
    from .history import LastRunStatus, last_run

    by_family: dict[FamilyDir, set[TaskId]] = {}
    for tid, node in the_plan.nodes.items():
        by_family.setdefault(node.task.family.dirname, set()).add(tid)
    failed: set[TaskId] = set()
    for dirname, ids in by_family.items():
        for tid in ids.intersection(store.failed_run_ids(dirname)):
            run = last_run(the_plan.nodes[tid].task, store)
            if run is not None and run.status is LastRunStatus.FAILED:
                failed.add(tid)
    return failed


@dataclass(frozen=True)
class _Marked:
    """A marked plan, its tasks that failed in the last run, and the store they were read from."""

    plan: Plan
    failed: Collection[TaskId]
    store: Store


def _marked(
    source: Source, failed: Collection[TaskId] | None, cache_dir: str | Path | None,
    code_check: bool,
) -> _Marked:
    """The store is opened once here, and everything after reads that one."""
    store = Store.open(cache_dir)
    the_plan = _plan_of(source, store, code_check)
    if failed is None:
        failed = last_run_failures(the_plan, store)
    elif not isinstance(failed, (set, frozenset, dict)):
        failed = set(failed)
    return _Marked(the_plan, failed, store)


def display_state(node: Node, failed: Collection[TaskId] = ()) -> DisplayState:
    """The state a node is drawn with."""
    if failed and node.task.id in failed:
        return DisplayState.FAILED
    return DisplayState.FRESH if node.reason is None else _OF_REASON[node.reason]


# --- an intermediate view shared by DOT and Mermaid ------------------------------------------


@dataclass
class _View:
    kind: str
    """``"tasks"`` or ``"families"``."""
    ids: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    states: list[DisplayState] = field(default_factory=list)
    tips: list[str] = field(default_factory=list)
    targets: set[int] = field(default_factory=set)
    edges: list[tuple[int, int, int]] = field(default_factory=list)
    """``(source index, target index, multiplicity)``."""
    counts: Counter[DisplayState] = field(default_factory=Counter)
    """Task count per display state (for the legend)."""
    family_states: list[dict[DisplayState, int]] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    """The family of each node (tasks view)."""


FAN_IN_ROW = 8
"""Leaves feeding one task are drawn in rows of at least this many (see :func:`fan_ins`)."""


def fan_ins(view: _View) -> list[tuple[int, list[int]]]:
    """The wide fan-ins of a tasks view: ``(dependent, its leaf prerequisites of one family)``
    for each group of more than :data:`FAN_IN_ROW` leaves (tasks that need nothing and feed
    only that dependent). Graphviz puts such leaves side by side, one row as wide as all of
    them (40 leaves: 4,000 pixels, the dependent off screen); drawn in a box of several rows
    with one edge into the dependent, the picture keeps a readable width.
    """
    needs: Counter[int] = Counter()
    feeds: dict[int, list[int]] = {}
    for s, t, _ in view.edges:
        needs[t] += 1
        feeds.setdefault(s, []).append(t)
    groups: dict[tuple[int, str], list[int]] = {}
    for node, dependents in feeds.items():
        if not needs[node] and len(dependents) == 1:
            groups.setdefault((dependents[0], view.families[node]), []).append(node)
    return [(t, sorted(leaves)) for (t, _), leaves in groups.items() if len(leaves) > FAN_IN_ROW]


def _task_view(the_plan: Plan, failed: Collection[TaskId]) -> _View:
    view = _View("tasks")
    index: dict[TaskId, int] = {}
    target_ids = {t.id for t in the_plan.targets}
    edges = view.edges
    for i, (tid, node) in enumerate(the_plan.nodes.items()):
        index[tid] = i
        task = node.task
        state = display_state(node, failed)
        view.ids.append(tid)
        view.labels.append(task.expression())
        view.states.append(state)
        view.tips.append(f"{task.family.name}: {state}")
        view.families.append(task.family.name)
        for dep in node.deps:
            edges.append((index[dep], i, 1))
        if tid in target_ids:
            view.targets.add(i)
    view.counts.update(view.states)
    return view


def _family_view(the_plan: Plan, failed: Collection[TaskId]) -> _View:
    view = _View("families")
    index: dict[str, int] = {}
    per_task: dict[TaskId, int] = {}
    states: list[Counter[DisplayState]] = []
    multiplicity: Counter[tuple[int, int]] = Counter()
    for tid, node in the_plan.nodes.items():
        family = node.task.family
        i = index.get(family.name)
        if i is None:
            i = index[family.name] = len(view.ids)
            view.ids.append(family.name)
            view.labels.append(family.short_name)
            states.append(Counter())
        per_task[tid] = i
        states[i][display_state(node, failed)] += 1
        for dep in node.deps:
            multiplicity[per_task[dep], i] += 1
    view.edges = [(s, t, n) for (s, t), n in multiplicity.items()]
    view.targets = {index[t.family.name] for t in the_plan.targets}
    shorts = Counter(view.labels)
    for i, counter in enumerate(states):
        if shorts[view.labels[i]] > 1:  # same function name in two modules
            view.labels[i] = view.ids[i]
        total = sum(counter.values())
        ordered = {s: counter[s] for s in DisplayState if counter[s]}
        view.family_states.append(ordered)
        summary = ", ".join(f"{n} {s}" for s, n in ordered.items())
        noun = "task" if total == 1 else "tasks"
        view.labels[i] = f"{view.labels[i]}\n{total} {noun}: {summary}"
        view.states.append(_family_state(counter))
        view.tips.append(view.ids[i])
        view.counts.update(counter)
    return view


def _family_state(counter: Counter[DisplayState]) -> DisplayState:
    if counter[DisplayState.FAILED]:
        return DisplayState.FAILED
    stale = [(n, s) for s, n in counter.items() if s is not DisplayState.FRESH]
    if not stale:
        return DisplayState.FRESH
    order = list(DisplayState)
    return max(stale, key=lambda ns: (ns[0], -order.index(ns[1])))[1]


def _view(marked: _Marked, families: bool) -> _View:
    view = _family_view if families else _task_view
    return view(marked.plan, marked.failed)


# --- DOT --------------------------------------------------------------------------------------


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_legend(counts: Counter[DisplayState]) -> str:
    cells = "".join(
        f'<td bgcolor="{_LOOKS[s].fill}" color="{_LOOKS[s].border}">{s} ({counts[s]})</td>'
        for s in DisplayState
        if counts[s]
    )
    return (
        '<<table border="0" cellborder="1" cellspacing="3" cellpadding="4"><tr>'
        f'<td border="0"><b>task states:</b></td>{cells}'
        '<td border="0">double border: target</td></tr></table>>'
    )


def _dot_lines(view: _View, legend: bool) -> Iterator[str]:
    yield "digraph checkpoint {\n"
    graph_attrs = 'rankdir=TB, fontname="Helvetica", fontsize=10'
    if legend:
        graph_attrs += f", labelloc=b, labeljust=l, label={_dot_legend(view.counts)}"
    groups = fan_ins(view) if view.kind == "tasks" else []
    if groups:
        graph_attrs += ", compound=true"
    yield f"  graph [{graph_attrs}];\n"
    yield '  node [shape=box, fontname="Helvetica", fontsize=11];\n'
    yield '  edge [color="#606060", arrowsize=0.7, fontname="Helvetica", fontsize=10];\n'
    prefix = "f" if view.kind == "families" else "n"
    attrs = _DOT_ATTRS
    nodes = [
        f"{prefix}{i} [label={_dot_str(label)}, tooltip={_dot_str(tip)}, {attrs[state]}"
        f"{', peripheries=2' if i in view.targets else ''}];\n"
        for i, (label, state, tip) in enumerate(zip(view.labels, view.states, view.tips, strict=True))
    ]
    grouped: set[int] = set()
    for g, (dependent, leaves) in enumerate(groups):
        grouped.update(leaves)
        yield from _dot_fan_in(g, dependent, leaves, view.families[leaves[0]], nodes)
    for i, line in enumerate(nodes):
        if i not in grouped:
            yield "  " + line
    if view.kind == "families":
        for s, t, n in view.edges:  # thicker for more task edges, so heavy flows stand out
            yield f'  f{s} -> f{t} [label="{n}", penwidth={1 + math.log10(n):.1f}];\n'
    else:
        for s, t, _ in view.edges:
            if s not in grouped:
                yield f"  n{s} -> n{t};\n"
    yield "}\n"


def _rows(leaves: list[int]) -> list[list[int]]:
    """A fan-in's leaves in rows: of :data:`FAN_IN_ROW`, wider for hundreds."""
    row = max(FAN_IN_ROW, math.isqrt(len(leaves) // 2))
    return [leaves[k:k + row] for k in range(0, len(leaves), row)]


def _dot_fan_in(g: int, dependent: int, leaves: list[int], family: str, nodes: list[str]) -> Iterator[str]:
    """A wide fan-in (see :func:`fan_ins`): its leaves in a box, row under row (invisible
    edges stack the rows and keep each row in order), one edge from the box to the task."""
    label = f"{family.rpartition('.')[2]}: {len(leaves)} tasks"
    yield f"  subgraph cluster_fan{g} {{\n"
    yield (f'    graph [label={_dot_str(label)}, labeljust=l, style="rounded,dashed", '
           'color="#909090"];\n')
    for i in leaves:
        yield "    " + nodes[i]
    rows = _rows(leaves)
    for above, below in itertools.pairwise(rows):
        yield f"    n{above[0]} -> n{below[0]} [style=invis];\n"
    for cells in rows:
        if len(cells) > 1:
            yield ("    {rank=same; " + " -> ".join(f"n{i}" for i in cells)
                   + " [style=invis];}\n")
    yield "  }\n"
    last = rows[-1][len(rows[-1]) // 2]
    yield (f'  n{last} -> n{dependent} [ltail=cluster_fan{g}, label="{len(leaves)}", '
           f"penwidth={1 + math.log10(len(leaves)):.1f}];\n")


def to_dot(
    source: Source,
    *,
    families: bool = False,
    legend: bool = True,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> str:
    """Graphviz DOT text of the graph of ``source`` (see the module docstring)."""
    marked = _marked(source, failed, cache_dir, code_check)
    return "".join(_dot_lines(_view(marked, families), legend))


# --- Mermaid ----------------------------------------------------------------------------------

_MERMAID_ESCAPES = str.maketrans({"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;"})


def _mermaid_str(text: str) -> str:
    return '"' + text.translate(_MERMAID_ESCAPES).replace("\n", "<br>") + '"'


def _mermaid_lines(view: _View, legend: bool) -> Iterator[str]:
    yield "flowchart TB\n"
    prefix = "f" if view.kind == "families" else "n"
    css = _CSS_CLASS
    nodes = [f"{prefix}{i}[{_mermaid_str(label)}]:::{css[state]}\n"
             for i, (label, state) in enumerate(zip(view.labels, view.states, strict=True))]
    grouped: set[int] = set()
    for g, (dependent, leaves) in enumerate(fan_ins(view) if view.kind == "tasks" else []):
        grouped.update(leaves)
        label = f"{view.families[leaves[0]].rpartition('.')[2]}: {len(leaves)} tasks"
        yield f"  subgraph fan{g}[{_mermaid_str(label)}]\n"
        yield from ("    " + nodes[i] for i in leaves)
        for cells in _rows(leaves):  # invisible links keep a row's tasks side by side
            if len(cells) > 1:
                yield "    " + " ~~~ ".join(f"n{i}" for i in cells) + "\n"
        yield f'  end\n  fan{g} -->|"{len(leaves)}"| n{dependent}\n'
    yield from ("  " + line for i, line in enumerate(nodes) if i not in grouped)
    if view.kind == "families":
        for s, t, n in view.edges:
            yield f'  f{s} -->|"{n}"| f{t}\n'
    else:
        for s, t, _ in view.edges:
            if s not in grouped:
                yield f"  n{s} --> n{t}\n"
    if view.targets:
        yield "  class " + ",".join(f"{prefix}{i}" for i in sorted(view.targets)) + " target\n"
    if legend:
        yield '  subgraph legend["legend"]\n'
        for state in DisplayState:
            if view.counts[state]:
                yield f'    legend_{css[state]}["{state} ({view.counts[state]})"]:::{css[state]}\n'
        yield "  end\n"
    for state in DisplayState:
        look = _LOOKS[state]
        style = f"fill:{look.fill},stroke:{look.border}"
        if look.dashed:
            style += ",stroke-dasharray:5 3"
        if look.bold:
            style += ",stroke-width:3px"
        yield f"  classDef {css[state]} {style}\n"
    yield "  classDef target stroke-width:4px\n"


def to_mermaid(
    source: Source,
    *,
    families: bool = False,
    legend: bool = True,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> str:
    """Mermaid flowchart text of the graph of ``source`` (renders in GitHub Markdown)."""
    marked = _marked(source, failed, cache_dir, code_check)
    return "".join(_mermaid_lines(_view(marked, families), legend))


# --- JSON -------------------------------------------------------------------------------------


def to_dict(
    source: Source,
    *,
    families: bool = False,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> dict[str, Json]:
    """The graph of ``source`` as the ``checkpoint-graph/1`` document (module docstring)."""
    return _document(_marked(source, failed, cache_dir, code_check), families)


def _document(marked: _Marked, families: bool) -> dict[str, Json]:
    if families:
        fam = _family_view(marked.plan, marked.failed)
        return {
            "schema": SCHEMA,
            "view": "families",
            "targets": sorted({fam.ids[i] for i in fam.targets}),
            "nodes": [
                {
                    "id": fid,
                    "family": fid,
                    "label": label.split("\n", 1)[0],
                    "tasks": sum(states.values()),
                    "states": {s.value: n for s, n in states.items()},
                }
                for fid, label, states in zip(fam.ids, fam.labels, fam.family_states, strict=True)
            ],
            "edges": [
                {"source": fam.ids[s], "target": fam.ids[t], "count": n} for s, t, n in fam.edges
            ],
        }
    the_plan = marked.plan
    return {
        "schema": SCHEMA,
        "view": "tasks",
        "targets": [t.id for t in the_plan.targets],
        "nodes": list(_task_nodes(marked)),
        "edges": [{"source": dep, "target": tid}
                  for tid, node in the_plan.nodes.items() for dep in node.deps],
    }


def _task_nodes(marked: _Marked) -> Iterator[dict[str, Json]]:
    """The ``tasks`` view's node documents, in the plan's order."""
    from .history import LastRunStatus

    loads = json.loads
    the_plan, fails = marked.plan, marked.failed
    failed_runs = _failed_runs(marked)
    for tid, node in the_plan.nodes.items():
        task, meta = node.task, node.meta
        last: dict[str, Json] | None = None
        if fails and tid in fails:
            state = NodeState.FAILED
            last = failed_runs.get(tid) or {"status": LastRunStatus.FAILED, "started": None,
                                            "duration": None}
        else:
            state = NodeState.FRESH if node.reason is None else NodeState.STALE
            if meta is not None:
                last = {"status": LastRunStatus.DONE, "started": meta.started,
                        "duration": meta.duration}
        yield {
            "id": tid,
            "family": task.family.name,
            "label": task.expression(),
            "arguments": loads(task.encoded),
            "state": state,
            "reason": node.reason,
            "duration": meta.duration if meta is not None else None,
            "stored": meta.stored if meta is not None else None,
            "last_run": last,
        }


def _failed_runs(marked: _Marked) -> dict[TaskId, dict[str, Json]]:
    if not marked.failed:
        return {}
    from .history import LastRunStatus, last_run

    runs: dict[TaskId, dict[str, Json]] = {}
    for tid in marked.failed:
        node = marked.plan.nodes.get(tid)
        run = last_run(node.task, marked.store) if node is not None else None
        if run is not None and run.status is LastRunStatus.FAILED:
            runs[tid] = {"status": run.status, "started": run.started, "duration": run.duration}
    return runs


def to_json(
    source: Source,
    *,
    families: bool = False,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
    indent: int | None = None,
) -> str:
    """The ``checkpoint-graph/1`` JSON document of the graph of ``source``."""
    return _json_text(_marked(source, failed, cache_dir, code_check), families, indent)


def _json_text(marked: _Marked, families: bool, indent: int | None) -> str:
    if indent is not None:
        return json.dumps(_document(marked, families), indent=indent, ensure_ascii=False) + "\n"
    text = io.StringIO()
    _write_json(marked, text, families)
    return text.getvalue()


def write_json(
    source: Source,
    file: IO[str],
    *,
    families: bool = False,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> None:
    """Write :func:`to_json`'s document (compact) to a text file, node by node and edge by
    edge: the same text, without the whole document in memory (a 200,000-task graph)."""
    _write_json(_marked(source, failed, cache_dir, code_check), file, families)


def _write_json(marked: _Marked, file: IO[str], families: bool) -> None:
    if families:
        file.write(json.dumps(_document(marked, True), ensure_ascii=False) + "\n")
        return
    the_plan = marked.plan
    dumps = json.JSONEncoder(ensure_ascii=False).encode  # what json.dumps(doc) writes with
    file.write('{"schema": ' + dumps(SCHEMA) + ', "view": "tasks", "targets": '
               + dumps([t.id for t in the_plan.targets]) + ', "nodes": [')
    _write_items(file, _task_nodes(marked), dumps)
    file.write('], "edges": [')
    _write_items(file, ({"source": dep, "target": tid}
                        for tid, node in the_plan.nodes.items() for dep in node.deps), dumps)
    file.write("]}\n")


def _write_items(file: IO[str], items: Iterable[object], dumps: Callable[[object], str]) -> None:
    """The items of a JSON list as ``dumps`` writes them inside one, a few thousand per
    write (and per ``dumps``: a list costs one encoder, not one per item)."""
    first = True
    items = iter(items)
    while True:
        chunk = list(itertools.islice(items, 2000))
        if not chunk:
            return
        file.write(("" if first else ", ") + dumps(chunk)[1:-1])
        first = False


# --- images through Graphviz ------------------------------------------------------------------


def find_dot() -> str | None:
    """The path of Graphviz's ``dot`` program, or ``None`` when it is not installed."""
    return shutil.which("dot")


def dot_to_image(dot_text: str, fmt: str = "svg") -> bytes:
    """Render DOT text to an image (``"svg"``, ``"png"``, or any ``dot -T`` format).

    Raises:
        GraphvizNotFoundError: Graphviz's ``dot`` is not installed.
        ExportError: ``dot`` failed.
    """
    dot = find_dot()
    if dot is None:
        raise GraphvizNotFoundError(
            f"Rendering {fmt.upper()} needs Graphviz's 'dot' program, which is not on PATH. "
            "Install Graphviz (apt-get install graphviz, brew install graphviz, conda install "
            "graphviz, or see https://graphviz.org/download/), or export text that needs no "
            "Graphviz: 'checkpoint graph --dot' (or --mermaid, --json)."
        )
    try:
        proc = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode("utf-8", "backslashreplace"), capture_output=True, check=False)
    except OSError as exc:
        raise ExportError(f"Could not run Graphviz's dot ({dot}): {exc}.") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip()
        raise ExportError(
            f"Graphviz's dot failed to render {fmt.upper()} (exit {proc.returncode}): {message}. "
            "Export with --dot to inspect the input."
        )
    return proc.stdout


def render(
    source: Source,
    fmt: str = "svg",
    *,
    families: bool = False,
    legend: bool = True,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> bytes:
    """The graph of ``source`` rendered by Graphviz (see :func:`dot_to_image`)."""
    text = to_dot(
        source, families=families, legend=legend, failed=failed, cache_dir=cache_dir,
        code_check=code_check,
    )
    return dot_to_image(text, fmt)


def export(
    source: Source,
    fmt: str = "dot",
    *,
    families: bool = False,
    legend: bool = True,
    failed: Collection[TaskId] | None = None,
    cache_dir: str | Path | None = None,
    code_check: bool = True,
) -> str | bytes:
    """The graph of ``source`` in one of :data:`FORMATS`: text for dot/mermaid/json, bytes for images."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}.")
    marked = _marked(source, failed, cache_dir, code_check)
    if fmt == "json":
        return _json_text(marked, families, None)
    lines = _mermaid_lines if fmt == "mermaid" else _dot_lines
    text = "".join(lines(_view(marked, families), legend))
    return text if fmt in ("dot", "mermaid") else dot_to_image(text, fmt)


def write(data: str | bytes, file: str | Path | IO[Any]) -> None:
    """Write an export (text or image bytes) to a path or an open file."""
    if isinstance(file, (str, Path)):
        if isinstance(data, bytes):
            Path(file).write_bytes(data)
        else:
            Path(file).write_text(data, encoding="utf-8", errors="backslashreplace")
    else:
        file.write(data)


# --- notebooks ---------------------------------------------------------------------------------


class GraphView:
    """A task graph for notebooks and scripts: displays as SVG in Jupyter when Graphviz is
    installed, else as a Mermaid diagram (JupyterLab >= 4.1 renders it) plus text."""

    def __init__(
        self,
        source: Source,
        *,
        families: bool = False,
        legend: bool = True,
        failed: Collection[TaskId] | None = None,
        cache_dir: str | Path | None = None,
        code_check: bool = True,
    ) -> None:
        self._marked = _marked(source, failed, cache_dir, code_check)
        self.plan = self._marked.plan
        self.failed = self._marked.failed
        self.families = families
        self.legend = legend

    def dot(self) -> str:
        """DOT text."""
        return "".join(_dot_lines(_view(self._marked, self.families), self.legend))

    def mermaid(self) -> str:
        """Mermaid text."""
        return "".join(_mermaid_lines(_view(self._marked, self.families), self.legend))

    def json(self, indent: int | None = None) -> str:
        """The ``checkpoint-graph/1`` JSON document."""
        return _json_text(self._marked, self.families, indent)

    def to_dict(self) -> dict[str, Json]:
        """The ``checkpoint-graph/1`` document as a dict."""
        return _document(self._marked, self.families)

    def svg(self) -> str:
        """SVG text (needs Graphviz)."""
        return dot_to_image(self.dot(), "svg").decode()

    def png(self) -> bytes:
        """PNG bytes (needs Graphviz)."""
        return dot_to_image(self.dot(), "png")

    def save(self, path: str | Path) -> Path:
        """Write the graph to ``path`` in the format its suffix names (.dot .gv .mmd .json .svg .png)."""
        path = Path(path)
        fmt = format_for_path(path)
        if fmt is None:
            raise ValueError(f"Cannot tell the graph format from {path.name!r}; use .dot, .mmd, .json, .svg or .png.")
        makers: dict[str, Callable[[], str | bytes]] = {
            "dot": self.dot, "mermaid": self.mermaid, "json": self.json, "svg": self.svg, "png": self.png,
        }
        data = makers[fmt]()
        write(data, path)
        return path

    def _repr_svg_(self) -> str | None:
        return self.svg() if find_dot() else None

    def _repr_mimebundle_(
        self, include: Collection[str] | None = None, exclude: Collection[str] | None = None
    ) -> dict[str, str]:
        bundle = {"text/plain": repr(self)}
        if find_dot():
            bundle["image/svg+xml"] = self.svg()
        else:
            bundle["text/markdown"] = "```mermaid\n" + self.mermaid() + "```\n"
        return bundle

    def __repr__(self) -> str:
        edges = sum(len(n.deps) for n in self.plan.nodes.values())
        targets = ", ".join(t.expression() for t in self.plan.targets)
        kind = "families" if self.families else "tasks"
        return f"<GraphView of {targets}: {len(self.plan)} tasks, {edges} edges ({kind} view)>"


def view(*tasks: Task[object] | Iterable[Task[object]], **options: Any) -> GraphView:
    """A :class:`GraphView` of one or more tasks; in Jupyter, the last line ``view(t)`` draws it."""
    flat: list[Task[object]] = []
    for t in tasks:
        if isinstance(t, Task):
            flat.append(t)
        else:
            flat.extend(t)
    return GraphView(flat, **options)


_SUFFIXES = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid", ".json": "json",
             ".svg": "svg", ".png": "png"}


def format_for_path(path: str | Path) -> str | None:
    """The export format a file name's suffix names, or ``None``."""
    return _SUFFIXES.get(Path(path).suffix.lower())
