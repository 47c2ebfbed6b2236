"""``checkpoint ls``: the taskfile's task families, or the tasks of a target's DAG.

``--json`` documents: without targets ``{"families": [{"name", "family", "queue",
"entries", "size", "doc"}]}``; with targets ``{"tasks": [{"task", "family", "id", "state",
"reason"}], "counts": {"fresh": n, "stale": n, "missing": n, "code changed": n}}``.
"""

from __future__ import annotations

import click

from . import App, pass_app
from ._complete import complete_targets
from ._output import emit_json, err, human_size, table


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def ls(app: App, targets: tuple[str, ...], no_code_check: bool, as_json: bool) -> None:
    """List the task families (name, queue, cached entries, size, description).

    With TARGETS, list the tasks of their DAG and their state: fresh, stale, missing or
    code changed.
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
            [[i.name, i.queue, str(i.entries), human_size(i.size), i.doc] for i in infos],
            right=(2, 3),
        ))
        return
    from ..graph import plan

    the_plan = plan(app.targets(targets), app.store, code_check=not no_code_check)
    rows, counts = dag_states(the_plan)
    if as_json:
        emit_json({"tasks": [r.to_json() for r in rows], "counts": counts})
        return
    click.echo(table(
        ["TASK", "STATE", "REASON"],
        [[r.task.expression(), r.state, r.reason or ""] for r in rows],
    ))
    err(", ".join(f"{n} {state}" for state, n in counts.items()) + f" ({len(rows)} tasks)",
        quiet=app.quiet)
