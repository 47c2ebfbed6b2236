# Checked by tests/test_typing.py with pyright: the README style infers result types.
# pyright: reportRedeclaration=false
from checkpoint import task, requires, Task

@task
def choose(n: int, k: int):
    if 0 < k < n:
        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(prev1: int, prev2: int) -> int:
            return prev1 + prev2
    elif k == 0 or k == n:
        def __() -> int:
            return 1
    else:
        raise ValueError(f'{(n, k)}')
    return __

reveal_type(choose)
reveal_type(choose(6, 3))
reveal_type(choose(6, 3).run())
