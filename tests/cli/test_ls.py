"""`checkpoint ls`: the families table, a target's DAG with states, --json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    "args",
    [("ls",), ("ls", "--json"), ("ls", "main"), ("ls", "--json", "choose(3, 1)"), ("why", "main"),
     ("run", "-n", "main"), ("graph", "main"), ("cache", "ls"), ("cache", "ls", "choose"),
     ("cache", "du"), ("cache", "prune"), ("cache", "show", "choose(2, 1)"), ("log", "choose(2, 1)")],
    ids=" ".join,
)
def test_read_only_commands_do_not_create_the_cache(invoke: Invoke, cache_dir: Path,
                                                    args: tuple[str, ...]) -> None:
    """Commands that only read should leave a fresh project without a cache directory."""
    result = invoke(*args)
    assert result.exit_code in (0, 1), result.stderr
    assert not cache_dir.exists()


def test_empty_taskfile(invoke: Invoke, project: Path) -> None:
    """ls on a taskfile without tasks should say how to define one."""
    project.write_text("x = 1\n")
    result = invoke("ls")
    assert result.exit_code == 0
    assert "decorate functions with @task" in result.stderr


def test_target_shows_last_runs(invoke: Invoke) -> None:
    """ls TARGET should show each task's last run: its duration, 'failed' if it failed, '-' if none."""
    from checkpoint._units import duration_text

    invoke("run", "--executor", "inline", "-k", "booms")
    invoke("run", "--executor", "inline", "choose(2, 1)")
    doc = json.loads(invoke("ls", "--json", "booms", "choose(2, 1)").stdout)
    last = {t["task"]: t["last_run"] for t in doc["tasks"]}
    stored = {e["task"]: e for e in json.loads(invoke("cache", "ls", "--json", "boom").stdout)["entries"]}
    assert last["boom(2)"]["status"] == "done"
    assert last["boom(2)"]["duration"] == stored["boom(2)"]["duration"]
    assert last["boom(2)"]["worker"].endswith(f":{os.getpid()}")
    assert last["boom(1)"]["status"] == "failed" and last["boom(1)"]["duration"] >= 0
    assert last["booms()"] is None  # skipped: it never ran
    assert last["choose(2, 1)"]["status"] == "done"

    result = invoke("ls", "booms", "choose(2, 1)")
    header, *lines = result.stdout.splitlines()
    assert header.split() == ["TASK", "STATE", "LAST", "RUN", "REASON"]
    start, end = header.index("LAST RUN"), header.index("REASON")
    cells = {line.split("  ")[0]: line[start:end].strip() for line in lines}
    assert cells["boom(2)"] == duration_text(last["boom(2)"]["duration"])
    assert cells["boom(1)"].endswith(" failed")
    assert cells["booms()"] == "-"
    # The reason is left out where it only repeats the state ("missing  <1ms failed  missing").
    rows = {line.split()[0]: line for line in lines}
    assert rows["boom(1)"].rstrip().endswith(" failed") and rows["booms()"].rstrip().endswith(" -")


def test_family_size_is_what_the_entries_hold(invoke: Invoke) -> None:
    """ls SIZE should be the bytes the entries hold (values + data directories), the sum of
    `cache ls` sizes, not the index's SQLite file overhead (issue 19 item 24)."""
    invoke("run", "--executor", "inline", "choose(2, 1)", "blob(1000)")
    families = {f["name"]: f for f in json.loads(invoke("ls", "--json").stdout)["families"]}
    entries = json.loads(invoke("cache", "ls", "--json").stdout)["entries"]
    for name, family in (("choose", "taskfile.choose"), ("blob", "taskfile.blob")):
        held = sum(e["size"] for e in entries if e["family"] == family)
        assert families[name]["size"] == held
    assert 1000 <= families["blob"]["size"] < 2000
    assert families["choose"]["size"] < 1000  # three small ints, not SQLite's ~60 KiB pages
