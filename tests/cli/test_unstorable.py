"""A task whose value cannot be stored: a clear error, once, with the user's frame."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from checkpoint.cli import cli

TASKFILE = '''
import threading
from checkpoint import task

@task
def fileish():
    def __():
        return open(__file__)
    return __

@task
def gen():
    def __():
        return (i for i in range(3))
    return __

@task
def lock():
    def __():
        return threading.Lock()
    return __
'''


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_an_open_file_is_refused_not_stored_as_a_copy(here: Path, executor: str) -> None:
    """Returning open(...) fails the task naming the file and the fix (cloudpickle would
    store what was left to read, as a StringIO); nothing is stored."""
    result = CliRunner().invoke(cli, ["run", "--executor", executor, "fileish"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "TypeError: cannot store an open file (<_io.TextIOWrapper name=" in result.stderr
    assert "return its path, or what was read from it" in result.stderr
    listing = json.loads(CliRunner().invoke(cli, ["ls", "--json"]).stdout)
    assert {f["name"]: f["entries"] for f in listing["families"]}["fileish"] == 0


@pytest.mark.parametrize("target", ["gen", "lock"])
@pytest.mark.parametrize("executor", ["inline", "process"])
def test_an_unpicklable_value_is_reported_once_with_the_users_frame(
    here: Path, executor: str, target: str
) -> None:
    """The advice appears once (the failed line gives only the cause), the traceback shows
    the task's function, never the pickler's frames."""
    result = CliRunner().invoke(cli, ["run", "--executor", executor, target])
    assert result.exit_code == 1
    err = result.stderr
    assert err.count("Return picklable data") == 1, err
    assert err.count("cannot be pickled, so it cannot be stored") == 1, err
    assert "cloudpickle" not in err and "pickle.py" not in err, err
    assert 'taskfile.py", line ' in err and "in __ (the task's function, which returned the value)" in err
    kind = "generator" if target == "gen" else "_thread.lock"
    assert f"failed  {target}()" in err and f"UnserializableResultError: TypeError: cannot pickle '{kind}' object\n" in err
