"""Run a plan: hand ready tasks to workers within the queue limits, store what finishes.

One thread -- the caller's -- owns all state; workers only report, through futures whose
done-callbacks put them on ``_Run.done`` (a queue). The loop:

1. **Submit.** While fewer than ``workers + prefetch`` batches are in flight (a batch
   queued behind each running one keeps workers busy between round trips), take ready tasks (all
   prerequisites done) from the per-queue ready lists, never exceeding a queue's
   ``rate_limits`` entry (a batch of k tasks holds k slots until it returns). A batch holds
   one task until its queue's tasks are known to be short; then it grows so that a batch
   takes about ``_BATCH_SECONDS`` (at most ``_MAX_BATCH``, and never more than a fair
   share of the ready tasks), which amortizes the cost of a submission over many tiny tasks.
2. **Collect.** Each outcome is handled on its own: a result becomes a store record
   (records are written in batched transactions, at the latest every ``_FLUSH_SECONDS``;
   with threads or inline, at the end of each collect round and before they are reported
   done, since a task there can crash this process), its dependents' counters drop, and
   newly ready tasks join their queue's list.
3. **Failures.** By default the first failure stops new submissions; running batches finish
   and are stored, then the task's own exception is re-raised. With ``keep_going`` the
   failed task's dependents are skipped and independent branches go on.
4. **Interrupts.** Ctrl-C stops submissions, cancels queued batches, kills worker processes
   that checkpoint created, stores what had finished, and re-raises ``KeyboardInterrupt``.

Prerequisite payloads are kept in memory only while a dependent still has to be submitted.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import events as ev
from ._adapter import ExecutorAdapter, ExecutorKind, broken_process_pool
from ._admission import Admission
from ._codec import Payload, load
from ._coordination import Coordination
from ._interrupts import InterruptGuard
from ._readiness import Readiness, TaskState
from ._recorder import Recorder
from ._stamps import in_context, value_stamp
from ._text import task_label
from ._types import Reason, TaskId
from ._values import RunValues, StampContext
from ._worker import (
    Done,
    Failed,
    NeedsPrerequisite,
    Outcome,
    Ref,
    WorkItem,
    hard_timeout_outcome,
    uninstall_capture,
)
from .debug import breakpoints_for
from .errors import (
    CorruptEntryError,
    StoreError,
    TaskFailedError,
    UnserializableResultError,
    UsageError,
    WorkerDiedError,
)
from .executors import resolve_executor
from .files import (
    CACHE_NAME,
    INPUT,
    DigestCache,
    File,
    changed_inputs,
    with_outputs,
)
from .graph import Plan, entry_is_current, plan
from .store import FailedRun, Meta, Record, Store, decode_payload, new_stamp
from .task import Task, TaskDirectory, TaskFamily, check_timeout

if TYPE_CHECKING:
    from .remote import Remote


class RemoteTraceback(Exception):
    """Carries the traceback text of an exception raised in another process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\n" + self.text


@dataclass
class RunResult:
    """What a run did: the targets' values and per-task statistics."""

    plan: Plan
    values: dict[TaskId, Any] = field(default_factory=dict)
    """Values of the targets that could be built, by task id."""
    ran: list[Task[Any]] = field(default_factory=list)
    reused: list[Task[Any]] = field(default_factory=list)
    failed: dict[TaskId, BaseException] = field(default_factory=dict)
    """Exceptions of the tasks that failed, in the order they failed."""
    skipped: list[Task[Any]] = field(default_factory=list)
    kept: list[Task[Any]] = field(default_factory=list)
    """Tasks planned to run that did not need to: the prerequisites that re-ran gave the
    same values as before (early cutoff). They are also in ``reused``."""
    pulled: list[Task[Any]] = field(default_factory=list)
    """Tasks whose entries were downloaded from the remote cache instead of computed
    (:mod:`checkpoint.remote`). They are also in ``reused``."""
    durations: dict[TaskId, float] = field(default_factory=dict)
    """Compute time of each task that ran, in seconds."""
    wall_time: float = 0.0

    def __repr__(self) -> str:
        return (
            f"<RunResult ran={len(self.ran)} reused={len(self.reused)} failed={len(self.failed)} "
            f"skipped={len(self.skipped)} wall_time={self.wall_time:.3f}s>"
        )

    @property
    def ok(self) -> bool:
        """Whether every task that had to run succeeded."""
        return not self.failed and not self.skipped


