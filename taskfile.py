"""The top-level taskfile: `make run` builds its `main` task (`checkpoint run main`).

`main` is row 12 of Pascal's triangle, each entry the seed README's `choose(n, k)`: a DAG of
91 cached tasks. Run it twice: the second run reuses every stored result.
"""

from checkpoint import requires, task


@task
def choose(n: int, k: int):
    """Compute the binomial coefficient n choose k from Pascal's rule."""
    if 0 < k < n:

        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(prev1: int, prev2: int) -> int:
            return prev1 + prev2

    elif k == 0 or k == n:

        def __() -> int:
            return 1

    else:
        raise ValueError(f"choose({n}, {k}) is undefined: need 0 <= k <= n")

    return __


@task
def main():
    """Print a row of Pascal's triangle, built from cached binomial coefficients."""

    @requires([choose(12, k) for k in range(13)])
    def __(row: list[int]) -> list[int]:
        return row

    return __
