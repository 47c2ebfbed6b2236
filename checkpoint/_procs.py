"""Process trees: ending the child processes a task started.

Worker processes lead their own process groups (see :mod:`checkpoint._pool`), so a worker and
everything its tasks started go with one ``killpg``. Threads have no group of their own: on
Linux, a thread's children are listed in ``/proc/self/task/<tid>/children``, which
:func:`thread_descendants` reads (elsewhere it finds nothing, and such children are left to
end by themselves).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable


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
                if child not in seen:
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
