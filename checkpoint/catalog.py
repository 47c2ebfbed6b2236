"""What the store holds, seen from a taskfile: listings, sizes, clearing, pruning, why, touch.

These are the library functions behind ``checkpoint ls``, ``clear``, ``cache ...``, ``why``
and ``touch``; they return plain records and never print.

States (one vocabulary with the rest of checkpoint) of a task in a plan:

``fresh``         its stored result is reused
``missing``       no stored result
``code changed``  its family's code changed since the result was stored
``stale``         a prerequisite runs, or changed since the result was stored (or it is forced)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._types import Reason, TaskId
from .files import INPUT, OUTPUT
from .graph import Node, Plan, expand, plan
from .history import LastRun, last_run_of
from .store import FailedRun, Meta, Store
from .task import Task, TaskFamily

STATES = ("fresh", "stale", "missing", "code changed")


def state_of(node: Node) -> str:
    """The state of a marked plan node (see the module docstring)."""
    if node.reason is None:
        return "fresh"
    if node.reason in (Reason.MISSING, Reason.CODE_CHANGED):
        return node.reason
    return "stale"


def doc_line(obj: Any) -> str:
    """The first non-empty line of an object's docstring ('' if none)."""
    for line in (getattr(obj, "__doc__", None) or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


# --- listing -----------------------------------------------------------------------------


@dataclass
class FamilyInfo:
    """One task family of a taskfile, with what the store holds of it."""

    name: str
    """The name the taskfile gives it (what targets use)."""
    family: str
    """``{module}.{qualname}``."""
    queue: str
    entries: int
    size: int
    """Bytes the entries hold: stored values plus data directories (as ``cache ls``)."""
    doc: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "queue": self.queue,
                "entries": self.entries, "size": self.size, "doc": self.doc}


def list_families(families: Mapping[str, TaskFamily[Any, Any]], store: Store) -> list[FamilyInfo]:
    """The families of a taskfile, sorted by name, with entry counts and sizes."""
    infos = []
    for name in sorted(families):
        fam = families[name]
        infos.append(FamilyInfo(name, fam.name, fam.queue, store.count_entries(fam.dirname),
                                store.held_size(fam.dirname), doc_line(fam)))
    return infos


@dataclass
class TaskState:
    """One task of a target's DAG, its state, and its last recorded run."""

    task: Task[Any]
    state: str
    reason: str | None
    """The plan's reason to run (``None`` when fresh)."""
    last: LastRun | None = None
    """Its last recorded run (``None`` when none is recorded)."""

    def to_json(self) -> dict[str, Any]:
        last = self.last
        return {"task": self.task.expression(), "family": self.task.family.name, "id": self.task.id,
                "state": self.state, "reason": self.reason,
                "last_run": None if last is None else {
                    "status": last.status, "started": last.started, "duration": last.duration,
                    "worker": last.worker}}


def dag_states(
    the_plan: Plan, runs: Mapping[TaskId, LastRun] | None = None
) -> tuple[list[TaskState], dict[str, int]]:
    """The tasks of a marked plan with their states, and the count of each state.

    ``runs`` (from :func:`checkpoint.history.plan_last_runs`) adds each task's last run.
    """
    runs = runs or {}
    rows = [TaskState(node.task, state_of(node), node.reason, runs.get(tid))
            for tid, node in the_plan.nodes.items()]
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        counts[row.state] += 1
    return rows, counts


def iter_dag_states(
    the_plan: Plan, failures: Mapping[TaskId, FailedRun] | None = None
) -> Iterator[TaskState]:
    """The tasks of a marked plan with their states and last runs, one at a time (a large
    DAG's listing is written as it is made). ``failures``: from
    :func:`checkpoint.history.plan_failures` (without it, every last run is the stored
    result's)."""
    failures = failures or {}
    for tid, node in the_plan.nodes.items():
        yield TaskState(node.task, state_of(node), node.reason,
                        last_run_of(node.meta, failures.get(tid)))


