"""The Dask distributed executor, imported on first use (``import checkpoint`` never imports it).

``--executor dask`` starts a :class:`distributed.LocalCluster` (one single-threaded worker
process per ``-j`` slot); ``dask://HOST:PORT`` (or ``tcp://HOST:PORT``) connects to a running
scheduler, ``dask:///path/scheduler.json`` to the one a scheduler file names; from Python,
``run(executor=client.get_executor())`` (or a ``Client``) uses an existing client. Whatever
checkpoint creates it closes at the end of the run; what the caller passed stays open.

Batches travel as in a process pool (the scheduler above is unchanged, so rate limits,
failures, keep-going, interrupts and events behave the same), with three Dask specifics:

* **Project code travels.** Workers may run on other hosts, without the taskfile's
  directory on their ``sys.path``. The taskfile module, and the plain modules next to it
  or next to the main script, are pickled whole (by value) once per run, scattered to the
  workers and installed in their ``sys.modules`` before a batch is unpickled; batches and
  results then name functions and classes by reference, exactly as in a local run (so a
  stored instance of a taskfile class loads as that class later, and values stored by a
  local run load on the workers). A module that cannot be pickled whole (an open file at
  module level) is instead pickled by value into each batch that uses it.
* **Shared cache.** Workers never open the store's index (SQLite must never be opened over
  NFS by several hosts): the coordinator alone writes it. Once per run, before the first
  batch, every worker is asked whether it sees a marker file written in the cache. If all
  do, workers write large results straight into the cache and read large prerequisites
  from it, as local workers do; if not, those payloads travel through the coordinator, and
  a task that uses ``TaskDirectory()`` (which needs the cache on the worker) stops the run
  with :class:`SharedCacheError` naming the workers. Workers that join later check the
  cache themselves before writing to it or into a task's data directory.
* **Worker capacity.** The number of batches in flight follows the cluster's thread count
  (re-read at most once a second, so adaptive clusters that grow get more work), capped
  by ``max_workers`` when given, plus as many queued behind them (``prefetch``).

A worker process that dies (the out-of-memory killer) takes the processes its tasks started
with it (Linux): its guard ends them, and a task Dask runs again on that host waits until it
has (see :func:`_guard_worker`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import pickle
import secrets
import signal
import socket
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import _worker
from ._adapter import ExecutorAdapter
from ._codec import BlobRef, Payload, in_memory
from ._format import is_store_root, store_root_of
from ._text import plural
from ._types import ExecutorKind
from ._worker import (
    Failed,
    Outcome,
    WorkItem,
    enter_directory,
    run_batch,
    stale_outcomes,
)
from ._workercode import CoordinatorCode, Manifest, refresh
from .errors import SharedCacheError, TaskStillRunningError, UsageError, WorkerDiedError
from .task import restore_filename

TASKFILE_MARK = "__checkpoint_taskfile__"
"""Attribute :func:`checkpoint.taskfile.load_taskfile` sets on the modules it imports."""

INSTALL_HINT = "pip install 'checkpoint-tool[dask]'"
_REFRESH_SECONDS = 1.0


def _distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as exc:
        raise UsageError(
            f"The Dask executor needs the 'dask' extra, which is not installed ({exc}). "
            f"Install it with: {INSTALL_HINT}"
        ) from None
    _quiet_cancellations()
    return distributed


def _is_cancellation(record: logging.LogRecord) -> bool:
    """False for tornado's "Exception in callback" report of a cancelled Dask future."""
    exc = record.exc_info[1] if record.exc_info else None
    if type(exc).__name__ in ("FutureCancelledError", "CancelledError"):
        return False
    # The relay setting the result of a concurrent future that the run had cancelled.
    return not (type(exc).__name__ == "InvalidStateError" and "CANCELLED" in str(exc))


def _quiet_cancellations() -> None:
    """Drop tornado's tracebacks for the batches a run cancels on Ctrl-C or a failure.

    ``ClientExecutor`` relays each Dask future to a concurrent one in a coroutine that, in
    some ``distributed`` versions, raises when the Dask future was cancelled; tornado then
    logs that as an error with its traceback, after the run has already reported the
    interrupt. The cancellation itself is expected and handled in ``DaskAdapter._transfer``.
    """
    logger = logging.getLogger("tornado.application")
    if _is_cancellation not in logger.filters:
        logger.addFilter(_is_cancellation)


