"""Peer tools (doit, redun) running W1, W2 and W4, each written the way its own docs suggest.

The peers live in their own virtualenv, `.venv-peers` at the repository root (gitignored), so
they never touch the project's environment. Idioms used:

- doit: one `task_*` generator per family, values passed with `getargs` (a group task's
  `getargs` gives a dict of all its subtasks' values), up-to-date via `config_changed`,
  run with `-n 2 -P process` (`-n 8 -P thread` for W4's sleeps) on the sqlite3 backend.
- redun: `@task`s whose calls build lazy expressions (W1 as recursive `choose` tasks, which
  adds one `add` job per inner lattice cell), a `main` task that builds the DAG, the local
  executor in process mode with 2 workers (thread mode, 8 workers, for W4), an sqlite backend.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from harness import Scenario, Step
from workloads import Sizes

PEERS = ("doit", "redun")


def ensure_venv(root: Path) -> tuple[str | None, str]:
    """Create `.venv-peers` with doit and redun if needed; returns (python, problem)."""
    venv = root / ".venv-peers"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import doit, redun"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python), ""
    print(f"creating {venv} with doit and redun (pip)...", file=sys.stderr)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
             [str(python), "-m", "pip", "install", "-q", "doit", "redun"]]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["?"])[-1]
            return None, f"could not set up {venv.name}: {tail[:80]}"
    return str(python), ""


def _lattice_cells(n: int, k: int) -> list[tuple[int, int]]:
    """The (i, j) of choose(n, k)'s lattice, in dependency order."""
    return [(i, j) for i in range(n + 1) for j in range(max(0, i - (n - k)), min(i, k) + 1)]


DOIT_LATTICE = '''from doit.tools import config_changed

CELLS = {cells!r}


def one():
    return {{"value": 1}}


def add(prev1, prev2):
    return {{"value": prev1 + prev2}}


def task_choose():
    for i, j in CELLS:
        if 0 < j < i:
            yield {{"name": f"{{i}},{{j}}", "actions": [add],
                   "getargs": {{"prev1": (f"choose:{{i - 1}},{{j - 1}}", "value"),
                               "prev2": (f"choose:{{i - 1}},{{j}}", "value")}},
                   "uptodate": [config_changed(f"{{i}},{{j}}")]}}
        else:
            yield {{"name": f"{{i}},{{j}}", "actions": [one],
                   "uptodate": [config_changed(f"{{i}},{{j}}")]}}
'''

DOIT_FANIN = '''from doit.tools import config_changed

N = {n}


def noop(i):
    return {{"value": i}}


def total(values):
    return {{"value": sum(values.values())}}


def task_noop():
    for i in range(N):
        yield {{"name": str(i), "actions": [(noop, [i])], "uptodate": [config_changed(str(i))]}}


def task_total():
    return {{"actions": [total], "getargs": {{"values": ("noop", "value")}}}}
'''

DOIT_SLEEP = '''import time

from doit.tools import config_changed


def nap(i):
    time.sleep({seconds})
    return {{"value": i}}


def task_nap():
    for i in range({n}):
        yield {{"name": str(i), "actions": [(nap, [i])], "uptodate": [config_changed(str(i))]}}
'''

REDUN_INI = '''[backend]
db_uri = sqlite:///redun.db

[executors.default]
type = local
mode = {mode}
max_workers = {workers}
'''

REDUN_LATTICE = '''from redun import task

redun_namespace = "bench"


@task()
def add(prev1: int, prev2: int) -> int:
    return prev1 + prev2


@task()
def choose(n: int, k: int) -> int:
    # Recursive tasks, redun's idiom; redun runs each distinct call once per execution. (Building
    # the whole lattice as one nested expression in `main` hashes it exponentially in redun 0.44.)
    if 0 < k < n:
        return add(choose(n - 1, k - 1), choose(n - 1, k))
    return 1


@task()
def main(n: int = {n}, k: int = {k}) -> int:
    return choose(n, k)
'''

