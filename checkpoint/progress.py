"""Reporters: turn a run's events (:mod:`checkpoint.events`) into what a person watches.

* :class:`LiveReporter`, on a terminal: a rich live display with an overall bar (settled/total,
  counting reused tasks), elapsed time and ETA; one row per task family (done/total, running,
  failed); the running tasks with their arguments and elapsed time (a bounded list, "+N
  more"); failures in red as they happen, and each task's output above the display when
  ``show_output`` asks for it.
* :class:`PlainReporter`, anywhere else (piped, CI, ``--no-progress``, ``TERM=dumb``): one line per finished, failed or skipped task, no escape codes.
* Both end with a summary (ran, pulled from a remote cache if any, reused, failed, skipped,
  wall time, the slowest tasks) and
  then, for each failed task, its captured output and traceback.

:func:`reporter_for` picks one, as the CLI and ``run(progress=True)`` do.

**Cost.** A run of 10,000 tiny tasks emits 20,000 events, so each event updates counters in
O(1) (:class:`Tally`: per-family counts, the running tasks in an insertion-ordered dict, a
bounded heap of the slowest). The live display renders from those counters at most
``refresh_per_second`` times a second, looking at a bounded number of rows, on the thread
that delivers the events (a helper thread redraws only when events pause). rich is imported only when a live display starts, so piped and warm runs never
pay for its import.

**ETA.** Work is measured in task-seconds. A task that will run is expected to take what it
took last time (its stored metadata), else its family's mean (stored results of the plan and
this run's; for a family none of whose planned tasks ran before, the mean over a sample of its
stored entries when a ``family_mean`` lookup is given, as the CLI and
``run(progress=True)`` do), else the mean over
all families. Remaining work divided by the rate at which work got
done so far (task-seconds per second of wall time, which folds in parallelism and overhead)
gives the ETA.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import heapq
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

from . import events as ev
from ._text import task_label
from ._types import FamilyName, TaskId
from .errors import UnserializableResultError

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.live import Live
    from rich.text import Text

    from ._notebook_screen import NotebookScreen
    from .store import Store
    from .task import Task

Clock = Callable[[], float]


class Reporter(Protocol):
    """A run's subscriber that shows progress; :meth:`close` ends its display."""

    def __call__(self, event: ev.Event) -> None: ...

    def close(self) -> None: ...


# --- counting ---------------------------------------------------------------------------


class FamilyTally:
    """Counters of one task family."""

    __slots__ = ("name", "total", "done", "running", "failed", "skipped",
                 "known_left", "unknown_left", "dur_sum", "dur_n")

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.done = 0
        """Tasks that finished or were reused."""
        self.running = 0
        self.failed = 0
        self.skipped = 0
        self.known_left = 0.0
        """Sum of the previous durations of the tasks still to run that have one."""
        self.unknown_left = 0
        """Tasks still to run without a previous duration."""
        self.dur_sum = 0.0
        self.dur_n = 0


