"""How a task of a run moves on: it becomes ready (or is kept by early cutoff), settles,
fails for good, is handed back unrun, or is brought back because its value was damaged.

:class:`RunState` is what the parts of one run share; :class:`TaskFlow` is the one place
that changes a task's state (:class:`~checkpoint._readiness.Readiness`), the run's result
and the events that tell of them together, and says when the run stops starting tasks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import events as ev
from ._admission import Admission
from ._coordination import Coordination
from ._readiness import Readiness, TaskState
from ._recorder import Recorder
from ._types import Reason, TaskId
from ._values import RunValues
from .errors import CorruptEntryError, TaskFailedError
from .graph import Node, entry_is_current
from .store import FailedRun, Meta, Store

if TYPE_CHECKING:
    from ._worker import Failed, WorkItem
    from .scheduler import RunResult
    from .task import Task

Emit = Callable[[ev.Event], None]


@dataclass(eq=False)
class RunState:
    """What the parts of one run share."""

    nodes: dict[TaskId, Node]
    """The plan's nodes, every task of the DAG (those that do not run too)."""
    store: Store
    readiness: Readiness
    admission: Admission
    values: RunValues
    recorder: Recorder
    coordination: Coordination
    result: RunResult
    """Filled as tasks settle."""
    emit: Emit | None
    """Sends an event to the run's subscribers (``None``: nobody listens)."""


