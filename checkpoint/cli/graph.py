"""``checkpoint graph``: export the DAG of targets as DOT, Mermaid, JSON, SVG or PNG."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, cast

import click

from ..errors import UsageError
from . import App, pass_app

if TYPE_CHECKING:
    from ..graph import Plan


@click.command()
@click.argument("targets", nargs=-1)
@click.option("--dot", "formats", flag_value="dot", multiple=True, help="Graphviz DOT text (the default).")
@click.option("--mermaid", "formats", flag_value="mermaid", multiple=True, help="Mermaid flowchart text (renders in GitHub Markdown).")
@click.option("--json", "formats", flag_value="json", multiple=True, help="JSON, schema checkpoint-graph/1 (see docs/graph.md).")
@click.option("--svg", "formats", flag_value="svg", multiple=True, help="SVG image (needs Graphviz's dot).")
@click.option("--png", "formats", flag_value="png", multiple=True, help="PNG image (needs Graphviz's dot; use with -o).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout (its suffix picks the format if none is given).")
@click.option("--families", is_flag=True, help="One node per task family, with task counts; edges show how many task edges they stand for.")
@click.option("--no-legend", is_flag=True, help="Leave out the legend (DOT, Mermaid, images).")
@click.option("--no-code-check", is_flag=True, help="Do not treat code changes as stale.")
@pass_app
def graph(
    app: App,
    targets: tuple[str, ...],
    formats: tuple[str, ...],
    output: Path | None,
    families: bool,
    no_legend: bool,
    no_code_check: bool,
) -> None:
    """Export the DAG of TARGETS (default: main) with each task's state.

    Edges point from a prerequisite to its dependent; node colours show which tasks are
    fresh, which would run and why (missing, code changed, upstream re-run/changed), and
    which failed in the last run.

    Examples:

    \b
      checkpoint graph --mermaid             # paste into GitHub Markdown
      checkpoint graph --families -o g.svg   # one node per family, as SVG
      checkpoint graph 'choose(6, 3)' --json # for a script
    """
    from .. import export
    from ..graph import plan
    from ..store import Store
    from ..taskfile import resolve_target

    fmt = _format(formats, output, export.format_for_path)
    _check_output(fmt, output, app)
    tasks = [resolve_target(app.module, t, taskfile=app.taskfile) for t in (targets or ("main",))]
    the_plan = plan(tasks, Store.open(app.cache_dir), code_check=not no_code_check,
                    keep_specs=False)  # nothing runs
    if not families and fmt != "json" and len(the_plan) > export.LARGE_GRAPH:  # JSON is for tools
        click.echo(
            f"The graph has {len(the_plan):,} tasks, too many to read one node per task; "
            "add --families for one node per task family.",
            err=True,
        )
    path = None if output is None else app.invoked_from / output  # (run in the project root)
    if fmt == "json":  # streamed: a large graph's document is never one string
        _write_json(the_plan, families, app.cache_dir, path)
    else:
        _write(export.export(the_plan, fmt, families=families, legend=not no_legend,
                             cache_dir=app.cache_dir), path)
    if output is not None:
        click.echo(f"Wrote {output}", err=True)


def _check_output(fmt: str, output: Path | None, app: App) -> None:
    """Refuse, before planning, an output that cannot be written."""
    if fmt == "png" and output is None and sys.stdout.isatty():
        raise UsageError("PNG is binary: write it to a file with -o FILE (e.g. -o graph.png).")
    if output is not None and not (app.invoked_from / output).parent.is_dir():
        raise UsageError(f"Cannot write the graph to {output}: there is no directory "
                         f"{click.format_filename((app.invoked_from / output).parent)}.")


def _write(data: str | bytes, path: Path | None) -> None:
    """A rendered graph to ``path``, or to stdout."""
    from .. import export

    if path is not None:
        export.write(data, path)
    elif isinstance(data, bytes):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        click.echo(data, nl=False)


class _Echo:
    """A text file whose writes go to stdout through click (as ``click.echo`` prints)."""

    def write(self, text: str) -> int:
        click.echo(text, nl=False)
        return len(text)


def _write_json(the_plan: Plan, families: bool, cache_dir: Path, path: Path | None) -> None:
    """The graph's JSON to stdout, or to ``path`` (whole or not at all: written beside it,
    then renamed over it)."""
    from .. import export

    if path is None:
        export.write_json(the_plan, cast(IO[str], _Echo()), families=families, cache_dir=cache_dir)
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "w", encoding="utf-8", errors="backslashreplace") as file:
            export.write_json(the_plan, file, families=families, cache_dir=cache_dir)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _format(
    formats: tuple[str, ...], output: Path | None, for_path: Callable[[Path], str | None]
) -> str:
    """The one format asked for: a flag, else the output file's suffix, else DOT."""
    chosen = set(formats)
    if len(chosen) > 1:
        flags = " and ".join(f"--{f}" for f in sorted(chosen))
        raise UsageError(f"Choose one format: {flags} were both given.")
    suffix = output.suffix if output is not None else ""
    by_suffix = for_path(output) if output is not None else None
    if suffix and by_suffix is None and not chosen:
        raise UsageError(
            f"Cannot write the graph as {suffix!r} ({output}): checkpoint writes .dot/.gv, "
            ".mmd, .json, .svg and .png (the last two through Graphviz's dot). For another "
            f"format, write DOT and convert it: dot -T{suffix.lstrip('.')} graph.dot -o {output}."
        )
    if chosen:
        fmt = chosen.pop()
        if by_suffix is not None and by_suffix != fmt:
            raise UsageError(f"--{fmt} does not match the file name {output} (a {by_suffix} file).")
        return fmt
    return by_suffix or "dot"
