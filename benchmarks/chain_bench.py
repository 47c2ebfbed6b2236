"""Cost of checking the Products upstream of each task: a chain of N producers, cold.

Usage::

    .venv/bin/python benchmarks/chain_bench.py            # 500 tasks, 3 rounds
    .venv/bin/python benchmarks/chain_bench.py -n 2000 -r 1
    .venv/bin/python benchmarks/chain_bench.py --quick    # does it still run? (tests)

In a fresh directory for each round (this process, inline executor), two cold runs of N
tasks each taking the one before as a prerequisite:

* ``Product chain``: ``step(i)`` writes ``Product(f"out/{i}.txt")`` from the file of
  ``step(i - 1)`` (whose path it is given), so every Product is upstream of every later
  task: a check of each reader's upstream Products at its end costs N²/2 checks;
* ``value chain``: the same chain passing the text as a value, no files (the floor).

Reports median seconds, and how many times an output was checked in the Product chain
(``files._check_output`` calls: an ``os.stat``, or a hash).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TASKFILE = '''
from pathlib import Path
from checkpoint import Product, requires, task


@task
def step(i: int):
    @requires([step(i - 1)] if i else [])
    @requires(Product(f"out/{i}.txt"))
    def __(before, out: Path) -> str:
        out.write_text((Path(before[0]).read_text() if before else "") + f"{i}\\n")
        return str(out)
    return __


@task
def value(i: int):
    @requires([value(i - 1)] if i else [])
    def __(before) -> str:
        return (before[0] if before else "") + f"{i}\\n"
    return __
'''


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("-n", type=int, default=500, help="tasks in the chain (default 500)")
    ap.add_argument("-r", "--rounds", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--quick", action="store_true", help="50 tasks, 1 round")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.rounds = 50, 1
    n = args.n
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * n))

    import checkpoint
    from checkpoint import files

    checks = 0
    real_check = files._check_output

    def counted(*a: object) -> object:
        nonlocal checks
        checks += 1
        return real_check(*a)  # type: ignore[arg-type]

    files._check_output = counted  # type: ignore[assignment]
    times: dict[str, list[float]] = {"Product chain": [], "value chain": []}
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="cp-chain-bench-") as tmp:
        Path(tmp, "chaintaskfile.py").write_text(TASKFILE)
        sys.path.insert(0, tmp)
        import chaintaskfile as tf  # type: ignore[import-not-found]

        for r in range(args.rounds):
            where = Path(tmp) / f"round{r}"
            where.mkdir()
            os.chdir(where)
            os.environ["CP_CACHE_DIR"] = str(where / ".cache")
            checks = 0
            for name, make in (("Product chain", tf.step), ("value chain", tf.value)):
                t0 = time.perf_counter()
                checkpoint.run([make(n - 1)], executor="inline")
                times[name].append(time.perf_counter() - t0)
            os.chdir(home)
    print(f"{n}-task chains, inline, cold, median of {args.rounds} round(s):")
    for name, samples in times.items():
        print(f"  {name:14} {statistics.median(samples):7.2f} s")
    print(f"  outputs checked in the Product chain (last round): {checks}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
