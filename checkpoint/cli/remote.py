"""``checkpoint push``, ``checkpoint pull`` and ``checkpoint remote ls/du/prune``: a remote
cache that several machines share (see :mod:`checkpoint.remote`).

The remote is ``--remote URL``, else ``$CP_REMOTE``, else ``remote = "..."`` under
``[tool.checkpoint]`` in the ``pyproject.toml`` next to the taskfile (or in a parent
directory); ``remote_push = true`` there makes ``run`` push what it computed.

``--json`` documents: ``push``: ``{"remote", "pushed": [task...], "present": n, "skipped":
[{"task", "why"}], "bytes", "requests"}``; ``pull``: ``{"remote", "pulled": [task...],
"kept": n, "missing": n, "refused": [{"task", "why"}], "bytes", "requests"}``; ``remote
ls``: ``{"entries": [{"family", "id", "key", "task", "size", "pushed", "status"}]}``;
``remote du``: ``{"families": [{"family", "entries", "size"}], "entries", "objects",
"bytes"}``; ``remote prune``: ``{"entries": [{"family", "id", "key"}], "objects": n,
"packs": n, "temporary": n, "bytes", "removed": bool}``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._text import plural
from .._units import size_text
from ..errors import ExitCode, UsageError
from . import App, pass_app
from ._complete import complete_targets
from ._output import Duration, emit_json, err, human_time, table

if TYPE_CHECKING:
    from ..remote import Remote, RemoteEntry
    from ..task import Task


def settings(app: App) -> dict[str, Any]:
    """``[tool.checkpoint]`` of the nearest ``pyproject.toml`` (from the taskfile's directory
    up; from the current one when there is no taskfile), checked."""
    from ..errors import TaskfileNotFoundError

    try:
        start = app.taskfile.parent
    except TaskfileNotFoundError:
        start = Path.cwd()
    for directory in (start, *start.parents):
        path = directory / "pyproject.toml"
        if path.is_file():
            break
    else:
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            found = tomllib.load(f).get("tool", {}).get("checkpoint", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"Cannot read {path}: {exc}") from None
    for name, kind in (("remote", str), ("remote_push", bool)):
        if name in found and not isinstance(found[name], kind):
            raise UsageError(f"{name} under [tool.checkpoint] in {path} must be a "
                             f"{'string' if kind is str else 'boolean (true or false)'}, "
                             f"not {found[name]!r}.")
    return dict(found)


def remote_url(app: App, option: str | None) -> str | None:
    """The remote's URL: ``--remote``, else ``$CP_REMOTE``, else ``pyproject.toml``."""
    return option or os.environ.get("CP_REMOTE") or settings(app).get("remote") or None


def open_remote(app: App, option: str | None) -> Remote:
    """The configured remote (UsageError when there is none)."""
    from ..remote import Remote, configured

    url = remote_url(app, option)
    return configured(Remote(url) if url else None)


remote_option = click.option(
    "--remote", "remote_option", metavar="URL",
    help="The remote cache (s3://bucket/prefix, gs://..., file:///dir, ssh://host/dir); "
         "default: $CP_REMOTE, else remote = ... under [tool.checkpoint] in pyproject.toml.")


