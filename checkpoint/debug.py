"""Debugging tasks: post-mortem on a failure, stepping into a task, ``breakpoint()``.

A debugger needs the terminal and the task's frames in *this* process, so every debugging
mode runs the task with the in-process executor:

* **post-mortem** (``run(debug=True)``, ``checkpoint run --pdb``): when a task fails under
  another executor, the run stops as usual, then that one task runs again in this process
  with its prerequisites loaded from the store, and the debugger opens at the frame that
  raised (the user's code, not the engine's). Under the in-process executor the debugger
  opens at the first failure directly. Quitting the debugger leaves the failure as it was:
  nothing partial is stored.
* **trace** (``run(trace=[task])``, ``checkpoint run --trace TARGET``): the prerequisites run
  as usual, then the task's inner function runs under the debugger, stopped at its first line.
  If it completes, its result is stored like any other; quitting the debugger (``q``) fails
  the task with :class:`DebuggerQuitError` and stores nothing.
* ``breakpoint()`` inside a task works with the in-process executor (a live progress display
  steps aside first); in worker processes and threads, where no debugger can reach the
  terminal, it raises :class:`BreakpointUnavailableError` with what to do instead.

In IPython and Jupyter the IPython debugger is used (as ``%debug`` does); elsewhere
:mod:`pdb`, or whatever ``PYTHONBREAKPOINT`` names for ``breakpoint()``.
"""

from __future__ import annotations

import bdb
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from ._types import ExecutorKind


class BreakpointUnavailableError(RuntimeError):
    """``breakpoint()`` was called in a task running where no debugger can reach the terminal."""


class DebuggerQuitError(Exception):
    """The debugger was quit while stepping through a task (``--trace``): it did not finish."""


NO_BREAKPOINT_MESSAGE = (
    "breakpoint() was called in a task running in a worker {where}, where no debugger can "
    "reach your terminal. Run with the in-process executor to stop there "
    "(checkpoint run --executor inline, or Task.run(executor='inline')), or use "
    "checkpoint run --pdb (post-mortem on failure) / --trace TARGET (step through a task)."
)


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def debugger() -> Any:
    """A fresh debugger: IPython's in IPython/Jupyter, else :class:`pdb.Pdb`."""
    if _in_ipython():
        from IPython.core.debugger import Pdb as IPdb

        return IPdb()
    import pdb

    return pdb.Pdb()


def post_mortem(tb: TracebackType | None) -> None:
    """Open a debugger on a traceback, positioned at the frame that raised."""
    dbg = debugger()
    dbg.reset()
    dbg.interaction(None, tb)


def trace_call(fn: Callable[..., object], *args: object) -> object:
    """Call ``fn(*args)`` under a debugger stopped at its first line.

    Like :meth:`bdb.Bdb.runcall`, except that quitting the debugger raises
    :class:`DebuggerQuitError` instead of returning ``None`` (which would be stored as the
    task's result).
    """
    dbg = debugger()
    dbg.reset()
    # Python 3.14's Bdb may trace through sys.monitoring: start_trace/stop_trace pick the backend.
    start, stop = getattr(dbg, "start_trace", None), getattr(dbg, "stop_trace", None)
    if start is not None and stop is not None:
        start()
    else:
        sys.settrace(dbg.trace_dispatch)
    try:
        return fn(*args)
    except bdb.BdbQuit:
        raise DebuggerQuitError(
            "You quit the debugger before the task finished; nothing was stored. Run again "
            "with --trace to step through it, or without to run it."
        ) from None
    finally:
        dbg.quitting = True
        if start is not None and stop is not None:
            stop()
        else:
            sys.settrace(None)


def _no_breakpoint_in_process(*_: object, **__: object) -> None:
    raise BreakpointUnavailableError(NO_BREAKPOINT_MESSAGE.format(where="process"))


def _no_breakpoint_in_thread(*_: object, **__: object) -> None:
    raise BreakpointUnavailableError(NO_BREAKPOINT_MESSAGE.format(where="thread"))


def forbid_breakpoints_in_process() -> None:
    """In a worker process: make ``breakpoint()`` raise a clear error instead of hanging."""
    sys.breakpointhook = _no_breakpoint_in_process


@contextlib.contextmanager
def breakpoints_for(kind: ExecutorKind, subscribers: Sequence[object]) -> Iterator[None]:
    """While a run is active, route ``breakpoint()`` for the executor ``kind``.

    In-process: first let every subscriber with a ``pause()`` (a live display) step aside,
    then call the debugger as usual. Threads: raise a clear error (no terminal there).
    Processes set their own hook when they start (:func:`forbid_breakpoints_in_process`).
    """
    previous = sys.breakpointhook
    if kind is ExecutorKind.INLINE:
        pauses = [pause for pause in (getattr(s, "pause", None) for s in subscribers)
                  if callable(pause)]

        def hook(*args: Any, **kwargs: Any) -> Any:
            from ._worker import stop_capture

            for pause in pauses:
                pause()
            stop_capture()
            if previous is sys.__breakpointhook__ and not os.environ.get("PYTHONBREAKPOINT"):
                # Stop in the task's frame, not in this hook's.
                debugger().set_trace(sys._getframe(1))
                return None
            return previous(*args, **kwargs)

        sys.breakpointhook = hook
    elif kind is ExecutorKind.THREAD:
        sys.breakpointhook = _no_breakpoint_in_thread
    try:
        yield
    finally:
        sys.breakpointhook = previous
