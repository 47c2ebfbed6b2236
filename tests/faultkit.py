"""Helpers for fault-injection tests: run the real CLI in a subprocess, read what ran."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def install_graph(tmp_path: Path, name: str = "faultgraph.py") -> Path:
    """Copy the fault taskfile into the test directory."""
    target = tmp_path / name
    shutil.copy(HERE / "faultgraph.py", target)
    return target


def env_for(tmp_path: Path, log: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CP_CACHE_DIR=str(tmp_path / ".cache"), PYTHONDONTWRITEBYTECODE="1", **extra)
    if log is not None:
        env["CP_EXEC_LOG"] = str(log)
    env.pop("NO_COLOR", None)
    return env


def start(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``python -m checkpoint ARGS`` in its own session (so signals reach only it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "checkpoint", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and `nohup`
    # ignores SIGHUP; children inherit both: give the CLI a normal Ctrl-C and hangup.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def executions(log: Path) -> list[str]:
    """The task expressions logged as computed, in order (one per computation)."""
    if not log.exists():
        return []
    return [line.split(" ")[0] for line in log.read_text().splitlines() if line]


def worker_pids(log: Path) -> set[int]:
    if not log.exists():
        return set()
    return {int(line.split(" ")[1]) for line in log.read_text().splitlines() if line}


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def wait_dead(pids: set[int], timeout: float = 60.0) -> set[int]:
    """Wait for processes to end; return those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if alive(p)}
        if left:
            time.sleep(0.02)
    return left
