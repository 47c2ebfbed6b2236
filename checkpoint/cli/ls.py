"""``checkpoint ls``: the taskfile's task families, or the tasks of a target's DAG.

``--json`` documents: without targets ``{"families": [{"name", "family", "queue",
"entries", "size", "doc"}]}``; with targets ``{"tasks": [{"task", "family", "id", "state",
"reason", "last_run"}], "counts": {"fresh": n, "stale": n, "missing": n, "code changed": n}}``,
where ``last_run`` is ``null`` or ``{"status": "done" | "failed", "started", "duration",
"worker"}`` (times in seconds since the epoch, durations in seconds).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, cast

import click

from .._text import plural
from .._types import Json, Reason, TaskId
from .._units import duration_text, size_text
from . import App, pass_app
from ._complete import complete_targets
from ._output import echo_table, emit_json, emit_json_stream, err, table

if TYPE_CHECKING:
    from ..catalog import PlanState
    from ..graph import Node
    from ..store import FailedRun


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
    if not targets:
        _families(app, as_json)
    else:
        _tasks(app, targets, not no_code_check, as_json)


def _families(app: App, as_json: bool) -> None:
    """``ls``: the taskfile's families and what the store holds of each."""
    from ..catalog import list_families

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


def _tasks(app: App, targets: tuple[str, ...], code_check: bool, as_json: bool) -> None:
    """``ls TARGET...``: the tasks of their DAG, each with its state and last run."""
    from ..catalog import PlanState, iter_dag_documents
    from ..graph import plan
    from ..history import plan_failures

    store = app.store
    the_plan = plan(app.targets(targets), store, code_check=code_check, keep_specs=False)
    failures = plan_failures(the_plan, store)
    counts = dict.fromkeys(PlanState, 0)
    if as_json:  # streamed: rows are written as they are made
        def document() -> Iterator[tuple[str, object]]:
            def tasks() -> Iterator[dict[str, Json]]:
                for row in iter_dag_documents(the_plan, failures):
                    counts[cast(PlanState, row["state"])] += 1
                    yield row

            yield "tasks", tasks()
            yield "counts", counts

        emit_json_stream(document())
        return
    rows = _task_rows(the_plan.nodes, failures, counts)
    echo_table(["TASK", "STATE", "LAST RUN", "REASON"], rows)
    err(", ".join(f"{n} {state}" for state, n in counts.items()) + f" ({plural(len(rows), 'task')})",
        quiet=app.quiet)


def _task_rows(nodes: Mapping[TaskId, Node], failures: Mapping[TaskId, FailedRun],
               counts: dict[PlanState, int]) -> list[tuple[str, str, str, str]]:
    """The table's rows (task, state, last run, reason), counting the states: one pass of
    plain strings (a 200,000-task listing; the states are :func:`~checkpoint.catalog.state_of`'s)."""
    from ..catalog import PlanState, state_of_reason

    # A reason that only repeats the state (missing: missing) says nothing more.
    texts = {reason: (state_of_reason(reason).value,
                      "" if reason.value == state_of_reason(reason).value else reason.value)
             for reason in Reason}
    fresh = PlanState.FRESH.value
    rows = []
    tally = dict.fromkeys([state.value for state in PlanState], 0)
    n_fresh = 0
    for tid, node in nodes.items():
        reason, meta = node.reason, node.meta
        failed = failures.get(tid) if failures else None
        if failed is not None:
            last = f"{duration_text(failed.duration)} failed"
        elif meta is None:
            last = "-"
        else:
            last = duration_text(meta.duration)
        if reason is None:
            n_fresh += 1
            rows.append((node.task.expression(), fresh, last, ""))
        else:
            state, why = texts[reason]
            tally[state] += 1
            rows.append((node.task.expression(), state, last, why))
    tally[fresh] += n_fresh
    for state in counts:
        counts[state] += tally[state.value]
    return rows
