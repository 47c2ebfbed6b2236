"""Files on disk as task inputs (File) and outputs (Product); the project root as cwd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint import (
    File,
    InvalidRequirementError,
    MissingInputError,
    MissingOutputError,
    Product,
    TaskDefinitionError,
    UnserializableArgumentError,
    requires,
    task,
)
from checkpoint import files as files_module
from checkpoint.cli import cli
from checkpoint.graph import expand, plan
from checkpoint.store import Store

PIPELINE = '''
from pathlib import Path

from checkpoint import File, Product, requires, task

CITIES = ["paris", "rome"]


@task
def clean(city: str):
    """data/raw/{city}.csv -> out/{city}.csv, each value doubled."""
    @requires(File(f"data/raw/{city}.csv"))
    @requires(Product(f"out/{city}.csv"))
    def __(raw: Path, out: Path) -> str:
        values = [int(v) * 2 for v in raw.read_text().split()[1:]]
        out.write_text("\\n".join(map(str, values)) + "\\n")
        return str(out)
    return __


@task
def mean(city: str):
    """The mean of out/{city}.csv: a File that clean(city) produces."""
    @requires(File(f"out/{city}.csv"))
    def __(path: Path) -> float:
        values = [float(v) for v in path.read_text().split()]
        return sum(values) / len(values)
    return __


@task
def main():
    @requires([clean(c) for c in CITIES])
    @requires({c: mean(c) for c in CITIES})
    def __(paths: list, means: dict) -> dict:
        return means
    return __
'''


def _project(root: Path) -> None:
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "paris.csv").write_text("x\n1\n2\n")
    (root / "data" / "raw" / "rome.csv").write_text("x\n5\n7\n")
    (root / "taskfile.py").write_text(PIPELINE)


@pytest.fixture
def pipeline(tmp_path: Path, make_module: Any) -> Any:
    _project(tmp_path)
    return make_module("taskfile", PIPELINE)


def _ran(result: checkpoint.RunResult) -> set[str]:
    return {repr(t) for t in result.ran}


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files hashed from now on count as changed long before (their ctime cannot be set
    back), so their digests are trusted on sight."""
    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 3600 * 10**9)


def _write_same_size(path: Path, text: str) -> None:
    """Replace a file's content in place, keeping its size and its times (mtime and atime)."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- inputs ---------------------------------------------------------------------------------


def test_edited_input_reruns_exactly_its_dependents(pipeline: Any, runner: CliRunner) -> None:
    """Editing data/raw/paris.csv should re-run clean('paris') and what depends on it, only,
    and `why` should name the file."""
    first = checkpoint.run([pipeline.main()], executor="inline")
    assert first.values[pipeline.main().id] == {"paris": 3.0, "rome": 12.0}
    Path("data/raw/paris.csv").write_text("x\n1\n4\n")
    result = runner.invoke(cli, ["why", "main"])
    assert result.exit_code == 0, result.output
    assert "clean('paris') would run: input changed" in result.stdout
    assert "input file data/raw/paris.csv changed" in result.stdout
    assert "rome" not in result.stdout
    again = checkpoint.run([pipeline.main()], executor="inline")
    assert _ran(again) == {"clean('paris')", "mean('paris')", "main()"}
    assert again.values[pipeline.main().id] == {"paris": 5.0, "rome": 12.0}


def test_touch_alone_reruns_nothing(pipeline: Any) -> None:
    """A new mtime with the same content should re-run nothing."""
    checkpoint.run([pipeline.main()], executor="inline")
    os.utime("data/raw/paris.csv")  # touch
    os.utime("out/rome.csv")
    assert not checkpoint.run([pipeline.main()], executor="inline").ran


def test_same_second_edit_of_equal_size_is_caught(pipeline: Any) -> None:
    """An edit that keeps the size and the mtime (an edit within the same timestamp tick)
    should still re-run the task that reads the file."""
    checkpoint.run([pipeline.main()], executor="inline")
    _write_same_size(Path("data/raw/paris.csv"), "x\n3\n2\n")
    again = checkpoint.run([pipeline.main()], executor="inline")
    assert "clean('paris')" in _ran(again)
    assert again.values[pipeline.main().id]["paris"] == 5.0


def test_a_recently_hashed_file_is_hashed_again_even_with_the_same_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git's racy-timestamp case: a file hashed within RACY_NS of its mtime could change
    again without its stat changing, so its digest is not trusted until hashed later; an
    old file's digest is trusted and it is not read again."""
    calls: list[str] = []
    real = files_module.hash_file
    monkeypatch.setattr(files_module, "hash_file", lambda p: calls.append(p) or real(p))
    cache = files_module.DigestCache(tmp_path / "digests")
    racy = tmp_path / "racy.txt"
    racy.write_text("aaaa")
    st = racy.stat()
    first = cache.digest(str(racy))
    racy.write_text("bbbb")  # same size; pretend the stat did not change at all
    assert cache.digest(str(racy), st) != first
    old = tmp_path / "old.txt"
    old.write_text("cccc")
    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 3600 * 10**9)
    cache.digest(str(old))  # hashed an hour after its last change
    cache.save()
    calls.clear()
    reloaded = files_module.DigestCache(tmp_path / "digests")
    reloaded.digest(str(old))
    assert calls == []  # trusted: one os.stat, no read
    reloaded.digest(str(racy))
    assert calls == [str(racy)]


