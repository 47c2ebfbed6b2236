"""An ML-style pipeline: synthetic data, train, score and summarize over seeds.

What it shows: tasks that pass *tasks* as arguments (a dataset task into `train`), data
directories (`TaskDirectory()`) for files a task writes, and a summary over many seeds that
runs as parallel as the DAG allows. Standard library only: the "model" is a least-squares
line fitted to noisy points.

    checkpoint -f examples/ml_pipeline.py run main
    checkpoint -f examples/ml_pipeline.py run 'score(3)'   # one seed's test error

Every dataset and model is a file in its task's data directory,
`.cache/checkpoint/ml_pipeline.make_dataset/data/<task id>/` and so on; the stored
*results* are just paths and small numbers.
"""

import json
import random
import statistics
from pathlib import Path

from checkpoint import Task, TaskDirectory, requires, task

SEEDS = range(5)


@task
def make_dataset(seed: int, n: int = 200):
    """Noisy points around y = 3x + 1, split into train.csv and test.csv."""

    @requires(TaskDirectory())
    def __(path: Path) -> str:
        rng = random.Random(seed)
        rows = [(x, 3 * x + 1 + rng.gauss(0, 0.5)) for x in (rng.uniform(0, 10) for _ in range(n))]
        split = int(0.8 * n)
        for name, part in (("train", rows[:split]), ("test", rows[split:])):
            lines = [f"{x},{y}" for x, y in part]
            (path / f"{name}.csv").write_text("\n".join(lines) + "\n")
        return str(path)

    return __


def read_csv(path: Path) -> list[tuple[float, float]]:
    """Read x,y rows."""
    return [tuple(map(float, line.split(","))) for line in path.read_text().splitlines()]


@task
def train(dataset: Task[str]):
    """Fit a least-squares line to the training split; save it as model.json."""

    @requires(dataset)
    @requires(TaskDirectory())
    def __(data_dir: str, path: Path) -> str:
        points = read_csv(Path(data_dir) / "train.csv")
        xs, ys = zip(*points, strict=True)
        slope, intercept = statistics.linear_regression(xs, ys)
        model = path / "model.json"
        model.write_text(json.dumps({"slope": slope, "intercept": intercept}))
        return str(model)

    return __


@task
def score(seed: int):
    """Root-mean-square error of seed's model on seed's test split (4 decimals)."""
    dataset = make_dataset(seed)

    @requires(dataset)
    @requires(train(dataset))
    def __(data_dir: str, model_path: str) -> float:
        model = json.loads(Path(model_path).read_text())
        test = read_csv(Path(data_dir) / "test.csv")
        errors = [(model["slope"] * x + model["intercept"] - y) ** 2 for x, y in test]
        return round((sum(errors) / len(errors)) ** 0.5, 4)

    return __


@task
def main():
    """Test error over seeds: mean and spread."""

    @requires({seed: score(seed) for seed in SEEDS})
    def __(scores: dict[int, float]) -> str:
        lines = [f"seed {seed}: rmse {rmse:.3f}" for seed, rmse in scores.items()]
        values = list(scores.values())
        lines.append(f"mean rmse {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}")
        return "\n".join(lines)

    return __
