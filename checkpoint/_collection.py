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

    def _outcomes(self, future: Future[list[Outcome]],
                  items: list[WorkItem]) -> list[Outcome] | None:
        """The batch's outcomes, or ``None`` when its tasks are to run again (or never)."""
        generation, isolated = self.recovery.returned(items)
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
