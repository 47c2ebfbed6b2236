"""Jupyter: the example notebook runs on a real kernel (nbclient + ipykernel), task reprs."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def _text(outputs: list[Any]) -> str:
    parts = []
    for out in outputs:
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.extend(str(data.get(kind, "")) for kind in ("text/plain", "text/html", "image/svg+xml"))
    return "\n".join(parts)


def _cell(nb: Any, snippet: str) -> Any:
    """The one code cell whose source contains ``snippet``."""
    [cell] = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    return cell


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """The example notebook, executed once on a fresh kernel in a fresh directory."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("distributed")  # its last cell runs on Dask
    directory = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    )
    client.execute()
    return nb, directory


def test_cells_run_on_processes_and_rerun_exactly_the_edited_task(executed: tuple[Any, Path]) -> None:
    """Tasks from cells should run on processes; editing a cell's task re-runs only that task."""
    nb, directory = executed
    first = _text(_cell(nb, "first = checkpoint.run").outputs)
    assert "value: 14" in first
    assert "ran: ['square(0)', 'square(1)', 'square(2)', 'square(3)', 'total(4)']" in first
    second = _text(_cell(nb, "second = checkpoint.run").outputs)
    assert "value: 1014" in second and "ran: ['total(4)']" in second
    assert (directory / ".cache" / "checkpoint").is_dir()


def test_cells_run_on_dask(executed: tuple[Any, Path]) -> None:
    """A task defined in a cell should run on a Dask cluster, reusing what processes stored."""
    nb, _ = executed
    out = _text(_cell(nb, 'executor="dask"').outputs)
    assert "values: 8 1030" in out
    assert "ran: ['cube(2)', 'square(4)', 'total(5)']" in out


def test_progress_draws_live_in_the_cell_and_leaves_a_summary(executed: tuple[Any, Path]) -> None:
    """run(progress=True) should draw per-family progress in the cell and end with the summary."""
    nb, _ = executed
    outputs = _cell(nb, "progress=True").outputs
    text = _text(outputs)
    assert re.search(r"Done in [\d.]+m?s: 1 ran, 4 reused, 0 failed, 0 skipped\.", text), text
    assert "Warning" not in text
    if importlib.util.find_spec("ipywidgets") is None:
        return  # no live display without ipywidgets (the summary is still there)
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1, outputs
    model = views[0]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"][model]
    frame = _text(state["state"]["outputs"])
    assert "square        4/4" in frame and "total         1/1" in frame
    assert "5/5" in frame  # the last frame is the finished run, not a stale one


def test_task_repr_shows_state_size_and_last_run(executed: tuple[Any, Path]) -> None:
    """A task as a cell's value should show its expression, state, stored size and last duration."""
    nb, _ = executed
    [cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() == "total(4)"]
    [result] = cell.outputs
    html = result["data"]["text/html"]
    assert "<code>total(4)</code>" in html
    assert "fresh (all 5 tasks fresh)" in html
    assert re.search(r"stored</th><td[^>]*>\d+ B<", html), html
    assert re.search(r"last run</th><td[^>]*>done in \d+\.\d{3}s at ", html), html


def test_graph_displays_inline(executed: tuple[Any, Path]) -> None:
    """view(task) should display the graph as SVG when Graphviz is installed (Mermaid otherwise)."""
    nb, _ = executed
    out = _cell(nb, "view(total(4))").outputs[0]["data"]
    if shutil.which("dot"):
        assert "<svg" in out["image/svg+xml"] and "total(4)" in out["image/svg+xml"]
    else:
        assert out["text/markdown"].startswith("```mermaid")


def test_no_live_display_in_jupyter_without_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """In Jupyter without ipywidgets (rich cannot draw live there), progress should use plain lines."""
    from checkpoint import progress

    monkeypatch.setattr(progress, "_in_jupyter", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    assert progress.wants_live() is False
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert progress.wants_live() is True


CELL_FAMILIES = '''
import checkpoint
from checkpoint import task

parts = [1, 2]

@task
def a(i: int):
    def __():
        return i + {edit}
    return __

@task
def b(i: int):
    def __():
        parts = [i, i]
        return sum(parts)
    return __

result = checkpoint.run([a(i) for i in range(3)] + [b(i) for i in range(3)], executor="inline")
print("ran:", sorted(repr(t) for t in result.ran))
print("dirname:", a.dirname)
'''


def test_cells_do_not_rerun_on_output_history_and_rerun_only_the_edited_family(tmp_path: Path) -> None:
    """On a real kernel: a cell defining two families, run again after cells displayed values
    (IPython's `__` changed), re-runs nothing; run again with one family edited, it re-runs
    that family only (the fingerprint had `__ = ''`, then `__ = 2`: everything re-ran)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(CELL_FAMILIES.format(edit=1)),
        nbformat.v4.new_code_cell("1"),
        nbformat.v4.new_code_cell("2"),
        nbformat.v4.new_code_cell(CELL_FAMILIES.format(edit=1)),
        nbformat.v4.new_code_cell(CELL_FAMILIES.format(edit=10)),
    ]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    out = [_text(cell.outputs).strip().splitlines() for i, cell in enumerate(nb.cells) if i in (0, 3, 4)]
    assert out[0][0] == "ran: ['a(0)', 'a(1)', 'a(2)', 'b(0)', 'b(1)', 'b(2)']"
    assert out[1][0] == "ran: []"
    assert out[2][0] == "ran: ['a(0)', 'a(1)', 'a(2)']"
    assert out[0][1] == "dirname: __main__.a"  # a notebook has no script to name


CELL_SWEEP = '''
import checkpoint
from checkpoint import requires, task

@task
def sq(i: int):
    def __():
        return i * i
    return __

@task
def tot(n: int):
    @requires([sq(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __
'''


def test_progress_leaves_no_blank_output_and_a_warm_run_is_no_error(tmp_path: Path) -> None:
    """On a real kernel: no empty output between the last frame and the summary (rich
    displayed its empty buffer as it stopped), and 'Nothing to run' is the green summary,
    not a line on stderr (which JupyterLab shows as an error)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipywidgets")
    run = "checkpoint.run([tot(3)], progress=True, executor='inline')"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(CELL_SWEEP), nbformat.v4.new_code_cell(run),
                nbformat.v4.new_code_cell(run)]
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    for cell in nb.cells[1:]:
        blank = [o for o in cell.outputs if o["output_type"] == "display_data"
                 and not o["data"].get("text/plain") and "widget-view" not in str(o["data"])]
        assert not blank, cell.outputs
        assert not [o for o in cell.outputs if o.get("name") == "stderr"], cell.outputs
    warm = [o for o in nb.cells[2].outputs if o["output_type"] == "display_data"]
    assert "Nothing to run: all 4 tasks reused" in _text(warm)
