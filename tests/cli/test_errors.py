"""Bad input: one-paragraph messages, exit code 2 (1 for failing task code), no internal traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Invoke


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("chose", "Unknown task 'chose' in "),
        ("chose(6, 3)", "Did you mean 'choose'? Run 'checkpoint ls' to list tasks."),
        ("choose(6,", "invalid syntax"),
        ("choose(6, x)", "arguments must be literals"),
        ("choose(6, 3) + 1", "a target is a task name or a call"),
        ("choose(**{'n': 1})", "**kwargs are not allowed"),
        ("choose(n=6, n=3)", "keyword argument repeated: n"),
        ("choose(6)", "missing a required argument: 'k'. Its signature is choose(n: int, k: int)."),
        ("choose(6, 3, 1)", "too many positional arguments"),
        ("choose(6, 3, j=3)", "unknown argument 'j'"),
        ("choose('6', 3)", "Argument 'n' of task choose must be int, not str ('6')."),
        ("choose(6, True)", "Argument 'k' of task choose must be int, not bool (True)."),
        ("choose(6.0, 3)", "Argument 'n' of task choose must be int, not float"),
        ("scale({'a': 1})", "Argument 'values' of task scale must be list, not dict"),
        ("scale([1], 'x')", "Argument 'factor' of task scale must be float or None, not str"),
        ("scale([1], opts=[1])", "Argument 'opts' of task scale must be dict, not list"),
        ("greet(excited='yes')", "Argument 'excited' of task greet must be bool, not str"),
        ("scale([{1, 2}])", "Argument 'values' of task taskfile.scale is a builtins.set"),
    ],
    ids=lambda s: s if "(" in s or s.isidentifier() else None,
)
def test_bad_targets(invoke: Invoke, target: str, expected: str) -> None:
    """Each bad target should exit 2 with a specific one-paragraph message and no traceback."""
    result = invoke("run", "--executor", "inline", target)
    assert result.exit_code == 2, result.stderr
    assert expected in result.stderr
    assert result.stderr.startswith("Error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_syntax_error_position(invoke: Invoke) -> None:
    """A bad literal should be pointed at with a caret under the expression."""
    result = invoke("run", "choose(6, x)")
    lines = result.stderr.splitlines()
    assert lines[1] == "  choose(6, x)"
    assert lines[2] == "            ^"


def test_missing_taskfile(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No taskfile here or above should exit 2 and say how to fix it."""
    from checkpoint.cli import cli

    result = runner.invoke(cli, ["ls"])
    assert result.exit_code == 2
    assert "No taskfile.py in" in result.stderr and "-f/--file" in result.stderr
    result = runner.invoke(cli, ["-f", "nope.py", "run"])
    assert result.exit_code == 2
    assert "Taskfile 'nope.py' not found" in result.stderr


def test_taskfile_raising_shows_its_traceback(invoke: Invoke, project: Path) -> None:
    """A taskfile raising at import should show its own traceback (no importlib/checkpoint frames)."""
    project.write_text("def helper():\n    raise RuntimeError('no database')\n\nhelper()\n")
    result = invoke("ls")
    assert result.exit_code == 2
    assert f"The taskfile {project} raised an error while being imported:" in result.stderr
    assert f'File "{project}", line 4, in <module>' in result.stderr
    assert "RuntimeError: no database" in result.stderr
    assert "importlib" not in result.stderr and "frozen" not in result.stderr
    assert "checkpoint/taskfile.py" not in result.stderr


def test_taskfile_syntax_error(invoke: Invoke, project: Path) -> None:
    """A taskfile with a syntax error should exit 2 and point at the line."""
    project.write_text("x = (\n")
    result = invoke("ls")
    assert result.exit_code == 2
    assert "SyntaxError" in result.stderr and "taskfile.py" in result.stderr


def test_outer_function_raising(invoke: Invoke) -> None:
    """A task raising while declaring prerequisites (its arguments rejected, before anything
    ran) should exit 2, bad input, with the user's traceback."""
    result = invoke("run", "choose(3, 5)")
    assert result.exit_code == 2
    assert "ValueError: choose(3, 5) is undefined" in result.stderr
    assert "taskfile.py" in result.stderr
    assert "checkpoint/graph.py" not in result.stderr


def test_nested_literals(invoke: Invoke) -> None:
    """Nested lists and dicts should reach the task as written."""
    result = invoke("run", "--executor", "inline", "scale([1, 2.5], opts={'a': {'b': [1]}})")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "[1, 2.5, 'a']\n"


def test_unknown_command(invoke: Invoke) -> None:
    """An unknown command should exit 2 with click's usage message."""
    result = invoke("rnu")
    assert result.exit_code == 2
    assert "No such command 'rnu'" in result.stderr


