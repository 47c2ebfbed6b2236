"""Type-checked by tests/test_typing.py with mypy (with the checkpoint.mypy plugin, as the
project's pyproject.toml configures it) and pyright; must have no errors.

A trailing "R:" comment asserts what both checkers reveal on that line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typing_extensions import reveal_type

import checkpoint
from checkpoint import Requires, Task, TaskDirectory, requires, task


@task
def choose(n: int, k: int) -> Callable[..., int]:
    """A function task; its prerequisites include a class task."""
    if not 0 < k < n:
        return lambda: 1

    @requires(Choose(n - 1, k - 1))
    @requires(choose(n - 1, k))
    def __(prev1: int, prev2: int) -> int:
        return prev1 + prev2

    return __


@task
class Choose:
    """A class task; its prerequisites include a function task."""

    left: Requires[int] = requires(default=0)
    right: Requires[int] = requires(default=1)

    def __init__(self, n: int, k: int) -> None:
        if 0 < k < n:
            self.left = choose(n - 1, k - 1)
            self.right = Choose(n - 1, k)

    def run(self) -> int:
        reveal_type(self.left)  # R: int
        return self.left + self.right


@task
def load_dataset() -> Callable[[], list[float]]:
    def __() -> list[float]:
        return [1.0, 2.0]

    return __


@task
class Summary:
    """Lists, dicts and a TaskDirectory read as lists, dicts of results and a Path."""

    row: Requires[list[int]] = requires()
    scores: Requires[dict[str, int]] = requires()
    data: Requires[list[float]] = requires()
    workdir: Requires[Path] = requires()
    loose = requires()

    def __init__(self, n: int, dataset: Task[list[float]]) -> None:
        self.n = n
        self.row = [Choose(n, k) for k in range(n + 1)]
        self.scores = {"mid": choose(n, n // 2)}
        self.data = dataset
        self.workdir = TaskDirectory()
        self.loose = Choose(n, 0)

    def run(self) -> str:
        reveal_type(self.row)  # R: list[int]
        reveal_type(self.scores)  # R: dict[str, int]
        reveal_type(self.data)  # R: list[float]
        reveal_type(self.workdir)  # R: Path
        reveal_type(self.n)  # R: int
        return f"{self.row} {self.scores} {self.data} {self.workdir}"


reveal_type(Choose(6, 3))  # R: Task[int]
reveal_type(Choose(6, 3).run())  # R: int
reveal_type(Choose(6, 3).id)  # R: str
reveal_type(Choose.name)  # R: FamilyName
reveal_type(choose(6, 3).run())  # R: int
reveal_type(Summary(3, load_dataset()).run())  # R: str


# A class task is a Task wherever one is expected, and its class is the family.
def first_of(tasks: list[Task[int]]) -> Task[int]:
    return tasks[0]


handle: Task[int] = Choose(6, 3)
first_of([Choose(6, 3), choose(6, 3)])
checkpoint.run([Choose(6, 3), Summary(3, load_dataset())])
Choose(6, 3).clear()
Choose.clear()


# Task is covariant in its result: a Task[int] is a Task[object] (any task will do).
def label_of(handle: Task[object]) -> str:
    return repr(handle)


label_of(Choose(6, 3))
label_of(choose(6, 3))