def adapter_for_name(name: str, max_workers: int | None) -> DaskAdapter:
    """Start a LocalCluster (``"dask"``) or connect to a scheduler (``"dask://..."``)."""
    distributed = _distributed()
    scheme, _, rest = name.partition("://")
    if name.lower() == "dask":
        cluster = _local_cluster(distributed, max_workers or os.cpu_count() or 1)
        try:
            client = distributed.Client(cluster)
        except BaseException:
            cluster.close()
            raise
        try:  # programs the tasks start get the default action for Ctrl-C (best effort)
            client.run(default_child_signals)
        except Exception:  # noqa: BLE001,S110 - the cluster still works without it
            pass
        # Its workers end with the run: no attempt of another run can still run on them.
        return DaskAdapter(client.get_executor(pure=False), max_workers, owned=[client, cluster],
                           guard=False)
    if not rest:
        raise UsageError(f"Executor {name!r} names no scheduler. Use dask://HOST:PORT.")
    if rest.endswith(".json"):
        target: dict[str, str] = {"scheduler_file": rest}
        where = f"the Dask scheduler named in {rest}"
    else:
        address = "tcp://" + (rest if ":" in rest.rsplit("]", 1)[-1] else rest + ":8786")
        target = {"address": address}
        where = f"the Dask scheduler at {address}"
    unreachable = ("Check the address, and that 'dask scheduler' is running and reachable "
                   "from here.")
    try:
        if "address" in target:
            _check_scheduler(address, where)
        client = distributed.Client(**target)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"Cannot connect to {where}: {exc}. {unreachable}") from None
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the other end answered, but not as expected
        raise UsageError(
            f"Cannot connect to {where}: the address answers, but not as a Dask scheduler "
            f"({type(exc).__name__}: {exc}). {unreachable}"
        ) from None
    return DaskAdapter(client.get_executor(pure=False), max_workers, owned=[client])


def _check_scheduler(address: str, where: str) -> None:
    """Refuse, as a :class:`UsageError`, an address that answers but is not a Dask
    scheduler's: a worker's or a nanny's (both log ``tcp://`` addresses too), or another
    kind of server, which may never answer distributed's handshake (an HTTP server waits for
    a line): that wait is bounded by ``distributed.comm.timeouts.connect``, which
    ``distributed.Client`` does not apply to it. Unreachable: ``OSError``, as from the client."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm.core import connect
    from distributed.core import send_recv

    timeout = float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))

    async def identity() -> Any:
        # connect() gives up on an unreachable address after ``timeout`` (OSError); the
        # handshake after it has no limit of its own.
        try:
            comm = await asyncio.wait_for(
                connect(address, timeout=timeout), 2 * timeout  # type: ignore[no-untyped-call]
            )
        except asyncio.TimeoutError:
            return None
        try:
            return await asyncio.wait_for(send_recv(comm, op="identity"), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            comm.abort()

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, even under a running one
        reply = pool.submit(asyncio.run, identity()).result()
    kind = reply.get("type") if isinstance(reply, dict) else None
    if reply is None:
        why = (f"it accepted the connection but did not answer as a Dask scheduler within "
               f"{2 * timeout:g} s (twice distributed.comm.timeouts.connect): another kind of "
               "server, or a scheduler too busy to answer")
    elif kind in ("Worker", "Nanny"):
        why = (f"the address answers, but as a Dask {'worker' if kind == 'Worker' else 'nanny'}"
               f" ({kind}), not a scheduler. Give the scheduler's address: 'dask scheduler' "
               "prints it as 'Scheduler at:', and each worker logs it as 'Registered to:'")
    else:  # a Scheduler (or a subclass of it, named otherwise): the client tells
        return
    raise UsageError(f"Cannot connect to {where}: {why}.")


def _local_cluster(distributed: ModuleType, n: int) -> Any:
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A worker process being spawned is re-running the caller's script, which starts a
        # cluster at import time: stop here, quietly; the parent explains (below).
        raise SystemExit(1)
    # Worker processes inherit an ignored SIGINT: Ctrl-C is the coordinator's to handle
    # (it cancels the batches, ends the processes tasks started and closes the cluster).
    # Once started, they trade SIG_IGN for a handler (see default_child_signals).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        # CRITICAL, not ERROR: a cluster checkpoint owns reports what matters through the
        # futures; what its workers log at ERROR is shutdown noise, such as the heartbeat
        # traceback of a worker that outlives the scheduler by a moment after Ctrl-C.
        return distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        )
    except RuntimeError as exc:
        raise UsageError(
            f"Could not start a local Dask cluster ({exc}). If a script runs tasks with "
            "executor='dask', put that code under `if __name__ == '__main__':`, since Dask's "
            "worker processes import the script again."
        ) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def adapter_for_executor(executor: Any, max_workers: int | None) -> DaskAdapter:
    """Wrap a caller's ``client.get_executor()`` (or ``Client``); it stays open afterwards."""
    _distributed()
    if not isinstance(executor, Executor):  # a Client
        executor = executor.get_executor(pure=False)
    return DaskAdapter(executor, max_workers, owned=[])