def test_an_unchanged_file_is_not_hashed_again(pipeline: Any, later: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm run should stat input files, not read them, once their digests are trusted."""
    checkpoint.run([pipeline.main()], executor="inline")
    checkpoint.run([pipeline.main()], executor="inline")  # outputs (hashed by the worker) too
    calls: list[str] = []
    monkeypatch.setattr(files_module, "hash_file", lambda p: calls.append(p) or "")
    assert not checkpoint.run([pipeline.main()], executor="inline").ran
    assert calls == []


def test_a_sweep_over_single_files_notices_each_edit(later: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks that each read one file (checked warm in one step: a stat, a lookup) should
    re-run for exactly the file whose content changed: an edit of another size, an edit
    that keeps the size and the mtime (caught by the ctime), not a touch; a deleted file
    stops the run."""
    for i in range(3):
        Path(f"in{i}.txt").write_text(f"v{i}")

    @task
    def read(i: int):
        @requires(File(f"in{i}.txt"))
        def __(path: Path) -> str:
            return path.read_text()
        return __

    @task
    def both():
        @requires([read(i) for i in range(3)])
        def __(texts: list[str]) -> list[str]:
            return texts
        return __

    assert both().run(executor="inline") == ["v0", "v1", "v2"]
    assert not checkpoint.run([both()], executor="inline").ran  # (digests kept from now on)
    calls: list[str] = []
    real = files_module.hash_file
    monkeypatch.setattr(files_module, "hash_file", lambda p: calls.append(p) or real(p))
    assert not checkpoint.run([both()], executor="inline").ran
    assert calls == []  # the warm check read no file
    Path("in0.txt").write_text("longer")
    assert _ran(checkpoint.run([both()], executor="inline")) == {"read(0)", "both()"}
    _write_same_size(Path("in1.txt"), "w1")
    result = checkpoint.run([both()], executor="inline")
    assert _ran(result) == {"read(1)", "both()"}
    assert result.values[both().id] == ["longer", "w1", "v2"]
    os.utime("in2.txt", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not checkpoint.run([both()], executor="inline").ran
    Path("in2.txt").unlink()
    with pytest.raises(MissingInputError, match="in2.txt"):
        checkpoint.run([both()], executor="inline")


def test_one_file_becoming_a_list_of_it_makes_the_task_stale(tmp_path: Path) -> None:
    """``File(p)`` and ``[File(p)]`` read the same file but give the inner function a path
    or a list: with its code pinned (version=), the task should run again when one form
    becomes the other, as 'upstream changed'."""
    Path("a.txt").write_text("a")
    form = ["one"]

    @task(version="1")
    def kind():
        @requires(File("a.txt") if form[0] == "one" else [File("a.txt")])
        def __(x: Any) -> str:
            return type(x).__name__
        return __

    assert kind().run(executor="inline") == "PosixPath"
    assert not checkpoint.run([kind()], executor="inline").ran
    form[0] = "list"
    [node] = plan([kind()], Store.open()).nodes.values()
    assert node.reason == "upstream changed"
    assert kind().run(executor="inline") == "list"
    form[0] = "one"
    assert kind().run(executor="inline") == "PosixPath"


def test_missing_input_is_an_error_before_anything_runs(pipeline: Any, runner: CliRunner) -> None:
    """A File that does not exist should stop the run before any task runs, naming the task
    and the path (exit 2 on the command line)."""
    Path("data/raw/rome.csv").unlink()
    with pytest.raises(MissingInputError) as info:
        checkpoint.run([pipeline.main()], executor="inline")
    assert info.value.paths == ["data/raw/rome.csv"]
    assert isinstance(info.value, FileNotFoundError)
    assert "clean('rome')" in str(info.value)
    assert not Path("out").exists()  # clean('paris') did not run either
    result = runner.invoke(cli, ["run", "main"])
    assert result.exit_code == 2
    assert "data/raw/rome.csv, needed by Task clean('rome') (taskfile.clean)" in result.stderr
    ls = runner.invoke(cli, ["ls", "main"])
    assert ls.exit_code == 0 and "input missing" in ls.stdout


def test_a_directory_input_tracks_its_files(tmp_path: Path) -> None:
    """A File naming a directory should re-run on an added or edited file, not on a touch."""
    Path("shards").mkdir()
    Path("shards/a.txt").write_text("1")

    @task
    def total():
        @requires(File("shards"))
        def __(shards: Path) -> int:
            return sum(int(p.read_text()) for p in sorted(shards.iterdir()) if p.suffix == ".txt")
        return __

    assert total().run(executor="inline") == 1
    os.utime("shards/a.txt")
    assert not checkpoint.run([total()], executor="inline").ran
    Path("shards/b.txt").write_text("2")
    from checkpoint.explain import explain

    [why] = explain(plan([total()], Store.open()), Store.open())
    assert why.details == ["input directory shards changed (a file under it was added, "
                           "removed or edited)"]
    assert total().run(executor="inline") == 3
    for scratch in (".DS_Store", "._a.txt", ".a.txt.swp", ".~lock.a.txt#"):
        Path("shards", scratch).write_text("what an editor or a desktop leaves")
    Path("shards/.git").mkdir()
    Path("shards/.git/index").write_text("not data")
    assert not checkpoint.run([total()], executor="inline").ran


def test_hidden_files_of_a_directory_input_are_part_of_its_content(tmp_path: Path) -> None:
    """A Zarr v2 store read as File("store.zarr") keeps its attributes in .zattrs: an edit
    there re-runs its reader (adversary round 5, finding 13); a scratch file beside it and
    a hidden folder do not."""
    Path("store.zarr/t").mkdir(parents=True)
    Path("store.zarr/.zattrs").write_text('{"scale": 2}')
    Path("store.zarr/t/0").write_text("1 2 3")

    @task
    def load():
        @requires(File("store.zarr"))
        def __(store: Path) -> list[int]:
            scale = json.loads((store / ".zattrs").read_text())["scale"]
            return [int(x) * scale for x in (store / "t" / "0").read_text().split()]
        return __

    assert load().run(executor="inline") == [2, 4, 6]
    Path("store.zarr/.zattrs").write_text('{"scale": 10}')
    assert load().run(executor="inline") == [10, 20, 30]
    Path("store.zarr/.DS_Store").write_text("x")
    Path("store.zarr/.ipynb_checkpoints").mkdir()
    assert not checkpoint.run([load()], executor="inline").ran


def test_a_warm_directory_input_is_checked_by_one_signature(
    tmp_path: Path, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged directory input should cost a listing and a stat per file: no file
    read, no per-file entry of the digest cache loaded (one signature over the stats is
    compared); an edit that keeps size and mtime, a file replaced by a same-stat copy,
    an edit in a subdirectory and a removal should each still re-run the task."""
    Path("shards/deep").mkdir(parents=True)
    for name, value in [("a.txt", "1"), ("b.txt", "2"), ("deep/c.txt", "3")]:
        Path("shards", name).write_text(value)

    @task
    def total():
        @requires(File("shards"))
        def __(shards: Path) -> int:
            return sum(int(p.read_text()) for p in sorted(shards.rglob("*.txt")))
        return __

    assert total().run(executor="inline") == 6
    assert not checkpoint.run([total()], executor="inline").ran
    hashed: list[str] = []
    unpacked: list[bytes] = []
    real_hash, real_unpack = files_module.hash_file, files_module._unpack
    monkeypatch.setattr(files_module, "hash_file", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(files_module, "_unpack",
                        lambda b: unpacked.append(b) or real_unpack(b))
    assert not checkpoint.run([total()], executor="inline").ran
    assert (hashed, unpacked) == ([], [])
    os.utime("shards/a.txt")  # touch: stats differ, contents do not
    assert not checkpoint.run([total()], executor="inline").ran
    assert hashed == ["shards/a.txt"]
    _write_same_size(Path("shards/b.txt"), "5")
    assert total().run(executor="inline") == 9
    st = os.stat("shards/deep/c.txt")
    Path("copy.txt").write_text("7")
    os.utime("copy.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace("copy.txt", "shards/deep/c.txt")  # another inode, same size and mtime
    assert total().run(executor="inline") == 13
    Path("shards/a.txt").unlink()
    assert total().run(executor="inline") == 12


def test_a_leaf_whose_entry_recorded_another_set_of_inputs_runs_again(tmp_path: Path) -> None:
    """A task whose stored result recorded an input it no longer reads (the code pinned by
    version=, the list of files shorter) should run again, as 'upstream changed'; with
    its inputs as recorded it should be fresh."""
    for name in ("a.txt", "b.txt"):
        Path(name).write_text(name)
    names = ["a.txt", "b.txt"]

    @task(version="1")
    def count():
        @requires([File(n) for n in names])
        def __(paths: list[Path]) -> int:
            return len(paths)
        return __

    assert count().run(executor="inline") == 2
    assert not checkpoint.run([count()], executor="inline").ran
    names.pop()
    [node] = plan([count()], Store.open()).nodes.values()
    assert node.reason == "upstream changed"
    assert count().run(executor="inline") == 1


def test_a_directory_input_leaves_out_another_tasks_output_directory(tmp_path: Path) -> None:
    """A directory input holding another task's Product directory should track it through
    its producer only: the files the producer writes there must not count as an edit of
    the input (which re-ran the reader on the next run, with nothing changed)."""
    Path("data").mkdir()
    Path("data/a.txt").write_text("1")
    Path("seed.txt").write_text("s1")

    @task
    def make():
        @requires(Product("data/out/"))
        def __(out: Path) -> str:
            (out / "x.txt").write_text(Path("seed.txt").read_text())
            return str(out)
        return __

    @task
    def use():
        @requires(make())
        @requires(File("data"))
        def __(made: str, data: Path) -> int:
            return len(list(data.rglob("*.txt")))
        return __

    assert use().run(executor="inline") == 2
    assert not checkpoint.run([use()], executor="inline").ran
    Path("seed.txt").write_text("s2")  # make() reads it untracked: force it
    checkpoint.run([make()], executor="inline", force=True)
    assert _ran(checkpoint.run([use()], executor="inline")) == {"use()"}  # through make()
    assert not checkpoint.run([use()], executor="inline").ran
    Path("data/b.txt").write_text("2")  # the input's own files still count
    assert _ran(checkpoint.run([use()], executor="inline")) == {"use()"}


def test_a_broken_symlink_in_a_directory_input_is_left_out(tmp_path: Path) -> None:
    """A dangling symlink under a directory input should count as no file (as a pattern's
    match does), not end the run with a traceback; once it points to a file, that file
    counts."""
    Path("data").mkdir()
    Path("data/a.txt").write_text("1")
    os.symlink("nowhere.txt", "data/link.txt")

    @task
    def files_in():
        @requires(File("data"))
        def __(data: Path) -> int:
            return sum(1 for p in data.iterdir() if p.exists())
        return __

    assert files_in().run(executor="inline") == 1
    assert not checkpoint.run([files_in()], executor="inline").ran
    Path("data/nowhere.txt").write_text("2")
    assert files_in().run(executor="inline") == 3


def test_a_glob_input_arrives_as_a_sorted_list_and_tracks_its_matches(tmp_path: Path) -> None:
    """File("data/*.csv") should give the matching paths, and re-run when the set changes."""
    Path("data").mkdir()
    Path("data/b.csv").write_text("b")
    Path("data/a.csv").write_text("a")
    Path("data/notes.txt").write_text("n")

    @task
    def names():
        @requires(File("data/*.csv"))
        def __(paths: list[Path]) -> list[str]:
            return [str(p) for p in paths]
        return __

    assert names().run(executor="inline") == ["data/a.csv", "data/b.csv"]
    Path("data/more.txt").write_text("m")
    assert not checkpoint.run([names()], executor="inline").ran
    Path("data/c.csv").write_text("c")
    assert names().run(executor="inline") == ["data/a.csv", "data/b.csv", "data/c.csv"]


def test_a_glob_that_matches_nothing_is_a_missing_input(tmp_path: Path) -> None:
    """A pattern matching no file should be reported like a missing file."""

    @task
    def names():
        @requires(File("nowhere/*.csv"))
        def __(paths: list[Path]) -> int:
            return len(paths)
        return __

    with pytest.raises(MissingInputError, match=r"nowhere/\*\.csv"):
        names().run(executor="inline")


# --- outputs --------------------------------------------------------------------------------


def test_deleted_output_reruns_its_producer(pipeline: Any) -> None:
    """After out/rome.csv is deleted, clean('rome') should run again and recreate it; what
    depends on it is kept, since it wrote the same file and returned the same value."""
    checkpoint.run([pipeline.main()], executor="inline")
    Path("out/rome.csv").unlink()
    nodes = plan([pipeline.main()], Store.open()).nodes
    assert nodes[pipeline.clean("rome").id].reason == "output changed"
    again = checkpoint.run([pipeline.main()], executor="inline")
    assert _ran(again) == {"clean('rome')"}
    assert {repr(t) for t in again.kept} == {"mean('rome')", "main()"}
    assert Path("out/rome.csv").read_text() == "10\n14\n"


def test_a_producer_that_writes_other_content_reruns_its_consumers(pipeline: Any) -> None:
    """clean(city) returns the same path whatever it writes: its consumers should re-run
    when the file it wrote differs (its stamp names its outputs), not be cut off."""
    checkpoint.run([pipeline.main()], executor="inline")
    Path("data/raw/rome.csv").write_text("x\n5\n9\n")
    again = checkpoint.run([pipeline.main()], executor="inline")
    assert _ran(again) == {"clean('rome')", "mean('rome')", "main()"}
    assert not again.kept
    assert again.values[pipeline.main().id]["rome"] == 14.0


def test_hand_edited_output_reruns_its_producer(pipeline: Any, runner: CliRunner) -> None:
    """A declared output changed by something else should make its producer stale."""
    checkpoint.run([pipeline.main()], executor="inline")
    Path("out/paris.csv").write_text("100\n")
    result = runner.invoke(cli, ["why", "main"])
    assert "output file out/paris.csv changed since the task wrote it" in result.stdout
    checkpoint.run([pipeline.main()], executor="inline")
    assert Path("out/paris.csv").read_text() == "2\n4\n"



def test_hidden_files_of_a_product_directory_are_part_of_its_content(tmp_path: Path) -> None:
    """A Product directory belongs to its task, hidden files too (Zarr v2 keeps its metadata
    in .zattrs/.zarray): a re-run that changes only them is not cut off, and a hand edit of
    one makes the producer stale."""
    Path("cfg.txt").write_text("1")

    @task
    def write():
        @requires(File("cfg.txt"))
        @requires(Product("out/store.zarr/"))
        def __(cfg: Path, out: Path) -> str:
            (out / "0").write_text("1 2 3")
            (out / ".zattrs").write_text(cfg.read_text())
            (out / ".meta").mkdir()
            (out / ".meta" / "v").write_text("v")
            return str(out)
        return __

    @task
    def scaled():
        @requires(write())
        def __(store: str) -> int:
            return 6 * int((Path(store) / ".zattrs").read_text())
        return __

    assert scaled().run(executor="inline") == 6
    Path("cfg.txt").write_text("10")
    assert scaled().run(executor="inline") == 60
    for hidden in ("out/store.zarr/.zattrs", "out/store.zarr/.meta/v"):
        Path(hidden).write_text("edited by hand")   # write() puts it back; scaled() is kept
        assert _ran(checkpoint.run([scaled()], executor="inline")) == {"write()"}
    assert scaled().run(executor="inline") == 60


def test_consumer_of_a_produced_file_gets_the_producer_as_prerequisite(pipeline: Any) -> None:
    """mean(city) requires only File("out/{city}.csv"): the producer clean(city), if in the
    DAG, becomes its prerequisite and comes first, even when listed after it."""
    nodes = expand([pipeline.mean("paris"), pipeline.clean("paris")])
    order = list(nodes)
    clean_id, mean_id = pipeline.clean("paris").id, pipeline.mean("paris").id
    assert nodes[mean_id].deps == [clean_id]
    assert order.index(clean_id) < order.index(mean_id)
    result = checkpoint.run([pipeline.mean("paris"), pipeline.clean("paris")], executor="thread")
    assert result.values[mean_id] == 3.0


def test_failing_producer_leaves_nothing_marked_good(tmp_path: Path) -> None:
    """A producer that fails after writing part of its output should stay stale, and so
    should its consumer, whether or not it had a good result before."""
    Path("in.txt").write_text("good")

    @task
    def produce():
        @requires(File("in.txt"))
        @requires(Product("out/result.txt"))
        def __(src: Path, out: Path) -> None:
            text = src.read_text()
            out.write_text(text[:2])
            if text == "bad!":
                raise ValueError("half-way")
            out.write_text(text)
        return __

    @task
    def consume():
        @requires(File("out/result.txt"))
        def __(path: Path) -> str:
            return path.read_text()
        return __

    targets = [consume(), produce()]
    assert checkpoint.run(targets, executor="inline").values[consume().id] == "good"
    Path("in.txt").write_text("bad!")
    with pytest.raises(ValueError, match="half-way"):
        checkpoint.run(targets, executor="inline")
    assert Path("out/result.txt").read_text() == "ba"
    nodes = plan(targets, Store.open()).nodes
    assert nodes[produce().id].reason == "input changed"
    assert nodes[consume().id].reason == "upstream re-run"
    # Put the input back as it was: the half-written output still keeps the producer stale.
    Path("in.txt").write_text("good")
    nodes = plan(targets, Store.open()).nodes
    assert nodes[produce().id].reason == "output changed"
    assert checkpoint.run(targets, executor="inline").values[consume().id] == "good"


def test_failing_first_run_records_no_output(tmp_path: Path) -> None:
    """A producer that fails on its first run should have no entry (its output is not good)."""

    @task
    def produce():
        @requires(Product("out/x.txt"))
        def __(out: Path) -> None:
            out.write_text("partial")
            raise RuntimeError("crash")
        return __

    result = checkpoint.run([produce()], executor="inline", raise_on_failure=False)
    assert result.failed
    assert plan([produce()], Store.open()).nodes[produce().id].reason == "missing"


def test_a_declared_output_the_task_did_not_write_fails_it(tmp_path: Path) -> None:
    """Returning without writing a declared output should fail the task, naming the file."""

    @task
    def lazy():
        @requires(Product("out/never.txt"))
        def __(out: Path) -> int:
            return 1
        return __

    with pytest.raises(MissingOutputError, match="did not write its declared output out/never.txt"):
        lazy().run(executor="inline")
    assert Path("out").is_dir()  # its directory was made for it


def test_a_file_output_made_a_directory_fails_the_task(tmp_path: Path) -> None:
    """A file Product the task fills as a directory is never emptied before a run (files of
    an older configuration would outlive it): the task fails, naming the directory form."""
    alphas = [1, 2, 3]

    @task
    def figs():
        @requires(Product("out/figs"))
        def __(d: Path) -> int:
            d.mkdir(parents=True, exist_ok=True)
            for a in alphas:
                (d / f"fig{a}.txt").write_text(str(a))
            return len(alphas)
        return __

    with pytest.raises(MissingOutputError, match=r"out/figs is a directory.*Product\('out/figs/'\)"):
        figs().run(executor="inline")
    assert plan([figs()], Store.open()).nodes[figs().id].reason == "missing"


def test_directory_product_and_directory_input_linked(tmp_path: Path) -> None:
    """A directory input covering another task's declared outputs should depend on it."""

    @task
    def shard(i: int):
        @requires(Product(f"shards/{i}.txt"))
        def __(out: Path) -> None:
            out.write_text(str(i))
        return __

    @task
    def total():
        @requires(File("shards"))
        def __(shards: Path) -> int:
            return sum(int(p.read_text()) for p in shards.iterdir())
        return __

    targets = [total(), *[shard(i) for i in range(3)]]
    nodes = expand(targets)
    assert set(nodes[total().id].deps) == {shard(i).id for i in range(3)}
    assert checkpoint.run(targets, executor="thread").values[total().id] == 3
    assert not checkpoint.run(targets, executor="thread").ran


def test_two_producers_of_one_file_are_refused(tmp_path: Path) -> None:
    """Two tasks of a DAG declaring the same output should be a definition error."""

    @task
    def write(n: int):
        @requires(Product("out/same.txt"))
        def __(out: Path) -> None:
            out.write_text(str(n))
        return __

    with pytest.raises(TaskDefinitionError, match="both declare the output out/same.txt"):
        expand([write(1), write(2)])


def test_clear_keeps_declared_outputs_and_says_so(pipeline: Any, runner: CliRunner) -> None:
    """`checkpoint clear` should remove entries, never the files the tasks wrote, and say so."""
    checkpoint.run([pipeline.main()], executor="inline")
    result = runner.invoke(cli, ["clear", "-y", "clean"])
    assert result.exit_code == 0, result.output
    assert "Did not delete 2 declared output files of these entries" in result.stderr
    assert Path("out/paris.csv").exists() and Path("out/rome.csv").exists()
    as_json = runner.invoke(cli, ["clear", "--all", "-y", "--json"])
    assert '"outputs": []' in as_json.stdout


# --- spelling and errors --------------------------------------------------------------------


def test_files_in_lists_dicts_and_class_tasks(tmp_path: Path) -> None:
    """File and Product mix with tasks in lists and dicts, and work as class attributes."""
    for name in "ab":
        Path(f"{name}.txt").write_text(name * 2)

    @task
    def length(name: str):
        @requires({"src": File(f"{name}.txt"), "more": [File("a.txt")]})
        def __(files: dict[str, Any]) -> int:
            return len(files["src"].read_text()) + len(files["more"][0].read_text())
        return __

    @task
    class Copy:
        src: checkpoint.Requires[Path] = checkpoint.requires()
        dst: checkpoint.Requires[Path] = checkpoint.requires()
        n: checkpoint.Requires[int] = checkpoint.requires()

        def __init__(self, name: str) -> None:
            self.src = File(f"{name}.txt")
            self.dst = Product(f"copies/{name}.txt")
            self.n = length(name)

        def run(self) -> int:
            self.dst.write_text(self.src.read_text())
            return self.n

    assert Copy("b").run(executor="inline") == 4
    assert Path("copies/b.txt").read_text() == "bb"
    Path("b.txt").write_text("bbb")
    assert Copy("b").run(executor="inline") == 5


def test_requirement_errors_point_to_file() -> None:
    """A bare path in @requires, and a Path argument, should point to File()."""
    with pytest.raises(InvalidRequirementError, match=r"write File\('data.csv'\)"):
        requires("data.csv")
    with pytest.raises(InvalidRequirementError, match="glob pattern"):
        Product("out/*.csv")
    with pytest.raises(InvalidRequirementError, match="takes a path"):
        File(3)  # type: ignore[arg-type]

    @task
    def load(path: str):
        def __() -> str:
            return path
        return __

    with pytest.raises(UnserializableArgumentError, match=r"@requires\(File\('data.csv'\)\)"):
        load(Path("data.csv"))  # type: ignore[arg-type]


# --- the project root as working directory -----------------------------------------------------


def test_running_from_a_subdirectory_sees_the_same_files(tmp_path: Path, runner: CliRunner,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`checkpoint run` from a subdirectory should find the taskfile's files (it works in
    the taskfile's directory) and give the same result; the caller's cwd is restored."""
    _project(tmp_path)
    (tmp_path / "notes").mkdir()
    monkeypatch.chdir(tmp_path / "notes")
    result = runner.invoke(cli, ["run", "--executor", "inline", "main"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "{'paris': 3.0, 'rome': 12.0}"
    assert Path.cwd() == tmp_path / "notes"
    assert (tmp_path / "out" / "paris.csv").exists() and not Path("out").exists()
    monkeypatch.chdir(tmp_path)
    again = runner.invoke(cli, ["run", "--executor", "inline", "main"])
    assert "Nothing to run" in again.stderr


CWD_TASKFILE = '''
import os
from checkpoint import requires, task


@task
def where(i: int):
    def __() -> str:
        return os.getcwd()
    return __


@task
def main():
    @requires([where(i) for i in range(4)])
    def __(dirs: list) -> str:
        return ",".join(sorted(set(dirs)))
    return __
'''


def test_process_workers_run_in_the_project_root(tmp_path: Path) -> None:
    """The console script started from a subdirectory: every worker process should run in
    the taskfile's directory."""
    (tmp_path / "taskfile.py").write_text(CWD_TASKFILE)
    sub = tmp_path / "sub"
    sub.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}
    out = subprocess.run(
        [sys.executable, "-m", "checkpoint", "run", "--executor", "process", "-j", "2",
         "--no-progress", "main"],
        cwd=sub, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path.resolve())


def test_workers_started_elsewhere_move_to_the_project_root(tmp_path: Path, make_module: Any,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A process pool whose workers were started in another directory should still run
    tasks in the directory of the run (the library's project root: the current one)."""
    module = make_module("cwdmod", CWD_TASKFILE)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert pool.submit(os.getcwd).result() == str(other)  # workers start here
        monkeypatch.chdir(tmp_path)
        value = module.main().run(executor=pool)
    assert value == str(tmp_path)


def test_library_paths_are_relative_to_the_current_directory(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a taskfile, File paths resolve against the current directory, and results
    keep relative paths (a project that moves keeps them)."""
    Path("in.txt").write_text(textwrap.dedent("hello"))

    @task
    def read():
        @requires(File("in.txt"))
        def __(path: Path) -> str:
            return f"{path}:{path.read_text()}"
        return __

    assert read().run(executor="process", max_workers=1) == "in.txt:hello"
    meta = Store.open().get_meta(read.dirname, read().id)
    assert meta is not None and list(meta.deps) == ["file:in.txt"]


FOLDS = '''
from pathlib import Path
from checkpoint import Product, requires, task

K = {k}


@task
def folds():
    @requires(Product("out/folds/"))
    def __(out: Path) -> int:
        for i in range(K):
            (out / f"fold{{i}}.txt").write_text(str(i))
        return K
    return __


@task
def mean():
    @requires(folds())
    def __(k: int) -> float:
        values = [int(p.read_text()) for p in sorted(Path("out/folds").iterdir())]
        return sum(values) / len(values)
    return __
'''


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_product_directory_is_emptied_before_its_task_runs(
    tmp_path: Path, make_module: Any, executor: str
) -> None:
    """Files an earlier run wrote into a Product("dir/") should not outlive it (snakemake
    removes a directory() output before its job runs); nothing outside it is touched."""
    Path("out").mkdir()
    Path("out/keep.txt").write_text("mine")
    module = make_module("folding", FOLDS.format(k=5))
    assert module.mean().run(executor=executor) == 2.0
    module = make_module("folding", FOLDS.format(k=3))
    assert module.mean().run(executor=executor) == 1.0
    assert sorted(p.name for p in Path("out/folds").iterdir()) == ["fold0.txt", "fold1.txt",
                                                                   "fold2.txt"]
    assert Path("out/keep.txt").read_text() == "mine"


def test_a_product_directory_that_holds_the_project_is_refused(tmp_path: Path) -> None:
    """Product("./") would empty the project (taskfile, cache) before its task runs."""

    @task
    def everything():
        @requires(Product("./"))
        def __(out: Path) -> None:
            (out / "x.txt").write_text("x")
        return __

    Path("precious.txt").write_text("keep")
    with pytest.raises(TaskDefinitionError, match=r"everything\(\).* declares the directory \. "):
        everything().run(executor="inline")
    assert Path("precious.txt").read_text() == "keep"


def test_overlapping_products_of_two_tasks_are_refused(tmp_path: Path) -> None:
    """A file inside another task's Product directory has two producers: refused at plan
    time, naming both tasks."""

    @task
    def figs():
        @requires(Product("out/"))
        def __(out: Path) -> None:
            (out / "fig.txt").write_text("fig")
        return __

    @task
    def table():
        @requires(Product("out/table.csv"))
        def __(out: Path) -> None:
            out.write_text("1")
        return __

    with pytest.raises(TaskDefinitionError, match=r"figs\(\).*out/.*table\(\).*out/table.csv"):
        expand([figs(), table()])
    with pytest.raises(TaskDefinitionError, match=r"figs\(\).*table\(\)"):
        expand([table(), figs()])


def test_an_input_inside_a_product_directory_depends_on_its_producer(tmp_path: Path) -> None:
    """A File inside another task's Product directory is that task's output: its producer
    comes first. Inside the task's own Product directory it is refused (the directory is
    emptied before the task runs)."""

    @task
    def shards():
        @requires(Product("shards/"))
        def __(out: Path) -> None:
            (out / "0.txt").write_text("7")
        return __

    @task
    def first():
        @requires(File("shards/0.txt"))
        def __(path: Path) -> int:
            return int(path.read_text())
        return __

    @task
    def own():
        @requires(File("mine/raw.txt"))
        @requires(Product("mine/"))
        def __(raw: Path, out: Path) -> None:
            (out / "copy.txt").write_text(raw.read_text())
        return __

    nodes = expand([first(), shards()])
    assert nodes[first().id].deps == [shards().id]
    assert checkpoint.run([first(), shards()], executor="inline").values[first().id] == 7
    with pytest.raises(TaskDefinitionError, match=r"own\(\).* declares mine/raw.txt both as an input"):
        expand([own()])


EDITED = '''
from pathlib import Path
from checkpoint import File, requires, task


@task
def load():
    @requires(File("data.csv"))
    def __(path: Path) -> str:
        if path.read_text() == "1":
            path.write_text("2")  # someone edits the input while the task runs
        return path.read_text()
    return __
'''


def test_an_input_edited_while_its_task_runs_is_not_stored_as_fresh(
    tmp_path: Path, runner: CliRunner
) -> None:
    """The result computed from the edited content must not be recorded against the digest
    planning took: after the edit is undone, the task runs again (and the run says so)."""
    (tmp_path / "taskfile.py").write_text(EDITED)
    Path("data.csv").write_text("1")
    out = runner.invoke(cli, ["run", "--executor", "inline", "load"])
    assert out.exit_code == 0, out.output
    assert "warning: The input data.csv of load() changed while it ran" in out.stderr
    Path("data.csv").write_text("1")  # the edit is undone
    listed = runner.invoke(cli, ["ls", "load"])
    assert "input changed" in listed.stdout
    Path("data.csv").write_text("3")
    again = runner.invoke(cli, ["run", "--executor", "inline", "load"])
    assert again.stdout.strip() == "3"
    assert "changed while it ran" not in again.stderr
    assert "Nothing to run" in runner.invoke(cli, ["run", "--executor", "inline", "load"]).stderr


CHDIR = '''
import os
from checkpoint import File, requires, task


@task
def run_tool():
    def __() -> str:
        os.chdir("sub")  # legacy code that runs a tool from its folder
        return "ok"
    return __


@task
def read():
    @requires(run_tool())
    @requires(File("data.csv"))
    def __(_, path) -> str:
        return path.read_text().strip()
    return __
'''


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_task_that_changes_directory_does_not_move_the_next_one(
    tmp_path: Path, make_module: Any, executor: str
) -> None:
    """Every task starts in the project root, whatever the task before it on the same
    worker did with os.chdir; in-process executors give the directory back after it."""
    (tmp_path / "sub").mkdir()
    Path("data.csv").write_text("top")
    Path("sub/data.csv").write_text("SUB")
    module = make_module("chdirs", CHDIR)
    assert module.read().run(executor=executor, max_workers=1) == "top"
    assert os.getcwd() == str(tmp_path)


# --- patterns and the producers of their matches --------------------------------------------


def test_pattern_matching_follows_glob(tmp_path: Path) -> None:
    """Whether a pattern covers a declared output is decided as glob.glob(recursive=True)
    decides what it matches: '**' is zero or more directories, '*' stays within one name,
    hidden names match only a pattern that names them."""
    import glob

    paths = ["out/a.csv", "out/sub/b.csv", "out/sub/deep/c.csv", "out/.h.csv", "out/.d/e.csv",
             "out/x.txt", "top.csv", "out/sub/.f.csv"]
    for p in paths:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text("x")
    patterns = ["out/**/*.csv", "out/*.csv", "*/*.csv", "**/*.csv", "out/**", "**", "*.csv",
                "out/*/*.csv", "out/.*", "out/.*/*.csv", "out/**/.*.csv", "o?t/[a-b].csv",
                "out/[!a]*.csv", "out/sub/**/*.csv", "**/deep/*.csv", "out/**/sub/*.csv"]
    for pattern in patterns:
        expected = {p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)}
        got = {p for p in paths if files_module.glob_match(pattern, p)}
        assert got == expected, pattern


PRODUCE_CSV = '''
from pathlib import Path
from checkpoint import File, Product, requires, task


@task
def produce(name: str):
    @requires(Product(f"out/{name}.csv"))
    def __(out: Path) -> None:
        # What it writes depends on a file it does not declare: a forced re-run changes it.
        text = out.stem
        out.write_text(text.upper() if Path("case.txt").read_text() == "upper" else text)
    return __


@task
def collect(pattern: str):
    @requires(File(pattern))
    def __(paths: list) -> list:
        return [p.read_text() for p in paths]
    return __


@task
def main(pattern: str):
    @requires(collect(pattern))
    def __(got: list) -> list:
        return got
    return __
'''


def test_a_recursive_pattern_depends_on_the_producers_of_its_matches(
    tmp_path: Path, make_module: Any
) -> None:
    """File("out/**/*.csv") matches out/a.csv ('**' may be no directory at all): its
    producer comes first, from scratch, and when it re-runs in the same run the pattern's
    task sees what it wrote."""
    module = make_module("producing", PRODUCE_CSV)
    Path("case.txt").write_text("lower")
    producers = [module.produce("a"), module.produce("b")]
    targets = [*producers, module.main("out/**/*.csv")]
    nodes = expand(targets)
    assert set(nodes[module.collect("out/**/*.csv").id].deps) == {p.id for p in producers}
    result = checkpoint.run(targets, executor="inline")
    assert result.values[module.main("out/**/*.csv").id] == ["a", "b"]
    Path("case.txt").write_text("upper")
    # Forced: the producers and main(), not collect() (only a prerequisite of a target).
    result = checkpoint.run(targets, executor="inline", force=True)
    assert result.values[module.main("out/**/*.csv").id] == ["A", "B"]


SHARDS = '''
from pathlib import Path
from checkpoint import File, Product, requires, task


@task
def split():
    @requires(File("in.txt"))
    @requires(Product("out/shards/"))
    def __(src: Path, out: Path) -> None:
        for i, word in enumerate(src.read_text().split()):
            (out / f"{i}.csv").write_text(word)
    return __


@task
def collect(pattern: str):
    @requires(File(pattern))
    def __(paths) -> list:
        if isinstance(paths, Path):  # a directory
            paths = sorted(paths.rglob("*.csv"))
        return [p.read_text() for p in paths if p.suffix == ".csv"]
    return __


@task
def main(pattern: str):
    @requires(split())
    @requires(collect(pattern))
    def __(_: None, got: list) -> list:
        return got
    return __
'''


@pytest.mark.parametrize("pattern", ["out/shards/*.csv", "out/**/*.csv", "out/*/[0-9].csv", "out/**",
                                     "out"])
def test_a_pattern_or_directory_over_a_product_directory_depends_on_its_producer(
    tmp_path: Path, make_module: Any, pattern: str
) -> None:
    """A pattern inside (or reaching into) another task's Product directory, or a directory
    holding one, reads what that task writes: its producer comes first, from scratch and
    after an edit upstream; the files are tracked through the producer (no "changed while it
    ran" for what the producer wrote, no needless re-run next time)."""
    module = make_module("sharding", SHARDS)
    Path("in.txt").write_text("a b")
    nodes = expand([module.main(pattern)])
    assert nodes[module.collect(pattern).id].deps == [module.split().id]
    assert module.main(pattern).run(executor="inline") == ["a", "b"]
    Path("in.txt").write_text("x y")
    events: list[Any] = []
    result = checkpoint.run([module.main(pattern)], executor="inline", subscribers=[events.append])
    assert result.values[module.main(pattern).id] == ["x", "y"]
    assert not [e for e in events if type(e).__name__ == "InputChanged"]
    assert not checkpoint.run([module.main(pattern)], executor="inline").ran



def test_a_pattern_inside_its_own_product_directory_is_refused(tmp_path: Path) -> None:
    """As a file inside it: the directory is emptied before the task reads it. A pattern
    that merely reaches into it (and elsewhere) is not refused."""

    @task
    def own(pattern: str):
        @requires(File(pattern))
        @requires(Product("mine/"))
        def __(paths: list[Path], out: Path) -> None:
            (out / "x.csv").write_text("x")
        return __

    with pytest.raises(TaskDefinitionError, match=r"own\('mine/\*.csv'\) .* declares mine both as an input"):
        expand([own("mine/*.csv")])
    expand([own("**/*.csv")])


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_retry_starts_without_what_the_failed_attempt_wrote(tmp_path: Path, executor: str) -> None:
    """A Product file is removed before each attempt (as a Product directory is emptied):
    a task that adds to its output (SQLite, an archive, an appended log) never has a failed
    attempt's part recorded as good."""

    @task(retries=1)
    def build():
        @requires(Product("out/rows.txt"))
        def __(out: Path) -> int:
            with out.open("a") as fh:
                fh.write("row\n")
            if not Path("failed-once").exists():
                Path("failed-once").write_text("")
                raise ConnectionError("transient")
            return len(out.read_text().splitlines())
        return __

    assert build().run(executor=executor) == 1
    assert Path("out/rows.txt").read_text() == "row\n"


def test_a_product_directory_that_holds_the_cache_is_refused(tmp_path: Path, runner: CliRunner) -> None:
    """Product("build/") with the cache in build/cache would empty the cache before its task
    runs (every run recomputing everything): refused as the project is, and so is an output
    inside the cache."""

    @task
    def render(where: str):
        @requires(Product(where))
        def __(out: Path) -> None:
            (out / "index.html").write_text("x")
        return __

    @task
    def first():
        def __() -> int:
            return 1
        return __

    assert checkpoint.run([first()], executor="inline", cache_dir="build/cache").ran
    for where in ("build/", "build/cache/checkpoint/x/"):
        with pytest.raises(TaskDefinitionError, match=r"render\(.* declares the directory "
                           r"build.* as its output \(Product\), which .* the cache"):
            checkpoint.run([render(where), first()], executor="inline", cache_dir="build/cache")
    assert not checkpoint.run([first()], executor="inline", cache_dir="build/cache").ran



@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
@pytest.mark.parametrize("link, target, what", [
    ("results", os.pardir, "holds the project"),      # results/ -> a folder above the project
    ("out", os.curdir, "holds the project"),          # out/ -> the project itself
    ("cachelink", ".cache", "holds the cache"),       # a link to the cache's directory
    ("storelink", ".cache/checkpoint/t", "is inside the cache"),
])
def test_a_product_directory_reached_through_a_symlink_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str, target: str, what: str
) -> None:
    """Paths are compared as they really are: a Product directory that is a link to the
    project, a folder holding it, or the cache is refused before anything runs, and nothing
    is deleted (emptying it would follow the link)."""
    project = tmp_path / "proj"
    project.mkdir()
    (tmp_path / "sibling.txt").write_text("thesis")
    monkeypatch.chdir(project)
    monkeypatch.setenv("CP_CACHE_DIR", str(project / ".cache"))
    Path("data.csv").write_text("1,2,3")

    @task
    def load():
        @requires(File("data.csv"))
        def __(src: Path) -> str:
            return src.read_text()
        return __

    @task
    def report():
        @requires(load())
        @requires(Product(link + "/"))
        def __(text: str, out: Path) -> str:
            (out / "report.txt").write_text(text)
            return "ok"
        return __

    assert load().run(executor="inline") == "1,2,3"
    Path(".cache/checkpoint/t").mkdir(exist_ok=True)
    os.symlink(target, link)
    with pytest.raises(TaskDefinitionError, match=rf"report\(\).* declares the directory {link} as "
                       rf"its output \(Product\), which {what}.*symbolic link"):
        report().run(executor="inline")
    assert Path("data.csv").read_text() == "1,2,3"
    assert (tmp_path / "sibling.txt").read_text() == "thesis"
    assert not checkpoint.run([load()], executor="inline").ran   # the cache is intact


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_a_product_file_reached_through_a_symlink_into_the_cache_is_refused(tmp_path: Path) -> None:
    """A file output whose directory is (through a link) inside the cache is refused too."""
    os.symlink(".cache", "cachelink")

    @task
    def write():
        @requires(Product("cachelink/checkpoint/x.txt"))
        def __(out: Path) -> None:
            out.write_text("x")
        return __

    with pytest.raises(TaskDefinitionError, match=r"declares cachelink/checkpoint/x.txt as its "
                       r"output \(Product\), which is inside the cache"):
        write().run(executor="inline")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_emptying_a_product_directory_never_reaches_what_it_must_keep(tmp_path: Path) -> None:
    """Where the task runs, a Product directory that (now) holds the project or the cache is
    not emptied: the task fails, nothing deleted (a link changed after planning). What is
    emptied is the directory the link leads to, nothing else."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj/taskfile.py").write_text("x")
    os.symlink("proj", "up")
    product = Product("up/")
    with pytest.raises(TaskDefinitionError, match=r"Product\('up/'\) is the directory .*proj, "
                       r"which holds .*proj/sub.*nothing was deleted"):
        product.value(keep=(str(tmp_path / "proj" / "sub"),))
    assert (tmp_path / "proj/taskfile.py").read_text() == "x"
    (tmp_path / "proj/inner").mkdir()
    (tmp_path / "proj/inner/f.txt").write_text("f")
    os.symlink(str(tmp_path / "proj"), "proj/inner/back")   # a link inside: removed, not followed
    assert product.value(keep=(str(tmp_path / "elsewhere"),)) == Path("up")
    assert not os.listdir("proj") and Path("up").is_symlink()


FIFO_TASKFILE = '''
from pathlib import Path
from checkpoint import File, requires, task


@task
def names(path: str):
    @requires(File(path))
    def __(d: Path) -> list:
        return sorted(p.name for p in d.iterdir())
    return __
'''


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_named_pipe_in_an_input_directory_counts_by_name(tmp_path: Path) -> None:
    """A FIFO under a directory input is listed in its manifest without being read (reading
    it waited for a writer for ever); a File naming one is refused, naming it."""
    (tmp_path / "taskfile.py").write_text(FIFO_TASKFILE)
    Path("data").mkdir()
    Path("data/a.txt").write_text("a")
    os.mkfifo("data/pipe")

    def run(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "checkpoint", "run", "--no-progress", target],
                              capture_output=True, text=True, timeout=60)

    out = run("names('data')")
    assert (out.returncode, out.stdout) == (0, "['a.txt', 'pipe']\n"), out.stderr
    assert "Nothing to run" in run("names('data')").stderr
    os.unlink("data/pipe")
    assert run("names('data')").stdout == "['a.txt']\n"  # the manifest changed
    os.mkfifo("data/pipe")
    out = run("names('data/pipe')")
    assert out.returncode == 2
    assert "File('data/pipe') names a named pipe, not a file or a directory" in out.stderr


# --- directories: their subdirectories count ------------------------------------------------


def test_the_subdirectories_of_a_product_directory_are_part_of_its_content(tmp_path: Path) -> None:
    """One folder per class (the ImageFolder layout), most of them empty so far: a re-run
    that makes other folders with the same files is a new output, so the task that lists
    the folders is not kept by early cutoff (adv4 09)."""
    Path("classes.txt").write_text("cat dog bird")

    @task
    def build():
        @requires(File("classes.txt"))
        @requires(Product("dataset/"))
        def __(classes: Path, out: Path) -> None:
            for name in classes.read_text().split():
                (out / name).mkdir()
            (out / "cat" / "img0.txt").write_text("meow")
        return __

    @task
    def n_classes():
        @requires(build())
        def __(_: None) -> list[str]:
            return sorted(p.name for p in Path("dataset").iterdir() if p.is_dir())
        return __

    assert n_classes().run(executor="inline") == ["bird", "cat", "dog"]
    Path("classes.txt").write_text("cat dog")
    assert n_classes().run(executor="inline") == ["cat", "dog"]
    Path("dataset/dog").rmdir()  # by hand: the producer is stale, and puts it back
    assert _ran(checkpoint.run([n_classes()], executor="inline")) == {"build()"}
    assert sorted(os.listdir("dataset")) == ["cat", "dog"]


def test_the_subdirectories_of_a_directory_input_are_part_of_its_content(tmp_path: Path) -> None:
    """A new empty folder under a File directory (a Hive partition yet without files) and a
    renamed one re-run the task that lists them; a hidden one does not."""
    Path("data/a").mkdir(parents=True)
    Path("data/a/x.txt").write_text("1")

    @task
    def parts():
        @requires(File("data"))
        def __(data: Path) -> list[str]:
            return sorted(p.name for p in data.iterdir() if p.is_dir())
        return __

    assert parts().run(executor="inline") == ["a"]
    assert not checkpoint.run([parts()], executor="inline").ran
    Path("data/b").mkdir()
    assert parts().run(executor="inline") == ["a", "b"]
    Path("data/b").rename("data/c")
    assert parts().run(executor="inline") == ["a", "c"]
    Path("data/a/deeper").mkdir()  # deeper down too
    assert _ran(checkpoint.run([parts()], executor="inline")) == {"parts()"}
    Path("data/.hidden").mkdir()
    assert not checkpoint.run([parts()], executor="inline").ran


def test_a_directory_record_of_the_digest_cache_made_before_folders_counted_is_not_used(
    tmp_path: Path, later: None
) -> None:
    """A digest cache from an older version holds manifests without the folders, under the
    signature of the same listing: such a record is never taken for the directory's
    manifest (the task would run again for nothing, or a folder would go unseen)."""
    Path("data/a").mkdir(parents=True)
    Path("data/a/x.txt").write_text("1")

    @task
    def parts():
        @requires(File("data"))
        def __(data: Path) -> list[str]:
            return sorted(p.name for p in data.iterdir())
        return __

    assert parts().run(executor="inline") == ["a"]
    assert not checkpoint.run([parts()], executor="inline").ran  # (the cache existed: recorded)
    path = Store.open().root / files_module.CACHE_NAME
    cache = files_module.DigestCache(path, os.getcwd())
    [(key, (signature, _))] = cache.dirs.items()
    assert signature == files_module._DIR_FORMAT + files_module._dir_signature("data", frozenset())
    old = (signature[len(files_module._DIR_FORMAT):], "an older version's manifest")
    cache.dirs[key] = cache.changed_dirs[key] = old
    cache.save()
    assert not checkpoint.run([parts()], executor="inline").ran


@task
def write_into(where: str):
    @requires(Product(where))
    def __(out: Path) -> None:
        (out / "x" if where.endswith("/") else out).write_text("x")
    return __


@pytest.mark.parametrize(("where", "file"), [("outd/", "outd"), ("a/b.txt", "a"),
                                             ("a/deep/b.txt", "a"), ("a/deep/", "a")])
def test_an_output_where_a_file_stands_in_its_way_is_refused_with_its_name(
    where: str, file: str
) -> None:
    """Product('outd/') with outd a file, or Product('a/b.txt') with a a file: a
    definition error naming the Product, the task and the file, before anything runs (the
    file is kept); one that appears after planning fails the task with the same words."""
    Path(file).write_text("mine")
    with pytest.raises(TaskDefinitionError) as info:
        checkpoint.run([write_into(where)], executor="inline")
    message = str(info.value)
    assert f"Product({where!r})" in message and "write_into(" in message
    assert f"{file} is a file" in message
    assert Path(file).read_text() == "mine"
    product = Product(where)
    with pytest.raises(TaskDefinitionError, match=rf"Product\({where!r}\).* {file} is a file"):
        product.value()


def test_missing_input_from_python_says_paths_are_relative_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner) -> None:
    """From Python (a notebook in notebooks/), the root is the working directory, not the
    taskfile's: the message says so and how to share paths with the command line, which
    says the project root is the taskfile's directory."""
    (tmp_path / "taskfile.py").write_text(
        "from checkpoint import File, requires, task\n\n"
        "@task\ndef main():\n    @requires(File('data.csv'))\n    def __(p):\n"
        "        return 1\n    return __\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import taskfile  # type: ignore[import-not-found]

        with pytest.raises(MissingInputError) as raised:
            checkpoint.run([taskfile.main()], executor="inline")
    finally:
        sys.modules.pop("taskfile", None)
    message = str(raised.value)
    assert "(the project root)" not in message
    assert f"relative to the current working directory, {tmp_path / 'notebooks'}" in message
    assert "os.chdir" in message
    result = runner.invoke(cli, ["-f", str(tmp_path / "taskfile.py"), "run", "--executor", "inline"])
    assert f"relative to {tmp_path} (the project root: the taskfile's directory)" in result.stderr
