"""``checkpoint run --watch``: run, wait for a change, reload the taskfile, run again.

What is watched and how the taskfile is reloaded: :mod:`checkpoint.watch`. A run that fails,
or a taskfile that does not import, is reported and the watch goes on; Ctrl-C ends it with
exit code 130.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .._text import plural
from ..errors import ExitCode
from . import App, show_error
from ._output import err

if TYPE_CHECKING:
    from ..watch import WatchSet


def watch_loop(
    app: App, targets: tuple[str, ...], once: Callable[[], int], *, live: bool | None
) -> NoReturn:
    """Call ``once`` (a run of ``targets``), then again after each change, until Ctrl-C."""
    from ..progress import waiting
    from ..watch import WatchSet, record_reads, wait_for_change

    taskfile = app.taskfile  # none found: the error ends the command, there is nothing to watch
    watched = WatchSet(frozenset({os.path.realpath(taskfile)}))
    record_reads()  # the files the taskfile and outer functions read count: watched too
    since = time.time_ns()  # files the run adds to the watch set count if changed since
    baseline = watched.snapshot()
    try:
        while True:
            try:
                once()
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
                raise
            except Exception as exc:  # noqa: BLE001 - reported like any command's error; the watch goes on
                show_error(exc)
            watched = _watched(app, targets, watched)
            text = f"Watching {plural(len(watched), 'file')}; Ctrl-C to stop."
            if app.quiet:
                paths = wait_for_change(watched, baseline, since)
            else:
                with waiting(text, live=live):
                    paths = wait_for_change(watched, baseline, since)
            since = time.time_ns()
            baseline = watched.snapshot()  # what the next run starts from
            root = str(taskfile.parent)
            names = [os.path.relpath(p, root) if p.startswith(root + os.sep) else p for p in paths]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            err(f"Changed: {shown}; running again.", quiet=app.quiet)
            app.forget_module()
    except KeyboardInterrupt:
        err("Stopped watching.", quiet=app.quiet)
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None


def _watched(app: App, targets: tuple[str, ...], before: WatchSet) -> WatchSet:
    """What the last run depended on; when the taskfile could not be loaded or its targets
    not be resolved, what the run ``before`` did and the modules imported this time (the
    fix may be in any of them)."""
    from ..watch import WatchSet, watch_set

    tasks: list[Any] | None = None
    if app.module_loaded:
        try:
            tasks = app.targets(targets)
            return watch_set(app.taskfile, tasks)
        except Exception:  # noqa: BLE001 - the run said what was wrong; watch what is known
            pass
    now = watch_set(app.taskfile, None)
    return WatchSet(before.files | now.files, before.trees, before.exclude)
