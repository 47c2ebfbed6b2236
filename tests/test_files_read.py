"""A prerequisite's Product changed between its task's end and a dependent's read (adv4 10):
the dependent's result may come from the changed file, so it is stored as stale."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint import File, Product, _recorder, _results, requires, task
from checkpoint import files as files_module
from checkpoint.cli import cli
from checkpoint.events import InputChanged

IN_PLACE = '''
from pathlib import Path
from checkpoint import File, Product, requires, task


@task
def make():
    @requires(File("in.txt"))
    @requires(Product("out/t.txt"))
    def __(src: Path, out: Path) -> str:
        out.write_text(src.read_text())
        return str(out)
    return __


@task
def clean():
    """Drops the 2s of make()'s table in place: a task writing into another's Product."""
    @requires(make())
    def __(path: str) -> str:
        rows = [r for r in Path(path).read_text().split() if r != "2"]
        Path(path).write_text("\\n".join(rows) + "\\n")
        return "cleaned"
    return __


@task
def main():
    @requires(make())
    @requires(clean())
    def __(path: str, _: str) -> int:
        return sum(int(r) for r in Path(path).read_text().split())
    return __
'''


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_a_product_rewritten_in_place_by_a_sibling_makes_its_readers_stale(
    tmp_path: Path, runner: CliRunner
) -> None:
    """clean() rewrites make()'s output; main() reads the rewritten file. The next run
    restores the output (make() runs again, "output changed", and writes what it wrote
    before): neither clean() nor main() may then be kept by early cutoff with a value from
    the other content, and the run names the file, its producer and the reader."""
    (tmp_path / "taskfile.py").write_text(IN_PLACE)
    Path("in.txt").write_text("1\n2\n3\n")
    first = runner.invoke(cli, ["run", "--executor", "inline", "main"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "4"
    for reader in ("clean()", "main()"):
        assert (f"warning: out/t.txt, an output of make(), changed after make() wrote it and "
                f"before {reader} finished") in first.stderr
    second = runner.invoke(cli, ["run", "--executor", "inline", "main"])
    assert second.exit_code == 0, second.output
    assert "Kept" not in second.stderr
    assert "done    main()" in second.stderr
    assert second.stdout.strip() == "4"  # computed again (from the file clean() rewrote again)


HAND = '''
import time
from pathlib import Path
from checkpoint import Product, requires, task


@task
def make():
    @requires(Product("out/t.txt"))
    def __(out: Path) -> str:
        out.write_text("1\\n2\\n3\\n")
        return str(out)
    return __


@task
def main():
    @requires(make())
    def __(path: str) -> int:
        Path("reading.flag").write_text("")        # handshake: the test edits the file now
        for _ in range(6000):
            if Path("edited.flag").exists():
                break
            time.sleep(0.01)
        return sum(int(r) for r in Path(path).read_text().split())
    return __
'''


def _wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    for _ in range(6000):
        if path.exists() or proc.poll() is not None:
            return
        time.sleep(0.01)


def test_a_product_edited_by_another_program_before_a_dependent_reads_it(tmp_path: Path) -> None:
    """Another program (an editor's save, a sync client) writes make()'s output after make()
    finished and before main() reads it: main()'s result comes from the edited file, so it
    is stored as stale; after make() restored the file, main() runs again and agrees with
    it (process workers, the command line as a user runs it)."""
    (tmp_path / "taskfile.py").write_text(HAND)
    cmd = [sys.executable, "-m", "checkpoint", "run", "--no-progress", "--executor", "process",
           "main"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(tmp_path / "reading.flag", proc)
    with open(tmp_path / "out/t.txt", "a") as fh:
        fh.write("100\n")
    (tmp_path / "edited.flag").write_text("")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip() == "106"
    assert ("warning: out/t.txt, an output of make(), changed after make() wrote it and before "
            "main() finished") in err
    (tmp_path / "out/t.txt").write_text("1\n2\n3\n")  # put back by hand: make() is current
    why = subprocess.run([sys.executable, "-m", "checkpoint", "why", "main"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert "file out/t.txt changed after its producer wrote it" in why.stdout, why.stdout
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "6"
    assert "changed after" not in again.stderr


def test_an_unchanged_product_costs_a_stat_and_a_plan_without_products_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check after a reader ends: a Product whose stat is the one recorded with its
    trusted digest is not read again; a plan without Products never opens the digest
    cache for it."""
    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 3600 * 10**9)
    Path("in.txt").write_text("1 2 3")

    @task
    def make():
        @requires(File("in.txt"))
        @requires(Product("out/t.txt"))
        def __(src: Path, out: Path) -> str:
            out.write_text(src.read_text())
            return str(out)
        return __

    @task
    def total(times: int):
        @requires(make())
        def __(path: str) -> int:
            return times * sum(int(v) for v in Path(path).read_text().split())
        return __

    assert total(1).run(executor="inline") == 6
    assert not checkpoint.run([total(1)], executor="inline").ran  # (the digest recorded)
    hashed: list[str] = []
    real_hash = files_module.hash_file
    monkeypatch.setattr(files_module, "hash_file", lambda p: hashed.append(p) or real_hash(p))
    assert total(2).run(executor="inline") == 12
    assert hashed == []

    @task
    def plain(n: int):
        @requires([total(1)] if n else [])
        def __(*_: object) -> int:
            return n
        return __

    opened: list[object] = []
    real_cache = _results.DigestCache
    monkeypatch.setattr(_results, "DigestCache",
                        lambda *a: opened.append(a) or real_cache(*a))  # type: ignore[misc]
    assert checkpoint.run([plain(0)], executor="inline").ran
    assert opened == []
    assert plain(1).run(executor="inline") == 1  # a reader of make()'s output downstream
    assert len(opened) == 1