def iter_dag_documents(
    the_plan: Plan, failures: Mapping[TaskId, FailedRun] | None = None
) -> Iterator[dict[str, Any]]:
    """:meth:`TaskState.to_json` of each row of :func:`iter_dag_states`, made straight from
    the plan (``checkpoint ls TARGET --json`` of a 200,000-task DAG)."""
    failures = failures or {}
    for tid, node in the_plan.nodes.items():
        task, meta, reason = node.task, node.meta, node.reason
        failed = failures.get(tid) if failures else None
        if failed is not None:
            last: dict[str, Any] | None = {"status": "failed", "started": failed.started,
                                           "duration": failed.duration, "worker": failed.worker}
        elif meta is not None:
            last = {"status": "done", "started": meta.started, "duration": meta.duration,
                    "worker": meta.worker}
        else:
            last = None
        yield {"task": task.expression(), "family": task.family.name, "id": tid,
               "state": state_of(node), "reason": reason, "last_run": last}


@dataclass
class EntryInfo:
    """One stored entry."""

    family: str
    """The family's directory name."""
    id: TaskId
    expr: str
    args: Any
    """The canonical arguments, decoded from JSON."""
    size: int
    stored: float
    duration: float
    fingerprint: str

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "id": self.id, "task": self.expr, "args": self.args,
                "size": self.size, "stored": self.stored, "duration": self.duration,
                "fingerprint": self.fingerprint}


def list_entries(store: Store, family: str) -> list[EntryInfo]:
    """Every entry of a family (by directory name), oldest first."""
    rows = []
    for tid, meta in store.entries(family):
        try:
            args = json.loads(meta.args)
        except ValueError:
            args = meta.args
        rows.append(EntryInfo(family, tid, meta.expr, args, store.entry_size(family, tid, meta),
                              meta.stored, meta.duration, meta.fingerprint))
    rows.sort(key=lambda e: (e.stored, e.expr))
    return rows


@dataclass
class Usage:
    """Disk usage of one family's store."""

    family: str
    entries: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "entries": self.entries, "size": self.size}


def disk_usage(store: Store) -> list[Usage]:
    """Entries and bytes of every family in the store, largest first."""
    rows = [Usage(f, store.count_entries(f), store.disk_usage(f)) for f in store.families()]
    rows.sort(key=lambda u: (-u.size, u.family))
    return rows


# --- clearing ----------------------------------------------------------------------------


@dataclass
class Removed:
    """What a clear or prune removed."""

    entries: int = 0
    bytes: int = 0
    families: list[str] = field(default_factory=list)
    """Families removed as a whole (directory names)."""
    outputs: list[str] = field(default_factory=list)
    """Declared outputs (``Product()``) of the removed entries: files on disk that clearing
    never deletes (project-relative paths, as recorded)."""

    def add(self, other: Removed) -> None:
        self.entries += other.entries
        self.bytes += other.bytes
        self.families += other.families
        self.outputs += other.outputs

    def to_json(self) -> dict[str, Any]:
        return {"entries": self.entries, "bytes": self.bytes, "families": self.families,
                "outputs": self.outputs}


def _outputs(metas: Iterable[Meta]) -> list[str]:
    return [key[len(OUTPUT):] for meta in metas for key in meta.deps if key.startswith(OUTPUT)]


