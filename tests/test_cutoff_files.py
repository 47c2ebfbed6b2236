"""Early cutoff below files: a task whose value stays the same while files behind it changed
(its ``File`` inputs, the ``Product``s upstream of it) never keeps a dependent that may read
those files, by a path handed on or by their name (adv5 findings 02, 03, 06). Where the
files are the same, cutoff works as before."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint.cli import cli

RAW = '''
from pathlib import Path
from checkpoint import task, requires, File

@task
def raw_files():
    """The inputs of the pipeline, declared once."""
    @requires(File("data/*.csv"))
    def __(paths):
        return [str(p) for p in paths]
    return __

@task
def total():
    @requires(raw_files())
    def __(paths):
        n = 0
        for p in paths:
            n += sum(int(x) for x in Path(p).read_text().split())
            if os.path.exists("save-now"):  # another program saves the inputs meanwhile
                os.unlink("save-now")
                Path("data/a.csv").write_text("100")
                Path("data/b.csv").write_text("20")
        return n
    return __

@task
def handed():
    @requires(raw_files())
    def __(paths):
        return paths
    return __

@task
def total_further():
    @requires(handed())
    def __(paths):
        n = 0
        for p in paths:
            n += sum(int(x) for x in Path(p).read_text().split())
            if os.path.exists("save-now"):
                os.unlink("save-now")
                Path("data/a.csv").write_text("100")
        return n
    return __

@task
def folder():
    @requires(File("dir/"))
    def __(d):
        return str(d)
    return __

@task
def listing():
    @requires(folder())
    def __(d):
        return sorted(os.listdir(d))
    return __
'''


def _project(tmp_path: Path) -> None:
    (tmp_path / "taskfile.py").write_text("import os\n" + RAW)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1 2 3")
    (tmp_path / "data" / "b.csv").write_text("10")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x").write_text("x")


def _run(runner: CliRunner, target: str, *args: str) -> tuple[str, str]:
    result = runner.invoke(cli, ["run", "--no-progress", *args, target])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1], result.stderr


def test_a_file_input_edited_reruns_the_reader_of_the_paths_handed_on(
    tmp_path: Path, runner: CliRunner
) -> None:
    """raw_files() re-runs and returns the same paths: total() reads them, so it is not kept
    (adv5 02, edit)."""
    _project(tmp_path)
    assert _run(runner, "total")[0] == "16"
    (tmp_path / "data" / "a.csv").write_text("1 2 4")
    value, log = _run(runner, "total")
    assert value == "17" and "early cutoff" not in log
    assert "Nothing to run" in _run(runner, "total")[1]
    # A file added to the directory: the same path, another listing.
    assert _run(runner, "listing")[0] == "['x']"
    (tmp_path / "dir" / "y").write_text("y")
    assert _run(runner, "listing")[0] == "['x', 'y']"


def test_a_file_input_saved_while_a_reader_runs_makes_it_stale(
    tmp_path: Path, runner: CliRunner
) -> None:
    """The inputs are saved while total() reads them (after it read a.csv): the mixed value is
    stored as stale, with a warning, and the next run computes it from the new files
    (adv5 02, during)."""
    _project(tmp_path)
    (tmp_path / "save-now").write_text("")
    # Inline: raw_files() is done before total() starts (the process pool may run total()
    # in raw_files()'s batch; the save then counts as made while raw_files() ran, and
    # raw_files() is stale instead, which re-runs total() as well).
    value, log = _run(runner, "total", "--executor", "inline")
    assert value == "26"  # 1 + 2 + 3 read before the save, 20 after
    assert ("warning: The input data/*.csv of raw_files() changed before total() finished: "
            "total() may have read either content, so its result is stored as stale and "
            "runs again next time.") in " ".join(log.split())
    # Saved back as they were: raw_files() is fresh, total() still stale (it read both).
    (tmp_path / "data" / "a.csv").write_text("1 2 3")
    (tmp_path / "data" / "b.csv").write_text("10")
    why = " ".join(runner.invoke(cli, ["why", "total"]).output.split())
    assert "file data/*.csv changed after its producer wrote it (an output) or was planned (an " \
        "input upstream)" in why, why
    assert _run(runner, "total")[0] == "16"
    assert "Nothing to run" in _run(runner, "total")[1]
    # Saved again during a forced run, and left: the next run computes from the new files.
    (tmp_path / "save-now").write_text("")
    result = runner.invoke(cli, ["run", "--no-progress", "--executor", "inline", "--force",
                                 "total"])
    assert result.stdout.strip().endswith("26") and "changed before total() finished" in result.stderr
    assert _run(runner, "total")[0] == "120"
    assert "Nothing to run" in _run(runner, "total")[1]


def test_a_file_input_saved_while_a_reader_runs_in_its_producers_batch(
    tmp_path: Path, runner: CliRunner
) -> None:
    """The default executor: whichever task the save is charged to, the mixed value is not
    kept once the files are saved back."""
    _project(tmp_path)
    (tmp_path / "save-now").write_text("")
    value, log = _run(runner, "total")
    assert value == "26" and "warning: The input data/*.csv of raw_files() changed" in log
    (tmp_path / "data" / "a.csv").write_text("1 2 3")
    (tmp_path / "data" / "b.csv").write_text("10")
    assert _run(runner, "total")[0] == "16"


def test_a_file_input_further_upstream_saved_while_a_reader_runs(
    tmp_path: Path, runner: CliRunner
) -> None:
    """The inputs of a task that is not a prerequisite of the reader are checked once for the
    results about to be stored (as the Products further upstream are)."""
    _project(tmp_path)
    (tmp_path / "save-now").write_text("")
    value, log = _run(runner, "total_further", "--executor", "inline")
    assert value == "16"
    assert ("warning: The input data/*.csv of raw_files() changed before total_further()'s "
            "result was stored: total_further() may have read either content") in " ".join(log.split())
    (tmp_path / "data" / "a.csv").write_text("1 2 3")  # saved back: only the reader is stale
    value, log = _run(runner, "total_further")
    assert value == "16" and "1 ran" in log


def test_a_cleared_task_with_the_same_input_files_still_cuts_off(
    tmp_path: Path, runner: CliRunner
) -> None:
    """The stamp names the input files' digests: the same files and the same value keep the
    readers, as before."""
    _project(tmp_path)
    assert _run(runner, "total")[0] == "16"
    assert runner.invoke(cli, ["clear", "raw_files()"]).exit_code == 0
    value, log = _run(runner, "total")
    assert value == "16" and "early cutoff" in log


REMOTE = '''
from checkpoint import task, requires, File

@task
def raw_files():
    @requires(File("data/*.csv"))
    def __(paths):
        return [str(p) for p in paths]
    return __

@task
def total():
    @requires(raw_files())
    def __(paths):
        return sum(int(x) for p in paths for x in open(p).read().split())
    return __
'''


def test_a_copy_with_other_input_files_does_not_pull_the_readers_result(tmp_path: Path) -> None:
    """Two copies of a project share a file:// remote; their data differ and raw_files()
    returns the same paths in both: B computes total() from its own files (adv5 03)."""
    env = {**os.environ, "CP_REMOTE_KEY": "team-secret-0123456789"}
    env.pop("CP_CACHE_DIR", None)
    shared = tmp_path / "shared"
    shared.mkdir()
    for name, data in (("A", "1 2 3"), ("B", "100 200")):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "taskfile.py").write_text(REMOTE)
        (tmp_path / name / "data" / "a.csv").write_text(data)

    def run(where: str, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "checkpoint", "run", "--no-progress", *args],
                              cwd=tmp_path / where, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert run("A", "--remote", shared.as_uri(), "--push", "total") == "6"
    assert run("B", "raw_files") == "['data/a.csv']"
    assert run("B", "--remote", shared.as_uri(), "total") == "300"
    # A third copy with A's data pulls both (the stamps agree where the files do).
    (tmp_path / "C" / "data").mkdir(parents=True)
    (tmp_path / "C" / "taskfile.py").write_text(REMOTE)
    (tmp_path / "C" / "data" / "a.csv").write_text("1 2 3")
    assert run("C", "raw_files") == "['data/a.csv']"
    assert run("C", "--remote", shared.as_uri(), "total") == "6"


CHECK = '''
from checkpoint import task, requires, File, Product

@task
def make():
    @requires(File("in.txt"))
    @requires(Product("out/data.txt"))
    def __(src, out):
        rows = src.read_text().split()
        out.write_text("\\n".join(rows) + "\\n")
        return len(rows)
    return __

@task
def validate():
    @requires(make())
    def __(n):
        assert n > 0, "empty data"
        return {returned}
    return __

@task
def report():
    @requires(validate())
    def __(n):
        return sum(int(x) for x in open("out/data.txt").read().split())
    return __
'''


@pytest.mark.parametrize("returned", ["n", "None"])
def test_a_product_read_by_name_through_a_task_returning_a_number_or_none(
    tmp_path: Path, runner: CliRunner, returned: str
) -> None:
    """validate() gives the same count (or None) when out/data.txt changed: report() reads the
    file by its name, so it runs again (adv5 06)."""
    (tmp_path / "taskfile.py").write_text(CHECK.format(returned=returned))
    (tmp_path / "in.txt").write_text("1 2 3")
    assert _run(runner, "report")[0] == "6"
    (tmp_path / "in.txt").write_text("1 2 4")
    value, log = _run(runner, "report")
    assert value == "7" and "early cutoff" not in log
    # Cleared with the same files: validate() and report() are kept as before.
    assert runner.invoke(cli, ["clear", "make()"]).exit_code == 0
    value, log = _run(runner, "report")
    assert value == "7" and "early cutoff" in log


PLAIN = '''
from checkpoint import task, requires

@task
def root():
    def __():
        return [1, 2, 3]
    return __

@task
def count():
    @requires(root())
    def __(xs):
        return len(xs)
    return __

@task
def top():
    @requires(count())
    def __(n):
        return n * 10
    return __
'''


def test_plain_stamps_are_unchanged(make_module: Callable[[str, str], ModuleType]) -> None:
    """A task with no files upstream is stamped as before the change (its value in its code's
    context): existing caches keep their early cutoff, and a cleared root keeps the rest."""
    from checkpoint._stamps import in_context, value_stamp
    from checkpoint._values import StampContext
    from checkpoint.graph import plan
    from checkpoint.store import Store

    mod = make_module("plain_stamps", PLAIN)
    checkpoint.run([mod.top()], executor="inline")
    store = Store(Path(os.environ["CP_CACHE_DIR"]))
    nodes = plan([mod.top()], store).nodes
    context = StampContext(nodes)
    for t in (mod.root(), mod.count(), mod.top()):
        meta = nodes[t.id].meta
        assert meta is not None
        payload = store.load_payload(t.family.dirname, t.id, meta)
        given = {dep: nodes[dep].meta.stamp for dep in nodes[t.id].deps}  # type: ignore[union-attr]
        assert meta.stamp == in_context(value_stamp(payload, meta.compressed),
                                        context.digest(t.id, given))
    mod.root().clear()
    result = checkpoint.run([mod.top()], executor="inline")
    assert [t.expression() for t in result.ran] == ["root()"]
