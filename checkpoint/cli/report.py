"""``checkpoint report``: a recorded run as one self-contained HTML page, or a Chrome trace."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from .._units import duration_text
from ..errors import UsageError
from . import App, pass_app
from ._complete import complete_targets
from ._output import err, human_time, table

if TYPE_CHECKING:
    from ..report import Report
    from ..runs import RunRecord

DEFAULT_OUTPUT = {"html": "report.html", "trace": "trace.json"}


@click.command()
@click.argument("target", required=False, shell_complete=complete_targets)
@click.option("-o", "--output", metavar="FILE",
              help="Where to write it (default: report.html, or trace.json with --format "
                   "trace); '-' writes to stdout.")
@click.option("--format", "fmt", type=click.Choice(["html", "trace"]), default="html",
              show_default=True,
              help="html: the page; trace: Chrome trace-event JSON for Perfetto or chrome://tracing.")
@click.option("--run", "number", type=int, metavar="N",
              help="Run N of the history (see --list); -1 is the last, -2 the one before.")
@click.option("--list", "list_runs", is_flag=True, help="List the recorded runs instead.")
@click.option("--open", "open_it", is_flag=True, help="Open the report in a web browser.")
@pass_app
def report(
    app: App, target: str | None, output: str | None, fmt: str, number: int | None,
    list_runs: bool, open_it: bool,
) -> None:
    """Write a report of the last run (or run N, or the last run of TARGET).

    The HTML report is one file with everything inlined (it opens offline): a summary, a
    timeline with one lane per worker, the critical path, the DAG, each task's output and
    traceback, the slowest tasks and the cache size of each family. Runs that ran
    something are recorded; the cache keeps the last 20.

    Examples:

    \b
      checkpoint report --open               # the last run, in your browser
      checkpoint report 'train(3)'           # the last run in which train(3) ran
      checkpoint report --list               # the recorded runs
      checkpoint report --run -2 -o prev.html
      checkpoint report --format trace      # open trace.json in ui.perfetto.dev
    """
    from ..report import Report
    from ..runs import load_run

    if list_runs:
        _list(app)
        return
    if target is not None and number is not None:
        raise UsageError("Give a TARGET or --run N, not both.")
    if open_it and output == "-":
        raise UsageError("--open needs a file: leave out '-o -'.")
    record = _last_run_of(app, target) if target is not None else load_run(number, app.cache_dir)
    the_report = Report(record, app.cache_dir)
    if output == "-":
        text = the_report.html() if fmt == "html" else _trace_text(the_report)
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = app.invoked_from / (output or DEFAULT_OUTPUT[fmt])
    try:
        the_report.write(path, fmt)
    except OSError as exc:
        raise UsageError(f"Cannot write {output or path}: {exc.strerror or exc}.") from None
    err(f"Wrote {click.format_filename(output or path.name)}: {_summary(record)}.",
        quiet=app.quiet)
    if open_it:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            err(f"Could not start a web browser; open {path} yourself.")


def _summary(record: RunRecord) -> str:
    """A run in one line: its number, targets, status, time and task counts."""
    from ..runs import RecordState

    shown = (RecordState.RAN, RecordState.REUSED, RecordState.FAILED, RecordState.SKIPPED)
    counts = ", ".join(f"{record.count(s):,} {s}" for s in shown
                       if record.count(s) or s in (RecordState.RAN, RecordState.REUSED))
    return (f"run {record.number} ({', '.join(record.targets) or 'no target'}), "
            f"{record.status} in {duration_text(record.wall_time)}: {counts}")


def _trace_text(the_report: Report) -> str:
    import json

    return json.dumps(the_report.trace(), separators=(",", ":"))


def _last_run_of(app: App, target: str) -> RunRecord:
    """The last recorded run in which TARGET's task ran, failed or was skipped, or was a target."""
    from ..errors import RunNotFoundError
    from ..runs import last_run_of

    task = app.targets([target])[0]
    found = last_run_of(task.id, app.cache_dir)
    if found is None:
        raise RunNotFoundError(
            f"No recorded run ran {task!r} ({task.family.name}). Run it (checkpoint run "
            f"{target!r}), or see the recorded runs: checkpoint report --list"
        )
    return found


def _list(app: App) -> None:
    from ..runs import RecordState, recorded_runs

    rows = []
    for r in recorded_runs(app.cache_dir):
        rows.append([str(r.number), human_time(r.started), r.status, f"{r.count(RecordState.RAN):,}",
                     f"{r.count(RecordState.FAILED):,}", duration_text(r.wall_time),
                     ", ".join(r.targets)])
    if not rows:
        err(f"No run is recorded in {app.cache_dir} yet.", quiet=app.quiet)
        return
    click.echo(table(["run", "started", "status", "ran", "failed", "took", "targets"], rows,
                     right=(0, 3, 4, 5)))