class Tally:
    """A run's state as counters, updated in O(1) per event (see the module docstring)."""

    def __init__(
        self,
        clock: Clock = time.monotonic,
        slowest: int = 5,
        family_mean: Callable[[str], float | None] | None = None,
    ) -> None:
        self.clock = clock
        self.family_mean = family_mean
        """``family directory name -> mean duration`` of its stored entries (an ETA prior)."""
        self.started_at: float | None = None
        self.total = 0
        self.to_run = 0
        self.ran = 0
        self.reused = 0
        self.kept = 0
        """Reused tasks that were planned to run (early cutoff); also counted in ``reused``."""
        self.pulled = 0
        """Tasks downloaded from a remote cache (not counted in ``reused``)."""
        self._pulled: set[TaskId] = set()
        self.failed = 0
        self.skipped = 0
        self.families: dict[str, FamilyTally] = {}
        self.running: dict[TaskId, tuple[Task[object], float]] = {}
        """Tasks handed to workers, oldest first, with the clock time they started."""
        self.estimates: dict[TaskId, float] = {}
        self.done_work = 0.0
        """Task-seconds of the tasks that finished."""
        self.failures: list[ev.TaskFailed] = []
        self.wall_time: float | None = None
        self.interrupted: ev.RunInterrupted | None = None
        self._slowest_n = slowest
        self._slowest: list[tuple[float, int, Task[object]]] = []
        self._seq = itertools.count()

    @property
    def settled(self) -> int:
        """Tasks that need nothing more: finished, reused, failed or skipped."""
        return self.ran + self.reused + self.pulled + self.failed + self.skipped

    def family(self, task: Task[object]) -> FamilyTally:
        name = task.family.name
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = FamilyTally(name)
        return fam

    def update(self, event: ev.Event) -> None:
        """Apply one event."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def planned(self, event: ev.RunPlanned) -> None:
        self.started_at = self.clock()
        self.total = event.total
        self.to_run = event.to_run
        plan = event.plan
        if plan is None or not event.to_run:
            return  # a warm run shows only its summary: spare it a pass over the plan
        from .history import duration_estimates

        self.estimates, known = duration_estimates(plan)
        dirnames: dict[str, str] = {}
        for tid, node in plan.nodes.items():
            fam = self.family(node.task)
            fam.total += 1
            if node.reason is not None:
                est = self.estimates.get(tid)
                if est is None:
                    fam.unknown_left += 1
                    dirnames.setdefault(fam.name, node.task.family.dirname)
                else:
                    fam.known_left += est
        for name, (total, count) in known.items():
            fam = self.families[name]
            fam.dur_sum += total
            fam.dur_n += count
        if self.family_mean is not None:
            for name, dirname in dirnames.items():
                fam = self.families[name]
                if not fam.dur_n:
                    mean = self.family_mean(dirname)
                    if mean is not None:  # counts as one observation: this run's soon outweigh it
                        fam.dur_sum, fam.dur_n = mean, 1

    def started(self, event: ev.TaskStarted) -> None:
        self.running[event.task.id] = (event.task, self.clock())
        self.family(event.task).running += 1

    def _settle(self, task: Task[object], fam: FamilyTally) -> None:
        if self.running.pop(task.id, None) is not None:
            fam.running -= 1
        est = self.estimates.pop(task.id, None)
        if est is not None:
            fam.known_left -= est
        elif fam.unknown_left:
            fam.unknown_left -= 1

    def finished(self, event: ev.TaskFinished) -> None:
        fam = self.family(event.task)
        self._settle(event.task, fam)
        fam.done += 1
        fam.dur_sum += event.duration
        fam.dur_n += 1
        self.ran += 1
        self.done_work += event.duration
        item = (event.duration, next(self._seq), event.task)
        if len(self._slowest) < self._slowest_n:
            heapq.heappush(self._slowest, item)
        elif item[0] > self._slowest[0][0]:
            heapq.heapreplace(self._slowest, item)

    def reused_(self, event: ev.TaskReused) -> None:
        if event.task.id in self._pulled:
            return  # counted as pulled
        self.family(event.task).done += 1
        self.reused += 1

    def reused_many(self, event: ev.TasksReused) -> None:
        """``reused_`` of each task, counted per family first (a batch can be 200,000)."""
        pulled = self._pulled
        counts: dict[FamilyName, int] = {}
        for task in event.tasks:
            if task.id not in pulled:  # else counted as pulled
                name = task.family.name
                counts[name] = counts.get(name, 0) + 1
        for family, n in counts.items():
            fam = self.families.get(family)
            if fam is None:
                fam = self.families[family] = FamilyTally(family)
            fam.done += n
            self.reused += n

    def pulled_(self, event: ev.TaskPulled) -> None:
        self._pulled.add(event.task.id)
        self.family(event.task).done += 1
        self.pulled += 1

    def kept_(self, event: ev.TaskKept) -> None:
        fam = self.family(event.task)
        self._settle(event.task, fam)
        fam.done += 1
        self.reused += 1
        self.kept += 1

    def failed_(self, event: ev.TaskFailed) -> None:
        fam = self.family(event.task)
        self._settle(event.task, fam)
        fam.failed += 1
        self.failed += 1
        self.failures.append(event)

    def skipped_(self, event: ev.TaskSkipped) -> None:
        fam = self.family(event.task)
        self._settle(event.task, fam)
        fam.skipped += 1
        self.skipped += 1

    def run_finished(self, event: ev.RunFinished) -> None:
        self.wall_time = event.wall_time

    def run_interrupted(self, event: ev.RunInterrupted) -> None:
        self.interrupted = event

    # --- derived ----------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the run was planned."""
        return 0.0 if self.started_at is None else max(0.0, self.clock() - self.started_at)

    def _overall_mean(self) -> float | None:
        known_sum = sum(f.dur_sum for f in self.families.values())
        known_n = sum(f.dur_n for f in self.families.values())
        return known_sum / known_n if known_n else None

    def remaining_work(self) -> float | None:
        """Expected task-seconds still to run (history, family means), or ``None`` while a
        family with tasks left has no estimate at all."""
        overall = self._overall_mean()
        remaining = 0.0
        for fam in self.families.values():
            remaining += max(0.0, fam.known_left)
            if fam.unknown_left:
                mean = fam.dur_sum / fam.dur_n if fam.dur_n else overall
                if mean is None:
                    return None
                remaining += fam.unknown_left * mean
        return remaining

    def fraction(self) -> float:
        """How far the run is: :meth:`work_fraction`, else by task count."""
        weighted = self.work_fraction()
        if weighted is not None:
            return weighted
        return self.settled / self.total if self.total else 1.0

    def work_fraction(self) -> float | None:
        """How far the run is in expected task-seconds (a 200-of-209 run whose last 9 tasks
        are its slowest is not 95% done; reused tasks weigh nothing), or ``None`` when there
        is nothing to weigh by or all tasks settled."""
        remaining = self.remaining_work()
        if remaining is None or self.total == 0 or self.settled >= self.total:
            return None
        running = sum(min(est, self.clock() - at) for est, at in self._running_work())
        done = self.done_work + running
        if done + remaining <= 0.0:
            return None
        return max(0.0, min(1.0, done / (done + remaining)))

    def _running_work(self) -> list[tuple[float, float]]:
        """(expected duration, start) of the running tasks: their own estimate, else their
        family's mean, else the mean over all families (as :meth:`remaining_work` counts)."""
        overall = self._overall_mean()
        work = []
        for tid, (task, at) in self.running.items():
            est = self.estimates.get(tid)
            if est is None:
                fam = self.families.get(task.family.name)
                est = fam.dur_sum / fam.dur_n if fam is not None and fam.dur_n else overall
            if est is not None:
                work.append((est, at))
        return work

    def eta(self) -> float | None:
        """Seconds until the run ends, or ``None`` while there is nothing to go on."""
        remaining = self.remaining_work()
        if remaining is None:
            return None
        if remaining <= 0.0:
            return 0.0 if self.settled >= self.total else None
        elapsed = self.elapsed()
        if self.done_work > 0.0 and elapsed > 0.0:
            return remaining * elapsed / self.done_work
        if self.running:
            left = remaining / len(self.running) - elapsed
            return left if left > 0.0 else None  # overdue: the estimate says nothing now
        return None

    def slowest(self) -> list[tuple[Task[object], float]]:
        """The slowest tasks that ran, slowest first."""
        return [(t, d) for d, _, t in sorted(self._slowest, key=lambda x: (-x[0], x[1]))]


