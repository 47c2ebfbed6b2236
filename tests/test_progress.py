"""Events from the scheduler and the reporters that show them (plain lines, rich live display)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import checkpoint
from checkpoint import events as ev
from checkpoint.graph import plan
from checkpoint.progress import (
    LiveReporter,
    PlainReporter,
    Tally,
    reporter_for,
    summary_lines,
    wants_live,
)
from checkpoint.store import Store

TASKS = '''
from checkpoint import task, requires

@task
def leaf(i: int):
    def __():
        print(f"leaf {i} says hi")
        return i
    return __

@task
def div(a: int, b: int):
    def __():
        print("dividing", a, "by", b)
        return a / b
    return __

@task
def total(n: int):
    @requires([leaf(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __

@task
def mixed():
    @requires([div(1, 0), leaf(7)])
    def __(xs):
        return xs
    return __
'''


class Recorder:
    """Collects events."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def __call__(self, event: ev.Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mod(make_module: Any) -> Any:
    return make_module("progtasks", TASKS)


def test_events_come_in_lifecycle_order_with_matching_counts(mod: Any) -> None:
    """A run should open with RunPlanned, start each task before it finishes, and close with RunFinished."""
    rec = Recorder()
    checkpoint.run([mod.total(3)], executor="inline", subscribers=[rec])
    kinds = rec.kinds()
    assert kinds[0] == "RunPlanned" and kinds[-1] == "RunFinished"
    assert kinds.count("TaskStarted") == kinds.count("TaskFinished") == 4
    seen: set[str] = set()
    for event in rec.events:
        if isinstance(event, ev.TaskStarted):
            seen.add(event.task.id)
        elif isinstance(event, ev.TaskFinished):
            assert event.task.id in seen
    planned, finished = rec.events[0], rec.events[-1]
    assert isinstance(planned, ev.RunPlanned) and (planned.total, planned.to_run) == (4, 4)
    assert planned.plan is not None and len(planned.plan.nodes) == 4
    assert isinstance(finished, ev.RunFinished) and (finished.ran, finished.reused) == (4, 0)

    again = Recorder()
    checkpoint.run([mod.total(3)], executor="inline", subscribers=[again])
    assert again.kinds() == ["RunPlanned"] + ["TaskReused"] * 4 + ["RunFinished"]


class BatchRecorder(Recorder):
    """Collects events, taking reused tasks in batches."""

    takes_batches = True


@pytest.mark.parametrize("rerun", [False, True])
def test_reused_tasks_come_in_one_batch_to_a_subscriber_that_takes_batches(
        mod: Any, rerun: bool) -> None:
    # A warm run of a 200,000-task sweep made 200,000 TaskReused events, each through every
    # subscriber; one that takes batches gets one TasksReused instead, the others as before.
    checkpoint.run([mod.total(3)], executor="inline")
    if rerun:  # some tasks run, the others are reused (the scheduler's own loop)
        mod.leaf(1).clear()
    plain, batched, tally = Recorder(), BatchRecorder(), Tally()
    checkpoint.run([mod.total(3)], executor="inline", subscribers=[plain, batched, tally.update])
    reused = [e.task for e in plain.events if isinstance(e, ev.TaskReused)]
    batches = [e for e in batched.events if isinstance(e, ev.TasksReused)]
    assert len(batches) == 1 and list(batches[0].tasks) == reused
    assert "TaskReused" not in batched.kinds()
    assert [k for k in plain.kinds() if k != "TaskReused"] == \
        [k for k in batched.kinds() if k != "TasksReused"]
    assert len(reused) == (2 if rerun else 4)
    one_by_one, counted = Tally(), Tally()
    for event in plain.events:
        one_by_one.update(event)
    for event in batched.events:
        counted.update(event)
    assert counted.reused == one_by_one.reused == tally.reused >= len(reused)
    assert {name: f.done for name, f in counted.families.items()} == \
        {name: f.done for name, f in one_by_one.families.items()}


