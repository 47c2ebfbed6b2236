"""`checkpoint cache ls|show|path|du|prune`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .conftest import Invoke, edit

INLINE = ("--executor", "inline")


def test_cache_ls(invoke: Invoke) -> None:
    """cache ls NAME should list the family's entries with size, time and duration."""
    invoke("run", *INLINE, "choose(2, 1)", "greet")
    result = invoke("cache", "ls", "choose")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TASK", "FAMILY", "SIZE", "STORED", "TOOK"]
    assert sorted(line.split("  ")[0] for line in lines[1:]) == ["choose(1, 0)", "choose(1, 1)", "choose(2, 1)"]
    assert time.strftime("%Y-%m-%d") in lines[1]
    assert len(invoke("cache", "ls").stdout.splitlines()) == 5


def test_cache_ls_json(invoke: Invoke) -> None:
    """cache ls --json should give arguments, size, stored time and duration per entry."""
    invoke("run", *INLINE, "greet('x', excited=True)")
    doc = json.loads(invoke("cache", "ls", "--json", "greet").stdout)
    [entry] = doc["entries"]
    assert entry["task"] == "greet('x', excited=True)"
    assert entry["args"] == {"name": "x", "excited": True}
    assert entry["size"] > 0 and entry["stored"] > 0 and entry["duration"] >= 0


def test_cache_ls_orphan_family(invoke: Invoke, project: Path) -> None:
    """cache ls should accept a family that is in the store but no longer in the taskfile."""
    invoke("run", *INLINE, "nothing")
    edit(project, "def nothing():", "def nothing_else():")
    doc = json.loads(invoke("cache", "ls", "--json", "nothing").stdout)
    assert [e["task"] for e in doc["entries"]] == ["nothing()"]
    assert invoke("cache", "ls", "nope").exit_code == 2


def test_cache_show(invoke: Invoke) -> None:
    """cache show should pretty-print the stored value and never compute it."""
    assert invoke("cache", "show", "main").exit_code == 1
    invoke("run", *INLINE, "main", "scale([1], opts={'a': 1})")
    result = invoke("cache", "show", "main")
    assert result.exit_code == 0
    assert result.stdout.strip() == "[1, 4, 6, 4, 1]"
    assert json.loads(invoke("cache", "show", "--json", "scale([1], opts={'a': 1})").stdout) == [1, "a"]


def test_cache_show_missing(invoke: Invoke) -> None:
    """cache show of a task never run should exit 1 and say how to build it."""
    result = invoke("cache", "show", "choose(3, 1)")
    assert result.exit_code == 1
    assert "No stored result for choose(3, 1)" in result.stderr
    assert "checkpoint run 'choose(3, 1)'" in result.stderr
    assert "ran" not in result.stderr


def test_cache_path(invoke: Invoke, cache_dir: Path) -> None:
    """cache path should print the task's data directory (and note when it does not exist)."""
    result = invoke("cache", "path", "blob(1)")
    path = Path(result.stdout.strip())
    assert path.parent == cache_dir / "checkpoint" / "taskfile.blob" / "data"
    assert "does not exist" in result.stderr
    out = invoke("run", *INLINE, "blob(1)").stdout.strip().strip("'")
    result = invoke("cache", "path", "blob(1)")
    assert result.stdout.strip() == out and result.stderr == ""


def test_cache_du(invoke: Invoke) -> None:
    """cache du should list entries and bytes per family, and a total."""
    invoke("run", *INLINE, "choose(2, 1)", "blob(100000)")
    result = invoke("cache", "du")
    lines = result.stdout.splitlines()
    assert lines[1].split()[0] == "taskfile.blob"  # largest first
    assert lines[-1].split()[:2] == ["total", "4"]
    doc = json.loads(invoke("cache", "du", "--json").stdout)
    assert doc["total"] == sum(f["size"] for f in doc["families"])
    assert {f["family"]: f["entries"] for f in doc["families"]} == {"taskfile.blob": 1, "taskfile.choose": 3}


