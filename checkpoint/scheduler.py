"""Run a plan: hand ready tasks to workers within the queue limits, store what finishes.

:func:`run` plans, pulls from a remote cache, then runs :meth:`_Run.loop`. One thread --
the caller's -- owns all state; workers only report, through futures whose done-callbacks
put their batch on a queue (``Submitter.done``). Each step of the loop is a part in its
own module (docs/architecture.md draws them):

1. **Submit** (:mod:`checkpoint._submission`). While fewer than ``workers + prefetch``
   batches are in flight (a batch queued behind each running one keeps workers busy between
   round trips), take ready tasks (all prerequisites done) from the per-queue ready lists,
   never exceeding a queue's ``rate_limits`` entry (:mod:`checkpoint._admission`: a batch
   of k tasks holds k slots until it returns). A batch holds one task until its queue's
   tasks are known to be short; then it grows so that a batch takes about
   ``BATCH_SECONDS`` (at most ``MAX_BATCH``, and never more than a fair share of the ready
   tasks), which amortizes the cost of a submission over many tiny tasks.
2. **Collect** (:mod:`checkpoint._collection`, :mod:`checkpoint._results`). Each outcome
   is handled on its own: a result becomes a store record (:mod:`checkpoint._recorder`:
   written in batched transactions, at the latest every ``FLUSH_SECONDS``; with threads or
   inline, at the end of each collect round and before they are reported done, since a
   task there can crash this process), its dependents' counters drop, and newly ready
   tasks join their queue's list (:mod:`checkpoint._flow`).
3. **Run again** (:mod:`checkpoint._recovery`) what gave no result: a failed task with
   retries left, the tasks of a dead worker (one at a time, to find the one that kills
   it), a task whose prerequisite's value was damaged (once that value is recomputed).
4. **Failures.** By default the first failure stops new submissions; running batches finish
   and are stored, then the task's own exception is re-raised. With ``keep_going`` the
   failed task's dependents are skipped and independent branches go on.
5. **Other runs** (:mod:`checkpoint._claims`). Once another run shares the cache, each task
   is locked before it runs, and what another run stored meanwhile is adopted.
6. **Interrupts.** Ctrl-C stops submissions, cancels queued batches, kills worker processes
   that checkpoint created, stores what had finished, and re-raises ``KeyboardInterrupt``.

A prerequisite's value stays in memory while a dependent that reads it has not settled
(:mod:`checkpoint._values`).
"""
from __future__ import annotations

import contextlib
import contextvars
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import events as ev
from ._adapter import ExecutorAdapter
from ._admission import Admission
from ._claims import Claims
from ._collection import Collector
from ._coordination import Coordination
from ._flow import Emit, RunState, TaskFlow
from ._flow import RemoteTraceback as RemoteTraceback
from ._interrupts import InterruptGuard
from ._readiness import Readiness
from ._recorder import Recorder
from ._recovery import Recovery
from ._results import Results
from ._submission import Returned, Submitter
from ._text import first_five
from ._types import DebugMode, ExecutorKind, FamilyDir, Reason, TaskId
from ._values import RunValues
from ._worker import uninstall_capture
from .debug import breakpoints_for
from .errors import CorruptEntryError, StaleModuleError, StoreError, UsageError
from .executors import resolve_executor
from .graph import Plan, plan
from .store import Store, decode_payload
from .task import Task, TaskFamily, check_timeout

if TYPE_CHECKING:
    from .remote import Remote


@dataclass
class RunResult:
    """What a run did: the targets' values and per-task statistics."""

    plan: Plan
    values: dict[TaskId, Any] = field(default_factory=dict)
    """Values of the targets that could be built, by task id."""
    ran: list[Task[object]] = field(default_factory=list)
    reused: list[Task[object]] = field(default_factory=list)
    failed: dict[TaskId, BaseException] = field(default_factory=dict)
    """Exceptions of the tasks that failed, in the order they failed."""
    skipped: list[Task[object]] = field(default_factory=list)
    kept: list[Task[object]] = field(default_factory=list)
    """Tasks planned to run that did not need to: the prerequisites that re-ran gave the
    same values as before (early cutoff). They are also in ``reused``."""
    pulled: list[Task[object]] = field(default_factory=list)
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
    targets: Sequence[Task[object]],
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
    trace: Sequence[Task[object]] = (),
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
    targets: Sequence[Task[object]], options: RunOptions, subscribers: list[ev.Subscriber],
    trace: Sequence[Task[object]] = (),
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
    targets: Sequence[Task[object]], options: RunOptions, subscribers: list[ev.Subscriber],
    store: Store, coordination: Coordination | None, started: float,
) -> RunResult:
    """Plan, pull what a remote cache has, run the rest, and read the targets' values."""
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
    if to_run:
        _execute(the_plan, to_run, options, subscribers, store, coordination, emit, result)
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