class TaskFlow:
    """Task state changes, with their results and events."""

    def __init__(self, state: RunState, keep_going: bool) -> None:
        self.nodes = state.nodes
        self.readiness = state.readiness
        self.admission = state.admission
        self.values = state.values
        self.recorder = state.recorder
        self.coordination = state.coordination
        self.result = state.result
        self.emit = state.emit
        self.keep_going = keep_going
        self.stopping = False
        """No task starts any more (a failure without ``keep_going``, or an abort)."""
        self.aborting = False
        """The run is being aborted: a batch cancelled or broken now did not run."""
        self.fused: dict[TaskId, TaskId] = {}
        """Tasks in flight in the batch of the prerequisite they wait for, which hands them
        its value in memory (see :meth:`Submitter.submit`): ``{task: prerequisite}``."""

    def ready(self, tid: TaskId) -> None:
        """``tid`` waits for nothing: kept as it is (early cutoff), or queued."""
        if self.cut_off(tid):
            self.settled(tid, done=True)
        else:
            self.admission.push(tid, self.nodes[tid].task.family.queue)

    def cut_off(self, tid: TaskId) -> bool:
        """Early cutoff: the prerequisites that re-ran gave the values ``tid``'s entry was
        computed from, so it is current as it is and does not run."""
        node = self.nodes[tid]
        if (
            node.reason != Reason.UPSTREAM_RERUN or node.meta is None
            or not entry_is_current(node.meta, node.deps, self.values.stamp, node.files,
                                    shape=node.shape)
        ):
            return False
        node.reason = None
        self.result.kept.append(node.task)
        self.result.reused.append(node.task)
        if self.emit:
            self.emit(ev.TaskKept(node.task))
        return True

    def reused(self, tid: TaskId) -> None:
        task = self.nodes[tid].task
        self.result.reused.append(task)
        if self.emit:
            self.emit(ev.TaskReused(task))

    def settled(self, tid: TaskId, done: bool) -> None:
        """``tid`` is done or failed for good: its prerequisites have one reader less and,
        when done, the dependents it was the last wait of become ready (iteratively: early
        cutoff can settle a long chain at once)."""
        for dep in self.nodes[tid].deps:
            self.values.drop_reader(dep)
        if not done:
            return
        stack = self.readiness.done(tid)
        while stack:
            ready = stack.pop()
            if ready in self.fused:
                self._went_on(ready, self.fused[ready])
            elif self.cut_off(ready):
                for dep in self.nodes[ready].deps:
                    self.values.drop_reader(dep)
                stack.extend(self.readiness.done(ready))
            else:
                self.admission.push(ready, self.nodes[ready].task.family.queue)

    def _went_on(self, tid: TaskId, producer: TaskId) -> None:
        """``tid`` ran in its producer's batch right after it, with its value: it was given
        that value as now stored (its stamp), and it started when its producer ended."""
        self.readiness.running(tid)
        given = self.values.given.get(tid)
        stamp = self.values.stamp(producer)
        if given is not None and stamp is not None:
            given[producer] = stamp
        if self.emit:
            self.emit(ev.TaskStarted(self.nodes[tid].task, time.time()))

    def unrun(self, tid: TaskId) -> None:
        """``tid``, in its producer's batch, did not run (the producer gave no value or took
        long, or ``tid`` was skipped meanwhile): it runs later as usual, if at all."""
        self.values.given.pop(tid, None)
        if self.readiness.get(tid) is TaskState.RUNNING:
            self.readiness.state[tid] = TaskState.READY
            self.ready(tid)

    def adopt(self, tid: TaskId, meta: Meta) -> None:
        """Another run stored this task's result while we waited: reuse it."""
        node = self.nodes[tid]
        node.meta, node.reason = meta, None
        self.values.adopted(tid, meta)
        self.coordination.unlock(tid)
        self.reused(tid)
        self.settled(tid, done=True)

    def not_run(self, items: list[WorkItem]) -> None:
        """The tasks of a batch did not run: they are ready again (or stay unsettled)."""
        for item in items:
            self.fused.pop(item.id, None)  # (a task in its producer's batch stays waiting)
            self.admission.release(self.nodes[item.id].task.family.queue)
            self.values.given.pop(item.id, None)
            self.coordination.end_reads(item.id)
            if self.readiness.get(item.id) is TaskState.RUNNING:
                self.readiness.state[item.id] = TaskState.READY

    def damaged(self, tid: TaskId, message: str, reader: TaskId) -> bool:
        """``reader`` found ``tid``'s value damaged: recompute it (once a run) and return
        True (``reader`` waits for it), or fail ``reader`` and return False."""
        state = self.readiness.get(tid)
        if state in (TaskState.WAITING, TaskState.READY, TaskState.RUNNING):
            return True  # being recomputed already
        node = self.nodes[tid]
        if state is not TaskState.DONE or tid in self.values.recomputed:
            failed = self.result.failed.get(tid)
            error: BaseException = CorruptEntryError(
                f"The stored result of {node.task!r} ({node.task.family.name}), which "
                f"{self.nodes[reader].task!r} needs, was recomputed in this run and is damaged "
                f"again: {message} The disk or filesystem of the cache may be failing; check it "
                "(e.g. `checkpoint cache verify`) or choose another --cache-dir."
            ) if failed is None else failed
            self.fail_now(reader, error)
            return False
        if self.emit:
            self.emit(ev.CorruptEntryFound(node.task, message))
        self.values.forget(tid)
        node.reason = Reason.CORRUPT
        for tasks in (self.result.reused, self.result.ran, self.result.kept):  # counted anew
            with contextlib.suppress(ValueError):
                tasks.remove(node.task)
        for dep in node.deps:
            self.values.add_reader(dep)
        if self.readiness.add(tid, node.deps):
            self.ready(tid)
        return True

    def fail_now(self, tid: TaskId, error: BaseException, out: Failed | None = None) -> None:
        """``tid`` failed for good: record it, then stop or skip what depends on it."""
        task = self.nodes[tid].task
        self.values.given.pop(tid, None)
        self.coordination.unlock(tid)
        if not isinstance(error, TaskFailedError):
            # Raised in another process, it comes without frames: its text has them.
            remote = (out.error_text if out is not None and error.__traceback__ is None
                      and error.__cause__ is None else "")
            _annotate(error, task, remote)
        self.result.failed[tid] = error
        self.readiness.failed(tid)
        self.settled(tid, done=False)
        started, duration, worker, output, text = (
            (out.started, out.duration, out.worker, out.output, out.error_text)
            if out is not None else (time.time(), 0.0, "", "", "")
        )
        self.recorder.add_failure(task.family.dirname, tid, FailedRun(
            task.expression(), started, duration, worker, output,
            text or f"{type(error).__name__}: {error}",
        ))
        if self.emit:
            self.emit(ev.TaskFailed(task, time.time(), error, text, output, duration, worker,
                                    started))
        if not self.keep_going:
            self.stopping = True
            return
        for skipped in self.readiness.skip_downstream(tid):
            self.result.skipped.append(self.nodes[skipped].task)
            self.settled(skipped, done=False)
            if self.emit:
                self.emit(ev.TaskSkipped(self.nodes[skipped].task, task))


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


def _annotate(error: BaseException, task: Task[object], remote: str = "") -> None:
    """Name the failing task on its own exception (shown under the traceback), and where it
    raised when that was in another process (``remote``: the worker's traceback text).

    The worker's frames go in the note, without the error line the traceback already ends
    with; a traceback of chained exceptions (or Python 3.10, without notes) becomes the
    exception's cause instead, as :mod:`concurrent.futures` does it.
    """
    note = f"while running task {task!r} ({task.family.name})"
    add_note = getattr(error, "add_note", None)
    header = "Traceback (most recent call last):\n"
    if remote and (add_note is None or remote.count(header) != 1 or not remote.startswith(header)):
        error.__cause__ = RemoteTraceback(remote)
        remote = ""
    if add_note is None:
        return
    if remote:
        lines = remote.splitlines()[1:]
        frames = next((i for i, line in enumerate(lines) if not line.startswith("  ")), len(lines))
        note += ", in a worker process:\n" + "\n".join(lines[:frames])
    add_note(note)
