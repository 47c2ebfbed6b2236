"""Early cutoff: a prerequisite that re-runs and gives byte for byte the same value as before
keeps its stamp, so the tasks computed from it are kept instead of re-run."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint.cli import cli

SOURCE = """
from pathlib import Path
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


def test_new_code_same_value_reruns_dependents(load: Callable[..., ModuleType]) -> None:
    """A value may carry code by name (an object of a project class), so new code upstream
    is never cut off, even when the bytes of its value are the same."""
    mod = load()
    checkpoint.run([mod.main()], executor="inline")
    mod = load(body="[i for i in range(10)]")
    result = checkpoint.run([mod.main()], executor="inline")
    assert len(result.ran) == 7 and not result.kept


def test_a_changed_value_reruns_dependents(load: Callable[..., ModuleType]) -> None:
    mod = load()
    checkpoint.run([mod.main()], executor="inline")
    mod = load(body="list(range(1, 11))")
    result = checkpoint.run([mod.main()], executor="inline")
    assert len(result.ran) == 7 and not result.kept
    assert result.values[mod.main().id] == 15


def test_cutoff_stops_where_values_stop_changing(load: Callable[..., ModuleType]) -> None:
    """part(i) multiplies by 0: a new value of split() changes no part, so main is kept."""
    Path("xs.txt").write_text("0 1 2 3 4")
    mod = load(body="[int(v) for v in Path('xs.txt').read_text().split()]", factor=0)
    checkpoint.run([mod.main()], executor="inline")
    Path("xs.txt").write_text("5 6 7 8 9")
    mod.split().clear()
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


MODELS = """
class Linear:
    def __init__(self, w):
        self.w = w

    def predict(self, x):
        return self.w * x{plus}
"""

ML = """
from checkpoint import task, requires
from models import Linear

@task
def train():
    def __() -> Linear:
        return Linear(w=2.0)
    return __

@task
def best():
    @requires([train()])
    def __(models):
        return models[0]        # passes the object on: its code never names Linear
    return __

@task
def evaluate(via_best: bool):
    @requires(best() if via_best else train())
    def __(model) -> float:
        return model.predict(10.0)
    return __
"""


@pytest.mark.parametrize("via_best", [False, True])
def test_an_edited_method_of_a_returned_object_reruns_dependents(
    make_module: Callable[[str, str], ModuleType], via_best: bool
) -> None:
    """A value pickles its project class by name: the same bytes after an edit of the
    class's method. Its dependents run again (directly and through a task that passes the
    object on), instead of being kept with the old method's result."""
    make_module("models", MODELS.format(plus=""))
    mod = make_module("ml", ML)
    assert checkpoint.run([mod.evaluate(via_best)], executor="inline").values[
        mod.evaluate(via_best).id] == 20.0
    make_module("models", MODELS.format(plus=" + 1"))
    mod = make_module("ml", ML)
    result = checkpoint.run([mod.evaluate(via_best)], executor="inline")
    assert result.values[mod.evaluate(via_best).id] == 21.0
    assert not result.kept
    assert not checkpoint.run([mod.evaluate(via_best)], executor="inline").ran


PASSTHROUGH = """
import os
from pathlib import Path
from checkpoint import task, requires, TaskDirectory, Product

@task
def make():
    @requires(TaskDirectory())
    def __(path: Path) -> str:
        (path / "data.txt").write_text(os.environ.get("CONTENT", "a"))
        return str(path / "data.txt")
    return __

@task
def write():
    @requires(Product("out/data.txt"))
    def __(out: Path) -> str:
        out.write_text(os.environ.get("CONTENT", "a"))
        return str(out)
    return __

@task
def pick(kind: str):
    @requires(make() if kind == "dir" else write())
    def __(p: str) -> str:
        return p              # passes the path on: the same string, new content
    return __

@task
def forward(kind: str):
    @requires(pick(kind))
    def __(p: str) -> str:
        return p
    return __

@task
def read(kind: str):
    @requires(forward(kind))
    def __(p: str) -> str:
        return Path(p).read_text()
    return __
"""


@pytest.mark.parametrize("kind", ["dir", "product"])
def test_a_path_passed_on_from_a_data_directory_or_product_is_never_cut_off(
    make_module: Callable[[str, str], ModuleType], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A task that returns a path into another task's data directory (or its Product) gives
    the same string when the files change: what reads the files downstream runs again."""
    mod = make_module("passing", PASSTHROUGH)
    assert checkpoint.run([mod.read(kind)], executor="inline").values[mod.read(kind).id] == "a"
    monkeypatch.setenv("CONTENT", "b")
    (mod.make() if kind == "dir" else mod.write()).clear()
    result = checkpoint.run([mod.read(kind)], executor="inline")
    assert result.values[mod.read(kind).id] == "b" and not result.kept
    # A cleared task between them that gives the same path is cut off as before.
    mod.forward(kind).clear()
    result = checkpoint.run([mod.read(kind)], executor="inline")
    assert names(result.ran) == [f"forward({kind!r})"] and names(result.kept) == [f"read({kind!r})"]


LENGTH = DIRECTORY + """
@task
def length():
    @requires(make())
    def __(p: str) -> int:
        return len(Path(p).read_text())
    return __

@task
def report():
    @requires(length())
    def __(n: int) -> str:
        return f"{n} bytes"
    return __
"""


def test_a_number_read_from_a_data_directory_is_cut_off(
    make_module: Callable[[str, str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value made of numbers alone cannot name the files it came from: when it comes out
    the same, what depends on it is kept."""
    mod = make_module("counting", LENGTH)
    assert checkpoint.run([mod.report()], executor="inline").values[mod.report().id] == "1 bytes"
    monkeypatch.setenv("CONTENT", "b")
    mod.make().clear()
    result = checkpoint.run([mod.report()], executor="inline")
    assert names(result.ran) == ["length()", "make()"] and names(result.kept) == ["report()"]


def test_a_set_has_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    """A set of text iterates in an order set by the process's hash seed: its pickle must not
    follow it, or the same value recomputed in another process gets another stamp and its
    dependents always re-run (adv2 repro 09). Sets whose elements sort are stored sorted;
    they load as the same sets."""
    import subprocess
    import sys

    script = (
        "import sys, hashlib\n"
        "from checkpoint._codec import encode_value, decode_payload\n"
        "value = {'words': {f'w{i}' for i in range(50)}, 'ids': frozenset({3, 1, 2}),\n"
        "         'paths': {'/c/checkpoint/f/data/a', '/c/checkpoint/f/data/b'}}\n"
        "payload = encode_value(value, 0, '/c/checkpoint')\n"
        "assert decode_payload(payload, False, '/c/checkpoint') == value\n"
        "print(hashlib.sha256(payload).hexdigest())\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(digests) == 1