def run(
    targets: Sequence[Task[Any]],
    *,
    executor: Executor | str | None = None,
    max_workers: int | None = None,
    rate_limits: dict[str, int] | None = None,
    keep_going: bool = False,
    force: bool = False,
    force_upstream: bool = False,
    code_check: bool = True,
    cache_dir: str | Path | None = None,
    subscribers: Sequence[ev.Subscriber] = (),
    raise_on_failure: bool = True,
    progress: bool = False,
    debug: bool = False,
    trace: Sequence[Task[Any]] = (),
    show_locals: bool = False,
    retries: int = 0,
    timeout: float | None = None,
    remote: Remote | str | bool | None = None,
) -> RunResult:
    """Build ``targets`` and their upstream, reusing fresh stored results.

    Args:
        targets: the tasks to build (one DAG).
        executor: an executor name (``"process"``, ``"thread"``, ``"inline"``, ``"dask"``,
            ``"dask://host:port"``) or any :class:`concurrent.futures.Executor`; default: a
            process pool sized to the CPU count (or ``max_workers``).
        max_workers: worker count when checkpoint creates the executor.
        rate_limits: ``{queue: n}``: at most n tasks of that queue run at once.
        keep_going: after a failure, go on with the tasks that do not depend on it.
        force: re-run the targets even if they are fresh.
        force_upstream: re-run every task of the DAG.
        code_check: treat a changed code fingerprint as stale (default True).
        cache_dir: the cache directory (default ``$CP_CACHE_DIR`` or ``./.cache``).
        subscribers: callables receiving each :mod:`checkpoint.events` event.
        raise_on_failure: re-raise the first failing task's exception (default); if False,
            return the result with ``failed`` filled in instead.
        progress: show progress on stderr (:func:`checkpoint.progress.reporter_for`): a
            live display on a terminal, plain lines otherwise, and a summary at the end.
        debug: open a post-mortem debugger on the first failing task (re-run in this process
            with its prerequisites from the store; see :mod:`checkpoint.debug`).
        trace: tasks whose inner function runs under a debugger, stopped at its first line,
            after their prerequisites are built.
        show_locals: include each frame's local variables in failure tracebacks.
        retries: run a failing task (or one whose worker died) up to this many more times
            before it counts as failed (a family's ``@task(retries=N)`` can ask for more).
        timeout: seconds each task may run before it is stopped and fails with
            :class:`~checkpoint.errors.TaskTimeoutError` (a family's own
            ``@task(timeout=...)`` takes precedence); see docs/concepts.md for what stopping
            means on each executor.
        remote: a remote cache to pull from before anything runs: a URL
            (``s3://bucket/prefix``, ``file:///shared/dir``, ...) or a
            :class:`checkpoint.remote.Remote`; default ``$CP_REMOTE`` if set; ``False``:
            none. Entries are signed with ``$CP_REMOTE_KEY`` (see :mod:`checkpoint.remote`).

    Raises:
        Exception: the first failing task's own exception (when ``raise_on_failure``).
        KeyboardInterrupt: the run was interrupted; finished results are stored.
    """
    __tracebackhide__ = True  # IPython and pytest leave this frame out of tracebacks
    options = RunOptions(
        executor=executor, max_workers=max_workers, rate_limits=dict(rate_limits or {}),
        keep_going=keep_going, force=force, force_upstream=force_upstream,
        code_check=code_check, cache_dir=cache_dir, raise_on_failure=raise_on_failure,
        debug=debug, show_locals=show_locals, retries=retries,
        timeout=check_timeout(timeout, "run's timeout", UsageError), remote=remote,
    )
    subs = list(subscribers)
    if not progress:
        return _run(targets, options, subs, trace)
    from .progress import reporter_for  # the one upward import of this layer (see
    # docs/architecture.md): the library's own way to show progress

    reporter = reporter_for(raises=raise_on_failure, store=Store.open(cache_dir))
    try:
        return _run(targets, options, [*subs, reporter], trace)
    finally:
        reporter.close()


@dataclass(frozen=True)
class RunOptions:
    """How to run, built once by :func:`run` (the CLI calls it too) and read everywhere
    below it; the debugging paths derive their variants with :func:`dataclasses.replace`."""

    executor: Executor | str | None = None
    max_workers: int | None = None
    rate_limits: dict[str, int] = field(default_factory=dict)
    keep_going: bool = False
    force: bool = False
    force_upstream: bool = False
    code_check: bool = True
    cache_dir: str | Path | None = None
    raise_on_failure: bool = True
    debug: bool = False
    show_locals: bool = False
    retries: int = 0
    timeout: float | None = None
    remote: Remote | str | bool | None = None
    """A remote cache to pull from before running (see :func:`run`); ``False``: none."""

    def __post_init__(self) -> None:
        for q, n in self.rate_limits.items():
            if not isinstance(n, int) or n < 1:
                raise UsageError(
                    f"The rate limit of queue {q!r} must be a whole number >= 1, not {n!r}."
                )


def _run(
    targets: Sequence[Task[Any]], options: RunOptions, subscribers: list[ev.Subscriber],
    trace: Sequence[Task[Any]] = (),
) -> RunResult:
    """:func:`run` with its options gathered (and the progress reporter among the subscribers)."""
    __tracebackhide__ = True  # the task's error is raised here: its traceback is the task's
    if trace:
        return _run_traced(targets, trace, options, subscribers)
    started = time.perf_counter()
    store = Store.open(options.cache_dir)
    # Join the other runs on this cache before planning: planned first, a run could find
    # itself alone once they had finished and compute again what they had just stored.
    coordination = _join(store)
    try:
        result = _plan_and_run(targets, options, subscribers, store, coordination, started)
    finally:
        if coordination is not None:
            coordination.close()
    if options.debug and result.failed and options.executor != "inline":
        # Post-mortem: the failing task once more, in this process, under the debugger.
        failed = result.plan.nodes[next(iter(result.failed))].task
        again = replace(options, executor="inline", force=True, raise_on_failure=False,
                        retries=0, timeout=None, keep_going=False, remote=False)
        _run([failed], again, [])
    if options.raise_on_failure and result.failed:
        raise next(iter(result.failed.values()))
    return result


def _join(store: Store) -> Coordination | None:
    """Take this run's place among the runs of an existing cache (``None``: no cache yet)."""
    try:
        exists = store.root.is_dir()
    except OSError:
        exists = False
    return Coordination(store.root) if exists else None


def _plan_and_run(
    targets: Sequence[Task[Any]], options: RunOptions, subscribers: list[ev.Subscriber],
    store: Store, coordination: Coordination | None, started: float,
) -> RunResult:
    the_plan = plan(targets, store, force=options.force, force_upstream=options.force_upstream,
                    code_check=options.code_check)
    the_plan.check_inputs()
    result = RunResult(the_plan)
    emit = _emitter(subscribers)
    if options.remote is not False:  # the pull phase: what a remote has is downloaded, not run
        from .remote import pull_plan

        result.pulled = pull_plan(the_plan, store, options.remote, emit)
    target_payloads = _read_fresh_targets(targets, the_plan, store, emit)
    to_run = the_plan.to_run
    if emit:
        emit(ev.RunPlanned(len(the_plan.nodes), len(to_run),
                           {tid: the_plan.nodes[tid].reason or "" for tid in to_run}, time.time(),
                           the_plan))
    if to_run:  # nothing runs unless its result can be stored
        store.check_writable({the_plan.nodes[tid].task.family.dirname for tid in to_run})
        adapter = resolve_executor(options.executor, options.max_workers)
        adapter.cache_root = store.root
        try:
            with InterruptGuard() as guard, breakpoints_for(adapter.kind, subscribers):
                debug = _TRACING.get() or ("post_mortem" if options.debug else "")
                _Run(the_plan, to_run, store, adapter, options, emit, result, guard,
                     debug=debug if adapter.kind is ExecutorKind.INLINE else "",
                     coordination=coordination).loop()
        finally:
            adapter.shutdown()
            uninstall_capture()
    else:
        result.reused = [node.task for node in the_plan.nodes.values()]
        if emit:
            emit(ev.TasksReused(result.reused))
    _target_values(targets, the_plan, store, target_payloads, result)
    result.wall_time = time.perf_counter() - started
    if emit:
        emit(ev.RunFinished(len(result.ran), len(result.reused), len(result.failed),
                            len(result.skipped), result.wall_time))
    return result


