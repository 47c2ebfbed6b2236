"""Fold checkpoint's own frames in a formatted traceback, so users see their code.

A failing task's traceback runs through the worker, the scheduler and maybe click before it
reaches the user's function; those frames say nothing about the failure. The worker already
starts a task's traceback at the task's own frame; what is left here are engine frames
*between* user frames (a task that runs another task) or around them (an error raised by
the library). Each run of such frames is folded into one line that says how many were
hidden, so the user's frames and the exception stay and nothing disappears silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = str(Path(__file__).resolve().parent)

FOLDED = "  [... {n} checkpoint frame{s} hidden ...]"
"""The line that stands for a run of hidden frames."""


def trim_traceback(text: str, extra_dirs: Sequence[str] = ()) -> str:
    """Fold the frames under checkpoint's package (and ``extra_dirs``) in traceback text."""
    hidden = (PACKAGE_DIR, *extra_dirs)
    out: list[str] = []
    skipping = False
    folded = 0

    def flush() -> None:
        nonlocal folded
        if folded:
            out.append(FOLDED.format(n=folded, s="" if folded == 1 else "s"))
            folded = 0

    for line in text.splitlines():
        if line.startswith('  File "'):
            path = line[8:].split('"', 1)[0]
            skipping = path.startswith(hidden)
            if skipping:
                folded += 1
            else:
                flush()
                out.append(line)
        elif skipping and line.startswith("    "):
            continue
        else:
            skipping = False
            flush()
            out.append(line)
    flush()
    return "\n".join(out)