_HANDLERS: dict[type, Callable[[Tally, Any], None]] = {
    ev.RunPlanned: Tally.planned,
    ev.TaskStarted: Tally.started,
    ev.TaskFinished: Tally.finished,
    ev.TaskReused: Tally.reused_,
    ev.TasksReused: Tally.reused_many,
    ev.TaskKept: Tally.kept_,
    ev.TaskPulled: Tally.pulled_,
    ev.TaskFailed: Tally.failed_,
    ev.TaskSkipped: Tally.skipped_,
    ev.RunFinished: Tally.run_finished,
    ev.RunInterrupted: Tally.run_interrupted,
}


# --- text shared by the reporters ---------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``0.003s``, ``12.3s``, ``4:05``, ``1:02:03``."""
    if seconds < 10:
        return f"{seconds:.3f}s" if seconds < 1 else f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def error_line(event: ev.TaskFailed, short: bool = False) -> str:
    """The failure as one line: ``ZeroDivisionError: division by zero``.

    A message that starts by naming the task (``Task f(1) (taskfile.f): ...``, as
    checkpoint's own errors do for library callers) loses that prefix: the line is
    always shown next to the task. ``short`` (the line as the task fails; the report at the
    end has the whole message) gives a result that cannot be stored as just its cause.
    """
    cause = event.error.__cause__
    if short and isinstance(event.error, UnserializableResultError) and cause is not None:
        return f"{type(event.error).__name__}: {type(cause).__name__}: {str(cause).strip()}"
    text = str(event.error).strip().splitlines()
    if not text:
        return type(event.error).__name__
    first = text[0].removeprefix(task_label(event.task) + ": ")
    return f"{type(event.error).__name__}: {first}"