def test_cache_prune_outdated_and_orphans(invoke: Invoke, project: Path) -> None:
    """cache prune should list orphan families and outdated entries, and delete them with -y."""
    invoke("run", *INLINE, "choose(2, 1)", "nothing", "double(2)")
    edit(project, "def nothing():", "def nothing_else():")
    edit(project, "return a + b", "return b + a")
    invoke("run", *INLINE, "choose(1, 0)", "--force")
    result = invoke("cache", "prune")
    assert result.exit_code == 0
    assert "Pass -y" in result.stderr
    rows = result.stdout.splitlines()[1:]
    assert sorted(r.split("  ")[0] for r in rows) == ["(whole family)", "choose(1, 1)", "choose(2, 1)"]
    assert all("helper.double" not in r for r in rows)  # a sibling module's family is known
    doc = json.loads(invoke("cache", "prune", "-y", "--json").stdout)
    assert doc["removed"]["entries"] == 3 and doc["removed"]["families"] == ["taskfile.nothing"]
    assert "Nothing to prune" in invoke("cache", "prune").stderr


def test_cache_prune_age_and_size(invoke: Invoke) -> None:
    """--older-than and --max-size should select old entries, then the oldest over the size."""
    invoke("run", *INLINE, "blob(40000)")
    time.sleep(0.05)
    invoke("run", *INLINE, "blob(30000)")
    assert json.loads(invoke("cache", "prune", "--json", "--older-than", "1h").stdout)["candidates"] == []
    doc = json.loads(invoke("cache", "prune", "--json", "--older-than", "0s").stdout)
    assert len(doc["candidates"]) == 2
    doc = json.loads(invoke("cache", "prune", "--json", "--max-size", "50K").stdout)
    assert [c["task"] for c in doc["candidates"]] == ["blob(40000)"]
    result = invoke("cache", "prune", "--max-size", "lots")
    assert result.exit_code == 2 and "is not a size" in result.stderr
    result = invoke("cache", "prune", "--older-than", "ages")
    assert result.exit_code == 2 and "is not a duration" in result.stderr


def test_cache_prune_keep_removes_what_the_targets_do_not_reach(invoke: Invoke) -> None:
    """--keep TARGET lists the entries its DAG does not reach (dry run first), -y removes
    them, and what the DAG needs stays."""
    invoke("run", *INLINE, "main")
    invoke("run", *INLINE, "choose(5, 2)", "double(3)")
    result = invoke("cache", "prune", "--keep", "main")
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"choose(5,", "double(3)"}  # choose(5, 2) and double(3)
    assert all(line.endswith("not in the DAG of main") for line in rows.values())
    assert "Would remove 2 items" in result.stderr
    doc = json.loads(invoke("cache", "prune", "--keep", "main", "--keep", "double(3)", "--json").stdout)
    assert [c["task"] for c in doc["candidates"]] == ["choose(5, 2)"]
    result = invoke("cache", "prune", "--keep", "main", "-y")
    assert "Removed 2 entries" in result.stderr
    assert invoke("run", *INLINE, "--json", "main").stdout.count('"ran": 0') == 1


def test_verify_sees_data_directory_files_changed_by_hand(invoke: Invoke) -> None:
    """cache verify should report a data directory whose files were deleted, changed or added
    by hand since its entry was stored, name the task and say how to recompute it (issue 19
    item 20); --repair removes the entry so the task runs again."""
    invoke("run", *INLINE, "blob(10)", "blob(20)", "blob(30)", "choose(2, 1)")
    assert invoke("cache", "verify").exit_code == 0
    paths = {n: Path(invoke("cache", "path", f"blob({n})").stdout.strip()) for n in (10, 20, 30)}
    (paths[10] / "blob.bin").unlink()
    (paths[20] / "blob.bin").write_bytes(b"y" * 21)
    (paths[30] / "stray.txt").write_text("hi")
    result = invoke("cache", "verify")
    assert result.exit_code == 1
    assert "The data directory of blob(10) (taskfile.blob)" in result.stderr
    assert "missing: blob.bin" in result.stderr
    assert "changed: blob.bin" in result.stderr
    assert "extra: stray.txt" in result.stderr
    assert "checkpoint clear 'blob(10)'" in result.stderr
    assert "Checked 6 entries: 3 bad" in result.stderr
    assert invoke("cache", "verify", "--repair").exit_code == 1
    assert invoke("cache", "verify").exit_code == 0
    assert "blob(10)" in invoke("run", *INLINE, "-n", "blob(10)").stdout
