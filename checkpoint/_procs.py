"""Process trees: ending the child processes a task started.

Worker processes lead their own process groups (see :mod:`checkpoint._pool`), so a worker and
everything its tasks started go with one ``killpg`` -- except the processes that moved to a
group or session of their own (GNU ``timeout``, ``start_new_session=True``, daemons). On
Linux those are still found: as *descendants* of their worker (:func:`descendants`; a pool
worker is a child subreaper, so a grandchild whose parent exited stays below it), and by the
worker's mark, a ``CHECKPOINT_WORKER`` variable in the environment that every program a task
starts inherits (:func:`mark_worker`, :func:`marked`), which still names them once their
worker is dead and they were handed to init. Threads have no group of their own: a thread's
children are listed in ``/proc/self/task/<tid>/children``, which :func:`thread_descendants`
reads. Elsewhere none of this is found, and such processes are left to end by themselves.

A worker dies with its coordinator, even one killed with ``kill -9`` (Linux
``PR_SET_PDEATHSIG``), but the processes its tasks started would be left to init and live
on, writing into outputs that the next run makes again: :func:`guard_group` gives each
worker a guard process that ends them when the worker dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_guard_pid = 0
"""This process's guard (:func:`guard_group`), 0 if it has none."""

MARK = "CHECKPOINT_WORKER"
"""The environment variable that marks the processes a worker's tasks started."""

LINUX_PROC = os.path.isdir("/proc/self/task")


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


class _ChildrenFile(threading.local):
    """This thread's ``/proc/.../children`` file, kept open: reading it again costs well
    under a microsecond (opening it, several)."""

    key: tuple[int, int] = (0, 0)
    fd: _Fd | None = None


class _Fd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __del__(self) -> None:  # the thread ended (its locals go) or the process forked
        with contextlib.suppress(OSError):
            os.close(self.fd)


_own = _ChildrenFile()


def own_children() -> list[int]:
    """The processes this thread started that still exist (Linux; elsewhere none)."""
    if not LINUX_PROC:
        return []
    key = (os.getpid(), threading.get_native_id())
    if _own.key != key or _own.fd is None:
        try:
            _own.fd = _Fd(os.open(f"/proc/self/task/{key[1]}/children", os.O_RDONLY))
        except OSError:
            return []
        _own.key = key
    try:
        return [int(p) for p in os.pread(_own.fd.fd, 65536, 0).split()]
    except (OSError, ValueError):
        return []


def attempt_start() -> frozenset[int]:
    """What this thread's process tree holds as a task attempt starts (see
    :func:`end_attempt`): usually nothing, found in about a microsecond."""
    kids = [p for p in own_children() if p != _guard_pid]
    return frozenset(kids + descendants(kids)) if kids else frozenset()


def end_attempt(before: frozenset[int], whole_process: bool) -> list[int]:
    """End the processes a failed task attempt started: what is below this thread (the whole
    process, for a worker process whose tasks all run in it) and was not at its start
    (``before``, from :func:`attempt_start`), whatever group or session they moved to.
    Waits until they are gone, so that none writes after this returns; returns them."""
    if not LINUX_PROC:
        return []
    if whole_process:
        found = descendants([os.getpid()])
    else:
        found = thread_descendants([threading.get_native_id()])
    pids = [p for p in found if p not in before]
    if pids:
        kill_pids(pids)
        wait_gone(pids)
    return pids


