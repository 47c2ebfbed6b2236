"""`checkpoint why`: reasons diffed against the store, with a source diff for code changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Invoke, edit

INLINE = ("--executor", "inline")


def test_fresh(invoke: Invoke) -> None:
    """why of a fresh target should say nothing would run."""
    invoke("run", *INLINE, "choose(2, 1)")
    result = invoke("why", "choose(2, 1)")
    assert result.exit_code == 0
    assert "choose(2, 1) is fresh" in result.stdout


def test_missing_shows_closest_arguments(invoke: Invoke) -> None:
    """A missing task should be compared with the stored entries of its family, closest first."""
    invoke("run", *INLINE, "choose(3, 1)")
    result = invoke("why", "choose(4, 1)")
    lines = result.stdout.splitlines()
    assert lines[0] == "choose(4, 1) would run: missing"
    assert lines[2].strip() == "choose(3, 1)  (n: 3 -> 4)"
    result = invoke("why", "greet('a')")
    assert "No stored result for this family yet." in result.stdout


def test_code_change_shows_source_diff(invoke: Invoke, project: Path) -> None:
    """A code change should show a unified diff of the normalized source, once per family."""
    invoke("run", *INLINE, "choose(3, 1)")
    edit(project, "return a + b", "return b + a  # a comment does not count")
    result = invoke("why", "choose(3, 1)")
    out = result.stdout
    assert out.startswith("choose(3, 1) would run: code changed\n")
    assert "-            return a + b" in out
    assert "+            return b + a" in out
    assert "a comment" not in out
    assert out.count("--- stored") == 2  # the target, then its family's group
    assert "choose: code changed, for 4 tasks" in out


def test_cosmetic_change_is_fresh(invoke: Invoke, project: Path) -> None:
    """Comments and docstrings should not count as code changes."""
    invoke("run", *INLINE, "choose(2, 1)")
    edit(project, "return a + b", "return a + b  # same")
    assert "is fresh" in invoke("why", "choose(2, 1)").stdout


def test_upstream_changed(invoke: Invoke, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prerequisite recomputed to another value after the entry was stored should be named
    (recomputed to the same value, it changes nothing: see test_early_cutoff)."""
    with project.open("a") as f:
        f.write(UNSTABLE)
    invoke("run", *INLINE, "top()")
    monkeypatch.setenv("BASE_VALUE", "2")
    invoke("run", *INLINE, "--force", "base()")
    result = invoke("why", "top()")
    assert "top() would run: upstream changed" in result.stdout
    assert "prerequisite base() was recomputed after this result was stored" in result.stdout
    invoke("run", *INLINE, "top()")
    invoke("run", *INLINE, "--force", "base()")  # the same value again: top() stays fresh
    assert "top() is fresh" in invoke("why", "top()").stdout


UNSTABLE = """

@task
def base():
    def __():
        import os
        return os.environ.get("BASE_VALUE", "1")
    return __


@task
def top():
    @requires(base())
    def __(b):
        return b
    return __
"""


PAIRED = """

@task
def paired():
    import os
    first, second = os.environ.get("PAIR_ORDER", "1,2").split(",")
    @requires({"first": choose(2, int(first)), "second": choose(2, int(second))})
    def __(values):
        return values
    return __
"""


def test_rearranged_prerequisites(invoke: Invoke, project: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same prerequisites in other places of @requires (here, swapped dict values) should
    be named as such."""
    with project.open("a") as f:
        f.write(PAIRED)
    invoke("run", *INLINE, "paired()")
    monkeypatch.setenv("PAIR_ORDER", "2,1")
    result = invoke("why", "paired()")
    assert "paired() would run: upstream changed" in result.stdout
    assert "the prerequisites are arranged differently from the stored result's" in result.stdout


def test_upstream_rerun_and_json(invoke: Invoke) -> None:
    """A task whose prerequisite runs should name it; --json should list every task to run."""
    invoke("run", *INLINE, "choose(2, 1)")
    invoke("clear", "choose(1, 1)")
    result = invoke("why", "choose(2, 1)")
    assert "prerequisite choose(1, 1) will run (missing)" in result.stdout
    assert "choose(1, 1) would run: missing" in result.stdout
    doc = json.loads(invoke("why", "--json", "choose(2, 1)").stdout)
    assert [(t["task"], t["reason"]) for t in doc["tasks"]] == [
        ("choose(1, 1)", "missing"), ("choose(2, 1)", "upstream re-run")]


def test_no_code_check(invoke: Invoke, project: Path) -> None:
    """--no-code-check should ignore code changes."""
    invoke("run", *INLINE, "choose(2, 1)")
    edit(project, "return a + b", "return b + a")
    assert "is fresh" in invoke("why", "--no-code-check", "choose(2, 1)").stdout


def test_requires_target(invoke: Invoke) -> None:
    """why without a target should be a usage error."""
    assert invoke("why").exit_code == 2