def _read_fresh_targets(
    targets: Sequence[Task[Any]], the_plan: Plan, store: Store,
    emit: Callable[[ev.Event], None] | None,
) -> dict[TaskId, tuple[bytes, bool]]:
    """Read the fresh targets' values now: one that fails its check runs again."""
    payloads: dict[TaskId, tuple[bytes, bool]] = {}
    corrupt: list[tuple[Task[Any] | None, str]] = [(None, n) for n in store.take_notices()]
    for target in targets:
        node = the_plan.nodes[target.id]
        if node.reason is None and node.meta is not None and target.id not in payloads:
            try:
                payloads[target.id] = (
                    store.load_payload(target.family.dirname, target.id, node.meta),
                    node.meta.compressed,
                )
            except CorruptEntryError as exc:
                node.reason = Reason.CORRUPT
                corrupt.append((target, str(exc)))
    if emit:
        for task, message in corrupt:
            emit(ev.CorruptEntryFound(task, message))
    return payloads


def _target_values(
    targets: Sequence[Task[Any]], the_plan: Plan, store: Store,
    payloads: dict[TaskId, tuple[bytes, bool]], result: RunResult,
) -> None:
    """Fill ``result.values`` with the fresh targets' values (those that ran are there)."""
    for target in targets:
        if target.id in result.values or target.id in result.failed:
            continue
        if the_plan.nodes[target.id].reason is not None:
            continue
        held = payloads.get(target.id)
        if held is None:
            result.values[target.id] = store.load_value(target.family.dirname, target.id)
            continue
        try:
            result.values[target.id] = decode_payload(*held, str(store.root))
        except Exception as exc:
            raise CorruptEntryError(
                f"The stored result of {target!r} ({target.family.name}) cannot be "
                f"decoded: {exc}"
            ) from exc


_TRACING: contextvars.ContextVar[str] = contextvars.ContextVar("checkpoint_tracing", default="")
"""Set while :func:`_run_traced` runs the traced tasks: their items get ``debug="trace"``."""


def _run_traced(
    targets: Sequence[Task[Any]], trace: Sequence[Task[Any]], options: RunOptions,
    subscribers: list[ev.Subscriber],
) -> RunResult:
    """``run(trace=...)``: prerequisites as usual, traced tasks in-process under the debugger
    (stopped at their first line), then the targets."""
    prerequisites = list({d.id: d for t in trace for d in t.spec().dependencies}.values())
    quiet = replace(options, raise_on_failure=False)
    if prerequisites:
        first = _run(prerequisites, quiet, subscribers)
        if not first.ok:
            if options.raise_on_failure and first.failed:
                raise next(iter(first.failed.values()))
            return first
    token = _TRACING.set("trace")
    try:
        traced = _run(list(trace), replace(quiet, executor="inline", max_workers=None, force=True), [])
    finally:
        _TRACING.reset(token)
    if not traced.ok:
        if options.raise_on_failure and traced.failed:
            raise next(iter(traced.failed.values()))
        return traced
    return _run(list(targets), options, subscribers)


def _emitter(subscribers: Sequence[ev.Subscriber]) -> Callable[[ev.Event], None] | None:
    if not subscribers:
        return None
    subs = list(subscribers)
    batched = [ev.takes_batches(sub) for sub in subs]

    def emit(event: ev.Event) -> None:
        if type(event) is ev.TasksReused:  # one TaskReused per task for the others
            singles = None
            for sub, batches in zip(subs, batched, strict=True):
                if batches:
                    sub(event)
                    continue
                if singles is None:
                    singles = [ev.TaskReused(task) for task in event.tasks]
                for single in singles:
                    sub(single)
            return
        for sub in subs:
            sub(event)

    return emit


