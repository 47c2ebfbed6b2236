"""``checkpoint log``: print a task's captured output from its last run."""

from __future__ import annotations

import time

import click

from . import App, pass_app
from ._output import quote_target


@click.command()
@click.argument("target")
@pass_app
def log(app: App, target: str) -> None:
    """Print what TARGET wrote to stdout and stderr in its last run (and its traceback if it failed).

    Examples:

    \b
      checkpoint log main            # what main printed last time
      checkpoint log 'fit(0.1)'      # a task with arguments: quote it
    """
    from ..errors import CheckpointError
    from ..history import last_run
    from ..progress import format_duration
    from ..taskfile import resolve_target

    task = resolve_target(app.module, target, taskfile=app.taskfile)
    run = last_run(task, app.store, output=True)
    if run is None:
        raise CheckpointError(
            f"No run of {task!r} ({task.family.name}) is recorded in {app.cache_dir}. "
            f"Run it first: checkpoint run {quote_target(repr(task))}"
        )
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started))
    click.echo(
        f"{task!r}: {run.status} at {when} on {run.worker or 'an unknown worker'}, "
        f"in {format_duration(run.duration)}",
        err=True,
    )
    if run.output:
        click.echo(run.output, nl=not run.output.endswith("\n"))
    elif app.verbosity >= 0:
        click.echo("(no output)", err=True)
    if run.traceback:
        click.echo(run.traceback, nl=not run.traceback.endswith("\n"))

