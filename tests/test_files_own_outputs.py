"""A task whose pattern or directory input covers its own declared outputs (it reads
``out/*.csv`` and writes ``out/summary.csv``): its outputs are left out of that input, as make
drops a circular dependency, so the task is fresh after it ran and never reads what it wrote
last time."""

from __future__ import annotations

from pathlib import Path

import pytest

import checkpoint
from checkpoint import File, Product, TaskDefinitionError, requires, task
from checkpoint.graph import expand


def _names(paths: list[Path]) -> list[str]:
    return [str(p) for p in paths]


@task
def summarize(pattern: str, output: str):
    """Count the files the pattern matches; write the count to the output."""

    @requires(File(pattern))
    @requires(Product(output))
    def __(paths: list[Path], out: Path) -> list[str]:
        target = out / "count.txt" if output.endswith("/") else out
        target.write_text(str(len(paths)))
        return _names(paths)

    return __


@pytest.mark.parametrize(
    ("pattern", "output", "written"),
    [
        ("out/*.csv", "out/summary.csv", "out/summary.csv"),  # matches its own output file
        ("**/*.csv", "res/", "res/count.txt"),  # reaches into its own output directory
        ("**/*.txt", "res/", "res/count.txt"),  # ... and matches what it writes there
    ],
)
def test_a_pattern_covering_its_own_outputs_leaves_them_out(
    pattern: str, output: str, written: str
) -> None:
    """The task runs once, then is fresh; it never receives its own outputs; an edit of a
    real input still re-runs it."""
    Path("out").mkdir()
    Path("out/a.csv").write_text("a")
    Path("out/a.txt").write_text("a")
    if output == "out/summary.csv":
        Path("out/summary.csv").write_text("left by hand")  # before the first run too
    first = summarize(pattern, output).run(executor="inline")
    assert first == (["out/a.txt"] if pattern.endswith("txt") else ["out/a.csv"])
    assert Path(written).exists()
    assert not checkpoint.run([summarize(pattern, output)], executor="inline").ran
    assert not checkpoint.run([summarize(pattern, output)], executor="inline").ran
    Path("out/b.csv").write_text("b")
    Path("out/b.txt").write_text("b")
    again = summarize(pattern, output).run(executor="inline")
    assert written not in again and len(again) == 2
    Path(written).write_text("edited by hand")  # an output changed: its task runs again
    assert checkpoint.run([summarize(pattern, output)], executor="inline").ran


def test_a_directory_input_holding_its_own_output_leaves_it_out() -> None:
    """File("out") with Product("out/summary.txt"): fresh after the run; another file in
    out/ still counts."""

    @task
    def index():
        @requires(File("out"))
        @requires(Product("out/summary.txt"))
        def __(folder: Path, out: Path) -> list[str]:
            names = sorted(p.name for p in folder.iterdir())
            out.write_text("\n".join(names))
            return names

        return __

    Path("out").mkdir()
    Path("out/a.csv").write_text("a")
    assert index().run(executor="inline") == ["a.csv"]
    assert not checkpoint.run([index()], executor="inline").ran
    Path("out/b.csv").write_text("b")
    assert index().run(executor="inline") == ["a.csv", "b.csv"]
    assert not checkpoint.run([index()], executor="inline").ran


def test_reading_exactly_its_own_output_is_still_refused() -> None:
    """Naming its own output as an input, or a pattern wholly inside its own output
    directory, can only read what is removed before the task runs: refused at planning."""
    with pytest.raises(TaskDefinitionError, match="both as an input"):
        expand([summarize("out/x.csv", "out/x.csv")])
    with pytest.raises(TaskDefinitionError, match="both as an input"):
        expand([summarize("res/*.csv", "res/")])


@task
def clean_into(source: str, output: str):
    """Read a directory (or pattern); write an output in a folder that does not exist yet."""

    @requires(File(source))
    @requires(Product(output))
    def __(src: Path | list[Path], out: Path) -> list[str]:
        out.write_text("x")
        return sorted(str(p) for p in src) if isinstance(src, list) else []

    return __


@pytest.mark.parametrize(
    ("source", "output", "holder"),
    [
        ("data", "data/clean/x.csv", "data/clean"),
        ("data", "data/clean/deep/x.csv", "data/clean"),
        (".", "out/r.txt", "out"),
        ("data/*", "data/clean/x.csv", "data/clean"),
        ("data/**", "data/clean/x.csv", "data/clean"),
    ],
)
def test_the_folders_made_for_its_own_outputs_are_not_a_change_of_its_input(
    source: str, output: str, holder: str
) -> None:
    """The folder created to hold the task's output (absent before it ran) is left out of
    the input that holds it; a file or a folder a user adds in it still counts."""
    Path("data").mkdir()
    Path("data/raw.csv").write_text("1")
    assert clean_into(source, output).run(executor="inline") is not None
    assert Path(output).exists()
    assert not checkpoint.run([clean_into(source, output)], executor="inline").ran
    again = checkpoint.run([clean_into(source, output)], executor="inline", force=True)
    assert holder not in again.values[clean_into(source, output).id]  # (nor received)
    Path(holder, "sub").mkdir()  # an empty folder of the user's
    assert checkpoint.run([clean_into(source, output)], executor="inline").ran
    assert not checkpoint.run([clean_into(source, output)], executor="inline").ran
    Path(holder, "added.csv").write_text("2")
    assert checkpoint.run([clean_into(source, output)], executor="inline").ran


def test_the_folder_made_for_another_tasks_output_is_not_a_change_of_a_reader() -> None:
    """A reader of data/ whose producer writes data/clean/x.csv (the folder made then) is
    fresh after the run."""

    @task
    def report():
        @requires(File("data"))
        @requires(clean_into("data/raw.csv", "data/clean/x.csv"))
        def __(folder: Path, _: object) -> int:
            return len(list(folder.rglob("*")))

        return __

    Path("data").mkdir()
    Path("data/raw.csv").write_text("1")
    checkpoint.run([report()], executor="inline")
    assert not checkpoint.run([report()], executor="inline").ran
