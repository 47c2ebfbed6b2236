"""Ready tasks on their way to the workers: batches, their work items, what is in flight.

While fewer than ``workers + prefetch`` batches are in flight (a batch queued behind each
running one keeps workers busy between round trips), :class:`Submitter` takes the next batch
from :class:`~checkpoint._admission.Admission`, hands each task that can start the values
of its prerequisites (:class:`~checkpoint._handout.Handout`), makes its
:class:`~checkpoint._worker.WorkItem` (:class:`~checkpoint._workitems.WorkItems`) and
submits the batch. A future's done-callback puts the batch on :attr:`Submitter.done`, which
the run's loop reads. A batch is announced as started (``TaskStarted``) when a worker is
free for it, as far as this thread can tell.
"""

from __future__ import annotations

import queue
import time
import types
from collections import deque
from concurrent.futures import Future

from . import events as ev
from ._adapter import ExecutorAdapter, broken_process_pool
from ._claims import Claims
from ._codec import Payload
from ._flow import RunState, TaskFlow
from ._handout import Handout
from ._readiness import TaskState
from ._recovery import Recovery
from ._text import task_label
from ._types import DebugMode, ExecutorKind, Reason, TaskId
from ._worker import Outcome, WorkItem, still_writing
from ._workitems import WorkItems, rebuildable
from .errors import UnpicklableTaskError
from .task import Task

Returned = tuple[Future[list[Outcome]], list[WorkItem]]
"""A batch that came back from the executor, with its future."""


