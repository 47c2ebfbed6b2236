"""The executor adapter protocol: what the scheduler needs from an executor.

One class per executor (:mod:`checkpoint.executors` makes them from a name or an instance):
:class:`InlineAdapter` and the thread adapter run batches in this process, the process
pool (:mod:`checkpoint._pool`), the Dask adapter (:mod:`checkpoint._dask`) and
:class:`PickledAdapter` (any other :class:`concurrent.futures.Executor`) send them
cloudpickled. Each says which of the three kinds it is; the scheduler asks nothing else
about where tasks run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import ClassVar

from ._codec import Payload
from ._types import ExecutorKind
from ._worker import Done, Outcome, WorkItem, run_batch, run_pickled_batch


class ExecutorAdapter:
    """A uniform ``submit(batch) -> Future[list[Outcome]]`` over an executor."""

    kind: ClassVar[ExecutorKind]
    hands_on: ClassVar[bool] = False
    """Whether a batch may run a task right after the task it reads, with its value handed
    over in memory (see :meth:`checkpoint._submission.Submitter.submit`): for workers
    where a value read back from the store costs a copy that a hand-over does not."""

    manifests: ClassVar[bool] = False
    """Whether each batch carries the manifest of the code and values this run fingerprinted
    (workers that may outlive a run: see :mod:`checkpoint._workercode`), so a task's family
    is fingerprinted before its first batch is sent, not while it runs."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self.closers: list[Callable[[], object]] = []
        """Run at shutdown, last added first."""
        self.cache_root: Path | None = None
        """The store's root, set by the scheduler (remote workers must see it for TaskDirectory)."""
        self.cwd = os.getcwd()
        """The working directory that tasks run in (the project root; see ``enter_directory``)."""

    @property
    def workers(self) -> int:
        """How many batches run at once (read before each submission: a cluster may grow)."""
        return self._workers

    @property
    def prefetch(self) -> int:
        """Batches the scheduler keeps in flight beyond ``workers``, queued for the next free
        worker (more where a round trip to the coordinator is slow, as with Dask)."""
        return 1

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        """Start a batch; the future's result holds one outcome per item, in order."""
        raise NotImplementedError

    def rebuild(self) -> bool:
        """Replace a broken executor that checkpoint owns; return whether it could."""
        return False

    def shutdown(self, kill: bool = False) -> None:
        """Release what checkpoint created; with ``kill`` (an interrupt), do not wait for
        running tasks, and end the child processes they started where it can."""
        while self.closers:
            self.closers.pop()()

    def handed(self, tid: str) -> Done | None:
        """The result of ``tid``, noted by the worker that handed its value over to a reader
        still running in the same batch (:func:`checkpoint._worker.note_handed`), if any."""
        return None

    def timed_out(self, generation: int) -> dict[str, tuple[float, str]]:
        """Tasks whose worker process was ended for running past their time limit, in the
        pool of ``generation`` (see :class:`checkpoint._pool.ProcessPoolAdapter`)."""
        return {}


class InlineAdapter(ExecutorAdapter):
    """Runs each batch in the coordinator, when it is submitted."""

    kind = ExecutorKind.INLINE

    def __init__(self) -> None:
        super().__init__(1)

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        fut: Future[list[Outcome]] = Future()
        fut.set_result(run_batch(items, payloads, True, self.cwd))
        return fut


class PoolAdapter(ExecutorAdapter):
    """An executor given by the caller, or made (and remade after a crash) by ``factory``."""

    def __init__(self, workers: int, executor: Executor | None,
                 factory: Callable[[], Executor] | None = None) -> None:
        super().__init__(workers)
        self.executor = executor
        self._factory = factory
        """Set when checkpoint created the executor: it may shut it down and rebuild it."""

    def rebuild(self) -> bool:
        if self._factory is None:
            return False
        self.shutdown(kill=True)
        self.executor = self._factory()
        return True

    def shutdown(self, kill: bool = False) -> None:
        super().shutdown(kill)
        if self.executor is None or self._factory is None:
            return
        self.executor.shutdown(wait=not kill, cancel_futures=True)
        self.executor = None  # shut down once: a later plain shutdown() must not wait


class PickledAdapter(PoolAdapter):
    """Any :class:`concurrent.futures.Executor` whose workers are other processes: each
    batch goes cloudpickled, so taskfile and ``__main__`` code travels by value."""

    kind = ExecutorKind.PICKLED
    manifests = True

    def __init__(self, workers: int, executor: Executor | None,
                 factory: Callable[[], Executor] | None = None) -> None:
        from ._workercode import CoordinatorCode

        super().__init__(workers, executor, factory)
        self._code = CoordinatorCode()
        """What the workers' project modules must be (they may have outlived earlier runs)."""

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        assert self.executor is not None
        return submit_pickled(self.executor, items, payloads, self.cwd, self._code.get())


def submit_pickled(executor: Executor, items: list[WorkItem], payloads: dict[str, Payload],
                   cwd: str, code: dict[str, str] | None = None) -> Future[list[Outcome]]:
    """Send a batch to ``executor`` cloudpickled (taskfile and ``__main__`` code travels by
    value), to run in ``cwd``; ``code``: the project modules the workers must have (see
    :mod:`checkpoint._workercode`)."""
    import cloudpickle

    blob = cloudpickle.dumps((items, payloads))
    if code:
        return executor.submit(run_pickled_batch, blob, cwd, code)
    return executor.submit(run_pickled_batch, blob, cwd)


class _NeverRaised(Exception):
    """Stands for BrokenProcessPool in ``except`` clauses while no process pool exists."""


def broken_process_pool() -> type[Exception]:
    """``BrokenProcessPool``, for an ``except`` clause (evaluated only when one is reached),
    without importing :mod:`concurrent.futures.process` into runs that never use it."""
    module = sys.modules.get("concurrent.futures.process")
    return module.BrokenProcessPool if module is not None else _NeverRaised
