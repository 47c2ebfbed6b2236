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
from ._types import DebugMode, ExecutorKind, Reason, TaskId
from ._worker import Outcome, WorkItem, still_writing
from ._workitems import WorkItems, rebuildable

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
                                    timeout=timeout)
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
            try:
                future = self.adapter.submit(items, payloads)
            except broken_process_pool():
                raise
            except Exception:
                if not self._unpicklable(items):
                    raise
                future = self.adapter.submit(items, payloads)
        except broken_process_pool() as exc:  # broke before we noticed: collect it as such
            future = Future()
            future.set_exception(exc)
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
