"""``checkpoint clear``: discard a family, one entry, or the whole cache.

Reports what went to stderr (``--json``: ``{"entries": n, "bytes": n, "families": [...],
"outputs": [...]}`` on stdout). Declared output files (``Product()``) of the removed entries
are never deleted: they are listed (``outputs``) and left on disk.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from .._text import plural
from .._units import size_text
from ..errors import UsageError
from . import App, pass_app
from ._complete import complete_targets
from ._output import emit_json, err

if TYPE_CHECKING:
    from ..maintenance import Removed
    from ..task import TaskFamily


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@click.option("--all", "clear_everything", is_flag=True, help="Clear the whole cache (asks first unless -y).")
@click.option("-y", "--yes", is_flag=True,
              help="Do not ask before removing a whole family or everything.")
@click.option("--downstream", is_flag=True,
              help="Also clear the entries that depend on it, within the DAG of --within.")
@click.option("--within", "within", multiple=True, metavar="TARGET", shell_complete=complete_targets,
              help="The DAG that --downstream follows (default: main; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON to stdout.")
@pass_app
def clear(
    app: App,
    targets: tuple[str, ...],
    clear_everything: bool,
    yes: bool,
    downstream: bool,
    within: tuple[str, ...],
    as_json: bool,
) -> None:
    """Discard stored results: NAME (a whole family) or 'NAME(args)' (one entry).

    A whole family, or --all, is removed only once you confirm (-y: without asking).
    Dependents become stale and re-run next time; --downstream clears them now. Files on
    disk are never deleted: the declared outputs (Product) of the cleared entries are
    listed and left in place, and a task rewrites its own when it runs again.

    Examples:

    \b
      checkpoint clear 'choose(6, 3)'               # one entry
      checkpoint clear choose                       # the whole family (asks first)
      checkpoint clear -y choose                    # ... without asking
      checkpoint clear --downstream 'choose(3, 3)'  # and what depends on it in main's DAG
      checkpoint clear --all                        # everything (asks first)
    """
    if clear_everything:
        if targets:
            raise UsageError("Give either --all or the tasks to clear, not both.")
        _clear_all(app, yes, as_json)
    elif not targets:
        raise UsageError(
            "Name what to clear: a task family (checkpoint clear choose), one entry "
            "(checkpoint clear 'choose(6, 3)'), or everything (checkpoint clear --all)."
        )
    else:
        _clear_targets(app, targets, yes, within or ("main",) if downstream else None, as_json)


def _clear_all(app: App, yes: bool, as_json: bool) -> None:
    from ..maintenance import clear_all

    store = app.store
    if not yes and not _confirm(f"Remove everything in {store.root}?"):
        err("Nothing removed.")
        return
    _report(app, clear_all(store, _waiting(app)), as_json)


def _clear_targets(app: App, targets: tuple[str, ...], yes: bool,
                   within: tuple[str, ...] | None, as_json: bool) -> None:
    """Clear each target: a family or one entry, and with ``within`` (``--downstream``)
    what depends on it in the DAG of those targets."""
    from ..graph import expand
    from ..maintenance import Removed, clear_entries, clear_family, downstream_entries
    from ..taskfile import parse_target

    store = app.store
    dag = expand(app.targets(within)) if within else {}
    whole = [app.family(t.name) for t in map(parse_target, targets) if not t.call]
    if whole and not yes and not _confirm_families(app, whole):
        err("Nothing removed.")
        return
    removed = Removed()
    for text in targets:
        target = parse_target(text)
        if target.call:
            task = app.targets([text])[0]
            below = downstream_entries(dag, task=task) if within else []
            removed.add(clear_entries(store, [(task.family.dirname, task.id)], _waiting(app)))
        else:
            family = app.family(target.name)
            below = downstream_entries(dag, family=family.dirname) if within else []
            removed.add(clear_family(store, family.dirname, _waiting(app)))
        removed.add(clear_entries(store, below, _waiting(app)))
    _report(app, removed, as_json)


def _confirm_families(app: App, families: list[TaskFamily[..., object]]) -> bool:
    """Whether to remove these whole families (asked only when they hold entries)."""
    counts = [(f, app.store.count_entries(f.dirname)) for f in families]
    return not sum(n for _, n in counts) or _confirm(
        "Remove " + ", ".join(f"{plural(n, 'entry', 'entries')} of {f.name}"
                              for f, n in counts if n) + "?")


def _confirm(question: str) -> bool:
    """Ask on the terminal. End of input or Ctrl-C there aborts (exit 130); with no terminal
    to ask on (a script, CI: the answer must come from -y) it is a usage error."""
    try:
        return click.confirm(question, err=True)
    except click.Abort:
        if _stdin_is_tty():
            raise
        raise UsageError("Not confirmed: nothing removed. Pass -y to clear without asking.") from None


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _report(app: App, removed: Removed, as_json: bool) -> None:
    if as_json:
        emit_json(removed.to_json())
    elif removed.entries or removed.families:
        err(f"Removed {removed.entries} entr{'y' if removed.entries == 1 else 'ies'} "
            f"({size_text(removed.bytes)}).", quiet=app.quiet)
        if removed.outputs:
            shown = ", ".join(removed.outputs[:5]) + (", ..." if len(removed.outputs) > 5 else "")
            err(f"Did not delete {plural(len(removed.outputs), 'declared output file')} of "
                f"these entries ({shown}): checkpoint never deletes files on disk; a task that "
                "runs again rewrites its own.",
                quiet=app.quiet)
    else:
        err("Nothing to remove: no stored results matched.", quiet=app.quiet)


def _waiting(app: App) -> Callable[[], None]:
    """What clear says when a run on the cache makes it wait."""
    return lambda: err("Waiting for a run on this cache to finish with these tasks (it is "
                       "computing them or reading their files)...", quiet=app.quiet)
