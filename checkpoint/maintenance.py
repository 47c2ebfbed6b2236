"""Looking after the store of a taskfile: clearing, pruning and touching entries, the
library functions behind ``checkpoint clear``, ``cache prune`` and ``touch``. They report
what they did as plain records and never print.

Clearing and pruning hold the run locks of what they remove (see :mod:`._runlock`), so a
run computing or reading one of those tasks finishes with it first.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from ._text import plural
from ._types import FamilyDir, Json, TaskId, Word
from .files import OUTPUT
from .graph import ARRANGEMENT, Node, Plan
from .store import Meta, Store
from .task import Task, TaskFamily


@dataclass
class Removed:
    """What a clear or prune removed."""

    entries: int = 0
    bytes: int = 0
    families: list[FamilyDir] = field(default_factory=list)
    """Families removed as a whole (directory names)."""
    outputs: list[str] = field(default_factory=list)
    """Declared outputs (``Product()``) of the removed entries: files on disk that clearing
    never deletes (project-relative paths, as recorded)."""

    def add(self, other: Removed) -> None:
        self.entries += other.entries
        self.bytes += other.bytes
        self.families += other.families
        self.outputs += other.outputs

    def to_json(self) -> dict[str, Json]:
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


def _family_ids(store: Store, family: FamilyDir) -> list[TaskId]:
    """The ids of a family's entries and of its data directories."""
    return [tid for tid, _ in store.entries(family)] + store.data.ids(family)


def clear_family(
    store: Store, family: FamilyDir, on_wait: Callable[[], None] | None = None
) -> Removed:
    """Remove a family's store (entries and data directories); report what went.

    Waits for runs computing or reading its tasks (``on_wait`` says so). Declared output
    files stay on disk (listed in ``outputs``)."""
    if not os.path.islink(store.root / family):
        with _locked(store, _family_ids(store, family), on_wait):
            return _clear_family(store, family)
    return _clear_family(store, family)


def _clear_family(store: Store, family: FamilyDir) -> Removed:
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
    store: Store, entries: Iterable[tuple[FamilyDir, TaskId]], on_wait: Callable[[], None] | None = None
) -> Removed:
    """Remove single entries ``(family dirname, task id)`` and their data directories.

    Waits for runs computing or reading them (``on_wait`` says so). Declared output files
    stay on disk (listed in ``outputs``)."""
    entries = list(entries)
    with _locked(store, [tid for _, tid in entries], on_wait):
        return _clear_entries(store, entries)


def _clear_entries(store: Store, entries: list[tuple[FamilyDir, TaskId]]) -> Removed:
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
    nodes: Mapping[TaskId, Node], *, family: FamilyDir | None = None, task: Task[object] | None = None
) -> list[tuple[FamilyDir, TaskId]]:
    """The ``(family dirname, id)`` of the tasks of an expanded DAG (``graph.expand``)
    downstream of a family (every task of it in the DAG) or of one task."""
    if task is not None:
        roots = [task.id] if task.id in nodes else []
    else:
        roots = [tid for tid, n in nodes.items() if n.task.family.dirname == family]
    return [(nodes[tid].task.family.dirname, tid) for tid in downstream(nodes, roots)]


class PruneReason(Word):
    """Why ``cache prune`` removes an entry (``--json`` writes the words)."""

    FAMILY_GONE = "family not in the taskfile"
    OUTDATED_CODE = "outdated code"
    """Stored by code other than the family's current code."""
    TOO_OLD = "older than the limit"
    OVER_SIZE = "over the size limit"
    """Among the oldest entries, past what ``--max-size`` keeps."""
    UNREACHABLE = "not in the DAG of"
    """Not reached from the ``--keep`` targets (which the words are followed by)."""


@dataclass
class PruneItem:
    """A store entry (or a whole family when ``id`` is ``None``) that prune would remove."""

    family: FamilyDir
    id: TaskId | None
    expr: str
    size: int
    why: PruneReason
    targets: str = ""
    """For :attr:`PruneReason.UNREACHABLE`: the targets whose DAG does not reach it."""

    @property
    def because(self) -> str:
        """Why, in words."""
        return f"{self.why} {self.targets}" if self.targets else str(self.why)

    def to_json(self) -> dict[str, Json]:
        return {"family": self.family, "id": self.id, "task": self.expr, "size": self.size,
                "why": self.because}


