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
   (records are written in batched transactions, at the latest every ``_FLUSH_SECONDS``),
   its dependents' counters drop, and newly ready tasks join their queue's list.
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
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import events as ev
from ._interrupts import InterruptGuard
from ._runlock import CHECK_SECONDS, RunLock
from ._types import TaskId
from ._worker import Outcome, Payload, Ref, WorkItem, uninstall_capture
from .debug import breakpoints_for
from .errors import (
    CorruptEntryError,
    StoreError,
    TaskFailedError,
    UnserializableResultError,
    UsageError,
    WorkerDiedError,
)
from .executors import ExecutorAdapter, broken_process_pool, resolve_executor
from .graph import Plan, plan
from .store import BlobRef, FailedRun, Meta, Record, Store, decode_payload, new_stamp
from .task import Task, TaskDirectory, TaskFamily, task_label

_BATCH_SECONDS = 0.02
_MAX_BATCH = 1024
_FLUSH_SECONDS = 0.2
_FLUSH_RECORDS = 1000


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

    Raises:
        Exception: the first failing task's own exception (when ``raise_on_failure``).
        KeyboardInterrupt: the run was interrupted; finished results are stored.
    """
    if progress:
        from .progress import reporter_for

        def family_mean(family: str) -> float | None:  # the live display's ETA prior
            from .history import family_mean_duration

            return family_mean_duration(Store.open(cache_dir), family)

        reporter = reporter_for(tracebacks=not raise_on_failure, family_mean=family_mean)
        try:
            return run(
                targets, executor=executor, max_workers=max_workers, rate_limits=rate_limits,
                keep_going=keep_going, force=force, force_upstream=force_upstream,
                code_check=code_check, cache_dir=cache_dir, raise_on_failure=raise_on_failure,
                subscribers=[*subscribers, reporter], debug=debug, trace=trace,
                show_locals=show_locals, retries=retries,
            )
        finally:
            reporter.close()
    if trace:
        return _run_traced(
            targets, trace, executor=executor, max_workers=max_workers, rate_limits=rate_limits,
            keep_going=keep_going, force=force, force_upstream=force_upstream,
            code_check=code_check, cache_dir=cache_dir, subscribers=subscribers,
            raise_on_failure=raise_on_failure, show_locals=show_locals, retries=retries,
        )
    for q, n in (rate_limits or {}).items():
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"The rate limit of queue {q!r} must be a whole number >= 1, not {n!r}.")
    started = time.perf_counter()
    store = Store.open(cache_dir)
    the_plan = plan(
        targets, store, force=force, force_upstream=force_upstream, code_check=code_check
    )
    result = RunResult(the_plan)
    emit = _emitter(subscribers)
    # A fresh target's value is read now: if it fails its check, the target runs again.
    target_payloads: dict[TaskId, tuple[bytes, bool]] = {}
    corrupt: list[tuple[Task[Any] | None, str]] = [(None, n) for n in store.take_notices()]
    for target in targets:
        node = the_plan.nodes[target.id]
        if node.reason is None and node.meta is not None and target.id not in target_payloads:
            try:
                target_payloads[target.id] = (
                    store.load_payload(target.family.dirname, target.id, node.meta),
                    node.meta.compressed,
                )
            except CorruptEntryError as exc:
                node.reason = "corrupt"
                corrupt.append((target, str(exc)))
    to_run = the_plan.to_run
    if emit:
        for task, message in corrupt:
            emit(ev.CorruptEntryFound(task, message))
        emit(ev.RunPlanned(len(the_plan.nodes), len(to_run),
                           {tid: the_plan.nodes[tid].reason or "" for tid in to_run}, time.time(),
                           the_plan))
    if to_run:
        adapter = resolve_executor(executor, max_workers)
        adapter.cache_root = store.root
        try:
            with InterruptGuard() as guard, breakpoints_for(adapter.kind, subscribers):
                the_run = _Run(the_plan, to_run, store, adapter, rate_limits or {}, keep_going,
                               emit, result, guard, retries)
                the_run.show_locals = show_locals
                if adapter.kind == "inline":
                    the_run.debug = _TRACING.get() or ("post_mortem" if debug else "")
                the_run.loop()
        finally:
            adapter.shutdown()
            uninstall_capture()
    else:
        result.reused = [node.task for node in the_plan.nodes.values()]
        if emit:
            for task in result.reused:
                emit(ev.TaskReused(task))
    for target in targets:
        if target.id in result.values or target.id in result.failed:
            continue
        node = the_plan.nodes[target.id]
        if node.reason is None:
            held = target_payloads.get(target.id)
            if held is None:
                result.values[target.id] = store.load_value(target.family.dirname, target.id)
            else:
                try:
                    result.values[target.id] = decode_payload(*held)
                except Exception as exc:
                    raise CorruptEntryError(
                        f"The stored result of {target!r} ({target.family.name}) cannot be "
                        f"decoded: {exc}"
                    ) from exc
    result.wall_time = time.perf_counter() - started
    if emit:
        emit(ev.RunFinished(len(result.ran), len(result.reused), len(result.failed),
                            len(result.skipped), result.wall_time))
    if debug and result.failed and not (isinstance(executor, str) and executor == "inline"):
        # Post-mortem: the failing task once more, in this process, under the debugger.
        failed = the_plan.nodes[next(iter(result.failed))].task
        run([failed], executor="inline", force=True, debug=True, code_check=code_check,
            cache_dir=cache_dir, raise_on_failure=False, show_locals=show_locals)
    if raise_on_failure and result.failed:
        raise next(iter(result.failed.values()))
    return result


_TRACING: contextvars.ContextVar[str] = contextvars.ContextVar("checkpoint_tracing", default="")
"""Set while :func:`_run_traced` runs the traced tasks: their items get ``debug="trace"``."""


def _run_traced(
    targets: Sequence[Task[Any]], trace: Sequence[Task[Any]], **options: Any
) -> RunResult:
    """``run(trace=...)``: prerequisites as usual, traced tasks in-process under the debugger
    (stopped at their first line), then the targets."""
    raise_on_failure = options["raise_on_failure"]
    prerequisites = list({d.id: d for t in trace for d in t.spec().dependencies}.values())
    if prerequisites:
        first = run(prerequisites, **{**options, "raise_on_failure": False})
        if not first.ok:
            if raise_on_failure and first.failed:
                raise next(iter(first.failed.values()))
            return first
    inline = {k: v for k, v in options.items() if k not in ("executor", "max_workers", "force")}
    token = _TRACING.set("trace")
    try:
        traced = run(list(trace), executor="inline", force=True,
                     **{**inline, "raise_on_failure": False, "subscribers": ()})
    finally:
        _TRACING.reset(token)
    if not traced.ok:
        if raise_on_failure and traced.failed:
            raise next(iter(traced.failed.values()))
        return traced
    return run(list(targets), **options)


def _emitter(subscribers: Sequence[ev.Subscriber]) -> Callable[[ev.Event], None] | None:
    if not subscribers:
        return None
    subs = list(subscribers)

    def emit(event: ev.Event) -> None:
        for sub in subs:
            sub(event)

    return emit


class _Run:
    """The state of one run; see the module docstring for the loop."""

    def __init__(
        self,
        the_plan: Plan,
        to_run: list[TaskId],
        store: Store,
        adapter: ExecutorAdapter,
        rate_limits: dict[str, int],
        keep_going: bool,
        emit: Callable[[ev.Event], None] | None,
        result: RunResult,
        guard: InterruptGuard | None = None,
        retries: int = 0,
    ) -> None:
        self.nodes = the_plan.nodes
        self.guard = guard or InterruptGuard()
        self.targets = {t.id for t in the_plan.targets}
        self.store = store
        self.adapter = adapter
        self.limits = rate_limits
        self.keep_going = keep_going
        self.emit = emit
        self.result = result
        self.done: queue.SimpleQueue[tuple[Future[list[Outcome]], list[WorkItem]]] = queue.SimpleQueue()
        self.debug = ""
        """Debug mode of every task (in-process runs only): "trace" or "post_mortem"."""
        self.show_locals = False

        run_set = set(to_run)
        self.remaining = len(to_run)
        self.waiting: dict[TaskId, int] = {}
        self.dependents: dict[TaskId, list[TaskId]] = {}
        self.consumers: dict[TaskId, int] = {}
        self.ready: dict[str, deque[TaskId]] = {}
        self.running: dict[str, int] = {}
        self.ema: dict[str, float] = {}
        self.inflight = 0
        self.stopping = False
        self.aborting = False
        self.payloads: dict[TaskId, Payload] = {}
        self.blob_dirs: dict[str, str] = {}
        self.stamps: dict[TaskId, str] = {}
        self.pending_records: list[Record] = []
        self.pending_failures: list[tuple[str, str, FailedRun]] = []
        self.first_pending = 0.0
        self.sources_sent: set[str] = set()
        self.retries = retries
        self.attempts: dict[TaskId, int] = {}
        self.prior_output: dict[TaskId, str] = {}
        """Output and tracebacks of a retried task's failed attempts, kept for its log."""
        self.rerunning: set[TaskId] = set()
        """Fresh tasks whose stored value failed its check: they run again in this run."""
        self.suspects: deque[TaskId] = deque()
        """Tasks of batches lost with a dead worker: re-run one at a time to find the culprit."""
        self.generation = 0
        """How many times the process pool was rebuilt."""
        self.lock: RunLock | None = None
        self.locking = False
        """Whether another run shares the cache: tasks are locked before they run."""
        self.held: set[TaskId] = set()
        """Tasks this run has locked (until their result is stored or they fail)."""
        self.blocked: list[TaskId] = []
        """Ready tasks another run is computing: tried again shortly."""
        self.inflight_batches: dict[int, list[WorkItem]] = {}
        self.last_check = 0.0
        self.batch_info: dict[int, tuple[int, bool]] = {}
        """``id(items)`` of a batch in flight: (pool generation, submitted alone as a suspect)."""
        self.to_prepare: dict[str, TaskFamily[..., Any]] = {}
        """The families that will store results, by directory name (see ``_prepare``)."""

        for tid, node in self.nodes.items():
            if tid not in run_set:
                if node.meta is not None:
                    self.stamps[tid] = node.meta.stamp
                result.reused.append(node.task)
                continue
            self.to_prepare[node.task.family.dirname] = node.task.family
            count = 0
            for dep in node.deps:
                self.consumers[dep] = self.consumers.get(dep, 0) + 1
                if dep in run_set:
                    count += 1
                    self.dependents.setdefault(dep, []).append(tid)
            self.waiting[tid] = count
            if count == 0:
                self._make_ready(tid)
        if emit:
            for task in result.reused:
                emit(ev.TaskReused(task))

    # --- the loop ---------------------------------------------------------------------

    def loop(self) -> None:
        try:
            self.store._ensure_root()
            self.lock = RunLock(self.store.root)
            self.locking = not self.lock.solo
            self.last_check = time.perf_counter()
            while self.remaining > 0:
                if self.lock.solo and time.perf_counter() - self.last_check >= CHECK_SECONDS:
                    self._check_others()
                self._submit_ready()
                if self.to_prepare:
                    self._prepare()
                if self.inflight == 0:
                    if self.blocked and not self.stopping:
                        # Another run computes them: store ours (it may wait for them), then
                        # wait for its results.
                        self._flush()
                        time.sleep(0.05)
                        continue
                    if not self.stopping and self.remaining > 0:
                        raise RuntimeError(
                            f"checkpoint's scheduler stalled with {self.remaining} task(s) left "
                            "and none running (please report this)."
                        )
                    break  # stopped after a failure: nothing runs, nothing can start
                self._collect(self._next_done())
                while True:
                    try:
                        item = self.done.get_nowait()
                    except queue.Empty:
                        break
                    self._collect(item)
                if self.pending_records and (
                    len(self.pending_records) >= _FLUSH_RECORDS
                    or time.perf_counter() - self.first_pending >= _FLUSH_SECONDS
                ):
                    self._flush()
        except BaseException as exc:
            self._abort(exc)
            raise
        finally:
            if self.lock is not None and self.aborting:
                self.lock.close()
        self._flush()
        self.lock.close()

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
        while True:
            try:
                # A timeout keeps the main thread responsive to Ctrl-C.
                return self.done.get(timeout=0.25 if not self.blocked else 0.05)
            except queue.Empty:
                if self.pending_records:
                    self._flush()
                if self.lock is not None and self.lock.solo:
                    self._check_others()
                if self.blocked:
                    self._submit_ready()

    # --- other runs on the same cache (see checkpoint._runlock) ------------------------

    def _check_others(self) -> None:
        """In solo mode: if another run has arrived, lock what is in flight and switch."""
        self.last_check = time.perf_counter()
        assert self.lock is not None
        if self.lock.alone():
            return
        self._flush()
        for items in self.inflight_batches.values():
            for item in items:
                if self.lock.try_task(item.id):
                    self.held.add(item.id)
        self.locking = True
        self.lock.end_solo()

    def _claim(self, tid: TaskId) -> bool:
        """Locking mode: lock a task before computing it; False if it must not run now
        (another run holds it, or stored it meanwhile and it was reused)."""
        assert self.lock is not None
        if not self.lock.try_task(tid):
            self.blocked.append(tid)
            return False
        self.held.add(tid)
        node = self.nodes[tid]
        meta = self.store.get_meta(node.task.family.dirname, tid)
        if (
            meta is not None and node.reason not in ("forced", "corrupt")
            and meta.fingerprint == node.task.family.fingerprint[0]
            and len(meta.deps) == len(node.deps)
            and all(meta.deps.get(dep) == self.stamps.get(dep) for dep in node.deps)
        ):
            self._adopt(tid, meta)
            return False
        return True

    def _adopt(self, tid: TaskId, meta: Meta) -> None:
        """Another run stored this task's result while we waited: reuse it."""
        node = self.nodes[tid]
        node.meta, node.reason = meta, None
        self.stamps[tid] = meta.stamp
        self._unlock(tid)
        self.remaining -= 1
        self.result.reused.append(node.task)
        if self.emit:
            self.emit(ev.TaskReused(node.task))
        for dependent in self.dependents.get(tid, ()):
            left = self.waiting[dependent] - 1
            self.waiting[dependent] = left
            if left == 0:
                self._make_ready(dependent)

    def _unlock(self, tid: TaskId) -> None:
        if tid in self.held:
            self.held.discard(tid)
            assert self.lock is not None
            self.lock.release_task(tid)

    def _abort(self, exc: BaseException) -> None:
        # Stop everything, then keep what had finished. A failure in here must not hide
        # the exception that brought us here (Ctrl-C, SIGTERM, a full disk).
        self.stopping = self.aborting = True
        try:
            self.adapter.shutdown(kill=True)
            while True:
                try:
                    self._collect(self.done.get_nowait())
                except queue.Empty:
                    break
            self._flush()
        except Exception:  # noqa: BLE001
            pass
        if self.emit and isinstance(exc, KeyboardInterrupt):
            # "done" counts what is stored: a result that could not be written is not kept.
            done = len(self.result.ran) - len(self.pending_records)
            not_run = max(0, self.remaining) + len(self.pending_records)
            self.emit(ev.RunInterrupted(done, not_run))

    # --- submitting -------------------------------------------------------------------

    def _make_ready(self, tid: TaskId) -> None:
        q = self.nodes[tid].task.family.queue
        dq = self.ready.get(q)
        if dq is None:
            dq = self.ready[q] = deque()
        dq.append(tid)

    def _submit_ready(self) -> None:
        if self.stopping:
            return
        if self.blocked:
            blocked, self.blocked = self.blocked, []
            for tid in blocked:
                self._make_ready(tid)
        if self.suspects:
            # A worker died: run the tasks that were in flight alone, one after another, so
            # that the one that kills its worker is known and the others are not blamed.
            while self.suspects and self.inflight == 0:
                tid = self.suspects.popleft()
                q = self.nodes[tid].task.family.queue
                self.running[q] = self.running.get(q, 0) + 1
                self._submit([tid], isolated=True)
            return
        workers = self.adapter.workers
        # A batch or more beyond the workers (``prefetch``): a worker that finishes picks the
        # next batch up at once instead of waiting for this thread to collect and submit.
        max_inflight = 1 if self.adapter.kind == "inline" else workers + self.adapter.prefetch
        while self.inflight < max_inflight:
            total_ready = sum(len(dq) for dq in self.ready.values())
            if total_ready == 0:
                return
            fair_share = max(1, math.ceil(total_ready / workers))
            batch: list[TaskId] = []
            for q, dq in self.ready.items():
                if not dq:
                    continue
                limit = self.limits.get(q)
                slots = _MAX_BATCH if limit is None else limit - self.running.get(q, 0)
                if slots <= 0:
                    continue
                size = min(slots, self._batch_size(q), fair_share)
                batch = [dq.popleft() for _ in range(min(size, len(dq)))]
                self.running[q] = self.running.get(q, 0) + len(batch)
                break
            if not batch:
                return  # every ready task waits for a queue slot
            self._submit(batch)

    def _batch_size(self, q: str) -> int:
        mean = self.ema.get(q)
        if mean is None:
            return 1
        return max(1, min(_MAX_BATCH, int(_BATCH_SECONDS / max(mean, 1e-6))))

    def _submit(self, batch: list[TaskId], isolated: bool = False) -> None:
        items: list[WorkItem] = []
        payloads: dict[TaskId, Payload] = {}
        now = time.time()
        pickled = self.adapter.kind == "pickled"
        for tid in batch:
            if self.locking and tid not in self.held and not self._claim(tid):
                self._release(tid)
                continue
            node = self.nodes[tid]
            task = node.task
            held: list[tuple[TaskId, Payload]] = []
            blocked: list[TaskId] = []
            for dep in node.deps:
                if self.rerunning and dep in self.rerunning:
                    blocked.append(dep)
                    continue
                try:
                    held.append((dep, self._payload(dep)))
                except CorruptEntryError as exc:
                    self._rerun_corrupt(dep, str(exc))
                    blocked.append(dep)
            if blocked:
                self._release(tid)
                self._wait_for(tid, blocked)
                continue
            spec = task.spec()
            template = [self._template(req, task) for req in spec.requirements]
            for dep, payload in held:
                payloads[dep] = payload
                left = self.consumers[dep] - 1
                self.consumers[dep] = left
                if left == 0 and dep not in self.targets:
                    self.payloads.pop(dep, None)
            if pickled and not task.family.is_class and "$task" not in task.encoded:
                # Cheaper to pickle than the inner closure: the worker calls the outer
                # function again to get it (the family pickles by reference when importable).
                # A class task's spec.fn is already small: its plain attributes, no handles.
                item = WorkItem(tid, None, template, task.family.compress_level,
                                call=(task.family, task.args, task.kwargs))
            else:
                code = getattr(spec.fn, "__code__", None)
                item = WorkItem(tid, spec.fn, template, task.family.compress_level,
                                filename=code.co_filename if pickled and code else "")
            item.blob_dir = self._blob_dir(task.family.dirname)
            item.debug = self.debug
            item.show_locals = self.show_locals
            items.append(item)
            if self.emit:
                self.emit(ev.TaskStarted(task, now))
        if not items:
            return
        try:
            future = self.adapter.submit(items, payloads)
        except broken_process_pool() as exc:  # broke before we noticed: collect it as such
            future = Future()
            future.set_exception(exc)
        self.inflight += 1
        if isolated or self.generation:
            self.batch_info[id(items)] = (self.generation, isolated)
        if self.lock is not None and self.lock.solo:
            self.inflight_batches[id(items)] = items
        future.add_done_callback(lambda f: self.done.put((f, items)))

    def _wait_for(self, tid: TaskId, deps: list[TaskId]) -> None:
        """Make a task (out of its queue slot) wait again, for ``deps`` to finish."""
        self.waiting[tid] = len(deps)
        for dep in deps:
            self.dependents.setdefault(dep, []).append(tid)

    def _rerun_corrupt(self, tid: TaskId, message: str) -> None:
        """A fresh task's stored value failed its check: report it and run the task again."""
        if tid in self.rerunning:
            return
        node = self.nodes[tid]
        self.rerunning.add(tid)
        if self.emit:
            self.emit(ev.CorruptEntryFound(node.task, message))
        node.reason = "corrupt"
        self.payloads.pop(tid, None)
        self.remaining += 1
        with contextlib.suppress(ValueError):
            self.result.reused.remove(node.task)
        for dep in node.deps:
            self.consumers[dep] = self.consumers.get(dep, 0) + 1
        self.waiting[tid] = 0
        self._make_ready(tid)

    def _template(self, req: Any, task: Task[Any]) -> Any:
        if isinstance(req, Task):
            return Ref(req.id)
        if isinstance(req, TaskDirectory):
            return self.store.prepare_data_dir(task.family.dirname, task.id)
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

    def _payload(self, tid: TaskId) -> Payload:
        held = self.payloads.get(tid)
        if held is None:
            node = self.nodes[tid]
            family = node.task.family.dirname
            assert node.meta is not None
            if node.meta.blob:  # the worker reads it from the cache directly
                held = self.store.blob_ref(family, node.meta)
            else:
                held = (self.store.load_payload(family, tid, node.meta), node.meta.compressed)
            self.payloads[tid] = held
        return held

    # --- collecting -------------------------------------------------------------------

    def _lost(self, items: list[WorkItem], error: type[TaskFailedError], message: str) -> list[Outcome]:
        """Fail each task of a batch that never reported: ``message`` names it as ``{task}``."""
        outcomes = []
        for item in items:
            task = self.nodes[item.id].task
            text = message.format(task=task_label(task))
            outcomes.append(Outcome(item.id, time.time(), 0.0, error=error(
                text, task=repr(task), family=task.family.name)))
        return outcomes

    def _collect(self, done: tuple[Future[list[Outcome]], list[WorkItem]]) -> None:
        future, items = done
        self.inflight -= 1
        generation, isolated = (
            self.batch_info.pop(id(items), (0, False)) if self.batch_info else (0, False)
        )
        if self.inflight_batches:
            self.inflight_batches.pop(id(items), None)
        try:
            outcomes = future.result()
        except CancelledError:
            if self.aborting:  # we cancelled it: these tasks did not run
                for item in items:
                    self._release(item.id)
                return
            # Someone else cancelled it (the executor was shut down under us): they fail.
            outcomes = self._lost(items, TaskFailedError, "{task} was cancelled by its executor "
                                  "before it ran (was the executor shut down during the run?).")
        except broken_process_pool():
            if self.aborting:  # we killed the workers: these tasks did not run
                for item in items:
                    self._release(item.id)
                return
            if generation == self.generation and self.adapter.rebuild():
                self.generation += 1
            elif generation == self.generation:  # not ours to rebuild: these tasks fail
                isolated = True
            if not isolated:
                # Which task killed the worker is unknown (a broken pool fails every batch
                # in flight): run each of them again, alone.
                for item in items:
                    self._release(item.id)
                    self.suspects.append(item.id)
                return
            outcomes = self._lost(items, WorkerDiedError, "{task}: worker died while running it "
                                  "(killed, crashed, e.g. a segmentation fault, or out of memory).")
        except BaseException as exc:  # noqa: BLE001 - the executor itself failed
            outcomes = [Outcome(item.id, time.time(), 0.0, error=exc) for item in items]
        for outcome in outcomes:
            self._release(outcome.id)
            if outcome.corrupt_dep:
                dep = outcome.corrupt_dep
                self._rerun_corrupt(dep, outcome.corrupt_text)
                for d in self.nodes[outcome.id].deps:  # it will be submitted again
                    self.consumers[d] = self.consumers.get(d, 0) + 1
                self._wait_for(outcome.id, [dep])
            elif outcome.error is not None:
                self._failed(outcome)
            else:
                self._finished(outcome)

    def _release(self, tid: TaskId) -> None:
        q = self.nodes[tid].task.family.queue
        self.running[q] -= 1

    def _finished(self, out: Outcome) -> None:
        node = self.nodes[out.id]
        task = node.task
        family = task.family
        if self.prior_output:
            out.output = self.prior_output.pop(out.id, "") + out.output
        if self.rerunning:
            self.rerunning.discard(out.id)
        fingerprint = family.fingerprint
        stamp = new_stamp()
        self.stamps[out.id] = stamp
        meta = Meta(
            expr=task.expression(),
            args=task.encoded,
            fingerprint=fingerprint[0],
            stamp=stamp,
            deps={dep: self.stamps[dep] for dep in node.deps},
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
        source = None
        if fingerprint[0] not in self.sources_sent:
            self.sources_sent.add(fingerprint[0])
            source = fingerprint
        if not self.pending_records:
            self.first_pending = time.perf_counter()
        self.pending_records.append(
            Record(family.dirname, out.id, meta, out.payload, source=source, log=out.output,
                   replaces=node.meta.blob if node.meta is not None else "")
        )
        held: Payload
        if out.payload is None:
            held = self.store.blob_ref(family.dirname, meta)
        else:
            held = (out.payload, meta.compressed)
        if self.consumers.get(out.id) or out.id in self.targets:
            self.payloads[out.id] = held
        if out.id in self.targets:
            self.result.values[out.id] = (
                held.load() if isinstance(held, BlobRef) else decode_payload(*held)
            )
        self.result.ran.append(task)
        self.result.durations[out.id] = out.duration
        self.remaining -= 1
        q = family.queue
        prev = self.ema.get(q)
        self.ema[q] = out.duration if prev is None else 0.7 * prev + 0.3 * out.duration
        for dependent in self.dependents.get(out.id, ()):
            left = self.waiting[dependent] - 1
            self.waiting[dependent] = left
            if left == 0:
                self._make_ready(dependent)
        if self.emit:
            self.emit(ev.TaskFinished(task, time.time(), out.duration, out.size,
                                      out.output, out.worker))

    def _failed(self, out: Outcome) -> None:
        node = self.nodes[out.id]
        task = node.task
        error = out.error
        assert error is not None
        if out.unpicklable_result:
            wrapped = UnserializableResultError(
                f"The result of task {task!r} cannot be pickled, so it cannot be stored: "
                f"{type(error).__name__}: {error}. Return picklable data (or save the object "
                "to a TaskDirectory() and return its path).",
                task=repr(task), family=task.family.name,
            )
            wrapped.__cause__ = error
            error = wrapped
        elif out.error_text and error.__traceback__ is None and error.__cause__ is None:
            error.__cause__ = RemoteTraceback(out.error_text)
        allowed = max(self.retries, task.family.retries)
        if allowed and not self.aborting:
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
                for dep in node.deps:  # it will be submitted again
                    self.consumers[dep] = self.consumers.get(dep, 0) + 1
                self._make_ready(out.id)
                return
        if self.prior_output:
            out.output = self.prior_output.pop(out.id, "") + out.output
        if self.held:
            self._unlock(out.id)
        if not isinstance(error, TaskFailedError):
            _annotate(error, task)
        self.result.failed[out.id] = error
        self.remaining -= 1
        self.pending_failures.append((task.family.dirname, out.id, FailedRun(
            task.expression(), out.started, out.duration, out.worker, out.output, out.error_text
            or f"{type(error).__name__}: {error}",
        )))
        if self.emit:
            self.emit(ev.TaskFailed(task, time.time(), error, out.error_text, out.output,
                                    out.duration, out.worker))
        if not self.keep_going:
            self.stopping = True
            return
        # Skip everything downstream of the failed task.
        stack = list(self.dependents.get(out.id, ()))
        while stack:
            tid = stack.pop()
            if self.waiting.get(tid, 0) < 0:
                continue
            self.waiting[tid] = -1
            skipped = self.nodes[tid].task
            self.result.skipped.append(skipped)
            self.remaining -= 1
            if self.emit:
                self.emit(ev.TaskSkipped(skipped, task))
            stack.extend(self.dependents.get(tid, ()))

    def _flush(self) -> None:
        # An interrupt waits for the transactions; records are dropped only once stored
        # (writing them again after an interrupted attempt is harmless).
        with self.guard.critical():
            if self.pending_records:
                self.store.put_many(self.pending_records)
                if self.held:  # stored: other runs may now take these tasks (and reuse them)
                    for record in self.pending_records:
                        self._unlock(record.id)
                self.pending_records = []
            if self.pending_failures:
                self.store.put_failed_runs(self.pending_failures)
                self.pending_failures = []


def _annotate(error: BaseException, task: Task[Any]) -> None:
    """Name the failing task on its own exception (shown under the traceback)."""
    note = f"while running task {task!r} ({task.family.name})"
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)

