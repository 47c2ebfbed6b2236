"""Which ready tasks go to a worker next, and in batches of what size.

Ready tasks wait in one list per queue. A queue's ``rate_limits`` entry caps the tasks it has
in flight (a batch of k tasks holds k slots until it returns). A batch holds one task until
its queue's tasks are known to be short; then it grows so that a batch takes about
``BATCH_SECONDS`` (at most ``MAX_BATCH``, and never more than a fair share of the ready
tasks), which spreads the cost of a submission over many tiny tasks.
"""

from __future__ import annotations

import math
from collections import deque

from ._types import TaskId

BATCH_SECONDS = 0.02
MAX_BATCH = 1024


class Admission:
    """Per-queue ready lists, slots and batch sizes."""

    def __init__(self, limits: dict[str, int], workers: int) -> None:
        self.limits = limits
        self.workers = workers
        self.ready: dict[str, deque[TaskId]] = {}
        self.running: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        """Moving average of each queue's task durations."""

    def push(self, tid: TaskId, queue: str) -> None:
        dq = self.ready.get(queue)
        if dq is None:
            dq = self.ready[queue] = deque()
        dq.append(tid)

    def take(self) -> list[TaskId]:
        """The next batch (its queue's slots taken), or ``[]`` when every ready task waits
        for a queue slot."""
        total = sum(len(dq) for dq in self.ready.values())
        if total == 0:
            return []
        fair_share = max(1, math.ceil(total / self.workers))
        for q, dq in self.ready.items():
            if not dq:
                continue
            limit = self.limits.get(q)
            slots = MAX_BATCH if limit is None else limit - self.running.get(q, 0)
            if slots <= 0:
                continue
            size = min(slots, self._batch_size(q), fair_share)
            batch = [dq.popleft() for _ in range(min(size, len(dq)))]
            self.running[q] = self.running.get(q, 0) + len(batch)
            return batch
        return []

    def hold(self, queue: str) -> None:
        """Take a slot of ``queue`` for a task submitted outside :meth:`take`."""
        self.running[queue] = self.running.get(queue, 0) + 1

    def release(self, queue: str) -> None:
        """A task of ``queue`` left its worker (or never reached one)."""
        self.running[queue] -= 1

    def observe(self, queue: str, duration: float) -> None:
        prev = self.mean.get(queue)
        self.mean[queue] = duration if prev is None else 0.7 * prev + 0.3 * duration

    def _batch_size(self, queue: str) -> int:
        mean = self.mean.get(queue)
        if mean is None:
            return 1
        return max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(mean, 1e-6))))
