"""Run reports (checkpoint.report): lanes, critical path, the trace file, a self-contained page.

The page itself is tested in a real browser in test_report_browser.py.
"""

from __future__ import annotations

import html
import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import checkpoint
from checkpoint.errors import RunNotFoundError
from checkpoint.report import Report, critical_path, lanes
from checkpoint.runs import RunRecord, RunRecorder, TaskRecord

PIPELINE = """
import time
from checkpoint import task, requires

@task
def load(i: int):
    def __():
        print(f"loading part {i}")
        time.sleep(0.01 * (i % 3 + 1))
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
def main(n: int = 6):
    @requires([square(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __
"""


@pytest.fixture
def pipeline(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    return make_module("pipeline", PIPELINE)


def _run(pipeline: ModuleType, executor: str = "thread", workers: int = 3) -> RunRecord:
    recorder = RunRecorder(executor=executor, workers=workers)
    checkpoint.run([pipeline.main()], executor=executor, max_workers=workers, keep_going=True,
                   raise_on_failure=False, subscribers=[recorder])
    assert recorder.last is not None
    return recorder.last


def _task(label: str, start: float, duration: float, worker: str = "h:1",
          deps: list[int] | None = None, state: str = "ran") -> TaskRecord:
    return TaskRecord(label, "m.f", label, state, started=start, duration=duration,
                      worker=worker, deps=deps or [])


# --- lanes --------------------------------------------------------------------------------


def test_each_worker_process_gets_a_lane() -> None:
    """Tasks of process workers (one task at a time each) should get one lane per process,
    labelled by pid when all ran on one host; tasks that did not run get none."""
    tasks = [_task("a", 0, 1, "h:10"), _task("b", 0.5, 1, "h:11"), _task("c", 1, 1, "h:10"),
             _task("d", 0, 0, "", state="reused"), _task("e", 2, 0, "", state="failed")]
    placed = lanes(tasks)
    assert placed.labels == ["pid 10", "pid 11", "unknown worker"]  # e: its worker died
    assert placed.of == [0, 1, 0, -1, 2]


def test_a_process_running_tasks_at_once_gets_a_lane_per_slot() -> None:
    """A thread pool's tasks (one process, overlapping) should be split into as many lanes as
    ran at once, no two tasks of a lane overlapping."""
    rng = random.Random(7)
    tasks = []
    for k in range(3):  # three threads, each running tasks back to back
        t = 0.0
        for j in range(30):
            d = rng.uniform(0.001, 0.1)
            tasks.append(_task(f"t{k}.{j}", t, d, "host:5"))
            t += d + rng.choice([0.0, 0.0, 0.01])
    placed = lanes(tasks)
    assert placed.labels == ["pid 5 · 1", "pid 5 · 2", "pid 5 · 3"]
    by_lane: dict[int, list[TaskRecord]] = {}
    for lane, t in zip(placed.of, tasks, strict=True):
        by_lane.setdefault(lane, []).append(t)
    for members in by_lane.values():
        members.sort(key=lambda t: t.started)
        assert all(a.ended <= b.started + 1e-6 for a, b in zip(members, members[1:], strict=False))


def test_lanes_of_several_hosts_name_the_host() -> None:
    placed = lanes([_task("a", 0, 1, "n1:10"), _task("b", 0, 1, "n2:10")])
    assert placed.labels == ["n1:10", "n2:10"]


# --- critical path --------------------------------------------------------------------------


def test_the_critical_path_is_the_longest_chain_of_durations() -> None:
    """The critical path should be the chain of prerequisites with the largest total duration,
    not the one with the most tasks or the longest single task."""
    tasks = [
        _task("a", 0, 1.0),               # 0
        _task("b", 1, 1.0, deps=[0]),     # 1
        _task("c", 2, 1.0, deps=[1]),     # 2: a-b-c = 3.0 (most tasks)
        _task("d", 0, 2.5),               # 3
        _task("e", 2.5, 1.0, deps=[3]),   # 4: d-e = 3.5
        _task("f", 0, 3.2),               # 5: alone, 3.2
        _task("g", 3.5, 0.1, deps=[2, 4]),  # 6: ends both chains
        _task("h", 0, 0.0, state="reused"),  # 7: not timed
        _task("i", 3.6, 0.1, deps=[6, 7], state="failed"),  # 8: a failure took time too
    ]
    assert [tasks[i].label for i in critical_path(tasks)] == ["d", "e", "g", "i"]
    assert critical_path([_task("x", 0, 0, state="reused")]) == []


# --- the trace file -----------------------------------------------------------------------


def _check_trace_event(e: dict[str, Any]) -> None:
    """The fields of one event of Chrome's trace-event format (JSON object format)."""
    assert isinstance(e.get("name"), str) and e["name"], e
    assert e.get("ph") in ("X", "M", "i"), e
    assert isinstance(e.get("pid"), int) and isinstance(e.get("tid"), int), e
    assert isinstance(e.get("args", {}), dict), e
    if e["ph"] == "M":
        assert e["name"] in ("process_name", "thread_name", "thread_sort_index"), e
        key = "sort_index" if e["name"] == "thread_sort_index" else "name"
        assert key in e["args"], e
        return
    assert isinstance(e.get("ts"), (int, float)) and e["ts"] >= 0, e
    if e["ph"] == "X":
        assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, e
        assert isinstance(e.get("cat"), str), e
    else:
        assert e.get("s") in ("g", "p", "t"), e
    assert set(e) <= {"name", "cat", "ph", "ts", "dur", "pid", "tid", "args", "s"}, e


def test_the_trace_is_valid_trace_event_json_with_a_track_per_worker_slot(pipeline: ModuleType) -> None:
    """--format trace should load as trace-event JSON: every event well formed, one complete
    event per task that ran, each on its lane's track, no two overlapping on a track."""
    record = _run(pipeline)
    trace = json.loads(json.dumps(Report(record).trace()))
    assert set(trace) == {"traceEvents", "displayTimeUnit", "otherData"}
    assert trace["displayTimeUnit"] == "ms"
    events = trace["traceEvents"]
    for e in events:
        _check_trace_event(e)
    tasks = [e for e in events if e["ph"] == "X" and e.get("cat") != "checkpoint"]
    assert sorted(e["args"]["task"] for e in tasks) == sorted(
        t.label for t in record.tasks if t.state in ("ran", "failed"))
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert set(names) == {0} | {e["tid"] for e in tasks}
    assert len(names) - 1 == len(lanes(record.tasks).labels) <= 3
    by_tid: dict[int, list[dict[str, Any]]] = {}
    for e in tasks:
        by_tid.setdefault(e["tid"], []).append(e)
    for track in by_tid.values():
        track.sort(key=lambda e: e["ts"])
        assert all(a["ts"] + a["dur"] <= b["ts"] + 1 for a, b in zip(track, track[1:], strict=False))
    (failure,) = [e for e in events if e["ph"] == "i"]
    assert failure["args"]["error"] == "ValueError: bad part 3"
    assert any(e["args"]["critical"] for e in tasks)


# --- the page -----------------------------------------------------------------------------


def _embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match[1])  # type: ignore[no-any-return]


