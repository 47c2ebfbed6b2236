"""Small text helpers shared by messages."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import Task


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 task"``, ``"3 tasks"``, ``"1,024 entries"`` (``many`` when adding "s" is wrong)."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def first_five(shown: list[str], sep: str = ", ") -> str:
    """The first five of ``shown`` joined by ``sep``, then ``" and N more"`` if there are
    more: how messages list what may be many."""
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    return sep.join(shown[:5]) + more


def clip(text: str, width: int) -> str:
    """``text``, or its first ``width - 3`` characters and ``...`` when it is longer."""
    return text if len(text) <= width else text[:width - 3] + "..."


def task_label(task: Task[object]) -> str:
    """``Task f(1) (taskfile.f)``: how messages name a task."""
    return f"Task {task!r} ({task.family.name})"


in_cli = False
"""Whether a command of the command line is running (it sets this): messages then speak
its language (``checkpoint run``, the taskfile's directory), else the library's."""


def paths_relative() -> str:
    """The sentence saying what relative ``File``/``Product`` paths are relative to."""
    cwd = os.getcwd()
    if in_cli:
        return f"Paths are relative to {cwd} (the project root: the taskfile's directory)."
    return (f"Paths are relative to the current working directory, {cwd}; the command line "
            "uses the taskfile's directory: os.chdir to the project to share its paths.")