class DaskAdapter(ExecutorAdapter):
    """Submits cloudpickled batches to a Dask cluster through a ``ClientExecutor``."""

    kind = ExecutorKind.PICKLED
    manifests = True

    def __init__(
        self, executor: Executor, max_workers: int | None, owned: list[Any], guard: bool = True
    ) -> None:
        super().__init__(max_workers or 1)
        self._guard = guard
        """Whether workers check for attempts that earlier runs gave up at their time limit
        and that still run on the cluster (:func:`held_back_on_cluster`): a cluster that
        outlives the run, that is, one checkpoint did not start."""
        self.executor = executor
        self.client: Any = executor._client  # type: ignore[attr-defined]
        self._cap = max_workers
        self._owned = owned
        """What checkpoint created (client, cluster): closed at shutdown, in this order."""
        self._inflight: set[Future[list[Outcome]]] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._unshared: dict[str, tuple[str, str]] | None = None
        """Workers that could not see the cache at the start of the run (None: not checked)."""
        self._slots_at = -_REFRESH_SECONDS
        self._shipped: tuple[str, Any, list[ModuleType]] | None = None
        self._code = CoordinatorCode()
        """What the workers' project modules must be (a cluster outlives runs)."""
        self._slots: int = max_workers or 1

    # The scheduler reads ``workers`` before each submission; a cluster may grow or shrink.
    @property
    def workers(self) -> int:
        now = time.monotonic()
        if now - self._slots_at >= _REFRESH_SECONDS:
            self._slots_at = now
            try:
                slots = int(sum(self.client.nthreads().values()))
            except Exception:  # noqa: BLE001 - keep the last known size
                slots = self._slots
            self._slots = max(1, min(slots, self._cap) if self._cap else slots)
        return self._slots

    # A batch queued behind the one each worker runs: a round trip through the scheduler and
    # the coordinator takes milliseconds, which would idle the worker between batches
    # (32 tasks of 0.5 s on 8 slots: 2.6 s with one batch of prefetch, 2.1 s with this).
    @property
    def prefetch(self) -> int:
        return self.workers

    def submit(self, items: list[WorkItem], payloads: dict[str, Payload]) -> Future[list[Outcome]]:
        """Pickle the batch (taskfile code by value) and submit it to the cluster."""
        assert self.executor is not None
        if self.cache_root is not None:
            if self._unshared is None:
                if not self.client.nthreads():  # a cluster still starting: tasks wait anyway
                    self.client.wait_for_workers(1)
                self._unshared = unshared_workers(self.client, self.cache_root)
            if self._unshared:
                if _uses_data_dir(items):
                    raise SharedCacheError(_unshared_message(self._unshared, self.cache_root))
                for item in items:
                    item.blob_dir = ""  # results come back through the coordinator
                payloads = {tid: in_memory(p) for tid, p in payloads.items()}
        if self._shipped is None:
            self._shipped = self._ship_modules()
        digest, modules, by_value = self._shipped
        blob = dumps_by_value((items, payloads), by_value)
        key = f"checkpoint-batch-{secrets.token_hex(8)}"
        inner = self.executor.submit(  # type: ignore[call-arg]
            run_dask_batch, blob, digest, modules, self.cwd, self._code.get(), self._guard, key=key
        )
        outer: Future[list[Outcome]] = Future()
        with self._lock:
            self._inflight.add(inner)
        inner.add_done_callback(lambda f: self._transfer(f, outer, items))
        return outer

    def _ship_modules(self) -> tuple[str, Any, list[ModuleType]]:
        """Send the project's modules to the workers once: ``(digest, data, by_value)``.

        The workers install them in ``sys.modules``, so batches and results name their
        functions and classes by reference, as in a local run. If a module cannot be
        pickled whole (an open file or a lock at module level), batches carry the code they
        use by value instead (``by_value``).
        """
        modules = project_modules()
        if not modules:
            return "", None, []
        try:
            data = dumps_by_value(modules, modules)
        except Exception:  # noqa: BLE001 - fall back to pickling each batch's code by value
            return "", None, modules
        digest = hashlib.sha256(data).hexdigest()[:16]
        return digest, self.client.scatter(data, broadcast=True, hash=False), []

    def _transfer(self, inner: Future[list[Outcome]], outer: Future[list[Outcome]], items: list[WorkItem]) -> None:
        with self._lock:
            self._inflight.discard(inner)
        if inner.cancelled():
            if self._closing:
                outer.cancel()
            else:
                outer.set_result(_died(items, "the Dask scheduler cancelled it (lost connection?)"))
            return
        exc = inner.exception()
        if exc is None:
            outer.set_result(inner.result())
        elif type(exc).__name__ == "KilledWorker":
            outer.set_result(_died(items, f"{type(exc).__name__}: {exc}"))
        else:
            outer.set_exception(exc)

    def rebuild(self) -> bool:
        return False  # Dask replaces lost workers and reschedules their tasks itself

    def shutdown(self, kill: bool = False) -> None:
        """Cancel this run's batches if asked; close the client and cluster checkpoint made.

        With ``kill`` (an interrupt), the processes that tasks on checkpoint's own
        LocalCluster started are ended too (Linux): closing the cluster ends its worker
        processes, not their children.
        """
        self._closing = True
        if kill:
            with self._lock:
                inflight = list(self._inflight)
            for fut in inflight:
                fut.cancel()
            workers = self._local_worker_pids()
            if workers:
                from ._procs import descendants, kill_pids

                kill_pids(descendants(workers))
        self._shipped = None  # releases the modules scattered to the workers
        while self.closers:
            self.closers.pop()()
        owned, self._owned = self._owned, []
        for thing in owned:
            try:
                thing.close()
            except Exception:  # noqa: BLE001,S110 - closing is best effort at the end of a run
                pass


    def _local_worker_pids(self) -> list[int]:
        """The worker processes of the LocalCluster checkpoint started (none for others)."""
        pids = []
        for thing in self._owned:
            workers = getattr(thing, "workers", None)
            if isinstance(workers, dict):
                for nanny in workers.values():
                    pid = getattr(getattr(getattr(nanny, "process", None), "process", None), "pid", None)
                    if isinstance(pid, int):
                        pids.append(pid)
        return pids


