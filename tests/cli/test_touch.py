"""`checkpoint touch`: accept current code and stored results without running."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Invoke, edit, ran

INLINE = ("--executor", "inline")


def test_touch_family_after_refactor(invoke: Invoke, project: Path) -> None:
    """touch NAME should accept the family's new code for every entry; nothing re-runs."""
    invoke("run", *INLINE, "main")
    edit(project, "return a + b", "return b + a")
    result = invoke("touch", "choose")
    assert result.exit_code == 0
    assert "Touched 14 entries; 0 already fresh." in result.stderr
    assert ran(invoke, "main") == (0, 15)
    assert json.loads(invoke("touch", "--json", "choose").stdout) == {
        "touched": 0, "fresh": 14, "missing": [], "output_missing": [], "accepted": []}


def test_touch_target_dag(invoke: Invoke, project: Path) -> None:
    """touch TARGET should accept its whole DAG, including prerequisites recomputed since."""
    invoke("run", *INLINE, "choose(3, 1)")
    invoke("run", *INLINE, "--force", "choose(1, 0)")
    edit(project, "return a + b", "return b + a")
    doc = json.loads(invoke("touch", "--json", "choose(3, 1)").stdout)
    assert doc["touched"] == 5 and doc["missing"] == []
    assert "Nothing to run" in invoke("run", "-n", "choose(3, 1)").stderr
    assert invoke("run", *INLINE, "choose(3, 1)").stdout == "3\n"


def test_touch_keeps_values(invoke: Invoke, project: Path) -> None:
    """Touched entries should keep their stored values (inline and large payloads)."""
    invoke("run", *INLINE, "big(100000)", "choose(2, 1)")
    edit(project, 'return b"x" * size', 'return b"x" * int(size)')
    edit(project, "return a + b", "return b + a")
    assert "Touched 4 entries" in invoke("touch", "big", "choose").stderr
    assert invoke("cache", "show", "choose(2, 1)").stdout.strip() == "2"
    assert invoke("run", *INLINE, "--json", "big(100000)").stdout.count("x") >= 100000
    assert ran(invoke, "big(100000)", "choose(2, 1)") == (0, 4)


def test_touch_name_without_arguments_is_a_target(invoke: Invoke) -> None:
    """touch main (no parameters) should touch main's DAG and name what is missing."""
    invoke("run", *INLINE, "main")
    invoke("clear", "choose(1, 0)")
    result = invoke("touch", "main")
    assert result.exit_code == 0
    assert "1 task has no stored result and still has to run: choose(1, 0)." in result.stderr
    assert "Touched" in result.stderr


def test_touch_unknown(invoke: Invoke) -> None:
    """touch of an unknown name should exit 2 with a suggestion."""
    result = invoke("touch", "chooze")
    assert result.exit_code == 2
    assert "Did you mean 'choose'?" in result.stderr


PRODUCT_TASKFILE = """
from pathlib import Path
from checkpoint import Product, requires, task


@task
def render():
    @requires(Product("out.txt"))
    def __(path: Path) -> int:
        path.write_text("hello")
        return 1
    return __


@task
def main():
    @requires(render())
    def __(n: int) -> int:
        return n + 1
    return __
"""


def test_touch_names_tasks_whose_declared_output_is_missing(invoke: Invoke, project: Path) -> None:
    """A deleted Product stays stale after touch: touch should say so, not only "Touched"."""
    project.write_text(PRODUCT_TASKFILE)
    invoke("run", *INLINE, "main")
    (project.parent / "out.txt").unlink()
    result = invoke("touch", "main")
    assert result.exit_code == 0
    assert "1 task still has to run: a declared output is missing: render()." in result.stderr
    doc = json.loads(invoke("touch", "--json", "main").stdout)
    assert doc["output_missing"] == ["render()"]
    assert ran(invoke, "main") == (1, 1)  # render() ran again; main() kept (same value)
    assert (project.parent / "out.txt").read_text() == "hello"


INPUT_TASKFILE = """
from pathlib import Path
from checkpoint import File, requires, task

@task
def main():
    @requires(File("data.txt"))
    def __(path: Path) -> int:
        return int(path.read_text()) * 10
    return __
"""


def test_touch_names_the_input_files_it_accepts(invoke: Invoke, project: Path) -> None:
    """A refactor and, unnoticed, an edited data file: touch accepts both, and says which
    files it accepted as they are (a make user's `touch` is about code, not data)."""
    (project.parent / "data.txt").write_text("1")
    project.write_text(INPUT_TASKFILE)
    invoke("run", *INLINE, "main")
    edit(project, "* 10", "*10")
    (project.parent / "data.txt").write_text("2")
    result = invoke("touch", "main")
    assert result.exit_code == 0
    assert "Accepted as they are now: main() (input file data.txt changed)." in result.stderr
    assert "checkpoint clear" in result.stderr
    edit(project, "*10", "* 10")
    (project.parent / "data.txt").write_text("3")
    doc = json.loads(invoke("touch", "--json", "main").stdout)
    assert doc["accepted"] == [{"task": "main()", "changes": ["input file data.txt changed"]}]
