"""Typed events of a run.

The scheduler never prints: it calls its subscribers with these frozen records, in this
order for each task: :class:`TaskStarted` then one of :class:`TaskFinished`,
:class:`TaskFailed`; a task that needs no run gets :class:`TaskReused` (or shares a
:class:`TasksReused` with others, for a subscriber that takes batches), one that cannot
run because a prerequisite failed gets :class:`TaskSkipped`; one pulled from a remote
cache gets :class:`TaskPulled` (before :class:`RunPlanned`). :class:`RunPlanned` opens
a run and :class:`RunFinished` (or :class:`RunInterrupted`) closes it. A failed attempt
that will be retried gives :class:`TaskRetried` (and a new :class:`TaskStarted`); a stored
result that fails its check gives :class:`CorruptEntryFound` before its task re-runs. Every event is
delivered on the thread that called :func:`checkpoint.run`.

Tasks are handed to workers in batches, so a :class:`TaskStarted` means "a worker has it":
the tasks of one batch start together and run one after another. A batch queued behind a
running one (so that a worker never waits for this thread) is announced when a worker
frees up, so no more batches show as running than there are workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from .graph import Plan
    from .task import Task


@dataclass(frozen=True)
class RunPlanned:
    """The DAG is expanded and marked; ``to_run`` tasks will run, the rest are reused."""

    total: int
    to_run: int
    reasons: dict[str, str] = field(default_factory=dict)
    """``{task id: reason}`` for each task that will run."""
    time: float = 0.0
    plan: Plan | None = field(default=None, repr=False, compare=False)
    """The marked plan (tasks in topological order, stored metadata): read it, never change it."""


@dataclass(frozen=True)
class TaskStarted:
    """A worker has the task (its batch is running, not queued)."""

    task: Task[object]
    time: float


@dataclass(frozen=True)
class TaskFinished:
    """A task computed its result. On threads or inline it was stored just before this event;
    elsewhere it is stored within about 0.2 s, in the run's next transaction."""

    task: Task[object]
    time: float
    duration: float
    size: int
    output: str = ""
    """What the task wrote to stdout and stderr."""
    worker: str = ""
    """``hostname:pid`` of the process that ran it."""
    started: float = 0.0
    """When the worker started computing it (Unix time; 0 when not told)."""


@dataclass(frozen=True)
class TaskReused:
    """A task's stored result is fresh; it does not run."""

    task: Task[object]


@dataclass(frozen=True)
class TasksReused:
    """Many fresh tasks at once (a warm run of a 200,000-task sweep has that many): the
    same as one :class:`TaskReused` per task, in this order. Only a subscriber that says it
    takes batches (:func:`takes_batches`) receives it; every other subscriber receives the
    :class:`TaskReused` events instead."""

    tasks: Sequence[Task[object]]


def takes_batches(subscriber: Any) -> bool:
    """Whether a subscriber receives :class:`TasksReused` batches rather than one
    :class:`TaskReused` per task: it has a true ``takes_batches`` attribute."""
    return bool(getattr(subscriber, "takes_batches", False))


@dataclass(frozen=True)
class TaskPulled:
    """A task's entry was downloaded from the remote cache instead of computed (before
    the run starts, :mod:`checkpoint.remote`); a :class:`TaskReused` follows, as for every
    task that does not run."""

    task: Task[object]
    size: int
    """Bytes downloaded: its value and the files of its data directory."""
    duration: float
    """What computing it took where it was computed (the time saved)."""


@dataclass(frozen=True)
class TaskKept:
    """A task planned to run needs no run after all: the prerequisites that re-ran gave
    the same values as before, so its stored result is current (early cutoff)."""

    task: Task[object]


@dataclass(frozen=True)
class TaskFailed:
    """A task raised (or its worker died); ``traceback`` is the text seen where it ran."""

    task: Task[object]
    time: float
    error: BaseException
    traceback: str
    output: str = ""
    """What the task wrote to stdout and stderr before it failed."""
    duration: float = 0.0
    worker: str = ""
    started: float = 0.0
    """When the worker started computing it (Unix time; 0 when not told)."""


@dataclass(frozen=True)
class TaskRetried:
    """A task failed (or its worker died) and runs again: ``attempt`` of ``retries + 1``."""

    task: Task[object]
    attempt: int
    """The attempt that failed, from 1."""
    error: BaseException
    traceback: str
    output: str = ""


@dataclass(frozen=True)
class CorruptEntryFound:
    """A stored result failed its check (checksum, missing file, damaged index): it is
    treated as missing, so its task (``None`` when only the family is known) runs again."""

    task: Task[object] | None
    message: str


@dataclass(frozen=True)
class InputChanged:
    """A task's ``File`` inputs (``paths``), or the source files of project modules its code
    imports as it runs, changed while it ran, or declared outputs of tasks upstream of it
    changed after their tasks wrote them and before it ended (or, found by a check made
    after it ended, before its result was stored): its result is stored as stale
    (it runs again next time), since what it read may be either content."""

    task: Task[object]
    paths: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class TaskSkipped:
    """A task did not run because a prerequisite failed (keep-going mode)."""

    task: Task[object]
    failed_upstream: Task[object]


@dataclass(frozen=True)
class RunFinished:
    """The run ended (successfully or with failures)."""

    ran: int
    reused: int
    failed: int
    skipped: int
    wall_time: float


@dataclass(frozen=True)
class RunInterrupted:
    """The run was interrupted; ``done`` tasks finished, ``not_run`` did not."""

    done: int
    not_run: int


Event = Union[
    RunPlanned, TaskStarted, TaskFinished, TaskReused, TaskFailed, TaskSkipped, RunFinished,
    RunInterrupted, TaskRetried, CorruptEntryFound, TaskKept, TaskPulled, InputChanged,
    TasksReused,
]
Subscriber = Callable[[Event], None]