class _Run:
    """One run's loop (see the module docstring) over its parts: :class:`Readiness` (task
    states), :class:`Admission` (queues, batches), :class:`RunValues` (the values tasks are
    given), :class:`Recorder` (storing) and :class:`Coordination` (other runs)."""

    def __init__(
        self,
        the_plan: Plan,
        to_run: list[TaskId],
        store: Store,
        adapter: ExecutorAdapter,
        options: RunOptions,
        emit: Callable[[ev.Event], None] | None,
        result: RunResult,
        guard: InterruptGuard | None = None,
        debug: str = "",
        coordination: Coordination | None = None,
    ) -> None:
        self.nodes = the_plan.nodes
        self.guard = guard or InterruptGuard()
        self.targets = {t.id for t in the_plan.targets}
        self.store = store
        self.adapter = adapter
        self.options = options
        self.emit = emit
        self.result = result
        self.debug = debug
        """Debug mode of every task (in-process runs only): "trace" or "post_mortem"."""

        self.readiness = Readiness()
        self.admission = Admission(options.rate_limits, adapter.workers)
        self.values = RunValues(store, self._family_dir, self.targets)
        self.stamp_context = StampContext(self.nodes)
        self.input_digests: DigestCache | None = None
        # Tasks on threads (or inline) share this process: one that crashes it (a segfault in
        # C code) would take every result not yet stored with it. So their results are
        # stored at the end of each collect round, before they are reported done.
        self.recorder = Recorder(store, self.guard, self._stored, emit=emit,
                                 store_first=adapter.kind is not ExecutorKind.PICKLED)
        if emit is not None and self.recorder.store_first:
            self.emit = self._in_order
        self.values.flush = self.recorder.flush
        self.coordination = coordination
        """Joined before planning when the cache existed (see :func:`_run`), else here."""

        self.done: queue.SimpleQueue[tuple[Future[list[Outcome]], list[WorkItem]]] = queue.SimpleQueue()
        self.inflight: dict[int, list[WorkItem]] = {}
        """Batches handed to the executor, by ``id(items)``."""
        self.started: set[int] = set()
        """Batches in flight that were announced as started (at most one per worker)."""
        self.queued: deque[list[WorkItem]] = deque()
        """Batches in flight queued behind those, announced when a worker frees up."""
        self.batch_info: dict[int, tuple[int, bool]] = {}
        """``id(items)`` of a batch in flight: (pool generation, submitted alone as a suspect)."""
        self.generation = 0
        """How many times the process pool was rebuilt."""
        self.suspects: deque[TaskId] = deque()
        """Tasks of batches lost with a dead worker: re-run one at a time to find the culprit."""
        self.reading: dict[TaskId, list[TaskId]] = {}
        """Locking mode: the prerequisites whose data directory each running task reads
        (their locks are shared until it returns)."""
        self.given: dict[TaskId, dict[TaskId, str]] = {}
        self.seq = 0
        self.submitted: dict[TaskId, int] = {}
        """When (in ``seq``) each task was last handed its values, once a damaged value is
        being recomputed: a report of damage from a task handed the entry before it was
        recomputed (``renewed``) is out of date, not "damaged again"."""
        self.renewed: dict[TaskId, int] = {}
        """The stamps of the values each running task was given: its entry records them."""
        self.attempts: dict[TaskId, int] = {}
        self.prior_output: dict[TaskId, str] = {}
        """Output and tracebacks of a retried task's failed attempts, kept for its log."""
        self.stopping = False
        self.aborting = False
        self.blob_dirs: dict[str, str] = {}
        self.store_root = str(store.root)
        self.sources_sent: set[str] = set()
        self.to_prepare: dict[str, TaskFamily[..., Any]] = {}
        """The families that will store results, by directory name (see ``_prepare``)."""

        run_set = set(to_run)
        ready = []
        for tid, node in self.nodes.items():
            if node.meta is not None:
                self.values.entries[tid] = node.meta
            if tid not in run_set:
                result.reused.append(node.task)
                continue
            self.to_prepare[node.task.family.dirname] = node.task.family
            for dep in node.deps:
                self.values.add_reader(dep)
            if self.readiness.add(tid, node.deps):
                ready.append(tid)
        if emit and result.reused:
            emit(ev.TasksReused(list(result.reused)))
        for tid in ready:
            self._ready(tid)

    def _in_order(self, event: ev.Event) -> None:
        """``store_first``: an event waits for the results added before it to be stored
        (a result is reported done once stored, and the events keep their order)."""
        if self.recorder.records or self.recorder.deferred:
            self.recorder.defer(event)
        else:
            assert self.recorder.emit is not None
            self.recorder.emit(event)

    def _family_dir(self, tid: TaskId) -> str:
        return self.nodes[tid].task.family.dirname

    # --- the loop ---------------------------------------------------------------------

    def loop(self) -> None:
        try:
            if self.coordination is None:
                self.store._ensure_root()
                self.coordination = Coordination(self.store.root)
            coordination = self.coordination
            while self.readiness.unsettled > 0:
                if coordination.check_due():
                    self._check_others()
                self._submit_ready()
                if self.to_prepare:
                    self._prepare()
                if not self.inflight:
                    if not self.readiness.unsettled:
                        break  # the last tasks were adopted from another run
                    if coordination.blocked and not self.stopping:
                        # Another run computes them: store ours (it may wait for them), then
                        # wait for its results.
                        self.recorder.flush()
                        time.sleep(0.05)
                        continue
                    if not self.stopping:
                        raise RuntimeError(
                            f"checkpoint's scheduler stalled with {self.readiness.unsettled} "
                            "task(s) left and none running (please report this)."
                        )
                    break  # stopped after a failure: nothing runs, nothing can start
                self._collect(self._next_done())
                while True:
                    try:
                        item = self.done.get_nowait()
                    except queue.Empty:
                        break
                    self._collect(item)
                if self.recorder.due():
                    self.recorder.flush()
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            if self.coordination is not None and self.aborting:
                self.coordination.close()
        self.recorder.flush()
        self.coordination.close()

    def _prepare(self) -> None:
        """Fingerprint the families that will store results and open their indexes now,
        while the first batches run. Done when their first result arrives, it took this
        thread ~5-10 ms holding the GIL, which delayed every thread worker then finishing
        a task (and all the work queued behind them)."""
        families, self.to_prepare = self.to_prepare, {}
        for dirname, family in families.items():
            family.fingerprint  # noqa: B018 - computed once per family, then cached
            with contextlib.suppress(StoreError):  # a head start only: writing reports it
                self.store.open_family(dirname)

    def _next_done(self) -> tuple[Future[list[Outcome]], list[WorkItem]]:
        assert self.coordination is not None
        while True:
            try:
                # A timeout keeps the main thread responsive to Ctrl-C.
                return self.done.get(timeout=0.25 if not self.coordination.blocked else 0.05)
            except queue.Empty:
                if self.recorder.records:
                    self.recorder.flush()
                if self.coordination.solo:
                    self._check_others()
                if self.coordination.blocked:
                    self._submit_ready()

    def _abort(self, exc: BaseException) -> None:
        # Stop everything, then keep what had finished. A failure in here must not hide
        # the exception that brought us here (Ctrl-C, SIGTERM, a full disk).
        self.stopping = self.aborting = True
        try:
            self.adapter.shutdown(kill=True)
            while True:
                try:
                    future, items = self.done.get_nowait()
                except queue.Empty:
                    break
                if isinstance(exc, KeyboardInterrupt):
                    # [signals] Not stored: the task may have returned early because the
                    # signal also ended a process it waited for (a terminal's Ctrl-C reaches
                    # its whole foreground process group: threads' children, Dask's workers').
                    self.inflight.pop(id(items), None)
                    self._not_run(items)
                    continue
                self._collect((future, items))
            self.recorder.flush()
        except Exception:  # noqa: BLE001
            pass
        if self.emit and isinstance(exc, KeyboardInterrupt):
            # "done" counts what is stored: a result that could not be written is not kept.
            unstored = len(self.recorder.records)
            assert self.recorder.emit is not None  # not deferred: the store may have failed
            self.recorder.emit(ev.RunInterrupted(len(self.result.ran) - unstored,
                                        max(0, self.readiness.unsettled) + unstored))

    # --- other runs on the same cache (see checkpoint._coordination) -------------------

    def _check_others(self) -> None:
        assert self.coordination is not None
        in_flight = [item.id for items in self.inflight.values() for item in items]

        def read() -> list[TaskId]:
            for tid in in_flight:
                self.reading[tid] = self._data_dir_deps(tid)
            return [dep for tid in in_flight for dep in self.reading[tid]]

        self.coordination.check_others(lambda: in_flight, read, self.recorder.flush)

    def _data_dir_deps(self, tid: TaskId) -> list[TaskId]:
        """The prerequisites of ``tid`` that own files it may read: a data directory, or
        declared outputs (``Product``), which another run would empty or rewrite."""
        deps = []
        for dep in self.nodes[tid].deps:
            node = self.nodes[dep]
            if node.task.spec().has_data_dir or (node.files is not None and node.files.outputs):
                deps.append(dep)
        return deps

    def _share(self, tid: TaskId) -> bool:
        """Locking mode: share the locks of the prerequisites whose data directory or
        declared outputs ``tid`` reads, so that no other run empties or rewrites them
        meanwhile; False (``tid`` blocked) while another run recomputes one. A prerequisite
        another run stored since is adopted."""
        assert self.coordination is not None
        shared: list[TaskId] = []
        for dep in self._data_dir_deps(tid):
            if not self.coordination.share(dep):
                for taken in shared:
                    self.coordination.unshare(taken)
                self.coordination.blocked.append(tid)
                return False
            shared.append(dep)
            if dep not in self.coordination.held and self.readiness.get(dep) is TaskState.DONE:
                node = self.nodes[dep]
                meta = self.store.get_meta(node.task.family.dirname, dep)
                if meta is None:  # cleared by another process: its directory is gone
                    for taken in shared:
                        self.coordination.unshare(taken)
                    if self._damaged(dep, f"The stored result of {node.task!r} "
                                     f"({node.task.family.name}) was removed or replaced while this run "
                                     "needed it; it will be recomputed.", tid):
                        self.readiness.wait_for(tid, self.nodes[tid].deps)
                    return False
                if meta.stamp != self.values.stamp(dep):
                    node.meta = meta
                    self.values.adopted(dep, meta)
        self.reading[tid] = shared
        return True

    def _unshare(self, tid: TaskId) -> None:
        if self.reading and self.coordination is not None:
            for dep in self.reading.pop(tid, ()):
                self.coordination.unshare(dep)

    def _claim(self, tid: TaskId) -> bool:
        """Locking mode: lock a task before computing it; False if it must not run now
        (another run holds it, or stored a current result meanwhile, which is adopted)."""
        assert self.coordination is not None
        if not self.coordination.claim(tid):
            return False
        node = self.nodes[tid]
        if node.reason == Reason.FORCED:
            return True
        meta = self.store.get_meta(node.task.family.dirname, tid)
        if meta is None or self.values.is_damaged(tid, meta):
            return True
        if meta.fingerprint == node.task.family.fingerprint[0] and entry_is_current(
            meta, node.deps, self.values.stamp, node.files, outputs=False
        ):
            self._adopt(tid, meta)
            return False
        return True

    def _adopt(self, tid: TaskId, meta: Meta) -> None:
        """Another run stored this task's result while we waited: reuse it."""
        node = self.nodes[tid]
        node.meta, node.reason = meta, None
        self.values.adopted(tid, meta)
        assert self.coordination is not None
        self.coordination.unlock(tid)
        self._reused(tid)
        self._settled(tid, done=True)

    def _stored(self, tid: TaskId) -> None:
        if self.coordination is not None:  # stored: other runs may now take it (and reuse it)
            self.coordination.unlock(tid)

    # --- readiness --------------------------------------------------------------------

    def _ready(self, tid: TaskId) -> None:
        if self._cut_off(tid):
            self._settled(tid, done=True)
        else:
            self.admission.push(tid, self.nodes[tid].task.family.queue)

    def _cut_off(self, tid: TaskId) -> bool:
        """Early cutoff: the prerequisites that re-ran gave the values ``tid``'s entry was
        computed from, so it is current as it is and does not run."""
        node = self.nodes[tid]
        if (
            node.reason != "upstream re-run" or node.meta is None
            or not entry_is_current(node.meta, node.deps, self.values.stamp, node.files)
        ):
            return False
        node.reason = None
        self.result.kept.append(node.task)
        self.result.reused.append(node.task)
        if self.emit:
            self.emit(ev.TaskKept(node.task))
        return True

    def _reused(self, tid: TaskId) -> None:
        task = self.nodes[tid].task
        self.result.reused.append(task)
        if self.emit:
            self.emit(ev.TaskReused(task))

    def _settled(self, tid: TaskId, done: bool) -> None:
        """``tid`` is done or failed for good: its prerequisites have one reader less and,
        when done, the dependents it was the last wait of become ready (iteratively: early
        cutoff can settle a long chain at once)."""
        for dep in self.nodes[tid].deps:
            self.values.drop_reader(dep)
        if not done:
            return
        stack = self.readiness.done(tid)
        while stack:
            ready = stack.pop()
            if self._cut_off(ready):
                for dep in self.nodes[ready].deps:
                    self.values.drop_reader(dep)
                stack.extend(self.readiness.done(ready))
            else:
                self.admission.push(ready, self.nodes[ready].task.family.queue)

    def _damaged(self, tid: TaskId, message: str, reader: TaskId) -> bool:
        """``reader`` found ``tid``'s value damaged: recompute it (once a run) and return
        True (``reader`` waits for it), or fail ``reader`` and return False."""
        state = self.readiness.get(tid)
        if state in (TaskState.WAITING, TaskState.READY, TaskState.RUNNING):
            return True  # being recomputed already
        node = self.nodes[tid]
        if state is not TaskState.DONE or tid in self.values.recomputed:
            failed = self.result.failed.get(tid)
            error: BaseException = CorruptEntryError(
                f"The stored result of {node.task!r} ({node.task.family.name}), which "
                f"{self.nodes[reader].task!r} needs, was recomputed in this run and is damaged "
                f"again: {message} The disk or filesystem of the cache may be failing; check it "
                "(e.g. `checkpoint cache verify`) or choose another --cache-dir."
            ) if failed is None else failed
            self._fail_now(reader, error)
            return False
        if self.emit:
            self.emit(ev.CorruptEntryFound(node.task, message))
        self.values.forget(tid)
        node.reason = Reason.CORRUPT
        for tasks in (self.result.reused, self.result.ran, self.result.kept):  # counted anew
            with contextlib.suppress(ValueError):
                tasks.remove(node.task)
        for dep in node.deps:
            self.values.add_reader(dep)
        if self.readiness.add(tid, node.deps):
            self._ready(tid)
        return True

    # --- submitting -------------------------------------------------------------------

    def _submit_ready(self) -> None:
        if self.stopping:
            return
        assert self.coordination is not None
        if self.coordination.blocked:
            for tid in self.coordination.take_blocked():
                self.admission.push(tid, self.nodes[tid].task.family.queue)
        if self.suspects:
            # A worker died: run the tasks that were in flight alone, one after another, so
            # that the one that kills its worker is known and the others are not blamed.
            while self.suspects and not self.inflight:
                tid = self.suspects.popleft()
                self.admission.hold(self.nodes[tid].task.family.queue)
                self._submit([tid], isolated=True)
            return
        # A batch or more beyond the workers (``prefetch``): a worker that finishes picks the
        # next batch up at once instead of waiting for this thread to collect and submit.
        most = 1 if self.adapter.kind is ExecutorKind.INLINE else self.adapter.workers + self.adapter.prefetch
        while len(self.inflight) < most:
            batch = self.admission.take()
            if not batch:
                return  # nothing ready, or every ready task waits for a queue slot
            self._submit(batch)

    def _submit(self, batch: list[TaskId], isolated: bool = False) -> None:
        items: list[WorkItem] = []
        payloads: dict[TaskId, Payload] = {}
        pickled = self.adapter.kind is ExecutorKind.PICKLED
        assert self.coordination is not None
        locking = self.coordination.locking
        for tid in batch:
            node = self.nodes[tid]
            task = node.task
            if self.readiness.get(tid) is not TaskState.READY or (
                locking and not (self._claim(tid) and self._share(tid))
            ):
                self.admission.release(task.family.queue)
                continue
            given = self._gather(tid, payloads)
            if given is None:
                self._unshare(tid)
                self.admission.release(task.family.queue)
                continue
            self.given[tid] = given
            if self.values.recomputed:  # only a damaged value's readers need to know when
                self.seq += 1
                self.submitted[tid] = self.seq
            self.readiness.running(tid)
            items.append(self._work_item(task, pickled))
        if not items:
            return
        try:
            future = self.adapter.submit(items, payloads)
        except broken_process_pool() as exc:  # broke before we noticed: collect it as such
            future = Future()
            future.set_exception(exc)
        self.inflight[id(items)] = items
        if self.emit:
            if len(self.started) < self.adapter.workers:
                self._announce(items)
            else:  # queued behind a running batch (prefetch): not running yet
                self.queued.append(items)
        if isolated or self.generation:
            self.batch_info[id(items)] = (self.generation, isolated)
        future.add_done_callback(lambda f: self.done.put((f, items)))

    def _work_item(self, task: Task[Any], pickled: bool) -> WorkItem:
        spec = task.spec()
        template = [self._template(req, task) for req in spec.requirements]
        family = task.family
        if pickled and _rebuildable(task):
            item = WorkItem.rebuilding(task.id, (family, task.args, task.kwargs), template,
                                       family.compress_level)
        else:
            code = getattr(spec.fn, "__code__", None)
            item = WorkItem.running(task.id, spec.fn, template, family.compress_level,
                                    filename=code.co_filename if pickled and code else "")
        item.blob_dir = self._blob_dir(family.dirname)
        item.root = self.store_root
        item.debug = self.debug
        item.show_locals = self.options.show_locals
        limit = family.timeout if family.timeout is not None else self.options.timeout
        if limit:
            item.timeout, item.label = limit, task_label(task)
        return item

    def _announce(self, items: list[WorkItem]) -> None:
        """A batch reached a worker (as far as this thread can tell: a free one was there)."""
        assert self.emit is not None
        self.started.add(id(items))
        now = time.time()
        for item in items:
            self.emit(ev.TaskStarted(self.nodes[item.id].task, now))

    def _gather(self, tid: TaskId, payloads: dict[TaskId, Payload]) -> dict[TaskId, str] | None:
        """Put the values ``tid`` reads into ``payloads`` and return their stamps; ``None``
        when it cannot start now (a damaged value is recomputed first, or it failed)."""
        node = self.nodes[tid]
        given: dict[TaskId, str] = {}
        for dep in node.deps:
            if self.readiness.get(dep) is TaskState.DONE:
                try:
                    stamp, payload = self.values.get(dep)
                except CorruptEntryError as exc:
                    if not self._damaged(dep, str(exc), tid):
                        return None
                else:
                    given[dep] = stamp
                    payloads[dep] = payload
                    continue
            self.readiness.wait_for(tid, node.deps)
            return None
        return given

    def _template(self, req: Any, task: Task[Any]) -> Any:
        if isinstance(req, Task):
            return Ref(req.id)
        if isinstance(req, TaskDirectory):
            assert self.coordination is not None
            if task.id in self.values.entries or self.coordination.locking:
                # Its directory is about to be emptied: the stored entry that goes with it
                # must not outlive it (a failure, an interrupt, or another run adopting it
                # would leave a fresh entry with an empty directory). Alone, this run knows
                # every entry there is; with others, one may have stored it since the plan.
                # So an entry found later was stored after this emptying, by a run that
                # filled the directory again: it is adopted like any other.
                self.store.delete(task.family.dirname, task.id)
            return self.store.prepare_data_dir(task.family.dirname, task.id)
        if isinstance(req, File):  # File or Product: resolved where the task runs
            return req.keyed()
        if isinstance(req, list):
            return [self._template(r, task) for r in req]
        if isinstance(req, dict):
            return {k: self._template(v, task) for k, v in req.items()}
        raise AssertionError(f"unexpected requirement {req!r}")

    def _blob_dir(self, family: str) -> str:
        path = self.blob_dirs.get(family)
        if path is None:
            path = self.blob_dirs[family] = str(self.store.blob_dir(family))
        return path

    # --- collecting -------------------------------------------------------------------

    def _lost(self, items: list[WorkItem], error: type[TaskFailedError], message: str) -> list[Outcome]:
        """Fail each task of a batch that never reported: ``message`` names it as ``{task}``."""
        outcomes: list[Outcome] = []
        for item in items:
            task = self.nodes[item.id].task
            text = message.format(task=task_label(task))
            outcomes.append(Failed(item.id, time.time(), 0.0, error(
                text, task=repr(task), family=task.family.name)))
        return outcomes

    def _not_run(self, items: list[WorkItem]) -> None:
        """The tasks of a batch did not run: they are ready again (or stay unsettled)."""
        for item in items:
            self.admission.release(self.nodes[item.id].task.family.queue)
            self.given.pop(item.id, None)
            self._unshare(item.id)
            if self.readiness.get(item.id) is TaskState.RUNNING:
                self.readiness.state[item.id] = TaskState.READY

    def _collect(self, done: tuple[Future[list[Outcome]], list[WorkItem]]) -> None:
        # An interrupt waits until the batch is accounted for: a task is never counted as
        # both finished and still to run (the interrupted summary's counts add up).
        with self.guard.critical():
            self._collect_batch(done)

    def _collect_batch(self, done: tuple[Future[list[Outcome]], list[WorkItem]]) -> None:
        future, items = done
        self.inflight.pop(id(items), None)
        try:
            self._collect_outcomes(future, items)
        finally:
            if self.emit:  # after this batch's outcomes: its worker is free now
                self.started.discard(id(items))
                while self.queued and len(self.started) < self.adapter.workers:
                    waiting = self.queued.popleft()
                    if id(waiting) in self.inflight:
                        self._announce(waiting)

    def _collect_outcomes(self, future: Future[list[Outcome]], items: list[WorkItem]) -> None:
        generation, isolated = (
            self.batch_info.pop(id(items), (0, False)) if self.batch_info else (0, False)
        )
        try:
            outcomes = future.result()
        except CancelledError:
            if self.aborting:  # we cancelled it: these tasks did not run
                self._not_run(items)
                return
            # Someone else cancelled it (the executor was shut down under us): they fail.
            outcomes = self._lost(items, TaskFailedError, "{task} was cancelled by its executor "
                                  "before it ran (was the executor shut down during the run?).")
        except broken_process_pool():
            if self.aborting:  # we killed the workers: these tasks did not run
                self._not_run(items)
                return
            found = self._broken_pool(items, generation, isolated)
            if found is None:
                return
            outcomes = found
        except BaseException as exc:  # noqa: BLE001 - the executor itself failed
            outcomes = [Failed(item.id, time.time(), 0.0, exc) for item in items]
        for outcome in outcomes:
            tid = outcome.id
            self.admission.release(self.nodes[tid].task.family.queue)
            self._unshare(tid)
            if isinstance(outcome, Done):
                self._finished(outcome)
            elif isinstance(outcome, Failed):
                self._failed(outcome)
            else:
                self._needs(outcome)

    def _broken_pool(self, items: list[WorkItem], generation: int,
                     isolated: bool) -> list[Outcome] | None:
        """A worker process died with ``items`` in flight: the outcomes to record, or
        ``None`` when they are all to run again (each alone, to find the one that kills
        its worker)."""
        if generation == self.generation and self.adapter.rebuild():
            self.generation += 1
        elif generation == self.generation:  # not ours to rebuild: these tasks fail
            isolated = True
        # [timeouts] A worker ended itself because its task ran past its time limit: that
        # task fails as timed out; the others in flight are ready again.
        over_time = self.adapter.timed_out(generation)
        if over_time:
            innocent = [item for item in items if item.id not in over_time]
            self._not_run(innocent)
            for item in innocent:
                self._ready(item.id)
            return [
                hard_timeout_outcome(item.id, task_label(self.nodes[item.id].task),
                                     *over_time[item.id])
                for item in items if item.id in over_time
            ]
        if not isolated:
            # Which task killed the worker is unknown (a broken pool fails every batch in
            # flight): run each of them again, alone.
            self._not_run(items)
            self.suspects.extend(item.id for item in items)
            return None
        return self._lost(items, WorkerDiedError, "{task}: worker died while running it "
                          "(killed, crashed, e.g. a segmentation fault, or out of memory).")

    def _needs(self, out: NeedsPrerequisite) -> None:
        """The task did not run: it runs again once the damaged value is recomputed (at
        once if it was recomputed since this task was handed the old one)."""
        tid, dep = out.id, out.dep
        self.given.pop(tid, None)
        self.readiness.state[tid] = TaskState.READY
        stale = self.renewed.get(dep, -1) > self.submitted.get(tid, -1)
        if (stale or self._damaged(dep, out.text, tid)) and \
                self.readiness.wait_for(tid, self.nodes[tid].deps):
            self._ready(tid)

    def _finished(self, out: Done) -> None:
        node = self.nodes[out.id]
        task = node.task
        family = task.family
        if self.prior_output:
            out.output = self.prior_output.pop(out.id, "") + out.output
        fingerprint = family.fingerprint
        # A task's stamp names its value and the code that made it (StampContext): a
        # recomputation that gives the same value from the same code keeps its dependents
        # current (early cutoff; see checkpoint._stamps), and new code upstream never does.
        # Not for a task with a data directory: its value (often a path) does not show what
        # the directory holds.
        by_value = not task.spec().has_data_dir
        given = self.given.pop(out.id)
        moved = self._inputs_moved(out.id)
        compressed = family.compress_level != 0
        if not by_value:
            stamp = new_stamp()
        else:
            context = self.stamp_context.digest(out.id, given, out.payload, compressed)
            if out.payload is not None:
                stamp = in_context(value_stamp(out.payload, compressed), context)
            elif out.stamp:  # written to its file by the worker, which hashed it
                stamp = in_context(out.stamp, context)
            else:
                stamp = new_stamp()
        meta = Meta(
            expr=task.expression(),
            args=task.encoded,
            fingerprint=fingerprint[0],
            stamp=stamp,
            deps=node.recorded_deps(given, out.outputs),
            size=out.size,
            crc=out.crc,
            compressed=family.compress_level != 0,
            blob=out.blob,
            started=out.started,
            duration=out.duration,
            stored=time.time(),
            worker=out.worker,
            log=bool(out.output),
        )
        for path in moved:  # never current: it runs again next time
            meta.deps[INPUT + path] = ""
        if out.outputs:  # the stamp names the files the task wrote too
            meta.stamp = with_outputs(meta.stamp, out.outputs)
        previous = self.values.entries.get(out.id)
        source = None
        if fingerprint[0] not in self.sources_sent:
            self.sources_sent.add(fingerprint[0])
            source = fingerprint
        self.recorder.add(Record(
            family.dirname, out.id, meta, out.payload, source=source, log=out.output,
            replaces=previous.blob if previous is not None else "",
        ))
        held = self.values.stored(out.id, meta, out.payload)
        if out.id in self.values.recomputed:
            self.renewed[out.id] = self.seq
        if out.id in self.targets:
            self.result.values[out.id] = load(held, self.store_root)
        self.result.ran.append(task)
        self.result.durations[out.id] = out.duration
        self.admission.observe(family.queue, out.duration)
        if self.emit:
            self.emit(ev.TaskFinished(task, time.time(), out.duration, out.size,
                                      out.output, out.worker, out.started))
        self._settled(out.id, done=True)

    def _inputs_moved(self, tid: TaskId) -> list[str]:
        """The ``File`` inputs of ``tid`` edited while it ran (one ``os.stat`` each when
        unchanged), announced: its result is then recorded as stale."""
        node = self.nodes[tid]
        if node.files is None or not node.files.digests:
            return []
        if self.input_digests is None:
            self.input_digests = DigestCache(self.store.root / CACHE_NAME, os.getcwd())
        moved = changed_inputs(node.files, self.input_digests)
        if moved and self.emit:
            names = ", ".join(moved)
            self.emit(ev.InputChanged(node.task, tuple(moved), (
                f"The input {names} of {node.task!r} changed while it ran: its result may "
                "come from either content, so it is stored as stale and runs again next time."
            )))
        return moved

    def _failed(self, out: Failed) -> None:
        node = self.nodes[out.id]
        task = node.task
        error = out.error
        self.given.pop(out.id, None)
        if out.unpicklable_result:
            wrapped = UnserializableResultError(
                f"The result of task {task!r} cannot be pickled, so it cannot be stored: "
                f"{type(error).__name__}: {error}. Return picklable data (or save the object "
                "to a TaskDirectory() and return its path).",
                task=repr(task), family=task.family.name,
            )
            wrapped.__cause__ = error
            error = wrapped
        allowed = max(self.options.retries, task.family.retries)
        if allowed and not self.aborting and not out.abandoned:
            attempt = self.attempts.get(out.id, 0) + 1
            if attempt <= allowed:
                self.attempts[out.id] = attempt
                text = out.error_text or f"{type(error).__name__}: {error}"
                self.prior_output[out.id] = (
                    self.prior_output.get(out.id, "") + out.output
                    + f"--- attempt {attempt} of {allowed + 1} failed ---\n{text.rstrip()}\n"
                )
                if self.emit:
                    self.emit(ev.TaskRetried(task, attempt, error, out.error_text, out.output))
                # Its prerequisites' values are still held (it has not settled): the next
                # attempt is given the same ones.
                self.readiness.state[out.id] = TaskState.READY
                self._ready(out.id)
                return
        if self.prior_output:
            out.output = self.prior_output.pop(out.id, "") + out.output
        self._fail_now(out.id, error, out)

    def _fail_now(self, tid: TaskId, error: BaseException, out: Failed | None = None) -> None:
        """``tid`` failed for good: record it, then stop or skip what depends on it."""
        task = self.nodes[tid].task
        self.given.pop(tid, None)
        assert self.coordination is not None
        self.coordination.unlock(tid)
        if not isinstance(error, TaskFailedError):
            # Raised in another process, it comes without frames: its text has them.
            remote = (out.error_text if out is not None and error.__traceback__ is None
                      and error.__cause__ is None else "")
            _annotate(error, task, remote)
        self.result.failed[tid] = error
        self.readiness.failed(tid)
        self._settled(tid, done=False)
        started, duration, worker, output, text = (
            (out.started, out.duration, out.worker, out.output, out.error_text)
            if out is not None else (time.time(), 0.0, "", "", "")
        )
        self.recorder.add_failure(task.family.dirname, tid, FailedRun(
            task.expression(), started, duration, worker, output,
            text or f"{type(error).__name__}: {error}",
        ))
        if self.emit:
            self.emit(ev.TaskFailed(task, time.time(), error, text, output, duration, worker,
                                    started))
        if not self.options.keep_going:
            self.stopping = True
            return
        for skipped in self.readiness.skip_downstream(tid):
            self.result.skipped.append(self.nodes[skipped].task)
            self._settled(skipped, done=False)
            if self.emit:
                self.emit(ev.TaskSkipped(self.nodes[skipped].task, task))


