"""The exception tree of checkpoint.

Every error a user can trigger is a :class:`CheckpointError`; each class carries its exit
status (``exit_code``, one of :class:`ExitCode`, the one place that defines them)::

    CheckpointError                        base
    ├── UsageError                   (2)   bad command-line input
    │   ├── TaskfileNotFoundError
    │   ├── TaskfileImportError
    │   ├── TargetSyntaxError
    │   ├── UnknownTaskError
    │   └── RemoteConfigError              a remote cache is misconfigured (URL, key, extra)
    ├── TaskDefinitionError          (2)   a task or its arguments are malformed
    │   ├── TaskArgumentError              (also a TypeError)
    │   ├── UnserializableArgumentError    (also a TypeError)
    │   ├── InvalidRequirementError        (also a TypeError)
    │   └── CycleError
    ├── MissingInputError            (2)   an input file is missing (also a FileNotFoundError)
    ├── UnreadableInputError         (2)   an input file cannot be read (also an OSError)
    ├── StaleModuleError             (2)   a module changed on disk since it was imported
    ├── TaskFailedError              (1)   a task raised; ``__cause__`` is its exception
    │   ├── UnserializableResultError      (also a TypeError)
    │   ├── UnpicklableTaskError           cannot go to a worker process (also a TypeError)
    │   ├── MissingOutputError             a task did not write a declared output
    │   ├── WorkerDiedError
    │   └── TaskTimeoutError               ran past its time limit
    │       └── TaskStillRunningError      an earlier attempt, given up on, hangs in a thread
    ├── StoreError                   (1)   the cache cannot be used
    │   ├── CorruptEntryError
    │   ├── StoreVersionError
    │   ├── UnsafeCacheError         (2)   another user could plant values in the cache
    │   └── SharedCacheError               a Dask worker cannot see the cache directory
    ├── ExportError                  (1)   a graph could not be exported or rendered
    │   └── GraphvizNotFoundError          Graphviz's ``dot`` is not installed
    ├── RunNotFoundError             (1)   no recorded run to report on
    └── RemoteUnavailableError       (1)   a remote cache cannot be reached

A cache directory that its group may write to gives an :class:`UnsafeCacheWarning`; a
remote cache that cannot be reached during a run, or an entry of it that is refused, a
:class:`RemoteWarning` (the run goes on locally).

A run interrupted by Ctrl-C raises :class:`KeyboardInterrupt`; by SIGTERM,
:class:`TerminatedError` (a ``KeyboardInterrupt`` too, so both unwind the same way).

The library API re-raises a failing task's *own* exception; ``TaskFailedError`` wraps it
only where the original cannot travel (for example an unpicklable exception from a
worker process).
"""

from __future__ import annotations

import enum
from typing import ClassVar


class ExitCode(enum.IntEnum):
    """The exit statuses of the command line: the one place that defines them (the table in
    docs/cli.md lists the same). :func:`exit_code` maps an error to its status."""

    OK = 0
    """Success."""
    FAILED = 1
    """What was asked could not be done: a task failed or was skipped, nothing is stored or
    recorded for what was asked, the cache or a remote cannot be used, a check found damage."""
    USAGE = 2
    """Bad usage or input, found before anything ran: an option, a target, a taskfile that
    does not import or whose task code raises while the DAG is built, a missing input file,
    a cache directory that is a file or that another user could write to."""
    HANGUP = 129
    """The terminal closed (SIGHUP) during a run."""
    INTERRUPTED = 130
    """Ctrl-C (SIGINT), or no answer to a question (end of input)."""
    BROKEN_PIPE = 141
    """The reader of the output went away (``checkpoint why main | head``), as for ``cat``."""
    TERMINATED = 143
    """SIGTERM during a run."""


def exit_code(error: BaseException) -> int:
    """The exit status for an error that ends a command (:class:`ExitCode`)."""
    if isinstance(error, CheckpointError):
        return error.exit_code
    if isinstance(error, TerminatedError):
        return 128 + error.signum  # 143 for SIGTERM, 129 for SIGHUP
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, BrokenPipeError):
        return ExitCode.BROKEN_PIPE
    return ExitCode.FAILED


class CheckpointError(Exception):
    """Base class of every error raised by checkpoint."""

    exit_code: ClassVar[int] = ExitCode.FAILED


class UsageError(CheckpointError):
    """The command line or a target expression was malformed."""

    exit_code: ClassVar[int] = ExitCode.USAGE


class TaskfileNotFoundError(UsageError):
    """No taskfile at the given path (or none in the directory and its parents)."""


class TaskfileImportError(UsageError):
    """The taskfile was found but raised while it was being imported."""


class TargetSyntaxError(UsageError):
    """A target expression such as ``choose(6, 3)`` could not be parsed."""


class UnknownTaskError(UsageError):
    """A target names a task family that the taskfile does not define."""


class RemoteConfigError(UsageError):
    """A remote cache cannot be used as configured: a URL fsspec does not know, no signing
    key (``CP_REMOTE_KEY``), or the ``remote`` extra is not installed."""


