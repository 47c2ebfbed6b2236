"""Tasks that gave no result run again, each for its own reason:

* **a retry**: a task failed and has attempts left (``run(retries=)``, ``@task(retries=)``);
  it is given the same values again, and its log keeps the failed attempts' output.
* **a dead worker**: a process pool breaks for every batch in flight, so which task killed
  its worker is unknown; they all run again, one at a time (``suspects``), and only the one
  whose worker dies alone fails. A task that ran past its hard time limit fails as timed
  out, and the others simply run again.
* **a damaged prerequisite**: a worker found a prerequisite's stored value damaged
  (:class:`~checkpoint._worker.NeedsPrerequisite`); the value is recomputed (once a run,
  :meth:`TaskFlow.damaged`) and the task runs once it is.
"""

from __future__ import annotations

import time
from collections import deque

from . import events as ev
from ._adapter import ExecutorAdapter
from ._flow import RunState, TaskFlow
from ._readiness import TaskState
from ._text import task_label
from ._types import TaskId
from ._worker import Failed, NeedsPrerequisite, Outcome, WorkItem, hard_timeout_outcome
from .errors import TaskFailedError, WorkerDiedError


class Recovery:
    """Retries, worker deaths and damaged prerequisites."""

    def __init__(self, state: RunState, flow: TaskFlow, adapter: ExecutorAdapter,
                 retries: int) -> None:
        self.nodes = state.nodes
        self.readiness = state.readiness
        self.values = state.values
        self.emit = state.emit
        self.flow = flow
        self.adapter = adapter
        self.retries = retries
        self.attempts: dict[TaskId, int] = {}
        self.prior_output: dict[TaskId, str] = {}
        """Output and tracebacks of a retried task's failed attempts, kept for its log."""
        self.suspects: deque[TaskId] = deque()
        """Tasks of batches lost with a dead worker: re-run one at a time to find the culprit."""
        self.generation = 0
        """How many times the process pool was rebuilt."""
        self.batches: dict[int, tuple[int, bool]] = {}
        """``id(items)`` of a batch in flight: (pool generation, submitted alone as a suspect);
        only once a pool was rebuilt or a suspect submitted."""

    # --- retries ----------------------------------------------------------------------

    def retry(self, out: Failed, error: BaseException) -> bool:
        """Queue ``out``'s task again if it has attempts left; return whether it was."""
        task = self.nodes[out.id].task
        allowed = max(self.retries, task.family.retries)
        if not allowed or self.flow.aborting or out.abandoned:
            return False
        attempt = self.attempts.get(out.id, 0) + 1
        if attempt > allowed:
            return False
        self.attempts[out.id] = attempt
        text = out.error_text or f"{type(error).__name__}: {error}"
        self.prior_output[out.id] = (
            self.prior_output.get(out.id, "") + out.output
            + f"--- attempt {attempt} of {allowed + 1} failed ---\n{text.rstrip()}\n"
        )
        if self.emit:
            self.emit(ev.TaskRetried(task, attempt, error, out.error_text, out.output))
        # Its prerequisites' values are still held (it has not settled): the next attempt is
        # given the same ones.
        self.readiness.state[out.id] = TaskState.READY
        self.flow.ready(out.id)
        return True

    def earlier_output(self, tid: TaskId) -> str:
        """The output of ``tid``'s failed attempts (once: it goes into its final log)."""
        return self.prior_output.pop(tid, "") if self.prior_output else ""

    # --- worker deaths ----------------------------------------------------------------

    def sent(self, items: list[WorkItem], isolated: bool) -> None:
        """A batch went to the executor (``isolated``: a suspect, alone)."""
        if isolated or self.generation:
            self.batches[id(items)] = (self.generation, isolated)

    def returned(self, items: list[WorkItem]) -> tuple[int, bool]:
        """A batch came back: the pool generation it was sent to, and whether it was a
        suspect sent alone."""
        return self.batches.pop(id(items), (0, False)) if self.batches else (0, False)

    def broken_pool(self, items: list[WorkItem], generation: int,
                    isolated: bool) -> list[Outcome] | None:
        """A worker process died with ``items`` in flight: the outcomes to record, or
        ``None`` when they are all to run again (each alone, to find the one that kills
        its worker)."""
        if generation == self.generation and self.adapter.rebuild():
            self.generation += 1
        elif generation == self.generation:  # not ours to rebuild: these tasks fail
            isolated = True
        # [timeouts] A worker ended itself because its task ran past its time limit: that
        # task fails as timed out; the others in flight are ready again.
        over_time = self.adapter.timed_out(generation)
        if over_time:
            innocent = [item for item in items if item.id not in over_time]
            self.flow.not_run(innocent)
            for item in innocent:
                if not item.after:  # (one in its producer's batch waits for it again)
                    self.flow.ready(item.id)
            return [
                hard_timeout_outcome(item.id, task_label(self.nodes[item.id].task),
                                     *over_time[item.id])
                for item in items if item.id in over_time
            ]
        if not isolated:
            # Which task killed the worker is unknown (a broken pool fails every batch in
            # flight): run each of them again, alone.
            self.flow.not_run(items)
            self.suspects.extend(item.id for item in items if not item.after)
            return None
        return self.lost(items, WorkerDiedError, "{task}: worker died while running it "
                         "(killed, crashed, e.g. a segmentation fault, or out of memory).")

    def lost(self, items: list[WorkItem], error: type[TaskFailedError],
             message: str) -> list[Outcome]:
        """Fail each task of a batch that never reported: ``message`` names it as ``{task}``."""
        outcomes: list[Outcome] = []
        for item in items:
            task = self.nodes[item.id].task
            text = message.format(task=task_label(task))
            outcomes.append(Failed(item.id, time.time(), 0.0, error(
                text, task=repr(task), family=task.family.name)))
        return outcomes

    # --- damaged prerequisites --------------------------------------------------------

    def needs(self, out: NeedsPrerequisite) -> None:
        """The task did not run: it runs again once the damaged value is recomputed (at
        once if it was recomputed since this task was handed the old one)."""
        tid, dep = out.id, out.dep
        self.values.given.pop(tid, None)
        self.readiness.state[tid] = TaskState.READY
        if (self.values.outdated(tid, dep) or self.flow.damaged(dep, out.text, tid)) and \
                self.readiness.wait_for(tid, self.nodes[tid].deps):
            self.flow.ready(tid)
