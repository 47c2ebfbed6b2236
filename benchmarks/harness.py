"""Process-level measurement: run one command as a whole process, time it, report its peak RSS.

Everything the benchmark measures is a fresh process (`subprocess`), timed by wall clock around
spawn-to-reap, so import costs, pool start-up and store opening are all counted, as a user sees
them. The child is reaped with `os.wait4`, which returns the child's own resource usage (peak
RSS), not a running maximum over all children.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import statistics
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    """What one process run gave."""

    seconds: float
    """Wall time from spawn to reap."""
    rc: int
    """Exit code (negative: killed by that signal; 124: timed out)."""
    max_rss_mb: float
    """Peak resident set size of the child itself (not of its own children)."""
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The most telling line of stderr (or stdout) for an "n/a" cell."""
        if self.rc == 124:
            return "timed out"
        text = self.stderr.strip() or self.stdout.strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        for ln in reversed(lines):
            if re.search(r"(Error|error|No such|Usage|Exception|not found)", ln):
                return _clip(ln)
        return _clip(lines[-1]) if lines else f"exit {self.rc}"


def _clip(text: str, n: int = 90) -> str:
    text = text.replace("|", "/")
    return text if len(text) <= n else text[: n - 3] + "..."


def run_process(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    pty: bool = False,
) -> Outcome:
    """Run `argv` in `cwd` to completion and measure it.

    With `pty=True` stdin/stdout/stderr are a pseudo-terminal (120x40), so a live display behaves
    as in a real terminal; the harness drains the terminal in a thread so the child never blocks.
    """
    full_env = dict(os.environ)
    # Measure what users get: bytecode caches written and used (some shells here disable them,
    # which makes every start-up recompile the modules it imports).
    full_env.pop("PYTHONDONTWRITEBYTECODE", None)
    full_env.update(env or {})
    out_path, err_path = cwd / ".bench-stdout", cwd / ".bench-stderr"
    drained: list[bytes] = []
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        if pty:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            full_env.setdefault("TERM", "xterm-256color")
            full_env.setdefault("COLUMNS", "120")
            start = time.perf_counter()
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=full_env, stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True,
            )
            os.close(slave)
            reader = threading.Thread(target=_drain, args=(master, drained), daemon=True)
            reader.start()
        else:
            start = time.perf_counter()
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True,
            )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from reaping again
    # Pool workers may outlive a killed parent: end the whole process group we started.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if pty:
        reader.join(timeout=5)
        os.close(master)
    stdout = b"".join(drained).decode(errors="replace") if pty else out_path.read_text(errors="replace")
    stderr = "" if pty else err_path.read_text(errors="replace")
    rc = 124 if timed_out.is_set() else proc.returncode
    return Outcome(seconds, rc, usage.ru_maxrss / 1024, stdout, stderr)


def _drain(fd: int, sink: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO once the child side is closed
            return
        if not chunk:
            return
        sink.append(chunk)


@dataclass
class Cell:
    """One table cell: the samples of one measurement over the repetitions, or why there are none."""

    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    na: str | None = None
    """Reason the cell could not be measured ("n/a: ...")."""
    warnings: list[str] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)
    """The run's own wall time as the tool reports it ("Done in 2.05s"): the makespan
    without interpreter start-up and imports (collected for steps with an ideal time)."""

    @property
    def median(self) -> float | None:
        """Median seconds, or None when there are no samples."""
        return statistics.median(self.seconds) if self.seconds and not self.na else None


@dataclass
class Step:
    """One timed command of a scenario; steps of a scenario run in order in the same directory."""

    case: str
    """Row label, shared by the tools that run the same measurement (so ratios line up)."""
    argv: list[str]
    expect: str | None = None
    """Text the output should contain (the target's value); its absence is flagged, not fatal."""
    pty: bool = False
    env: dict[str, str] = field(default_factory=dict)
    ideal: float | None = None
    """Ideal wall time, to report efficiency = ideal / measured."""
    rss: bool = False
    """Report peak RSS next to the time."""
    na: str | None = None
    """Set when the step cannot run at all (e.g. the CLI lacks a flag it needs)."""


@dataclass
class Scenario:
    """One tool's way to run one workload: files written into a fresh directory, then steps."""

    workload: str
    tool: str
    """"checkpoint", a peer ("doit", "redun") or "reference" (dd, python -c pass)."""
    files: dict[str, str]
    steps: list[Step]
    size_note: str = ""
    """Set when this tool ran a smaller workload than checkpoint (e.g. redun at --peer-size)."""
    scale: float = 1.0
    """Full size / this size, to scale a shrunk peer's time for its ratio column."""
    independent: bool = False
    """Steps do not build on each other (W7's commands): a failed step does not skip the rest."""


_REPORTED = re.compile(r"\bDone in ([0-9.]+)s\b")


def reported_seconds(text: str) -> float | None:
    """The wall time in checkpoint's end-of-run summary line, if the output has one."""
    found = _REPORTED.search(text)
    return float(found.group(1)) if found else None


def fmt_seconds(t: float) -> str:
    """`1.23 s` / `45 ms`, precise enough for a ratio, short enough for a table."""
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    return f"{t * 1e3:.0f} ms"


def fmt_cell(cell: Cell, ideal: float | None = None, rss: bool = False) -> str:
    """Median (min-max) of a cell; with `ideal`, also the efficiency ideal/median."""
    if cell.na:
        return f"n/a: {cell.na}"
    if not cell.seconds:
        return ""
    med = statistics.median(cell.seconds)
    text = fmt_seconds(med)
    if len(cell.seconds) > 1:
        text += f" ({fmt_seconds(min(cell.seconds))}-{fmt_seconds(max(cell.seconds))})"
    if ideal is not None:
        text += f", eff {ideal / med:.0%}"
        if cell.reported:
            text += f" (in-run {ideal / statistics.median(cell.reported):.0%})"
    if rss and cell.rss_mb:
        text += f", peak RSS {statistics.median(cell.rss_mb):.0f} MB"
    if cell.warnings:
        text += " [!]"
    return text


def fmt_ratio(peer: Cell, ours: Cell, scale: float = 1.0) -> str:
    """Peer median / checkpoint median (>1: checkpoint is faster); `~` when scaled by size."""
    if peer.median is None or ours.median is None or ours.median <= 0:
        return ""
    prefix = "~" if scale != 1.0 else ""
    return f"{prefix}{peer.median * scale / ours.median:.1f}x"
