"""Static typing: task handles are generic and `.run()` returns the inner function's type."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "typing"
ROOT = HERE.parents[1]  # static checkers find the package from the repository root


def test_mypy_infers_result_types_of_annotated_tasks() -> None:
    """mypy --strict should accept annotated tasks and reveal Task[int] and float."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(HERE / "annotated_style.py")],
        capture_output=True, text=True, cwd=ROOT,
    )
    out = proc.stdout
    assert 'Revealed type is "checkpoint.task.Task[int]"' in out, out
    assert 'Revealed type is "float"' in out, out
    assert "error" not in out.replace("Revealed", ""), out


def test_pyright_infers_readme_style_result_types() -> None:
    """pyright should infer choose(6, 3).run() as int for the README's unannotated style."""
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent))
    if pyright is None:
        pytest.skip("pyright is not installed (it is in the dev extra)")
    proc = subprocess.run(
        [pyright, str(HERE / "readme_style.py")], capture_output=True, text=True, cwd=ROOT
    )
    out = proc.stdout
    assert 'Type of "choose(6, 3)" is "Task[int]"' in out, out
    assert 'Type of "choose(6, 3).run()" is "int"' in out, out