@contextlib.contextmanager
def _locked(
    store: Store, ids: Iterable[TaskId], on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the run locks of ``ids`` (see :mod:`checkpoint._runlock`): a run that computes
    one of them, or reads its data directory, finishes that first; runs then see the
    removal as a missing entry. ``on_wait`` is called once if some run makes us wait."""
    from ._runlock import RunLock

    try:
        exists = store.root.is_dir()
    except OSError:
        exists = False
    if not exists:
        yield
        return
    lock = RunLock(store.root)
    try:
        for tid in sorted(set(ids)):
            if lock.try_task(tid):
                continue
            if on_wait is not None:
                on_wait()
                on_wait = None
            lock.wait_task(tid)
        yield
    finally:
        lock.close()


def _family_ids(store: Store, family: str) -> list[TaskId]:
    """The ids of a family's entries and of its data directories."""
    return [tid for tid, _ in store.entries(family)] + store.data_dir_ids(family)


def clear_family(
    store: Store, family: str, on_wait: Callable[[], None] | None = None
) -> Removed:
    """Remove a family's store (entries and data directories); report what went.

    Waits for runs computing or reading its tasks (``on_wait`` says so). Declared output
    files stay on disk (listed in ``outputs``)."""
    if not os.path.islink(store.root / family):
        with _locked(store, _family_ids(store, family), on_wait):
            return _clear_family(store, family)
    return _clear_family(store, family)


def _clear_family(store: Store, family: str) -> Removed:
    directory = store.root / family
    outputs: list[str] = []
    if os.path.islink(directory):  # never followed: only the link goes
        entries, size, existed = 0, 0, True
    else:
        entries, size = store.count_entries(family), store.held_size(family)
        existed = directory.exists()
        if entries:
            outputs = _outputs(meta for _, meta in store.entries(family))
    store.clear_family(family)
    return Removed(entries, size, [family] if existed else [], outputs)


def clear_entries(
    store: Store, entries: Iterable[tuple[str, TaskId]], on_wait: Callable[[], None] | None = None
) -> Removed:
    """Remove single entries ``(family dirname, task id)`` and their data directories.

    Waits for runs computing or reading them (``on_wait`` says so). Declared output files
    stay on disk (listed in ``outputs``)."""
    entries = list(entries)
    with _locked(store, [tid for _, tid in entries], on_wait):
        return _clear_entries(store, entries)


def _clear_entries(store: Store, entries: list[tuple[str, TaskId]]) -> Removed:
    removed = Removed()
    for family, tid in entries:
        meta = store.get_meta(family, tid)
        size = store.entry_size(family, tid, meta) if meta is not None else 0
        if store.delete(family, tid):
            removed.entries += 1
            removed.bytes += size
            if meta is not None:
                removed.outputs += _outputs([meta])
    return removed


def clear_all(store: Store, on_wait: Callable[[], None] | None = None) -> Removed:
    """Remove every family of the store (waiting for runs, as :func:`clear_family`)."""
    removed = Removed()
    for family in store.families():
        removed.add(clear_family(store, family, on_wait))
    return removed


def downstream(nodes: Mapping[TaskId, Node], roots: Iterable[TaskId]) -> list[TaskId]:
    """Ids of the tasks that depend on ``roots``, directly or not (roots excluded), in order."""
    dependents: dict[TaskId, list[TaskId]] = {}
    for tid, node in nodes.items():
        for dep in node.deps:
            dependents.setdefault(dep, []).append(tid)
    seen: set[TaskId] = set()
    stack = list(roots)
    root_set = set(stack)
    while stack:
        for child in dependents.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return [tid for tid in nodes if tid in seen and tid not in root_set]


def downstream_entries(
    targets: Sequence[Task[Any]], *, family: str | None = None, task: Task[Any] | None = None
) -> list[tuple[str, TaskId]]:
    """The ``(family dirname, id)`` of the tasks of the targets' DAG downstream of a family
    (every task of it in the DAG) or of one task."""
    nodes = expand(targets)
    if task is not None:
        roots = [task.id] if task.id in nodes else []
    else:
        roots = [tid for tid, n in nodes.items() if n.task.family.dirname == family]
    return [(nodes[tid].task.family.dirname, tid) for tid in downstream(nodes, roots)]


# --- pruning -----------------------------------------------------------------------------


@dataclass
class PruneItem:
    """A store entry (or a whole family when ``id`` is ``None``) that prune would remove."""

    family: str
    id: TaskId | None
    expr: str
    size: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "id": self.id, "task": self.expr, "size": self.size,
                "why": self.why}


def prune_candidates(
    store: Store,
    fingerprints: Mapping[str, str],
    *,
    older_than: float | None = None,
    max_size: int | None = None,
    now: float | None = None,
) -> list[PruneItem]:
    """What ``cache prune`` would remove.

    Args:
        fingerprints: ``{family dirname: current code fingerprint}`` of the taskfile's
            families. Families of the store not in it are removed whole; entries whose
            fingerprint differs are outdated.
        older_than: also remove entries stored more than this many seconds ago.
        max_size: then remove the oldest remaining entries until the store's entries
            take at most this many bytes.
    """
    now = time.time() if now is None else now
    items: list[PruneItem] = []
    kept: list[tuple[float, PruneItem]] = []
    for family in store.families():
        if family not in fingerprints:
            items.append(PruneItem(family, None, family, store.disk_usage(family),
                                   "family not in the taskfile"))
            continue
        current = fingerprints[family]
        for tid, meta in store.entries(family):
            size = store.entry_size(family, tid, meta)
            if meta.fingerprint != current:
                items.append(PruneItem(family, tid, meta.expr, size, "outdated code"))
            elif older_than is not None and now - meta.stored > older_than:
                items.append(PruneItem(family, tid, meta.expr, size, "older than the limit"))
            else:
                kept.append((meta.stored, PruneItem(family, tid, meta.expr, size, "over the size limit")))
    if max_size is not None:
        total = sum(item.size for _, item in kept)
        for _, item in sorted(kept, key=lambda pair: pair[0]):
            if total <= max_size:
                break
            items.append(item)
            total -= item.size
    return items


