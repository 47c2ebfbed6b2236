"""Runs that share a cache: which tasks this run has locked, and which wait for another run.

See :mod:`checkpoint._runlock` for the protocol: a run alone takes no task locks; once
another run arrives, each task is locked before it is computed and until it is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ._runlock import CHECK_SECONDS, RunLock
from ._types import TaskId


class Coordination:
    """This run's locks on one store."""

    def __init__(self, root: Path) -> None:
        self.lock = RunLock(root)
        self.locking = not self.lock.solo
        """Whether another run shares the cache: tasks are locked before they run."""
        self.held: set[TaskId] = set()
        """Tasks this run has locked (until their result is stored or they fail)."""
        self.blocked: list[TaskId] = []
        """Ready tasks another run is computing (or one whose data directory they read):
        tried again shortly."""
        self.readers: dict[TaskId, int] = {}
        """Tasks whose files tasks of this run are reading (their locks are shared): how
        many readers."""
        self.reading: dict[TaskId, list[TaskId]] = {}
        """What each running task reads through (see :mod:`checkpoint._claims`)."""
        self.ended: list[TaskId] = []
        """What tasks that returned read through, to give back (``Claims.release``)."""
        self.last_check = time.perf_counter()

    @property
    def solo(self) -> bool:
        return self.lock.solo

    def check_due(self) -> bool:
        return self.lock.solo and time.perf_counter() - self.last_check >= CHECK_SECONDS

    def check_others(self, in_flight: Callable[[], Iterable[TaskId]], read: Callable[[], None],
                     before_switch: Callable[[], None]) -> None:
        """Alone so far: if another run has arrived, lock what is in flight, share the
        locks of the files it reads (``read``), and switch."""
        self.last_check = time.perf_counter()
        if not self.lock.solo or self.lock.alone():
            return
        before_switch()
        for tid in in_flight():
            if self.lock.try_task(tid):
                self.held.add(tid)
        read()
        self.locking = True
        self.lock.end_solo()

    def share(self, tid: TaskId) -> bool:
        """Share ``tid``'s lock while a task reads its files; False if another run is
        computing it (the reader waits)."""
        count = self.readers.get(tid, 0)
        if count == 0 and tid not in self.held and not self.lock.share_task(tid):
            return False
        self.readers[tid] = count + 1
        return True

    def unshare(self, tid: TaskId) -> None:
        count = self.readers.get(tid, 0) - 1
        if count > 0:
            self.readers[tid] = count
            return
        self.readers.pop(tid, None)
        if count == 0 and tid not in self.held:
            self.lock.release_task(tid)

    def end_reads(self, tid: TaskId) -> None:
        """``tid`` returned (or never ran): the locks of what it read are given back at the
        next ``Claims.release``."""
        if self.reading:
            self.ended += self.reading.pop(tid, ())

    def claim(self, tid: TaskId) -> bool:
        """Lock ``tid`` before computing it; False (and ``tid`` blocked) if another run has it."""
        if tid in self.held:
            return True
        if not self.lock.try_task(tid):
            self.blocked.append(tid)
            return False
        self.held.add(tid)
        return True

    def take_blocked(self) -> list[TaskId]:
        blocked, self.blocked = self.blocked, []
        return blocked

    def unlock(self, tid: TaskId) -> None:
        if tid in self.held:
            self.held.discard(tid)
            if tid in self.readers:  # still read by a task of this run
                self.lock.share_task(tid)
            else:
                self.lock.release_task(tid)

    def close(self) -> None:
        self.lock.close()