def default_child_signals() -> None:
    """Run on each worker of checkpoint's LocalCluster: SIGINT, ignored since the worker
    started, gets a handler that does nothing instead; a handler, unlike ``SIG_IGN``, is
    reset to the default in the programs tasks start, so Ctrl-C reaches them."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, _no_op)


def _no_op(signum: int, frame: Any) -> None:
    pass


def _died(items: list[WorkItem], why: str) -> list[Outcome]:
    now = time.time()
    return [
        Failed(item.id, now, 0.0, WorkerDiedError(
            f"The Dask worker running this task died or was lost ({why}). It may have been "
            "killed, crashed or run out of memory; Dask retries a task on another worker "
            "before giving up (see distributed.scheduler.allowed-failures)."
        ))
        for item in items
    ]


# --- code by value ----------------------------------------------------------------------


def project_modules() -> list[ModuleType]:
    """The user's own modules, which workers elsewhere cannot import: pickled by value.

    That is the taskfiles :func:`checkpoint.taskfile.load_taskfile` loaded, and the plain
    top-level modules that sit next to them or next to the main script (the working
    directory in a notebook) -- ``from taskfile import main`` in a driver script, a
    ``helpers.py``. Packages and anything under the Python installation travel by reference.
    """
    taskfiles = [m for m in list(sys.modules.values()) if getattr(m, TASKFILE_MARK, False)]
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    dirs = {Path(m.__file__).parent for m in taskfiles if m.__file__}
    dirs.add(Path(main_file).resolve().parent if main_file else Path.cwd())
    installed = {
        Path(p).resolve()
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values())
    }
    dirs = {d for d in dirs if not any(d == i or d.is_relative_to(i) for i in installed)}
    found = {m.__name__: m for m in taskfiles}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if "." in name or not path or hasattr(module, "__path__") or name in found:
            continue
        if module.__name__ != "__main__" and Path(path).resolve().parent in dirs:
            found[name] = module
    return list(found.values())


_registry = threading.Lock()
"""Held while the taskfile is registered by value, and while results are re-pickled."""

def dumps_by_value(obj: Any, modules: list[ModuleType]) -> bytes:
    """cloudpickle ``obj`` with ``modules`` pickled by value (registered only meanwhile)."""
    import cloudpickle

    with _registry:
        already = set(cloudpickle.list_registry_pickle_by_value())
        added = [m for m in modules if m.__name__ not in already and m.__name__ in sys.modules]
        for module in added:
            cloudpickle.register_pickle_by_value(module)
        try:
            blob: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            for module in added:
                cloudpickle.unregister_pickle_by_value(module)
    return blob


# --- on the workers ---------------------------------------------------------------------


_installed: dict[str, list[ModuleType]] = {}
_install_lock = threading.Lock()
SHIPPED_MARK = "__checkpoint_shipped__"


def install_modules(digest: str, data: bytes) -> None:
    """On a worker: put the coordinator's project modules in ``sys.modules`` (once per digest).

    A module that the worker imported by itself (from its own files) is left alone.
    """
    with _install_lock:
        modules = _installed.get(digest)
        if modules is None:
            while len(_installed) >= 8:  # a long-lived cluster serves many runs
                _installed.pop(next(iter(_installed)))
            modules = _installed[digest] = pickle.loads(data)
            for module in modules:
                setattr(module, SHIPPED_MARK, digest)
        for module in modules:
            present = sys.modules.get(module.__name__)
            if present is None or hasattr(present, SHIPPED_MARK):
                sys.modules[module.__name__] = module


def run_dask_batch(
    blob: bytes, digest: str = "", modules: bytes | None = None, cwd: str = "",
    code: Manifest | None = None, guard: bool = False,
) -> list[Outcome]:
    """Entry point on a Dask worker: run a cloudpickled batch; each outcome stands alone.

    The worker works in the coordinator's directory (the project root) when it exists on
    its host, so that tasks' relative paths mean the same there. Project modules it
    imported in an earlier run that differ from the coordinator's (``code``, see
    :mod:`checkpoint._workercode`) are imported again first. With ``guard`` (a cluster that
    serves many runs), a task waits for an earlier attempt that was given up at its time
    limit and still runs on a worker of the cluster (:func:`held_back_on_cluster`).
    """
    enter_directory(cwd)
    _guard_worker()
    if code:
        refresh(code, cwd)
    if digest and modules is not None:
        install_modules(digest, modules)
    items, payloads = pickle.loads(blob)
    if code:
        stale = stale_outcomes(items, code)
        if stale is not None:
            return stale
    ready, missing, payloads = _prepare(items, payloads)
    worker = None
    if guard and ready:
        import distributed

        worker = distributed.get_worker()
        hung = held_back_on_cluster(worker, ready)
        if hung:
            missing.extend(hung)
            ready = [item for item in ready if item.id not in {o.id for o in hung}]
    # in_process=True keeps each exception as raised; it is checked below with cloudpickle,
    # which is what carries results back (a taskfile's exception classes travel by value).
    outcomes = run_batch(ready, payloads, True, cwd) if ready else []
    if worker is not None:
        note_abandoned(worker, ready, outcomes)
    outcomes = _travelling(outcomes)
    by_id = {o.id: o for o in (*outcomes, *missing)}
    return [by_id[item.id] for item in items]


def _prepare(items: list[WorkItem], payloads: dict[str, Payload]
             ) -> tuple[list[WorkItem], list[Outcome], dict[str, Payload]]:
    """Fit a batch's items to this worker's host: the cache where it is mounted here, results
    through the coordinator when this host does not see the cache; an item whose data
    directory is missing here fails at once (``ready, failed, payloads``)."""
    ready: list[WorkItem] = []
    missing: list[Outcome] = []
    sees: dict[str, bool] = {}
    remounted: set[str] = set()
    for item in items:
        if item.filename:
            restore_filename(item.fn, item.filename)
        if item.root:
            local = local_root(item.root)
            if local and local != item.root:  # the cache is mounted elsewhere here
                if item.root not in remounted:
                    remounted.add(item.root)
                    payloads = _remount_payloads(payloads, item.root, local)
                _remount(item, item.root, local)
        if item.blob_dir:
            # A worker that joined after the run's check may not see the cache: then the
            # result goes back through the coordinator rather than into a local directory.
            root = store_root_of(item.blob_dir)
            if root not in sees:
                sees[root] = is_store_root(root)
            if not sees[root]:
                item.blob_dir = ""
        absent = [p for p in _data_dirs(item.template) if not p.is_dir()]
        if absent:
            missing.append(Failed(item.id, time.time(), 0.0, SharedCacheError(
                f"The task's data directory {absent[0]} does not exist on Dask worker host "
                f"{socket.gethostname()}: the cache directory must be on a filesystem that "
                "the coordinator and every worker share (set --cache-dir or CP_CACHE_DIR to it)."
            )))
        else:
            ready.append(item)
    return ready, missing, payloads


def _guard_worker() -> None:
    """Linux: give this worker a guard (once) that ends the processes its tasks started if
    it dies (the out-of-memory killer; a worker process that a nanny started, not a cluster
    of threads in the caller's own process), and wait while the guard of a worker that died on
    this host still ends those of its own: Dask may be running its task again here, and they
    would write into the task's outputs (see :func:`checkpoint._procs.start_guard`)."""
    from ._procs import start_guard, wait_for_guards

    try:
        if multiprocessing.parent_process() is not None:  # not a cluster in the caller's process
            start_guard(f"dask-{secrets.token_hex(4)}:")
        wait_for_guards()
    except Exception:  # noqa: BLE001,S110 - a worker without a guard still runs tasks
        pass


# --- attempts given up at their time limit, on a cluster that serves many runs -----------
#
# On a Dask worker a task with a time limit runs in a thread of its own, abandoned at its
# limit (a thread cannot be stopped; see checkpoint._worker.run_limited). The worker that
# abandons one keeps it here, and notes it in the scheduler's metadata (under _RECORD,
# before the failure goes back, so before the run that gave up on it releases the task);
# the thread's end removes the note. Before a batch runs, a worker of a cluster that
# outlives runs reads the notes (one round trip) and, for a task whose files an abandoned
# attempt may still write, asks the worker that runs it (which answers from its own
# threads: a worker gone, or restarted, took its threads with it).

_RECORD = "checkpoint-abandoned"
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class _GivenUp:
    thread: threading.Thread
    writes: frozenset[str]
    limit: float
    deadline: float
    """When (:func:`time.monotonic`) it counts as hung: its time limit once more after it
    was given up (as for a thread of the coordinator's process, checkpoint._submission)."""


_given_up: dict[str, _GivenUp] = {}
_given_up_lock = threading.Lock()


def _metadata(worker: Any, method: str, **kwargs: Any) -> Any:
    """Call the scheduler's ``get_metadata`` or ``set_metadata`` from a worker (through the
    worker's own connection: no client is made for it, as ``get_client`` would)."""
    from distributed.utils import sync

    return sync(worker.loop, getattr(worker.scheduler, method), **kwargs)


def held_back_on_cluster(worker: Any, items: list[WorkItem]) -> list[Outcome]:
    """On a worker: wait until no attempt given up at its time limit that may write what an
    item would still runs on a worker of the cluster; the failures of the items whose such
    attempt counts as hung (:class:`TaskStillRunningError`), which must not run."""
    record = _metadata(worker, "get_metadata", keys=[_RECORD], default=None)
    if not record or not any(record.values()):  # the usual case: one round trip per batch
        return []
    import distributed

    client = distributed.get_client()  # (a client of the worker's, kept for its life)
    hung: list[Outcome] = []
    for item in items:
        writes = _worker.item_writes(item)
        while True:
            owners = sorted({e["worker"] for e in record.values()
                             if e and not writes.isdisjoint(e["writes"])})
            if not owners:
                break
            replies = client.run(_still_running, sorted(writes), workers=owners,
                                 on_error="return")
            running = [(*r, addr) for addr, r in replies.items() if isinstance(r, tuple)]
            if not running:
                break
            remaining, limit, addr = min(running)
            if remaining <= 0:
                hung.append(Failed(item.id, time.time(), 0.0, _still_runs(item, limit, addr)))
                break
            time.sleep(min(_POLL_SECONDS, remaining))
            record = _metadata(worker, "get_metadata", keys=[_RECORD], default=None) or {}
    return hung


def _still_running(writes: list[str]) -> tuple[float, float] | None:
    """On the worker asked (by ``client.run``): ``(seconds until it counts as hung, its time
    limit)`` of the attempt abandoned here that may write ``writes``, if one still runs."""
    keys = frozenset(writes)
    now = time.monotonic()
    with _given_up_lock:
        for token in [t for t, g in _given_up.items() if not g.thread.is_alive()]:
            del _given_up[token]
        found = [(g.deadline - now, g.limit) for g in _given_up.values()
                 if not keys.isdisjoint(g.writes)]
    return min(found) if found else None


def _still_runs(item: WorkItem, limit: float, worker: str) -> TaskStillRunningError:
    return TaskStillRunningError(
        f"{item.label or 'The task'} cannot run: an earlier attempt of it, given up at its "
        f"time limit of {limit:g} s, still runs on the Dask worker {worker} more than "
        f"{limit:g} s later (it looks hung, and a thread cannot be stopped); running the task "
        "again would write into the same files. To end that thread, restart that worker (or "
        "the cluster: client.restart()), then run again. The earlier TaskTimeoutError's "
        "traceback shows where it hangs.",
        limit=limit,
    )


def note_abandoned(worker: Any, items: list[WorkItem], outcomes: list[Outcome]) -> None:
    """On a worker: note in the scheduler's metadata each attempt of the batch abandoned at
    its time limit, until its thread ends."""
    abandoned = {o.id for o in outcomes if isinstance(o, Failed) and o.abandoned}
    if not abandoned:
        return
    address = worker.address
    for item in items:
        if item.id not in abandoned:
            continue
        writes = _worker.item_writes(item)
        with _worker._abandoned_lock:
            threads = [t for t, w in _worker._abandoned.items()
                       if getattr(w, "writes", w) == writes and t.is_alive()]
        if not threads:
            continue  # it ended meanwhile
        token = f"{address}-{secrets.token_hex(8)}"
        with _given_up_lock:
            _given_up[token] = _GivenUp(threads[-1], writes, item.timeout,
                                        time.monotonic() + item.timeout)
        _metadata(worker, "set_metadata", keys=[_RECORD, token],
                  value={"worker": address, "writes": sorted(writes)})
        threading.Thread(target=_forget, args=(worker, token, threads[-1]), daemon=True,
                         name="checkpoint-abandoned-watch").start()


def _forget(worker: Any, token: str, thread: threading.Thread) -> None:
    thread.join()
    with _given_up_lock:
        _given_up.pop(token, None)
    with contextlib.suppress(Exception):  # the scheduler may be gone: nothing to tell then
        _metadata(worker, "set_metadata", keys=[_RECORD, token], value=None)


def _travelling(outcomes: list[Outcome]) -> list[Outcome]:
    """The outcomes, each failure's exception made fit to travel back to the coordinator:
    without its traceback, or as a RuntimeError with its text when it cannot be pickled."""
    import cloudpickle

    for out in outcomes:
        if isinstance(out, Failed):
            try:
                cloudpickle.loads(cloudpickle.dumps(out.error))
            except Exception:  # noqa: BLE001 - the exception itself cannot travel
                out.error = RuntimeError(f"{type(out.error).__qualname__}: {out.error}")
            else:
                out.error.__traceback__ = None
    return outcomes


_mounts: dict[str, str] = {}


def local_root(root: str) -> str:
    """Where this worker sees the coordinator's store root ``root``: at the same path, else
    as ``$CP_CACHE_DIR/checkpoint`` (the cache mounted at another path on this host), else
    ``""`` (nowhere: payloads then travel through the coordinator)."""
    found = _mounts.get(root)
    if found is not None:
        return found
    found = ""
    if os.path.isfile(os.path.join(root, "FORMAT")):
        found = root
    else:
        mount = os.environ.get("CP_CACHE_DIR")
        if mount:
            alt = os.path.join(os.path.abspath(mount), "checkpoint")
            if os.path.isfile(os.path.join(alt, "FORMAT")):
                found = alt
    if found:  # a cache that is not there may appear later: look again then
        _mounts[root] = found
    return found


def _moved(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if path == old or path.startswith(old + os.sep) else path


def _remount(item: WorkItem, old: str, new: str) -> None:
    """Point a work item's cache paths (data directories, value files, its store root) from
    the store root ``old`` to ``new``, where this worker sees the cache. Values hold paths
    relative to the store root, so what a task receives and returns is right on both sides."""

    def template(t: Any) -> Any:
        if isinstance(t, Path):  # a TaskDirectory() (see _workitems.WorkItems._template)
            return Path(_moved(str(t), old, new))
        if isinstance(t, list):
            return [template(x) for x in t]
        if isinstance(t, dict):
            return {k: template(v) for k, v in t.items()}
        return t

    item.root = new
    if item.blob_dir:
        item.blob_dir = _moved(item.blob_dir, old, new)
    item.template = [template(t) for t in item.template]


def _remount_payloads(payloads: dict[str, Payload], old: str, new: str) -> dict[str, Payload]:
    """The batch's payloads, value files read from where this worker sees the cache."""
    return {
        tid: BlobRef(_moved(p.path, old, new), p.size, p.crc, p.compressed)
        if isinstance(p, BlobRef) else p
        for tid, p in payloads.items()
    }


def _data_dirs(template: Any) -> Iterator[Path]:
    # In a work item's template, a Path is always a TaskDirectory() (see _workitems.WorkItems._template).
    if isinstance(template, Path):
        yield template
    elif isinstance(template, list):
        for t in template:
            yield from _data_dirs(t)
    elif isinstance(template, dict):
        for t in template.values():
            yield from _data_dirs(t)


def _uses_data_dir(items: list[WorkItem]) -> bool:
    return any(True for item in items for _ in _data_dirs(item.template))


# --- the shared-cache check ---------------------------------------------------------------


def write_marker(marker: Path, token: str) -> None:
    """Write the marker file the workers look for."""
    marker.write_text(token)


def probe_marker(path: str, token: str) -> tuple[str, str]:
    """On a worker: ``(hostname, "")`` if the marker is there with ``token`` (at ``path``, or
    in the cache that ``$CP_CACHE_DIR`` names on this worker), else the problem."""
    host = socket.gethostname()
    mount = os.environ.get("CP_CACHE_DIR")
    elsewhere = (os.path.join(os.path.abspath(mount), "checkpoint", os.path.basename(path))
                 if mount else "")
    try:
        with open(path) as f:
            found = f.read()
    except OSError as exc:
        try:  # the cache mounted at another path here, as $CP_CACHE_DIR says
            with open(elsewhere) as f:
                found = f.read()
        except OSError:
            return host, exc.strerror or str(exc)
    return host, "" if found == token else "the file there belongs to another cache"


def unshared_workers(client: Any, root: Path) -> dict[str, tuple[str, str]]:
    """``{worker address: (host, problem)}`` for the current workers that cannot see ``root``."""
    token = secrets.token_hex(8)
    marker = root / f".dask-check-{token}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_marker(marker, token)
        replies = client.run(probe_marker, str(marker), token)
    finally:
        try:
            marker.unlink()
        except OSError:
            pass
    return {addr: (host, why) for addr, (host, why) in replies.items() if why}


def _unshared_message(bad: dict[str, tuple[str, str]], root: Path) -> str:
    lines = "\n".join(f"  {addr} (host {host}): {why}" for addr, (host, why) in sorted(bad.items()))
    return (
        f"{plural(len(bad), 'Dask worker')} cannot see the cache directory {root.parent}, which "
        f"tasks using TaskDirectory() write into:\n{lines}\n"
        "Put the cache on a filesystem shared by this machine and every worker "
        "(--cache-dir or CP_CACHE_DIR), at the same path, or set CP_CACHE_DIR on each worker "
        "to where it mounts the cache."
    )