def _rebuildable(task: Task[Any]) -> bool:
    """Whether a process worker can rebuild the task's inner function by calling its outer
    function again (:meth:`WorkItem.rebuilding`): not for a class task (its ``spec.fn`` is
    already small: its plain attributes, no handles) nor for one whose arguments hold
    tasks (``$task`` in its encoding), which would be planned again in the worker."""
    return not task.family.is_class and "$task" not in task.encoded


def _annotate(error: BaseException, task: Task[Any], remote: str = "") -> None:
    """Name the failing task on its own exception (shown under the traceback), and where it
    raised when that was in another process (``remote``: the worker's traceback text).

    The worker's frames go in the note, without the error line the traceback already ends
    with; a traceback of chained exceptions (or Python 3.10, without notes) becomes the
    exception's cause instead, as :mod:`concurrent.futures` does it.
    """
    note = f"while running task {task!r} ({task.family.name})"
    add_note = getattr(error, "add_note", None)
    header = "Traceback (most recent call last):\n"
    if remote and (add_note is None or remote.count(header) != 1 or not remote.startswith(header)):
        error.__cause__ = RemoteTraceback(remote)
        remote = ""
    if add_note is None:
        return
    if remote:
        lines = remote.splitlines()[1:]
        frames = next((i for i, line in enumerate(lines) if not line.startswith("  ")), len(lines))
        note += ", in a worker process:\n" + "\n".join(lines[:frames])
    add_note(note)

