"""`checkpoint report` and `checkpoint run --report`, as a user runs them."""

from __future__ import annotations

import json
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
    @requires(hello("x"))
    def __(x):
        raise ValueError("broken on purpose")
    return __

@task
def main():
    @requires([hello("ann"), hello("bob")])
    def __(xs):
        return sum(xs)
    return __
'''


@pytest.fixture(autouse=True)
def _taskfile(tmp_path: Path) -> Path:
    path = tmp_path / "taskfile.py"
    path.write_text(textwrap.dedent(TASKFILE))
    return path


def _ok(runner: CliRunner, *args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


def test_report_writes_the_last_run_as_one_html_file(runner: CliRunner, tmp_path: Path) -> None:
    """`checkpoint report` should write report.html (the last run) and say what it holds."""
    _ok(runner, "run", "--executor", "inline")
    result = runner.invoke(cli, ["report"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == ("Wrote report.html: run 1 (main()), succeeded in "
                             + result.stderr.split(" in ", 1)[1])
    assert result.stderr.rstrip().endswith(": 3 ran, 0 reused.")
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "checkpoint run #1: main()" in page


def test_run_report_writes_the_report_even_when_a_task_fails(runner: CliRunner, tmp_path: Path) -> None:
    """`run --report FILE` should write the report at the end of a failed run, and keep exit 1."""
    result = runner.invoke(cli, ["run", "broken", "--executor", "inline", "--report", "out/r.html"])
    assert result.exit_code == 2  # said before anything runs
    assert result.stderr == (f"Error: Cannot write the report to out/r.html: there is no directory "
                             f"{tmp_path / 'out'}.\n")
    (tmp_path / "out").mkdir()
    result = runner.invoke(cli, ["run", "broken", "--executor", "inline", "--report", "out/r.html"])
    assert result.exit_code == 1, result.output
    assert "Report: out/r.html" in result.stderr
    page = (tmp_path / "out" / "r.html").read_text()
    assert "broken on purpose" in page and '"failed"' in page


def test_run_report_on_a_warm_run_reports_it(runner: CliRunner, tmp_path: Path) -> None:
    """A run that only reused results is not saved, but --report still describes it."""
    _ok(runner, "run", "--executor", "inline")
    result = runner.invoke(cli, ["run", "--executor", "inline", "--report", "warm.html"])
    assert result.exit_code == 0, result.output
    assert '"reused":3' in (tmp_path / "warm.html").read_text()
    assert [line.split()[0] for line in _ok(runner, "report", "--list").splitlines()] == ["run", "1"]


def test_a_report_that_fails_does_not_hide_the_runs_outcome(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--report comes after the run: if it fails, say so, and keep the run's exit status."""
    from checkpoint.report import Report

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the template is gone")

    monkeypatch.setattr(Report, "write", broken)
    result = runner.invoke(cli, ["run", "broken", "--executor", "inline", "--report", "r.html"])
    assert result.exit_code == 1  # the task's failure
    assert "warning: the report could not be written to r.html: the template is gone" in result.stderr


def test_dry_run_and_report_do_not_go_together(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["run", "-n", "--report", "r.html"])
    assert result.exit_code == 2
    assert "--report needs a run, and --dry-run runs nothing" in result.stderr


def test_report_without_any_run_says_what_to_do(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["report"])
    assert result.exit_code == 1
    assert "No run is recorded in " in result.stderr and "run something first" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["report", "--list"])
    assert result.exit_code == 0 and "No run is recorded" in result.stderr


def test_report_list_and_run_n(runner: CliRunner, tmp_path: Path) -> None:
    """--list should show the recorded runs; --run N and --run -N pick one; a run that is not
    there is a clear error."""
    _ok(runner, "run", "hello('ann')", "--executor", "inline")
    _ok(runner, "run", "broken", "--executor", "inline", code=1)
    listing = _ok(runner, "report", "--list").splitlines()
    assert listing[0].split() == ["run", "started", "status", "ran", "failed", "took", "targets"]
    assert [line.split()[0:1] + line.split()[3:6] for line in listing[1:]] == [
        ["1", "succeeded", "1", "0"], ["2", "failed", "1", "1"]]
    assert listing[1].endswith("hello('ann')") and listing[2].endswith("broken()")
    _ok(runner, "report", "--run", "1", "-o", "one.html")
    assert "checkpoint run #1: hello(&#x27;ann&#x27;)" in (tmp_path / "one.html").read_text()
    _ok(runner, "report", "--run", "-1", "-o", "last.html")
    assert "checkpoint run #2: broken()" in (tmp_path / "last.html").read_text()
    result = runner.invoke(cli, ["report", "--run", "7"])
    assert result.exit_code == 1
    assert "Run 7 is not recorded (the cache keeps runs 1 to 2)" in result.stderr


def test_report_target_picks_the_last_run_it_ran_in(runner: CliRunner, tmp_path: Path) -> None:
    _ok(runner, "run", "hello('ann')", "--executor", "inline")  # run 1
    _ok(runner, "run", "hello('bob')", "--executor", "inline")  # run 2
    _ok(runner, "run", "hello('ann')", "--executor", "inline")  # reused: not saved
    out = runner.invoke(cli, ["report", "hello('ann')", "-o", "-"])
    assert out.exit_code == 0
    assert "checkpoint run #1: hello(&#x27;ann&#x27;)" in out.stdout
    result = runner.invoke(cli, ["report", "main"])
    assert result.exit_code == 1
    assert "No recorded run ran main() (taskfile.main)" in result.stderr
    result = runner.invoke(cli, ["report", "main", "--run", "1"])
    assert result.exit_code == 2 and "Give a TARGET or --run N, not both." in result.stderr


def test_report_format_trace(runner: CliRunner, tmp_path: Path) -> None:
    """--format trace should write trace.json (or stdout with -o -) in the trace-event format."""
    _ok(runner, "run", "--executor", "inline")
    result = runner.invoke(cli, ["report", "--format", "trace"])
    assert result.exit_code == 0 and result.stderr.startswith("Wrote trace.json: run 1")
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "checkpoint") == 3
    out = runner.invoke(cli, ["report", "--format", "trace", "-o", "-"])
    assert json.loads(out.stdout) == trace


def test_report_paths_are_relative_to_where_checkpoint_started(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands run in the project root, but -o and --report name files where the user is."""
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    _ok(runner, "run", "--executor", "inline", "--report", "a.html")
    _ok(runner, "report", "-o", "b.html")
    assert (sub / "a.html").is_file() and (sub / "b.html").is_file()
    assert not (tmp_path / "a.html").exists()


def test_report_open_starts_a_browser(runner: CliRunner, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or True)
    _ok(runner, "run", "--executor", "inline")
    _ok(runner, "report", "--open")
    assert opened == [(tmp_path / "report.html").resolve().as_uri()]
    result = runner.invoke(cli, ["report", "--open", "-o", "-"])
    assert result.exit_code == 2 and "--open needs a file" in result.stderr


def test_report_to_an_unwritable_place_is_a_clear_error(runner: CliRunner) -> None:
    _ok(runner, "run", "--executor", "inline")
    result = runner.invoke(cli, ["report", "-o", "no/such/dir/r.html"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Cannot write no/such/dir/r.html: No such file or directory.")