def _bytes(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'`` (as the CLI's listings say it)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _all(count: int) -> str:
    return "1 task" if count == 1 else f"all {count:,} tasks"


def summary_lines(tally: Tally, width: int | None = None) -> list[str]:
    """The end-of-run summary: counts, wall time, slowest tasks (as many as ``width``
    columns hold)."""
    wall = tally.wall_time if tally.wall_time is not None else tally.elapsed()
    if tally.interrupted is not None:
        # The one line an interrupted run prints (the CLI adds nothing): "done" were stored.
        head = (f"interrupted: {tally.interrupted.done} done, {tally.interrupted.not_run} not run, "
                f"after {format_duration(wall)}")
    elif tally.to_run == 0 and not tally.failed and not tally.pulled:
        return [f"Nothing to run: {_all(tally.reused)} reused ({format_duration(wall)})."]
    else:
        pulled = f"{tally.pulled:,} pulled, " if tally.pulled else ""
        head = (f"{'Failed' if tally.failed else 'Done'} in {format_duration(wall)}: "
                f"{tally.ran:,} ran, {pulled}{tally.reused:,} reused, {tally.failed:,} failed, "
                f"{tally.skipped:,} skipped")
        not_run = tally.total - tally.settled
        if not_run > 0:  # stopped at the first failure (no --keep-going)
            head += f", {not_run:,} not run"
    lines = [head + "."]
    if tally.kept:
        lines.append(
            f"Kept {tally.kept:,} planned {'task' if tally.kept == 1 else 'tasks'}: "
            "their prerequisites re-ran and gave the same values (early cutoff)."
        )
    # Tasks that took under a millisecond, or a tenth of the slowest, are noise, not leads.
    slowest = tally.slowest()
    top = slowest[0][1] if slowest else 0.0
    slowest = [(t, d) for t, d in slowest if d >= 0.0005 and d >= top / 10]
    if slowest and tally.ran > 1:
        line = "Slowest:"
        for t, d in slowest:
            item = f" {t!r} {format_duration(d)}"
            if width is not None and line != "Slowest:" and len(line) + len(item) + 1 > width:
                break  # the next one would wrap mid-name
            line += ("," if line != "Slowest:" else "") + item
        lines.append(line)
    return lines


def failure_report(event: ev.TaskFailed, raised: bool = False) -> list[str]:
    """What to show about a failed task once the display is gone: its output and traceback.

    ``raised``: the caller raises this task's exception, whose traceback states the failure
    (once is enough): only what the task wrote is shown, if anything.
    """
    task = event.task
    output = ["  " + line for line in event.output.rstrip("\n").splitlines()]
    if raised:
        return [f"Output of {task!r} before it raised the error below:", *output] if output else []
    lines = [f"{task_label(task)} failed: {error_line(event)}"]
    if output:
        lines += ["Captured output:", *output]
    if event.traceback:  # none when the worker died: the line above says it all
        from ._tracebacks import trim_traceback

        lines.append(trim_traceback(event.traceback.rstrip("\n")))
    return lines


def failure_reports(tally: Tally, raises: bool = False) -> list[list[str]]:
    """The reports of the run's failed tasks; ``raises``: the caller raises the first
    failure's exception (see :func:`failure_report`)."""
    reports = (failure_report(f, raised=raises and i == 0) for i, f in enumerate(tally.failures))
    return [report for report in reports if report]


# --- plain lines ----------------------------------------------------------------------------