def _shut_down(adapter: ExecutorAdapter) -> None:
    """Shut the executor down, waiting for its workers to exit. Ctrl-C, SIGTERM or SIGHUP
    meanwhile (a worker that cannot exit: a thread its task left running) ends the workers
    and every process they started, then unwinds as during the run (ux6 2.0: Ctrl-C left the
    run waiting, SIGTERM left the tasks' processes behind)."""
    with InterruptGuard():
        try:
            adapter.shutdown()
        except KeyboardInterrupt:
            adapter.shutdown(kill=True)
            raise


def _execute(
    the_plan: Plan, to_run: list[TaskId], options: RunOptions, subscribers: list[ev.Subscriber],
    store: Store, coordination: Coordination | None, emit: Emit | None, result: RunResult,
) -> None:
    """Run the tasks ``to_run`` on the run's executor (:class:`_Run`), then shut it down."""
    # Nothing runs unless its result can be stored.
    store.check_writable({the_plan.nodes[tid].task.family.dirname for tid in to_run})
    adapter = resolve_executor(options.executor, options.max_workers)
    adapter.cache_root = store.root
    try:
        with InterruptGuard() as guard, breakpoints_for(adapter.kind, subscribers):
            debug = _TRACING.get() or (DebugMode.POST_MORTEM if options.debug else None)
            _Run(the_plan, to_run, store, adapter, options, emit, result, guard,
                 debug=debug if adapter.kind is ExecutorKind.INLINE else None,
                 coordination=coordination).loop()
    finally:
        _shut_down(adapter)
        uninstall_capture()


def _read_fresh_targets(
    targets: Sequence[Task[object]], the_plan: Plan, store: Store,
    emit: Callable[[ev.Event], None] | None,
) -> dict[TaskId, tuple[bytes, bool]]:
    """Read the fresh targets' values now: one that fails its check runs again."""
    payloads: dict[TaskId, tuple[bytes, bool]] = {}
    corrupt: list[tuple[Task[object] | None, str]] = [(None, n) for n in store.take_notices()]
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
    targets: Sequence[Task[object]], the_plan: Plan, store: Store,
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


_TRACING: contextvars.ContextVar[DebugMode | None] = contextvars.ContextVar(
    "checkpoint_tracing", default=None)
"""Set while :func:`_run_traced` runs the traced tasks: their items get ``DebugMode.TRACE``."""