def _labels(tasks: Sequence[Task[object]]) -> list[str]:
    return [t.expression() for t in tasks]


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def push(app: App, targets: tuple[str, ...], remote_option: str | None, as_json: bool) -> None:
    """Upload the entries of TARGETS' DAG (default: main) that the remote cache lacks.

    Only current entries go (computed by the current code from the current values of their
    prerequisites), signed with $CP_REMOTE_KEY; values and data directories included.
    Tasks that declare output files (Product) stay local.

    Examples:

    \b
      checkpoint push                               # main's DAG, to the configured remote
      checkpoint push 'sweep(3)' --remote s3://team-cache/project
    """
    from ..graph import plan
    from ..remote import push_plan

    remote = open_remote(app, remote_option)
    remote.signing_key()
    tasks = app.targets(targets or ("main",))
    started = time.perf_counter()
    report = push_plan(plan(tasks, app.store), app.store, remote)
    if as_json:
        emit_json({"remote": remote.url, "pushed": _labels(report.pushed),
                   "present": len(report.present),
                   "skipped": [{"task": t.expression(), "why": why} for t, why in report.skipped],
                   "bytes": report.bytes, "requests": report.requests})
        return
    for task, why in report.skipped[:10]:
        err(f"not pushed: {task!r}: {why}", quiet=app.quiet)
    if len(report.skipped) > 10:
        err(f"not pushed: ... and {len(report.skipped) - 10} more", quiet=app.quiet)
    err(f"Pushed {plural(len(report.pushed), 'entry', 'entries')} ({size_text(report.bytes)}) "
        f"to {remote.url} in {time.perf_counter() - started:.1f}s ({plural(report.requests, 'request')}); "
        f"{len(report.present)} already there, {len(report.skipped)} not pushed.", quiet=app.quiet)


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_targets)
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def pull(app: App, targets: tuple[str, ...], remote_option: str | None, as_json: bool) -> None:
    """Download what the remote cache has of TARGETS' DAG (default: main), computing nothing.

    Only the tasks that are missing or stale here are looked up. Each entry must be signed
    with $CP_REMOTE_KEY and pass its checksums; one that does not is refused (exit 1), and
    its task runs on the next 'checkpoint run'.

    Examples:

    \b
      checkpoint pull                               # main's DAG, from the configured remote
      checkpoint pull 'report(2024)' --remote file:///shared/cache
    """
    from ..remote import pull_targets

    remote = open_remote(app, remote_option)
    tasks = app.targets(targets or ("main",))
    started = time.perf_counter()
    report = pull_targets(tasks, remote, cache_dir=app.cache_dir)
    if as_json:
        emit_json({"remote": remote.url, "pulled": _labels(report.pulled),
                   "kept": len(report.kept), "missing": len(report.missing),
                   "refused": [{"task": t.expression(), "why": why} for t, why in report.refused],
                   "bytes": report.bytes, "requests": report.requests})
    else:
        err(f"Pulled {plural(len(report.pulled), 'entry', 'entries')} "
            f"({size_text(report.bytes)}) from {remote.url} in "
            f"{time.perf_counter() - started:.1f}s ({plural(report.requests, 'request')}); "
            f"{len(report.missing)} not on the remote, {len(report.refused)} refused.",
            quiet=app.quiet)
    if report.refused:
        raise click.exceptions.Exit(ExitCode.FAILED)


@click.group("remote")
def remote_group() -> None:
    """Look after the remote cache: its entries, its size; prune it."""


def _family_filter(name: str | None) -> Callable[[str], bool]:
    def matches(family: str) -> bool:
        return name is None or family == name or family.endswith("." + name)
    return matches


@remote_group.command("ls")
@click.argument("name", required=False, shell_complete=complete_targets)
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def remote_ls(app: App, name: str | None, remote_option: str | None, as_json: bool) -> None:
    """List the remote cache's entries: per family, or each entry of family NAME (with its
    signature checked when $CP_REMOTE_KEY is set).

    Examples:

    \b
      checkpoint remote ls --remote s3://team-cache/proj
      checkpoint remote ls choose --json     # with CP_REMOTE set
    """
    from .._manifest import Manifest
    from ..remote import entries, read_manifests

    remote = open_remote(app, remote_option)
    matches = _family_filter(name)
    found = [e for e in entries(remote) if matches(e.family)]
    if name is None and not as_json:
        by_family: dict[str, list[RemoteEntry]] = {}
        for e in found:
            by_family.setdefault(e.family, []).append(e)
        click.echo(table(["FAMILY", "ENTRIES", "LAST PUSHED"], [
            [family, str(len(items)), human_time(max(e.modified for e in items))]
            for family, items in sorted(by_family.items())], right=(1,)))
        return
    manifests = read_manifests(remote, found)
    rows: list[dict[str, Any]] = []
    for e in found:
        manifest = manifests.get(e.path, "gone")
        ok = isinstance(manifest, Manifest)
        status = ("signed" if remote.key else "unverified") if ok else str(manifest)
        rows.append({
            "family": e.family, "id": e.task, "key": e.key,
            "task": manifest.expr if isinstance(manifest, Manifest) else "?",
            "size": (manifest.size + sum(f.size for f in manifest.data or ()))
            if isinstance(manifest, Manifest) else 0,
            "pushed": e.modified, "status": status})
    if as_json:
        emit_json({"entries": rows})
        return
    click.echo(table(["TASK", "FAMILY", "SIZE", "PUSHED", "STATUS"], [
        [r["task"], r["family"], size_text(r["size"]), human_time(r["pushed"]), r["status"]]
        for r in rows], right=(2,)))