def prune_candidates(
    store: Store,
    fingerprints: Mapping[FamilyDir, str],
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
                                   PruneReason.FAMILY_GONE))
            continue
        current = fingerprints[family]
        for tid, meta in store.entries(family):
            size = store.entry_size(family, tid, meta)
            if meta.fingerprint != current:
                items.append(PruneItem(family, tid, meta.expr, size, PruneReason.OUTDATED_CODE))
            elif older_than is not None and now - meta.stored > older_than:
                items.append(PruneItem(family, tid, meta.expr, size, PruneReason.TOO_OLD))
            else:
                kept.append((meta.stored, PruneItem(family, tid, meta.expr, size, PruneReason.OVER_SIZE)))
    if max_size is not None:
        total = sum(item.size for _, item in kept)
        for _, item in sorted(kept, key=lambda pair: pair[0]):
            if total <= max_size:
                break
            items.append(item)
            total -= item.size
    return items


def unreachable(store: Store, reached: Iterable[TaskId], already: list[PruneItem],
                targets: str) -> list[PruneItem]:
    """The store's entries that are not ``reached`` (the ids of the DAG of ``targets``, to
    keep) and that ``already`` does not list, as prune items."""
    reached = set(reached)
    listed = {(i.family, i.id) for i in already}
    gone = {i.family for i in already if i.id is None}
    return [PruneItem(family, tid, meta.expr, store.entry_size(family, tid, meta),
                      PruneReason.UNREACHABLE, targets)
            for family in store.families() if family not in gone
            for tid, meta in store.entries(family)
            if tid not in reached and (family, tid) not in listed]


def prune(store: Store, items: Iterable[PruneItem]) -> Removed:
    """Remove what :func:`prune_candidates` found."""
    removed = Removed()
    for item in items:
        if item.id is None:
            removed.add(clear_family(store, item.family))
        else:
            removed.add(clear_entries(store, [(item.family, item.id)]))
    return removed


@dataclass
class Touched:
    """What a touch did."""

    touched: int = 0
    """Entries whose metadata was rewritten."""
    fresh: int = 0
    """Entries already fresh (left alone)."""
    missing: list[Task[object]] = field(default_factory=list)
    """Tasks without a stored result (they still have to run)."""
    no_output: list[Task[object]] = field(default_factory=list)
    """Touched tasks with a declared output missing: they stay stale (touch cannot vouch
    for a file that is not there)."""
    accepted: list[tuple[Task[object], list[str]]] = field(default_factory=list)
    """Touched tasks that had changed besides their code, and what touch accepted as it is
    now (``"input file data.txt changed"``): data a user may not have meant to accept."""

    def add(self, other: Touched) -> None:
        self.touched += other.touched
        self.fresh += other.fresh
        self.missing += other.missing
        self.no_output += other.no_output
        self.accepted += other.accepted

    def to_json(self) -> dict[str, Json]:
        return {"touched": self.touched, "fresh": self.fresh,
                "missing": [t.expression() for t in self.missing],
                "output_missing": [t.expression() for t in self.no_output],
                "accepted": [{"task": t.expression(), "changes": list(changes)}
                             for t, changes in self.accepted]}


def _accepting(node: Node, meta: Meta, stamps: dict[TaskId, str]) -> list[str]:
    """What besides code changed since a stored result was computed (what touching it
    accepts as it is now): its files, its captured values, its prerequisites' values."""
    changes: list[str] = []
    if node.files is not None:
        if not node.files.details:
            node.files.reason(meta)  # (notes them; planning may have stopped at the code)
        changes += node.files.details
    changed = [d for d in node.deps if d in stamps and meta.deps.get(d) != stamps[d]]
    if changed:
        changes.append(f"{plural(len(changed), 'prerequisite')} changed value")
    return changes


def touch_plan(the_plan: Plan, store: Store) -> Touched:
    """Accept the current code and the stored results of a marked plan as fresh.

    Each stored entry gets the family's current code fingerprint, the current stamps of
    its prerequisites and the current digests of its input and output files, without
    running anything. Tasks without a stored result stay missing, and so does a declared
    output that does not exist.
    """
    report = Touched()
    updates: dict[FamilyDir, dict[TaskId, Meta]] = {}
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
            if not all(node.files.outputs_now.values()):
                report.no_output.append(node.task)
        if node.shape is not None:
            deps[ARRANGEMENT] = node.shape
        if changes := _accepting(node, meta, stamps):
            report.accepted.append((node.task, changes))
        new = meta.touched(node.task.family.fingerprint[0], deps)
        updates.setdefault(node.task.family.dirname, {})[tid] = new
        report.touched += 1
    families = {n.task.family.dirname: n.task.family for n in the_plan.nodes.values()}
    for dirname, metas in updates.items():
        store.put_metas(dirname, metas, families[dirname].fingerprint)
    return report


def touch_family(store: Store, family: TaskFamily[..., object]) -> Touched:
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
