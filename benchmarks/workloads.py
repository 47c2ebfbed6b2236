"""checkpoint's side of the workloads: taskfile generators, CLI feature detection, scenarios.

Each workload is a generated `taskfile.py` whose `main` task builds the workload's DAG, run
through the CLI (`checkpoint run main ...`) in a fresh directory, so the cache sits next to the
taskfile. The CLI is built concurrently with this suite: a step that needs a CLI feature the
installed CLI does not offer yet (per its `--help`) is marked "n/a" instead of failing.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import Scenario, Step


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; `QUICK` shrinks every one for a smoke run."""

    lattice_n: int = 200
    """W1: choose(n, n // 2): (n/2 + 1)^2 tasks (10,201 for 200), n deep."""
    fanin: int = 10_000
    """W2: no-op tasks summed by one task."""
    chain: int = 100_000
    """W3: depth of the chain."""
    sleep_tasks: int = 32
    sleep_s: float = 0.5
    sleep_slots: int = 8
    """W4: tasks of `sleep_s` on `sleep_slots` worker slots."""
    blob_mb: int = 256
    """W5: size of the one large value."""
    plan_n: int = 2_000
    """W6: dry run of choose(n, n // 2): 1,002,001 tasks for 2,000."""
    families: int = 50
    """W7: task families in the generated taskfile."""
    sweep: int = 20_000
    """W8: tasks of the sweep (a fan-in); ``run.py --size 200000`` for the issue's figure."""

    @property
    def sleep_ideal(self) -> float:
        """W4's ideal makespan: full slots, no overhead."""
        return math.ceil(self.sleep_tasks / self.sleep_slots) * self.sleep_s


FULL = Sizes()
QUICK = Sizes(lattice_n=10, fanin=50, chain=500, sleep_tasks=8, sleep_s=0.2, sleep_slots=4,
              blob_mb=4, plan_n=60, families=50, sweep=200)

EXECUTOR_ALIASES = {
    "process": ("process", "processes", "proc"),
    "thread": ("thread", "threads"),
    "inline": ("inline", "sync", "serial", "local"),
}

# Which CLI features each workload needs; tests/test_bench_smoke.py mirrors this to decide
# which "n/a" cells are legitimate.
FEATURES = ("cli", "run", "ls", "-j", "--executor", "--no-progress", "--dry-run")


@dataclass
class Cli:
    """How to call the installed checkpoint CLI and what it offers (parsed from its --help)."""

    argv: list[str]
    python: str
    features: set[str] = field(default_factory=set)
    executors: dict[str, str] = field(default_factory=dict)
    """Wanted executor name -> the CLI's spelling of it."""
    missing_reason: str = ""

    def lacks(self, *needed: str) -> str | None:
        """The n/a reason when a needed feature is absent, else None."""
        if "cli" not in self.features:
            return self.missing_reason or "checkpoint CLI not available"
        absent = [f for f in needed if f not in self.features]
        return f"CLI lacks {', '.join(absent)}" if absent else None


def find_cli(python: str) -> Cli:
    """Locate the CLI next to `python` (the console script, else `python -m checkpoint`)."""
    script = Path(python).parent / "checkpoint"
    argv = [str(script)] if script.exists() else [python, "-m", "checkpoint"]
    cli = Cli(argv=argv, python=python)
    with tempfile.TemporaryDirectory() as tmp:
        top = _help(argv + ["--help"], tmp)
        if top is None:
            cli.missing_reason = "no checkpoint CLI (`checkpoint --help` failed)"
            return cli
        cli.features.add("cli")
        commands = _commands(top)
        cli.features.update(c for c in ("run", "ls") if c in commands)
        run_help = _help(argv + ["run", "--help"], tmp) if "run" in commands else None
    if run_help:
        for flag, pattern in (("-j", r"(?<![\w-])-j\b"), ("--executor", r"--executor\b"),
                              ("--no-progress", r"--no-progress\b"),
                              ("--dry-run", r"--dry-run\b")):
            if re.search(pattern, run_help):
                cli.features.add(flag)
        choices = re.search(r"--executor\s+\[([\w|-]+)\]", run_help)
        offered = choices.group(1).split("|") if choices else list(EXECUTOR_ALIASES)
        for want, aliases in EXECUTOR_ALIASES.items():
            spelled = next((a for a in aliases if a in offered), None)
            if spelled:
                cli.executors[want] = spelled
    return cli


def _help(argv: list[str], cwd: str) -> str | None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _commands(help_text: str) -> set[str]:
    """Subcommand names from a click group's --help."""
    section = help_text.split("Commands:", 1)[-1] if "Commands:" in help_text else ""
    return set(re.findall(r"^\s{2}([a-z][\w-]*)", section, flags=re.M))


# ---------------------------------------------------------------- taskfile generators