class PlainReporter:
    """One plain line per finished, failed or skipped task; a summary at the end.

    ``HH:MM:SS done    choose(6, 3)  0.003s``. No escape codes. With ``lines=False``
    (``--quiet``) only failed tasks' reports are written; ``raises``: the caller raises the
    first failure's exception, so its report shows only the task's output. Lines are written in chunks, at
    most ``flush_seconds`` after they happen (a timer writes them even when no further event
    comes), and at once for a failure: one write per line to a pipe or a terminal costs a
    run of 10,000 tiny tasks a noticeable share of its time.
    """

    takes_batches = True
    """Receives :class:`~checkpoint.events.TasksReused` (see :func:`checkpoint.events.takes_batches`)."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        show_output: bool = False,
        raises: bool = False,
        lines: bool = True,
        flush_seconds: float = 0.1,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.show_output = show_output
        self.raises = raises
        self.lines = lines
        self.tally = Tally()
        self.flush_seconds = flush_seconds
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._clock_second = -1
        self._clock_text = ""
        self._closed = False

    def __call__(self, event: ev.Event) -> None:
        self.tally.update(event)
        if not self.lines:
            if isinstance(event, (ev.RunFinished, ev.RunInterrupted)):
                self._end(summary=False)
            return
        kind = type(event)
        if kind is ev.TaskFinished:
            assert isinstance(event, ev.TaskFinished)
            self._line(event.time, "done", event.task, format_duration(event.duration), event.output)
        elif kind is ev.TaskFailed:
            assert isinstance(event, ev.TaskFailed)
            self._line(event.time, "failed", event.task,
                       f"{format_duration(event.duration)}  {error_line(event, short=True)}",
                       event.output)
            self._flush()
        elif kind is ev.TaskSkipped:
            assert isinstance(event, ev.TaskSkipped)
            self._line(time.time(), "skipped", event.task, f"(prerequisite {event.failed_upstream!r} failed)", "")
        elif kind is ev.TaskPulled:
            assert isinstance(event, ev.TaskPulled)
            self._line(time.time(), "pulled", event.task, f"{_bytes(event.size)}", "")
        elif kind is ev.RunFinished or kind is ev.RunInterrupted:
            self._end(summary=True)

    def _line(self, when: float, status: str, task: Task[object], rest: str, output: str) -> None:
        second = int(when)
        if second != self._clock_second:
            self._clock_second = second
            self._clock_text = time.strftime("%H:%M:%S", time.localtime(second))
        text = f"{self._clock_text} {status:<7} {task!r}  {rest}\n"
        if self.show_output and output:
            text += "".join(f"  | {line}\n" for line in output.rstrip("\n").splitlines())
        with self._lock:
            self._pending.append(text)
            if self._timer is None:
                self._timer = threading.Timer(self.flush_seconds, self._flush)
                self._timer.daemon = True
                self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
            text = "".join(self._pending)
            self._pending.clear()
            if timer is not None and timer is not threading.current_thread():
                timer.cancel()
            if text:
                self.stream.write(text)
                self.stream.flush()

    def _end(self, summary: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._flush()
        out: list[str] = []
        if summary:
            out += summary_lines(self.tally)
        for report in failure_reports(self.tally, self.raises):
            out += report
        if out:
            self.stream.write("\n".join(out) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Write any lines still held back."""
        self._flush()


# --- live display ---------------------------------------------------------------------------


