"""A ready task handed the values it reads, or held back until it can start.

:class:`Handout` decides, for each task the submitter takes, whether it starts now: it must
still be ready, not wait for an abandoned attempt of its own (:meth:`Handout._held_back`),
hold its lock when other runs share the cache, and find every prerequisite's value intact.
Then the values it reads go into the batch's payloads and their stamps are recorded as
given (:meth:`RunValues.hand <checkpoint._values.RunValues.hand>`).
"""

from __future__ import annotations

import time

from ._claims import Claims
from ._codec import Payload
from ._flow import RunState, TaskFlow
from ._readiness import TaskState
from ._text import task_label
from ._types import TaskId
from ._worker import still_writing
from .errors import CorruptEntryError, TaskStillRunningError
from .task import Task


class Handout:
    """Whether a ready task can start now, and the values it is given."""

    def __init__(self, state: RunState, flow: TaskFlow, claims: Claims) -> None:
        self.nodes = state.nodes
        self.readiness = state.readiness
        self.admission = state.admission
        self.values = state.values
        self.coordination = state.coordination
        self.flow = flow
        self.claims = claims
        self.store_root = str(state.store.root)
        self.held_back: set[TaskId] = set()
        """Tasks that waited for an abandoned attempt of theirs (see :meth:`_held_back`)."""

    def hand(self, tid: TaskId, payloads: dict[TaskId, Payload], locking: bool) -> bool:
        """Make ``tid`` running, the values it reads in ``payloads``; False (its queue slot
        given back) if it cannot start now."""
        queue_name = self.nodes[tid].task.family.queue
        if self.readiness.get(tid) is not TaskState.READY or self._held_back(tid) or (
            locking and not self.claims.take(tid)
        ):
            self.admission.release(queue_name)
            return False
        given = self.gather(tid, payloads)
        if given is None:
            self.coordination.end_reads(tid)
            self.admission.release(queue_name)
            return False
        self.values.hand(tid, given)
        self.readiness.running(tid)
        return True

    def _held_back(self, tid: TaskId) -> bool:
        """Whether ``tid`` must wait (tried again shortly, like a task another run holds):
        an earlier attempt, abandoned at its time limit in a thread of this process, still
        runs and may still write the files this one would make (its data directory, its
        declared outputs); the first time, say so. Once that attempt has run its time limit
        once more after it was given up, it counts as hung: ``tid`` fails (only restarting
        the process ends the thread) and True is returned too."""
        node = self.nodes[tid]
        outputs = node.files.outputs if node.files is not None else ()
        attempt = still_writing(self.store_root, tid, outputs)
        if attempt is None:
            return False
        if time.monotonic() >= attempt.deadline:
            self.held_back.discard(tid)
            self.flow.fail_now(tid, _still_running(node.task, attempt.limit))
            return True
        if tid not in self.held_back:
            self.held_back.add(tid)
            import warnings

            warnings.warn(
                f"{node.task!r} ({node.task.family.name}) is still running in a thread of this "
                "process: an earlier run gave up on it at its time limit, and a thread cannot "
                "be stopped. This run waits for that attempt to end before running the task "
                "again, so that the two never write into the same files; if it still runs "
                f"{attempt.limit:g} s (its time limit) after it was given up, the task fails.",
                RuntimeWarning, stacklevel=2,
            )
        self.coordination.blocked.append(tid)
        return True

    def gather(self, tid: TaskId, payloads: dict[TaskId, Payload],
                handing: TaskId = "") -> dict[TaskId, str] | None:
        """Put the values ``tid`` reads into ``payloads`` and return their stamps; ``None``
        when it cannot start now (a damaged value is recomputed first, or it failed).
        ``handing``: a prerequisite whose value the batch hands over (not among them)."""
        node = self.nodes[tid]
        given: dict[TaskId, str] = {}
        for dep in node.deps:
            if dep == handing:
                continue
            if self.readiness.get(dep) is TaskState.DONE:
                try:
                    stamp, payload = self.values.get(dep)
                except CorruptEntryError as exc:
                    if not self.flow.damaged(dep, str(exc), tid):
                        return None
                else:
                    given[dep] = stamp
                    payloads[dep] = payload
                    continue
            self.readiness.wait_for(tid, node.deps)
            return None
        return given


def _still_running(task: Task[object], limit: float) -> TaskStillRunningError:
    return TaskStillRunningError(
        f"{task_label(task)} cannot run: an earlier attempt of it, given up at its time limit "
        f"of {limit:g} s, still runs in a thread of this process more than {limit:g} s later "
        "(it looks hung, and a thread cannot be stopped); running the task again would write "
        "into the same files. To end that thread, restart the Python process (a notebook's "
        "kernel, `checkpoint run --watch`), then run again. The earlier TaskTimeoutError's "
        "traceback shows where it hangs; on the process executor a task past its time limit "
        "is stopped.",
        task=repr(task), family=task.family.name, limit=limit,
    )

