"""Run reports: one self-contained HTML page about a recorded run, or a Chrome trace.

A :class:`Report` reads a :class:`~checkpoint.runs.RunRecord` (the last run, or any of the
cache's history) and the store (sizes on disk), and computes what the page shows:

* a summary: targets, tasks ran/reused/failed/skipped, wall time, the machine, the executor;
* a **timeline** with one lane per worker slot: each worker process, split into as many
  slots as it ran tasks at once (threads); one bar per task that ran, coloured by family;
* the **critical path**: the chain of prerequisites whose durations add up to the most
  (``networkx.dag_longest_path``), which no number of workers could have shortened, and how
  much parallelism the run used against what it had and what the DAG allowed;
* the DAG by families (and by tasks when it is small), coloured as ``checkpoint graph``
  colours states;
* each task's arguments, state, reason, duration, sizes, captured output and traceback;
  the slowest tasks and families, and the cache size of each family.

The page embeds its data, styles and script (``checkpoint/templates/``): it makes no network
request (its Content-Security-Policy forbids them), so it opens offline and can be mailed.
:meth:`Report.trace` gives the same run in Chrome's trace-event format, which Perfetto and
``chrome://tracing`` open, one track per worker slot.

In Jupyter a report shows itself (``_repr_html_``): the same page, in an iframe.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ._tracebacks import trim_traceback
from ._types import Json
from .errors import StoreError
from .runs import RecordState, RunRecord, TaskRecord, load_run
from .store import Store

FORMATS = ("html", "trace")

TIMED = (RecordState.RAN, RecordState.FAILED)
"""States of the tasks that have a bar on the timeline."""

DAG_TASKS = 300
"""Up to this many recorded tasks, the page also draws the DAG one node per task."""

_PALETTE = (
    "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
    "#bab0ac", "#1f77b4", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a",
)
"""Family colours (Tableau 10, then more); the failed state has its own red."""


@dataclass(frozen=True)
class Lanes:
    """Which lane each timed task is drawn in, and the lanes' labels."""

    of: list[int]
    """Lane of each task of the record (-1: not on the timeline)."""
    labels: list[str]


def lanes(tasks: list[TaskRecord]) -> Lanes:
    """One lane per worker slot: the tasks of a worker process in order of start, each in
    the first of the worker's slots that is free by then (a new slot when none is). A
    process worker runs one task at a time (one slot); a thread pool's process gets as many
    slots as tasks overlapped, at most its threads."""
    by_worker: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        if t.state in TIMED:
            by_worker.setdefault(t.worker, []).append(i)
    hosts = {w.rpartition(":")[0] for w in by_worker if w}
    order = sorted(by_worker, key=lambda w: min(tasks[i].started for i in by_worker[w]))
    lane_of = [-1] * len(tasks)
    labels: list[str] = []
    for worker in order:
        ids = sorted(by_worker[worker], key=lambda i: (tasks[i].started, tasks[i].ended))
        ends: list[float] = []  # per slot of this worker: when its last task ended
        first = len(labels)
        for i in ids:
            start = tasks[i].started
            slot = next((s for s, end in enumerate(ends) if end <= start + 1e-6), len(ends))
            if slot == len(ends):
                ends.append(0.0)
            ends[slot] = tasks[i].ended
            lane_of[i] = first + slot
        host, _, pid = worker.rpartition(":")
        name = (f"pid {pid}" if len(hosts) == 1 and pid.isdigit() else worker) or "unknown worker"
        labels += [name if len(ends) == 1 else f"{name} · {s + 1}" for s in range(len(ends))]
    return Lanes(lane_of, labels)


def critical_path(tasks: list[TaskRecord]) -> list[int]:
    """The chain of timed tasks, each a prerequisite of the next, whose durations add up to
    the most: the run could not have been shorter than that chain with any number of workers."""
    import networkx as nx

    timed = [i for i, t in enumerate(tasks) if t.state in TIMED]
    if not timed:
        return []
    is_timed = set(timed)
    graph = nx.DiGraph()
    for i in timed:  # a node's duration on each edge into it; a source (-1) starts every chain
        weight = tasks[i].duration
        graph.add_edge(-1, i, w=weight)
        for dep in tasks[i].deps:
            if dep in is_timed:
                graph.add_edge(dep, i, w=weight)
    path: list[int] = nx.dag_longest_path(graph, weight="w")
    return [i for i in path if i != -1]


