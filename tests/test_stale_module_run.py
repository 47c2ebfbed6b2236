"""A project module edited while a run is in progress (here by its first task, so that the
edit comes at a known moment): the families fingerprinted after the edit must not run the
old code in memory, whatever wrote a bytecode cache for the new file meanwhile, and the
error says truthfully what ran and what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TASKFILE = '''
import subprocess
import sys
from pathlib import Path
from checkpoint import task, requires
from helpers import scale


@task
def first():
    def __() -> int:
        p = Path("helpers.py")
        p.write_text(p.read_text().replace("x * 2", "x * 30"))
        if Path("import-it.flag").exists():  # another process imports it now (checkpoint ls
            subprocess.run([sys.executable, "-c", "import helpers"], check=True)  # elsewhere)
        return 1
    return __


@task
def later(i: int):
    @requires(first())
    def __(f: int) -> int:
        return scale(i)
    return __


@task
def main():
    @requires([later(i) for i in range(4)])
    def __(values: list) -> int:
        return sum(values)
    return __
'''


def _project(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "helpers.py").write_text("def scale(x):\n    return x * 2\n")
    (tmp_path / "taskfile.py").write_text(TASKFILE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tmp_path)
    return env


def _run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "checkpoint", "run", "--no-progress",
                           "--executor", "inline", "main"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_module_edited_during_a_run_stops_it_and_says_what_ran(tmp_path: Path) -> None:
    env = _project(tmp_path)
    first = _run(tmp_path, env)
    assert first.returncode == 2, first.stderr
    assert "Nothing was run" not in first.stderr
    assert ("helpers.py changed on disk since it was imported: helpers.scale in memory is not "
            "the code in the file, so task taskfile.later would run the old code under the new "
            "code's fingerprint: it was not run.") in first.stderr
    assert ("1 task had finished before the edit was noticed and is stored (first()): a stored "
            "result whose code the edit changed runs again next time.") in first.stderr
    assert "Run again: a new `checkpoint run` imports the file as it is now" in first.stderr
    second = _run(tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "180"  # (0 + 1 + 2 + 3) * 30: the new code


def test_a_bytecode_cache_written_for_the_edited_module_does_not_hide_the_edit(
    tmp_path: Path,
) -> None:
    """Another process imports the edited module during the run (a `checkpoint ls` in
    another terminal) and writes its bytecode cache for the new file: the code in memory is
    still the old one, and must not be stored under the new code's fingerprint."""
    env = _project(tmp_path)
    (tmp_path / "import-it.flag").write_text("")
    first = _run(tmp_path, env)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "so task taskfile.later would run the old code" in first.stderr
    second = _run(tmp_path, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "180"  # not 12, the old code's value, kept as fresh