@pytest.mark.parametrize(
    "target",
    ["choose(__import__('os').system('touch pwned'), 1)", "greet(name=open('pwned', 'w').name)",
     "choose(6, 3) if open('pwned', 'w') else 0"],
    ids=["call-in-argument", "call-in-keyword", "expression"],
)
def test_target_code_never_runs(invoke: Invoke, project: Path, target: str) -> None:
    """A target is parsed as literals only: code in it should be refused (exit 2), never run."""
    for command in ("run", "ls", "graph"):
        result = invoke(command, target)
        assert result.exit_code == 2, result.stderr
        assert "Traceback" not in result.stderr
    assert not (project.parent / "pwned").exists()


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("where", ["afile", "afile/sub"])
def test_a_cache_dir_that_is_a_file_is_bad_input_however_given(
    runner, project: Path, monkeypatch: pytest.MonkeyPatch, how: str, where: str  # type: ignore[no-untyped-def]
) -> None:
    """--cache-dir and CP_CACHE_DIR naming a file (or a path under one) both exit 2 with one
    message naming where the path came from."""
    from checkpoint.cli import cli

    (project.parent / "afile").write_text("data")
    if how == "env":
        monkeypatch.setenv("CP_CACHE_DIR", where)
        args = ["run", "choose(2, 1)"]
    else:
        args = ["--cache-dir", where, "run", "choose(2, 1)"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output
    given = "--cache-dir" if how == "option" else "CP_CACHE_DIR"
    what = "is a file" if where == "afile" else f"is inside the file {project.parent / 'afile'}"
    assert result.stderr == (f"Error: The cache directory {project.parent / where} {what}: a "
                             f"cache needs a directory; change {given}.\n")


def test_no_command_exits_with_a_bare_number() -> None:
    """Exit codes come from checkpoint.errors.ExitCode only: no command module passes a
    literal number to Exit() or sys.exit()."""
    import ast

    import checkpoint

    root = Path(checkpoint.__file__).parent
    literal = []
    for path in [*sorted((root / "cli").glob("*.py")), root / "__main__.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and node.args
                    and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("Exit", "exit")
                    and isinstance(node.args[0], ast.Constant)):
                literal.append(f"{path.name}:{node.lineno}")
    assert not literal


def test_the_docs_exit_code_table_is_the_codes_table() -> None:
    """docs/cli.md's exit-code table lists exactly the codes of ExitCode, by name."""
    import re

    from checkpoint.errors import ExitCode

    page = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", page, flags=re.M)
    assert [(int(code), name) for code, name in rows] == [(int(c), c.name) for c in ExitCode]


def test_log_of_a_task_that_never_ran_is_a_failure_as_documented(invoke: Invoke) -> None:
    """Nothing recorded for what was asked exits 1, which the table documents as such."""
    from checkpoint.errors import ExitCode

    result = invoke("log", "choose(10, 5)")
    assert result.exit_code == ExitCode.FAILED
    assert "No run of choose(10, 5)" in result.stderr


@pytest.mark.parametrize("target", ["", "   "])
def test_an_empty_target_says_so(invoke: Invoke, target: str) -> None:
    """`run ''` names the problem (not 'invalid syntax (invalid syntax)') and what to type."""
    result = invoke("run", target)
    assert result.exit_code == 2
    assert result.stderr == (f"Error: Bad target {target!r}: it is empty. Name a task, as in main "
                             "or 'choose(6, 3)'; run 'checkpoint ls' to list tasks.\n")


def test_the_full_name_the_display_shows_is_a_target(invoke: Invoke) -> None:
    """`run taskfile.main` (the family's full name) is main; a family the taskfile imports
    goes by its own module's name; an unknown full name gets a hint with the short name."""
    result = invoke("run", "--executor", "inline", "taskfile.main")
    assert (result.exit_code, result.stdout) == (0, "[1, 4, 6, 4, 1]\n")
    result = invoke("run", "--executor", "inline", "helper.double(4)", "taskfile.choose(4, 2)")
    assert (result.exit_code, result.stdout) == (0, "8\n6\n")
    result = invoke("run", "taskfile.mian")
    assert result.exit_code == 2
    assert "Unknown task 'taskfile.mian' in " in result.stderr
    assert "Did you mean 'main'?" in result.stderr


def _raises_outside_a_task() -> None:
    raise RuntimeError("not while building")


def test_code_outside_checkpoint_raising_after_the_dag_was_built_is_not_called_building(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only an exception that came through an outer function (or a class task's __init__)
    is "task code raised while the DAG was being built" (exit 2); one from other code outside
    checkpoint says what it is, with its traceback, and exits 1."""
    from checkpoint.cli import show_error

    try:
        _raises_outside_a_task()
    except RuntimeError as exc:
        code = show_error(exc)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "task code raised" not in err and "Internal error" not in err
    assert err.startswith("Error: code outside checkpoint raised (not in a task, and not while the "
                          "DAG was being built):\n")
    assert "in _raises_outside_a_task" in err and "RuntimeError: not while building" in err