class Submitter:
    """Batches to the executor, and the batches in flight."""

    def __init__(self, state: RunState, flow: TaskFlow, claims: Claims, recovery: Recovery,
                 adapter: ExecutorAdapter, *, debug: DebugMode | None, show_locals: bool,
                 timeout: float | None) -> None:
        self.nodes = state.nodes
        self.readiness = state.readiness
        self.admission = state.admission
        self.values = state.values
        self.coordination = state.coordination
        self.emit = state.emit
        self.flow = flow
        self.claims = claims
        self.recovery = recovery
        self.adapter = adapter
        self.debug = debug
        """Debug mode of every task (in-process runs only)."""
        self.timeout = timeout
        self.store_root = str(state.store.root)
        self.handout = Handout(state, flow, claims)
        self.work_items = WorkItems(state, adapter.kind, debug=debug, show_locals=show_locals,
                                    timeout=timeout, manifests=adapter.manifests)
        self.done: queue.SimpleQueue[Returned] = queue.SimpleQueue()
        """Batches that came back, put there by their futures' callbacks (in any thread)."""
        self.inflight: dict[int, list[WorkItem]] = {}
        """Batches handed to the executor, by ``id(items)``."""
        self.started: set[int] = set()
        """Batches in flight that were announced as started (at most one per worker)."""
        self.queued: deque[list[WorkItem]] = deque()
        """Batches in flight queued behind those, announced when a worker frees up."""

    def submit_ready(self) -> None:
        """Submit ready tasks while there is room in flight, then give back the reads of
        the tasks that returned (after those, so that a chain of readers of one directory
        keeps its lock shared instead of taking it again)."""
        try:
            self._submit_ready()
        finally:
            if self.coordination.ended:
                self.claims.release()

    def _submit_ready(self) -> None:
        if self.flow.stopping:
            return
        if self.coordination.blocked:
            for tid in self.coordination.take_blocked():
                self.admission.push(tid, self.nodes[tid].task.family.queue)
        if self.recovery.suspects:
            # A worker died: run the tasks that were in flight alone, one after another, so
            # that the one that kills its worker is known and the others are not blamed.
            suspects = self.recovery.suspects
            while suspects and not self.inflight:
                tid = suspects.popleft()
                self.admission.hold(self.nodes[tid].task.family.queue)
                self.submit([tid], isolated=True)
            return
        # A batch or more beyond the workers (``prefetch``): a worker that finishes picks the
        # next batch up at once instead of waiting for this thread to collect and submit.
        adapter = self.adapter
        most = 1 if adapter.kind is ExecutorKind.INLINE else adapter.workers + adapter.prefetch
        while len(self.inflight) < most:
            batch = self.admission.take()
            if not batch:
                return  # nothing ready, or every ready task waits for a queue slot
            self.submit(batch)

    def submit(self, batch: list[TaskId], isolated: bool = False) -> None:
        """Submit those of ``batch`` that can start now (``isolated``: a suspect, alone)."""
        items: list[WorkItem] = []
        payloads: dict[TaskId, Payload] = {}
        locking = self.coordination.locking
        for tid in batch:
            if self.handout.hand(tid, payloads, locking):
                items.append(self.work_items.make(self.nodes[tid].task))
        if not items:
            return
        if len(items) == 1 and self.adapter.hands_on and not (isolated or locking or self.debug):
            self._hand_on(items, payloads)
        try:
            future = self._send(items, payloads)
        except broken_process_pool() as exc:  # broke before we noticed: collect it as such
            future = Future()
            future.set_exception(exc)
        if future is None:
            return  # none of them could be pickled: each failed
        self.inflight[id(items)] = items
        if self.emit:
            if len(self.started) < self.adapter.workers:
                self._announce(items)
            else:  # queued behind a running batch (prefetch): not running yet
                self.queued.append(items)
        self.recovery.sent(items, isolated)
        future.add_done_callback(lambda f: self.done.put((f, items)))

    def _hand_on(self, items: list[WorkItem], payloads: dict[TaskId, Payload]) -> None:
        """Run the one dependent of a batch's single task right after it in the same batch,
        with its value handed over in memory (Dask's linear chain fusion): a large value is
        then not read back from the store into a new buffer, the copy that cost W5 most.

        Only when nothing is lost by it: the task has no other dependent that its result
        (reported with its dependent's) would delay, the dependent waits for it alone, has
        no time limit (a worker that ends itself would take the task's result with it),
        has a queue slot and would not be kept by early cutoff. The task's result is stored
        as usual; the dependent is marked waiting until the batch returns (:attr:`TaskFlow.fused`),
        and its entry records the stamp of that result (:meth:`TaskFlow._went_on`)."""
        producer = items[0].id
        dependents = self.readiness.dependents.get(producer)
        if dependents is None or len(dependents) != 1:
            return
        tid = dependents[0]
        if self.readiness.get(tid) is not TaskState.WAITING or self.readiness.pending.get(tid) != {producer}:
            return
        node = self.nodes[tid]
        family = node.task.family
        if family.timeout is not None or self.timeout or (
            node.reason == Reason.UPSTREAM_RERUN and node.meta is not None  # maybe kept
        ):
            return
        limit = self.admission.limits.get(family.queue)
        if limit is not None and self.admission.running.get(family.queue, 0) >= limit:
            return
        outputs = node.files.outputs if node.files is not None else ()
        if still_writing(self.store_root, tid, outputs) is not None:
            return
        given = self.handout.gather(tid, payloads, producer)
        if given is None:
            return
        self.admission.hold(family.queue)
        self.values.hand(tid, given)
        item = self.work_items.make(node.task)
        item.after = producer
        items[0].hands_on = True
        items.append(item)
        self.flow.fused[tid] = producer

    def _send(self, items: list[WorkItem],
              payloads: dict[TaskId, Payload]) -> Future[list[Outcome]] | None:
        """Submit ``items``; if the batch cannot be pickled, rebuild in the worker the inner
        functions that can be (:meth:`_unpicklable`), else fail each task that cannot be
        pickled (:meth:`_refuse`) and send the others; ``None`` if none is left."""
        try:
            return self.adapter.submit(items, payloads)
        except broken_process_pool():
            raise
        except Exception:
            if not (self._unpicklable(items) or self._refuse(items)):
                raise
        return self._send(items, payloads) if items else None

    def _refuse(self, items: list[WorkItem]) -> bool:
        """Fail each task of ``items`` that cannot be pickled (its inner function holds a
        lock, a client, a generator), taking it out of the batch; whether the batch changed.
        A batch that hands a value over is split first: each of its tasks may fail alone."""
        import cloudpickle

        refused = len(items) > 1 and bool(items[-1].after)
        if refused:
            self._unfuse(items)
        for item in list(items):
            try:
                cloudpickle.dumps(item)
            except Exception as exc:  # noqa: BLE001 - whatever pickling raises
                items.remove(item)
                task = self.nodes[item.id].task
                self.admission.release(task.family.queue)
                self.coordination.end_reads(item.id)
                self.flow.fail_now(item.id, unpicklable_task(task, item.fn, exc))
                refused = True
        return refused

    def _unfuse(self, items: list[WorkItem]) -> None:
        """Undo :meth:`_hand_on`: the dependent waits for its producer's stored value."""
        item = items.pop()
        del self.flow.fused[item.id]
        self.values.given.pop(item.id, None)
        self.admission.release(self.nodes[item.id].task.family.queue)
        items[0].hands_on = False

    def _unpicklable(self, items: list[WorkItem]) -> bool:
        """A batch that could not be pickled: make each inner function that cannot travel
        (it holds a lock, a client) in the worker instead, by calling the outer function
        there again, where it can be (:func:`~checkpoint._workitems.rebuildable`); whether
        one was found."""
        import cloudpickle

        found = False
        for item in items:
            task = self.nodes[item.id].task
            if item.call is None and rebuildable(task):
                try:
                    cloudpickle.dumps(item.fn)
                except Exception:  # noqa: BLE001 - whatever pickling raises
                    item.fn, item.filename = None, ""
                    item.call = (task.family, task.args, task.kwargs)
                    found = True
        return found

    def returned(self, items: list[WorkItem]) -> None:
        """A batch was collected: its worker is free for the next batch queued."""
        if self.emit:
            self.started.discard(id(items))
            while self.queued and len(self.started) < self.adapter.workers:
                waiting = self.queued.popleft()
                if id(waiting) in self.inflight:
                    self._announce(waiting)

    def _announce(self, items: list[WorkItem]) -> None:
        """A batch reached a worker (as far as this thread can tell: a free one was there)."""
        assert self.emit is not None
        self.started.add(id(items))
        now = time.time()
        for item in items:
            if not item.after:  # it starts when the one before ends (TaskFlow._went_on)
                self.emit(ev.TaskStarted(self.nodes[item.id].task, now))


