"""Shell completion of task family names, read from the taskfile without importing it.

Completion runs on every <TAB>: it finds the taskfile as the command would (``-f`` or a
``taskfile.py`` here or in a parent) and lists its ``@task`` functions with :mod:`ast`, so
neither the taskfile nor any heavy library is imported.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem


def complete_targets(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Family names of the taskfile that start with ``incomplete``."""
    from ..errors import CheckpointError
    from ..taskfile import find_taskfile, scan_family_names

    root = ctx.find_root()
    option: Any = root.params.get("taskfile")
    try:
        path = find_taskfile(option)
    except CheckpointError:
        return []
    names = scan_family_names(path)
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]