@remote_group.command("du")
@remote_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def remote_du(app: App, remote_option: str | None, as_json: bool) -> None:
    """Show the entries and size of each family in the remote cache, and its total size.

    Examples:

    \b
      checkpoint remote du --remote s3://team-cache/proj
      checkpoint remote du --json
    """
    from ..remote import usage

    remote = open_remote(app, remote_option)
    found = usage(remote)
    families = sorted(found.by_family.items())
    if as_json:
        emit_json({"families": [{"family": f, "entries": n, "size": size}
                                for f, (n, size) in families],
                   "entries": found.entries, "objects": found.objects, "bytes": found.bytes})
        return
    click.echo(table(["FAMILY", "ENTRIES", "SIZE"], [
        [f, str(n), size_text(size)] for f, (n, size) in families], right=(1, 2)))
    err(f"{remote.url}: {plural(found.entries, 'entry', 'entries')}, "
        f"{plural(found.objects, 'object')}, {size_text(found.bytes)} stored "
        "(values shared by several entries are stored once).", quiet=app.quiet)


@remote_group.command("prune")
@remote_option
@click.option("--older-than", type=Duration(), metavar="AGE",
              help="Remove entries pushed longer ago than AGE (90s, 30m, 12h, 7d, 2w).")
@click.option("--family", "family_name", metavar="NAME",
              help="Only entries of this family (with --older-than).")
@click.option("-y", "--yes", is_flag=True, help="Delete (without it, only list what would go).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document to stdout.")
@pass_app
def remote_prune(app: App, remote_option: str | None, older_than: float | None,
                 family_name: str | None, yes: bool, as_json: bool) -> None:
    """Remove old entries from the remote cache (--older-than), damaged manifests, and the
    objects no entry uses any more. Objects younger than an hour stay: a push in progress
    uploads its objects before its manifests.

    Lists what would go unless -y is given.

    Examples:

    \b
      checkpoint remote prune --older-than 30d        # list what would go
      checkpoint remote prune --older-than 30d -y     # delete it
    """
    from ..remote import entries, prune

    remote = open_remote(app, remote_option)
    family = None
    if family_name is not None:
        matches = _family_filter(family_name)
        names = sorted({e.family for e in entries(remote) if matches(e.family)})
        if len(names) != 1:
            raise UsageError(f"No single family of the remote cache is called {family_name!r}"
                             + (f" (it could be: {', '.join(names)})" if names else "")
                             + ". Run 'checkpoint remote ls' to list them.")
        family = names[0]
    result = prune(remote, older_than=older_than, family=family, dry_run=not yes)
    if as_json:
        emit_json({"entries": [{"family": e.family, "id": e.task, "key": e.key}
                               for e in result.entries],
                   "packs": len(result.packs), "objects": len(result.objects),
                   "temporary": len(result.temporary),
                   "bytes": result.bytes, "removed": yes})
        return
    what = (f"{plural(len(result.entries), 'entry', 'entries')}, "
            f"{plural(len(result.packs), 'pack')}, "
            f"{plural(len(result.objects), 'unused object')} and "
            f"{plural(len(result.temporary), 'leftover temporary file')} "
            f"({size_text(result.bytes)})")
    if yes:
        err(f"Removed {what} from {remote.url}.", quiet=app.quiet)
    else:
        err(f"Would remove {what} from {remote.url}. Pass -y to delete them.", quiet=app.quiet)
