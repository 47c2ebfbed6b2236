"""What the store holds, seen from a taskfile: its families, the tasks of a target's DAG
with their states, the stored entries and their sizes.

These are the library functions behind ``checkpoint ls`` and ``cache ls``/``du``; they
return plain records and never print. Changing the store is :mod:`.maintenance`'s job;
explaining why a task would run, :mod:`.explain`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ._types import FamilyDir, FamilyName, Json, Reason, TaskId, Word
from .graph import Node, Plan
from .history import LastRun, LastRunStatus
from .store import FailedRun, Store
from .task import Task, TaskFamily


class PlanState(Word):
    """The state of a task in a plan, as ``checkpoint ls TARGET`` lists it."""

    FRESH = "fresh"
    """Its stored result is reused."""
    STALE = "stale"
    """A prerequisite runs, or changed since the result was stored (or it is forced)."""
    MISSING = "missing"
    """No stored result."""
    CODE_CHANGED = "code changed"
    """Its family's code changed since the result was stored."""


def state_of(node: Node) -> PlanState:
    """The state of a marked plan node."""
    return state_of_reason(node.reason)


def state_of_reason(reason: Reason | None) -> PlanState:
    """The state of a plan node that runs for ``reason`` (``None``: fresh)."""
    if reason is None:
        return PlanState.FRESH
    if reason is Reason.MISSING:
        return PlanState.MISSING
    if reason is Reason.CODE_CHANGED:
        return PlanState.CODE_CHANGED
    return PlanState.STALE


def doc_line(obj: object) -> str:
    """The first non-empty line of an object's docstring ('' if none)."""
    for line in (getattr(obj, "__doc__", None) or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


@dataclass
class FamilyInfo:
    """One task family of a taskfile, with what the store holds of it."""

    name: str
    """The name the taskfile gives it (what targets use)."""
    family: FamilyName
    queue: str
    entries: int
    size: int
    """Bytes the entries hold: stored values plus data directories (as ``cache ls``)."""
    doc: str

    def to_json(self) -> dict[str, Json]:
        return {"name": self.name, "family": self.family, "queue": self.queue,
                "entries": self.entries, "size": self.size, "doc": self.doc}


def list_families(families: Mapping[str, TaskFamily[..., object]], store: Store) -> list[FamilyInfo]:
    """The families of a taskfile, sorted by name, with entry counts and sizes."""
    infos = []
    for name in sorted(families):
        fam = families[name]
        infos.append(FamilyInfo(name, fam.name, fam.queue, store.count_entries(fam.dirname),
                                store.held_size(fam.dirname), doc_line(fam)))
    return infos


@dataclass
class TaskRow:
    """One task of a target's DAG, its state, and its last recorded run."""

    task: Task[object]
    state: PlanState
    reason: Reason | None
    """The plan's reason to run (``None`` when fresh)."""
    last: LastRun | None = None
    """Its last recorded run (``None`` when none is recorded)."""

    def to_json(self) -> dict[str, Json]:
        last = self.last
        return {"task": self.task.expression(), "family": self.task.family.name, "id": self.task.id,
                "state": self.state, "reason": self.reason,
                "last_run": None if last is None else {
                    "status": last.status, "started": last.started, "duration": last.duration,
                    "worker": last.worker}}


def dag_states(
    the_plan: Plan, runs: Mapping[TaskId, LastRun] | None = None
) -> tuple[list[TaskRow], dict[PlanState, int]]:
    """The tasks of a marked plan with their states, and the count of each state.

    ``runs`` (from :func:`checkpoint.history.plan_last_runs`) adds each task's last run.
    """
    runs = runs or {}
    rows = [TaskRow(node.task, state_of(node), node.reason, runs.get(tid))
            for tid, node in the_plan.nodes.items()]
    counts = dict.fromkeys(PlanState, 0)
    for row in rows:
        counts[row.state] += 1
    return rows, counts


def iter_dag_documents(
    the_plan: Plan, failures: Mapping[TaskId, FailedRun] | None = None
) -> Iterator[dict[str, Json]]:
    """:meth:`TaskRow.to_json` of each row of :func:`dag_states`, made straight from
    the plan (``checkpoint ls TARGET --json`` of a 200,000-task DAG)."""
    failures = failures or {}
    for tid, node in the_plan.nodes.items():
        task, meta, reason = node.task, node.meta, node.reason
        failed = failures.get(tid) if failures else None
        if failed is not None:
            last: dict[str, Json] | None = {
                "status": LastRunStatus.FAILED, "started": failed.started,
                "duration": failed.duration, "worker": failed.worker}
        elif meta is not None:
            last = {"status": LastRunStatus.DONE, "started": meta.started,
                    "duration": meta.duration, "worker": meta.worker}
        else:
            last = None
        yield {"task": task.expression(), "family": task.family.name, "id": tid,
               "state": state_of(node), "reason": reason, "last_run": last}


@dataclass
class EntryInfo:
    """One stored entry."""

    family: FamilyDir
    id: TaskId
    expr: str
    args: Json
    """The canonical arguments, decoded from JSON."""
    size: int
    stored: float
    duration: float
    fingerprint: str

    def to_json(self) -> dict[str, Json]:
        return {"family": self.family, "id": self.id, "task": self.expr, "args": self.args,
                "size": self.size, "stored": self.stored, "duration": self.duration,
                "fingerprint": self.fingerprint}


def list_entries(store: Store, family: FamilyDir) -> list[EntryInfo]:
    """Every entry of a family, oldest first."""
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

    family: FamilyDir
    entries: int
    size: int

    def to_json(self) -> dict[str, Json]:
        return {"family": self.family, "entries": self.entries, "size": self.size}


def disk_usage(store: Store) -> list[Usage]:
    """Entries and bytes of every family in the store, largest first."""
    rows = [Usage(f, store.count_entries(f), store.disk_usage(f)) for f in store.families()]
    rows.sort(key=lambda u: (-u.size, u.family))
    return rows
