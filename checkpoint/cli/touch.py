"""``checkpoint touch``: accept the current code and the stored results as fresh.

``--json``: ``{"touched": n, "fresh": n, "missing": ["<task>", ...], "output_missing":
[...], "accepted": [{"task": "<task>", "changes": ["input file data.txt changed"]}]}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .._text import first_five, plural
from . import App, pass_app
from ._complete import complete_targets
from ._output import emit_json, err

if TYPE_CHECKING:
    from ..task import Task, TaskFamily


@click.command()
@click.argument("targets", nargs=-1, required=True, shell_complete=complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def touch(app: App, targets: tuple[str, ...], as_json: bool) -> None:
    """Mark stored results as fresh without running anything (after a cosmetic change or a
    refactor that does not change results).

    A TARGET ('choose(6, 3)', or a name callable without arguments such as main) accepts
    its whole DAG as it is now: current code, prerequisites, input files and captured
    values (touch names every task it accepted for more than its code). A NAME that needs arguments
    (choose) accepts the current code for every stored entry of that family.

    Examples:

    \b
      checkpoint touch main          # after a refactoring: keep everything under main
      checkpoint touch choose        # keep every stored choose(...) entry
    """
    from ..graph import plan
    from ..maintenance import Touched, touch_family, touch_plan
    from ..taskfile import parse_target

    store = app.store
    total = Touched()
    dag_targets = []
    for text in targets:
        target = parse_target(text)
        family = app.family(target.name)
        if not target.call and _needs_arguments(family):
            total.add(touch_family(store, family))
        else:
            dag_targets.extend(app.targets([text]))
    if dag_targets:
        total.add(touch_plan(plan(dag_targets, store), store))
    if as_json:
        emit_json(total.to_json())
        return
    err(f"Touched {total.touched} entr{'y' if total.touched == 1 else 'ies'}; "
        f"{total.fresh} already fresh.", quiet=app.quiet)
    if total.accepted:
        _say_accepted(total.accepted, app.quiet)
    if total.missing:
        names = first_five([t.expression() for t in total.missing])
        one = len(total.missing) == 1
        err(f"{plural(len(total.missing), 'task')} {'has' if one else 'have'} no stored result "
            f"and still {'has' if one else 'have'} to run: "
            f"{names}.")
    if total.no_output:
        names = first_five([t.expression() for t in total.no_output])
        one = len(total.no_output) == 1
        err(f"{plural(len(total.no_output), 'task')} still {'has' if one else 'have'} to run: "
            f"a declared output is missing: {names}.")


def _say_accepted(accepted: list[tuple[Task[object], list[str]]], quiet: bool) -> None:
    """Name what touch accepted besides code: an edited data file may not have been meant."""
    shown = first_five([f"{t.expression()} ({', '.join(changes)})" for t, changes in accepted],
                       "; ")
    err(f"Accepted as they are now: {shown}. To compute one of them again instead: "
        "checkpoint clear TARGET, then run.", quiet=quiet)


def _needs_arguments(family: TaskFamily[..., object]) -> bool:
    return any(
        p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in family.signature.parameters.values()
    )
