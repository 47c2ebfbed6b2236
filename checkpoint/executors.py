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
from typing import TYPE_CHECKING, Any

from ._worker import Outcome, Payload, WorkItem, init_worker, run_batch, run_pickled_batch
from .errors import UsageError

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor


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
        """Shut down an executor that checkpoint created (killing its workers if asked)."""
        while self.closers:
            self.closers.pop()()
        if self.executor is None or self._factory is None:
            return
        if kill and _is_process_pool(self.executor):
            processes = getattr(self.executor, "_processes", None) or {}
            for proc in list(processes.values()):
                if proc.is_alive():
                    proc.kill()
        manager = getattr(self.executor, "_executor_manager_thread", None)
        self.executor.shutdown(wait=not kill, cancel_futures=True)
        if kill and _is_process_pool(self.executor):
            for proc in list((getattr(self.executor, "_processes", None) or {}).values()):
                proc.join(timeout=5)
            # Let the pool's manager thread wind down now: at interpreter exit CPython would
            # otherwise race it on a closing pipe and print a traceback.
            if manager is not None and manager.is_alive():
                manager.join(timeout=5)
        self.executor = None  # shut down once: a later plain shutdown() must not wait


class _NeverRaised(Exception):
    """Stands for BrokenProcessPool in ``except`` clauses while no process pool exists."""


def broken_process_pool() -> type[Exception]:
    """``BrokenProcessPool``, for an ``except`` clause (evaluated only when one is reached),
    without importing :mod:`concurrent.futures.process` into runs that never use it."""
    module = sys.modules.get("concurrent.futures.process")
    return module.BrokenProcessPool if module is not None else _NeverRaised


def _is_process_pool(executor: Executor | None) -> bool:
    # Without importing concurrent.futures.process (and multiprocessing: ~12 ms) when no
    # process pool was ever made.
    module = sys.modules.get("concurrent.futures.process")
    return module is not None and isinstance(executor, module.ProcessPoolExecutor)


def _process_pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork keeps the seed's scripts working (tasks defined at the top of a script without a
    # __main__ guard) and starts workers in milliseconds; elsewhere use the platform default.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(os.getpid(),)
    )


def resolve_executor(executor: Executor | str | None, max_workers: int | None) -> ExecutorAdapter:
    """Make the adapter for an executor name or instance (default: a process pool)."""
    cpus = os.cpu_count() or 1
    if executor is None:
        executor = "process"
    if isinstance(executor, str):
        name = executor.lower()
        if name in ("process", "processes"):
            n = max_workers or cpus
            return ExecutorAdapter("pickled", n, _process_pool(n), lambda: _process_pool(n))
        if name in ("thread", "threads"):
            n = max_workers or min(32, cpus + 4)
            return ExecutorAdapter(
                "thread", n, ThreadPoolExecutor(n), lambda: ThreadPoolExecutor(n)
            )
        if name in ("inline", "sync", "synchronous"):
            return ExecutorAdapter("inline", 1, None)
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

