"""Signals during a run: Ctrl-C, SIGTERM and SIGHUP become exceptions at safe points.

While a run is active in the main thread, :class:`InterruptGuard` replaces the default
SIGINT handler (raise ``KeyboardInterrupt``) and the default SIGTERM and SIGHUP actions (die
at once, leaving workers behind) with a handler that raises ``KeyboardInterrupt`` or
:class:`~checkpoint.errors.TerminatedError`, so that the scheduler's abort path runs: stop
submitting, cancel what is queued, kill worker processes and the processes their tasks
started, store what finished. SIGHUP (the terminal closed) matters because worker processes
lead their own process groups (see :mod:`checkpoint._pool`): the shell's hang-up reaches
only the coordinator's group.

Inside a :meth:`InterruptGuard.critical` section (a store transaction) the exception is held
back until the section ends. A second signal while the first is being handled exits the
process at once (``os._exit(128 + signum)``): the store's transactions make that as safe as
``kill -9``. Handlers the program installed itself are left alone, and nothing is installed
outside the main thread (Python delivers signals there only).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

from .errors import TerminatedError


class InterruptGuard:
    """Context manager that owns SIGINT/SIGTERM for the duration of one run."""

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self._deferred: BaseException | None = None
        self.interrupted = False
        """Whether a signal arrived (the run is being aborted)."""

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None and signal.getsignal(signum) in (signal.SIG_DFL, None):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            os._exit(128 + signum)  # the second signal: leave now
        self.interrupted = True
        exc: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else TerminatedError(signum)
        if self._depth:
            self._deferred = exc
            return
        raise exc

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Hold back an interrupt until the enclosed block has finished."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._deferred is not None:
                exc, self._deferred = self._deferred, None
                raise exc