def layout(labels: list[list[str]], edges: Iterable[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """``(x, y, width, height)`` of each node of a left-to-right layered drawing: a node's
    layer is the longest chain of prerequisites before it (a cycle of families shares one),
    and each layer is ordered to keep edges short (barycentres, a few sweeps)."""
    import networkx as nx

    n = len(labels)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((s, t) for s, t in edges if s != t)
    condensed = nx.condensation(graph)
    mapping = condensed.graph["mapping"]
    depth: dict[int, int] = {}
    for c in nx.topological_sort(condensed):
        depth[c] = max((depth[p] + 1 for p in condensed.predecessors(c)), default=0)
    layer = [depth[mapping[v]] for v in range(n)]
    layers: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for v in range(n):
        layers[layer[v]].append(v)
    pos = {v: i for nodes in layers for i, v in enumerate(nodes)}
    preds = {v: [p for p in graph.predecessors(v) if layer[p] < layer[v]] for v in range(n)}
    succs = {v: [s for s in graph.successors(v) if layer[s] > layer[v]] for v in range(n)}
    for sweep in range(6):
        down = sweep % 2 == 0
        for nodes in (layers[1:] if down else layers[-2::-1]):
            near = preds if down else succs

            def centre(v: int, near: dict[int, list[int]] = near) -> float:
                others = near[v]
                return sum(pos[o] for o in others) / len(others) if others else pos[v]

            nodes.sort(key=centre)
            for i, v in enumerate(nodes):
                pos[v] = i
    line_h, pad, gap_x, gap_y = 15, 8, 70, 14
    size = [(min(300, 7 * max(len(line) for line in lines) + 2 * pad), line_h * len(lines) + 2 * pad)
            for lines in labels]
    heights = [sum(size[v][1] for v in nodes) + gap_y * (len(nodes) - 1) for nodes in layers]
    tallest = max(heights, default=0)
    out: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * n
    x = 0
    for nodes, height in zip(layers, heights, strict=True):
        width = max(size[v][0] for v in nodes)
        y = (tallest - height) // 2
        for v in nodes:
            w, h = size[v]
            out[v] = (x + (width - w) // 2, y, w, h)
            y += h + gap_y
        x += width + gap_x
    return out


class Report:
    """A report of one recorded run (see the module docstring).

    Args:
        record: the run, e.g. from :func:`checkpoint.runs.load_run` or a
            :class:`~checkpoint.runs.RunRecorder`.
        cache_dir: the store to read sizes from (default ``$CP_CACHE_DIR`` or ``./.cache``).
    """

    def __init__(self, record: RunRecord, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.record = record
        self.cache_dir = cache_dir
        self._model: dict[str, Any] | None = None

    @classmethod
    def load(cls, run: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Report:
        """The report of the last recorded run, of run ``run``, or counting back from the last
        when ``run`` is negative (see :func:`checkpoint.runs.load_run`)."""
        return cls(load_run(run, cache_dir), cache_dir)

    @property
    def title(self) -> str:
        record = self.record
        number = f" #{record.number}" if record.number else ""
        return f"checkpoint run{number}: {', '.join(record.targets) or 'no target'}"

    def __repr__(self) -> str:
        r = self.record
        return (f"<Report run={r.number} {r.status} ran={r.count(RecordState.RAN)} failed={r.count(RecordState.FAILED)} "
                f"wall_time={r.wall_time:.3f}s>")

    # --- what the page shows -------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """The data the page draws, as JSON-ready values."""
        if self._model is None:
            self._model = _model(self.record, self.cache_dir, self.title)
        return self._model

    def html(self) -> str:
        """The whole page: one HTML document with everything inlined."""
        files = resources.files("checkpoint") / "templates"
        page = (files / "report.html").read_text(encoding="utf-8")
        data = json.dumps(self.model(), separators=(",", ":"), ensure_ascii=False)
        # Inside <script>, "</script>" or "<!--" in a string would end or upset it: "<"
        # only occurs in strings, where JSON may spell it \u003c.
        data = data.replace("<", "\\u003c")
        parts = {
            "title": html.escape(self.title),
            "style": (files / "report.css").read_text(encoding="utf-8"),
            "script": (files / "report.js").read_text(encoding="utf-8"),
            "data": data,
        }
        page = re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m[1]], page)
        return page

    def trace(self) -> dict[str, Any]:
        """The run as a Chrome trace-event JSON document (one track per worker slot)."""
        record = self.record
        tasks = record.tasks
        placed = lanes(tasks)
        critical = set(critical_path(tasks))
        t0 = min([record.started, *(t.started for t in tasks if t.state in TIMED)])

        def us(t: float) -> float:
            return round((t - t0) * 1e6, 3)

        events: list[dict[str, Json]] = [
            {"name": "process_name", "ph": "M", "pid": 1, "tid": 0,
             "args": {"name": self.title}},
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "checkpoint"}},
            {"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": 0, "args": {"sort_index": 0}},
        ]
        for lane, label in enumerate(placed.labels, start=1):
            events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": lane,
                           "args": {"name": label}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": lane,
                           "args": {"sort_index": lane}})
        if record.planned > record.started:
            events.append({"name": "planning", "cat": "checkpoint", "ph": "X", "pid": 1, "tid": 0,
                           "ts": us(record.started), "dur": us(record.planned) - us(record.started),
                           "args": {"tasks": record.total}})
        for i, t in enumerate(tasks):
            if placed.of[i] < 0:
                continue
            args: dict[str, Json] = {"task": t.label, "family": t.family, "id": t.id,
                                    "state": t.state, "reason": t.reason, "worker": t.worker,
                                    "size": t.size, "critical": i in critical}
            if t.error:
                args["error"] = t.error
            events.append({"name": t.label, "cat": t.family.rpartition(".")[2], "ph": "X",
                           "pid": 1, "tid": placed.of[i] + 1, "ts": us(t.started),
                           "dur": round(t.duration * 1e6, 3), "args": args})
            if t.state is RecordState.FAILED:
                events.append({"name": f"failed: {t.label}", "cat": "failure", "ph": "i", "s": "t",
                               "pid": 1, "tid": placed.of[i] + 1, "ts": us(t.ended),
                               "args": {"error": t.error}})
        return {
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {"run": record.number, "status": record.status,
                          "targets": record.targets, "started": record.started,
                          "wall_time": record.wall_time},
        }

    def write(self, path: str | os.PathLike[str], format: str = "html") -> Path:
        """Write the page (``"html"``) or the trace (``"trace"``) to ``path``; return it."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        text = self.html() if format == "html" else json.dumps(self.trace(), separators=(",", ":"))
        target = Path(path)
        target.write_text(text, encoding="utf-8", errors="backslashreplace")
        return target

    def _repr_html_(self) -> str:
        """Jupyter's view: the page in an iframe (its styles and script stay inside it)."""
        return (f'<iframe srcdoc="{html.escape(self.html(), quote=True)}" title="{html.escape(self.title)}" '
                'style="width: 100%; height: 820px; border: 1px solid #ddd;"></iframe>')


