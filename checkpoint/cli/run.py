"""``checkpoint run``: build targets and print their values.

stdout gets each target's value (a string as it is, anything else as its ``repr``; nothing
for ``None``), or with ``--json`` one document::

    {"ok": true,                      # no task failed or was skipped
     "targets": [{"target": "main", "task": "main()", "id": "...",
                  "value": <the value if JSON-serializable, else null>, "repr": "..."}],
     "ran": 91, "pulled": 0, "reused": 1, "wall_time": 0.41,
     "pushed": 91,                    # with --push (entries uploaded), else absent
     "failed": [{"task": "...", "family": "...", "id": "...", "error": "...", "traceback": "..."}],
     "skipped": ["<task>", ...]}

Progress goes to stderr through the reporter of :mod:`checkpoint.progress` (live on a
terminal, plain lines otherwise), which also shows failed tasks' output and tracebacks.
With ``--dry-run`` nothing runs: stdout lists the tasks that would run, grouped by family,
each with its reason (``--json``: ``{"total": N, "to_run": [{"task", "family", "id",
"reason"}]}``). Messages, progress and tracebacks go to stderr.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import click

from .._text import plural
from .._types import EXECUTORS, Json, Reason, executor_name
from ..errors import ExitCode, UsageError
from . import App, pass_app
from ._complete import complete_targets
from ._output import (
    Duration,
    echo_text,
    emit_json,
    emit_json_stream,
    err,
    safe_repr,
    trim_traceback,
)

if TYPE_CHECKING:
    from ..events import Event, Subscriber
    from ..graph import Node, Plan
    from ..progress import Reporter
    from ..remote import Remote
    from ..runs import RunRecorder
    from ..scheduler import RunResult
    from ..task import Task

def _rate_limit(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for value in values:
        queue, sep, number = value.rpartition("=")
        if not sep or not queue or not number.isdigit() or int(number) < 1:
            raise click.BadParameter(f"{value!r} is not QUEUE=N with N >= 1")
        limits[queue] = int(number)
    return limits


def _check_queues(app: App, rate_limits: dict[str, int]) -> None:
    """Warn about a --rate-limit queue that no task family of the taskfile uses."""
    if not rate_limits:
        return
    from ..taskfile import loaded_families

    known = sorted({family.queue for family in loaded_families()})
    for queue in rate_limits:
        if queue not in known:
            err(f"warning: no task family uses the queue {queue!r} of --rate-limit; the queues "
                f"are: {', '.join(known) or '(none)'} (a family's queue is its name unless "
                "@task(queue=...) names another).", quiet=app.quiet)


def _executor(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return executor_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


class FailureLog:
    """Subscriber keeping the traceback text of each failed task (for ``--json``)."""

    takes_batches = True  # (of reused tasks: see checkpoint.events.TasksReused)

    def __init__(self) -> None:
        from ..events import TaskFailed

        self.tracebacks: dict[str, str] = {}
        self._failed = TaskFailed  # called once per task: no import statement in __call__

    def __call__(self, event: Event) -> None:
        if type(event) is self._failed:
            self.tracebacks[event.task.id] = event.traceback


def subscribers(
    app: App, *, no_progress: bool, show_output: bool, as_json: bool,
    traced: list[Task[object]] | None = None,
) -> tuple[list[Subscriber], Reporter, FailureLog]:
    """The event subscribers of a run, all chosen here: the progress reporter (live on a
    terminal, plain lines otherwise or with --no-progress; failures only with -q; one per
    phase of a ``--trace`` run) and the failure log that --json reports from."""
    from ..progress import reporter_for

    def make() -> Reporter:
        return reporter_for(
            live=False if no_progress or as_json else None,
            show_output=show_output or app.verbosity > 0,
            quiet=app.quiet,
            store=app.store,
        )

    reporter = make() if traced is None else _TracePhases(app, make, traced)
    failures = FailureLog()
    return [reporter, failures], reporter, failures


class _TracePhases:
    """The reporter of a ``--trace`` run, which runs in phases: the traced tasks'
    prerequisites, the traced tasks in the debugger (without events: a display would draw over
    it), then the targets. A reporter reports one run, so each phase gets its own, under a
    line saying what the phase is."""

    def __init__(self, app: App, make: Callable[[], Reporter], traced: list[Task[object]]) -> None:
        self.app, self.make = app, make
        self.names = ", ".join(t.expression() for t in traced)
        self.are = "is" if len(traced) == 1 else "are"
        self.prerequisites = any(t.spec().dependencies for t in traced)
        self.phase = 0
        self.reporter: Reporter | None = None

    def __call__(self, event: Event) -> None:
        from ..events import RunPlanned

        if isinstance(event, RunPlanned) or self.reporter is None:
            self.close()
            self.phase += 1
            if self.phase == 1 and self.prerequisites:
                err(f"Prerequisites of {self.names}:", quiet=self.app.quiet)
            else:  # the traced phase succeeded, or the run would have stopped there
                err(f"{self.names} ran under the debugger and {self.are} stored. The targets:",
                    quiet=self.app.quiet)
            self.reporter = self.make()
        self.reporter(event)

    def close(self) -> None:
        if self.reporter is not None:
            self.reporter.close()


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With --json, stdout carries only the document: stray prints go to stderr."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def _fd1_to_stderr() -> Iterator[None]:
    """During the run, file descriptor 1 is stderr's: what tasks write to it past the
    capture of ``sys.stdout`` (a child process, a C extension's ``printf``) goes to stderr,
    and stdout keeps only the values printed after the run. Worker processes started in
    the run inherit it."""
    import os

    try:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no such descriptors (closed, or not a real process's)
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _interrupt_exit(summarized: bool) -> Iterator[Callable[[Event], None]]:
    """Turn an interrupted run into "interrupted: N done, M not run" (unless the progress
    summary, ``summarized``, says it) and exit 130 (143: SIGTERM, 129: SIGHUP)."""
    from ..errors import exit_code
    from ..events import CorruptEntryFound, InputChanged, RunInterrupted, TaskRetried

    seen: list[RunInterrupted] = []

    def record(event: Event) -> None:
        if isinstance(event, RunInterrupted):
            seen.append(event)
        elif isinstance(event, (CorruptEntryFound, InputChanged)):
            click.echo(f"warning: {event.message}", err=True)
        elif isinstance(event, TaskRetried):
            click.echo(f"retrying {event.task!r} after attempt {event.attempt} failed: "
                       f"{type(event.error).__name__}: {event.error}", err=True)

    record.takes_batches = True  # type: ignore[attr-defined]  # (checkpoint.events.TasksReused)
    try:
        yield record
    except KeyboardInterrupt as exc:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # another Ctrl-C now ends us at once
        if not (summarized and seen):
            counts = f": {seen[0].done} done, {seen[0].not_run} not run" if seen else ""
            click.echo(f"interrupted{counts}", err=True)
        raise click.exceptions.Exit(exit_code(exc)) from None


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("-j", "--workers", "--jobs", "workers", type=click.IntRange(min=1),
              help="Number of workers (default: CPU count).")
@click.option("--executor", default="process", show_default=True, callback=_executor,
              shell_complete=lambda ctx, param, incomplete: [
                  name for name in EXECUTORS if name.startswith(incomplete)],
              help="process, thread, inline, dask or dask://HOST:PORT.")
@click.option("--rate-limit", "rate_limits", multiple=True, callback=_rate_limit, metavar="QUEUE=N",
              help="At most N tasks of QUEUE at once (repeatable).")
@click.option("-k", "--keep-going", is_flag=True, help="After a failure, go on with independent tasks.")
@click.option("--retries", type=click.IntRange(min=0), default=0, metavar="N",
              help="Run a failing task up to N more times before it counts as failed.")
@click.option("--timeout", type=Duration(positive=True), metavar="DURATION",
              help="Stop a task that runs longer (e.g. 90s, 15m, 1h30m; a bare number is "
                   "seconds); it fails as timed out. A family's @task(timeout=...) wins.")
@click.option("-n", "--dry-run", is_flag=True, help="Only list the tasks that would run, and why.")
@click.option("--force", is_flag=True, help="Re-run the targets even if fresh.")
@click.option("--force-upstream", is_flag=True, help="Re-run every task under the targets.")
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of the live display.")
@click.option("-v", "--show-output", is_flag=True,
              help="Show each task's captured output as it finishes ('checkpoint -v run' does too, "
                   "and also names the taskfile and cache).")
@click.option("--pdb", "post_mortem", is_flag=True,
              help="When a task fails, re-run it in this process under the debugger (post-mortem).")
@click.option("--trace", "trace", metavar="TARGET", shell_complete=complete_targets,
              help="Build TARGET's prerequisites, then step through TARGET under the debugger.")
@click.option("--show-locals", is_flag=True, help="Show local variables in failure tracebacks.")
@click.option("-q", "--quiet", is_flag=True,
              help="Say less: only errors and data ('checkpoint -q run' does the same).")
@click.option("--report", "report_path", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the run's HTML report to FILE when it ends, failed or not "
                   "(see 'checkpoint report').")
@click.option("--remote", "remote_option", metavar="URL",
              help="Pull what this remote cache has before running (s3://bucket/prefix, "
                   "file:///dir, ...); default: $CP_REMOTE, else remote = ... under "
                   "[tool.checkpoint] in pyproject.toml.")
@click.option("--no-remote", is_flag=True, help="Do not use a remote cache, even if one is configured.")
@click.option("--push", is_flag=True,
              help="Then push the DAG's entries the remote lacks (remote_push = true in "
                   "pyproject.toml does too).")
@click.option("--watch", is_flag=True,
              help="Run again whenever the taskfile, a module of the project it imports or a "
                   "File() input of the targets changes, until Ctrl-C (needs the watch extra: "
                   "pip install 'checkpoint-tool[watch]').")
@pass_app
def run(
    app: App,
    targets: tuple[str, ...],
    workers: int | None,
    executor: str,
    rate_limits: dict[str, int],
    keep_going: bool,
    retries: int,
    timeout: float | None,
    dry_run: bool,
    force: bool,
    force_upstream: bool,
    no_code_check: bool,
    as_json: bool,
    no_progress: bool,
    show_output: bool,
    post_mortem: bool,
    trace: str | None,
    show_locals: bool,
    quiet: bool,
    report_path: str | None,
    remote_option: str | None,
    no_remote: bool,
    push: bool,
    watch: bool,
) -> None:
    """Build TARGETS (default: main) as one DAG and print their values.

    Only what is missing or stale runs; everything else is reused from the cache. Each
    target's value goes to stdout on its own line: a string as it is, anything else as its
    repr, nothing for None (--json: one JSON document). Progress goes to stderr.

    Examples:

    \b
      checkpoint run                        # build main
      checkpoint run 'choose(6, 3)' -j 4    # one task and its upstream, 4 workers
      checkpoint run -n main                # what would run, and why
      checkpoint run --executor inline      # one at a time, breakpoint() works
      checkpoint run -k --retries 2         # go on after failures, retry each twice
      checkpoint run --rate-limit gpu=1     # one task of queue gpu at a time
      checkpoint run --report report.html   # and a report of the run, to open in a browser
      checkpoint run --remote s3://team-cache/proj --push   # share results
      checkpoint run --watch main           # run again on every save, until Ctrl-C
    """
    if quiet:
        app.verbosity = min(app.verbosity, -1)
    flags = RunFlags(
        targets=targets or ((trace,) if trace else ("main",)), workers=workers,
        executor=executor, rate_limits=rate_limits, keep_going=keep_going, retries=retries,
        timeout=timeout, dry_run=dry_run, force=force, force_upstream=force_upstream,
        code_check=not no_code_check, as_json=as_json, no_progress=no_progress,
        show_output=show_output, post_mortem=post_mortem, trace=trace, show_locals=show_locals,
        report_path=report_path, remote_option=remote_option, no_remote=no_remote, push=push)
    if watch:
        _watch(app, flags)
    code = run_once(app, flags)
    if code:
        sys.exit(code)


def _watch(app: App, flags: RunFlags) -> NoReturn:
    """``--watch``: run, then again on every change, until Ctrl-C."""
    clash = [name for name, given in (("--dry-run", flags.dry_run), ("--json", flags.as_json),
                                      ("--pdb", flags.post_mortem), ("--trace", flags.trace))
             if given]
    if clash:
        raise UsageError(f"--watch runs again and again; it cannot be combined with "
                         f"{' or '.join(clash)}. Leave one out.")
    from .watch import watch_loop

    watch_loop(app, flags.targets, lambda: run_once(app, flags),
               live=False if flags.no_progress else None)


@dataclass(frozen=True)
class RunFlags:
    """What ``checkpoint run`` was asked, option by option (see its ``--help``)."""

    targets: tuple[str, ...]
    workers: int | None
    executor: str
    rate_limits: dict[str, int]
    keep_going: bool
    retries: int
    timeout: float | None
    dry_run: bool
    force: bool
    force_upstream: bool
    code_check: bool
    as_json: bool
    no_progress: bool
    show_output: bool
    post_mortem: bool
    trace: str | None
    show_locals: bool
    report_path: str | None
    remote_option: str | None
    no_remote: bool
    push: bool


def run_once(app: App, flags: RunFlags) -> int:
    """One run of the targets (the whole command without --watch); its exit code."""
    from ..graph import plan

    tasks = app.targets(flags.targets)
    _check_queues(app, flags.rate_limits)
    traced = app.targets((flags.trace,)) if flags.trace else []
    if flags.report_path:
        _check_report_path(app, flags)
    if flags.dry_run:
        the_plan = plan(tasks, app.store, force=flags.force, force_upstream=flags.force_upstream,
                        code_check=flags.code_check, keep_specs=False)  # nothing runs
        _show_plan(app, the_plan, flags.as_json)
        return ExitCode.OK
    remote, push_now = _remote(app, flags.remote_option, flags.no_remote, flags.push)
    result, failures = _execute(app, flags, tasks, traced, remote)
    pushed = _push(app, remote, result, flags.as_json) if push_now and remote else None
    if flags.as_json:
        document = _run_document(tasks, flags.targets, result, failures)
        if pushed is not None:
            document["pushed"] = pushed
        emit_json(document)
    else:
        if traced:
            _report_traced_failures(result, failures, traced)
        for task in tasks:
            value = result.values.get(task.id)
            if value is not None:
                # A string is the task's own rendering (a report, a path): print it as is.
                echo_text(value if isinstance(value, str) else safe_repr(value))
    return ExitCode.FAILED if result.failed or result.skipped else ExitCode.OK


def _check_report_path(app: App, flags: RunFlags) -> None:
    """``--report FILE`` is refused before the run, not after it, when it cannot be written."""
    if flags.dry_run:
        raise UsageError("--report needs a run, and --dry-run runs nothing: leave one out.")
    assert flags.report_path is not None
    folder = (app.invoked_from / flags.report_path).parent
    if not folder.is_dir():
        raise UsageError(f"Cannot write the report to {flags.report_path}: there is no directory "
                         f"{click.format_filename(folder)}.")


def _execute(app: App, flags: RunFlags, tasks: list[Task[object]], traced: list[Task[object]],
             remote: Remote | bool) -> tuple[RunResult, FailureLog]:
    """Run the tasks with progress on stderr, recorded for ``checkpoint report``."""
    from ..executors import default_workers
    from ..runs import RunRecorder
    from ..scheduler import run as run_tasks

    # Progress, the summary and failed tasks' output and tracebacks go to stderr.
    subs, reporter, failures = subscribers(app, no_progress=flags.no_progress,
                                           show_output=flags.show_output, as_json=flags.as_json,
                                           traced=traced or None)
    # Every run is recorded (a run that only reuses results is not saved).
    recorder = RunRecorder(app.cache_dir, executor=flags.executor,
                           workers=default_workers(flags.executor, flags.workers))
    try:
        with _interrupt_exit(summarized=not app.quiet) as record, contextlib.closing(reporter), \
                _stdout_to_stderr(flags.as_json), _fd1_to_stderr():
            result = run_tasks(
                tasks,
                executor=flags.executor,
                max_workers=flags.workers,
                rate_limits=flags.rate_limits,
                keep_going=flags.keep_going,
                force=flags.force,
                force_upstream=flags.force_upstream,
                code_check=flags.code_check,
                cache_dir=app.cache_dir,
                subscribers=[*subs, record, recorder],
                retries=flags.retries,
                timeout=flags.timeout,
                raise_on_failure=False,
                debug=flags.post_mortem,
                trace=traced,
                show_locals=flags.show_locals,
                remote=remote,
            )
    finally:
        recorder.close()
        for problem in recorder.problems:
            err(f"warning: {problem}", quiet=app.quiet)
        if flags.report_path:
            _write_report(app, recorder, flags.report_path)
    return result, failures


def _write_report(app: App, recorder: RunRecorder, path: str) -> None:
    """``--report``: the HTML report of the run that just ended (never fails the command)."""
    from ..report import Report

    record = recorder.last
    if record is None:
        err(f"No report written to {path}: the run stopped before any task could start.")
        return
    try:
        Report(record, app.cache_dir).write(app.invoked_from / path)
    except Exception as exc:  # noqa: BLE001 - the run's own outcome (or error) must stand
        err(f"warning: the report could not be written to {path}: {exc}")
        return
    err(f"Report: {path}", quiet=app.quiet)


def _remote(app: App, option: str | None, no_remote: bool, push: bool) -> tuple[Remote | bool, bool]:
    """The remote cache of a run (``False``: none) and whether to push to it."""
    from .remote import remote_url, settings

    if no_remote:
        if push:
            raise click.UsageError("--push and --no-remote contradict each other.")
        return False, False
    url = remote_url(app, option)
    push = push or bool(settings(app).get("remote_push", False))
    if not url:
        if push:
            raise click.UsageError(
                "--push needs a remote cache: give --remote URL, set CP_REMOTE, or add "
                "remote = \"s3://bucket/prefix\" under [tool.checkpoint] in pyproject.toml.")
        return False, False
    from ..remote import Remote

    remote = Remote(url)
    if push:
        remote.signing_key()  # before anything runs: a missing key is a usage error
    return remote, push


def _push(app: App, remote: Remote | bool, result: RunResult, as_json: bool) -> int | None:
    """Push a run's current entries; a remote that cannot be reached is a warning."""
    from ..errors import RemoteUnavailableError
    from ..remote import Remote, push_plan

    assert isinstance(remote, Remote)
    if remote.unavailable:  # the pull phase said so already
        return None
    try:
        report = push_plan(result.plan, app.store, remote)
    except RemoteUnavailableError as exc:
        err(f"warning: {exc} Nothing was pushed.")
        return None
    if not as_json:
        err(f"Pushed {plural(len(report.pushed), 'entry', 'entries')} to {remote.url} "
            f"({len(report.present)} already there, {len(report.skipped)} not pushed).",
            quiet=app.quiet)
    return len(report.pushed)


def _report_traced_failures(
    result: RunResult, failures: FailureLog, traced: list[Task[object]]
) -> None:
    """Report a --trace task's failure: it runs without the progress reporter, which would
    draw over the debugger, so nothing else reports it."""
    from .._text import task_label
    from ..debug import DebuggerQuitError
    from ._output import format_exception

    by_id = {t.id: t for t in traced}
    for tid, error in result.failed.items():
        task = by_id.get(tid)
        if task is None or tid in failures.tracebacks:
            continue
        name = task_label(task)
        if isinstance(error, DebuggerQuitError):
            click.echo(f"{name} did not finish: {error}", err=True)
        else:
            click.echo(f"{name} failed: {type(error).__name__}: {error}", err=True)
            click.echo(format_exception(error), err=True)


def _show_plan(app: App, the_plan: Plan, as_json: bool) -> None:
    nodes = the_plan.nodes
    to_run = the_plan.to_run
    if as_json:  # streamed: a million tasks to run are never one document in memory
        emit_json_stream(iter([
            ("total", len(nodes)),
            ("to_run", ({"task": nodes[t].task.expression(), "family": nodes[t].task.family.name,
                         "id": t, "reason": nodes[t].reason} for t in to_run)),
        ]))
        return
    if not to_run:
        err(("Nothing to run: " + ("the task is" if len(nodes) == 1 else f"all {len(nodes):,} tasks are") + " fresh."), quiet=app.quiet)
        return
    groups: dict[str, list[Node]] = {}
    for tid in to_run:
        node = nodes[tid]
        groups.setdefault(node.task.family.short_name, []).append(node)
    texts: dict[Reason | None, str] = {reason: str.__str__(reason) for reason in Reason}
    for name, group in groups.items():
        click.echo(f"{name}: {plural(len(group), 'task')}")
        # Plain strings, no tuple per line: a million objects the collector would walk.
        exprs = [node.task.expression() for node in group]
        width = max(map(len, exprs))
        for start in range(0, len(exprs), 2000):  # a few thousand lines per write
            click.echo("\n".join([
                f"  {expr.ljust(width)}  {texts[node.reason]}"
                for expr, node in zip(exprs[start:start + 2000], group[start:start + 2000], strict=True)]))
    err(f"{len(to_run):,} of {plural(len(nodes), 'task')} would run.", quiet=app.quiet)


def _run_document(
    tasks: list[Task[object]], texts_in: tuple[str, ...], result: RunResult, failures: FailureLog
) -> dict[str, Json]:
    from ._output import format_exception

    targets: list[Json] = []
    for text, task in zip(texts_in, tasks, strict=False):
        entry: dict[str, Json] = {"target": text, "task": task.expression(), "id": task.id}
        if task.id in result.values:
            value = result.values[task.id]
            try:
                json.dumps(value)
                entry["value"] = value
            except (TypeError, ValueError):
                entry["value"] = None
            entry["repr"] = safe_repr(value)
        targets.append(entry)
    failed = []
    for tid, error in result.failed.items():
        task = result.plan.nodes[tid].task
        tb = failures.tracebacks.get(tid)
        failed.append({
            "task": task.expression(), "family": task.family.name, "id": tid,
            "error": f"{type(error).__name__}: {error}",
            "traceback": trim_traceback(tb.rstrip()) if tb else format_exception(error),
        })
    return {
        "ok": result.ok,
        "targets": targets,
        "ran": len(result.ran),
        "pulled": len(result.pulled),
        "reused": len(result.reused) - len(result.pulled),
        "wall_time": result.wall_time,
        "failed": failed,
        "skipped": [t.expression() for t in result.skipped],
    }
