"""Run history: when, where and for how long tasks last ran, and what they printed.

The store keeps it (see :mod:`checkpoint.store`): a result's metadata says when and where it
was computed and whether it wrote output (``log:{id}``); a failed run is kept as a
:class:`~checkpoint.store.FailedRun` (``run:{id}``). A task's *last run* is the later of the
two. These functions read that record for ``checkpoint ls``/``checkpoint log`` and give
the progress display its duration estimates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._types import FamilyDir, TaskId, Word
from .store import FailedRun, Meta, Store

if TYPE_CHECKING:
    from .graph import Plan
    from .task import Task


class LastRunStatus(Word):
    """How a task's last recorded run ended."""

    DONE = "done"
    """It stored its result."""
    FAILED = "failed"


@dataclass(frozen=True)
class LastRun:
    """The last recorded run of a task."""

    status: LastRunStatus
    started: float
    """Wall-clock start (seconds since the epoch)."""
    duration: float
    """Compute time in seconds."""
    worker: str
    """``hostname:pid`` of the process that ran it."""
    output: str = ""
    """What the task wrote to stdout and stderr."""
    traceback: str = ""
    """The traceback, when the run failed."""

    @property
    def ended(self) -> float:
        """Wall-clock end (seconds since the epoch)."""
        return self.started + self.duration


def last_run(task: Task[object], store: Store, *, output: bool = False) -> LastRun | None:
    """The last recorded run of ``task`` (with its output if ``output``), or ``None``."""
    family = task.family.dirname
    meta = store.get_meta(family, task.id)
    failed = store.get_failed_run(family, task.id)
    if failed is not None and (meta is None or failed.started >= meta.started):
        return LastRun(LastRunStatus.FAILED, failed.started, failed.duration, failed.worker,
                       failed.output if output else "", failed.traceback if output else "")
    if meta is None:
        return None
    text = (store.get_log(family, task.id) or "") if output and meta.log else ""
    return LastRun(LastRunStatus.DONE, meta.started, meta.duration, meta.worker, text)


def last_runs(
    tasks: Iterable[Task[object]], cache_dir: str | os.PathLike[str] | None = None
) -> dict[TaskId, LastRun]:
    """The last recorded run of each task that has one, by task id (for ``checkpoint ls``).

    Output is not loaded; use :func:`last_log` for one task's output.
    """
    store = Store.open(cache_dir)
    runs: dict[TaskId, LastRun] = {}
    for task in tasks:
        run = last_run(task, store)
        if run is not None:
            runs[task.id] = run
    return runs


def plan_last_runs(plan: Plan, store: Store) -> dict[TaskId, LastRun]:
    """The last recorded run of each task of a marked plan (for ``checkpoint ls TARGET``).

    Like :func:`last_runs`, but uses the metadata the plan already holds and finds recorded
    failures with one query per family, so a large DAG costs no lookup per task.
    """
    failures = plan_failures(plan, store)
    runs: dict[TaskId, LastRun] = {}
    for tid, node in plan.nodes.items():
        run = last_run_of(node.meta, failures.get(tid))
        if run is not None:
            runs[tid] = run
    return runs


def plan_failures(plan: Plan, store: Store) -> dict[TaskId, FailedRun]:
    """The tasks of a marked plan whose last recorded run failed, with that failure.

    A failure counts when it is not older than the task's stored result. One query per
    family finds the few tasks with a failure on record; only those are read.
    """
    failed_ids: dict[str, set[str]] = {}
    failures: dict[TaskId, FailedRun] = {}
    for tid, node in plan.nodes.items():
        family = node.task.family.dirname
        ids = failed_ids.get(family)
        if ids is None:
            ids = failed_ids[family] = set(store.failed_run_ids(family))
        if tid in ids:
            failed = store.get_failed_run(family, tid)
            meta = node.meta
            if failed is not None and (meta is None or failed.started >= meta.started):
                failures[tid] = failed
    return failures


def last_run_of(meta: Meta | None, failed: FailedRun | None) -> LastRun | None:
    """A task's last run from its stored metadata and its failure that counts (from
    :func:`plan_failures`), without output."""
    if failed is not None:
        return LastRun(LastRunStatus.FAILED, failed.started, failed.duration, failed.worker)
    if meta is not None:
        return LastRun(LastRunStatus.DONE, meta.started, meta.duration, meta.worker)
    return None


def last_log(task: Task[object], cache_dir: str | os.PathLike[str] | None = None) -> LastRun | None:
    """The last recorded run of ``task`` with its captured output (and traceback if it failed)."""
    return last_run(task, Store.open(cache_dir), output=True)


def stored_starts(tasks: Iterable[tuple[Task[object], bool, float]], store: Store) -> dict[TaskId, float]:
    """When each of ``(task, failed, duration)`` started, by task id, from its stored result
    (or its recorded failure when ``failed``), if the record has that duration.

    For a run's record of events that did not carry start times: one index query per
    family (and one per failure).
    """
    done: dict[FamilyDir, list[tuple[TaskId, float]]] = {}
    starts: dict[TaskId, float] = {}
    for task, failed, duration in tasks:
        family = task.family.dirname
        if failed:
            run = store.get_failed_run(family, task.id)
            if run is not None and abs(run.duration - duration) < 1e-6:
                starts[task.id] = run.started
        else:
            done.setdefault(family, []).append((task.id, duration))
    for family, wanted in done.items():
        metas = store.get_metas(family, [tid for tid, _ in wanted])
        for tid, duration in wanted:
            meta = metas.get(tid)
            if meta is not None and abs(meta.duration - duration) < 1e-6:
                starts[tid] = meta.started
    return starts


def duration_estimates(plan: Plan) -> tuple[dict[TaskId, float], dict[str, tuple[float, int]]]:
    """What the plan's stored metadata says about durations, for an ETA.

    Returns ``(per_task, per_family)``: the previous duration of each task that will run and
    has a stored result, and ``{family name: (sum of durations, count)}`` over every task of
    the plan with a stored result (the family's mean, for tasks without a previous duration).
    It reads only metadata the plan already holds: no store access.
    """
    per_task: dict[TaskId, float] = {}
    per_family: dict[str, tuple[float, int]] = {}
    for tid, node in plan.nodes.items():
        meta = node.meta
        if meta is None:
            continue
        name = node.task.family.name
        total, count = per_family.get(name, (0.0, 0))
        per_family[name] = (total + meta.duration, count + 1)
        if node.reason is not None:
            per_task[tid] = meta.duration
    return per_task, per_family


def family_mean_duration(store: Store, family: FamilyDir, sample: int = 50) -> float | None:
    """The mean duration of up to ``sample`` stored entries of a family (by directory name).

    The ETA's prior for a family none of whose tasks in the plan ran before (a sweep over new
    arguments): ``None`` when the family has no stored entry.
    """
    total, count = 0.0, 0
    for _, meta in store.entries(family):
        total += meta.duration
        count += 1
        if count >= sample:
            break
    return total / count if count else None
