"""Types shared across checkpoint's modules: ids and the vocabulary of plans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import NewType, Union

TaskId = str
"""Hex digest identifying one task (family + canonical arguments)."""

FamilyName = NewType("FamilyName", str)
"""A task family's name, ``{module}.{qualname}`` (:attr:`TaskFamily.name`): what events,
run records and ``--json`` documents call it."""

FamilyDir = NewType("FamilyDir", str)
"""A task family's directory in the store (:attr:`TaskFamily.dirname`): its name made safe
as a path; what every :class:`~checkpoint.store.Store` method takes as ``family``."""

Json = Union[None, bool, int, float, str, Sequence["Json"], Mapping[str, "Json"]]
"""What ``json.dumps`` writes: the documents that ``--json`` prints."""


class Word(str, Enum):
    """A word of one of checkpoint's vocabularies: a ``str`` that prints, formats and is
    written to JSON as its value (``str, Enum``, as pytask's outcomes); subclasses list the
    words. Python 3.12 formats a mixed-in enum as ``Class.NAME``: not these."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return format(str.__str__(self), spec)


class Reason(Word):
    """Why a task of a plan must run (a fresh task has no reason: ``None``)."""

    INPUT_MISSING = "input missing"
    """A declared ``File()`` input does not exist, or cannot be read (the run stops before
    anything runs)."""
    FORCED = "forced"
    """Asked to compute again (``--force``, ``clear`` then run)."""
    MISSING = "missing"
    """No stored entry."""
    CODE_CHANGED = "code changed"
    """The family's code fingerprint differs from the entry's."""
    INPUT_CHANGED = "input changed"
    """A ``File()`` input's content differs from what the entry was computed from."""
    OUTPUT_CHANGED = "output changed"
    """A ``Product()`` output is missing or was changed since the task wrote it."""
    UPSTREAM_RERUN = "upstream re-run"
    """A prerequisite runs in this plan (the task may be kept if its value comes out the same)."""
    UPSTREAM_CHANGED = "upstream changed"
    """A prerequisite's current value is not the one the entry was computed from (or the
    prerequisites are not where they were in the task's requirements)."""
    CORRUPT = "corrupt"
    """The entry was found damaged when read (set while running)."""


class DebugMode(Word):
    """How a task runs under a debugger (in this process only; see :mod:`checkpoint.debug`)."""

    TRACE = "trace"
    """Under the debugger from its inner function's first line (``run(trace=...)``, ``--trace``)."""
    POST_MORTEM = "post_mortem"
    """A debugger opens where it fails (``run(debug=True)``, ``--pdb``)."""


class ExecutorKind(Word):
    """Where an executor runs tasks, which decides how the scheduler treats them."""

    INLINE = "inline"
    """In the coordinator's own thread, one batch at a time (a debugger can attach)."""
    THREAD = "thread"
    """On threads of this process: tasks share its memory; results are stored before they
    are reported (a crash of the process must not lose what was shown as done)."""
    PICKLED = "pickled"
    """In other processes or machines: batches and results travel cloudpickled."""


EXECUTORS = ("process", "thread", "inline", "dask")
"""The executor names, as the command line offers them."""
_EXECUTOR_ALIASES = {"processes": "process", "threads": "thread", "sync": "inline",
                     "synchronous": "inline"}


def executor_name(value: str) -> str:
    """The canonical name of an executor (``"process"``, ..., ``"dask://HOST:PORT"``).

    Raises:
        ValueError: not an executor name; the message says which names there are.
    """
    name = value.lower()
    name = _EXECUTOR_ALIASES.get(name, name)
    if name in EXECUTORS or name.startswith(("dask://", "tcp://")):
        return name
    raise ValueError(f"{value!r} is not an executor; use process, thread, inline, dask or "
                     "dask://HOST:PORT")