def test_failed_and_skipped_events_carry_output_and_traceback(mod: Any) -> None:
    """A failing task's event should carry its output and traceback; its dependents are skipped."""
    rec = Recorder()
    checkpoint.run([mod.mixed()], executor="inline", keep_going=True, raise_on_failure=False,
                   subscribers=[rec])
    failed = [e for e in rec.events if isinstance(e, ev.TaskFailed)]
    skipped = [e for e in rec.events if isinstance(e, ev.TaskSkipped)]
    assert [repr(e.task) for e in failed] == ["div(1, 0)"]
    assert failed[0].output == "dividing 1 by 0\n"
    assert "ZeroDivisionError" in failed[0].traceback and failed[0].worker
    assert [(repr(e.task), repr(e.failed_upstream)) for e in skipped] == [("mixed()", "div(1, 0)")]
    finished = rec.events[-1]
    assert isinstance(finished, ev.RunFinished)
    assert (finished.ran, finished.failed, finished.skipped) == (1, 1, 1)


LINE = re.compile(r"^\d\d:\d\d:\d\d (done|failed|skipped) +(\S.*?)  (.*)$")


def test_plain_reporter_writes_one_line_per_task_and_a_summary(mod: Any) -> None:
    """The plain reporter should write time, status, task and duration per task, with no escape codes."""
    out = io.StringIO()
    checkpoint.run([mod.total(2)], executor="inline", subscribers=[PlainReporter(out)])
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()
    parsed = [LINE.match(line) for line in lines[:3]]
    assert all(parsed)
    assert sorted(m.group(2) for m in parsed if m) == ["leaf(0)", "leaf(1)", "total(2)"]
    assert all(m.group(1) == "done" and m.group(3).endswith("s") for m in parsed if m)
    assert lines[3].startswith("Done in ") and "3 ran, 0 reused, 0 failed, 0 skipped" in lines[3]
    assert "leaf 0 says hi" not in text  # output only with show_output

    out = io.StringIO()
    checkpoint.run([mod.total(2)], executor="inline", subscribers=[PlainReporter(out)])
    assert out.getvalue().startswith("Nothing to run: all 3 tasks reused")


def test_plain_reporter_shows_output_and_reports_failures(mod: Any) -> None:
    """With show_output, output follows its task's line; a failure's output and traceback end the report."""
    out = io.StringIO()
    checkpoint.run([mod.mixed()], executor="inline", keep_going=True, raise_on_failure=False,
                   subscribers=[PlainReporter(out, show_output=True)])
    text = out.getvalue()
    assert re.search(r"done +leaf\(7\) .*\n  \| leaf 7 says hi\n", text)
    assert re.search(r"failed +div\(1, 0\) .*ZeroDivisionError: division by zero", text)
    assert re.search(r"skipped mixed\(\)  \(prerequisite div\(1, 0\) failed\)", text)
    report = text[text.index("Task div(1, 0)"):]
    assert "Captured output:\n  dividing 1 by 0" in report
    assert "Traceback (most recent call last)" in report and "return a / b" in report


def test_quiet_reporter_reports_only_failures(mod: Any) -> None:
    """The quiet reporter should write nothing for a good run and the failure report for a bad one."""
    out = io.StringIO()
    checkpoint.run([mod.total(2)], executor="inline", subscribers=[reporter_for(out, quiet=True)])
    assert out.getvalue() == ""
    checkpoint.run([mod.mixed()], executor="inline", raise_on_failure=False,
                   subscribers=[reporter_for(out, quiet=True)])
    assert out.getvalue().startswith("Task div(1, 0) (progtasks.div) failed: ZeroDivisionError")


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=100, color_system="standard")


def _text(console: Console, reporter: LiveReporter) -> str:
    console.print(reporter.render())
    file = console.file
    assert isinstance(file, io.StringIO)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", file.getvalue())
    file.seek(0)
    file.truncate()
    return text


