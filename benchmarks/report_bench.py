"""Cost of run reports: recording a run, writing its report (HTML, trace), drawing it.

Usage::

    .venv/bin/python benchmarks/report_bench.py                    # 1,000 and 10,000 tasks
    .venv/bin/python benchmarks/report_bench.py --sizes 1000 --rounds 3 --browser

For each size, a real run (thread executor, 2 workers) of N tasks that each print a line,
and one that sums them, with its events kept. Then, medians over ``--rounds``:

* **record**: what :class:`~checkpoint.runs.RunRecorder` costs the run: handling its events,
  building the record when the run ends (start times read back from the store, as today),
  and saving it; then the same with the start times carried by the events (what the
  scheduler can pass: no store lookups);
* **html** / **trace**: ``Report(record).html()`` and ``.trace()`` as JSON, in this process
  (networkx already imported), and the size of each file;
* **report cmd**: ``checkpoint report -o FILE`` as a whole process (start-up, imports,
  reading the record, writing the page);
* **draw** (``--browser``): from navigation to a drawn page in headless Chromium.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkpoint import events as ev
from checkpoint import requires, run, task
from checkpoint.report import Report
from checkpoint.runs import RunRecorder, save_run
from checkpoint.store import Store

CHROMIUM = "/usr/bin/chromium"


@task
def part(i: int) -> Any:
    def __() -> int:
        print(f"part {i}")
        return i
    return __


@task
def total(n: int) -> Any:
    @requires([part(i) for i in range(n)])
    def __(values: list[int]) -> int:
        return sum(values)
    return __


def median(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def replay(events: list[Any], cache_dir: str) -> RunRecorder:
    recorder = RunRecorder(cache_dir, save=False)
    for event in events:
        recorder(event)
    return recorder


def with_starts(events: list[Any]) -> list[Any]:
    """The events as they would be if the scheduler passed each task's start time."""
    out = []
    for e in events:
        if isinstance(e, (ev.TaskFinished, ev.TaskFailed)):
            e = dataclasses.replace(e, started=e.time - e.duration)
        out.append(e)
    return out


def draw_time(path: Path, rounds: int) -> float:
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            viewport={"width": 1400, "height": 1000})
        for _ in range(rounds):
            page = context.new_page()
            start = time.perf_counter()
            page.goto(path.as_uri())
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            times.append(time.perf_counter() - start)
            page.close()
        context.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated task counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--browser", action="store_true", help="also time drawing in Chromium")
    args = parser.parse_args()
    cli = str(Path(sys.executable).parent / "checkpoint")

    print("| tasks | run s | record ms (starts from store) | record ms (starts in events) "
          "| save ms | html s | html MB | trace s | trace MB | report cmd s |"
          + (" draw s |" if args.browser else ""))
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
          + (" ---: |" if args.browser else ""))
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as cache_dir:
            events: list[Any] = []
            start = time.perf_counter()
            run([total(size)], executor="thread", max_workers=2, cache_dir=cache_dir,
                subscribers=[events.append])
            ran = time.perf_counter() - start
            t_record, recorder = median(lambda: replay(events, cache_dir), args.rounds)  # noqa: B023
            fast = with_starts(events)
            t_fast, _ = median(lambda: replay(fast, cache_dir), args.rounds)  # noqa: B023
            record = recorder.last
            t_save, _ = median(lambda: save_run(record, cache_dir), args.rounds)  # noqa: B023
            Report(record, cache_dir).html()  # networkx imported, template read
            t_html, page = median(lambda: Report(record, cache_dir).html(), args.rounds)  # noqa: B023
            t_trace, trace = median(
                lambda: json.dumps(Report(record, cache_dir).trace(), separators=(",", ":")),  # noqa: B023
                args.rounds)
            out = Path(cache_dir) / "report.html"

            def command() -> None:
                subprocess.run([cli, "--cache-dir", cache_dir, "report", "-o", str(out)],  # noqa: B023
                               check=True, capture_output=True, env={**os.environ, "NO_COLOR": "1"})

            t_cmd, _ = median(command, max(1, args.rounds // 2 + 1))
            row = (f"| {size + 1:,} | {ran:.2f} | {t_record * 1000:.0f} | {t_fast * 1000:.0f} | "
                   f"{t_save * 1000:.0f} | {t_html:.2f} | {len(page.encode()) / 1e6:.2f} | "
                   f"{t_trace:.2f} | {len(trace) / 1e6:.2f} | {t_cmd:.2f} |")
            if args.browser:
                row += f" {draw_time(out, max(1, args.rounds // 2 + 1)):.2f} |"
            print(row, flush=True)
            Store._open_stores.clear()
    print(f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians of {args.rounds} "
          "rounds (the report command and drawing: fewer).")


if __name__ == "__main__":
    main()
