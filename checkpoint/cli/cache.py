"""``checkpoint cache``: inspect the store (entries, a stored value, data dirs, sizes, prune,
verify).

``--json`` documents: ``cache ls``: ``{"entries": [{"family", "id", "task", "args", "size",
"stored", "duration", "fingerprint"}]}``; ``cache du``: ``{"families": [{"family",
"entries", "size"}], "total": n}``; ``cache prune``: ``{"candidates": [{"family", "id",
"task", "size", "why"}], "removed": {"entries", "bytes", "families"} | null}``; ``cache verify``:
``{"checked": n, "repaired": bool, "problems": [{"family", "id", "task", "message"}]}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from .._text import plural
from .._units import duration_text, size_text
from ..errors import ExitCode, UnknownTaskError
from . import App, pass_app
from ._complete import complete_targets
from ._output import Duration, Size, emit_json, err, human_time, table

if TYPE_CHECKING:
    from .._types import FamilyDir
    from ..maintenance import PruneItem


@click.group()
def cache() -> None:
    """Inspect the cache: entries, sizes, a stored value, a data directory; prune it."""


def _family_dir(app: App, name: str) -> FamilyDir:
    """A family's directory name: from the taskfile, else a store family of that name."""
    try:
        return app.family(name).dirname
    except UnknownTaskError:
        stored = app.store.families()
        matches = [f for f in stored if f == name or f.endswith("." + name)]
        if len(matches) == 1:
            return matches[0]
        raise


