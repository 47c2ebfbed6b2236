"""Concurrent runs on one cache: no task is computed by two runs at once.

Every run holds POSIX byte-range locks (``fcntl.lockf``) on one file, ``{root}/.lock``; the
kernel drops them when the process ends, however it ends, so a killed run never leaves a
lock behind. Byte 0 says "a run is here" (shared by every run), byte 1 says "a run is here
*alone*" (shared by runs in solo mode), and byte ``2 + n`` locks one task (``n`` from its id).

A run that finds itself alone (it can briefly turn its byte-0 lock exclusive) runs in
**solo** mode and takes no task locks at all: the common case costs a handful of system
calls per run. A solo run checks every ``CHECK_SECONDS`` whether another run has arrived;
if so it **switches**: it stores what it has finished, locks the tasks it has in flight,
then gives up its byte-1 lock. A run that is not alone first waits until no run holds byte
1 (every other run has switched), then locks each task before it computes it: if another
run holds the lock, the task waits (other tasks go on) and, once it gets the lock, the
store is read again, and a result the other run stored meanwhile is reused. A task's lock
is held until its result is stored, so the second run never misses it.

A task that may read the files of a task upstream of it (its data directory or declared
outputs; see :mod:`checkpoint._claims`) holds that task's byte *shared* while it runs: a
run that wants to recompute it (and empty its directory) waits until the readers are done,
and a reader waits while another run recomputes it.

Runs in one process share their POSIX locks (they would not see each other): start
concurrent runs as separate processes.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no coordination between runs
    fcntl = None  # type: ignore[assignment]

CHECK_SECONDS = 0.1
_PRESENT, _SOLO, _TASKS = 0, 1, 2


class RunLock:
    """The locks of one run on one store (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.fd = -1
        self.solo = True
        """Whether this run is alone and takes no task locks."""
        if fcntl is None:
            return
        try:
            self._join(root)
        except OSError:  # no lock support here (or no lock file): run without coordination
            self.close()
            self.solo = True

    def _join(self, root: Path) -> None:
        self.fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.lockf(self.fd, fcntl.LOCK_SH, 1, _PRESENT)
        fcntl.lockf(self.fd, fcntl.LOCK_SH, 1, _SOLO)  # tentatively alone
        if not self.alone():
            self.solo = False
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, _SOLO)
            # Wait until every solo run has noticed us and locked its running tasks.
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, _SOLO)
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, _SOLO)

    def alone(self) -> bool:
        """Whether no other run holds the store (two system calls)."""
        if fcntl is None or self.fd < 0:
            return True
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _PRESENT)
        except OSError:
            return False
        fcntl.lockf(self.fd, fcntl.LOCK_SH, 1, _PRESENT)
        return True

    def end_solo(self) -> None:
        """Leave solo mode (after locking the tasks in flight): waiting runs may start."""
        self.solo = False
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, _SOLO)

    @staticmethod
    def _offset(task_id: str) -> int:
        return _TASKS + int(task_id[:12], 16)

    def try_task(self, task_id: str) -> bool:
        """Lock one task without waiting; False when another run holds it."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(task_id))
        except OSError:
            return False
        return True

    def wait_task(self, task_id: str) -> None:
        """Lock one task, waiting while a run computes it or reads its data directory
        (``clear`` does, so that it never removes what a run is writing or reading)."""
        if fcntl is not None and self.fd >= 0:
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, self._offset(task_id))

    def share_task(self, task_id: str) -> bool:
        """Lock one task shared (its data directory is being read) without waiting; False
        when another run holds it exclusively (it is computing the task)."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, self._offset(task_id))
        except OSError:
            return False
        return True

    def release_task(self, task_id: str) -> None:
        fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self._offset(task_id))

    def close(self) -> None:
        """Drop every lock of this run."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