class TaskDefinitionError(CheckpointError):
    """A task, its arguments or its prerequisites are malformed."""

    exit_code: ClassVar[int] = ExitCode.USAGE


class TaskArgumentError(TaskDefinitionError, TypeError):
    """A task was called with arguments that do not fit its signature."""


class UnserializableArgumentError(TaskDefinitionError, TypeError):
    """A task argument cannot be encoded canonically (not JSON-like, not a task)."""

    def __init__(self, message: str, *, family: str, argument: str) -> None:
        super().__init__(message)
        self.family = family
        self.argument = argument


class InvalidRequirementError(TaskDefinitionError, TypeError):
    """``@requires(...)`` was given something that is not a task, list, dict or TaskDirectory."""


class CycleError(TaskDefinitionError):
    """The prerequisites of a task form a cycle."""

    def __init__(self, message: str, *, cycle: list[str]) -> None:
        super().__init__(message)
        self.cycle = cycle


class MissingInputError(CheckpointError, FileNotFoundError):
    """A ``File()`` input of a task in the run does not exist (and no task of the run writes it).

    Raised before anything runs; ``paths`` lists the missing files (project-relative).
    """

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class UnreadableInputError(CheckpointError, OSError):
    """A ``File()`` input of a task in the run (or a file or directory under it) exists but
    cannot be read: no permission, an I/O error. Its content cannot be tracked, so nothing runs.

    Raised before anything runs; ``paths`` lists the paths that could not be read
    (project-relative).
    """

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class StaleModuleError(CheckpointError):
    """A module whose code a task uses changed on disk since it was imported (edited in a
    long-running session without being reloaded): the code that would run is not the code
    the fingerprint would describe, so the task does not run (nor anything after it: the
    run stops, keeping the results that finished before). Run again in a new process, or
    reload the module."""

    exit_code: ClassVar[int] = 2


class TaskFailedError(CheckpointError):
    """A task failed in a way its own exception cannot express."""

    def __init__(self, message: str, *, task: str = "", family: str = "") -> None:
        super().__init__(message)
        self.task = task
        self.family = family


class UnserializableResultError(TaskFailedError, TypeError):
    """A task returned a value that cloudpickle cannot serialize."""


class UnpicklableTaskError(TaskFailedError, TypeError):
    """A task cannot be sent to a worker process or a Dask worker: its inner function (or
    its class's instance) holds something that cannot be pickled (a lock, a client, a
    generator). ``__cause__`` is the pickler's error."""


class MissingOutputError(TaskFailedError):
    """A task returned without writing one of its declared outputs (``Product()``)."""


class WorkerDiedError(TaskFailedError):
    """The worker process running a task died (killed, crashed or out of memory)."""


class TaskTimeoutError(TaskFailedError):
    """A task ran past its time limit (``@task(timeout=...)``, ``run(timeout=...)``,
    ``checkpoint run --timeout``) and was stopped, or, on a thread, abandoned."""

    def __init__(self, message: str, *, task: str = "", family: str = "", limit: float = 0.0) -> None:
        super().__init__(message, task=task, family=family)
        self.limit = limit
        """The time limit it ran past, in seconds."""


class TaskStillRunningError(TaskTimeoutError):
    """A task cannot run because an earlier attempt of it, given up at its time limit in a
    thread of this process, or of a worker of the Dask cluster (threads cannot be stopped),
    still runs, and still ran once its time limit more had passed: it would write into the
    same files. Only restarting the Python process (the worker) ends that thread. ``limit``
    is the earlier attempt's time limit."""


class StoreError(CheckpointError):
    """The cache directory cannot be used."""


class CorruptEntryError(StoreError):
    """A stored value failed its checksum or could not be decoded."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        """What is wrong with the stored value, as a phrase (``""`` when the message says it)."""


class StoreVersionError(StoreError):
    """The cache was written by an incompatible version of checkpoint."""


class UnsafeCacheError(StoreError):
    """The cache directory, or a directory or file in it, belongs to another user or is
    writable by others: a value they planted there would run as code when loaded."""

    exit_code: ClassVar[int] = ExitCode.USAGE


class UnsafeCacheWarning(UserWarning):
    """The cache directory is writable by its group (accept it with ``CP_SHARED_CACHE=1``)."""


class SharedCacheError(StoreError):
    """A Dask worker cannot see the cache directory that ``TaskDirectory()`` tasks write into."""


class ExportError(CheckpointError):
    """A graph could not be exported or rendered (e.g. Graphviz's ``dot`` failed)."""


class GraphvizNotFoundError(ExportError):
    """An image was requested but Graphviz's ``dot`` program is not on PATH."""


class RunNotFoundError(CheckpointError):
    """No recorded run matches what a report asks for (none recorded yet, or not that one)."""


class RemoteUnavailableError(CheckpointError):
    """A remote cache cannot be reached (network, credentials, a missing bucket)."""


class RemoteWarning(UserWarning):
    """A run goes on without (part of) its remote cache: it cannot be reached, or one of its
    entries was refused (damaged, unsigned, wrongly signed)."""


class TerminatedError(KeyboardInterrupt):
    """SIGTERM arrived while a run was active (raised like Ctrl-C's KeyboardInterrupt)."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum
