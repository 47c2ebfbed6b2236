"""``checkpoint ls``: the taskfile's task families, or the tasks of a target's DAG.

``--json`` documents: without targets ``{"families": [{"name", "family", "queue",
"entries", "size", "doc"}]}``; with targets ``{"tasks": [{"task", "family", "id", "state",
"reason", "last_run"}], "counts": {"fresh": n, "stale": n, "missing": n, "code changed": n}}``,
where ``last_run`` is ``null`` or ``{"status": "done" | "failed", "started", "duration",
"worker"}`` (times in seconds since the epoch, durations in seconds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .._text import plural
from .._units import duration_text, size_text
from . import App, pass_app
from ._complete import complete_targets
from ._output import emit_json, err, table

if TYPE_CHECKING:
    from ..history import LastRun


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def ls(app: App, targets: tuple[str, ...], no_code_check: bool, as_json: bool) -> None:
    """List the task families (name, queue, cached entries, size, description).

    With TARGETS, list the tasks of their DAG with their state (fresh, stale, missing or
    code changed) and how long their last run took.

    Examples:

    \b
      checkpoint ls                  # the families and what each has stored
      checkpoint ls main             # every task under main, and its state
      checkpoint ls main --json      # the same, for a script
    """
    from ..catalog import dag_states, list_families

    if not targets:
        infos = list_families(app.families(), app.store)
        if as_json:
            emit_json({"families": [i.to_json() for i in infos]})
            return
        if not infos:
            err(f"No tasks in {app.taskfile}: decorate functions with @task.", quiet=app.quiet)
            return
        click.echo(table(
            ["NAME", "QUEUE", "ENTRIES", "SIZE", "DESCRIPTION"],
            [[i.name, i.queue, str(i.entries), size_text(i.size), i.doc] for i in infos],
            right=(2, 3),
        ))
        return
    from ..graph import plan
    from ..history import plan_last_runs

    store = app.store
    the_plan = plan(app.targets(targets), store, code_check=not no_code_check)
    rows, counts = dag_states(the_plan, plan_last_runs(the_plan, store))
    if as_json:
        emit_json({"tasks": [r.to_json() for r in rows], "counts": counts})
        return
    click.echo(table(
        ["TASK", "STATE", "LAST RUN", "REASON"],
        [[r.task.expression(), r.state, _last(r.last), r.reason or ""] for r in rows],
    ))
    err(", ".join(f"{n} {state}" for state, n in counts.items()) + f" ({plural(len(rows), 'task')})",
        quiet=app.quiet)


def _last(run: LastRun | None) -> str:
    """``1.2s``, ``0.3s failed``, or ``-`` when no run is recorded."""
    if run is None:
        return "-"
    text = duration_text(run.duration)
    return f"{text} failed" if run.status == "failed" else text