# --- the model ---------------------------------------------------------------------------


def _looks() -> dict[str, dict[str, Json]]:
    """Colours of states, as ``checkpoint graph`` draws them, plus the run's own states."""
    from .export import DisplayState, state_looks

    looks = state_looks()
    looks[RecordState.RAN] = looks[DisplayState.MISSING]
    looks[RecordState.SKIPPED] = {"fill": "#eeeeee", "border": "#9e9e9e", "dashed": True,
                                  "bold": False}
    looks[RecordState.NOT_RUN] = {"fill": "#ffffff", "border": "#bdbdbd", "dashed": True,
                                  "bold": False}
    looks[RecordState.KEPT] = {**looks[DisplayState.FRESH], "dashed": True}
    return looks


def _node_state(t: TaskRecord) -> str:
    """A task's look in the DAG (a key of :func:`_looks`): the reason it ran (as
    ``checkpoint graph`` showed it before the run), its fate otherwise."""
    from .export import DisplayState

    if t.state is RecordState.RAN:
        return _look_of_reason(t.reason)
    if t.state is RecordState.REUSED:
        return DisplayState.FRESH
    return t.state


def _look_of_reason(reason: str) -> str:
    from .export import DisplayState

    try:
        return DisplayState(reason)
    except ValueError:  # no reason recorded, or one this version does not know
        return RecordState.RAN


