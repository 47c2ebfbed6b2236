"""A plan's input files checked at once: one signature over the stats of all of them.

After a warm check that found every input file in the digest cache (trusted, unchanged),
the plan's inputs are recorded together; the next check of the same inputs stats them and
compares one signature, reading no per-file entry. These tests hold it to the per-file
rules: content decides, a touch re-runs nothing, a same-size edit that keeps the mtime is
caught, a missing input stops the run.
"""

from __future__ import annotations

import marshal
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

import checkpoint
from checkpoint import File, MissingInputError, requires, task
from checkpoint import files as files_module
from checkpoint.graph import arrangement, plan
from checkpoint.store import Store


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files hashed from now on count as changed long before, so their digests are
    trusted on sight."""
    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 3600 * 10**9)


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """What the checks did: files hashed, per-file entries unpacked, batch checks made."""
    seen: dict[str, list[object]] = {"hashed": [], "unpacked": [], "batch": []}
    real_hash, real_unpack = files_module.hash_file, files_module._unpack
    real_batch = files_module._check_batch
    monkeypatch.setattr(files_module, "hash_file",
                        lambda p: seen["hashed"].append(p) or real_hash(p))
    monkeypatch.setattr(files_module, "_unpack",
                        lambda b: seen["unpacked"].append(b) or real_unpack(b))

    def batch(*args: Any) -> bool:
        settled = real_batch(*args)
        seen["batch"].append(settled)
        return settled

    monkeypatch.setattr(files_module, "_check_batch", batch)
    real_leaves = files_module._settle_leaves

    def leaves(*args: Any) -> bool:  # a plan of one-File leaves, settled at once
        settled = real_leaves(*args)
        if settled:
            seen["batch"].append(settled)
        return settled

    monkeypatch.setattr(files_module, "_settle_leaves", leaves)
    return seen


def _write_same_size(path: Path, text: str) -> None:
    """Replace a file's content in place, keeping its size and its times."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _ran(result: checkpoint.RunResult) -> set[str]:
    return {repr(t) for t in result.ran}


def _clear(seen: dict[str, list[object]]) -> None:
    for found in seen.values():
        found.clear()


@task
def read(i: int):
    @requires(File(f"in/{i}.txt"))
    def __(path: Path) -> str:
        return path.read_text()
    return __


@task
def read_many(j: int):
    @requires([File(f"in/{i}.txt") for i in range(j, j + 3)])
    def __(paths: list[Path]) -> list[str]:
        return [p.read_text() for p in paths]
    return __


@task
def total(n: int):
    @requires([read(i) for i in range(n)])
    def __(texts: list[str]) -> list[str]:
        return texts
    return __


@task
def grouped(n: int):
    @requires([read_many(j) for j in range(0, n - 2, 3)])
    def __(groups: list[list[str]]) -> list[list[str]]:
        return groups
    return __


def _files(n: int) -> None:
    Path("in").mkdir()
    for i in range(n):
        Path(f"in/{i}.txt").write_text(f"v{i}")


