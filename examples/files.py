"""A file-processing pipeline: generate files, transform each, aggregate the results.

What it shows: a per-file DAG where clearing one input re-runs only what depends on it.
`generate(i)` writes a text file into its data directory, `transform(i)` counts the words of
that file into a file of its own, and `aggregate` merges every count. `main` prints, for
each file, the time its `transform` was computed, so you can see what re-ran:

    checkpoint -f examples/files.py run main
    checkpoint -f examples/files.py clear 'generate(2)'
    checkpoint -f examples/files.py ls main     # generate(2) missing; transform(2) and up stale
    checkpoint -f examples/files.py run main    # 4 ran: generate(2), transform(2), aggregate, main

In Python, `generate(2).clear()` does the same as the `clear` command.
"""

import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path

from checkpoint import TaskDirectory, requires, task

N_FILES = 4
WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()


@task
def generate(i: int):
    """Write input-{i}.txt: 500 random words."""

    @requires(TaskDirectory())
    def __(path: Path) -> str:
        rng = random.Random()  # not seeded: a re-run makes a different file
        out = path / f"input-{i}.txt"
        out.write_text(" ".join(rng.choice(WORDS) for _ in range(500)) + "\n")
        return str(out)

    return __


@task
def transform(i: int):
    """Count the words of input-{i}.txt into counts-{i}.json."""

    @requires(generate(i))
    @requires(TaskDirectory())
    def __(source: str, path: Path) -> dict[str, object]:
        counts = Counter(Path(source).read_text().split())
        out = path / f"counts-{i}.json"
        out.write_text(json.dumps(counts, sort_keys=True))
        return {"path": str(out), "computed": datetime.now().strftime("%H:%M:%S.%f")}

    return __


@task
def aggregate():
    """Merge every file's word counts."""

    @requires([transform(i) for i in range(N_FILES)])
    def __(parts: list[dict[str, object]]) -> dict[str, int]:
        total: Counter[str] = Counter()
        for part in parts:
            total.update(json.loads(Path(str(part["path"])).read_text()))
        return dict(sorted(total.items()))

    return __


@task
def main():
    """The total word count, and when each file's transform was computed."""

    @requires([transform(i) for i in range(N_FILES)])
    @requires(aggregate())
    def __(parts: list[dict[str, object]], total: dict[str, int]) -> str:
        lines = [f"file {i}: transformed at {part['computed']}" for i, part in enumerate(parts)]
        lines.append(f"{sum(total.values())} words; most common: {max(total, key=total.get)}")
        return "\n".join(lines)

    return __
