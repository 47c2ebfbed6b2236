"""`ls TARGET --json`, `ls TARGET` and `graph --json` are written as they are made: the same
text as the whole-document versions, never one string of the whole output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest

from checkpoint import export
from checkpoint.catalog import dag_states
from checkpoint.graph import plan
from checkpoint.history import plan_last_runs
from checkpoint.store import Store
from checkpoint.taskfile import load_taskfile, resolve_targets

from .conftest import Invoke

TARGETS = ("booms", "choose(3, 1)", "greet")


def _states(invoke: Invoke) -> None:
    """Fresh, missing, stale and failed tasks in the DAG of TARGETS."""
    invoke("run", "--executor", "inline", "-k", "booms")
    invoke("run", "--executor", "inline", "choose(3, 1)")
    invoke("clear", "choose(1, 1)")


def _plan(project: Path) -> tuple[Any, Store]:
    module = load_taskfile(project)
    store = Store.open(project.parent / ".cache")
    return plan(resolve_targets(module, list(TARGETS)), store), store


def test_ls_json_is_the_whole_document(invoke: Invoke, project: Path) -> None:
    """The streamed `ls --json` should be, byte for byte, the document built whole."""
    _states(invoke)
    got = invoke("ls", "--json", *TARGETS).stdout
    the_plan, store = _plan(project)
    rows, counts = dag_states(the_plan, plan_last_runs(the_plan, store))
    whole = json.dumps({"tasks": [r.to_json() for r in rows], "counts": counts}, indent=2,
                       default=repr) + "\n"
    assert got == whole
    states = {t["task"]: t["state"] for t in json.loads(got)["tasks"]}
    assert {"fresh", "stale", "missing"} <= set(states.values())
    assert json.loads(got)["tasks"][0]["last_run"]["status"] == "failed"  # boom(1)


def test_ls_table_is_the_table_of_the_states(invoke: Invoke, project: Path) -> None:
    """`ls TARGETS` (rows of plain strings, one format per line) should be the table of
    dag_states's rows, each cell padded to its column and each line stripped."""
    from checkpoint._units import duration_text
    from checkpoint.catalog import PlanState
    from checkpoint.history import LastRunStatus

    _states(invoke)
    got = invoke("ls", *TARGETS)
    the_plan, store = _plan(project)
    rows, counts = dag_states(the_plan, plan_last_runs(the_plan, store))
    cells = [["TASK", "STATE", "LAST RUN", "REASON"]] + [[
        r.task.expression(), str(r.state),
        "-" if r.last is None else duration_text(r.last.duration)
        + (" failed" if r.last.status == LastRunStatus.FAILED else ""),
        "" if r.reason is None or r.reason.value == r.state.value else str(r.reason)]
        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    whole = "".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n"
                    for row in cells)
    assert got.stdout == whole
    assert {PlanState.FRESH, PlanState.STALE, PlanState.MISSING} <= {r.state for r in rows}
    assert "failed" in got.stdout and "upstream" in got.stdout
    assert got.stderr.splitlines()[-1].startswith(", ".join(f"{n} {s}" for s, n in counts.items()))


def test_graph_json_is_the_whole_document(invoke: Invoke, project: Path) -> None:
    """The streamed `graph --json` (stdout and -o) should be the document of export.to_dict."""
    _states(invoke)
    got = invoke("graph", "--json", *TARGETS).stdout
    the_plan, _ = _plan(project)
    whole = json.dumps(export.to_dict(the_plan), ensure_ascii=False) + "\n"
    assert got == whole
    assert export.to_json(the_plan) == whole
    assert "failed" in {n["state"] for n in json.loads(got)["nodes"]}
    assert invoke("graph", "--json", "-o", "g.json", *TARGETS).exit_code == 0
    assert (project.parent / "g.json").read_text(encoding="utf-8") == whole
    assert [p.name for p in project.parent.iterdir() if p.name.endswith(".partial")] == []
    families = invoke("graph", "--json", "--families", *TARGETS).stdout
    assert families == json.dumps(export.to_dict(the_plan, families=True), ensure_ascii=False) + "\n"


def test_empty_lists_match_json(invoke: Invoke, project: Path) -> None:
    """A one-task DAG (no edges) should still read as the whole document."""
    got = invoke("graph", "--json", "greet").stdout
    the_plan, _ = _plan(project)
    assert json.loads(got)["edges"] == []
    module = load_taskfile(project)
    one = plan(resolve_targets(module, ["greet"]), Store.open(project.parent / ".cache"))
    assert got == json.dumps(export.to_dict(one), ensure_ascii=False) + "\n"


SWEEP = '''
from checkpoint import requires, task


@task
def noop(i: int):
    def __():
        return i
    return __


@task
def main():
    @requires([noop(i) for i in range(6000)])
    def __(values):
        return sum(values)
    return __
'''


@pytest.mark.parametrize("args", [("ls", "main"), ("ls", "main", "--json"), ("graph", "--json")])
def test_large_outputs_are_written_in_pieces(
    invoke: Invoke, project: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    """A 6,001-task listing should reach stdout in several writes, none of them most of it."""
    project.write_text(SWEEP)
    writes: list[int] = []
    echo = click.echo

    def counting(message: Any = None, *rest: Any, **kwargs: Any) -> None:
        if not kwargs.get("err"):
            writes.append(len(message or ""))
        echo(message, *rest, **kwargs)

    for module in ("checkpoint.cli._output", "checkpoint.cli.graph", "checkpoint.cli.ls"):
        monkeypatch.setattr(f"{module}.click.echo", counting)
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout) > 100_000  # (ls main: 138 kB, its REASON column empty here)
    assert len(writes) >= 2 and max(writes) < len(result.stdout) / 2


ODD = {"a": 1, "b": [1, 2.5, {"x": None, "y": True}], "c": {}, "d": [], "e": "é\n\"{", "f": float("nan"),
       "g": object, "h": {1: 2}, "i": (1, 2), "j": [[]], "k": -0.0, "l": 1e300, "m": 2**70,
       "n": {"a_b": 1, "é": 2, 'x"y': 3, "": 4}, "o": False}


def test_streamed_json_writes_what_json_dumps_writes(capsys: pytest.CaptureFixture[str]) -> None:
    """emit_json_stream should print emit_json's text for any value, an iterator as a list."""
    from checkpoint.cli._output import emit_json, emit_json_stream

    def fields() -> Any:
        yield "rows", iter([ODD, {"x": 1}])
        yield "none", iter([])
        yield "odd", ODD

    emit_json_stream(fields())
    streamed = capsys.readouterr().out
    emit_json({"rows": [ODD, {"x": 1}], "none": [], "odd": ODD})
    assert streamed == capsys.readouterr().out
    emit_json_stream(iter([]))
    assert capsys.readouterr().out == "{}\n"


@pytest.mark.parametrize("fmt", ["--json", "--dot"])
def test_graph_into_a_missing_directory_is_refused(invoke: Invoke, project: Path, fmt: str) -> None:
    """-o into a directory that does not exist should say so (not an internal error) and
    leave nothing behind."""
    result = invoke("graph", fmt, "-o", "nodir/g.out", "greet")
    assert result.exit_code == 2, result.stderr
    assert "there is no directory" in result.stderr and "nodir" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project.parent / "nodir").exists()
