"""Smoke test of the benchmark harness (benchmarks/run.py) at tiny sizes, without peers.

A row may be "n/a" only when the installed CLI lacks a feature the row needs (per its --help),
so work in progress on the CLI does not fail this test, but a broken harness does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "progress")
EXECUTORS = {"process": ("process", "processes", "proc"), "thread": ("thread", "threads"),
             "inline": ("inline", "sync", "serial", "local")}


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "checkpoint"
    return [str(script)] if script.exists() else [sys.executable, "-m", "checkpoint"]


def _help(args: list[str], cwd: Path) -> str:
    done = subprocess.run(_cli() + args, cwd=cwd, capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def _missing_features(cwd: Path) -> set[str]:
    """CLI features absent from `checkpoint --help` / `checkpoint run --help`."""
    missing: set[str] = set()
    top = _help(["--help"], cwd)
    if not top:
        return {"cli"}
    commands = top.split("Commands:", 1)[-1]
    for command in ("run", "ls"):
        if not re.search(rf"^\s+{command}\b", commands, flags=re.M):
            missing.add(command)
    run = _help(["run", "--help"], cwd) if "run" not in missing else ""
    for flag, pattern in (("-j", r"(?<![\w-])-j\b"), ("--executor", r"--executor\b"),
                          ("--no-progress", r"--no-progress\b"), ("--dry-run", r"--dry-run\b")):
        if not re.search(pattern, run):
            missing.add(flag)
    choices = re.search(r"--executor\s+\[([\w|-]+)\]", run)
    for name, aliases in EXECUTORS.items():
        if choices and not set(aliases) & set(choices.group(1).split("|")):
            missing.add(f"executor {name}")
    if not _cli()[0].endswith("checkpoint"):
        missing.add("console script")
    return missing


def _needs(workload: str, case: str) -> set[str]:
    """The CLI features a row of the table needs."""
    needs = {"cli"}
    if workload != "W7":
        needs.add("run")
    if workload == "W6":
        needs.add("--dry-run")
    if workload == "progress":
        needs |= {"-j", "--executor", "executor process"}
    if workload in ("W2", "W4") or "inline" in case:
        needs.add("--executor")
    for name in EXECUTORS:
        if name in case:
            needs |= {"--executor", f"executor {name}"}
    if "-j" in case:
        needs.add("-j")
    if "--no-progress" in case:
        needs.add("--no-progress")
    if " ls" in case:
        needs.add("ls")
    if "completion" in case:
        needs.add("console script")
    return needs


def test_quick_run_prints_a_row_per_workload(tmp_path: Path) -> None:
    """run.py --quick should exit 0 and give every workload measured or legitimately n/a rows."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--repeat", "1",
         "--only", ",".join(WORKLOADS), "--python", sys.executable, "--timeout", "60",
         "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    missing = _missing_features(tmp_path)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    for workload in WORKLOADS:
        assert any(row[0] == workload for row in rows), f"no row for {workload}:\n{done.stdout}"
    for workload, case, ours, reference, *_ in rows:
        value = reference if case.startswith("ref:") else ours
        if value.startswith("n/a"):
            needed = _needs(workload, case)
            assert needed & missing, (
                f"{workload} {case!r} is {value!r} although the CLI offers {sorted(needed)}\n"
                f"{done.stderr[-3000:]}")
        else:
            assert re.match(r"\d+(\.\d+)? m?s\b", value), f"{workload} {case!r}: {value!r}"
    record = json.loads(out.read_text())
    assert {row["workload"] for row in record["rows"]} == set(WORKLOADS)


def test_files_benchmark_runs_quickly() -> None:
    """benchmarks/files_bench.py --quick should build its DAGs, re-run nothing warm, and report."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "files_bench.py"), "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "100 tasks, 1 File each: adds" in done.stdout


def test_chain_benchmark_runs_quickly() -> None:
    """benchmarks/chain_bench.py --quick should run both chains and count the checks."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chain_bench.py"), "--quick"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "outputs checked in the Product chain" in done.stdout, done.stdout


def test_large_values_benchmark_runs_quickly() -> None:
    """benchmarks/large_bench.py --quick should run W5 and the NumPy variant with their
    references and print the table."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "large_bench.py"), "--quick"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for row in ("| W5 cold |", "| W5 warm |", "| NumPy cold |", "| NumPy slice reader RSS |",
                "| CRC-32 (zlib) |"):
        assert row in done.stdout, done.stdout
