"""Run records: what each run did, task by task, kept for ``checkpoint report``.

A :class:`RunRecorder` is an event subscriber (see :mod:`checkpoint.events`). It follows one
run (or several in a row) and, when the run ends, builds a :class:`RunRecord`: the targets,
the executor, the machine, and for each task that took part its state, the reason it ran,
when and where it ran, how long it took, its value's size, its captured output and its
failure. Tasks that were only reused are recorded when a task of the run or a target
needs them directly; the others are counted per family.

A run that ran, failed or skipped anything is saved as ``runs/NNNNNN.run`` under the
store's root (``{cache}/checkpoint``), numbered from 1; the last :data:`KEEP` are kept. A
run that only reused results is not saved (a warm run costs nothing more), but its record
is still there for ``checkpoint run --report``.

The file is a zlib-compressed :mod:`marshal` dict (``"format": "checkpoint-run/1"``): the
run's fields, then the tasks as rows under ``task_fields``. marshal, as for the store's
metadata, because it is ten times faster to write than JSON: a 10,000-task run is saved in
about 10 ms. Fields may be added; readers ignore those they do not know.
"""

from __future__ import annotations

import marshal
import os
import re
import secrets
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import events as ev
from ._types import FamilyDir, FamilyName, Reason, TaskId, Word
from .errors import RunNotFoundError, StoreError
from .store import Store, open_stored

if TYPE_CHECKING:
    from .graph import Node, Plan
    from .task import Task

FORMAT = "checkpoint-run/1"
KEEP = 20
"""How many run records a cache keeps (the oldest go first)."""
OUTPUT_LIMIT = 32_000
"""Characters of a task's output a record keeps: the last ones (``checkpoint log`` has it all)."""
OUTPUT_BUDGET = 8_000_000
"""Characters of output a record keeps in all; past it, each task keeps its last 1,000."""



class RecordState(Word):
    """What a task did in a recorded run."""

    RAN = "ran"
    """Computed."""
    FAILED = "failed"
    SKIPPED = "skipped"
    """Not run because a prerequisite failed."""
    NOT_RUN = "not run"
    """Planned but not run (the run stopped first)."""
    KEPT = "kept"
    """Planned, then reused because its prerequisites gave the same values (early cutoff)."""
    REUSED = "reused"
    """Reused as stored."""


