"""Run records (checkpoint.runs): what a run did, task by task, saved for `checkpoint report`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import checkpoint
from checkpoint import events as ev
from checkpoint import runs
from checkpoint.errors import RunNotFoundError, StoreError
from checkpoint.runs import RunRecord, RunRecorder, TaskRecord, load_run

PIPELINE = """
import time
from checkpoint import task, requires

@task
def load(i: int):
    def __():
        print(f"loading part {i}")
        time.sleep(0.01)
        return i
    return __

@task
def square(i: int):
    @requires(load(i))
    def __(x):
        if i == 3:
            raise ValueError(f"bad part {i}")
        return x * x
    return __

@task
def main(n: int = 5):
    @requires([square(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __
"""


@pytest.fixture
def pipeline(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    return make_module("pipeline", PIPELINE)


def _by_label(record: RunRecord) -> dict[str, TaskRecord]:
    return {t.label: t for t in record.tasks}


def test_a_run_is_recorded_task_by_task(pipeline: ModuleType) -> None:
    """Each task of a run should be recorded with its state, reason, time, worker, output,
    failure and prerequisites, and the run saved as run 1."""
    recorder = RunRecorder(executor="thread", workers=2)
    before = time.time()
    result = checkpoint.run([pipeline.main()], executor="thread", max_workers=2, keep_going=True,
                            raise_on_failure=False, subscribers=[recorder])
    after = time.time()
    assert len(result.failed) == 1 and recorder.problems == []
    record = recorder.last
    assert record is not None
    assert (record.status, record.targets, record.executor, record.workers) == \
        ("failed", ["main()"], "thread", 2)
    assert before <= record.started <= record.planned <= record.ended <= after
    assert (record.count("ran"), record.count("failed"), record.count("skipped"),
            record.count("reused"), record.total) == (9, 1, 1, 0, 11)
    tasks = _by_label(record)
    load2 = tasks["load(2)"]
    assert (load2.state, load2.reason, load2.output, load2.attempts) == \
        ("ran", "missing", "loading part 2\n", 1)
    assert record.planned <= load2.started and load2.ended <= record.ended
    assert load2.duration >= 0.01
    assert load2.worker == f"{os.uname().nodename}:{os.getpid()}"  # threads: this process
    assert load2.arguments == '{"i":2}'
    failed = tasks["square(3)"]
    assert failed.state == "failed" and failed.error == "ValueError: bad part 3"
    assert "Traceback" in failed.traceback and 'raise ValueError(f"bad part {i}")' in failed.traceback
    assert failed.started >= tasks["load(3)"].ended
    assert [record.tasks[d].label for d in failed.deps] == ["load(3)"]
    main = tasks["main()"]
    assert (main.state, main.cause, main.target) == ("skipped", "square(3)", True)
    assert sorted(record.tasks[d].label for d in main.deps) == [f"square({i})" for i in range(5)]
    # The plan's order: prerequisites first.
    position = {t.label: i for i, t in enumerate(record.tasks)}
    assert all(position[record.tasks[d].label] < i for i, t in enumerate(record.tasks) for d in t.deps)
    saved = load_run()
    assert saved.number == record.number == 1
    assert saved == record


def test_start_times_come_from_the_events_when_they_carry_them(pipeline: ModuleType) -> None:
    """A TaskFinished/TaskFailed that says when the task started should be believed as is
    (no store lookup); one that does not is looked up in the store's history."""
    task = pipeline.load(1)
    recorder = RunRecorder(save=False)
    recorder(ev.RunPlanned(1, 1, {task.id: "missing"}, 100.0))
    recorder(ev.TaskFinished(task, 101.0, 0.5, 3, "out", "host:1", started=100.25))
    recorder(ev.RunFinished(1, 0, 0, 0, 1.0))
    record = recorder.last
    assert record is not None and record.tasks[0].started == 100.25
    assert record.tasks[0].label == "load(1)" and record.tasks[0].output == "out"


def test_a_run_that_only_reuses_is_recorded_but_not_saved(pipeline: ModuleType) -> None:
    """A warm run should cost no file: nothing is saved, but its record is there (for --report)."""
    checkpoint.run([pipeline.square(1)], executor="inline", subscribers=[RunRecorder()])
    recorder = RunRecorder()
    checkpoint.run([pipeline.square(1)], executor="inline", subscribers=[recorder])
    assert recorder.last is not None and recorder.last.status == "succeeded"
    assert [(t.label, t.state) for t in recorder.last.tasks] == [("square(1)", "reused")]
    assert recorder.last.count("reused") == 2  # load(1) is counted by family, not recorded
    assert recorder.last.reused_elsewhere == {"pipeline.load": 1}
    assert load_run().number == 1  # the first run only


def test_only_the_tasks_around_what_ran_are_recorded(pipeline: ModuleType, cache_dir: Path) -> None:
    """Reused tasks should be recorded when a task of the run or a target needs them; the
    others counted per family. Early cutoff shows as "kept"."""
    checkpoint.run([pipeline.square(i) for i in (0, 1, 2)], executor="inline")
    pipeline.load(1).clear()
    recorder = RunRecorder()
    checkpoint.run([pipeline.square(i) for i in (0, 1, 2)], executor="inline", subscribers=[recorder])
    record = recorder.last
    assert record is not None
    states = {t.label: (t.state, t.reason) for t in record.tasks}
    assert states == {
        "load(1)": ("ran", "missing"),
        "square(0)": ("reused", ""), "square(1)": ("kept", "upstream re-run"),
        "square(2)": ("reused", ""),
    }
    assert record.reused_elsewhere == {"pipeline.load": 2}
    assert record.count("reused") == 4 and record.count("kept") == 1
    kept = _by_label(record)["square(1)"]
    assert kept.size > 0 and kept.duration > 0  # from its stored entry


def test_retries_are_counted(make_module: Callable[[str, str], ModuleType], tmp_path: Path) -> None:
    """A task that succeeded on its second attempt should say so, with both attempts' output."""
    flaky = make_module("flaky", f"""
        from pathlib import Path
        from checkpoint import task

        @task
        def flaky():
            def __():
                mark = Path({str(tmp_path / 'mark')!r})
                print("trying")
                if not mark.exists():
                    mark.write_text("")
                    raise OSError("not yet")
                return 1
            return __
        """)
    recorder = RunRecorder()
    checkpoint.run([flaky.flaky()], executor="inline", retries=1, subscribers=[recorder])
    assert recorder.last is not None
    (task,) = recorder.last.tasks
    assert (task.state, task.attempts) == ("ran", 2)
    assert task.output.count("trying") == 2 and "attempt 1 of 2 failed" in task.output


def test_an_interrupted_run_is_recorded_with_what_did_not_run(pipeline: ModuleType) -> None:
    """On an interrupt, the tasks planned but never finished should be recorded as "not run"."""
    from checkpoint.graph import plan
    from checkpoint.store import Store

    the_plan = plan([pipeline.square(1)], Store.open())
    load, square = (node.task for node in the_plan.nodes.values())
    recorder = RunRecorder()
    recorder(ev.RunPlanned(2, 2, {load.id: "missing", square.id: "missing"}, time.time(),
                           the_plan))
    recorder(ev.TaskFinished(load, time.time(), 0.1, 2, "", "h:1", started=time.time() - 0.1))
    recorder(ev.RunInterrupted(1, 1))
    record = load_run()
    assert record.status == "interrupted"
    assert [(t.label, t.state) for t in record.tasks] == [("load(1)", "ran"), ("square(1)", "not run")]


def test_close_records_a_run_whose_end_never_came(pipeline: ModuleType) -> None:
    """A run that raised (no RunFinished) should still be recorded when the recorder is closed."""
    recorder = RunRecorder(save=False)
    recorder(ev.RunPlanned(1, 1, {}, time.time()))
    recorder.close()
    recorder.close()  # once only
    assert [r.status for r in recorder.records] == ["stopped"]


def test_a_store_that_fails_does_not_stop_the_record(
    pipeline: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store cannot tell start times (it may be what failed the run), the record
    should estimate them from the events, never raise into the run's own error."""
    from checkpoint import history

    def broken(*args: object) -> dict[str, float]:
        raise StoreError("Cannot open the cache of pipeline.load: database or disk is full.")

    monkeypatch.setattr(history, "stored_starts", broken)
    task = pipeline.load(1)
    recorder = RunRecorder(save=False)
    recorder(ev.RunPlanned(1, 1, {}, 100.0))
    recorder(ev.TaskFinished(task, 101.0, 0.5, 3, "", "h:1"))  # no start time
    recorder.close()
    assert recorder.last is not None and recorder.last.tasks[0].started == 100.5


def test_output_is_bounded_in_the_record(pipeline: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task's output should be kept up to its last OUTPUT_LIMIT characters, saying so."""
    monkeypatch.setattr(runs, "OUTPUT_LIMIT", 10)
    task = pipeline.load(1)
    recorder = RunRecorder(save=False)
    recorder(ev.RunPlanned(1, 1, {}, 100.0))
    recorder(ev.TaskFinished(task, 101.0, 0.5, 3, "x" * 30 + "01234\n6789", "h:1", started=100.5))
    recorder(ev.RunFinished(1, 0, 0, 0, 1.0))
    assert recorder.last is not None
    output = recorder.last.tasks[0].output
    assert output == ("[... 36 characters before these were left out of the report; checkpoint "
                      "log shows them all]\n6789")  # from the start of a line when one is near


def _record(n: int = 0) -> RunRecord:
    return RunRecord(status="succeeded", started=float(n), ended=n + 1.0, targets=[f"t({n})"],
                     tasks=[TaskRecord("a" * 32, "m.f", "f(1)", "ran", "missing", deps=[])])


def test_runs_are_numbered_and_the_last_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved runs should be numbered from 1, the oldest dropped past KEEP, and found by
    number or counting back; asking for another should say what is there."""
    monkeypatch.setattr(runs, "KEEP", 3)
    with pytest.raises(RunNotFoundError, match="No run is recorded in .* runs are recorded by the command line"):
        load_run()
    for n in range(5):
        assert runs.save_run(_record(n)).name == f"{n + 1:06d}.run"
    assert [r.number for r in runs.recorded_runs()] == [3, 4, 5]
    assert load_run().targets == ["t(4)"]
    assert load_run(4).targets == ["t(3)"] and load_run(-3).number == 3
    with pytest.raises(RunNotFoundError, match=r"Run 1 is not recorded \(the cache keeps runs 3 to 5\)"):
        load_run(1)
    with pytest.raises(RunNotFoundError, match="Only 3 run.* --run -4 goes back further"):
        load_run(-4)


def test_a_run_saved_at_the_same_time_takes_the_next_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs that pick the same number should not overwrite each other's record."""
    first = runs.save_run(_record(1))
    real = runs._numbers
    calls = []

    def stale(directory: Path) -> list[int]:
        calls.append(1)
        return [] if len(calls) == 1 else real(directory)  # the first look misses run 1

    monkeypatch.setattr(runs, "_numbers", stale)
    second = runs.save_run(_record(2))
    assert (first.name, second.name) == ("000001.run", "000002.run")
    assert load_run(1).targets == ["t(1)"] and load_run(2).targets == ["t(2)"]
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp")]


def test_a_damaged_record_is_a_clear_error() -> None:
    """A record that cannot be read should be named, with what to do; listing skips it."""
    path = runs.save_run(_record(1))
    runs.save_run(_record(2))
    path.write_bytes(b"not a record")
    with pytest.raises(StoreError, match=r"The run record .*000001.run cannot be read .* delete it"):
        load_run(1)
    assert [r.number for r in runs.recorded_runs()] == [2]


def test_a_record_that_cannot_be_saved_does_not_fail_the_run(
    pipeline: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure to save the record should be noted, and the run's result stand."""
    def fail(record: RunRecord, cache_dir: object = None) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "save_run", fail)
    recorder = RunRecorder()
    assert checkpoint.run([pipeline.load(1)], executor="inline", subscribers=[recorder]).ok
    assert recorder.problems == [
        "The record of this run could not be saved: [Errno 28] No space left on device"]


def test_no_recorded_run_from_python_says_how_to_record_one() -> None:
    """Report.load() after a library run: runs are recorded by the command line, or from
    Python with subscribers=[RunRecorder(...)], not by any run."""
    with pytest.raises(RunNotFoundError, match=r"subscribers=\[RunRecorder\(\)\]") as raised:
        load_run()
    assert "run something first" not in str(raised.value)