class LiveReporter:
    """A rich live display of a run (see the module docstring); the summary follows it.

    Args:
        console: the rich console to draw on (default: one on ``stream``; in Jupyter, an
            output of the running cell, see :mod:`checkpoint._notebook_screen`).
        stream: where the default console writes (default: ``sys.stderr``).
        show_output: print each task's captured output above the display as it finishes.
        raises: the caller raises the first failure's exception: no ``✗`` line as it
            happens, and its report shows only the task's output (the error is stated once).
        clock: a monotonic clock (injectable for tests).
        max_running: how many running tasks to list before "+N more".
        max_families: how many family rows to show before "+N more".
        refresh_per_second: the redraw rate cap.
        auto_refresh: redraw by itself (off in tests: call :meth:`render`).
        idle_refresh: the longest time between two redraws when no event comes (the
            elapsed times tick).
        family_mean: ``family directory name -> mean stored duration`` for the ETA (see
            :class:`Tally`).

    Redraws happen on the thread that delivers the events, at most ``refresh_per_second``
    times a second, and on a helper thread only when no event came for ``idle_refresh``
    seconds: a refresh thread waking 10 times a second makes the scheduler's thread hand
    the GIL back and forth, which on a loaded machine stalls it far more than the drawing.
    """

    takes_batches = True
    """Receives :class:`~checkpoint.events.TasksReused` (see :func:`checkpoint.events.takes_batches`)."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        stream: IO[str] | None = None,
        show_output: bool = False,
        raises: bool = False,
        clock: Clock = time.monotonic,
        max_running: int = 5,
        max_families: int = 12,
        refresh_per_second: float = 10,
        auto_refresh: bool = True,
        idle_refresh: float = 0.25,
        family_mean: Callable[[str], float | None] | None = None,
    ) -> None:
        self.console = console
        self.stream = stream
        self.show_output = show_output
        self.raises = raises
        self.clock = clock
        self.tally = Tally(clock, family_mean=family_mean)
        self.max_running = max_running
        self.max_families = max_families
        self.refresh_per_second = refresh_per_second
        self.auto_refresh = auto_refresh
        self.idle_refresh = idle_refresh
        self.notebook = console is None and _in_jupyter()
        """Draw in the running Jupyter cell rather than on a console."""
        self.live: Live | NotebookScreen | None = None
        self._lock = threading.Lock()
        self._ended = False
        self._paused = False
        self._interval = 1.0 / refresh_per_second
        self._drawn = 0.0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # --- events ---------------------------------------------------------------------------

    def __call__(self, event: ev.Event) -> None:
        kind = type(event)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            with self._lock:
                handler(self.tally, event)
        if self._paused and kind is not ev.RunFinished and kind is not ev.RunInterrupted:
            self._paused = False  # the debugger is done with the terminal
            self._start()
        live = self.live
        if live is not None and self.auto_refresh:
            now = time.monotonic()
            if now - self._drawn >= self._interval:
                self._drawn = now
                live.refresh()
        if kind is ev.TaskStarted:
            return
        if kind is ev.TaskFinished or kind is ev.TaskFailed:
            assert isinstance(event, (ev.TaskFinished, ev.TaskFailed))
            if self.show_output and event.output:
                self._print_output(event.task, event.output)
            # A failure is stated once: by the report after the run (in a cell, right under
            # the display), or by the exception the caller raises.
            if isinstance(event, ev.TaskFailed) and not self.raises and not self.notebook:
                self._print(f"✗ {event.task!r} failed: {error_line(event, short=True)}", style="bold red")
        elif kind is ev.RunPlanned:
            assert isinstance(event, ev.RunPlanned)
            if event.to_run:
                self._start()
        elif kind is ev.RunFinished or kind is ev.RunInterrupted:
            self._end()

    def _get_console(self) -> Console:
        if self.console is None:
            from rich.console import Console

            self.console = Console(file=self.stream if self.stream is not None else sys.stderr)
        return self.console

    def _start(self) -> None:
        if self.notebook:
            from ._notebook_screen import NotebookScreen

            self.live = NotebookScreen(self.render)
        else:
            from rich.live import Live

            self.live = Live(self, console=self._get_console(), auto_refresh=False,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start(refresh=True)
        self._drawn = time.monotonic()
        if self.auto_refresh:
            self._stop = threading.Event()
            # In the context of the caller's: Jupyter tells which cell an output belongs to
            # by a context variable.
            self._ticker = threading.Thread(target=contextvars.copy_context().run,
                                            args=(self._tick,), name="checkpoint-progress",
                                            daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        # Wake when the last redraw (ours or an event's) is idle_refresh old, not on a fixed
        # beat: an event that redrew just after we woke would make us skip a turn, and the
        # clocks on screen stand still for up to twice idle_refresh.
        wait = self.idle_refresh
        while not self._stop.wait(wait):
            live = self.live
            if live is None:
                return
            now = time.monotonic()
            due = self._drawn + self.idle_refresh
            if now >= due:
                self._drawn = now
                live.refresh()
                wait = self.idle_refresh
            else:
                wait = due - now

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self._show(Text(text, style=style or ""))

    def _print_output(self, task: Task[object], output: str) -> None:
        self._show(_output_text(task, output))

    def _show(self, text: RenderableType) -> None:
        """Print above the display (in Jupyter: as an output under it)."""
        if self.notebook:
            from ._notebook_screen import show

            show(text)
        else:
            self._get_console().print(text, soft_wrap=True)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        lines = summary_lines(self.tally, self.console.width if self.console is not None else None)
        reports = failure_reports(self.tally, self.raises)
        if self.console is None and not reports and not self.notebook:
            # Nothing ran on a display: a plain line spares the import of rich (not in
            # Jupyter, which shows stderr as an error: there it is the summary in green).
            self.close()
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            return
        text = _closing_text(lines, reports, bool(self.tally.failed or self.tally.interrupted))
        live = self._detach()
        if self.notebook:
            from ._notebook_screen import NotebookScreen

            if isinstance(live, NotebookScreen):
                live.stop(text)  # one output: the last frame, then the summary
                return
        if live is not None:
            live.stop()
        self._show(text)
        if not self.notebook:
            self._get_console().file.flush()

    def pause(self) -> None:
        """Step aside (a debugger wants the terminal): stop drawing until the next event."""
        if self.live is not None:
            self.close()
            self._paused = True

    def _detach(self) -> Live | NotebookScreen | None:
        """Stop the helper thread and let go of the display, which is returned as it is."""
        live, self.live = self.live, None
        self._stop.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None and ticker is not threading.current_thread():
            ticker.join(timeout=1)
        return live

    def close(self) -> None:
        """Stop the live display (idempotent); the last frame stays on screen."""
        live = self._detach()
        if live is not None:
            live.stop()

    # --- drawing ----------------------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_width)

    def render(self, width: int = 100) -> Text:
        """The display as of now (what the live display draws), ``width`` columns wide.

        One :class:`rich.text.Text` laid out by hand: rich tables measure every cell on
        every frame, which costs several times more on the refresh thread.
        """
        from rich.text import Text

        with self._lock:
            tally = self.tally
            elapsed, eta, weighted = tally.elapsed(), tally.eta(), tally.work_fraction()
            fraction = tally.fraction() if weighted is None else weighted
            rows = [(f.name, f.done, f.total, f.running, f.failed, f.skipped)
                    for f in tally.families.values()]
            now = self.clock()
            running = [(t, now - at) for t, at in itertools.islice(tally.running.values(), self.max_running)]
            n_running = len(tally.running)
            settled, total, failed_any = tally.settled, tally.total, tally.failed

        text = Text(no_wrap=True, overflow="ellipsis", end="")
        _append_status(text, width, settled, total, fraction, weighted is not None, elapsed, eta,
                       failed_any)
        _append_families(text, width, rows, self.max_families)
        for task, secs in running:
            text.append("\n  ▸ ", style="yellow")
            text.append(repr(task))
            text.append(f"  {format_duration(secs)}", style="dim")
        if n_running > len(running):
            text.append(f"\n    +{n_running - len(running):,} more running", style="dim")
        return text


def _append_status(text: Text, width: int, settled: int, total: int, fraction: float,
                   of_work: bool, elapsed: float, eta: float | None, failed: int) -> None:
    """The first line: the bar, settled/total, the percentage (``work N%`` when weighted by
    expected durations, which can differ from the count), elapsed time and ETA."""
    eta_text = format_duration(eta) if eta is not None else "?"
    percent = f"{'work ' if of_work else ''}{int(100 * fraction)}%"
    status = f" {settled:,}/{total:,} {percent}  elapsed {format_duration(elapsed)}  ETA {eta_text}"
    bar = max(0, min(30, width - len(status)))  # the bar shrinks before the ETA goes
    if bar < 5:
        bar = 0
    filled = round(bar * fraction)
    text.append("━" * filled, style="red" if failed else "green")
    text.append("━" * (bar - filled), style="grey23")
    text.append(f" {settled:,}/{total:,}", style="bold")
    text.append(f" {percent}")
    text.append(f"  elapsed {format_duration(elapsed)}", style="dim")
    text.append(f"  ETA {eta_text}", style="cyan")


def _output_text(task: Task[object], output: str) -> Text:
    """A task's output, each line prefixed with the task: ``[load(3)] reading part 3``."""
    from rich.text import Text

    text = Text()
    for line in output.rstrip("\n").splitlines():
        text.append(f"[{task!r}] ", style="dim")
        text.append(line + "\n")
    text.rstrip()
    return text


