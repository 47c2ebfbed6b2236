"""`checkpoint ls`: the families table, a target's DAG with states, --json."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Invoke, edit


def test_families_table(invoke: Invoke) -> None:
    """ls should list every family with queue, entries, size and doc line, sorted by name."""
    invoke("run", "--executor", "inline", "choose(2, 1)")
    result = invoke("ls")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "QUEUE", "ENTRIES", "SIZE", "DESCRIPTION"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == sorted(names)
    assert set(names) == {"big", "blob", "boom", "booms", "chatty", "choose", "double", "greet", "main",
                          "nothing", "scale"}
    row = next(line for line in lines if line.startswith("choose "))
    assert row.split()[1:3] == ["taskfile.choose", "3"]
    assert row.endswith("Compute n choose k from Pascal's rule.")
    assert "More text" not in result.stdout
    assert next(line for line in lines if line.startswith("blob ")).split()[1] == "disk"
    assert next(line for line in lines if line.startswith("double ")).split()[1] == "helper.double"


def test_families_json(invoke: Invoke) -> None:
    """ls --json should give entries and sizes per family."""
    invoke("run", "--executor", "inline", "choose(2, 1)")
    doc = json.loads(invoke("ls", "--json").stdout)
    by_name = {f["name"]: f for f in doc["families"]}
    assert by_name["choose"]["entries"] == 3
    assert by_name["choose"]["size"] > 0
    assert by_name["choose"]["family"] == "taskfile.choose"
    assert by_name["main"]["entries"] == 0 and by_name["main"]["size"] == 0
    assert by_name["boom"]["doc"] == "Fails when x is odd."


def test_target_states(invoke: Invoke, project: Path) -> None:
    """ls TARGET should show each task's state and the counts per state."""
    invoke("run", "--executor", "inline", "choose(2, 1)")
    result = invoke("ls", "choose(3, 1)")
    assert result.exit_code == 0
    rows = {line.split("  ")[0].strip(): line.split()[2] for line in result.stdout.splitlines()[1:]}
    assert rows["choose(2, 1)"] == "fresh"
    assert rows["choose(2, 0)"] == "missing"
    assert rows["choose(3, 1)"] == "missing"
    assert "3 fresh, 0 stale, 2 missing, 0 code changed (5 tasks)" in result.stderr
    edit(project, "return a + b", "return b + a")
    doc = json.loads(invoke("ls", "--json", "choose(2, 1)").stdout)
    assert doc["counts"] == {"fresh": 0, "stale": 0, "missing": 0, "code changed": 3}
    doc = json.loads(invoke("ls", "--json", "--no-code-check", "choose(2, 1)").stdout)
    assert doc["counts"]["fresh"] == 3


def test_stale_state(invoke: Invoke) -> None:
    """A task whose prerequisite must run should be 'stale'."""
    invoke("run", "--executor", "inline", "choose(2, 1)")
    invoke("clear", "choose(1, 1)")
    doc = json.loads(invoke("ls", "--json", "choose(2, 1)").stdout)
    states = {t["task"]: (t["state"], t["reason"]) for t in doc["tasks"]}
    assert states == {"choose(1, 0)": ("fresh", None), "choose(1, 1)": ("missing", "missing"),
                      "choose(2, 1)": ("stale", "upstream re-run")}


def test_ls_does_not_create_cache(invoke: Invoke, cache_dir: Path) -> None:
    """ls on a fresh project should not create the cache directory."""
    assert invoke("ls").exit_code == 0
    assert not cache_dir.exists()


def test_empty_taskfile(invoke: Invoke, project: Path) -> None:
    """ls on a taskfile without tasks should say how to define one."""
    project.write_text("x = 1\n")
    result = invoke("ls")
    assert result.exit_code == 0
    assert "decorate functions with @task" in result.stderr