def test_live_reporter_renders_families_running_tasks_and_eta(mod: Any) -> None:
    """The live display should show settled/total, per-family rows, running tasks with elapsed time, "+N more" and an ETA."""
    clock = FakeClock()
    console = _console()
    reporter = LiveReporter(console, clock=clock, auto_refresh=False, max_running=2)
    the_plan = plan([mod.total(4)], Store.open())
    leaves = [mod.leaf(i) for i in range(4)]
    reporter(ev.RunPlanned(5, 5, {}, 0.0, the_plan))
    for t in leaves:
        reporter(ev.TaskStarted(t, 0.0))
    clock.now += 2.0
    reporter(ev.TaskFinished(leaves[0], 0.0, 1.0, 10))
    text = _text(console, reporter)
    # Work: 1 task-s done + 3 running at the family mean of 1 s, of 4 more expected: 50%.
    assert "1/5 work 50%" in text and "elapsed 2.00s" in text
    assert re.search(r"^leaf +1/4 +3 running", text, re.M)  # one module: its name is left out
    assert re.search(r"^total +0/1", text, re.M)
    assert "leaf(1)  2.00s" in text and "leaf(2)  2.00s" in text and "leaf(3)" not in text
    assert "+1 more running" in text
    # 1 task-second done in 2 s; 4 tasks left at the family mean of 1 s: 4 * 2 / 1.
    assert "ETA 8.00s" in text

    reporter(ev.TaskFailed(leaves[1], 0.0, ValueError("bad leaf"), "Traceback...\nValueError: bad leaf",
                           "some output\n"))
    out = _text(console, reporter)
    assert "✗ leaf(1) failed: ValueError: bad leaf" in out
    assert re.search(r"leaf +1/4 +2 running +1 failed", out)


def test_live_reporter_prints_output_failures_and_summary_in_color(mod: Any) -> None:
    """A real run through the live reporter should print output above the display, failures in red, then the summary and the failure report."""
    console = _console()
    reporter = LiveReporter(console, auto_refresh=False, show_output=True)
    checkpoint.run([mod.mixed()], executor="inline", keep_going=True, raise_on_failure=False,
                   subscribers=[reporter])
    reporter.close()
    file = console.file
    assert isinstance(file, io.StringIO)
    raw = file.getvalue()
    assert "\x1b[1;31m✗ div(1, 0) failed: ZeroDivisionError: division by zero" in raw
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert "[leaf(7)] leaf 7 says hi" in text and "[div(1, 0)] dividing 1 by 0" in text
    assert "Failed in " in text and "1 ran, 0 reused, 1 failed, 1 skipped" in text
    report = text[text.index("Task div(1, 0) (progtasks.div) failed"):]
    assert "dividing 1 by 0" in report and "return a / b" in report


def test_eta_uses_previous_durations_then_family_means(mod: Any) -> None:
    """Tasks that ran before should be expected to take their stored duration; others their family's mean."""
    checkpoint.run([mod.total(3)], executor="inline")
    store = Store.open()
    mod.leaf(2).clear()
    the_plan = plan([mod.total(3)], store, force_upstream=True)
    previous = {tid: n.meta.duration for tid, n in the_plan.nodes.items() if n.meta is not None}
    clock = FakeClock()
    tally = Tally(clock)
    tally.update(ev.RunPlanned(4, 4, {}, 0.0, the_plan))
    assert tally.estimates == previous and len(previous) == 3  # leaf(2) was cleared
    leaf = tally.families["progtasks.leaf"]
    assert leaf.unknown_left == 1
    assert leaf.known_left == pytest.approx(previous[mod.leaf(0).id] + previous[mod.leaf(1).id])

    # Make the arithmetic visible: pretend each leaf took 2 s before and total 4 s.
    tally.estimates = {mod.leaf(0).id: 2.0, mod.leaf(1).id: 2.0, mod.total(3).id: 4.0}
    leaf.known_left, leaf.dur_sum, leaf.dur_n = 4.0, 4.0, 2
    fam_total = tally.families["progtasks.total"]
    fam_total.known_left, fam_total.dur_sum, fam_total.dur_n = 4.0, 4.0, 1
    clock.now += 3.0
    tally.update(ev.TaskFinished(mod.leaf(0), 0.0, 3.0, 1))
    # Left: leaf(1) 2 s + leaf(2) at the leaf mean (4 + 3) / 3 + total 4 s; 3 task-s done in 3 s.
    assert tally.eta() == pytest.approx(2.0 + 7.0 / 3 + 4.0)


