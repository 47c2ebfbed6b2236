"""``checkpoint run``: build targets and print their values."""

from __future__ import annotations

import sys

import click

from . import App, pass_app


def _rate_limit(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for value in values:
        queue, sep, number = value.rpartition("=")
        if not sep or not queue or not number.isdigit() or int(number) < 1:
            raise click.BadParameter(f"{value!r} is not QUEUE=N with N >= 1")
        limits[queue] = int(number)
    return limits


@click.command()
@click.argument("targets", nargs=-1)
@click.option("-j", "--workers", type=click.IntRange(min=1), help="Number of workers (default: CPU count).")
@click.option("--executor", default="process", show_default=True, help="process, thread, inline, dask or dask://HOST:PORT.")
@click.option("--rate-limit", "rate_limits", multiple=True, callback=_rate_limit, metavar="QUEUE=N", help="At most N tasks of QUEUE at once (repeatable).")
@click.option("-k", "--keep-going", is_flag=True, help="After a failure, go on with independent tasks.")
@click.option("--force", is_flag=True, help="Re-run the targets even if fresh.")
@click.option("--force-upstream", is_flag=True, help="Re-run every task under the targets.")
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@click.option("--no-progress", is_flag=True, help="Plain log lines instead of the live display.")
@click.option("-v", "--show-output", is_flag=True, help="Show each task's output as it finishes.")
@pass_app
def run(
    app: App,
    targets: tuple[str, ...],
    workers: int | None,
    executor: str,
    rate_limits: dict[str, int],
    keep_going: bool,
    force: bool,
    force_upstream: bool,
    no_code_check: bool,
    no_progress: bool,
    show_output: bool,
) -> None:
    """Build TARGETS (default: main) and print their values.

    A target's value goes to stdout: a string as it is, anything else as its repr();
    None prints nothing.
    """
    from ..progress import reporter_for
    from ..scheduler import run as run_tasks
    from ..taskfile import resolve_target

    module = app.module
    tasks = [resolve_target(module, t, taskfile=app.taskfile) for t in (targets or ("main",))]
    # Progress, the summary and failed tasks' output and tracebacks go to stderr.
    reporter = reporter_for(
        live=False if no_progress else None,
        show_output=show_output or app.verbosity > 0,
        quiet=app.verbosity < 0,
    )
    try:
        result = run_tasks(
            tasks,
            executor=executor,
            max_workers=workers,
            rate_limits=rate_limits,
            keep_going=keep_going,
            force=force,
            force_upstream=force_upstream,
            code_check=not no_code_check,
            cache_dir=app.cache_dir,
            raise_on_failure=False,
            subscribers=[reporter],
        )
    finally:
        reporter.close()
    for task in tasks:
        if task.id in result.values:
            value = result.values[task.id]
            if value is not None:
                # A string is the task's own rendering (a report, a path): print it as is.
                click.echo(value if isinstance(value, str) else repr(value))
    if result.failed:
        sys.exit(1)
