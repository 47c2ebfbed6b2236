"""Early cutoff: a prerequisite that re-runs and gives byte for byte the same value as before
keeps its stamp, so the tasks computed from it are kept instead of re-run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint.cli import cli

SOURCE = """
from checkpoint import task, requires

@task
def split():
    def __() -> list[int]:
        return {body}
    return __

@task
def part(i: int):
    @requires(split())
    def __(xs: list[int]) -> int:
        return xs[i] * {factor}
    return __

@task
def main():
    @requires([part(i) for i in range(5)])
    def __(parts: list[int]) -> int:
        return sum(parts)
    return __
"""


@pytest.fixture
def load(make_module: Callable[[str, str], ModuleType]) -> Callable[..., ModuleType]:
    def load(body: str = "list(range(10))", factor: int = 1) -> ModuleType:
        return make_module("cutoff", SOURCE.format(body=body, factor=factor))

    return load


def names(tasks: list[checkpoint.Task]) -> list[str]:  # type: ignore[type-arg]
    return sorted(t.expression() for t in tasks)


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_cleared_deterministic_root_reruns_alone(load: Callable[..., ModuleType], executor: str) -> None:
    mod = load()
    assert checkpoint.run([mod.main()], executor=executor).values[mod.main().id] == 10
    mod.split().clear()
    result = checkpoint.run([mod.main()], executor=executor)
    assert names(result.ran) == ["split()"]
    assert len(result.kept) == 6
    assert result.values[mod.main().id] == 10
    assert not checkpoint.run([mod.main()], executor="inline").ran


def test_new_code_same_value_keeps_dependents(load: Callable[..., ModuleType]) -> None:
    mod = load()
    checkpoint.run([mod.main()], executor="inline")
    mod = load(body="[i for i in range(10)]")
    result = checkpoint.run([mod.main()], executor="inline")
    assert names(result.ran) == ["split()"]
    assert len(result.kept) == 6


def test_a_changed_value_reruns_dependents(load: Callable[..., ModuleType]) -> None:
    mod = load()
    checkpoint.run([mod.main()], executor="inline")
    mod = load(body="list(range(1, 11))")
    result = checkpoint.run([mod.main()], executor="inline")
    assert len(result.ran) == 7 and not result.kept
    assert result.values[mod.main().id] == 15


def test_cutoff_stops_where_values_stop_changing(load: Callable[..., ModuleType]) -> None:
    """part(i) multiplies by 0: a new split() changes no part, so main is kept."""
    mod = load(factor=0)
    checkpoint.run([mod.main()], executor="inline")
    mod = load(body="list(range(1, 11))", factor=0)
    result = checkpoint.run([mod.main()], executor="inline")
    assert names(result.ran) == ["part(0)", "part(1)", "part(2)", "part(3)", "part(4)", "split()"]
    assert names(result.kept) == ["main()"]


def test_run_summary_says_what_was_kept(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "taskfile.py").write_text(SOURCE.format(body="list(range(10))", factor=1))
    assert runner.invoke(cli, ["run", "main"]).exit_code == 0
    assert runner.invoke(cli, ["clear", "-y", "split"]).exit_code == 0
    out = runner.invoke(cli, ["run", "main"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "10"
    assert "Kept 6 planned tasks" in out.stderr


DIRECTORY = """
import os
from pathlib import Path
from checkpoint import task, requires, TaskDirectory

@task
def make():
    @requires(TaskDirectory())
    def __(path: Path) -> str:
        (path / "data.txt").write_text(os.environ.get("CONTENT", "a"))
        return str(path / "data.txt")
    return __

@task
def read():
    @requires(make())
    def __(p: str) -> str:
        return Path(p).read_text()
    return __
"""


def test_a_task_with_a_data_directory_never_cuts_off(
    make_module: Callable[[str, str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its value (a path) says nothing of what the directory holds: dependents re-run."""
    mod = make_module("withdir", DIRECTORY)
    assert checkpoint.run([mod.read()], executor="inline").values[mod.read().id] == "a"
    monkeypatch.setenv("CONTENT", "b")
    mod.make().clear()
    result = checkpoint.run([mod.read()], executor="inline")
    assert result.values[mod.read().id] == "b" and not result.kept


@pytest.mark.parametrize("body", ["list(range(10)) + [0] * 30_000", "bytes(range(10)) + bytes(200_000)"],
                         ids=["pickled", "streamed"])
@pytest.mark.parametrize("executor", ["inline", "process"])
def test_cleared_large_value_reruns_alone(load: Callable[..., ModuleType], executor: str, body: str) -> None:
    """A large value (written to its own file by the worker: pickled, or streamed) that is
    cleared and recomputed to the same bytes should have the same stamp, so its dependents
    are kept, as for a small one."""
    mod = load(body=body)
    checkpoint.run([mod.main()], executor=executor)
    mod.split().clear()
    result = checkpoint.run([mod.main()], executor=executor)
    assert names(result.ran) == ["split()"]
    assert len(result.kept) == 6
