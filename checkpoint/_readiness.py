"""Which tasks of a run can start: each task's state and the prerequisites it waits for."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from ._types import TaskId


class TaskState(str, Enum):
    """Where a task of the run stands."""

    WAITING = "waiting"
    """For prerequisites of this run to finish."""
    READY = "ready"
    """Queued for a worker (or for a queue slot)."""
    RUNNING = "running"
    """Handed to a worker."""
    DONE = "done"
    """Its entry is current: computed by this run, reused, or adopted from another run."""
    FAILED = "failed"
    SKIPPED = "skipped"
    """A prerequisite failed (keep-going mode)."""


SETTLED = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.SKIPPED})


class Readiness:
    """The run's tasks and their states; tasks outside the run count as done."""

    def __init__(self) -> None:
        self.state: dict[TaskId, TaskState] = {}
        self.pending: dict[TaskId, set[TaskId]] = {}
        """Prerequisites a waiting task still waits for."""
        self.dependents: dict[TaskId, list[TaskId]] = {}
        """Tasks of the run that have waited for each task."""
        self.unsettled = 0
        """Tasks of the run not yet done, failed or skipped."""

    def get(self, tid: TaskId) -> TaskState:
        return self.state.get(tid, TaskState.DONE)

    def add(self, tid: TaskId, deps: Iterable[TaskId]) -> bool:
        """Bring ``tid`` into the run (again); return whether it is ready now."""
        if self.get(tid) in SETTLED:
            self.unsettled += 1
        return self.wait_for(tid, deps)

    def wait_for(self, tid: TaskId, deps: Iterable[TaskId]) -> bool:
        """Make ``tid`` wait for those of ``deps`` that are not done; True if none."""
        waits = {d for d in deps if self.get(d) is not TaskState.DONE}
        for dep in waits:
            seen = self.dependents.setdefault(dep, [])
            if tid not in seen:
                seen.append(tid)
        if waits:
            self.pending[tid] = waits
            self.state[tid] = TaskState.WAITING
            return False
        self.pending.pop(tid, None)
        self.state[tid] = TaskState.READY
        return True

    def running(self, tid: TaskId) -> None:
        self.state[tid] = TaskState.RUNNING

    def done(self, tid: TaskId) -> list[TaskId]:
        """``tid``'s entry is current: return the dependents that became ready."""
        self._settle(tid, TaskState.DONE)
        ready = []
        for dependent in self.dependents.get(tid, ()):
            waits = self.pending.get(dependent)
            if waits is None or self.get(dependent) is not TaskState.WAITING:
                continue
            waits.discard(tid)
            if not waits:
                del self.pending[dependent]
                self.state[dependent] = TaskState.READY
                ready.append(dependent)
        return ready

    def failed(self, tid: TaskId) -> None:
        self._settle(tid, TaskState.FAILED)

    def skip_downstream(self, tid: TaskId) -> list[TaskId]:
        """Skip every task downstream of ``tid`` that has not started; return them.

        A running task goes on: it was given values that were current when it started.
        """
        skipped = []
        stack = list(self.dependents.get(tid, ()))
        while stack:
            dependent = stack.pop()
            if self.get(dependent) not in (TaskState.WAITING, TaskState.READY):
                continue
            self._settle(dependent, TaskState.SKIPPED)
            self.pending.pop(dependent, None)
            skipped.append(dependent)
            stack.extend(self.dependents.get(dependent, ()))
        return skipped

    def _settle(self, tid: TaskId, state: TaskState) -> None:
        if self.get(tid) not in SETTLED:
            self.unsettled -= 1
        self.state[tid] = state