def test_a_fresh_sweep_of_one_file_leaves_makes_no_task_files(
    tmp_path: Path, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm plan whose one-File leaves are all fresh should settle them from the plan's
    record without making a TaskFiles for any; one asked for afterwards should hold what
    the check found (the entry's record), and an edit should still make them."""
    _files(4)
    total(4).run(executor="inline")
    for _ in range(2):  # the digests kept, then the plan recorded
        assert not checkpoint.run([total(4)], executor="inline").ran
    made: list[object] = []
    real = files_module.one_input
    monkeypatch.setattr(files_module, "one_input", lambda inputs: made.append(inputs) or real(inputs))
    the_plan = plan([total(4)], Store.open())
    assert not the_plan.to_run
    assert made == []
    node = the_plan.nodes[read(1).id]
    assert node.files.digests == node.meta.deps == {  # type: ignore[union-attr]
        "file:in/1.txt": files_module.hash_file("in/1.txt")}
    assert len(made) == 1

    _write_same_size(Path("in/2.txt"), "w2")
    made.clear()
    the_plan = plan([total(4)], Store.open())
    assert the_plan.to_run == [read(2).id, total(4).id]
    assert len(made) == 4  # (the check the long way: each task's TaskFiles)


def test_a_warm_plan_of_input_files_is_checked_by_one_signature(
    tmp_path: Path, later: None, spied: dict[str, list[object]]
) -> None:
    """Once a warm check found every input trusted, the next ones should read no file
    and no per-file entry of the digest cache; a same-size edit that keeps the mtime, a
    same-stat copy (another inode) and a new size should each re-run exactly their task,
    a touch nothing, and a deleted input should stop the run."""
    _files(4)
    assert total(4).run(executor="inline") == ["v0", "v1", "v2", "v3"]
    for _ in range(2):  # the digests kept, then the plan recorded
        assert not checkpoint.run([total(4)], executor="inline").ran
    _clear(spied)
    assert not checkpoint.run([total(4)], executor="inline").ran
    assert spied == {"hashed": [], "unpacked": [], "batch": [True]}

    _write_same_size(Path("in/1.txt"), "w1")
    assert _ran(checkpoint.run([total(4)], executor="inline")) == {"read(1)", "total(4)"}
    st = os.stat("in/2.txt")
    Path("copy.txt").write_text("w2")
    os.utime("copy.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace("copy.txt", "in/2.txt")  # another inode, same size and mtime
    assert _ran(checkpoint.run([total(4)], executor="inline")) == {"read(2)", "total(4)"}
    assert not checkpoint.run([total(4)], executor="inline").ran
    _clear(spied)
    os.utime("in/3.txt", ns=(time.time_ns(), time.time_ns() + 10**9))  # a touch
    assert not checkpoint.run([total(4)], executor="inline").ran
    assert spied["hashed"] == ["in/3.txt"]
    Path("in/0.txt").write_text("longer")
    result = checkpoint.run([total(4)], executor="inline")
    assert _ran(result) == {"read(0)", "total(4)"}
    assert result.values[total(4).id] == ["longer", "w1", "w2", "v3"]
    Path("in/0.txt").unlink()
    with pytest.raises(MissingInputError, match="in/0.txt"):
        checkpoint.run([total(4)], executor="inline")


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_rerun_exactly_the_readers_of_changed_content(
    tmp_path: Path, later: None, spied: dict[str, list[object]], seed: int
) -> None:
    """Model: between warm runs, random files are edited (a new size, the same size and
    mtime, the same content rewritten, an earlier content back) or touched, readers'
    entries are cleared, and plans that run nothing are made (``why``, ``ls``: they record
    the plan's inputs as they are, so the next run may match the one signature while
    entries lag behind). Each run should re-run exactly the tasks whose files' content
    differs from what they last ran with, and the cleared ones (one file per task, and
    three per task), as a pure reference says; unchanged plans should be settled by the
    one signature."""
    from checkpoint.graph import plan

    n = 12
    rng = random.Random(seed)
    _files(n)
    contents = {i: f"v{i}" for i in range(n)}
    # Even seeds: both shapes in one plan; odd ones: one file per task alone (checked all
    # at once when fresh).
    targets = [total(n), grouped(n)] if seed % 2 == 0 else [total(n)]
    groups = {f"read_many({j})": range(j, j + 3) for j in range(0, n - 2, 3)} \
        if seed % 2 == 0 else {}
    readers: dict[str, range] = {f"read({i})": range(i, i + 1) for i in range(n)} | groups
    checkpoint.run(targets, executor="inline")
    last = {name: [contents[i] for i in files] for name, files in readers.items()}
    for _ in range(12):
        for i in rng.sample(range(n), rng.randint(0, 3)):
            path = Path(f"in/{i}.txt")
            how = rng.choice(["size", "same-size", "rewrite", "back", "touch"])
            if how == "size":
                contents[i] += "+"
                path.write_text(contents[i])
            elif how == "same-size":
                contents[i] = contents[i][:-1] + rng.choice("abc")
                _write_same_size(path, contents[i])
            elif how == "rewrite":
                path.write_text(contents[i])
            elif how == "back":
                contents[i] = f"v{i}" if len(contents[i]) == len(f"v{i}") else contents[i]
                _write_same_size(path, contents[i]) if len(contents[i]) == path.stat().st_size \
                    else path.write_text(contents[i])
            else:
                os.utime(path, ns=(time.time_ns(), time.time_ns() + rng.randint(1, 10**9)))
        now = {name: [contents[i] for i in files] for name, files in readers.items()}
        stale = {name for name in readers if now[name] != last[name]}
        expected = set(stale)
        if stale & {f"read({i})" for i in range(n)}:
            expected.add(f"total({n})")
        if stale & set(groups):
            expected.add(f"grouped({n})")
        cleared = rng.sample(sorted(readers), rng.choice([0, 0, 1, 2]))
        for name in cleared:  # re-run, the same value: their readers kept (early cutoff)
            (read(int(name[5:-1])) if name.startswith("read(") else
             read_many(int(name[10:-1]))).clear()
        expected.update(cleared)
        planned = set(expected)  # (a plan does not know yet that their values stay the same)
        if planned & {f"read({i})" for i in range(n)}:
            planned.add(f"total({n})")
        if planned & set(groups):
            planned.add(f"grouped({n})")
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            assert {repr(node.task) for node in plan(targets, Store.open(None)).nodes.values()
                    if node.reason is not None} == planned
        result = checkpoint.run(targets, executor="inline")
        assert _ran(result) == expected
        assert result.values[total(n).id] == [contents[i] for i in range(n)]
        last = now
    for _ in range(2):
        assert not checkpoint.run(targets, executor="inline").ran
    _clear(spied)
    assert not checkpoint.run(targets, executor="inline").ran
    assert spied == {"hashed": [], "unpacked": [], "batch": [True]}


def test_files_dated_before_1970_are_checked_like_any_other(
    tmp_path: Path, later: None
) -> None:
    """A negative mtime does not fit the unsigned stat signatures: single files and a
    directory of them should still be reused warm and re-run on an edit."""
    _files(3)
    for i in range(3):
        os.utime(f"in/{i}.txt", ns=(-10**9 * (i + 1), -10**9 * (i + 1)))

    @task
    def whole():
        @requires(File("in"))
        def __(directory: Path) -> list[str]:
            return sorted(p.read_text() for p in directory.iterdir())
        return __

    targets = [total(3), whole()]
    checkpoint.run(targets, executor="inline")
    for _ in range(3):
        assert not checkpoint.run(targets, executor="inline").ran
    _write_same_size(Path("in/1.txt"), "w1")
    assert _ran(checkpoint.run(targets, executor="inline")) == {"read(1)", "total(3)", "whole()"}
    assert not checkpoint.run(targets, executor="inline").ran


def test_the_digest_cache_keeps_the_latest_plans_only(tmp_path: Path, later: None) -> None:
    """Each plan of input files gets its own record; only the latest BATCH_KEEP stay."""
    _files(files_module.BATCH_KEEP + 3)
    for n in range(1, files_module.BATCH_KEEP + 3):
        for _ in range(3):
            checkpoint.run([total(n)], executor="inline")
    cache = Store.open(None).root / files_module.CACHE_NAME
    roots = marshal.loads(cache.read_bytes())[1]
    (dirs, _), = roots.values()
    records = [key for key in dirs if key.startswith(files_module.BATCH)]
    assert len(records) == files_module.BATCH_KEEP
    paths = "\0".join(f"in/{i}.txt" for i in range(files_module.BATCH_KEEP + 2))
    assert records[-1] == files_module.BATCH + files_module._text_digest(paths)


def test_a_matching_signature_still_holds_each_entry_to_its_digests(
    tmp_path: Path, later: None, spied: dict[str, list[object]]
) -> None:
    """When the one signature matches but some entries do not record the digests now (a
    cleared entry, a forced re-run: no file changed), exactly those tasks (and their
    readers, kept by early cutoff here) should run, with one file per task and several,
    and the others be settled by the signature."""
    _files(9)
    targets = [total(9), grouped(9)]
    checkpoint.run(targets, executor="inline")
    for _ in range(2):
        assert not checkpoint.run(targets, executor="inline").ran
    read(4).clear()
    read_many(3).clear()
    _clear(spied)
    result = checkpoint.run(targets, executor="inline")
    assert _ran(result) == {"read(4)", "read_many(3)"}
    assert spied["batch"] == [True] and spied["hashed"] == []
    assert result.values[grouped(9).id] == [["v0", "v1", "v2"], ["v3", "v4", "v5"], ["v6", "v7", "v8"]]
    for _ in range(2):
        assert not checkpoint.run(targets, executor="inline").ran


@pytest.mark.parametrize("grouped_too", [False, True], ids=["one file per task", "and three"])
def test_plans_that_do_not_run_leave_the_edited_inputs_stale(
    tmp_path: Path, later: None, spied: dict[str, list[object]], grouped_too: bool
) -> None:
    """Plans that run nothing (``why``, ``ls``) after an edit record the plan's inputs with
    the new digests; the run after them matches that one signature, and should still
    re-run exactly the tasks whose entries record the old content."""
    from checkpoint.graph import plan

    _files(9)
    targets = [total(9), grouped(9)] if grouped_too else [total(9)]
    checkpoint.run(targets, executor="inline")
    Path("in/1.txt").write_text("w1")
    _write_same_size(Path("in/4.txt"), "w4")
    stale = {"read(1)", "read(4)", "total(9)"}
    if grouped_too:
        stale |= {"read_many(0)", "read_many(3)", "grouped(9)"}
    for _ in range(3):  # hashed, then recorded, then checked by the signature
        the_plan = plan(targets, Store.open(None))
        assert {repr(the_plan.nodes[tid].task) for tid in the_plan.to_run} == stale
    _clear(spied)
    result = checkpoint.run(targets, executor="inline")
    assert spied["batch"] == [True] and spied["hashed"] == []
    assert _ran(result) == stale
    if grouped_too:
        assert result.values[grouped(9).id][:2] == [["v0", "w1", "v2"], ["v3", "w4", "v5"]]
    assert result.values[total(9).id][:5] == ["v0", "w1", "v2", "v3", "w4"]


def test_the_batch_check_knows_the_arrangement_key() -> None:
    """The batch check reads an entry's arrangement under the key marking writes it."""
    from checkpoint.graph import ARRANGEMENT

    assert files_module._ARRANGEMENT == ARRANGEMENT


def test_a_flat_list_arranges_as_the_general_walk_does() -> None:
    """The arrangement of a flat list of tasks and files (taken at once) should be the one
    the general walk gives (stored entries stay current)."""

    class Walked(list):  # type: ignore[type-arg]
        """A list the flat path does not take."""

    leaves = [read(1), File("in/0.txt"), File("./in/../in/2.txt"), read(2)]
    assert arrangement([leaves]) == arrangement([Walked(leaves)])
    # Only files (each its own key, taken at once; or one that needs normalizing)
    for odd in ["", "./in/3.txt", "in//3.txt", "in/./3.txt", "in/", "/abs/3.txt", ".in/3.txt",
                "in/.3.txt", "in/../3.txt", "in\0/3.txt"]:
        files = [File("in/0.txt"), File("in/1.txt"), *([File(odd)] if odd else [])]
        assert arrangement([files]) == arrangement([Walked(files)]), odd
        assert arrangement([files]) != arrangement([list(reversed(files))]), odd
    assert arrangement([leaves, {"a": read(3)}]) == arrangement([Walked(leaves), {"a": read(3)}])