def _closing_text(lines: list[str], reports: list[list[str]], failed: bool) -> Text:
    """The summary (green, or red after a failure) and the failure reports, in colour."""
    from rich.text import Text

    text = Text()
    text.append(lines[0], style="bold red" if failed else "bold green")
    for line in lines[1:]:
        text.append("\n" + line, style="dim")
    for report in reports:
        text.append("\n" + report[0], style="bold red" if report[0].startswith("Task ") else "")
        for line in report[1:]:
            text.append("\n" + line)
    return text


FamilyRow = tuple[str, int, int, int, int, int]
"""name, done, total, running, failed, skipped"""


def _append_families(text: Text, width: int, rows: list[FamilyRow], max_families: int) -> None:
    """One line per family (active ones first when they do not all fit)."""
    hidden = len(rows) - max_families
    if hidden > 0:
        # Active families first; plan order among equals (the sort is stable).
        rows = sorted(rows, key=lambda r: not (r[3] or r[4]))[:max_families]
    # Families of one module show without it (taskfile.choose -> choose), as tasks do.
    modules = {r[0].rpartition(".")[0] for r in rows}
    if len(modules) == 1:
        cut = len(modules.pop()) + 1 if "." in rows[0][0] else 0
        rows = [(r[0][cut:], *r[1:]) for r in rows]
    counts = [f"{done:,}/{fam_total:,}" if fam_total else f"{done:,}"
              for _, done, fam_total, _, _, _ in rows]
    count_w = max((len(c) for c in counts), default=0)
    # Room for the name: what the count and the widest "N running  N failed" leave.
    extras = max((len(_family_extras(r[3], r[4], r[5])) for r in rows), default=0)
    name_w = max(12, min(max((len(r[0]) for r in rows), default=0),
                         width - 2 - count_w - extras))
    for (name, _, _, fam_running, failed, skipped), count in zip(rows, counts, strict=True):
        if len(name) > name_w:
            name = "…" + name[len(name) - name_w + 1:]
        text.append("\n")
        text.append(f"{name:<{name_w}}", style="red" if failed else ("bold" if fam_running else ""))
        text.append(f"  {count:>{count_w}}")
        if fam_running:
            text.append(f"  {fam_running:,} running", style="yellow")
        if failed:
            text.append(f"  {failed:,} failed", style="bold red")
        if skipped:
            text.append(f"  {skipped:,} skipped", style="red")
    if hidden > 0:
        text.append(f"\n+{hidden} more families", style="dim")


