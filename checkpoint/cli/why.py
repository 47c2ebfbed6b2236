"""``checkpoint why``: why a target would run, diffed against what the store remembers.

``--json``: ``{"tasks": [{"task", "family", "id", "reason", "details": [...], "diff"}],
"packages": [{"task", "family", "id", "changed": {package: [stored, now]}}]}``: every task
of the DAG that would run, in topological order; then every task that would be reused
although an installed package its code used has another version now (not a reason to
re-run: see :mod:`checkpoint._packages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .._text import plural
from .._types import Reason
from . import App, pass_app
from ._complete import complete_targets
from ._output import emit_json, human_time, quote_target

if TYPE_CHECKING:
    from ..explain import Causes, Explanation, PackageChange
    from ..graph import Plan
    from ..task import Task

_PER_GROUP = 5
_MAX_DETAILS = 8


@click.command()
@click.argument("targets", nargs=-1, required=True, shell_complete=complete_targets)
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def why(app: App, targets: tuple[str, ...], no_code_check: bool, as_json: bool) -> None:
    """Explain why TARGETS would run: which argument or prerequisite changed, and for a
    code change the diff of the normalized source.

    Examples:

    \b
      checkpoint why main            # why main (or anything under it) would run
      checkpoint why 'choose(6, 3)'  # one task: the argument or code that changed
    """
    from ..explain import explain, package_changes, root_causes
    from ..graph import plan

    tasks = app.targets(targets)
    store = app.store
    the_plan = plan(tasks, store, code_check=not no_code_check)
    explanations = explain(the_plan, store)
    packages = package_changes(the_plan, store)
    if as_json:
        emit_json({"tasks": [e.to_json() for e in explanations],
                   "packages": [p.to_json() for p in packages]})
        return
    _show_targets(tasks, the_plan, explanations, packages)
    target_ids = {t.id for t in tasks}
    _show_causes(root_causes(explanations, target_ids))
    _show_upstream_packages([p for p in packages if p.task.id not in target_ids])


def _show_targets(tasks: list[Task[object]], the_plan: Plan, explanations: list[Explanation],
                  packages: list[PackageChange]) -> None:
    """Each target: fresh (and the packages changed since it was stored), or why it runs."""
    by_id = {e.task.id: e for e in explanations}
    changed = {p.task.id: p for p in packages}
    for task in tasks:
        node = the_plan.nodes[task.id]
        if node.reason is None:
            stored = human_time(node.meta.stored) if node.meta else "?"
            click.echo(f"{task.expression()} is fresh (stored {stored}): nothing would run.")
            if task.id in changed:
                click.echo(f"  {_changes(changed[task.id])} since this was stored (not a reason "
                           f"to re-run; `checkpoint clear {quote_target(task.expression())}` "
                           "to recompute)")
        else:
            _show(by_id[task.id])


def _show_causes(causes: Causes) -> None:
    """The root causes: the tasks that run for a reason of their own, grouped."""
    for (name, reason, _), exps in causes.groups.items():
        if reason is Reason.CODE_CHANGED:
            click.echo(f"{name}: code changed, for {_names(exps)}")
            _show_details(exps[0], header=False)
            continue
        for exp in exps[:_PER_GROUP]:
            _show(exp)
        if len(exps) > _PER_GROUP:
            more = len(exps) - _PER_GROUP
            click.echo(f"... and {more} more {name} {'task' if more == 1 else 'tasks'}: {reason}")
    if causes.upstream_only:
        click.echo(f"{plural(causes.upstream_only, 'other task')} would re-run only because "
                   "a prerequisite does.")


def _changes(change: PackageChange) -> str:
    return ", ".join(f"{p} {old} -> {new}" for p, (old, new) in change.changed.items())


def _show_upstream_packages(changes: list[PackageChange]) -> None:
    """The reused tasks upstream whose packages changed, grouped by family and change."""
    if not changes:
        return
    groups: dict[tuple[str, str], list[PackageChange]] = {}
    for change in changes:
        groups.setdefault((change.task.family.short_name, _changes(change)), []).append(change)
    click.echo("Installed packages changed since results upstream were stored (not a reason "
               "to re-run; `checkpoint clear NAME` recomputes a family):")
    for (name, text), group in sorted(groups.items()):
        if len(group) == 1:
            who = group[0].task.expression()
        else:
            shown = ", ".join(c.task.expression() for c in group[:_PER_GROUP])
            more = f" and {len(group) - _PER_GROUP} more" if len(group) > _PER_GROUP else ""
            who = f"{len(group)} {name} tasks ({shown}{more})"
        click.echo(f"  {who}: {text}")


def _names(exps: list[Explanation]) -> str:
    names = ", ".join(e.task.expression() for e in exps[:_PER_GROUP])
    more = f" and {len(exps) - _PER_GROUP} more" if len(exps) > _PER_GROUP else ""
    return f"{plural(len(exps), 'task')}: {names}{more}"


def _show(exp: Explanation) -> None:
    click.echo(f"{exp.task.expression()} would run: {exp.reason}")
    _show_details(exp, header=True)


def _show_details(exp: Explanation, *, header: bool) -> None:
    details = exp.details
    for line in details[:_MAX_DETAILS]:
        click.echo(f"  {line}")
    if len(details) > _MAX_DETAILS:
        click.echo(f"  ... and {len(details) - _MAX_DETAILS} more")
    if exp.diff:
        for line in exp.diff.splitlines():
            click.echo(f"  {line}")