def unpicklable_task(task: Task[object], fn: object, error: Exception) -> UnpicklableTaskError:
    """The failure of a task that cannot be sent to a worker: what of it cannot be pickled
    (:func:`_unpicklable_parts`), and what to do about it."""
    parts = _unpicklable_parts(fn)
    held = (f"holds {', '.join(parts)}, which cannot be pickled" if parts
            else "cannot be pickled")
    wrapped = UnpicklableTaskError(
        f"{task_label(task)} cannot be sent to its worker process (the process and Dask executors "
        f"pickle each task): its "
        f"{'instance' if task.family.is_class else 'inner function'} {held} "
        f"({type(error).__name__}: {error}). Create that object inside the "
        f"{'run method' if task.family.is_class else 'inner function'}, where it is used, or "
        "run with --executor threads (executor=\"threads\") or inline, which do not pickle tasks.",
        task=repr(task), family=task.family.name,
    )
    wrapped.__cause__ = error
    return wrapped


_EMPTY_CELL = types.CellType()
"""A closure's cell not assigned yet (cells compare by content)."""


def _unpicklable_parts(fn: object) -> list[str]:
    """The names of what ``fn`` holds that cannot be pickled: its closure's variables (an
    inner function) or its instance's attributes (a class task's ``_ClassRun``)."""
    import cloudpickle

    state = getattr(fn, "state", None)  # a class task's _ClassRun
    if isinstance(state, dict):
        held = {f"self.{k}": v for k, v in state.items()}
    else:
        code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None) or ()
        names = code.co_freevars if code is not None else ()
        held = {f"'{n}'": c.cell_contents for n, c in zip(names, cells, strict=False)
                if c != _EMPTY_CELL and c.cell_contents is not fn}
    parts = []
    for name, value in held.items():
        try:
            cloudpickle.dumps(value)
        except Exception:  # noqa: BLE001 - whatever pickling raises
            parts.append(name)
    return parts