REDUN_FANIN = '''from redun import task

redun_namespace = "bench"


@task()
def noop(i: int) -> int:
    return i


@task()
def total(values: list) -> int:
    return sum(values)


@task()
def main(n: int = {n}) -> int:
    return total([noop(i) for i in range(n)])
'''

REDUN_SLEEP = '''import time

from redun import task

redun_namespace = "bench"


@task()
def nap(i: int) -> int:
    time.sleep({seconds})
    return i


@task()
def main(n: int = {n}) -> list:
    return [nap(i) for i in range(n)]
'''


def peer_scenarios(python: str, sz: Sizes, peer_size: int | None) -> list[Scenario]:
    """doit and redun scenarios for W1, W2, W4; redun shrunk to `peer_size` tasks if given."""
    bindir = Path(python).parent
    # doit on its fastest backend here (sqlite3: ~25% faster cold than the default dbm).
    doit = [str(bindir / "doit"), "-f", "dodo.py", "--backend", "sqlite3"]
    redun = [str(bindir / "redun"), "-c", ".redun", "run", "workflow.py", "main"]
    n, k = sz.lattice_n, sz.lattice_n // 2
    full_lattice = (k + 1) ** 2
    out = [Scenario("W1", "doit", {"dodo.py": DOIT_LATTICE.format(cells=_lattice_cells(n, k))}, [
        Step("cold", [*doit, "-n", "2", "-P", "process"]),
        Step("warm", [*doit, "-n", "2", "-P", "process"])])]

    rn, rk, note, scale = n, k, "", 1.0
    if peer_size and peer_size < full_lattice:
        side = max(2, round(math.sqrt(peer_size)))
        rn, rk = 2 * (side - 1), side - 1
        scale = full_lattice / side**2
        note = f"redun W1 at choose({rn}, {rk}) = {side**2:,} tasks (--peer-size)"
    out.append(Scenario("W1", "redun", {
        "workflow.py": REDUN_LATTICE.format(n=rn, k=rk),
        ".redun/redun.ini": REDUN_INI.format(mode="process", workers=2)}, [
        Step("cold", redun, expect=str(math.comb(rn, rk))),
        Step("warm", redun, expect=str(math.comb(rn, rk)))], size_note=note, scale=scale))

    fan = [("process", "-j 2", "-P process -n 2")]
    for _ex, label, flags in fan:
        out.append(Scenario("W2", "doit", {"dodo.py": DOIT_FANIN.format(n=sz.fanin)}, [
            Step(f"cold (process, {label})", [*doit, *flags.split()]),
            Step(f"warm (process, {label})", [*doit, *flags.split()])]))
        rsize = min(peer_size or sz.fanin, sz.fanin)
        note = f"redun W2 at {rsize:,} tasks (--peer-size)" if rsize != sz.fanin else ""
        out.append(Scenario("W2", "redun", {
            "workflow.py": REDUN_FANIN.format(n=rsize),
            ".redun/redun.ini": REDUN_INI.format(mode="process", workers=2)}, [
            Step(f"cold (process, {label})", redun, expect=str(sum(range(rsize)))),
            Step(f"warm (process, {label})", redun, expect=str(sum(range(rsize))))],
            size_note=note, scale=sz.fanin / rsize))

    case = f"makespan (thread, -j {sz.sleep_slots})"
    out.append(Scenario("W4", "doit", {
        "dodo.py": DOIT_SLEEP.format(n=sz.sleep_tasks, seconds=sz.sleep_s)}, [
        Step(case, [*doit, "-n", str(sz.sleep_slots), "-P", "thread"], ideal=sz.sleep_ideal)]))
    out.append(Scenario("W4", "redun", {
        "workflow.py": REDUN_SLEEP.format(n=sz.sleep_tasks, seconds=sz.sleep_s),
        ".redun/redun.ini": REDUN_INI.format(mode="thread", workers=sz.sleep_slots)}, [
        Step(case, redun, ideal=sz.sleep_ideal)]))
    return out
