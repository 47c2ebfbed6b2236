"""What runs inside a worker: compute a batch of tasks and return their encoded results.

This module is imported by worker processes, so it imports only what a task needs.
A batch is a list of :class:`WorkItem`; prerequisite payloads travel once per batch.
Each task succeeds or fails on its own: one failing task does not fail its batch-mates.
"""

from __future__ import annotations

import pickle
import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Any

from .store import decode_payload, encode_value
from .task import _Requires, restore_filename


@dataclass(frozen=True)
class Ref:
    """Placeholder for a prerequisite's result inside a requirement template."""

    id: str


@dataclass
class WorkItem:
    """One task to compute: its inner function, or the call of the outer one that makes it."""

    id: str
    fn: Any
    template: list[Any]
    compress_level: int
    call: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None
    """``(family, args, kwargs)``: call the outer function in the worker to get ``fn``."""
    filename: str = ""
    """Where ``fn`` was defined (cloudpickle drops it from by-value code; tracebacks need it)."""


@dataclass
class Outcome:
    """The result of one task: an encoded value, or an error."""

    id: str
    started: float
    duration: float
    payload: bytes | None = None
    crc: int = 0
    error: BaseException | None = None
    """The task's exception (in-process), or a picklable stand-in (from another process)."""
    error_text: str = ""
    """The formatted traceback, as seen where the task ran."""
    unpicklable_result: bool = False


def _fill(template: Any, payloads: dict[str, tuple[bytes, bool]]) -> Any:
    if isinstance(template, Ref):
        payload, compressed = payloads[template.id]
        return decode_payload(payload, compressed)
    if isinstance(template, list):
        return [_fill(t, payloads) for t in template]
    if isinstance(template, dict):
        return {k: _fill(v, payloads) for k, v in template.items()}
    return template


def run_one(item: WorkItem, payloads: dict[str, tuple[bytes, bool]], in_process: bool) -> Outcome:
    """Compute one task and encode its result."""
    started = time.time()
    t0 = time.perf_counter()
    try:
        fn = item.fn if item.call is None else _inner(item.call)
        args = [_fill(t, payloads) for t in item.template]
        value = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - a task's failure is data here
        if in_process and isinstance(exc, KeyboardInterrupt):
            raise
        return _failure(item.id, started, time.perf_counter() - t0, exc, in_process)
    duration = time.perf_counter() - t0
    try:
        payload = encode_value(value, item.compress_level)
    except Exception as exc:  # noqa: BLE001
        out = _failure(item.id, started, duration, exc, in_process)
        out.unpicklable_result = True
        return out
    return Outcome(item.id, started, duration, payload, zlib.crc32(payload))


def _failure(task_id: str, started: float, duration: float, exc: BaseException, in_process: bool) -> Outcome:
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is run_one.__code__ and tb.tb_next is not None:
        tb = tb.tb_next  # start the report in the task's own code
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    error: BaseException = exc
    if not in_process:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - the exception itself cannot travel
            error = RuntimeError(f"{type(exc).__qualname__}: {exc}")
    return Outcome(task_id, started, duration, error=error, error_text=text)


def run_batch(
    items: list[WorkItem], payloads: dict[str, tuple[bytes, bool]], in_process: bool
) -> list[Outcome]:
    """Compute a batch of tasks in order; each outcome stands alone."""
    return [run_one(item, payloads, in_process) for item in items]


def run_pickled_batch(blob: bytes) -> list[Outcome]:
    """Entry point in worker processes: the batch arrives cloudpickled (functions by value)."""
    items, payloads = pickle.loads(blob)
    for item in items:
        if item.filename:
            restore_filename(item.fn, item.filename)
    return run_batch(items, payloads, in_process=False)


def _inner(call: tuple[Any, tuple[Any, ...], dict[str, Any]]) -> Any:
    family, args, kwargs = call
    inner = family.fn(*args, **kwargs)
    return inner.fn if isinstance(inner, _Requires) else inner


def ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is handled by the coordinating process alone."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
