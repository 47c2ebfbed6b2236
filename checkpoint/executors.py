"""Executors: how batches of tasks reach workers.

The scheduler talks to one :class:`ExecutorAdapter`, made from a name (``"process"``,
``"thread"``, ``"inline"``, ``"dask"``, ``"dask://host:port"``) or from any
:class:`concurrent.futures.Executor`. Thread and inline workers share the coordinator's
memory, so tasks go to them as they are; any other executor (processes, Dask) receives
each batch cloudpickled, so functions defined in ``__main__``, a notebook or a taskfile
travel by value. Dask lives in :mod:`checkpoint._dask`, imported only when asked for.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._worker import Outcome, Payload, WorkItem, run_batch, run_pickled_batch
from .errors import UsageError


class ExecutorAdapter:
    """A uniform ``submit(batch) -> Future[list[Outcome]]`` over an executor."""

    def __init__(
        self,
        kind: str,
        workers: int,
        executor: Executor | None,
        factory: Callable[[], Executor] | None = None,
    ) -> None:
        self.kind = kind
        """``"inline"``, ``"thread"`` or ``"pickled"`` (processes, Dask, anything else)."""
        self.workers = workers
        self.executor = executor
        self._factory = factory
        """Set when checkpoint created the executor: it may shut it down and rebuild it."""
        self.closers: list[Callable[[], Any]] = []
        """Run at shutdown, last added first."""
        self.cache_root: Path | None = None
        """The store's root, set by the scheduler (remote workers must see it for TaskDirectory)."""
        self.prefetch = 1
        """Batches the scheduler keeps in flight beyond ``workers``, queued for the next free
        worker (more where a round trip to the coordinator is slow, as with Dask)."""
        self.cwd = os.getcwd()
        """The working directory that tasks run in (the project root; see ``enter_directory``)."""

    @property
    def owned(self) -> bool:
        return self._factory is not None

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        """Start a batch; the future's result holds one outcome per item, in order."""
        if self.kind == "inline":
            fut: Future[list[Outcome]] = Future()
            fut.set_result(run_batch(items, payloads, True))
            return fut
        assert self.executor is not None
        if self.kind == "thread":
            return self.executor.submit(run_batch, items, payloads, True)
        import cloudpickle

        blob = cloudpickle.dumps((items, payloads))
        return self.executor.submit(run_pickled_batch, blob, self.cwd)

    def rebuild(self) -> bool:
        """Replace a broken executor that checkpoint owns; return whether it could."""
        if self._factory is None:
            return False
        self.shutdown(kill=True)
        self.executor = self._factory()
        return True

    def shutdown(self, kill: bool = False) -> None:
        """Shut down an executor that checkpoint created; with ``kill`` (an interrupt), do not
        wait for running tasks, and end the child processes its threads started."""
        while self.closers:
            self.closers.pop()()
        if self.executor is None or self._factory is None:
            return
        if kill and self.kind == "thread":
            from ._procs import kill_pids, thread_descendants
            from ._worker import task_threads

            threads = [*getattr(self.executor, "_threads", ()), *task_threads()]
            kill_pids(thread_descendants(t.native_id for t in threads))
        self.executor.shutdown(wait=not kill, cancel_futures=True)
        self.executor = None  # shut down once: a later plain shutdown() must not wait

    def timed_out(self, generation: int) -> dict[str, tuple[float, str]]:
        """Tasks whose worker process was ended for running past their time limit, in the
        pool of ``generation`` (see :class:`checkpoint._pool.ProcessPoolAdapter`)."""
        return {}


class _NeverRaised(Exception):
    """Stands for BrokenProcessPool in ``except`` clauses while no process pool exists."""


def broken_process_pool() -> type[Exception]:
    """``BrokenProcessPool``, for an ``except`` clause (evaluated only when one is reached),
    without importing :mod:`concurrent.futures.process` into runs that never use it."""
    module = sys.modules.get("concurrent.futures.process")
    return module.BrokenProcessPool if module is not None else _NeverRaised


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="checkpoint-worker")


def _report_crashes(adapter: ExecutorAdapter) -> ExecutorAdapter:
    """Tasks on threads (or inline) run in this process: if one crashes it (a segmentation
    fault in C code), :mod:`faulthandler` prints each thread's traceback to stderr, the
    crashing one's ending in the task's code (unless the program enabled it already)."""
    import faulthandler

    if not faulthandler.is_enabled():
        for stream in (sys.stderr, sys.__stderr__):
            try:
                faulthandler.enable(stream, all_threads=True)  # type: ignore[arg-type]
            except (AttributeError, OSError, TypeError, ValueError):  # no descriptor (Jupyter)
                continue
            adapter.closers.append(faulthandler.disable)
            break
    return adapter


def default_workers(name: str, max_workers: int | None) -> int:
    """How many workers the executor called ``name`` gets (0: as many as a Dask cluster has)."""
    cpus = os.cpu_count() or 1
    name = name.lower()
    if name in ("process", "processes"):
        return max_workers or cpus
    if name in ("thread", "threads"):
        return max_workers or min(32, cpus + 4)
    if name in ("inline", "sync", "synchronous"):
        return 1
    return max_workers or 0


def resolve_executor(executor: Executor | str | None, max_workers: int | None) -> ExecutorAdapter:
    """Make the adapter for an executor name or instance (default: a process pool)."""
    cpus = os.cpu_count() or 1
    if executor is None:
        executor = "process"
    if isinstance(executor, str):
        name = executor.lower()
        if name in ("process", "processes"):
            from ._pool import ProcessPoolAdapter

            return ProcessPoolAdapter(default_workers(name, max_workers))
        if name in ("thread", "threads"):
            n = default_workers(name, max_workers)
            return _report_crashes(
                ExecutorAdapter("thread", n, _thread_pool(n), lambda: _thread_pool(n)))
        if name in ("inline", "sync", "synchronous"):
            return _report_crashes(ExecutorAdapter("inline", 1, None))
        if name == "dask" or name.startswith(("dask://", "tcp://")):
            from . import _dask

            return _dask.adapter_for_name(executor, max_workers)
        raise UsageError(
            f"Unknown executor {executor!r}. Use one of: process, thread, inline, dask, "
            "dask://HOST:PORT, or pass a concurrent.futures.Executor."
        )
    if type(executor).__module__.split(".", 1)[0] == "distributed":
        from . import _dask

        return _dask.adapter_for_executor(executor, max_workers)
    if isinstance(executor, ThreadPoolExecutor):
        return ExecutorAdapter("thread", getattr(executor, "_max_workers", cpus), executor)
    workers = getattr(executor, "_max_workers", None)
    if not isinstance(workers, int):
        workers = max_workers or cpus
    return ExecutorAdapter("pickled", workers, executor)

