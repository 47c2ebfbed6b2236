"""Type-checked by tests/test_typing.py: exactly the lines with a trailing "E" comment are errors."""

from __future__ import annotations

from collections.abc import Callable

from checkpoint import Requires, requires, task
from checkpoint.store import Store


@task
def name() -> Callable[[], str]:
    def __() -> str:
        return "x"

    return __


@task
class Count:
    def __init__(self, n: int) -> None:
        self.n = n

    def run(self) -> int:
        return self.n


@task
class Bad:
    total: Requires[int] = requires()
    parts: Requires[list[int]] = requires()

    def __init__(self) -> None:
        self.total = name()  # E: a Task[str] is not a Requires[int]
        self.total = 3  # E: a plain value is not a task
        self.total = Count  # E: the family, not a task
        self.parts = [Count(1), name()]  # E: a Task[str] in a list[int]
        self.total = Count(1)

    def run(self) -> str:
        return self.total  # E: int is not str


Count("3")  # E: the constructor's parameters are the task's arguments
x: str = Count(2).run()  # E: run() gives int

store = Store.open()
store.entries(Count.dirname)
store.entries(Count.name)  # E: a family's name is not its directory in the store
store.entries("m.Count")  # E: nor is any string: FamilyDir(...) says it is one