def prune(store: Store, items: Iterable[PruneItem]) -> Removed:
    """Remove what :func:`prune_candidates` found."""
    removed = Removed()
    for item in items:
        if item.id is None:
            removed.add(clear_family(store, item.family))
        else:
            removed.add(clear_entries(store, [(item.family, item.id)]))
    return removed


# --- why ---------------------------------------------------------------------------------


@dataclass
class Explanation:
    """Why one task of a plan would run."""

    task: Task[Any]
    reason: str
    details: list[str] = field(default_factory=list)
    """Human-readable facts, e.g. which prerequisite changed or which argument differs."""
    diff: str | None = None
    """For a code change: unified diff of the normalized source (stored -> current)."""

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task.expression(), "family": self.task.family.name,
                "id": self.task.id, "reason": self.reason, "details": self.details,
                "diff": self.diff}


def explain(the_plan: Plan, store: Store) -> list[Explanation]:
    """Explain each task of a marked plan that would run, in topological order."""
    out = []
    source_diffs: dict[tuple[str, str], str | None] = {}
    for node in the_plan.nodes.values():
        if node.reason is None:
            continue
        task, meta = node.task, node.meta
        exp = Explanation(task, node.reason)
        if node.reason == Reason.MISSING:
            exp.details = _closest_entries(store, task)
        elif node.reason == Reason.CODE_CHANGED and meta is not None:
            key = (task.family.dirname, meta.fingerprint)
            if key not in source_diffs:
                source_diffs[key] = code_diff(store, task.family, meta.fingerprint)
            exp.diff = source_diffs[key]
            if exp.diff is None:
                exp.details.append("The source of the code that computed the stored result "
                                   "was not kept, so no diff can be shown.")
            elif not exp.diff:
                exp.details.append("The normalized source is the same; a helper or a "
                                   "constant it uses changed.")
        elif node.reason == Reason.UPSTREAM_RERUN:
            for dep in node.deps:
                dep_node = the_plan.nodes[dep]
                if dep_node.reason is not None:
                    exp.details.append(f"prerequisite {dep_node.task.expression()} will run "
                                       f"({dep_node.reason})")
        elif node.reason in (Reason.INPUT_MISSING, Reason.INPUT_CHANGED, Reason.OUTPUT_CHANGED):
            assert node.files is not None
            exp.details = list(node.files.details)
        elif node.reason == Reason.UPSTREAM_CHANGED and meta is not None:
            exp.details = _upstream_changes(the_plan, node, meta)
        elif node.reason == Reason.FORCED:
            exp.details.append("forced")
        out.append(exp)
    return out


def code_diff(store: Store, family: TaskFamily[Any, Any], stored_fingerprint: str) -> str | None:
    """Unified diff of a family's normalized source, stored version -> current (``None``
    when the stored source was not kept)."""
    old = store.get_source(family.dirname, stored_fingerprint)
    if old is None:
        return None
    new = family.fingerprint[1]
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), "stored", "current",
                                 lineterm="")
    return "\n".join(lines)


def _closest_entries(store: Store, task: Task[Any], limit: int = 3) -> list[str]:
    """Stored entries of the same family whose arguments differ least from the task's."""
    try:
        wanted = json.loads(task.encoded)
    except ValueError:
        return []
    scored: list[tuple[int, float, str, list[str]]] = []
    for _, meta in store.entries(task.family.dirname):
        try:
            have = json.loads(meta.args)
        except ValueError:
            continue
        if not isinstance(have, dict) or not isinstance(wanted, dict):
            continue
        changed = [
            f"{name}: {_short(have.get(name))} -> {_short(wanted.get(name))}"
            for name in sorted(set(have) | set(wanted))
            if have.get(name) != wanted.get(name)
        ]
        scored.append((len(changed), _distance(have, wanted), meta.expr, changed))
    if not scored:
        return ["No stored result for this family yet."]
    scored.sort(key=lambda s: (s[0], s[1], s[2]))
    lines = ["No stored result with these arguments; the closest stored ones:"]
    for _, _, expr, changed in scored[:limit]:
        lines.append(f"  {expr}  ({'; '.join(changed)})")
    return lines


