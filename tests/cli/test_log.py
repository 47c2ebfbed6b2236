"""`checkpoint log TARGET` and the progress output of `checkpoint run` (plain and in a terminal)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from checkpoint.cli import cli

TASKFILE = '''
from checkpoint import task, requires

@task
def hello(name: str):
    def __():
        print(f"hello {name}")
        return len(name)
    return __

@task
def broken():
    def __():
        print("about to break")
        raise ValueError("broken on purpose")
    return __

@task
def main():
    @requires([hello("ann"), hello("bob"), hello("cy")])
    def __(xs):
        return sum(xs)
    return __
'''


def _taskfile(tmp_path: Path) -> Path:
    path = tmp_path / "taskfile.py"
    path.write_text(textwrap.dedent(TASKFILE))
    return path


def test_log_prints_the_last_runs_output(runner: CliRunner, tmp_path: Path) -> None:
    """`checkpoint log` should print the task's captured output on stdout and its run on stderr."""
    _taskfile(tmp_path)
    result = runner.invoke(cli, ["run", "--executor", "inline"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "8\n"  # stdout carries only the value: task output is captured
    log = runner.invoke(cli, ["log", "hello('bob')"])
    assert log.exit_code == 0
    assert log.stdout == "hello bob\n"
    assert re.match(r"hello\('bob'\): done at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d on \S+:\d+, in ", log.stderr)


def test_log_of_a_failed_task_shows_output_and_traceback(runner: CliRunner, tmp_path: Path) -> None:
    """After a failure, `checkpoint log` should show the output and the traceback."""
    _taskfile(tmp_path)
    result = runner.invoke(cli, ["run", "broken", "--executor", "inline"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Captured output:\n  about to break" in result.stderr
    assert "ValueError: broken on purpose" in result.stderr
    log = runner.invoke(cli, ["log", "broken"])
    assert log.exit_code == 0
    assert log.stdout.startswith("about to break\nTraceback (most recent call last):")
    assert "broken(): failed at" in log.stderr


def test_log_without_a_recorded_run_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`checkpoint log` of a task that never ran should exit 1 with a hint, not a traceback."""
    _taskfile(tmp_path)
    from checkpoint.cli import main

    with pytest.raises(SystemExit) as info:
        main(["log", "hello('zed')"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "No run of hello('zed') (taskfile.hello) is recorded" in err
    assert "checkpoint run \"hello('zed')\"" in err
    assert "Traceback" not in err


def test_run_writes_plain_lines_off_a_terminal(runner: CliRunner, tmp_path: Path) -> None:
    """Off a terminal, `checkpoint run` should log one plain line per task; -v adds their output."""
    _taskfile(tmp_path)
    result = runner.invoke(cli, ["run", "--executor", "inline", "-v"])
    assert result.exit_code == 0
    assert "\x1b" not in result.stderr
    assert re.search(r"^\d\d:\d\d:\d\d done    hello\('ann'\)  .*s\n  \| hello ann$", result.stderr, re.M)
    assert "Done in " in result.stderr and "4 ran" in result.stderr
    again = runner.invoke(cli, ["run", "--no-progress"])
    assert again.stderr.startswith("Nothing to run: all 4 tasks reused")
    quiet = runner.invoke(cli, ["-q", "run", "--force"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == "8\n"


def _run_in_pty(args: list[str], cwd: Path, **extra: str) -> tuple[int, str]:
    """Run a command with stderr (and stdout) on a pseudo-terminal; return its exit code and output."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="100", LINES="40", CP_CACHE_DIR=str(cwd / ".cache"))
    env.update(extra)
    proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", "replace")


def test_run_on_a_terminal_shows_the_live_display(tmp_path: Path) -> None:
    """On a terminal, `checkpoint run` should draw the live display with per-family done/total counts."""
    _taskfile(tmp_path)
    code, out = _run_in_pty([sys.executable, "-m", "checkpoint", "run", "-j", "2"], tmp_path)
    assert code == 0, out
    assert "\x1b[" in out  # a live display, with escape codes
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"hello +3/3", text)
    assert re.search(r"main +1/1", text)
    assert "4/4" in text and "100%" in text
    assert "Done in " in text and "4 ran, 0 reused" in text
    assert text.rstrip().endswith("8")
    assert "hello ann" not in text  # task output stays in the log unless -v


def test_live_display_shows_output_and_failures_after_it_closes(tmp_path: Path) -> None:
    """On a terminal, -v should print task output above the display; a failure's output and traceback follow it."""
    _taskfile(tmp_path)
    code, out = _run_in_pty([sys.executable, "-m", "checkpoint", "run", "-j", "2", "-k", "-v",
                             "broken", "main"], tmp_path)
    assert code == 1, out
    assert "\x1b[" in out
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    assert "[hello('ann')] hello ann" in text
    assert "✗ broken() failed: ValueError: broken on purpose" in text
    report = text[text.index("Task broken() (taskfile.broken) failed"):]
    assert "Captured output:\n  about to break" in report
    assert "Traceback (most recent call last)" in report and 'raise ValueError("broken on purpose")' in report
    assert "checkpoint/_worker.py" not in report


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--no-progress"], {}), ([], {"TERM": "dumb"})],
    ids=["no-progress", "TERM=dumb"],
)
def test_terminal_gets_plain_lines_when_asked(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    """--no-progress or TERM=dumb should give plain lines without escape codes, even on a terminal."""
    _taskfile(tmp_path)
    code, out = _run_in_pty([sys.executable, "-m", "checkpoint", "run", "-j", "2", *args], tmp_path, **env)
    assert code == 0, out
    assert "\x1b" not in out
    assert re.search(r"^\d\d:\d\d:\d\d done    hello\('ann'\)  \S+s\r?$", out, re.M)
    assert "Done in " in out and "4 ran, 0 reused" in out


def test_no_color_keeps_the_live_display_without_colours(tmp_path: Path) -> None:
    """NO_COLOR means no colour, not no live display (https://no-color.org)."""
    _taskfile(tmp_path)
    code, out = _run_in_pty([sys.executable, "-m", "checkpoint", "run", "-j", "2"], tmp_path,
                            NO_COLOR="1")
    assert code == 0, out
    assert "\x1b[?25l" in out  # the live display hides the cursor while it draws
    assert not re.search(r"\x1b\[[0-9;]*(3[0-7]|38;[0-9;]+)m", out), "a colour was drawn"
    assert "4 ran, 0 reused" in out