HEADER = "from checkpoint import requires, task\n\n"

LATTICE = '''
@task
def choose(n: int, k: int):
    """Binomial coefficient, the seed README's lattice."""
    if 0 < k < n:
        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(prev1: int, prev2: int) -> int:
            return prev1 + prev2
    elif k == 0 or k == n:
        def __() -> int:
            return 1
    else:
        raise ValueError(f"{{(n, k)}}")
    return __


@task
def main():
    @requires(choose({n}, {k}))
    def __(value: int) -> int:
        return value
    return __
'''

FANIN = '''
@task
def noop(i: int):
    def __() -> int:
        return i
    return __


@task
def main():
    @requires([noop(i) for i in range({n})])
    def __(values: list[int]) -> int:
        return sum(values)
    return __
'''

CHAIN = '''
@task
def chain(i: int):
    if i == 0:
        def __() -> int:
            return 0
    else:
        @requires(chain(i - 1))
        def __(prev: int) -> int:
            return prev + 1
    return __


@task
def main():
    @requires(chain({n}))
    def __(value: int) -> int:
        return value
    return __
'''

SLEEP = '''import time

from checkpoint import requires, task


@task
def nap(i: int):
    def __() -> int:
        time.sleep({seconds})
        return i
    return __


@task
def main():
    @requires([nap(i) for i in range({n})])
    def __(values: list[int]) -> int:
        return len(values)
    return __
'''

BLOB = '''import os

from checkpoint import requires, task


@task
def blob(mb: int):
    def __() -> bytes:
        return os.urandom(mb << 20)
    return __


@task
def main():
    @requires(blob({mb}))
    def __(value: bytes) -> int:
        return len(value)
    return __
'''

URANDOM = ("import os; b = os.urandom({mb} << 20); f = open('py.out', 'wb'); f.write(b); "
           "f.flush(); os.fsync(f.fileno())")

FAMILY = '''

@task
def {name}(i: int = 0):
    """Family {name}, one of many for `checkpoint ls`."""
    def __() -> int:
        return i
    return __
'''


def many_families(n: int) -> str:
    """A taskfile of `n` families: `choose`, `chain` (for completion of "ch") and fillers."""
    names = ["choose", "chain"] + [f"family_{i:02d}" for i in range(n - 2)]
    body = "".join(FAMILY.format(name=name) for name in names)
    return HEADER + body.lstrip("\n")


# ---------------------------------------------------------------- scenarios


def _run(cli: Cli, case: str, *flags: str, expect: str | None = None,
         needs: tuple[str, ...] = (), executor: str | None = None, ideal: float | None = None,
         rss: bool = False) -> Step:
    """A `checkpoint run main` step, n/a when the CLI lacks what it needs."""
    argv = [*cli.argv, "run", "main"]
    na = cli.lacks("run", *needs, *(("--executor",) if executor else ()))
    if executor and not na:
        if executor not in cli.executors:
            na = f"CLI has no {executor} executor"
        else:
            argv += ["--executor", cli.executors[executor]]
    argv += list(flags)
    if "--no-progress" in cli.features:
        argv.append("--no-progress")
    return Step(case, argv, expect=expect, na=na, ideal=ideal, rss=rss)


