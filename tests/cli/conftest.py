"""Fixtures of the CLI tests: a project directory with a taskfile, and an invoke helper."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from checkpoint.cli import cli

TASKFILE = '''
"""A small taskfile for the CLI tests."""
from typing import Optional

from checkpoint import TaskDirectory, requires, task

import helper


@task
def choose(n: int, k: int):
    """Compute n choose k from Pascal's rule.

    More text that ls does not show.
    """
    if 0 < k < n:

        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(a, b):
            return a + b

    elif k == 0 or k == n:

        def __():
            return 1

    else:
        raise ValueError(f"choose({n}, {k}) is undefined: need 0 <= k <= n")
    return __


@task
def main():
    """A row of Pascal's triangle."""

    @requires([choose(4, k) for k in range(5)])
    def __(row):
        return row

    return __


@task
def greet(name: str = "world", excited: bool = False):
    def __():
        return f"hello {name}" + ("!" if excited else "")

    return __


@task
def chatty():
    def __():
        print("chatting on stdout")
        return "said"

    return __


@task
def nothing():
    def __():
        return None

    return __


@task
def scale(values: list, factor: Optional[float] = None, opts: dict = {}):
    def __():
        return [v * (factor or 1) for v in values] + sorted(opts)

    return __


@task
def boom(x: int):
    """Fails when x is odd."""

    def __():
        if x % 2:
            raise RuntimeError(f"boom {x}")
        return x

    return __


@task
def booms():
    @requires([boom(1), boom(2)])
    def __(values):
        return values

    return __


@task(queue="disk")
def blob(size: int):
    @requires(TaskDirectory())
    def __(path):
        (path / "blob.bin").write_bytes(b"x" * size)
        return str(path)

    return __


@task
def big(size: int):
    def __():
        return b"x" * size

    return __


double = helper.double
'''

HELPER = '''
from checkpoint import task


@task
def double(x: int):
    """Twice x (defined in a sibling module)."""
    def __():
        return 2 * x

    return __
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory (the cwd) with taskfile.py and a sibling helper module; returns the taskfile."""
    (tmp_path / "helper.py").write_text(textwrap.dedent(HELPER))
    path = tmp_path / "taskfile.py"
    path.write_text(textwrap.dedent(TASKFILE))
    return path


Invoke = Callable[..., Result]


@pytest.fixture
def invoke(runner: CliRunner, project: Path) -> Invoke:
    """Run ``checkpoint ARGS...`` through CliRunner (in-process, inline executor by default)."""

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def edit(path: Path, old: str, new: str) -> None:
    """Replace text in a file (and defeat the one-second bytecode-cache mtime resolution)."""
    import os

    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 2))


def ran(invoke: Invoke, *args: str) -> tuple[int, int]:
    """Run ``checkpoint run --json ARGS`` (inline) and return (tasks ran, tasks reused)."""
    import json

    result = invoke("run", "--executor", "inline", "--json", *args)
    doc = json.loads(result.stdout)
    return doc["ran"], doc["reused"]