def _distance(have: dict[str, Any], wanted: dict[str, Any]) -> float:
    """How far apart the numeric arguments are (a tie-breaker between equally many changes)."""
    total = 0.0
    for name, value in wanted.items():
        other = have.get(name)
        if isinstance(value, (int, float)) and isinstance(other, (int, float)):
            total += abs(float(value) - float(other))
    return total


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _upstream_changes(the_plan: Plan, node: Node, meta: Meta) -> list[str]:
    details = []
    for dep in node.deps:
        dep_node = the_plan.nodes[dep]
        expr = dep_node.task.expression()
        if dep not in meta.deps:
            details.append(f"new prerequisite {expr} (not used by the stored result)")
        elif dep_node.meta is None:
            details.append(f"prerequisite {expr} has no stored result")
        elif dep_node.meta.stamp != meta.deps[dep]:
            details.append(f"prerequisite {expr} was recomputed after this result was stored")
    current = set(node.deps)
    if node.files is not None:
        current.update(node.files.digests)
        current.update(OUTPUT + p.key(os.getcwd()) for p in node.files.outputs)
    dropped = set(meta.deps) - current
    for key in sorted(k for k in dropped if k.startswith((INPUT, OUTPUT))):
        kind = "input" if key.startswith(INPUT) else "output"
        details.append(f"{kind} file {key.split(':', 1)[1]} of the stored result is no longer declared")
    tasks = sum(1 for k in dropped if not k.startswith((INPUT, OUTPUT)))
    if tasks:
        details.append(f"{tasks} prerequisite(s) of the stored result are no longer required")
    return details


# --- touch -------------------------------------------------------------------------------


@dataclass
class Touched:
    """What a touch did."""

    touched: int = 0
    """Entries whose metadata was rewritten."""
    fresh: int = 0
    """Entries already fresh (left alone)."""
    missing: list[Task[Any]] = field(default_factory=list)
    """Tasks without a stored result (they still have to run)."""

    def to_json(self) -> dict[str, Any]:
        return {"touched": self.touched, "fresh": self.fresh,
                "missing": [t.expression() for t in self.missing]}


def touch_targets(targets: Sequence[Task[Any]], store: Store) -> Touched:
    """Accept the current code and the stored results of the targets' DAG as fresh.

    Each stored entry gets the family's current code fingerprint, the current stamps of
    its prerequisites and the current digests of its input and output files, without
    running anything. Tasks without a stored result stay missing, and so does a declared
    output that does not exist.
    """
    the_plan = plan(targets, store)
    report = Touched()
    updates: dict[str, dict[TaskId, Meta]] = {}
    stamps: dict[TaskId, str] = {}
    for tid, node in the_plan.nodes.items():
        meta = node.meta
        if meta is None:
            report.missing.append(node.task)
            continue
        stamps[tid] = meta.stamp
        if node.reason is None:
            report.fresh += 1
            continue
        deps = {d: stamps[d] for d in node.deps if d in stamps}
        if node.files is not None:  # accept the files as they are now (a missing output stays stale)
            deps.update(node.files.digests)
            deps.update((k, v) for k, v in node.files.outputs_now.items() if v)
        new = meta.touched(node.task.family.fingerprint[0], deps)
        updates.setdefault(node.task.family.dirname, {})[tid] = new
        report.touched += 1
    families = {n.task.family.dirname: n.task.family for n in the_plan.nodes.values()}
    for dirname, metas in updates.items():
        store.put_metas(dirname, metas, families[dirname].fingerprint)
    return report


def touch_family(store: Store, family: TaskFamily[Any, Any]) -> Touched:
    """Accept a family's current code for all of its stored entries (fingerprints only)."""
    current = family.fingerprint[0]
    report = Touched()
    metas = {}
    for tid, meta in store.entries(family.dirname):
        if meta.fingerprint == current:
            report.fresh += 1
        else:
            metas[tid] = meta.touched(current)
    store.put_metas(family.dirname, metas, family.fingerprint)
    report.touched = len(metas)
    return report
