"""Debugging from Python: run(debug=True) and run(trace=...) hand the right frames to the debugger."""

from __future__ import annotations

import io
import pdb
from types import FrameType, TracebackType
from typing import Any

import pytest

import checkpoint
from checkpoint import debug, requires, task


@task
def base(n: int):  # type: ignore[no-untyped-def]
    return lambda: n * 10


@task
def divide(n: int):  # type: ignore[no-untyped-def]
    @requires(base(n))
    def __(value: int) -> float:
        denominator = n - 3
        return value / denominator

    return __


def _last_frame(tb: TracebackType | None) -> FrameType:
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame


@pytest.mark.parametrize("executor", ["process", "inline"])
def test_debug_true_opens_post_mortem_in_the_users_frame(
    executor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run(debug=True) should hand the debugger a traceback that starts and ends in user code."""
    seen: list[TracebackType | None] = []
    monkeypatch.setattr(debug, "post_mortem", seen.append)
    with pytest.raises(ZeroDivisionError):
        checkpoint.run([divide(3)], executor=executor, max_workers=2, debug=True)
    assert len(seen) == 1
    first = seen[0]
    assert first is not None and first.tb_frame.f_code.co_name == "__"
    frame = _last_frame(first)
    assert frame.f_locals["denominator"] == 0 and frame.f_locals["value"] == 30
    assert base(3).run() == 30  # the prerequisite was kept; nothing of divide(3) was stored
    from checkpoint.store import Store

    assert Store.open().get_meta(divide.dirname, divide(3).id) is None


def test_trace_runs_the_task_under_the_debugger(monkeypatch: pytest.MonkeyPatch) -> None:
    """run(trace=[t]) should build prerequisites, call t's inner function through the debugger, store it."""
    calls: list[Any] = []

    def fake_trace(fn: Any, *args: Any) -> Any:
        calls.append(args)
        return fn(*args)

    monkeypatch.setattr(debug, "trace_call", fake_trace)
    result = checkpoint.run([divide(4)], executor="process", max_workers=2, trace=[divide(4)])
    assert calls == [(40,)]
    assert result.values[divide(4).id] == 40.0
    assert not checkpoint.run([divide(4)]).ran


def _scripted_debugger(monkeypatch: pytest.MonkeyPatch, *commands: str) -> io.StringIO:
    """Make the debugger a real pdb.Pdb reading ``commands``; returns what it writes."""
    out = io.StringIO()
    script = io.StringIO("".join(c + "\n" for c in commands))
    monkeypatch.setattr(debug, "debugger", lambda: pdb.Pdb(stdin=script, stdout=out, nosigint=True))
    return out


def test_trace_with_a_real_debugger_stops_at_the_first_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """run(trace=...) should stop at the inner function's first line, and store the result on c."""
    out = _scripted_debugger(monkeypatch, "p value", "c")
    result = checkpoint.run([divide(4)], executor="inline", trace=[divide(4)])
    assert result.values[divide(4).id] == 40.0
    assert "-> denominator = n - 3\n(Pdb) 40\n" in out.getvalue()
    assert not checkpoint.run([divide(4)]).ran


def test_quitting_the_trace_debugger_stores_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """q while stepping through a task should fail it with DebuggerQuitError and store nothing."""
    _scripted_debugger(monkeypatch, "q")
    with pytest.raises(debug.DebuggerQuitError, match="nothing was stored"):
        checkpoint.run([divide(4)], executor="process", max_workers=2, trace=[divide(4)])
    from checkpoint.store import Store

    assert Store.open().get_meta(divide.dirname, divide(4).id) is None
    assert Store.open().get_meta(base.dirname, base(4).id) is not None


@task
def stop():  # type: ignore[no-untyped-def]
    def __() -> int:
        breakpoint()
        return 1

    return __


def test_breakpoint_in_a_worker_thread_is_a_clear_error() -> None:
    """breakpoint() in a thread worker should fail the task with what to do instead."""
    with pytest.raises(debug.BreakpointUnavailableError, match="worker thread") as info:
        checkpoint.run([stop()], executor="thread", max_workers=2)
    assert "--executor inline" in str(info.value) and "--pdb" in str(info.value)


def test_ipython_sessions_get_the_ipython_debugger(monkeypatch: pytest.MonkeyPatch) -> None:
    """In IPython or Jupyter, debug=True and trace should use IPython's debugger (as %debug does)."""
    from IPython.core.debugger import Pdb as IPythonPdb

    assert not isinstance(debug.debugger(), IPythonPdb)
    monkeypatch.setattr(debug, "_in_ipython", lambda: True)
    assert isinstance(debug.debugger(), IPythonPdb)
