"""A batch that came back: its outcomes, one per task, each handled on its own.

A batch's future holds one :data:`~checkpoint._worker.Outcome` per task, or an exception: a
cancelled batch (by this run, when aborting: it did not run; by someone else: its tasks
fail), a broken process pool (a worker died: :class:`~checkpoint._recovery.Recovery`
decides) or an executor that failed. Each task's queue slot and shared locks are given
back, then its outcome goes where it belongs: ``Done`` and ``Failed`` to
:class:`~checkpoint._results.Results`, ``NeedsPrerequisite`` to ``Recovery``.
"""

from __future__ import annotations

import time
from concurrent.futures import CancelledError, Future

from ._adapter import broken_process_pool
from ._flow import RunState, TaskFlow
from ._interrupts import InterruptGuard
from ._readiness import TaskState
from ._recovery import Recovery
from ._results import Results
from ._submission import Returned, Submitter
from ._types import TaskId
from ._worker import Done, Failed, NeedsPrerequisite, Outcome, Unrun, WorkItem
from .errors import TaskFailedError


class Collector:
    """Returned batches into outcomes, and each outcome to its handler."""

    def __init__(self, state: RunState, flow: TaskFlow, recovery: Recovery, results: Results,
                 submitter: Submitter, guard: InterruptGuard) -> None:
        self.nodes = state.nodes
        self.admission = state.admission
        self.coordination = state.coordination
        self.flow = flow
        self.recovery = recovery
        self.results = results
        self.submitter = submitter
        self.guard = guard
        self.early: set[TaskId] = set()
        """Tasks of batches in flight whose results were handled already (:meth:`handed_over`)."""

    def collect(self, returned: Returned) -> None:
        """Handle a batch that came back: each of its tasks' outcomes."""
        # An interrupt waits until the batch is accounted for: a task is never counted as
        # both finished and still to run (the interrupted summary's counts add up).
        with self.guard.critical():
            future, items = returned
            self.submitter.inflight.pop(id(items), None)
            try:
                outcomes = self._outcomes(future, items)
                if outcomes is not None:
                    self._handle(outcomes)
            finally:
                if self.flow.fused:
                    for item in items:
                        if item.after:  # (a reader put back by its producer is gone already)
                            self.flow.fused.pop(item.id, None)
                self.submitter.returned(items)  # after its outcomes: its worker is free now

    def handed_over(self) -> None:
        """Handle the results of the tasks that handed their value over to a reader still
        running in their batch, as its worker noted them (:func:`~checkpoint._worker.note_handed`):
        shown done while the reader runs, and kept if the batch is lost (an interrupt, a
        dead worker). The reader, started, is then like any task of its batch."""
        for items in list(self.submitter.inflight.values()):
            if len(items) > 1 and items[1].after:
                self._noted(items)

    def _noted(self, items: list[WorkItem]) -> None:
        producer, reader = items[0], items[1]
        out = self.submitter.adapter.handed(producer.id)
        if out is None:
            return
        with self.guard.critical():
            self.early.add(producer.id)
            self.admission.release(self.nodes[producer.id].task.family.queue)
            self.coordination.end_reads(producer.id)
            self.results.finished(out)  # (its reader goes on: TaskFlow._went_on)
            self.flow.fused.pop(reader.id, None)
            reader.after = ""

    def _unreported(self, items: list[WorkItem]) -> list[WorkItem]:
        """The items of a lost batch whose results were not handled (:meth:`handed_over`)."""
        if len(items) > 1 and items[1].after:
            self._noted(items)
        if not self.early:
            return items
        kept = [item for item in items if item.id not in self.early]
        self.early.difference_update(item.id for item in items)
        return kept

    def _outcomes(self, future: Future[list[Outcome]],
                  items: list[WorkItem]) -> list[Outcome] | None:
        """The batch's outcomes, or ``None`` when its tasks are to run again (or never)."""
        generation, isolated = self.recovery.returned(items)
        if future.cancelled() or future.exception() is not None:
            items = self._unreported(items)
        try:
            return future.result()
        except CancelledError:
            if self.flow.aborting:  # we cancelled it: these tasks did not run
                self.flow.not_run(items)
                return None
            # Someone else cancelled it (the executor was shut down under us): they fail.
            return self.recovery.lost(items, TaskFailedError, "{task} was cancelled by its "
                                      "executor before it ran (was the executor shut down "
                                      "during the run?).")
        except broken_process_pool():
            if self.flow.aborting:  # we killed the workers: these tasks did not run
                self.flow.not_run(items)
                return None
            return self.recovery.broken_pool(items, generation, isolated)
        except BaseException as exc:  # noqa: BLE001 - the executor itself failed
            return [Failed(item.id, time.time(), 0.0, exc) for item in items]

    def _handle(self, outcomes: list[Outcome]) -> None:
        """Give back each task's queue slot and shared locks, then handle its outcome."""
        self.results.new_batch()
        fused = self.flow.fused
        if fused:
            for outcome in outcomes:
                if type(outcome) is Unrun:  # not run after its producer: ready when it is done
                    fused.pop(outcome.id, None)
        for outcome in outcomes:
            tid = outcome.id
            if tid in self.early:  # handled as its reader started
                self.early.discard(tid)
                continue
            self.admission.release(self.nodes[tid].task.family.queue)
            self.coordination.end_reads(tid)
            if fused and tid in fused and self.flow.readiness.get(tid) is not TaskState.RUNNING:
                # Its producer in this batch gave no value (a batch lost whole fails every
                # task), or it was skipped meanwhile: not run, as far as this run is concerned.
                self.flow.unrun(tid)
            elif isinstance(outcome, Done):
                self.results.finished(outcome)
            elif isinstance(outcome, Failed):
                self.results.failed(outcome)
            elif isinstance(outcome, NeedsPrerequisite):
                self.recovery.needs(outcome)
            else:
                self.flow.unrun(tid)