def _run_traced(
    targets: Sequence[Task[object]], trace: Sequence[Task[object]], options: RunOptions,
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
    token = _TRACING.set(DebugMode.TRACE)
    try:
        traced = _run(list(trace), replace(quiet, executor="inline", max_workers=None, force=True), [])
    finally:
        _TRACING.reset(token)
    if not traced.ok:
        if options.raise_on_failure and traced.failed:
            raise next(iter(traced.failed.values()))
        return traced
    return _run(list(targets), options, subscribers)


def _emitter(subscribers: Sequence[ev.Subscriber]) -> Emit | None:
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


def _what_was_stored(stored: Sequence[Task[object]]) -> str:
    """What a run stopped by a :class:`StaleModuleError` kept, for its message."""
    if not stored:
        return "No result of this run was stored."
    shown = first_five([repr(t) for t in stored])
    return (f"{len(stored)} task{'s' if len(stored) > 1 else ''} had finished before the "
            f"edit was noticed and {'are' if len(stored) > 1 else 'is'} stored ({shown}): "
            "a stored result whose code the edit changed runs again next time.")


class _Run:
    """One run's loop (see the module docstring) over its parts, each in its own module:
    :class:`Submitter` sends batches, :class:`Collector` takes them back, :class:`Results`
    turns outcomes into entries and errors, :class:`Recovery` runs again what gave no
    result, :class:`Claims` locks tasks against other runs, and :class:`TaskFlow` moves
    tasks from state to state; all over one :class:`RunState`."""

    def __init__(
        self,
        the_plan: Plan,
        to_run: list[TaskId],
        store: Store,
        adapter: ExecutorAdapter,
        options: RunOptions,
        emit: Emit | None,
        result: RunResult,
        guard: InterruptGuard | None = None,
        debug: DebugMode | None = None,
        coordination: Coordination | None = None,
    ) -> None:
        self.nodes = the_plan.nodes
        self.to_run = to_run
        self.store = store
        self.adapter = adapter
        self.result = result
        self.guard = guard or InterruptGuard()
        if coordination is None:  # the cache did not exist before planning (see :func:`_run`)
            store.tree.ensure()
            coordination = Coordination(store.root)
        self.coordination = coordination
        # Tasks on threads (or inline) share this process: one that crashes it (a segfault in
        # C code) would take every result not yet stored with it. So their results are
        # stored at the end of each collect round, before they are reported done.
        self.recorder = Recorder(store, self.guard, coordination.unlock, emit=emit,
                                 store_first=adapter.kind is not ExecutorKind.PICKLED)
        if emit is not None and self.recorder.store_first:
            emit = self.recorder.in_order
        self.emit = emit
        targets = {t.id for t in the_plan.targets}
        self.values = RunValues(store, self._family_dir, targets)
        self.values.flush = self.recorder.flush
        self.readiness = Readiness()
        state = RunState(
            nodes=self.nodes, store=store, readiness=self.readiness,
            admission=Admission(options.rate_limits, adapter.workers), values=self.values,
            recorder=self.recorder, coordination=coordination, result=result, emit=emit,
        )
        self._assemble(state, options, debug, targets)
        self.to_prepare: dict[FamilyDir, TaskFamily[..., object]] = {}
        """The families that will store results, by directory name (see ``_prepare``)."""

    def _assemble(self, state: RunState, options: RunOptions, debug: DebugMode | None,
                  targets: set[TaskId]) -> None:
        """The loop's parts, over the state they share."""
        self.flow = TaskFlow(state, options.keep_going)
        self.recovery = Recovery(state, self.flow, self.adapter, options.retries)
        self.claims = Claims(state, self.flow)
        self.submitter = Submitter(state, self.flow, self.claims, self.recovery, self.adapter,
                                   debug=debug, show_locals=options.show_locals,
                                   timeout=options.timeout)
        results = Results(state, self.flow, self.recovery, targets)
        self.collector = Collector(state, self.flow, self.recovery, results, self.submitter,
                                   self.guard)

    def _family_dir(self, tid: TaskId) -> FamilyDir:
        return self.nodes[tid].task.family.dirname

    def loop(self) -> None:
        """Run the tasks to the end; on any exception, abort (see :meth:`_abort`)."""
        try:
            self._start()
            while self.readiness.unsettled > 0:
                if self.coordination.check_due():
                    self._check_others()
                self.submitter.submit_ready()
                if self.to_prepare:
                    self._prepare()
                if self.submitter.inflight:
                    self._collect_round()
                elif not self._wait_for_others():
                    break
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            if self.flow.aborting:
                self.coordination.close()
        self.recorder.flush()
        self.coordination.close()

    def _start(self) -> None:
        """The tasks outside the run are reused; those in it wait for their prerequisites,
        or are ready."""
        run_set = set(self.to_run)
        ready = []
        for tid, node in self.nodes.items():
            if node.meta is not None:
                self.values.entries[tid] = node.meta
            if tid not in run_set:
                self.result.reused.append(node.task)
                continue
            self.to_prepare[node.task.family.dirname] = node.task.family
            for dep in node.deps:
                self.values.add_reader(dep)
            if self.readiness.add(tid, node.deps):
                ready.append(tid)
        if self.emit and self.result.reused:
            self.emit(ev.TasksReused(list(self.result.reused)))
        from .fingerprint import note_imported  # (families fingerprinted later: see there)

        note_imported({family.module for family in self.to_prepare.values()})
        for tid in ready:
            self.flow.ready(tid)

    def _wait_for_others(self) -> bool:
        """Nothing in flight: whether the run goes on (another run computes what is left:
        wait a moment for it) or ends."""
        if not self.readiness.unsettled:
            return False  # the last tasks were adopted from another run
        if self.flow.stopping:
            return False  # stopped after a failure: nothing runs, nothing can start
        if not self.coordination.blocked:
            raise RuntimeError(
                f"checkpoint's scheduler stalled with {self.readiness.unsettled} "
                "task(s) left and none running (please report this)."
            )
        # Another run computes them: store ours (it may wait for them), then wait for its
        # results.
        self.recorder.flush()
        time.sleep(0.05)
        return True

    def _collect_round(self) -> None:
        """Collect a batch (waiting for one), then every other batch back by now."""
        self.collector.collect(self._next_done())
        done = self.submitter.done
        while True:
            try:
                returned = done.get_nowait()
            except queue.Empty:
                break
            self.collector.collect(returned)
        if self.flow.fused:
            self.collector.handed_over()
        if self.recorder.due():
            self.recorder.flush()

    def _next_done(self) -> Returned:
        while True:
            try:
                # A timeout keeps the main thread responsive to Ctrl-C.
                return self.submitter.done.get(
                    timeout=0.25 if not self.coordination.blocked else 0.05)
            except queue.Empty:
                if self.flow.fused:
                    self.collector.handed_over()
                if self.recorder.records:
                    self.recorder.flush()
                if self.coordination.solo:
                    self._check_others()
                if self.coordination.blocked:
                    self.submitter.submit_ready()

    def _check_others(self) -> None:
        """Alone so far: switch to locking mode if another run has arrived."""
        in_flight = [item.id for items in self.submitter.inflight.values() for item in items]
        self.claims.check_others(in_flight, self.recorder.flush)

    def _prepare(self) -> None:
        """Fingerprint the families that will store results and open their indexes now,
        while the first batches run. Done when their first result arrives, it took this
        thread ~5-10 ms holding the GIL, which delayed every thread worker then finishing
        a task (and all the work queued behind them)."""
        families, self.to_prepare = self.to_prepare, {}
        for dirname, family in families.items():
            family.fingerprint  # noqa: B018 - computed once per family, then cached
            with contextlib.suppress(StoreError):  # a head start only: writing reports it
                self.store.indexes.get(dirname)  # opened (or made) ahead of its first write

    def _abort(self, exc: BaseException) -> None:
        # Stop everything, then keep what had finished. A failure in here must not hide
        # the exception that brought us here (Ctrl-C, SIGTERM, a full disk).
        self.flow.stopping = self.flow.aborting = True
        try:
            if self.flow.fused:  # (before the workers' notes go with the pool)
                self.collector.handed_over()
            self.adapter.shutdown(kill=True)
            while True:
                try:
                    future, items = self.submitter.done.get_nowait()
                except queue.Empty:
                    break
                if isinstance(exc, KeyboardInterrupt):
                    # [signals] Not stored: the task may have returned early because the
                    # signal also ended a process it waited for (a terminal's Ctrl-C reaches
                    # its whole foreground process group: threads' children, Dask's workers').
                    self.submitter.inflight.pop(id(items), None)
                    self.flow.not_run([i for i in items if i.id not in self.collector.early])
                    continue
                try:
                    self.collector.collect((future, items))
                except Exception:  # noqa: BLE001 - (its family's code changed, say): not kept
                    continue
            self.recorder.flush()
        except Exception:  # noqa: BLE001
            pass
        if isinstance(exc, StaleModuleError) and exc.args:  # a family fingerprinted in the run
            waiting = {record.id for record in self.recorder.records}
            stored = [t for t in self.result.ran if t.id not in waiting]
            exc.args = (f"{exc.args[0]} {_what_was_stored(stored)}", *exc.args[1:])
        if self.emit and isinstance(exc, KeyboardInterrupt):
            # "done" counts what is stored: a result that could not be written is not kept.
            unstored = len(self.recorder.records)
            assert self.recorder.emit is not None  # not deferred: the store may have failed
            self.recorder.emit(ev.RunInterrupted(len(self.result.ran) - unstored,
                                                 max(0, self.readiness.unsettled) + unstored))
