"""Small text helpers shared by messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import Task


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 task"``, ``"3 tasks"``, ``"1,024 entries"`` (``many`` when adding "s" is wrong)."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def clip(text: str, width: int) -> str:
    """``text``, or its first ``width - 3`` characters and ``...`` when it is longer."""
    return text if len(text) <= width else text[:width - 3] + "..."


def task_label(task: Task[object]) -> str:
    """``Task f(1) (taskfile.f)``: how messages name a task."""
    return f"Task {task!r} ({task.family.name})"
