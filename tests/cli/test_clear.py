"""`checkpoint clear`: a family, one entry, everything, downstream; reports counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Invoke, ran

INLINE = ("--executor", "inline")


def entries(invoke: Invoke) -> dict[str, int]:
    return {f["name"]: f["entries"] for f in json.loads(invoke("ls", "--json").stdout)["families"]}


def test_clear_family(invoke: Invoke, cache_dir: Path) -> None:
    """clear NAME should remove the family's directory and report entries and bytes."""
    invoke("run", *INLINE, "main")
    result = invoke("clear", "-y", "choose")
    assert result.exit_code == 0
    assert "Removed 14 entries (" in result.stderr
    assert not (cache_dir / "checkpoint" / "taskfile.choose").exists()
    assert entries(invoke)["main"] == 1
    assert ran(invoke, "main") == (14, 1)  # the same values: main() is kept (early cutoff)


def test_clear_entry(invoke: Invoke) -> None:
    """clear 'NAME(args)' should remove one entry only."""
    invoke("run", *INLINE, "choose(2, 1)")
    result = invoke("clear", "choose(1, 0)")
    assert "Removed 1 entry (" in result.stderr
    assert entries(invoke)["choose"] == 2
    assert "Nothing to remove" in invoke("clear", "choose(1, 0)").stderr


def test_clear_entry_removes_data_dir(invoke: Invoke, cache_dir: Path) -> None:
    """Clearing an entry should remove its data directory and count its bytes."""
    path = Path(invoke("run", *INLINE, "blob(5000)").stdout.strip().strip("'"))
    assert (path / "blob.bin").exists()
    doc = json.loads(invoke("clear", "--json", "blob(5000)").stdout)
    assert doc["entries"] == 1 and doc["bytes"] >= 5000
    assert not path.exists()


def test_clear_family_asks_first(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """clear NAME removes a whole family only once confirmed, as the docs say: 'n' keeps it;
    end of input at a terminal aborts (130, 'Aborted.'); with no terminal to ask on (a
    script) it is a usage error asking for -y; one entry never asks."""
    import checkpoint.cli.clear as clear_module

    invoke("run", *INLINE, "main")
    result = invoke("clear", "choose", input="n\n")
    assert result.exit_code == 0
    assert "Remove 14 entries of taskfile.choose? [y/N]" in result.stderr
    assert "Nothing removed." in result.stderr and entries(invoke)["choose"] == 14
    result = invoke("clear", "choose")
    assert result.exit_code == 2
    assert "Not confirmed: nothing removed. Pass -y to clear without asking." in result.stderr
    monkeypatch.setattr(clear_module, "_stdin_is_tty", lambda: True)
    for args in (["choose"], ["--all"]):
        result = invoke("clear", *args)
        assert result.exit_code == 130
        assert result.stderr.endswith("Aborted.\n")
    assert entries(invoke)["choose"] == 14
    result = invoke("clear", "choose", "main", input="y\n")
    assert "Remove 14 entries of taskfile.choose, 1 entry of taskfile.main?" in result.stderr
    assert "Removed 15 entries" in result.stderr
    invoke("run", *INLINE, "main")
    assert "Removed 1 entry" in invoke("clear", "choose(1, 0)").stderr


def test_clear_all_asks(invoke: Invoke, cache_dir: Path) -> None:
    """clear --all should ask first; 'n' keeps everything, -y removes everything."""
    invoke("run", *INLINE, "main")
    result = invoke("clear", "--all", input="n\n")
    assert result.exit_code == 0
    assert "Remove everything" in result.stderr and "Nothing removed" in result.stderr
    assert entries(invoke)["choose"] == 14
    result = invoke("clear", "--all", input="y\n")
    assert "Removed 15 entries" in result.stderr
    invoke("run", *INLINE, "main")
    result = invoke("clear", "--all", "-y")
    assert "Removed 15 entries" in result.stderr
    assert entries(invoke) == dict.fromkeys(entries(invoke), 0)


def test_clear_all_without_input(invoke: Invoke) -> None:
    """clear --all with no answer on stdin should remove nothing and exit 2 with a hint."""
    invoke("run", *INLINE, "main")
    result = invoke("clear", "--all", input="")
    assert result.exit_code == 2
    assert "Pass -y" in result.stderr
    assert entries(invoke)["choose"] == 14


def test_clear_downstream(invoke: Invoke) -> None:
    """--downstream should also clear the entries depending on the cleared one within main."""
    invoke("run", *INLINE, "main", "choose(2, 0)")
    result = invoke("clear", "--json", "--downstream", "choose(1, 0)")
    doc = json.loads(result.stdout)
    # choose(1, 0) -> choose(2, 1) -> choose(3, 1), choose(3, 2) -> choose(4, 1..3) -> main
    assert doc["entries"] == 8
    counts = entries(invoke)
    assert counts["main"] == 0 and counts["choose"] == 14 - 7


def test_clear_family_downstream_within(invoke: Invoke) -> None:
    """--downstream with --within should follow the given target's DAG."""
    invoke("run", *INLINE, "booms", "-k")
    invoke("run", *INLINE, "main")
    doc = json.loads(invoke("clear", "-y", "--json", "--downstream", "--within", "main", "choose").stdout)
    assert doc["entries"] == 15
    assert entries(invoke)["boom"] == 1


def test_clear_needs_something(invoke: Invoke) -> None:
    """clear without targets or --all should exit 2 and show the forms."""
    result = invoke("clear")
    assert result.exit_code == 2
    assert "checkpoint clear --all" in result.stderr
    result = invoke("clear", "--all", "choose")
    assert result.exit_code == 2


def test_clear_unknown(invoke: Invoke) -> None:
    """clear of an unknown family should exit 2 with a suggestion."""
    result = invoke("clear", "chose")
    assert result.exit_code == 2
    assert "Did you mean 'choose'?" in result.stderr
