"""A parameter sweep with queues and rate limits: one GPU, a rate-limited download, many CPUs.

What it shows: `@task(queue=...)` puts families in a named queue and `--rate-limit QUEUE=N`
caps how many of the queue's tasks run at once, while everything else runs in parallel.
Here every `train` task claims "the GPU" (queue `gpu`), so at most one may run at a time;
downloads go through queue `download`, capped at 2 to be polite to the server.

    checkpoint -f examples/sweep.py run main -j 4 --rate-limit gpu=1 --rate-limit download=2
    checkpoint -f examples/sweep.py clear train -y     # forget the trainings...
    checkpoint -f examples/sweep.py run main -j 4      # ...and train without the GPU limit

Each training task records when it started and finished; `main` reports the best
configuration and the peak number of training tasks that ran at once: 1 with the limit,
more without it (up to the number of workers), when trainings would share the GPU.
"""

import math
import time

from checkpoint import requires, task

LEARNING_RATES = [0.01, 0.03, 0.1, 0.3]
WIDTHS = [16, 64]


@task(queue="download")
def download(shard: int):
    """Pretend to fetch a data shard from a server (a short sleep)."""

    def __() -> list[float]:
        time.sleep(0.05)
        return [math.sin(shard + i / 10) for i in range(100)]

    return __


@task(queue="gpu")
def train(lr: float, width: int):
    """Pretend to train on the GPU; return a loss and when it held the GPU."""

    @requires([download(shard) for shard in range(4)])
    def __(shards: list[list[float]]) -> dict[str, float]:
        started = time.time()
        time.sleep(0.1)
        signal = sum(sum(shard) for shard in shards)
        loss = abs(math.log10(lr) + 1.5) + 8 / width + abs(signal) * 1e-3
        return {"loss": loss, "started": started, "finished": time.time()}

    return __


def peak_concurrency(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals])
    peak = running = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@task
def main():
    """The best (lr, width) of the sweep, and how many training tasks ran at once."""
    grid = [(lr, width) for lr in LEARNING_RATES for width in WIDTHS]

    @requires([train(lr, width) for lr, width in grid])
    def __(runs: list[dict[str, float]]) -> str:
        (lr, width), best = min(zip(grid, runs, strict=True), key=lambda pair: pair[1]["loss"])
        peak = peak_concurrency([(r["started"], r["finished"]) for r in runs])
        warning = "" if peak == 1 else " (without --rate-limit gpu=1, trainings shared the GPU)"
        return (
            f"best: lr={lr} width={width} loss={best['loss']:.3f}\n"
            f"{len(runs)} configurations; peak GPU concurrency: {peak}{warning}"
        )

    return __