def test_reporter_for_picks_plain_output_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipes and TERM=dumb should get plain lines; FORCE_COLOR and terminals the live display
    (NO_COLOR too: it asks for no colour, not for no display)."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(reporter_for(io.StringIO()), PlainReporter)
    assert isinstance(reporter_for(Tty()), LiveReporter)
    assert isinstance(reporter_for(Tty(), live=False), PlainReporter)
    monkeypatch.setenv("NO_COLOR", "1")
    assert wants_live(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_live(Tty())
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert wants_live(io.StringIO())
    monkeypatch.delenv("FORCE_COLOR")

    class ZMQInteractiveShell:
        pass

    import builtins

    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    # A Jupyter kernel: the display is an output of the cell (no ipywidgets needed).
    assert wants_live(io.StringIO())


def test_run_progress_true_reports_from_the_library(mod: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """run(progress=True) should report on stderr (plain off a terminal) and leave stdout alone."""
    value = mod.total(2).run(executor="inline", progress=True)
    assert value == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(r"done +total\(2\)", captured.err) and "Done in " in captured.err
    with pytest.raises(ZeroDivisionError):
        mod.mixed().run(executor="inline", progress=True)
    err = capsys.readouterr().err
    # The exception is re-raised: the report shows the output and leaves the error to
    # Python (the task's line says what it raised, once).
    assert "Output of div(1, 0) before it raised the error below:\n  dividing 1 by 0\n" in err
    assert "Traceback" not in err and err.count("division by zero") == 1


def test_plain_reporting_does_not_import_rich(tmp_path: Any) -> None:
    """A piped run should report without importing rich (its import costs a warm run ~0.1 s)."""
    code = (
        "import sys, checkpoint\n"
        "from checkpoint import task\n"
        "@task\n"
        "def one():\n"
        "    return lambda: 1\n"
        "checkpoint.run([one()], executor='inline', progress=True)\n"
        "assert 'rich' not in sys.modules, 'rich was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "CP_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "done    one()" in out.stderr


def test_plain_lines_are_written_soon_without_further_events(mod: Any) -> None:
    """A finished task's line should reach the stream shortly even if no other event follows."""
    out = io.StringIO()
    reporter = PlainReporter(out, flush_seconds=0.01)
    reporter(ev.TaskFinished(mod.leaf(1), 0.0, 0.5, 1))
    deadline = time.monotonic() + 10
    while "leaf(1)" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert re.match(r"\d\d:\d\d:\d\d done    leaf\(1\)  0.500s\n$", out.getvalue())


def test_summary_counts_wall_time_and_slowest_tasks(mod: Any) -> None:
    """The summary should give ran/reused/failed/skipped, the wall time, and the slowest tasks, slowest first."""
    from checkpoint.progress import summary_lines

    tally = Tally(FakeClock(), slowest=3)
    tally.update(ev.RunPlanned(7, 6, {}, 0.0, None))
    for i, duration in enumerate([0.5, 2.0, 0.1, 1.0]):
        tally.update(ev.TaskFinished(mod.leaf(i), 0.0, duration, 1))
    tally.update(ev.TaskReused(mod.leaf(9)))
    tally.update(ev.TaskFailed(mod.div(1, 0), 0.0, ZeroDivisionError("division by zero"), "", ""))
    tally.update(ev.TaskSkipped(mod.mixed(), mod.div(1, 0)))
    tally.update(ev.RunFinished(4, 1, 1, 1, 75.0))
    assert summary_lines(tally) == [
        "Failed in 1:15: 4 ran, 1 reused, 1 failed, 1 skipped.",
        "Slowest: leaf(1) 2.00s, leaf(3) 1.00s, leaf(0) 0.500s",
    ]

    quick = Tally(FakeClock(), slowest=3)  # sub-millisecond tasks: no "Slowest: ... 0.000s"
    quick.update(ev.RunPlanned(3, 3, {}, 0.0, None))
    for i, duration in enumerate([0.0001, 0.002, 0.0004]):
        quick.update(ev.TaskFinished(mod.leaf(i), 0.0, duration, 1))
    quick.update(ev.RunFinished(3, 0, 0, 0, 0.01))
    assert summary_lines(quick)[1:] == ["Slowest: leaf(1) 0.002s"]


def test_live_display_redraws_at_most_ten_times_a_second(mod: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """However fast events come, the live display should redraw at most refresh_per_second times a second."""
    import checkpoint.progress as progress

    class CountingLive:
        refreshes = 0

        def refresh(self) -> None:
            self.refreshes += 1

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    reporter = LiveReporter(_console(), refresh_per_second=10)
    live = CountingLive()
    reporter.live = live  # type: ignore[assignment]
    for i in range(2000):  # 2,000 events over 2 seconds
        now[0] += 0.001
        reporter(ev.TaskStarted(mod.leaf(i), 0.0))
    assert 15 <= live.refreshes <= 21


def test_elapsed_time_never_freezes_longer_than_the_idle_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between events, the helper thread redraws at most idle_refresh after the last redraw,
    whoever made it: a redraw by an event just after the helper woke must not make the
    helper skip its next turn (the elapsed clock stood still for up to twice as long)."""
    import checkpoint.progress as progress

    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    reporter = LiveReporter(_console(), idle_refresh=0.5)
    draws = [0.0]
    events = [0.1, 1.37, 1.41]  # events redraw at these times; none comes otherwise

    class Live:
        def refresh(self) -> None:
            draws.append(now[0])

    class Stop:
        """The helper's wait: time passes (and the events in it redraw) instead of sleeping."""

        def wait(self, timeout: float) -> bool:
            end = now[0] + timeout
            while events and events[0] <= end:
                now[0] = events.pop(0)
                draws.append(now[0])
                reporter._drawn = now[0]
            now[0] = end
            return now[0] >= 4.0

    reporter.live = Live()  # type: ignore[assignment]
    reporter._stop = Stop()  # type: ignore[assignment]
    reporter._drawn = 0.0
    reporter._tick()
    gaps = [b - a for a, b in zip(draws, draws[1:], strict=False)]
    assert max(gaps) <= 0.5 + 1e-9, draws


def test_library_runs_show_no_progress_by_default(mod: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """run() and Task.run() should print nothing unless progress=True asks for it."""
    assert mod.total(2).run(executor="inline") == 1
    checkpoint.run([mod.total(3)], executor="inline")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_eta_of_new_arguments_starts_from_the_familys_stored_mean(mod: Any) -> None:
    """Tasks of a family new to the plan should be expected to take the mean of its stored entries."""
    from checkpoint.history import family_mean_duration

    checkpoint.run([mod.leaf(i) for i in range(3)], executor="inline")
    store = Store.open()
    stored = [meta.duration for _, meta in store.entries(mod.leaf(0).family.dirname)]
    mean = family_mean_duration(store, mod.leaf(0).family.dirname)
    assert len(stored) == 3 and mean == pytest.approx(sum(stored) / 3)
    assert family_mean_duration(store, mod.div(1, 1).family.dirname) is None

    the_plan = plan([mod.leaf(i) for i in range(10, 14)], store)  # new arguments: no previous run
    blind = Tally(FakeClock())
    blind.update(ev.RunPlanned(4, 4, {}, 0.0, the_plan))
    blind.update(ev.TaskStarted(mod.leaf(10), 0.0))
    assert blind.eta() is None  # nothing to go on

    clock = FakeClock()
    tally = Tally(clock, family_mean=lambda family: 2.0 if family == mod.leaf(0).family.dirname else None)
    tally.update(ev.RunPlanned(4, 4, {}, 0.0, the_plan))
    tally.update(ev.TaskStarted(mod.leaf(10), 0.0))
    assert tally.eta() == pytest.approx(4 * 2.0)  # 4 tasks at 2 s, one running
    clock.now += 1.0
    tally.update(ev.TaskFinished(mod.leaf(10), 0.0, 1.0, 1))
    # The prior counts once: the mean is now (2 + 1) / 2; 3 tasks left, 1 task-s done in 1 s.
    assert tally.eta() == pytest.approx(3 * 1.5)


def test_run_progress_true_gives_the_live_display_the_stored_mean(
    mod: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """run(progress=True) should give its live display the stored-mean ETA prior of its cache."""
    import checkpoint.progress as progress
    from checkpoint.history import family_mean_duration

    checkpoint.run([mod.leaf(i) for i in range(3)], executor="inline")
    given: list[Any] = []
    real = progress.reporter_for

    def spy(*args: Any, **kwargs: Any) -> Any:
        reporter = real(*args, **kwargs)
        given.append(reporter.tally.family_mean)
        return reporter

    monkeypatch.setattr(progress, "reporter_for", spy)
    monkeypatch.setattr(progress, "wants_live", lambda stream=None: True)
    checkpoint.run([mod.leaf(7)], executor="inline", progress=True)
    dirname = mod.leaf(0).family.dirname
    assert given and given[0] is not None
    assert given[0](dirname) == pytest.approx(family_mean_duration(Store.open(), dirname))
    assert given[0](mod.div(1, 1).family.dirname) is None


def test_summary_counts_tasks_a_failure_left_unstarted(tmp_path: Path) -> None:
    """Without -k a failure stops the run: the summary says how many tasks never ran."""
    from click.testing import CliRunner

    from checkpoint.cli import cli

    (tmp_path / "taskfile.py").write_text(
        "from checkpoint import task, requires\n"
        "@task\n"
        "def boom():\n"
        "    def __():\n"
        "        raise ValueError('no')\n"
        "    return __\n"
        "@task\n"
        "def after(i: int):\n"
        "    @requires(boom())\n"
        "    def __(b):\n"
        "        return b\n"
        "    return __\n"
        "@task\n"
        "def main():\n"
        "    @requires([after(i) for i in range(3)])\n"
        "    def __(xs):\n"
        "        return xs\n"
        "    return __\n"
    )
    result = CliRunner().invoke(cli, ["run", "--executor", "inline", "--no-progress"])
    assert result.exit_code == 1
    assert "0 ran, 0 reused, 1 failed, 0 skipped, 4 not run." in result.stderr


def _tally_with_history() -> Tally:
    """9 quick tasks done (0.1 s each) and one expected to take 9 s, running for 1 s."""
    now = [100.0]
    tally = Tally(clock=lambda: now[0])
    tally.total, tally.started_at = 10, 90.0
    fam = tally.family(_FakeTask("quick"))  # type: ignore[arg-type]
    fam.total, fam.done, fam.dur_sum, fam.dur_n = 10, 9, 0.9, 9
    tally.ran, tally.done_work = 9, 0.9
    slow = _FakeTask("slow")
    tally.estimates[slow.id] = 9.0
    fam.known_left = 9.0
    tally.running[slow.id] = (slow, 99.0)  # type: ignore[assignment]
    return tally


class _FakeTask:
    def __init__(self, name: str) -> None:
        self.id = name
        self.family = type("F", (), {"name": "mod.fam"})()

    def __repr__(self) -> str:
        return f"{self.id}()"


def test_progress_is_weighted_by_expected_durations() -> None:
    """9 of 10 tasks done is not 90% when the tenth is expected to take 9 s of 9.9."""
    tally = _tally_with_history()
    assert tally.settled / tally.total == 0.9
    assert tally.fraction() == pytest.approx((0.9 + 1.0) / (0.9 + 1.0 + 9.0))


@pytest.mark.parametrize("width", [60, 120])
def test_the_display_uses_the_width_there_is(width: int) -> None:
    """The bar shrinks before the ETA is cut; long family names use the room there is."""
    reporter = LiveReporter(console=Console(width=width, file=io.StringIO()), auto_refresh=False)
    tally = reporter.tally
    tally.total = 4
    long_name = "analysis.a_family_with_a_rather_long_and_descriptive_name_indeed"
    tally.family(_FakeTask("x")).total = 3  # "mod.fam"
    fam = tally.families.setdefault(long_name, type(tally.family(_FakeTask("y")))(long_name))
    fam.total = 1
    text = reporter.render(width).plain
    first = text.splitlines()[0]
    assert len(first) <= width and "ETA ?" in first
    if width == 120:
        assert long_name in text  # not cut while there is room
    assert all(len(line) <= width for line in text.splitlines())


def test_slowest_line_fits_and_leaves_out_noise() -> None:
    tally = Tally()
    tally.total = tally.to_run = 6
    tally.ran = 6
    for i, d in enumerate([5.0, 4.0, 3.0, 0.002, 0.001]):
        tally.finished(ev.TaskFinished(_FakeTask(f"long_task_name_number_{i}"), 0.0, d, 0))  # type: ignore[arg-type]
    lines = summary_lines(tally, width=80)
    slowest = lines[-1]
    assert slowest.startswith("Slowest: long_task_name_number_0() 5.00s")
    assert "0.002s" not in slowest and len(slowest) <= 80


def test_only_the_summary_and_failure_lines_are_in_colour() -> None:
    """The closing text: the summary line in red (or green), the report of a failure stated
    here in red, the output of the one the caller raises plain (it read as a red failure)."""
    from checkpoint.progress import _closing_text

    text = _closing_text(
        ["Failed in 1.00s: 1 ran, 0 reused, 2 failed, 0 skipped.", "Slowest: f(1) 1.00s"],
        [["Output of f(2) before it raised the error below:", "  hi"],
         ["Task f(3) (m.f) failed: ValueError: no", "Traceback (most recent call last):"]],
        failed=True,
    )
    styled = {text.plain[span.start:span.end]: str(span.style) for span in text.spans}
    assert styled == {
        "Failed in 1.00s: 1 ran, 0 reused, 2 failed, 0 skipped.": "bold red",
        "\nSlowest: f(1) 1.00s": "dim",
        "\nTask f(3) (m.f) failed: ValueError: no": "bold red",
    }


def test_overdue_running_tasks_show_an_unknown_eta_and_their_work() -> None:
    """5 of 12 reused, two tasks with no estimate of their own running for 5 s while the only
    durations known are 0.01 s: the ETA is unknown (not 0), the percentage is labelled as a
    share of the work, and the running tasks count in it."""
    now = [105.0]
    reporter = LiveReporter(console=Console(width=100, file=io.StringIO()), auto_refresh=False,
                            clock=lambda: now[0])
    tally = reporter.tally
    tally.clock = reporter.clock
    tally.total, tally.started_at, tally.reused = 12, 100.0, 5
    quick = tally.family(_FakeTask("load"))  # type: ignore[arg-type]
    quick.total, quick.done, quick.dur_sum, quick.dur_n, quick.unknown_left = 12, 5, 0.05, 5, 7
    for name in ("fit1", "fit2"):
        task = _FakeTask(name)
        tally.running[task.id] = (task, 100.0)  # type: ignore[assignment]
    first = reporter.render(100).plain.splitlines()[0]
    assert "ETA ?" in first and "ETA 0" not in first
    assert re.search(r"5/12 work [1-9]\d*%", first), first
