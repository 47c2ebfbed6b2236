"""Trim checkpoint's own frames from a formatted traceback, so users see their code.

A failing task's traceback runs through the worker, the scheduler and maybe click before it
reaches the user's function; those frames say nothing about the failure. What is left is
the user's code (taskfile, task functions) and the exception itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parent)


def trim_traceback(text: str, extra_dirs: Sequence[str] = ()) -> str:
    """Drop the frames under checkpoint's package (and ``extra_dirs``) from traceback text."""
    hidden = (PACKAGE_DIR, *extra_dirs)
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith('  File "'):
            path = line[8:].split('"', 1)[0]
            skipping = path.startswith(hidden)
            if not skipping:
                out.append(line)
        elif skipping and line.startswith("    "):
            continue
        else:
            skipping = False
            out.append(line)
    return "\n".join(out)
