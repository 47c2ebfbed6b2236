"""The example notebook runs on a real Jupyter kernel (nbclient + ipykernel)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"


def _text(cell: dict) -> str:  # type: ignore[type-arg]
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.extend(str(data.get(kind, "")) for kind in ("text/plain", "text/html", "image/svg+xml"))
    return "\n".join(parts)


def test_notebook_runs_and_reruns_exactly_the_edited_task(tmp_path: Path) -> None:
    """Cells should build on processes, re-run only the edited task, and show its state and graph."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    first, second, state, graph = _text(code[2]), _text(code[4]), _text(code[5]), _text(code[6])
    assert "value: 14" in first
    assert "ran: ['square(0)', 'square(1)', 'square(2)', 'square(3)', 'total(4)']" in first
    assert "value: 1014" in second and "ran: ['total(4)']" in second
    assert "fresh" in state and "total(4)" in state
    if shutil.which("dot"):
        assert "<svg" in graph
    else:
        assert "total(4)" in graph
    assert (tmp_path / ".cache" / "checkpoint").is_dir()
