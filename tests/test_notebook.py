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
    """run(progress=True) should leave one output in the cell: the last frame of the live
    display (per-family rows, the finished run, not a stale frame) with the summary under it."""
    nb, _ = executed
    outputs = _cell(nb, "progress=True").outputs
    [shown] = [o for o in outputs if o["output_type"] == "display_data"]
    for kind in ("text/plain", "text/html"):
        frame = shown["data"][kind]
        assert "square" in frame and "4/4" in frame and "total" in frame and "5/5" in frame
        assert re.search(r"Done in [\d.]+m?s: 1 ran, 4 reused, 0 failed, 0 skipped\.", frame), frame
    assert "Warning" not in _text(outputs)


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


def test_live_display_in_jupyter_needs_no_ipywidgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """In Jupyter the live display is an output of the cell: no ipywidgets needed."""
    from checkpoint import progress

    monkeypatch.setattr(progress, "_in_jupyter", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert progress.wants_live() is True
    assert isinstance(progress.reporter_for(), progress.LiveReporter)
    assert progress.LiveReporter().notebook


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


CELL_FAILING = '''
import checkpoint
from checkpoint import requires, task

@task
def flaky(i: int):
    def __():
        print("trying", i)
        if i == 3:
            raise ValueError("flaky failed on 3")
        return i
    return __

@task
def gather(n: int):
    @requires([flaky(i) for i in range(n)])
    def __(xs):
        return sum(xs)
    return __
'''


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A notebook with a run that succeeds and one that fails (on threads: the exception
    keeps its frames; then in a worker process), executed on a real kernel, saved and read
    back as a reopened one is."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    directory = tmp_path_factory.mktemp("saved")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(CELL_SWEEP + CELL_FAILING),
        nbformat.v4.new_code_cell("checkpoint.run([tot(3)], progress=True, executor='thread')"),
        nbformat.v4.new_code_cell("checkpoint.run([gather(5)], progress=True, executor='thread')"),
        nbformat.v4.new_code_cell("checkpoint.run([gather(5)], executor='process', max_workers=1)"),
    ]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(directory)}})
    client.execute()
    nbformat.write(nb, directory / "saved.ipynb")
    return nbformat.read(directory / "saved.ipynb", as_version=4)


def test_the_last_frame_is_a_static_output_a_saved_notebook_keeps(saved: Any) -> None:
    """The live display's last frame is an ordinary output (HTML and text), not a widget
    whose content lives in the kernel: a reopened notebook said 'Error displaying widget:
    model not found' in its place."""
    assert "widgets" not in saved.metadata
    outputs = saved.cells[1].outputs
    assert not [o for o in outputs if "widget" in str(o.get("data", {}))], outputs
    [shown] = [o for o in outputs if o["output_type"] == "display_data"]
    html, text = shown["data"]["text/html"], shown["data"]["text/plain"]
    assert html.startswith("<pre") and "4/4" in html and "Done in " in html
    assert re.search(r"^━+ 4/4 100%", text, re.M), text  # the finished run, not a stale frame
    assert re.search(r"^sq +3/3$", text, re.M) and re.search(r"^tot +1/1$", text, re.M), text
    assert re.search(r"^Done in [\d.]+m?s: 4 ran, 0 reused, 0 failed, 0 skipped\.$", text, re.M)


def test_a_failure_is_stated_once_by_the_raised_error(saved: Any) -> None:
    """A failing run in a cell: the display and summary count it, the task's output is
    shown, and the error itself is stated by the raised exception only (it was stated three
    times: the ✗ line, 'Task flaky(3) ... failed' and the exception)."""
    outputs = saved.cells[2].outputs
    shown = [o for o in outputs if o["output_type"] == "display_data"]
    [error] = [o for o in outputs if o["output_type"] == "error"]
    assert len(shown) == 1, outputs  # the last frame and the report, in one output
    text = shown[0]["data"]["text/plain"]
    assert "1 failed" in text and "Failed in " in text
    assert "Output of flaky(3) before it raised the error below:\n  trying 3" in text
    assert "flaky failed on 3" not in _text(outputs[:-1]) and "✗" not in text
    assert (error["ename"], error["evalue"]) == ("ValueError", "flaky failed on 3")


def test_the_traceback_shows_the_users_frames_not_checkpoints(saved: Any) -> None:
    """IPython leaves checkpoint's frames (run, _run, the worker's run_one, with their long
    signatures) out of the traceback of the error a run raises; the cell's call and the
    task's own frame stay."""
    [error] = [o for o in saved.cells[2].outputs if o["output_type"] == "error"]
    tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert "checkpoint.run([gather(5)]" in tb and 'raise ValueError("flaky failed on 3")' in tb
    assert "skipping hidden" in tb
    assert "scheduler.py" not in tb and "_worker.py" not in tb and "raise_on_failure" not in tb, tb


def test_an_error_from_a_worker_process_names_the_users_frame_once(saved: Any) -> None:
    """An exception raised in a worker process arrives without frames: the task's frame is
    in the note under the error (it was a RemoteTraceback 'cause', which stated the error
    twice), and checkpoint's frame that raises it again is the only one of its own."""
    [error] = [o for o in saved.cells[3].outputs if o["output_type"] == "error"]
    tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error["traceback"]))
    assert tb.count("ValueError: flaky failed on 3") == 1 and "RemoteTraceback" not in tb, tb
    assert re.search(r"while running task flaky\(3\) \(__main__.flaky\), in a worker process:\n"
                     r'  File ".*", line \d+, in __\n    raise ValueError\("flaky failed on 3"\)', tb), tb
    assert tb.count("scheduler.py") == 1 and "rate_limits" not in tb  # not run()'s signature