class RunStatus(Word):
    """How a recorded run ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """A task failed or was skipped."""
    INTERRUPTED = "interrupted"
    """Ctrl-C, SIGTERM."""
    STOPPED = "stopped"
    """The run raised an error of its own (e.g. the store's)."""

_NAME = re.compile(r"(\d{6,})\.run")


@dataclass
class TaskRecord:
    """One task of a recorded run."""

    id: TaskId
    family: FamilyName
    label: str
    """The task as an expression, e.g. ``choose(6, 3)``."""
    state: RecordState
    reason: str = ""
    """Why it was planned to run (``missing``, ``code changed``, ...)."""
    arguments: str = ""
    """Its bound arguments in checkpoint's canonical JSON."""
    started: float = 0.0
    """When it started computing (Unix time; 0 when it did not run)."""
    duration: float = 0.0
    """Compute time in seconds (for a reused task: what its stored result took)."""
    worker: str = ""
    """``hostname:pid`` of the process that ran it."""
    size: int = 0
    """Bytes of its stored value."""
    output: str = ""
    """What it wrote to stdout and stderr (the last :data:`OUTPUT_LIMIT` characters)."""
    error: str = ""
    """``ExceptionType: message`` when it failed."""
    traceback: str = ""
    """The traceback as seen where it ran, when it failed."""
    attempts: int = 0
    """How many times it ran (more than 1 after retries)."""
    deps: list[int] = field(default_factory=list)
    """Its recorded prerequisites, as indexes into :attr:`RunRecord.tasks`."""
    target: bool = False
    cause: str = ""
    """For a skipped task: the failed prerequisite (its label)."""

    def __post_init__(self) -> None:
        self.state = RecordState(self.state)  # a record read back holds the word

    @property
    def ended(self) -> float:
        return self.started + self.duration


_TASK_FIELDS = [f.name for f in fields(TaskRecord)]
_task_row = attrgetter(*(f"{name}.value" if name == "state" else name for name in _TASK_FIELDS))
"""A task's saved row: marshal takes a ``str``, not a :class:`RecordState`."""


@dataclass
class RunRecord:
    """What one run did (see the module docstring)."""

    number: int = 0
    """Its number in the cache's history (0 until saved)."""
    status: RunStatus = RunStatus.SUCCEEDED
    started: float = 0.0
    """When the run started (Unix time), planning included."""
    planned: float = 0.0
    """When planning ended and tasks could start."""
    ended: float = 0.0
    targets: list[str] = field(default_factory=list)
    executor: str = ""
    workers: int = 0
    host: str = ""
    system: str = ""
    python: str = ""
    version: str = ""
    """checkpoint's version."""
    cpus: int = 0
    total: int = 0
    """Tasks in the run's DAG."""
    families: dict[FamilyName, FamilyDir] = field(default_factory=dict)
    """``{family name: its directory in the store}`` of the recorded tasks and counts."""
    reused_elsewhere: dict[FamilyName, int] = field(default_factory=dict)
    """Reused tasks not recorded one by one, counted per family."""
    family_edges: list[tuple[FamilyName, FamilyName, int]] = field(default_factory=list)
    """``(prerequisite family, dependent family, task-level edges)`` of the whole DAG, those
    of the tasks not recorded one by one included (empty in a record of an older version)."""
    tasks: list[TaskRecord] = field(default_factory=list)
    """The recorded tasks, prerequisites before dependents."""

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)  # a record read back holds the word

    @property
    def wall_time(self) -> float:
        return max(0.0, self.ended - self.started)

    def count(self, state: RecordState | str) -> int:
        """How many tasks ended in ``state`` (``reused`` counts the unrecorded ones too)."""
        state = RecordState(state)
        n = sum(1 for t in self.tasks if t.state is state)
        return n + sum(self.reused_elsewhere.values()) if state is RecordState.REUSED else n

    def to_doc(self) -> dict[str, object]:
        """The record as plain data (what is saved: marshal takes plain ``str``)."""
        doc: dict[str, object] = {"format": FORMAT}
        for f in fields(self):
            if f.name != "tasks":
                doc[f.name] = getattr(self, f.name)
        doc["status"] = self.status.value
        doc["task_fields"] = _TASK_FIELDS
        doc["tasks"] = [_task_row(t) for t in self.tasks]
        return doc

    @classmethod
    def from_doc(cls, doc: object) -> RunRecord:
        """The record of :meth:`to_doc`'s data (fields it does not know are ignored)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"not a {FORMAT} document (format: {found!r})")
        known = {f.name for f in fields(cls)} - {"tasks"}
        record = cls(**{k: v for k, v in doc.items() if k in known})
        names = doc["task_fields"]
        task_known = set(_TASK_FIELDS)
        for row in doc["tasks"]:
            values = {k: v for k, v in zip(names, row, strict=True) if k in task_known}
            record.tasks.append(TaskRecord(**values))
        return record


class _Run:
    """A run being recorded."""

    def __init__(self, event: ev.RunPlanned) -> None:
        self.plan: Plan | None = event.plan
        self.reasons = event.reasons
        self.planned = event.time
        self.total = event.total
        self.tasks: dict[TaskId, TaskRecord] = {}
        self.handles: dict[TaskId, Task[object]] = {}
        self.output_left = OUTPUT_BUDGET

    def task(self, task: Task[object], state: RecordState) -> TaskRecord:
        record = self.tasks.get(task.id)
        if record is None:
            record = self.tasks[task.id] = TaskRecord(
                task.id, task.family.name, "", state, str(self.reasons.get(task.id, ""))
            )
            self.handles[task.id] = task
        record.state = state
        return record

    def output(self, text: str) -> str:
        if not text:
            return text
        keep = OUTPUT_LIMIT if self.output_left > OUTPUT_LIMIT else 1_000
        if len(text) > keep:
            tail = text[-keep:]
            cut = tail.find("\n", 0, 200) + 1  # from a line's start, when one is near
            tail = tail[cut:]
            text = f"[... {len(text) - len(tail):,} characters before these were left out of " \
                   f"the report; checkpoint log shows them all]\n" + tail
        self.output_left -= len(text)
        return text


class RunRecorder:
    """Event subscriber that records runs (see the module docstring).

    Args:
        cache_dir: the store to save records in (default: ``$CP_CACHE_DIR`` or ``./.cache``).
        executor: the executor's name, for the record.
        workers: how many workers the run had, for the record.
        save: save records of runs that ran something (default True).
    """

    takes_batches = True
    """Receives :class:`~checkpoint.events.TasksReused` (it records no reused task)."""

    def __init__(
        self, cache_dir: str | os.PathLike[str] | None = None, *, executor: str = "",
        workers: int = 0, save: bool = True,
    ) -> None:
        self.cache_dir = cache_dir
        self.executor = executor
        self.workers = workers
        self.save = save
        self.records: list[RunRecord] = []
        """The runs recorded so far, oldest first."""
        self.problems: list[str] = []
        """Why a record could not be saved (the run itself is not affected)."""
        self._run: _Run | None = None
        self._handlers: dict[type, Any] = {
            ev.RunPlanned: self._planned, ev.TaskFinished: self._finished,
            ev.TaskFailed: self._failed, ev.TaskRetried: self._retried,
            ev.TaskSkipped: self._skipped, ev.TaskKept: self._kept,
            ev.CorruptEntryFound: self._corrupt, ev.RunFinished: self._run_finished,
            ev.RunInterrupted: self._interrupted,
        }

    @property
    def last(self) -> RunRecord | None:
        """The last recorded run, if any."""
        return self.records[-1] if self.records else None

    def __call__(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def close(self) -> None:
        """End a run whose end was never announced: it raised an error of its own (not a
        task's), and is recorded as ``"stopped"``."""
        self._end(RunStatus.STOPPED, None)

    def _planned(self, event: ev.RunPlanned) -> None:
        self._run = _Run(event)

    def _attempt(self, event: ev.TaskFinished | ev.TaskFailed, state: RecordState) -> TaskRecord | None:
        """The record of a task whose attempt ended, with what each attempt notes."""
        run = self._run
        if run is None:
            return None
        record = run.task(event.task, state)
        record.duration = event.duration
        # Not told when it started: minus when it ended, until the store says (_fill_starts).
        record.started = event.started or -event.time
        record.worker = event.worker
        record.output = run.output(event.output)
        record.attempts += 1
        return record

    def _finished(self, event: ev.TaskFinished) -> None:
        record = self._attempt(event, RecordState.RAN)
        if record is not None:
            record.size = event.size

    def _failed(self, event: ev.TaskFailed) -> None:
        record = self._attempt(event, RecordState.FAILED)
        if record is not None:
            record.error = f"{type(event.error).__name__}: {event.error}"
            record.traceback = event.traceback

    def _retried(self, event: ev.TaskRetried) -> None:
        if self._run is not None:
            self._run.task(event.task, RecordState.RAN).attempts += 1

    def _skipped(self, event: ev.TaskSkipped) -> None:
        if self._run is not None:
            self._run.task(event.task, RecordState.SKIPPED).cause = event.failed_upstream.expression()

    def _kept(self, event: ev.TaskKept) -> None:
        if self._run is not None:
            self._run.task(event.task, RecordState.KEPT)

    def _corrupt(self, event: ev.CorruptEntryFound) -> None:
        if self._run is not None and event.task is not None:
            self._run.reasons = {**self._run.reasons, event.task.id: Reason.CORRUPT}
            record = self._run.tasks.get(event.task.id)
            if record is not None:
                record.reason = Reason.CORRUPT.value

    def _run_finished(self, event: ev.RunFinished) -> None:
        failed = event.failed or event.skipped
        self._end(RunStatus.FAILED if failed else RunStatus.SUCCEEDED, event.wall_time)

    def _interrupted(self, event: ev.RunInterrupted) -> None:
        self._end(RunStatus.INTERRUPTED, None)

    def _end(self, status: RunStatus, wall_time: float | None) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        now = time.time()
        record = _build(run, status, now, wall_time, self.cache_dir)
        record.executor, record.workers = self.executor, self.workers
        self.records.append(record)
        busy = any(t.state not in (RecordState.REUSED, RecordState.KEPT) for t in record.tasks)
        if self.save and busy:
            try:
                save_run(record, self.cache_dir)
            except (OSError, StoreError, ValueError) as exc:
                self.problems.append(f"The record of this run could not be saved: {exc}")


def _build(run: _Run, status: RunStatus, now: float, wall_time: float | None,
           cache_dir: str | os.PathLike[str] | None) -> RunRecord:
    """The record of a finished run: the tasks that took part, in the plan's order."""
    record = RunRecord(status=status, planned=run.planned, ended=now, total=run.total)
    record.started = now - wall_time if wall_time is not None else run.planned
    _describe_machine(record)
    if run.plan is None:  # no plan given: what the events said, without edges
        record.tasks = list(run.tasks.values())
        for tid, done in run.tasks.items():
            handle = run.handles[tid]
            done.label, done.arguments = handle.expression(), handle.encoded
    else:
        _planned_tasks(run, run.plan, record)
    _fill_starts(record.tasks, run.handles, cache_dir)
    return record


def _describe_machine(record: RunRecord) -> None:
    """Where the run ran: host, system, Python, checkpoint's version, CPU count."""
    uname = os.uname() if hasattr(os, "uname") else None
    record.host = uname.nodename if uname else ""
    record.system = f"{uname.sysname} {uname.release} {uname.machine}" if uname else sys.platform
    record.python = sys.version.split()[0]
    from . import __version__

    record.version = __version__
    record.cpus = os.cpu_count() or 0


def _planned_tasks(run: _Run, the_plan: Plan, record: RunRecord) -> None:
    """The record's tasks: those the run's events name, their prerequisites and the targets,
    in the plan's order with their edges; the plan's other tasks counted by family."""
    nodes = the_plan.nodes
    record.targets = [t.expression() for t in the_plan.targets]
    target_ids = {t.id for t in the_plan.targets}
    for tid in run.reasons:  # planned to run but no outcome: the run stopped first
        if tid not in run.tasks:
            run.task(nodes[tid].task, RecordState.NOT_RUN)
    wanted = set(run.tasks)
    wanted.update(target_ids)
    for tid in run.tasks:
        wanted.update(nodes[tid].deps)
    index: dict[TaskId, int] = {}
    elsewhere: dict[FamilyName, int] = {}
    tasks = record.tasks
    for tid, node in nodes.items():
        family = node.task.family
        if family.name not in record.families:
            record.families[family.name] = family.dirname
        if tid not in wanted:
            elsewhere[family.name] = elsewhere.get(family.name, 0) + 1
            continue
        rec = _task_record(run.tasks.get(tid), tid, node)
        rec.target = tid in target_ids
        rec.deps = [index[d] for d in node.deps if d in index]
        index[tid] = len(tasks)
        tasks.append(rec)
    record.reused_elsewhere = elsewhere
    record.family_edges = _family_edges(the_plan)


def _task_record(rec: TaskRecord | None, tid: TaskId, node: Node) -> TaskRecord:
    """A planned task's record: as the run's events left it, or as stored (reused, kept)."""
    task = node.task
    if rec is None or rec.state is RecordState.KEPT:  # as stored
        if rec is None:
            rec = TaskRecord(tid, task.family.name, "", RecordState.REUSED)
        meta = node.meta
        if meta is not None:
            rec.size, rec.duration, rec.worker = meta.size, meta.duration, meta.worker
    rec.label = task.expression()
    rec.arguments = task.encoded
    return rec


def _family_edges(the_plan: Plan) -> list[tuple[FamilyName, FamilyName, int]]:
    """The plan's edges between families, with how many task-level edges each stands for."""
    nodes = the_plan.nodes
    family = {tid: node.task.family.name for tid, node in nodes.items()}
    edges: Counter[tuple[FamilyName, FamilyName]] = Counter()
    for tid, node in nodes.items():
        if node.deps:  # (counted in C: a sweep's target has 200,000 of them)
            to = family[tid]
            for source, n in Counter(map(family.__getitem__, node.deps)).items():
                edges[source, to] += n
    return [(s, t, n) for (s, t), n in edges.items()]


def _fill_starts(tasks: list[TaskRecord], handles: dict[TaskId, Task[object]],
                 cache_dir: str | os.PathLike[str] | None) -> None:
    """Start times the events did not carry (marked negative: minus the time the run heard of
    the end): read from the store's history, which records when each computation started."""
    missing = [t for t in tasks if t.started < 0]
    if not missing:
        return
    from .history import stored_starts

    try:
        found = stored_starts([(handles[t.id], t.state is RecordState.FAILED, t.duration)
                               for t in missing], Store.open(cache_dir))
    except (OSError, StoreError):  # the store failed the run itself, maybe: estimate them
        found = {}
    for t in missing:
        t.started = found.get(t.id) or max(0.0, -t.started - t.duration)


# --- the saved records ------------------------------------------------------------------


def runs_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where a cache keeps its run records."""
    return Store.open(cache_dir).root / "runs"


def _numbers(directory: Path) -> list[int]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"Cannot read the run records in {directory}: {exc.strerror or exc}.") from None
    return sorted(int(m[1]) for m in map(_NAME.fullmatch, names) if m)


def save_run(record: RunRecord, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Save a record as the cache's next run (setting its number) and drop the oldest
    beyond :data:`KEEP`; return its path."""
    store = Store.open(cache_dir)
    store.tree.ensure()
    directory = store.root / "runs"
    directory.mkdir(mode=0o700, exist_ok=True)
    tmp = directory / f".tmp-{secrets.token_hex(6)}"
    number = (_numbers(directory) or [0])[-1] + 1
    try:
        while True:  # another run may take a number between our look and our link
            record.number = number
            data = zlib.compress(marshal.dumps(record.to_doc()), 1)
            with open(tmp, "wb") as f:
                f.write(data)
            path = directory / f"{number:06d}.run"
            try:
                os.link(tmp, path)  # never replaces an existing record
                break
            except FileExistsError:
                number = _numbers(directory)[-1] + 1
    finally:
        tmp.unlink(missing_ok=True)
    for old in _numbers(directory)[:-KEEP]:
        (directory / f"{old:06d}.run").unlink(missing_ok=True)
    return path


def load_run(
    number: int | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> RunRecord:
    """A saved run: the last one, run ``number``, or counting back from the last when
    ``number`` is negative (-1 is the last).

    Raises:
        RunNotFoundError: no such run is recorded.
        StoreError: the record cannot be read.
    """
    directory = runs_dir(cache_dir)
    numbers = _numbers(directory)
    if not numbers:
        from . import _text

        raise RunNotFoundError(
            f"No run is recorded in {directory.parent.parent}: run something first "
            "(checkpoint run), then ask for its report." if _text.in_cli else
            f"No run is recorded in {directory.parent.parent}: runs are recorded by the command "
            "line (checkpoint run), and from Python by a run given "
            "subscribers=[RunRecorder()] (checkpoint.runs; see docs/report.md)."
        )
    if number is None:
        number = numbers[-1]
    elif number < 0:
        if -number > len(numbers):
            raise RunNotFoundError(
                f"Only {len(numbers)} run(s) are recorded; --run {number} goes back further. "
                "See them with: checkpoint report --list"
            )
        number = numbers[number]
    elif number not in numbers:
        kept = f"runs {numbers[0]} to {numbers[-1]}" if len(numbers) > 1 else f"run {numbers[0]}"
        raise RunNotFoundError(
            f"Run {number} is not recorded (the cache keeps {kept}). "
            "See them with: checkpoint report --list"
        )
    return read_run(directory / f"{number:06d}.run")


def read_run(path: Path) -> RunRecord:
    """Read one saved record.

    Raises:
        StoreError: it is missing, not a regular file, or damaged.
    """
    try:
        fd = open_stored(path)
        with os.fdopen(fd, "rb") as f:
            data = f.read()
        return RunRecord.from_doc(marshal.loads(zlib.decompress(data)))
    except (OSError, EOFError, ValueError, KeyError, TypeError, zlib.error) as exc:
        raise StoreError(
            f"The run record {path} cannot be read ({exc}); delete it, or ask for another run "
            "(checkpoint report --list)."
        ) from None


def recorded_runs(cache_dir: str | os.PathLike[str] | None = None) -> Iterator[RunRecord]:
    """Every saved run, oldest first (a damaged record is skipped)."""
    directory = runs_dir(cache_dir)
    for number in _numbers(directory):
        try:
            yield read_run(directory / f"{number:06d}.run")
        except StoreError:
            continue


def last_run_of(task_id: TaskId, cache_dir: str | os.PathLike[str] | None = None) -> RunRecord | None:
    """The last saved run in which the task ran, failed or was skipped, or was a target."""
    found = None
    for record in recorded_runs(cache_dir):
        if any(t.id == task_id and (t.target or t.state not in (RecordState.REUSED, RecordState.KEPT))
               for t in record.tasks):
            found = record
    return found
