"""Types shared across checkpoint's modules: ids and the vocabulary of plans."""

from __future__ import annotations

from enum import Enum

TaskId = str
"""Hex digest identifying one task (family + canonical arguments)."""


class Reason(str, Enum):
    """Why a task of a plan must run (a fresh task has no reason: ``None``)."""

    INPUT_MISSING = "input missing"
    """A declared ``File()`` input does not exist (the task fails before it starts)."""
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
    """A prerequisite's current value is not the one the entry was computed from."""
    CORRUPT = "corrupt"
    """The entry was found damaged when read (set while running)."""

    # (``_value_``, not the ``value`` property: a dry run of a million tasks formats each)
    def __str__(self) -> str:
        return str(self._value_)

    def __format__(self, spec: str) -> str:
        return format(self._value_, spec)


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