def _sizes(record: RunRecord, cache_dir: str | os.PathLike[str] | None) -> tuple[dict[str, tuple[int, int]], dict[int, int]]:
    """``({family: (bytes on disk, entries)}, {task index: data directory bytes})`` now."""
    from .store import tree_size

    families: dict[str, tuple[int, int]] = {}
    data: dict[int, int] = {}
    try:
        store = Store.open(cache_dir)
        by_family: dict[str, list[int]] = {}
        for i, t in enumerate(record.tasks):
            by_family.setdefault(t.family, []).append(i)
        for name, dirname in record.families.items():
            if not (store.root / dirname).is_dir():
                continue
            families[name] = (store.disk_usage(dirname), store.count_entries(dirname))
            try:
                present = set(os.listdir(store.root / dirname / "data"))
            except OSError:
                continue
            for i in by_family.get(name, ()):
                tid = record.tasks[i].id
                if tid in present:
                    data[i] = tree_size(store.data_dir(dirname, tid))
    except (OSError, StoreError):
        pass  # a report of a record without its store: sizes unknown
    return families, data


def _model(record: RunRecord, cache_dir: str | os.PathLike[str] | None, title: str) -> dict[str, Any]:
    tasks = record.tasks
    placed = lanes(tasks)
    critical = critical_path(tasks)
    timed = [i for i, t in enumerate(tasks) if t.state in TIMED]
    t0 = min([record.started, *(tasks[i].started for i in timed)])
    end = max([record.ended, *(tasks[i].ended for i in timed)])
    cache_sizes, data_sizes = _sizes(record, cache_dir)

    def rel(t: float) -> float:
        return round(t - t0, 6)

    texts: dict[int, list[str]] = {}
    for i, t in enumerate(tasks):
        if t.output or t.error or t.traceback:
            texts[i] = [t.output, t.error, trim_traceback(t.traceback) if t.traceback else ""]
    states = Counter(t.state for t in tasks)
    states[RecordState.REUSED] += sum(record.reused_elsewhere.values())
    fam_stats = _family_stats(record, cache_sizes)
    columns = _task_columns(record, rel, placed.of, data_sizes)
    return {
        "title": title,
        "run": {
            "number": record.number, "status": record.status, "targets": record.targets,
            "started": record.started, "start": rel(record.started), "planned": rel(record.planned),
            "end": rel(end), "wall": round(record.wall_time, 6),
            "executor": record.executor, "workers": record.workers, "host": record.host,
            "system": record.system, "python": record.python, "version": record.version,
            "cpus": record.cpus, "total": record.total,
            "counts": {s: states[s] for s in RecordState},
        },
        "families": fam_stats,
        "lanes": placed.labels,
        "tasks": columns,
        "texts": {str(i): v for i, v in texts.items()},
        "critical": critical,
        "parallelism": _parallelism(record, timed, critical, len(placed.labels)),
        "dag": _dags(record, fam_stats),
        "looks": _looks(),
        "states": list(RecordState),
    }