def checkpoint_scenarios(cli: Cli, sz: Sizes) -> list[Scenario]:
    """Every checkpoint workload, W1-W7 and the progress overhead, in table order."""
    out: list[Scenario] = []
    lattice = HEADER + LATTICE.format(n=sz.lattice_n, k=sz.lattice_n // 2)
    value = str(math.comb(sz.lattice_n, sz.lattice_n // 2))
    two = ("-j", "2") if "-j" in cli.features else ()  # as many workers as doit's -n 2
    out.append(Scenario("W1", "checkpoint", {"taskfile.py": lattice}, [
        _run(cli, "cold", *two, expect=value), _run(cli, "warm", *two, expect=value)]))

    fanin = HEADER + FANIN.format(n=sz.fanin)
    total = str(sum(range(sz.fanin)))
    for ex in ("process", "thread", "inline"):
        jobs = ("-j", "2") if ex != "inline" and "-j" in cli.features else ()
        label = f"{ex}, -j 2" if ex != "inline" else ex
        out.append(Scenario("W2", "checkpoint", {"taskfile.py": fanin}, [
            _run(cli, f"cold ({label})", *jobs, executor=ex, expect=total),
            _run(cli, f"warm ({label})", *jobs, executor=ex, expect=total)]))

    chain = HEADER + CHAIN.format(n=sz.chain)
    out.append(Scenario("W3", "checkpoint", {"taskfile.py": chain}, [
        _run(cli, "cold (inline)", executor="inline", expect=str(sz.chain)),
        _run(cli, "warm (inline)", executor="inline", expect=str(sz.chain))]))

    sleep = SLEEP.format(n=sz.sleep_tasks, seconds=sz.sleep_s)
    slots = ("-j", str(sz.sleep_slots))
    for ex in ("thread", "process"):
        out.append(Scenario("W4", "checkpoint", {"taskfile.py": sleep}, [
            _run(cli, f"makespan ({ex}, -j {sz.sleep_slots})", *slots, executor=ex, needs=("-j",),
                 expect=str(sz.sleep_tasks), ideal=sz.sleep_ideal)]))

    blob = BLOB.format(mb=sz.blob_mb)
    out.append(Scenario("W5", "checkpoint", {"taskfile.py": blob}, [
        _run(cli, "cold (default executor)", expect=str(sz.blob_mb << 20), rss=True),
        _run(cli, "warm (default executor)", expect=str(sz.blob_mb << 20), rss=True)]))
    out.append(Scenario("W5", "reference", {}, [Step(
        f"ref: dd {sz.blob_mb} MB conv=fsync",
        ["dd", "if=/dev/zero", "of=dd.out", "bs=1M", f"count={sz.blob_mb}", "conv=fsync"]),
        Step(f"ref: python urandom {sz.blob_mb} MB + write + fsync", [cli.python, "-c", URANDOM.format(
            mb=sz.blob_mb)])], independent=True))

    plan = HEADER + LATTICE.format(n=sz.plan_n, k=sz.plan_n // 2)
    tasks = (sz.plan_n // 2 + 1) ** 2 + 1
    out.append(Scenario("W6", "checkpoint", {"taskfile.py": plan}, [
        _run(cli, f"dry run, {tasks:,} tasks", "--dry-run", needs=("--dry-run",), rss=True)]))

    families = many_families(sz.families)
    complete_env = {"_CHECKPOINT_COMPLETE": "bash_complete", "COMP_WORDS": "checkpoint run ch",
                    "COMP_CWORD": "2"}
    out.append(Scenario("W7", "checkpoint", {"taskfile.py": families}, [
        Step("checkpoint --help", [*cli.argv, "--help"], expect="run", na=cli.lacks()),
        Step(f"checkpoint ls ({sz.families} families)", [*cli.argv, "ls"], expect="family_07",
             na=cli.lacks("ls")),
        Step("completion of `run ch`", [*cli.argv], env=complete_env, expect="choose",
             na=cli.lacks() or (None if cli.argv[0].endswith("checkpoint")
                                else "no console script")),
    ], independent=True))
    out.append(Scenario("W7", "reference", {}, [
        Step("ref: python -c pass", [cli.python, "-c", "pass"]),
        Step("ref: python -c 'import click'", [cli.python, "-c", "import click"])],
        independent=True))

    out.append(sweep_scenario(cli, sz))

    for live in (True, False):
        flags = ("--executor", cli.executors.get("process", "process"), "-j", "2")
        na = cli.lacks("run", "-j", "--executor", *(() if live else ("--no-progress",)))
        argv = [*cli.argv, "run", "main", *flags, *(() if live else ("--no-progress",))]
        case = "cold, live display (pty)" if live else "cold, --no-progress (pty)"
        out.append(Scenario("progress", "checkpoint", {"taskfile.py": fanin}, [
            Step(case, argv, expect=total, pty=True, na=na)]))
    return out


def sweep_scenario(cli: Cli, sz: Sizes) -> Scenario:
    """W8: a sweep of `sz.sweep` tasks summed by one: cold and warm runs, then the commands
    that read the whole DAG (`ls main`, its JSON, the graph's JSON), each with its peak RSS."""
    fanin = HEADER + FANIN.format(n=sz.sweep)
    total = str(sum(range(sz.sweep)))
    two = ("-j", "2") if "-j" in cli.features else ()
    ls_na = cli.lacks("ls")
    return Scenario("W8", "checkpoint", {"taskfile.py": fanin}, [
        _run(cli, f"cold, {sz.sweep:,} tasks (-j 2)", *two, expect=total, rss=True),
        _run(cli, f"warm, {sz.sweep:,} tasks (-j 2)", *two, expect=total, rss=True),
        Step(f"ls main, {sz.sweep:,} tasks", [*cli.argv, "ls", "main"], expect="noop(0)",
             rss=True, na=ls_na),
        Step(f"ls main --json, {sz.sweep:,} tasks", [*cli.argv, "ls", "main", "--json"],
             expect='"counts"', rss=True, na=ls_na),
        Step(f"graph --json, {sz.sweep:,} tasks", [*cli.argv, "graph", "--json"],
             expect="checkpoint-graph/1", rss=True, na=cli.lacks()),
    ])


def default_python() -> str:
    """The project venv's python when present (it has checkpoint installed), else this one."""
    venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable
