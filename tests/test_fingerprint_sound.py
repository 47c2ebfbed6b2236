"""Code fingerprints describe the code that runs: the adversarial tester's reproductions
(/tmp/adv/repros, numbered as there) turned into tests."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, PYTHON

from checkpoint.errors import StaleModuleError
from checkpoint.fingerprint import code_fingerprint


def _rewrite(path: Path, source: str) -> None:
    """Rewrite a file as an editor does, with a new mtime even within one clock tick."""
    path.write_text(textwrap.dedent(source))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


# --- 08: a helper edited on disk, not reloaded -------------------------------------------

UTILS = "def f(x):\n    return x + {k}\n"
TASKS = """
from checkpoint import task
import utils08

@task
def g(x: int):
    def __() -> int:
        return utils08.f(x)
    return __
"""


def test_08_a_helper_edited_but_not_reloaded_runs_nothing(make_module: Any, tmp_path: Path) -> None:
    """A long session edits a helper without reloading it: the old code is in memory, the new
    on disk. Running must not store the old code's result under the new code's fingerprint
    (every fresh process would then get it as fresh): it raises, naming the file and the fix."""
    make_module("utils08", UTILS.format(k=1))
    tasks = make_module("tasks08", TASKS)
    assert tasks.g(1).run(executor="inline") == 2
    _rewrite(tmp_path / "utils08.py", UTILS.format(k=100))
    for executor in ("inline", "thread", "process"):
        with pytest.raises(StaleModuleError, match=r"utils08\.py changed on disk.*importlib\.reload\(utils08\)"):
            tasks.g(1).run(executor=executor)
    importlib.reload(sys.modules["utils08"])
    assert tasks.g(1).run(executor="inline") == 101


def test_08_an_edit_before_the_first_run_is_seen_too(make_module: Any, tmp_path: Path) -> None:
    """Imported, edited, then run for the first time: no earlier fingerprint to compare with."""
    make_module("utils08b", UTILS.format(k=1))
    tasks = make_module("tasks08b", TASKS.replace("utils08", "utils08b"))
    _rewrite(tmp_path / "utils08b.py", UTILS.format(k=100))
    with pytest.raises(StaleModuleError):
        code_fingerprint(tasks.g.fn)


def test_08_the_task_module_itself_edited_but_not_reloaded(make_module: Any, tmp_path: Path) -> None:
    make_module("utils08c", UTILS.format(k=1))
    tasks = make_module("tasks08c", TASKS.replace("utils08", "utils08c"))
    _rewrite(tmp_path / "tasks08c.py", TASKS.replace("utils08", "utils08c").replace("(x)", "(x + 1)"))
    with pytest.raises(StaleModuleError, match="tasks08c"):
        code_fingerprint(tasks.g.fn)


def test_08_edits_that_change_no_code_are_not_an_error(make_module: Any, tmp_path: Path) -> None:
    """Comments, blank lines (lines shift) and formatting leave the compiled code as it was."""
    make_module("utils08d", UTILS.format(k=1))
    tasks = make_module("tasks08d", TASKS.replace("utils08", "utils08d"))
    before = code_fingerprint(tasks.g.fn)
    _rewrite(tmp_path / "utils08d.py", "# a comment\n\n\ndef f(x):   # more\n    return (x +\n 1)\n")
    assert code_fingerprint(tasks.g.fn) == before


def test_08_the_session_reproduction(tmp_path: Path) -> None:
    """The tester's script, in a real process with fork workers: no wrong value ever."""
    (tmp_path / "utils.py").write_text(UTILS.format(k=1))
    (tmp_path / "tasks.py").write_text(TASKS.replace("utils08", "utils"))
    (tmp_path / "session.py").write_text(textwrap.dedent("""
        import pathlib, sys
        from checkpoint.errors import StaleModuleError
        from tasks import g
        print(g(1).run(executor=sys.argv[1]))
        pathlib.Path("utils.py").write_text("def f(x):\\n    return x + 100\\n")
        try:
            g(1).run(executor=sys.argv[1])
        except StaleModuleError:
            print("stale")
    """))
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for executor in ("process", "thread"):
        out = subprocess.run([PYTHON, "session.py", executor], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.split() == ["2", "stale"], out
        fresh = subprocess.run([PYTHON, "-c", "from tasks import g; print(g(1).run())"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert fresh.stdout.strip() == "101"
        (tmp_path / "utils.py").write_text(UTILS.format(k=1))


def test_08_bytecode_python_cached_for_another_version_is_named(tmp_path: Path, runner: Any) -> None:
    """An edit saved within the second of the last import, with the same size: Python loads the
    old bytecode from __pycache__ (it compares mtimes in seconds). The code that would run is
    not the file's: the error names the bytecode file to delete."""
    from checkpoint.cli import cli

    source = TASKS.replace("utils08", "utils") + "\n"
    (tmp_path / "utils.py").write_text(UTILS.format(k=1))
    (tmp_path / "taskfile.py").write_text(source)
    mtime = os.stat(tmp_path / "taskfile.py").st_mtime_ns
    assert runner.invoke(cli, ["run", "g(1)", "--executor", "inline"]).exit_code == 0
    (tmp_path / "taskfile.py").write_text(source.replace("f(x)", "f(2)"))
    os.utime(tmp_path / "taskfile.py", ns=(mtime, mtime + 1000))
    sys.modules.pop("taskfile", None)
    result = runner.invoke(cli, ["run", "g(1)", "--executor", "inline"])
    assert result.exit_code == 2, result.output
    assert "changed on disk" in result.output and "__pycache__" in result.output
