"""The demo taskfile: `make run` builds its `main` task (the same as `checkpoint run`).

The first run takes about ten seconds on an idle two-core machine: 32 random walks run in
parallel under a live progress display, next to the 90 binomial coefficients of the seed
README's `choose(n, k)`. The second run is instant: every result is cached in .cache/ next to this
file, and nothing has changed. Then try:

    checkpoint ls                           # the task families and what each has stored
    checkpoint ls main                      # every task of main's DAG, and its state
    checkpoint graph --families --mermaid   # the DAG, one node per family (--dot for Graphviz)
    checkpoint clear 'walk(3)'              # forget one result...
    checkpoint why main                     # ...see why main would run again...
    checkpoint run                          # ...walk(3) runs again; it is seeded, so its value
                                            # is the same and what needs it is kept
    checkpoint run 'choose(30, 15)'         # any task is a target: 155117520
    checkpoint --help                       # every command; the manual is in docs/

Edit `STEPS` (say, 2_000_000) and run again: the 32 walks are new tasks (their arguments
changed) and run, `main`'s code changed, and the binomial coefficients are reused.
"""

import random
import statistics

from checkpoint import requires, task

WALKS = 32
STEPS = 4_000_000


@task
def choose(n: int, k: int):
    """The binomial coefficient n choose k, from Pascal's rule."""
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
def walk(seed: int, steps: int = STEPS):
    """A random walk of +-1 steps: how often it returns to 0, and how far it strays."""

    def __() -> dict[str, int]:
        rng = random.Random(seed)
        position = returns = farthest = 0
        for step in rng.choices((-1, 1), k=steps):
            position += step
            if position == 0:
                returns += 1
            elif abs(position) > farthest:
                farthest = abs(position)
        return {"returns": returns, "farthest": farthest}

    return __


@task
def walks_summary(n: int):
    """Mean returns to 0 and mean farthest distance over n walks."""

    @requires([walk(seed) for seed in range(n)])
    def __(results: list[dict[str, int]]) -> dict[str, float]:
        return {
            "returns": statistics.mean(r["returns"] for r in results),
            "farthest": statistics.mean(r["farthest"] for r in results),
        }

    return __


@task
def main():
    """Row 12 of Pascal's triangle, and what 32 random walks did."""

    @requires([choose(12, k) for k in range(13)])
    @requires(walks_summary(WALKS))
    def __(row: list[int], walks: dict[str, float]) -> str:
        return (
            f"Row 12 of Pascal's triangle: {row}\n"
            f"{WALKS} random walks of {STEPS:,} steps returned to 0 {walks['returns']:.0f} times "
            f"on average, and strayed {walks['farthest']:.0f} steps at most on average."
        )

    return __
