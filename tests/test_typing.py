"""Static typing: task handles are generic and `.run()` returns the result type.

Function tasks: see the first two tests. Class tasks: the files ``typing/class_tasks.py``
and ``typing/class_task_errors.py`` are checked with mypy and pyright; in the first, a
trailing "R:" comment asserts what ``reveal_type`` shows on that line and nothing may be an
error; in the second, exactly the lines with a trailing "E" comment are errors.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent / "typing"
ROOT = HERE.parents[1]  # static checkers find the package from the repository root


def test_mypy_infers_result_types_of_annotated_tasks() -> None:
    """mypy --strict should accept annotated tasks and reveal Task[int] and float."""
    output = _mypy()
    out = "\n".join(line for line in output.splitlines()
                    if Path(line.split(":", 1)[0]).name == "annotated_style.py")
    assert 'Revealed type is "checkpoint.task.Task[int]"' in out, output
    assert 'Revealed type is "float"' in out, output
    assert "error" not in out.replace("Revealed", ""), output


def test_pyright_infers_readme_style_result_types() -> None:
    """pyright should infer choose(6, 3).run() as int for the README's unannotated style."""
    output = _pyright()
    out = "\n".join(line for line in output.splitlines() if "readme_style.py:" in line)
    assert 'Type of "choose(6, 3)" is "Task[int]"' in out, output
    assert 'Type of "choose(6, 3).run()" is "int"' in out, output


# --- class tasks ---------------------------------------------------------------------------

TYPING = HERE
GOOD = TYPING / "class_tasks.py"
BAD = TYPING / "class_task_errors.py"


def _marked(path: Path, marker: str) -> dict[int, str]:
    """``{line number: text after the marker}`` for lines carrying ``# <marker>``."""
    out = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = re.search(rf"# {marker}\b:?\s*(.*)$", line)
        if match:
            out[number] = match.group(1).strip()
    return out


def _normalize(type_text: str) -> str:
    return re.sub(r"\b(?:builtins|pathlib|checkpoint\.task|checkpoint\._types)\.", "", type_text)


@functools.cache
def _mypy() -> str:
    """One mypy run over every typing file: checking checkpoint and its dependencies from a
    cold cache (as in CI) takes about half a minute, so it is done once for all tests."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--show-absolute-path",
         "--cache-dir", str(ROOT / ".mypy_cache"), str(HERE / "annotated_style.py"), str(GOOD),
         str(BAD)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    return proc.stdout + proc.stderr


@functools.cache
def _pyright() -> str:
    """One pyright run over every typing file (each run starts node: seconds)."""
    exe = shutil.which("pyright", path=str(Path(sys.executable).parent)) or shutil.which("pyright")
    if exe is None:
        pytest.skip("pyright is not installed (pip install pyright; it needs node)")
    try:
        proc = subprocess.run([exe, str(HERE / "readme_style.py"), str(GOOD), str(BAD)], cwd=ROOT,
                              capture_output=True, text=True, timeout=240)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"pyright could not run: {exc}")
    if "error:" not in proc.stdout and "information:" not in proc.stdout:
        pytest.skip(f"pyright could not run: {proc.stdout[-300:]} {proc.stderr[-300:]}")
    return proc.stdout


def _parse(output: str, kind: str, pattern: str) -> dict[tuple[str, int], list[str]]:
    found: dict[tuple[str, int], list[str]] = {}
    for match in re.finditer(pattern, output, flags=re.M):
        name = Path(match.group("file")).name
        found.setdefault((name, int(match.group("line"))), []).append(match.group("text"))
    return found


CHECKERS = {
    "mypy": (
        _mypy,
        r"^(?P<file>\S+\.py):(?P<line>\d+): error: (?P<text>.*)$",
        r'^(?P<file>\S+\.py):(?P<line>\d+): note: Revealed type is "(?P<text>.*)"$',
    ),
    "pyright": (
        _pyright,
        r"^\s*(?P<file>\S+\.py):(?P<line>\d+):\d+ - error: (?P<text>.*)$",
        r'^\s*(?P<file>\S+\.py):(?P<line>\d+):\d+ - information: Type of ".*" is "(?P<text>.*)"$',
    ),
}


@pytest.mark.parametrize("checker", list(CHECKERS), ids=list(CHECKERS))
def test_type_checkers_infer_task_results_and_check_prerequisites(checker: str) -> None:
    """mypy and pyright should reveal the documented types and flag exactly the marked errors."""
    run, error_pattern, reveal_pattern = CHECKERS[checker]
    output = run()
    errors = _parse(output, "error", error_pattern)
    reveals = _parse(output, "reveal", reveal_pattern)

    expected_reveals = _marked(GOOD, "R")
    assert expected_reveals, "the typing file should assert some reveal_type lines"
    for line, expected in expected_reveals.items():
        got = [_normalize(t) for t in reveals.get((GOOD.name, line), [])]
        assert got == [expected], f"{checker}, {GOOD.name}:{line}: {got}\n{output}"

    good_errors = {key: v for key, v in errors.items() if key[0] == GOOD.name}
    assert not good_errors, f"{checker} reports errors in {GOOD.name}:\n{output}"

    expected_errors = set(_marked(BAD, "E"))
    got_errors = {line for (name, line) in errors if name == BAD.name}
    assert got_errors == expected_errors, f"{checker}:\n{output}"


def test_mypy_without_the_plugin_still_infers_results() -> None:
    """Without checkpoint.mypy, mypy should still type run() results but not see the class as a family."""
    config = ROOT / ".mypy_cache" / "no-plugin.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        "[mypy]\nstrict = True\n"
        "[mypy-diskcache.*,cloudpickle.*,networkx.*,distributed.*,dask.*]\n"
        "ignore_missing_imports = True\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--no-error-summary",
         "--cache-dir", str(ROOT / ".mypy_cache" / "no-plugin"), str(GOOD)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    output = proc.stdout + proc.stderr
    reveals = _parse(output, "reveal", CHECKERS["mypy"][2])
    lines = GOOD.read_text().splitlines()
    run_lines = [n for n, line in enumerate(lines, 1) if ".run())  # R:" in line]
    assert run_lines
    for line in run_lines:
        got = [_normalize(t) for t in reveals.get((GOOD.name, line), [])]
        assert got == [_marked(GOOD, "R")[line]], output
    clear_line = lines.index("Choose.clear()") + 1
    assert f"{GOOD.name}:{clear_line}: error: " in output, output
