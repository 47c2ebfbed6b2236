"""Process trees: ending the child processes a task started.

Worker processes lead their own process groups (see :mod:`checkpoint._pool`), so a worker and
everything its tasks started go with one ``killpg``. Threads have no group of their own: on
Linux, a thread's children are listed in ``/proc/self/task/<tid>/children``, which
:func:`thread_descendants` reads (elsewhere it finds nothing, and such children are left to
end by themselves).

A worker dies with its coordinator, even one killed with ``kill -9`` (Linux
``PR_SET_PDEATHSIG``), but the processes its tasks started would be left to init and live
on, writing into outputs that the next run makes again: :func:`guard_group` gives each
worker a guard process that ends the worker's whole group when the worker dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable

_guard_pid = 0
"""This process's guard (:func:`guard_group`), 0 if it has none."""


def signal_groups(pgids: Iterable[int], signum: int) -> None:
    """Send ``signum`` to each process group (gone groups are skipped)."""
    if not hasattr(os, "killpg"):
        return
    for pgid in pgids:
        with contextlib.suppress(OSError):  # no such group (any more), or not ours
            os.killpg(pgid, signum)


def groups_alive(pgids: Iterable[int]) -> list[int]:
    """The groups that still have a running member. Linux: read from ``/proc`` (zombies do
    not count: an orphan is reaped by init, which in some containers never happens);
    elsewhere any member counts."""
    pgids = list(pgids)
    if os.path.isdir("/proc/self/task"):
        wanted, alive = set(pgids), set()
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat", "rb") as f:
                        fields = f.read().rsplit(b")", 1)[1].split()
                except OSError:
                    continue
                if fields[0] != b"Z" and int(fields[2]) in wanted:
                    alive.add(int(fields[2]))
        return [p for p in pgids if p in alive]
    if not hasattr(os, "killpg"):
        return []
    found = []
    for pgid in pgids:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            continue
        except OSError:  # EPERM: a member exists that is not ours
            pass
        found.append(pgid)
    return found


def end_groups(pgids: Iterable[int], grace: float = 0.5) -> None:
    """SIGTERM each group, give its members ``grace`` seconds to exit, then SIGKILL the rest.

    A group outlives its leader while any member remains, and Linux does not reuse a pid
    that is still some group's id, so a dead worker's pid still names its leftover children.
    """
    if not hasattr(os, "killpg"):
        return
    pgids = list(pgids)
    signal_groups(pgids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pgids and time.monotonic() < deadline:
        time.sleep(0.01)
        pgids = groups_alive(pgids)
    signal_groups(pgids, signal.SIGKILL)


def _children(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def descendants(pids: Iterable[int]) -> list[int]:
    """Every process below ``pids`` (Linux: ``/proc``; elsewhere none), parents first."""
    found: list[int] = []
    stack = list(pids)
    seen = set(stack)
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            for child in _children(f"/proc/{pid}/task/{tid}/children"):
                if child not in seen and child != _guard_pid:  # the guard is not the task's
                    seen.add(child)
                    found.append(child)
                    stack.append(child)
    return found


def thread_children(native_ids: Iterable[int | None]) -> list[int]:
    """The processes these threads of this process started (Linux only)."""
    me = os.getpid()
    return [c for tid in native_ids if tid for c in _children(f"/proc/{me}/task/{tid}/children")]


def thread_descendants(native_ids: Iterable[int | None]) -> list[int]:
    """The processes started by these threads of this process, and theirs (Linux only)."""
    direct = thread_children(native_ids)
    return direct + descendants(direct)


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each process (ids of processes that are gone are skipped)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def guard_group(prctl: Callable[..., int]) -> None:
    """Linux, in a process that leads its own group (a pool worker): fork a guard that
    SIGKILLs the whole group, itself included, when this process dies other than by exiting
    normally. ``prctl`` is libc's.

    The guard learns of the death from a signal (``PR_SET_PDEATHSIG``, SIGUSR1, blocked and
    waited for: no Python code of the worker's runs in it). A worker that exits normally
    ends its guard first (a :mod:`multiprocessing` finalizer), so the processes a task left
    running on purpose outlive a run that ends well, as before. A SIGTERM to the group (the
    coordinator ending it, see :func:`end_groups`) ends the guard at once.
    """
    global _guard_pid
    worker = os.getpid()
    if os.getpgrp() != worker:
        return  # not the leader: the group is someone else's
    pid = os.fork()
    if pid:
        from multiprocessing import util

        _guard_pid = pid
        util.Finalize(None, _end_guard, exitpriority=0)
        return
    try:  # the guard: it never returns to the caller's code
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        waited = {signal.SIGUSR1, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        prctl(1, signal.SIGUSR1, 0, 0, 0)  # PR_SET_PDEATHSIG
        while os.getppid() == worker:  # (a stray SIGUSR1 while the worker lives is ignored)
            if signal.sigwait(waited) == signal.SIGTERM:
                os._exit(0)
        os.killpg(worker, signal.SIGKILL)
    finally:
        os._exit(0)


def _end_guard() -> None:
    global _guard_pid
    pid, _guard_pid = _guard_pid, 0
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