def _family_stats(record: RunRecord,
                  cache_sizes: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Per family: what its tasks did, how long they took, its size in the cache."""
    fam_stats = []
    family_names = list(record.families)
    shorts = Counter(name.rpartition(".")[2] for name in family_names)
    for f, name in enumerate(family_names):
        short = name.rpartition(".")[2]
        mine = [t for t in record.tasks if t.family == name]
        counts = Counter(t.state for t in mine)
        if record.reused_elsewhere.get(name):
            counts[RecordState.REUSED] += record.reused_elsewhere[name]
        durations = [t.duration for t in mine if t.state in TIMED]
        size, entries = cache_sizes.get(name, (None, None))
        fam_stats.append({
            "name": name, "short": short if shorts[short] == 1 else name,
            "color": _PALETTE[f % len(_PALETTE)],
            "counts": {s: counts[s] for s in RecordState if counts[s]},
            "time": round(sum(durations), 6), "ran": len(durations),
            "max": round(max(durations, default=0.0), 6),
            "cache": size, "entries": entries,
        })
    return fam_stats


def _task_columns(record: RunRecord, rel: Callable[[float], float], lane_of: list[int],
                  data_sizes: dict[int, int]) -> dict[str, list[Any]]:
    """The tasks as columns (one list per field: compact in the page's JSON)."""
    tasks = record.tasks
    fam_index = {name: i for i, name in enumerate(record.families)}
    return {
        "label": [t.label for t in tasks],
        "id": [t.id for t in tasks],
        "family": [fam_index[t.family] for t in tasks],
        "state": [t.state for t in tasks],
        "reason": [t.reason for t in tasks],
        "args": [t.arguments for t in tasks],
        "start": [rel(t.started) if t.state in TIMED else None for t in tasks],
        "dur": [round(t.duration, 6) for t in tasks],
        "lane": lane_of,
        "worker": [t.worker for t in tasks],
        "size": [t.size for t in tasks],
        "data": [data_sizes.get(i) for i in range(len(tasks))],
        "attempts": [t.attempts for t in tasks],
        "deps": [t.deps for t in tasks],
        "target": [1 if t.target else 0 for t in tasks],
        "cause": [t.cause for t in tasks],
    }


def _parallelism(record: RunRecord, timed: list[int], critical: list[int],
                 lanes_used: int) -> dict[str, float | int]:
    """How much of the run's span was busy, and how much the critical path allowed."""
    tasks = record.tasks
    busy = sum(tasks[i].duration for i in timed)
    span = max(0.0, max((tasks[i].ended for i in timed), default=0.0)
               - min((tasks[i].started for i in timed), default=0.0))
    path_time = sum(tasks[i].duration for i in critical)
    return {
        "busy": round(busy, 6), "span": round(span, 6), "path": round(path_time, 6),
        "used": round(busy / span, 3) if span > 0 else 0,
        "allowed": round(busy / path_time, 3) if path_time > 0 else 0,
        "workers": record.workers or lanes_used,
    }


def _dags(record: RunRecord, fam_stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The DAG by families, and by tasks when it is small, laid out for drawing."""
    tasks = record.tasks
    fam_edges = _family_edges(record)
    reasons: dict[str, Counter[str]] = {name: Counter() for name in record.families}
    for t in tasks:
        if t.state is RecordState.RAN:
            reasons[t.family][t.reason] += 1
    fam_labels = []
    fam_states = []
    for stats in fam_stats:
        counts = stats["counts"]
        total = sum(counts.values())
        fam_labels.append([stats["short"], f"{total:,} task{'s' if total != 1 else ''}: "
                           + ", ".join(f"{n:,} {s}" for s, n in counts.items())])
        fam_states.append(_family_state(counts, reasons[stats["name"]]))
    boxes = layout(fam_labels, fam_edges)
    families = {
        "nodes": [{"label": lab, "state": st, "box": box}
                  for lab, st, box in zip(fam_labels, fam_states, boxes, strict=True)],
        "edges": [[s, t, n] for (s, t), n in fam_edges.items()],
    }
    by_task = None
    if len(tasks) <= DAG_TASKS:
        edges = [(d, i) for i, t in enumerate(tasks) for d in t.deps]
        task_boxes = layout([[t.label] for t in tasks], edges)
        by_task = {
            "nodes": [{"label": [t.label], "state": _node_state(t), "box": box, "task": i}
                      for i, (t, box) in enumerate(zip(tasks, task_boxes, strict=True))],
            "edges": [[s, t, 1] for s, t in edges],
        }
    return {"families": families, "tasks": by_task}


def _family_edges(record: RunRecord) -> Counter[tuple[int, int]]:
    """``{(family, family): task-level edges}``: the whole DAG's, as ``checkpoint graph
    --families`` draws them; from the recorded tasks alone in a record that lacks them."""
    fam_index = {name: i for i, name in enumerate(record.families)}
    edges: Counter[tuple[int, int]] = Counter()
    if record.family_edges:
        for src, dst, n in record.family_edges:
            if src in fam_index and dst in fam_index:
                edges[fam_index[src], fam_index[dst]] += n
        return edges
    tasks = record.tasks
    for t in tasks:
        for dep in t.deps:
            edges[fam_index[tasks[dep].family], fam_index[t.family]] += 1
    return edges


def _family_state(counts: dict[str, int], reasons: Counter[str]) -> str:
    """A family's colour: that of its most active state: failed if any failed, else skipped if
    any was, else the commonest reason its tasks ran for if any ran, else fresh."""
    from .export import DisplayState

    for state in (RecordState.FAILED, RecordState.SKIPPED):
        if counts.get(state):
            return state
    if reasons:
        return _look_of_reason(reasons.most_common(1)[0][0])
    reused = counts.get(RecordState.REUSED, 0) + counts.get(RecordState.KEPT, 0)
    return DisplayState.FRESH if reused else RecordState.NOT_RUN
