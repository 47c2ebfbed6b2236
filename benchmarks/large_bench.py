"""Large values at disk speed: W5 (bytes) and its NumPy variant, against their references
in the same run, and the checksum choice.

Usage::

    .venv/bin/python benchmarks/large_bench.py                 # 256 MB / 1 GB, 5 rounds
    .venv/bin/python benchmarks/large_bench.py --mb 64 --array-mb 256 -r 3
    .venv/bin/python benchmarks/large_bench.py --quick         # does it still run? (tests)

Every measurement is a whole process (interpreter, imports, pool start-up count), timed
from spawn to reap, with its peak RSS (the largest single process of its tree); rounds are
interleaved so that the drift of a shared machine hits every row alike. Rows:

* ``W5 cold``: a fresh cache; ``blob()`` returns ``os.urandom(MB)``, ``main`` (another
  task, so another read of the stored value) returns its length. ``W5 warm``: again, all
  fresh (it must load nothing). Reference: ``dd bs=1M count=MB conv=fsync`` plus
  ``python -c "import checkpoint"``, run as two processes whose times are added.
* ``W5 cold, zeros``: the same with ``bytes(MB)`` (zeros, as dd writes): ``os.urandom``
  alone costs a large and variable part of W5 on these machines (its own row).
* ``NumPy cold``: ``make()`` returns a float64 array of ARRAY_MB, ``total(make())`` sums it
  (reads it all), ``main`` reads ``make()[:1000]`` only and reports its own process's
  resident memory when done (the "slice reader RSS" row). Reference: a process that makes
  the same array, ``numpy.save``s it and fsyncs the file.
* ``checksum``: in this process, CRC-32 (zlib: entries written before xxh3) and xxh3-128
  (xxhash: what is stored now; it is also the value's stamp) of MB bytes, as checking on
  write and on read pays.

With ``--baseline PYTHON`` (a python that imports another checkout of checkpoint, say
main's), the cold rows also run with it in the same rounds, interleaved: before and after
side by side.

Ratios are checkpoint / reference (medians); the goals are W5 cold <= 1.5, peak RSS <=
1.25x the value, NumPy cold <= 1.5, the slice reader's RSS far below the array.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import run_process  # noqa: E402
from workloads import BLOB  # noqa: E402  (W5's taskfile, as run.py runs it)

ARRAY = '''import numpy as np

from checkpoint import requires, task

N = ({mb} << 20) // 8


@task
def make():
    def __() -> "np.ndarray":
        return np.arange(N, dtype=np.float64)
    return __


@task
def total():
    @requires(make())
    def __(a: "np.ndarray") -> float:
        return float(a.sum())
    return __


@task
def main():
    @requires(make())
    @requires(total())
    def __(a: "np.ndarray", t: float) -> str:
        head = float(a[:1000].sum())
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
        return f"head={{head}} total={{t}} rss_mb={{rss}}"
    return __
'''.replace("import numpy as np\n", "import os\n\nimport numpy as np\n", 1)

NUMPY_REF = ("import os, numpy as np; a = np.arange(({mb} << 20) // 8, dtype=np.float64); "
             "f = open('ref.npy', 'wb'); np.save(f, a); f.flush(); os.fsync(f.fileno())")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _checksums(mb: int, rounds: int, directory: Path) -> list[tuple[str, float, float]]:
    """``(algorithm, seconds to hash MB in memory, seconds to read a MB file in 1 MB pieces
    and hash it)``, medians: what checking costs on write and on read."""
    data = os.urandom(mb << 20)
    path = directory / "checksum.bin"
    path.write_bytes(data)
    algorithms: list[tuple[str, Callable[[], object], Callable[[], Callable[[memoryview], object]]]]
    algorithms = [("CRC-32 (zlib)", lambda: zlib.crc32(data), lambda: _Crc().update)]
    import xxhash

    algorithms.append(("xxh3-128 (xxhash; stored now, and the stamp)",
                       lambda: xxhash.xxh3_128_intdigest(data), lambda: xxhash.xxh3_128().update))
    algorithms.append(("xxh3-64 (xxhash)", lambda: xxhash.xxh3_64_intdigest(data),
                       lambda: xxhash.xxh3_64().update))
    out = []
    view = memoryview(bytearray(1 << 20))
    for name, one_shot, running in algorithms:
        whole, reading = [], []
        for _ in range(rounds):
            update = running()
            t0 = time.perf_counter()
            one_shot()
            t1 = time.perf_counter()
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    update(view[:n])
            t2 = time.perf_counter()
            whole.append(t1 - t0)
            reading.append(t2 - t1)
        out.append((name, _median(whole), _median(reading)))
    path.unlink()
    return out


class _Crc:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: memoryview) -> None:
        self.value = zlib.crc32(data, self.value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="W5's value size (MB)")
    ap.add_argument("--array-mb", type=int, default=1024, help="the NumPy array's size (MB)")
    ap.add_argument("-r", "--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--baseline", metavar="PYTHON",
                    help="also run the cold rows with this python (another checkout), interleaved")
    args = ap.parse_args(argv)
    if args.quick:
        args.mb, args.array_mb, args.rounds = 4, 8, 1
    py = args.python
    cli = [py, "-m", "checkpoint", "run", "main", "--no-progress"]
    pythons = [("", py)] + ([(" (baseline)", args.baseline)] if args.baseline else [])
    try:
        import numpy  # noqa: F401
        has_numpy = True
    except ImportError:
        has_numpy = False
    samples: dict[str, list[tuple[float, float]]] = {}
    notes: dict[str, list[str]] = {}

    def record(name: str, out: object) -> None:
        rc = out.rc
        if rc != 0:
            raise SystemExit(f"{name} failed (exit {rc}): {out.stderr[-2000:]}")
        samples.setdefault(name, []).append((out.seconds, out.max_rss_mb))
        text = out.stdout
        if "rss_mb=" in text:
            notes.setdefault(name, []).append(text.rsplit("rss_mb=", 1)[1].split()[0])

    base = Path(tempfile.mkdtemp(prefix="cp-large-", dir=os.environ.get("CP_BENCH_DIR")))
    try:
        for r in range(args.rounds):
            run = base / f"r{r}"
            order = pythons if r % 2 == 0 else pythons[::-1]  # alternate which goes first
            for tag, python in order:
                argv = [python, *cli[1:]]
                where = run / f"w5{tag.strip(' ()')}"
                where.mkdir(parents=True)
                (where / "taskfile.py").write_text(BLOB.format(mb=args.mb))
                record(f"W5 cold{tag}", run_process(argv, where))
                if not tag:
                    record("W5 warm", run_process(argv, where))
                (where / "z").mkdir()
                (where / "z" / "taskfile.py").write_text(
                    BLOB.format(mb=args.mb).replace("os.urandom(mb << 20)", "bytes(mb << 20)"))
                record(f"W5 zeros cold{tag}", run_process(argv, where / "z"))
            record("urandom", run_process([py, "-c", f"import os; os.urandom({args.mb} << 20)"], run))
            record("dd", run_process(["dd", "if=/dev/zero", "of=dd.out", "bs=1M",
                                      f"count={args.mb}", "conv=fsync"], run))
            record("import", run_process([py, "-c", "import checkpoint"], run))
            if has_numpy:
                record("numpy.save", run_process([py, "-c", NUMPY_REF.format(mb=args.array_mb)], run))
                for tag, python in order:
                    where = run / f"np{tag.strip(' ()')}"
                    where.mkdir()
                    (where / "taskfile.py").write_text(ARRAY.format(mb=args.array_mb))
                    record(f"NumPy cold{tag}", run_process([python, *cli[1:]], where))
                    if not tag:
                        record("NumPy warm", run_process([python, *cli[1:]], where))
                    shutil.rmtree(where, ignore_errors=True)  # (1 GB each)
            shutil.rmtree(run, ignore_errors=True)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def t(name: str) -> float:
        return _median([s for s, _ in samples.get(name, [])])

    def rss(name: str) -> float:
        return _median([m for _, m in samples.get(name, [])])

    print(f"Large values: medians of {args.rounds} rounds, whole processes; W5 {args.mb} MB, "
          f"NumPy {args.array_mb} MB\n")
    print("| case | checkpoint | reference | ratio | peak RSS | RSS / value |")
    print("|---|---|---|---|---|---|")
    ref5 = t("dd") + t("import")
    print(f"| W5 cold | {t('W5 cold'):.3f} s | {ref5:.3f} s (dd {t('dd'):.3f} + import "
          f"{t('import'):.3f}) | {t('W5 cold') / ref5:.2f} | {rss('W5 cold'):.0f} MB | "
          f"{rss('W5 cold') / args.mb:.2f} |")
    print(f"| W5 cold, zeros (`bytes(n)`, as dd writes) | {t('W5 zeros cold'):.3f} s | {ref5:.3f} s "
          f"| {t('W5 zeros cold') / ref5:.2f} | {rss('W5 zeros cold'):.0f} MB | "
          f"{rss('W5 zeros cold') / args.mb:.2f} |")
    for name in ("W5 cold", "W5 zeros cold") if args.baseline else ():
        old = f"{name} (baseline)"
        print(f"| {old} | {t(old):.3f} s | {ref5:.3f} s | {t(old) / ref5:.2f} | "
              f"{rss(old):.0f} MB | {rss(old) / args.mb:.2f} |")
    print(f"| (os.urandom of {args.mb} MB alone, in a process) | | {t('urandom'):.3f} s | | | |")
    print(f"| W5 warm | {t('W5 warm'):.3f} s | {t('import'):.3f} s (import) | "
          f"{t('W5 warm') / t('import'):.2f} | {rss('W5 warm'):.0f} MB | "
          f"{rss('W5 warm') / args.mb:.2f} |")
    if has_numpy:
        slice_rss = _median([float(x) for x in notes.get("NumPy cold", [])])
        print(f"| NumPy cold | {t('NumPy cold'):.3f} s | {t('numpy.save'):.3f} s (numpy.save + "
              f"fsync) | {t('NumPy cold') / t('numpy.save'):.2f} | {rss('NumPy cold'):.0f} MB | "
              f"{rss('NumPy cold') / args.array_mb:.2f} |")
        if args.baseline:
            old = "NumPy cold (baseline)"
            print(f"| {old} | {t(old):.3f} s | {t('numpy.save'):.3f} s | "
                  f"{t(old) / t('numpy.save'):.2f} | {rss(old):.0f} MB | "
                  f"{rss(old) / args.array_mb:.2f} |")
        print(f"| NumPy warm | {t('NumPy warm'):.3f} s | | | {rss('NumPy warm'):.0f} MB | "
              f"{rss('NumPy warm') / args.array_mb:.2f} |")
        print(f"| NumPy slice reader RSS | {slice_rss:.0f} MB | | | | "
              f"{slice_rss / args.array_mb:.2f} |")
    print()
    print(f"| checksum, {args.mb} MB, in process | in memory (on write) | file read in 1 MB "
          "pieces + checksum (on read) |")
    print("|---|---|---|")
    for name, whole, reading in _checksums(args.mb, max(args.rounds, 3), base):
        print(f"| {name} | {whole:.3f} s ({args.mb / 1024 / whole:.1f} GB/s) | {reading:.3f} s "
              f"({args.mb / 1024 / reading:.1f} GB/s) |")
    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