def test_the_page_is_self_contained(pipeline: ModuleType) -> None:
    """The HTML should load nothing from anywhere (inline styles, script and data only, and
    a Content-Security-Policy that forbids requests)."""
    page = Report(_run(pipeline)).html()
    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:|//)", page, re.I)
    for placeholder in ("{{title}}", "{{style}}", "{{script}}", "{{data}}"):
        assert placeholder not in page


def test_text_that_looks_like_html_cannot_break_out_of_the_page(
    make_module: Callable[[str, str], ModuleType],
) -> None:
    """A task's output with '</script>' or '{{data}}' should arrive in the page's data as it was."""
    module = make_module("tricky", """
        from checkpoint import task

        @task
        def tricky():
            def __():
                print("</script><script>alert(1)</script> <!-- {{data}} \\u2028")
                return 1
            return __
        """)
    recorder = RunRecorder()
    checkpoint.run([module.tricky()], executor="inline", subscribers=[recorder])
    assert recorder.last is not None
    page = Report(recorder.last).html()
    assert page.count("</script>") == 2  # the data's and the script's
    data = _embedded(page)
    assert data["texts"]["0"][0] == "</script><script>alert(1)</script> <!-- {{data}} \u2028\n"


def test_the_page_data_describes_the_run(pipeline: ModuleType) -> None:
    """The embedded data should hold what the page shows: counts, lanes, the critical path,
    sizes on disk, each task's texts and the DAG laid out by families and by tasks."""
    report = Report(_run(pipeline))
    data = _embedded(report.html())
    assert data == json.loads(json.dumps(report.model()))
    run, tasks = data["run"], data["tasks"]
    assert run["counts"] == {"ran": 11, "failed": 1, "skipped": 1, "not run": 0, "kept": 0,
                             "reused": 0}
    assert run["status"] == "failed" and run["executor"] == "thread" and run["workers"] == 3
    labels = tasks["label"]
    i = labels.index("load(2)")
    assert data["texts"][str(i)] == ["loading part 2\n", "", ""]
    failed = labels.index("square(3)")
    output, error, traceback = data["texts"][str(failed)]
    assert error == "ValueError: bad part 3"
    assert traceback.startswith("Traceback (most recent call last):\n  File ")
    assert "checkpoint/" not in traceback  # the user's frames, as the CLI shows them
    assert [labels[k] for k in data["critical"]][-1].startswith("square(")
    assert all(tasks["lane"][k] >= 0 for k in data["critical"])
    families = {f["short"]: f for f in data["families"]}
    assert families["load"]["counts"] == {"ran": 6} and families["load"]["cache"] > 0
    assert families["load"]["entries"] == 6
    assert [n["label"][0] for n in data["dag"]["families"]["nodes"]] == ["load", "square", "main"]
    assert [n["state"] for n in data["dag"]["families"]["nodes"]] == ["missing", "failed", "skipped"]
    assert sorted(data["dag"]["families"]["edges"]) == [[0, 1, 6], [1, 2, 6]]
    assert len(data["dag"]["tasks"]["nodes"]) == 13
    p = data["parallelism"]
    assert 0 < p["path"] <= p["busy"] and p["workers"] == 3 and p["allowed"] >= 1


