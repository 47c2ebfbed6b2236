"""The process pool checkpoint creates, and how its workers are stopped.

**Process groups.** Each worker leads its own process group (:func:`checkpoint._worker.init_worker`),
so the signals a terminal sends to its foreground group (Ctrl-C, Ctrl-Z) reach only the
coordinator, which decides what happens to the workers -- as ninja and GNU make's job servers
do:

* **Interrupt** (Ctrl-C, SIGTERM, SIGHUP): the coordinator ends each worker's whole group,
  SIGTERM then SIGKILL (:func:`checkpoint._procs.end_groups`), so the child processes a task
  started die with its worker; so do those that left the group (found below the workers
  before they are ended, and then by the workers' mark, see :mod:`checkpoint._procs`). A task never sees the interrupt itself, so it cannot finish
  with a half-built value that would be stored.
* **The end of a run**: each worker exits once its libraries' exit handlers have run (a
  process pool a task left, as joblib's, shuts down: :func:`checkpoint._procs.run_exit_hooks`)
  and what its tasks left running in its group is ended
  (:func:`checkpoint._procs.end_leftovers`), so the run does not wait for
  it. An interrupt while the pool waits for its workers ends them as above.
* **Ctrl-Z** (SIGTSTP): while the pool runs, the coordinator stops the workers' groups
  (SIGSTOP), then itself; when continued (``fg``/``bg``) it continues them.

**Hard time limits.** A task with a time limit is stopped inside its worker (see
:mod:`checkpoint._worker`); if it does not stop within the grace period, the worker's
:mod:`faulthandler` watchdog (a C thread that needs no GIL) writes where every thread was
into the worker's record file and ends the worker. The pool is then broken like after any
worker death; :meth:`ProcessPoolAdapter.timed_out` tells the scheduler which task ran over its
limit, so that task fails as timed out and the other tasks in flight simply run again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from concurrent.futures import Future
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import _procs
from ._adapter import ExecutorAdapter, submit_pickled
from ._codec import Payload
from ._types import ExecutorKind, TaskId
from ._worker import RECORD_BYTES, Done, Outcome, WorkItem, init_worker, read_handed

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor


class ProcessPoolAdapter(ExecutorAdapter):
    """A process pool that checkpoint owns: workers in their own process groups."""

    kind = ExecutorKind.PICKLED
    hands_on = True

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._generation = 0
        """The pool generation the next :meth:`_new_pool` makes (the scheduler counts alike)."""
        self._token = f"{os.getpid()}-{id(self):x}"
        self._pids: set[int] = set()
        """The worker processes of the current pool (their pids are their groups' ids)."""
        self._tstp: Any = None
        """SIGTSTP's handler before ours, while ours is installed."""
        self._mark = ""
        """What the marks of the current pool's workers start with (see :func:`_procs.marked`)."""
        self.executor: ProcessPoolExecutor | None = self._new_pool()

    # --- the pool ---------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from .fingerprint import outside_dirs

        # What each worker needs when it starts (ctypes, for PR_SET_PDEATHSIG) and when it
        # ends (which of its modules are the project's, see init_worker) is made here once,
        # before the fork: a forked worker took 6-18 ms to import ctypes before its first
        # task, this process 2 ms; and the coordinator needs the project test anyway.
        if sys.platform.startswith("linux"):
            import ctypes  # noqa: F401
        outside_dirs()
        # fork keeps the original checkpoint-tool's scripts working (tasks defined at the top of a script without
        # a __main__ guard) and starts workers in milliseconds; elsewhere the platform default.
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        generation = self._generation
        self._generation += 1
        self._mark = f"{self._token}-{generation}:"
        return ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx,
            initializer=init_worker,
            initargs=(os.getpid(), self.records_dir(), generation, self._mark),
        )

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        assert self.executor is not None
        future = submit_pickled(self.executor, items, payloads, self.cwd)
        if len(self._pids) < self.workers:  # workers start with the first submissions
            self._pids.update(getattr(self.executor, "_processes", None) or ())
            if self._tstp is None:
                self._relay_stops()
        return future

    def shutdown(self, kill: bool = False) -> None:
        """Shut the pool down; with ``kill``, end every worker's process group first."""
        self._shutdown_pool(kill)
        self._restore_stops()
        shutil.rmtree(self.records_dir(), ignore_errors=True)

    def rebuild(self) -> bool:
        self._shutdown_pool(kill=True)
        self.executor = self._new_pool()
        return True

    def _shutdown_pool(self, kill: bool) -> None:
        while self.closers:
            self.closers.pop()()
        executor = self.executor
        if executor is None:
            return
        if not kill:
            # Waits until each worker has exited. Interrupted meanwhile (a worker that cannot
            # exit: a thread its task left running), this ends them (see the scheduler).
            executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
            return
        self.executor = None  # shut down once: a later plain shutdown() must not wait
        self._end_workers(executor)
        manager = getattr(executor, "_executor_manager_thread", None)
        executor.shutdown(wait=False, cancel_futures=True)
        if manager is not None and manager.is_alive():
            # Let the pool's manager thread wind down now: at interpreter exit CPython would
            # otherwise race it on a closing pipe and print a traceback.
            manager.join(timeout=5)

    def _end_workers(self, executor: ProcessPoolExecutor) -> None:
        """End every worker's process group and what their tasks started that left it."""
        processes = list((getattr(executor, "_processes", None) or {}).values())
        pids = self._pids | {p.pid for p in processes if p.pid is not None}
        # What tasks started that left their worker's group (GNU timeout, a new session,
        # a daemon): found below the workers while they live, by their mark afterwards.
        strays = _procs.descendants(pids)
        if os.name == "posix":  # a stopped group cannot act on SIGTERM
            _procs.signal_groups(pids, signal.SIGCONT)
        _procs.signal_groups(pids, signal.SIGTERM)
        _procs.signal_pids(strays, signal.SIGTERM)
        for proc in processes:
            if proc.is_alive():  # (without process groups, as on Windows: the worker alone)
                proc.kill()
            proc.join(timeout=5)  # reaped, so that an empty group reads as gone
        _procs.end_groups(pids)  # the tasks' children: a moment to exit, then SIGKILL
        _procs.kill_pids(strays)
        _procs.wait_gone(strays)
        _procs.end_marked(self._mark)
        self._pids.clear()

    # --- Ctrl-Z -----------------------------------------------------------------------

    def _relay_stops(self) -> None:
        """While the pool runs, Ctrl-Z stops the workers' groups too (they are not in the
        terminal's foreground group); installed from the main thread only."""
        if threading.current_thread() is not threading.main_thread() or os.name != "posix":
            return
        if signal.getsignal(signal.SIGTSTP) not in (signal.SIG_DFL, None):
            return  # the program handles it itself
        self._tstp = signal.signal(signal.SIGTSTP, self._on_stop)

    def _restore_stops(self) -> None:
        if self._tstp is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTSTP, self._tstp)
            self._tstp = None

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        pids = list(self._pids)
        _procs.signal_groups(pids, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        try:
            os.kill(os.getpid(), signal.SIGTSTP)  # stops here until SIGCONT
        finally:
            signal.signal(signal.SIGTSTP, self._on_stop)
            _procs.signal_groups(pids, signal.SIGCONT)

    # --- time limits ------------------------------------------------------------------

    def records_dir(self) -> str:
        """Where workers write what they are running under a time limit, and the results
        they handed over (made on first use)."""
        return os.path.join(tempfile.gettempdir(), f"checkpoint-limits-{self._token}")

    def handed(self, tid: TaskId) -> Done | None:
        return read_handed(self.records_dir(), tid)

    def timed_out(self, generation: int) -> dict[TaskId, tuple[float, str]]:
        """``{task id: (limit, where its threads were)}`` for the tasks whose worker, in the
        pool of ``generation``, ended them for running past their time limit and grace."""
        found: dict[TaskId, tuple[float, str]] = {}
        directory = self.records_dir()
        prefix = f"{generation}-"
        try:
            names = [n for n in os.listdir(directory) if n.startswith(prefix)]
        except OSError:
            return found
        for name in names:
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(directory, name), "rb") as f:
                    data = f.read()
                head, dump = data[:RECORD_BYTES].decode().split(), data[RECORD_BYTES:].decode(
                    errors="replace")
                if len(head) == 2 and dump.startswith("Timeout ("):
                    found[head[0]] = (float(head[1]), dump)
        return found