def _family_extras(running: int, failed: int, skipped: int) -> str:
    parts = [f"{running:,} running" if running else "", f"{failed:,} failed" if failed else "",
             f"{skipped:,} skipped" if skipped else ""]
    return "".join(f"  {p}" for p in parts if p)


# --- between runs -------------------------------------------------------------------------


@contextlib.contextmanager
def waiting(text: str, stream: IO[str] | None = None, *, live: bool | None = None) -> Iterator[None]:
    """Show ``text`` while the caller waits (``run --watch`` between runs): on a live line
    with a spinner where a live display suits ``stream`` (default stderr; ``live`` forces
    it), else once as a plain line. The live line is gone when the block ends."""
    stream = stream if stream is not None else sys.stderr
    if not (wants_live(stream) if live is None else live):
        stream.write(text + "\n")
        stream.flush()
        yield
        return
    from rich.console import Console
    from rich.status import Status

    with Status(text, console=Console(file=stream), spinner="dots"):
        yield


# --- choosing -------------------------------------------------------------------------------


def wants_live(stream: IO[str] | None = None) -> bool:
    """Whether a live display suits ``stream`` (default stderr).

    As rich decides: ``TERM=dumb`` says no, ``FORCE_COLOR`` and Jupyter say yes (the
    display is then an output of the running cell), otherwise only a terminal gets one.
    ``NO_COLOR`` asks for no colour, not for no display: the live display then draws
    without colours (rich honours it).
    """
    env = os.environ
    if _in_jupyter():
        return True
    if env.get("TERM", "").lower() in ("dumb", "unknown"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def _in_jupyter() -> bool:
    """Whether we run in a Jupyter kernel (rich's test, without importing rich)."""
    import builtins

    get_ipython = getattr(builtins, "get_ipython", None)
    if get_ipython is None:
        return False
    shell = get_ipython()
    name = type(shell).__name__
    return name == "ZMQInteractiveShell" or "google.colab" in str(type(shell))


def reporter_for(
    stream: IO[str] | None = None,
    *,
    live: bool | None = None,
    show_output: bool = False,
    quiet: bool = False,
    raises: bool = False,
    store: Store | None = None,
) -> Reporter:
    """The reporter for a run writing to ``stream`` (default stderr).

    Args:
        live: force the live display on or off (default: :func:`wants_live`).
        show_output: show each task's output as it finishes.
        quiet: only report failures.
        raises: the caller raises the first failure's exception (as ``run()`` does), so
            the reporter does not state that failure again: its report is the task's
            output only.
        store: the cache whose stored durations give the live display's ETA prior for
            families new to the plan (see :class:`Tally`).
    """
    if quiet:
        return PlainReporter(stream, raises=raises, lines=False)
    if live is None:
        live = wants_live(stream)
    if live:
        family_mean = None
        if store is not None:
            from .history import family_mean_duration

            family_mean = functools.partial(family_mean_duration, store)
        return LiveReporter(stream=stream, show_output=show_output, raises=raises,
                            family_mean=family_mean)
    return PlainReporter(stream, show_output=show_output, raises=raises)