CHAIN = """
from checkpoint import task, requires

@task
def load(i: int):
    def __():
        return i
    return __

@task
def clean():
    @requires([load(i) for i in range(3)])
    def __(xs):
        return sum(xs)
    return __

@task
def fit(alpha: float):
    @requires(clean())
    def __(x):
        return x * alpha
    return __

@task
def main(alpha: float):
    @requires(fit(alpha))
    def __(y):
        return y
    return __
"""


def test_the_families_view_keeps_the_edges_of_reused_families(
        make_module: Callable[[str, str], ModuleType]) -> None:
    """After a run that reused the upstream (its tasks not recorded one by one), the families
    view should still draw load -> clean -> fit -> main, as ``checkpoint graph --families``
    does; and fit (one task ran, one reused) takes the colour of the task that ran."""
    module = make_module("chain", CHAIN)
    checkpoint.run([module.fit(1.0), module.fit(0.5)], executor="inline")
    recorder = RunRecorder()
    checkpoint.run([module.main(2.0), module.fit(1.0), module.fit(0.5)], executor="inline", subscribers=[recorder])
    assert recorder.last is not None
    dag = Report(recorder.last).model()["dag"]["families"]
    names = [n["label"][0] for n in dag["nodes"]]
    edges = {(names[s], names[t]): n for s, t, n in dag["edges"]}
    assert edges == {("load", "clean"): 3, ("clean", "fit"): 3, ("fit", "main"): 1}
    states = {n["label"][0]: n["state"] for n in dag["nodes"]}
    assert states == {"load": "fresh", "clean": "fresh", "fit": "missing", "main": "missing"}
    saved = RunRecord.from_doc(recorder.last.to_doc())
    assert Report(saved).model()["dag"]["families"]["edges"] == dag["edges"]


def test_data_directory_sizes_are_reported(make_module: Callable[[str, str], ModuleType]) -> None:
    module = make_module("withdata", """
        from checkpoint import task, requires, TaskDirectory

        @task
        def make():
            @requires(TaskDirectory())
            def __(path):
                (path / "blob").write_bytes(b"x" * 5000)
                return str(path)
            return __
        """)
    recorder = RunRecorder()
    checkpoint.run([module.make()], executor="inline", subscribers=[recorder])
    assert recorder.last is not None
    assert Report(recorder.last).model()["tasks"]["data"] == [5000]


def test_a_report_without_its_store_still_renders(pipeline: ModuleType, tmp_path: Path) -> None:
    """A record read elsewhere (its cache gone) should report without sizes, not fail."""
    record = _run(pipeline)
    model = Report(record, cache_dir=tmp_path / "elsewhere").model()
    assert all(f["cache"] is None for f in model["families"])


def test_a_large_dag_is_drawn_by_families_only() -> None:
    tasks = [_task(f"t{i}", i, 1.0, deps=[i - 1] if i else []) for i in range(400)]
    model = Report(RunRecord(status="succeeded", started=0, planned=0, ended=400,
                             families={"m.f": "m.f"}, tasks=tasks, total=400)).model()
    assert model["dag"]["tasks"] is None
    assert len(model["critical"]) == 400


def test_in_a_notebook_the_report_shows_the_same_page_in_an_iframe(pipeline: ModuleType) -> None:
    report = Report(_run(pipeline))
    view = report._repr_html_()
    match = re.fullmatch(r'<iframe srcdoc="([^"]*)" title="[^"]*" style="[^"]*"></iframe>', view)
    assert match is not None
    assert html.unescape(match[1]) == report.html()


def test_load_reads_the_last_run_or_says_there_is_none(pipeline: ModuleType) -> None:
    with pytest.raises(RunNotFoundError):
        Report.load()
    _run(pipeline)
    report = Report.load()
    assert report.record.number == 1
    assert repr(report).startswith("<Report run=1 failed ran=11 failed=1 wall_time=")
    assert report.title == "checkpoint run #1: main()"


def test_write_checks_the_format(pipeline: ModuleType, tmp_path: Path) -> None:
    report = Report(_run(pipeline))
    assert report.write(tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert "traceEvents" in json.loads(report.write(tmp_path / "t.json", "trace").read_text())
    with pytest.raises(ValueError, match="format must be one of html, trace, not 'pdf'"):
        report.write(tmp_path / "r.pdf", "pdf")
