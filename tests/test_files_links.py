"""Declared files matched through symbolic links: an output declared through a linked
directory (``out -> build``) is the same file as under its real path, for the rule "a file
has one producer" and for making its producer a prerequisite of its readers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import checkpoint
from checkpoint import File, Product, TaskDefinitionError, requires, task
from checkpoint.graph import expand


@task
def write(path: str, text: str):
    @requires(Product(path))
    def __(out: Path) -> str:
        target = out / "x.txt" if path.endswith("/") else out
        target.write_text(text)
        return text

    return __


@task
def read(path: str):
    @requires(File(path))
    def __(p: Path | list[Path]) -> str:
        if isinstance(p, list):
            return "".join(q.read_text() for q in p)
        return (p / "x.txt").read_text() if p.is_dir() else p.read_text()

    return __


@pytest.fixture
def linked() -> None:
    Path("build").mkdir()
    os.symlink("build", "out")


@pytest.mark.usefixtures("linked")
@pytest.mark.parametrize(
    ("first", "second"),
    [("out/x.txt", "build/x.txt"), ("build/x.txt", "./out/x.txt"), ("out/", "build/x.txt")],
)
def test_two_producers_of_one_file_through_a_link_are_refused(first: str, second: str) -> None:
    with pytest.raises(TaskDefinitionError, match="one producer") as info:
        expand([write(first, "A"), write(second, "B")])
    assert "symbolic link" in str(info.value)


@pytest.mark.usefixtures("linked")
@pytest.mark.parametrize(
    ("output", "input"),
    [
        ("out/x.txt", "build/x.txt"),
        ("build/x.txt", "out/x.txt"),
        ("build/x.txt", "out"),  # a directory input that is the link
        ("out/x.txt", "build"),
        ("out/", "build/x.txt"),  # inside a product directory declared through the link
        ("build/x.txt", "out/*.txt"),  # a pattern under the link
    ],
)
def test_a_reader_through_a_link_depends_on_the_producer(output: str, input: str) -> None:
    nodes = expand([read(input), write(output, "A")])
    assert write(output, "A").id in nodes[read(input).id].deps
    targets = [read(input), write(output, "A")]
    assert checkpoint.run(targets, executor="inline").values[read(input).id] == "A"
    assert not checkpoint.run([read(input), write(output, "A")], executor="inline").ran


@pytest.mark.usefixtures("linked")
def test_a_task_reading_its_own_output_through_a_link_is_refused() -> None:
    @task
    def both():
        @requires(File("build/x.txt"))
        @requires(Product("out/x.txt"))
        def __(src: Path, out: Path) -> None:
            out.write_text("x")

        return __

    with pytest.raises(TaskDefinitionError, match="both as an input"):
        expand([both()])


def test_without_links_the_keys_are_the_paths_as_given() -> None:
    """No link: nothing changes (producers are found as before)."""
    Path("build").mkdir()
    nodes = expand([read("build/x.txt"), write("build/x.txt", "A")])
    assert write("build/x.txt", "A").id in nodes[read("build/x.txt").id].deps