def _state(pid: int) -> bytes:
    """A process's state letter (``b""``: gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b""


def wait_gone(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """Wait until these processes are gone or zombies (Linux); those still running."""
    left = list(pids)
    deadline = time.monotonic() + timeout
    while left:
        left = [p for p in left if _state(p) not in (b"", b"Z", b"X")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    return left


def mark_worker(prefix: str) -> str:
    """Mark this worker process: every program its tasks start inherits ``CHECKPOINT_WORKER``
    (see :func:`marked`); returns the mark, ``prefix`` followed by this process's id and a
    slash (so that no worker's mark starts with another's)."""
    mark = f"{prefix}{os.getpid()}/"
    os.environ[MARK] = mark
    return mark


def marked(prefix: str) -> list[int]:
    """The processes of this user whose environment has a ``CHECKPOINT_WORKER`` mark that
    starts with ``prefix`` (Linux; a program that cleared its environment is not found).

    ``/proc/PID/environ`` is the environment a program was started with: a process a task
    forked without starting another program (``multiprocessing``'s fork) is not marked."""
    if not LINUX_PROC or not prefix:
        return []
    needle = b"\0" + f"{MARK}={prefix}".encode()
    uid, me = os.getuid(), os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in b"\0" + env:
            found.append(int(name))
    return found


def end_marked(prefix: str, rounds: int = 20) -> list[int]:
    """SIGKILL every process :func:`marked` finds with ``prefix``, again until none is left
    (one may start another while the first round ends it); returns them."""
    ended: list[int] = []
    for _ in range(rounds):
        pids = marked(prefix)
        if not pids:
            break
        kill_pids(pids)
        wait_gone(pids, timeout=1.0)
        ended += pids
    return ended


TRACKERS = (
    ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
    ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
    ("joblib.externals.loky.backend.resource_tracker", "_resource_tracker", "_pid"),
    ("loky.backend.resource_tracker", "_resource_tracker", "_pid"),
)
"""Helper processes of this process's libraries that end by themselves when it exits (at
the end of their pipe) and clean up as they do: not ended by :func:`end_leftovers`."""


def _helpers() -> set[int]:
    import sys

    found = set()
    for module, holder, attribute in TRACKERS:
        pid = getattr(getattr(sys.modules.get(module), holder, None), attribute, None)
        if isinstance(pid, int):
            found.add(pid)
    return found


def run_exit_hooks() -> None:
    """Run now, each once, what libraries registered to run as the interpreter exits: first
    what runs before its threads are joined (``threading._register_atexit``: how
    ``concurrent.futures`` and joblib's loky shut their process pools down), then
    :mod:`atexit`'s handlers (joblib deletes its memory-mapping folders in one).

    A pool worker (a :mod:`multiprocessing` child) ends by ``os._exit``: it never runs
    :mod:`atexit`'s handlers, and runs the former only after joining its own children, so a
    process pool a task left running was waited for (loky's idle workers end after 300 s, a
    standard library pool's never). The worker drops the handlers it inherited from the
    coordinator as it starts (:func:`checkpoint._worker.init_worker`)."""
    import atexit
    import threading

    hooks = getattr(threading, "_threading_atexits", None)
    while isinstance(hooks, list) and hooks:
        hook = hooks.pop()  # last registered first, as the interpreter does
        with contextlib.suppress(Exception):
            hook()
    atexit._run_exitfuncs()  # (prints a handler's exception, as at exit, and goes on)


def end_leftovers(grace: float = 0.5) -> list[int]:
    """In a pool worker exiting normally (the pool shuts down): end what its tasks left
    running, so that neither the worker's exit (which joins its :mod:`multiprocessing`
    children) nor the run waits for it. Called after the libraries shut their pools down
    (:func:`run_exit_hooks`, then :mod:`multiprocessing`'s own finalizers): the processes
    still in this process's group (Linux) get SIGTERM, and SIGKILL after ``grace`` seconds;
    then any :mod:`multiprocessing` child left. Processes that moved to a group or session
    of their own (a server started with ``start_new_session=True``, a daemon) outlive the
    run, as meant. Returns those ended."""
    import multiprocessing

    pids: list[int] = []
    if LINUX_PROC:
        group, spare = os.getpgrp(), _helpers()
        pids = [p for p in descendants([os.getpid()]) if p not in spare and _group(p) == group]
    if pids:
        signal_pids(pids, signal.SIGTERM)
        left = wait_gone(pids, grace)
        kill_pids(left)
        wait_gone(left)
    for child in multiprocessing.active_children():  # (joined by the worker's exit)
        child.kill()
        if child.pid not in pids:
            pids.append(child.pid or 0)
    return pids


def _group(pid: int) -> int:
    """A process's group id (0: gone)."""
    try:
        return os.getpgid(pid)
    except OSError:
        return 0


def set_subreaper(prctl: Callable[..., int]) -> None:
    """Linux: make this process a child subreaper, so that a process its tasks started whose
    parent exited (a double fork, a daemon) is handed to it rather than to init, and stays
    among its :func:`descendants`."""
    prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def thread_children(native_ids: Iterable[int | None]) -> list[int]:
    """The processes these threads of this process started (Linux only)."""
    me = os.getpid()
    return [c for tid in native_ids if tid for c in _children(f"/proc/{me}/task/{tid}/children")]


def thread_descendants(native_ids: Iterable[int | None]) -> list[int]:
    """The processes started by these threads of this process, and theirs (Linux only)."""
    direct = thread_children(native_ids)
    return direct + descendants(direct)


def signal_pids(pids: Iterable[int], signum: int) -> None:
    """Send ``signum`` to each process (ids of processes that are gone are skipped)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def kill_pids(pids: Iterable[int]) -> None:
    """SIGKILL each process (ids of processes that are gone are skipped)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def guard_group(prctl: Callable[..., int], mark: str = "") -> None:
    """Linux, in a process that leads its own group (a pool worker): fork a guard that
    SIGKILLs the whole group, itself included, when this process dies other than by exiting
    normally, and before that every process that carries this worker's ``mark`` (see
    :func:`mark_worker`): those that left the group. ``prctl`` is libc's.

    The guard learns of the death from a signal (``PR_SET_PDEATHSIG``, SIGUSR1, blocked and
    waited for: no Python code of the worker's runs in it). A worker that exits normally
    ends what its tasks left in its group (:func:`end_leftovers`), then its guard (both
    :mod:`multiprocessing` finalizers), so the processes a task left running on purpose in a
    session of their own outlive a run that ends well. A SIGTERM to the group (the
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
        if mark:
            end_marked(mark)
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


# --- a guard for a process that does not lead its group (a Dask worker) -------------------

GUARD_CODE = (
    "import importlib.util as u, sys\n"
    "s = u.spec_from_file_location('checkpoint_procs_guard', sys.argv[1])\n"
    "m = u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "m.guard_marked(int(sys.argv[2]), sys.argv[3], sys.argv[4])\n"
)
"""What :func:`start_guard` runs: this module alone, loaded from its file (not the package)."""

_started_guard: Any = None


def guards_dir() -> str:
    """Where guards of this user keep their lock files (see :func:`wait_for_guards`)."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"checkpoint-guards-{os.getuid()}")


def start_guard(prefix: str) -> None:
    """Linux, once per process (a Dask worker, which shares its process group with others):
    mark the process (:func:`mark_worker`) and start a guard program that ends every process
    carrying the mark when this process dies other than by exiting normally. While it does,
    it holds a lock that :func:`wait_for_guards` waits for."""
    global _started_guard
    if _started_guard is not None or not LINUX_PROC:
        return
    import subprocess
    import sys

    directory = guards_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    mark = mark_worker(prefix)
    env = {k: v for k, v in os.environ.items() if k != MARK}
    guard = subprocess.Popen(
        [sys.executable, "-I", "-c", GUARD_CODE, __file__, str(os.getpid()), mark, directory],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    assert guard.stdout is not None
    with guard.stdout:
        guard.stdout.readline()  # armed (or gone: then unguarded, as before)
    _started_guard = guard
    import atexit
    from multiprocessing import util

    util.Finalize(None, stop_guard, exitpriority=0)  # a multiprocessing child's normal exit
    atexit.register(stop_guard)


def stop_guard() -> None:
    """End this process's guard program (a normal exit: what tasks left running stays)."""
    global _started_guard
    guard, _started_guard = _started_guard, None
    if guard is not None:
        with contextlib.suppress(OSError):
            guard.terminate()
            guard.wait(5)


def guard_marked(worker: int, mark: str, directory: str) -> None:
    """The guard program (see :func:`start_guard`): wait for ``worker`` to die; unless told
    to stop first (SIGTERM), end every process carrying ``mark``, then release the lock."""
    import ctypes
    import fcntl
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    waited = {signal.SIGUSR1, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1, 0, 0, 0)  # PR_SET_PDEATHSIG
    path = os.path.join(directory, f"{worker}-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    sys.stdout.write("armed\n")
    sys.stdout.close()
    stopped = False
    while os.getppid() == worker:  # (the signal also comes when the thread that started us ends)
        if signal.sigwait(waited) == signal.SIGTERM:
            stopped = True
            break
    if not stopped:
        end_marked(mark)
    with contextlib.suppress(OSError):
        os.unlink(path)
    os._exit(0)


def wait_for_guards(timeout: float = 30.0) -> None:
    """Wait while the guard of a dead process of this user is still ending the processes
    it guarded (see :func:`start_guard`): a task that the dead process was running may be
    about to run again here, and they would write into its outputs. Clears stale locks."""
    if not LINUX_PROC:
        return
    import fcntl

    directory = guards_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        worker = int(name.split("-")[0]) if name.split("-")[0].isdigit() else 0
        if not worker or _state(worker) not in (b"", b"Z", b"X"):
            continue  # its process lives: nothing to wait for
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
            with contextlib.suppress(OSError):
                os.unlink(path)  # its guard is done (or was killed)
        finally:
            os.close(fd)
