# Checked by tests/test_typing.py with mypy --strict: annotated outer functions type-check.
from collections.abc import Callable

from checkpoint import Task, requires, task


@task
def total(n: int) -> Callable[[], int]:
    def __() -> int:
        return n

    return __


@task
def double(x: Task[int]) -> Callable[[int], float]:
    @requires(x)
    def __(value: int) -> float:
        return 2.0 * value

    return __


reveal_type(total(3))
reveal_type(double(total(3)).run())