@cache.command("ls")
@click.argument("name", required=False, shell_complete=complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def cache_ls(app: App, name: str | None, as_json: bool) -> None:
    """List stored entries (of family NAME, or all): arguments, size, when, how long.

    Examples:

    \b
      checkpoint cache ls                 # every stored entry
      checkpoint cache ls choose          # the entries of one family
      checkpoint cache ls --json | jq '.entries | length'
    """
    from ..catalog import list_entries

    store = app.store
    families = [_family_dir(app, name)] if name else store.families()
    rows = [e for f in families for e in list_entries(store, f)]
    if as_json:
        emit_json({"entries": [e.to_json() for e in rows]})
        return
    if not rows:
        err("No stored entries.", quiet=app.quiet)
        return
    click.echo(table(
        ["TASK", "FAMILY", "SIZE", "STORED", "TOOK"],
        [[e.expr, e.family, size_text(e.size), human_time(e.stored), duration_text(e.duration)]
         for e in rows],
        right=(2, 4),
    ))


@cache.command("show")
@click.argument("target", shell_complete=complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Print the value as JSON (if it is JSON-like).")
@pass_app
def cache_show(app: App, target: str, as_json: bool) -> None:
    """Print the stored value of TARGET (never computes it).

    Examples:

    \b
      checkpoint cache show 'choose(6, 3)'
      checkpoint cache show main --json
    """
    task = app.targets([target])[0]
    store = app.store
    if store.get_meta(task.family.dirname, task.id) is None:
        raise click.ClickException(
            f"No stored result for {task.expression()}. Build it with: checkpoint run {target!r}"
        )
    value = store.load_value(task.family.dirname, task.id)
    if as_json:
        try:
            click.echo(json.dumps(value, indent=2))
        except (TypeError, ValueError):
            raise click.ClickException(
                f"The value of {task.expression()} is a {type(value).__name__}, not JSON-like; "
                "drop --json to see it."
            ) from None
        return
    from rich.console import Console
    from rich.pretty import Pretty

    Console(soft_wrap=True).print(Pretty(value))


@cache.command("path")
@click.argument("target", shell_complete=complete_targets)
@pass_app
def cache_path(app: App, target: str) -> None:
    """Print the data directory of TARGET (its TaskDirectory()).

    Examples:

    \b
      checkpoint cache path 'train(3)'
      ls "$(checkpoint cache path 'train(3)')"
    """
    task = app.targets([target])[0]
    path = app.store.data_dir(task.family.dirname, task.id)
    click.echo(str(path))
    if not path.exists():
        err("(It does not exist: the task has not run, or it does not use TaskDirectory().)",
            quiet=app.quiet)


@cache.command("du")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def cache_du(app: App, as_json: bool) -> None:
    """Show the entries and disk space of each family in the cache.

    Examples:

    \b
      checkpoint cache du
      checkpoint cache du --json
    """
    from ..catalog import disk_usage

    rows = disk_usage(app.store)
    total = sum(u.size for u in rows)
    if as_json:
        emit_json({"families": [u.to_json() for u in rows], "total": total})
        return
    click.echo(table(
        ["FAMILY", "ENTRIES", "SIZE"],
        [[u.family, str(u.entries), size_text(u.size)] for u in rows]
        + [["total", str(sum(u.entries for u in rows)), size_text(total)]],
        right=(1, 2),
    ))


@cache.command("prune")
@click.option("--older-than", type=Duration(), metavar="AGE",
              help="Also remove entries stored longer ago than AGE (90s, 30m, 12h, 7d, 2w).")
@click.option("--max-size", type=Size(), metavar="SIZE",
              help="Then remove the oldest entries until the cache holds at most SIZE (500M, 2G).")
@click.option("--keep", "keep", multiple=True, metavar="TARGET", shell_complete=complete_targets,
              help="Also remove every entry that the DAG of TARGET does not reach (old sweep "
                   "points, superseded arguments); repeatable.")
@click.option("-y", "--yes", is_flag=True, help="Delete (without it, only list what would go).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def cache_prune(app: App, older_than: float | None, max_size: int | None, keep: tuple[str, ...],
                yes: bool, as_json: bool) -> None:
    """Remove what the taskfile no longer uses: families it does not define and entries
    computed by outdated code; optionally old entries, the oldest over a size, and what
    the targets given with --keep do not need.

    Lists what would go unless -y is given.

    Examples:

    \b
      checkpoint cache prune                    # list what outdated code left behind
      checkpoint cache prune -y                 # ... and remove it
      checkpoint cache prune --keep main        # list what main's DAG does not need
      checkpoint cache prune --older-than 30d --max-size 10G -y
    """
    from ..maintenance import prune, prune_candidates
    from ..taskfile import loaded_families

    app.families()  # imports the taskfile and its helpers, so that their families are known
    fingerprints = {f.dirname: f.fingerprint[0] for f in loaded_families()}
    items = prune_candidates(app.store, fingerprints, older_than=older_than, max_size=max_size)
    if keep:
        items += _unreachable(app, keep, items)
    removed = prune(app.store, items) if yes else None
    if as_json:
        emit_json({"candidates": [i.to_json() for i in items],
                   "removed": removed.to_json() if removed else None})
        return
    if not items:
        err("Nothing to prune.", quiet=app.quiet)
        return
    click.echo(table(
        ["TASK", "FAMILY", "SIZE", "WHY"],
        [[i.expr if i.id else "(whole family)", i.family, size_text(i.size), i.because] for i in items],
        right=(2,),
    ))
    size = size_text(sum(i.size for i in items))
    if removed is None:
        err(f"Would remove {plural(len(items), 'item')} ({size}). Pass -y to delete them.", quiet=app.quiet)
    else:
        err(f"Removed {removed.entries} entr{'y' if removed.entries == 1 else 'ies'} and "
            f"{len(removed.families)} famil{'y' if len(removed.families) == 1 else 'ies'} "
            f"({size_text(removed.bytes)}).", quiet=app.quiet)


def _unreachable(app: App, keep: tuple[str, ...], already: list[PruneItem]) -> list[PruneItem]:
    """The entries of the taskfile's families that the DAG of ``keep`` does not reach (and
    that ``already`` does not list)."""
    from ..graph import expand
    from ..maintenance import unreachable

    reached = expand(app.targets(keep))
    return unreachable(app.store, reached, already, ", ".join(keep))


@cache.command("verify")
@click.option("--repair", is_flag=True, help="Delete the entries that fail (their tasks run again).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def cache_verify(app: App, repair: bool, as_json: bool) -> None:
    """Check every stored entry: metadata, size, CRC-32, value file and data directory.

    Exits 1 when an entry fails; a failing entry is never used (its task runs again).

    Examples:

    \b
      checkpoint cache verify             # report, exit 1 if anything fails
      checkpoint cache verify --repair    # and remove the entries that fail
    """
    checked, problems = app.store.verify(repair=repair)
    if as_json:
        emit_json({"checked": checked, "repaired": repair, "problems": [
            {"family": p.family, "id": p.id, "task": p.task, "message": p.message}
            for p in problems]})
    else:
        for p in problems:
            err(f"{p.task or p.id or p.family} ({p.family}): {p.message}")
        verdict = "all good" if not problems else (
            f"{len(problems)} bad" + (", removed" if repair else "; run with --repair to remove them"))
        err(f"Checked {checked} entr{'y' if checked == 1 else 'ies'}: {verdict}.", quiet=app.quiet)
    if problems:
        raise click.exceptions.Exit(ExitCode.FAILED)