def test_a_chain_below_a_product_checks_it_for_each_reader(tmp_path: Path) -> None:
    """A Product read through a task that passes its path on (upstream of a prerequisite,
    not a prerequisite itself) counts too."""

    @task
    def make():
        @requires(Product("out/t.txt"))
        def __(out: Path) -> str:
            out.write_text("1")
            return str(out)
        return __

    @task
    def relay():
        @requires(make())
        def __(path: str) -> str:
            return path
        return __

    @task
    def read():
        @requires(relay())
        def __(path: str) -> str:
            Path(path).write_text("changed by its reader")
            return Path(path).read_text()
        return __

    assert read().run(executor="inline") == "changed by its reader"
    result = checkpoint.run([read()], executor="inline")
    assert {repr(t) for t in result.ran} == {"make()", "read()"}  # relay() is kept, read() not


def test_a_new_product_read_by_many_tasks_is_hashed_once_more_then_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readers of a Product written in this run: its first check hashes it (the digest
    cache has no trusted digest of it yet), the next ones compare its stat with the one it
    had then; an edit after that is still seen. (Checks one second after the writes: the
    digest cache does not trust a digest yet, a run's check of an output does.)"""
    Path("probe").write_text("")
    if os.stat("probe").st_mtime_ns % 1_000_000 == 0:
        pytest.skip("a filesystem with coarse timestamps: outputs are trusted after seconds")
    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 10**9)
    hashed: list[str] = []
    real_hash = files_module.hash_file
    monkeypatch.setattr(files_module, "hash_file", lambda p: hashed.append(p) or real_hash(p))

    @task
    def make():
        @requires(Product("out/t.txt"))
        def __(out: Path) -> str:
            out.write_text("1 2 3")
            return str(out)
        return __

    @task
    def reader(i: int):
        @requires(make())
        def __(path: str) -> int:
            if i == 7:
                Path(path).write_text("1 2 3 4")  # a reader writing into it
            return i
        return __

    result = checkpoint.run([reader(i) for i in range(6)], executor="inline")
    assert len(result.ran) == 7
    assert hashed == ["out/t.txt", "out/t.txt"]  # by the worker, then by the first check
    result = checkpoint.run([reader(7), reader(8)], executor="inline")
    assert {repr(t) for t in result.ran} == {"reader(7)", "reader(8)"}
    # make() puts its output back; reader(0) read it before the edit: kept. reader(7) not.
    assert {repr(t) for t in checkpoint.run([reader(0)], executor="inline").ran} == {"make()"}
    assert {repr(t) for t in checkpoint.run([reader(7)], executor="inline").ran} == {"reader(7)"}


def test_a_chain_of_producers_checks_each_product_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """n tasks that each write a Product and read the one before: every Product is upstream
    of every later task, yet the checks are not n²/2 (one sweep covers the readers whose
    results wait to be stored). And a change is still caught: the last task rewrites the
    first Product, and the readers that may have read it changed are stored as stale."""
    monkeypatch.setattr(_recorder, "FLUSH_SECONDS", 3600.0)  # no sweep on a slow machine's clock
    checks: list[str] = []
    real_check = files_module._check_output
    monkeypatch.setattr(files_module, "_check_output",
                        lambda key, *a: checks.append(key) or real_check(key, *a))
    n = 40

    @task
    def step(i: int):
        @requires([step(i - 1)] if i else [])
        @requires(Product(f"out/{i}.txt"))
        def __(before: list[str], out: Path) -> str:
            text = Path(before[0]).read_text() if before else ""
            out.write_text(text + f"{i}\n")
            if i == n:
                Path("out/0.txt").write_text("edited\n")  # the last one rewrites the first
            return str(out)
        return __

    assert Path(step(n - 1).run(executor="inline")).read_text().split()[-1] == str(n - 1)
    assert 0 < len(checks) <= 3 * n, len(checks)  # n²/2 = 800 before
    assert not checkpoint.run([step(n - 1)], executor="inline").ran
    said: list[str] = []
    checkpoint.run([step(n)], executor="inline", subscribers=[
        lambda e: said.append(e.message) if isinstance(e, InputChanged) else None])
    assert said == [f"out/0.txt, an output of step(0), changed after step(0) wrote it and "
                    f"before step({n})'s result was stored: step({n}) may have read either "
                    "content, so its result is stored as stale and runs again next time. A "
                    "Product is written by its task alone: a task that changes it should write "
                    "its own Product, and no other program should write it during a run."]
    result = checkpoint.run([step(n)], executor="inline")
    assert {repr(t) for t in result.ran} >= {"step(0)", f"step({n})"}
