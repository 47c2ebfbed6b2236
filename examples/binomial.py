"""Binomial coefficients: the seed README's `choose(n, k)`, a dynamic DAG built from arguments.

What it shows: a task whose prerequisites depend on its own arguments (Pascal's rule), lazily
expanded into a DAG of 256 small tasks, run in parallel and cached.

    checkpoint -f examples/binomial.py run main            # C(30, 15) = 155117520
    checkpoint -f examples/binomial.py run main            # again: every result reused
    checkpoint -f examples/binomial.py run 'choose(6, 3)'  # any task, by its call: 20
"""

from checkpoint import requires, task


@task
def choose(n: int, k: int):
    """The binomial coefficient C(n, k), from Pascal's rule."""
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
    """C(30, 15): the middle of row 30 of Pascal's triangle."""

    @requires(choose(30, 15))
    def __(value: int) -> int:
        return value

    return __
