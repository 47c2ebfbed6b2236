"""Executors: how batches of tasks reach workers.

The scheduler talks to one :class:`~checkpoint._adapter.ExecutorAdapter` (one class per
executor), made here from a name (``"process"``, ``"thread"``, ``"inline"``, ``"dask"``, ``"dask://host:port"``) or from any
:class:`concurrent.futures.Executor`. Thread and inline workers share the coordinator's
memory, so tasks go to them as they are; any other executor (processes, Dask) receives
each batch cloudpickled, so functions defined in ``__main__``, a notebook or a taskfile
travel by value. Dask lives in :mod:`checkpoint._dask`, imported only when asked for.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from ._adapter import ExecutorAdapter, InlineAdapter, PickledAdapter, PoolAdapter
from ._codec import Payload
from ._types import ExecutorKind, executor_name
from ._worker import Outcome, WorkItem, run_batch
from .errors import UsageError


class ThreadAdapter(PoolAdapter):
    """Threads of this process: batches go as they are (tasks share its memory)."""

    kind = ExecutorKind.THREAD

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        assert self.executor is not None
        return self.executor.submit(run_batch, items, payloads, True, self.cwd)

    def shutdown(self, kill: bool = False) -> None:
        """With ``kill``, first end the child processes that the tasks' threads started."""
        if kill and self.executor is not None and self._factory is not None:
            from ._procs import kill_pids, thread_descendants
            from ._worker import task_threads

            threads = [*getattr(self.executor, "_threads", ()), *task_threads()]
            kill_pids(thread_descendants(t.native_id for t in threads))
        super().shutdown(kill)


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
    """How many workers the executor called ``name`` gets (0: as many as a Dask cluster has).

    Raises:
        UsageError: not an executor name.
    """
    cpus = os.cpu_count() or 1
    kind = _canonical(name)
    if kind == "process":
        return max_workers or cpus
    if kind == "thread":
        return max_workers or min(32, cpus + 4)
    if kind == "inline":
        return 1
    return max_workers or 0


def _canonical(name: str) -> str:
    try:
        return executor_name(name)
    except ValueError as exc:
        raise UsageError(f"Unknown executor: {exc}, or pass a concurrent.futures.Executor.") from None


def resolve_executor(executor: Executor | str | None, max_workers: int | None) -> ExecutorAdapter:
    """Make the adapter for an executor name or instance (default: a process pool)."""
    cpus = os.cpu_count() or 1
    if executor is None:
        executor = "process"
    if isinstance(executor, str):
        name = _canonical(executor)
        if name == "process":
            from ._pool import ProcessPoolAdapter

            return ProcessPoolAdapter(default_workers(name, max_workers))
        if name == "thread":
            n = default_workers(name, max_workers)
            return _report_crashes(ThreadAdapter(n, _thread_pool(n), lambda: _thread_pool(n)))
        if name == "inline":
            return _report_crashes(InlineAdapter())
        from . import _dask

        return _dask.adapter_for_name(executor, max_workers)
    if type(executor).__module__.split(".", 1)[0] == "distributed":
        from . import _dask

        return _dask.adapter_for_executor(executor, max_workers)
    if isinstance(executor, ThreadPoolExecutor):
        return ThreadAdapter(getattr(executor, "_max_workers", cpus), executor)
    workers = getattr(executor, "_max_workers", None)
    if not isinstance(workers, int):
        workers = max_workers or cpus
    return PickledAdapter(workers, executor)

