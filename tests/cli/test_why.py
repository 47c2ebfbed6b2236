"""`checkpoint why`: reasons diffed against the store, with a source diff for code changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from checkpoint.cli import cli

from .conftest import Invoke, edit

INLINE = ("--executor", "inline")


def test_fresh(invoke: Invoke) -> None:
    """why of a fresh target should say nothing would run."""
    invoke("run", *INLINE, "choose(2, 1)")
    result = invoke("why", "choose(2, 1)")
    assert result.exit_code == 0
    assert "choose(2, 1) is fresh" in result.stdout


def test_missing_shows_closest_arguments(invoke: Invoke) -> None:
    """A missing task should be compared with the stored entries of its family, closest first."""
    invoke("run", *INLINE, "choose(3, 1)")
    result = invoke("why", "choose(4, 1)")
    lines = result.stdout.splitlines()
    assert lines[0] == "choose(4, 1) would run: missing"
    assert lines[2].strip() == "choose(3, 1)  (n: 3 -> 4)"
    result = invoke("why", "greet('a')")
    assert "No stored result for this family yet." in result.stdout


def test_code_change_shows_source_diff(invoke: Invoke, project: Path) -> None:
    """A code change should show a unified diff of the normalized source, once per family."""
    invoke("run", *INLINE, "choose(3, 1)")
    edit(project, "return a + b", "return b + a  # a comment does not count")
    result = invoke("why", "choose(3, 1)")
    out = result.stdout
    assert out.startswith("choose(3, 1) would run: code changed\n")
    assert "-            return a + b" in out
    assert "+            return b + a" in out
    assert "a comment" not in out
    assert out.count("--- stored") == 2  # the target, then its family's group
    assert "choose: code changed, for 4 tasks" in out


def test_cosmetic_change_is_fresh(invoke: Invoke, project: Path) -> None:
    """Comments and docstrings should not count as code changes."""
    invoke("run", *INLINE, "choose(2, 1)")
    edit(project, "return a + b", "return a + b  # same")
    assert "is fresh" in invoke("why", "choose(2, 1)").stdout


def test_upstream_changed(invoke: Invoke, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prerequisite recomputed to another value after the entry was stored should be named
    (recomputed to the same value, it changes nothing: see test_early_cutoff)."""
    with project.open("a") as f:
        f.write(UNSTABLE)
    invoke("run", *INLINE, "top()")
    monkeypatch.setenv("BASE_VALUE", "2")
    invoke("run", *INLINE, "--force", "base()")
    result = invoke("why", "top()")
    assert "top() would run: upstream changed" in result.stdout
    assert "prerequisite base() was recomputed after this result was stored" in result.stdout
    invoke("run", *INLINE, "top()")
    invoke("run", *INLINE, "--force", "base()")  # the same value again: top() stays fresh
    assert "top() is fresh" in invoke("why", "top()").stdout


UNSTABLE = """

@task
def base():
    def __():
        import os
        return os.environ.get("BASE_VALUE", "1")
    return __


@task
def top():
    @requires(base())
    def __(b):
        return b
    return __
"""


PAIRED = """

@task
def paired():
    import os
    first, second = os.environ.get("PAIR_ORDER", "1,2").split(",")
    @requires({"first": choose(2, int(first)), "second": choose(2, int(second))})
    def __(values):
        return values
    return __
"""


def test_rearranged_prerequisites(invoke: Invoke, project: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The same prerequisites in other places of @requires (here, swapped dict values) should
    be named as such."""
    with project.open("a") as f:
        f.write(PAIRED)
    invoke("run", *INLINE, "paired()")
    monkeypatch.setenv("PAIR_ORDER", "2,1")
    result = invoke("why", "paired()")
    assert "paired() would run: upstream changed" in result.stdout
    assert "the prerequisites are arranged differently from the stored result's" in result.stdout


def test_upstream_rerun_and_json(invoke: Invoke) -> None:
    """A task whose prerequisite runs should name it; --json should list every task to run."""
    invoke("run", *INLINE, "choose(2, 1)")
    invoke("clear", "choose(1, 1)")
    result = invoke("why", "choose(2, 1)")
    assert "prerequisite choose(1, 1) will run (missing)" in result.stdout
    assert "choose(1, 1) would run: missing" in result.stdout
    doc = json.loads(invoke("why", "--json", "choose(2, 1)").stdout)
    assert [(t["task"], t["reason"]) for t in doc["tasks"]] == [
        ("choose(1, 1)", "missing"), ("choose(2, 1)", "upstream re-run")]


def test_no_code_check(invoke: Invoke, project: Path) -> None:
    """--no-code-check should ignore code changes."""
    invoke("run", *INLINE, "choose(2, 1)")
    edit(project, "return a + b", "return b + a")
    assert "is fresh" in invoke("why", "--no-code-check", "choose(2, 1)").stdout


def test_requires_target(invoke: Invoke) -> None:
    """why without a target should be a usage error."""
    assert invoke("why").exit_code == 2


PACKAGED = '''
import fakenum
import plainmod
from checkpoint import requires, task


@task
def scale(x):
    def __():
        return fakenum.double(x)
    return __


@task
def plain():
    def __():
        return plainmod.VALUE
    return __


@task
def main():
    @requires([scale(1), scale(2), plain()])
    def __(values):
        return sum(values)
    return __
'''


def _install(site: Path, fakenum: str, plainmod: str) -> None:
    """Install (again) two third-party packages under ``site`` (a ``site-packages``):
    ``fakenum`` from a distribution of that name, ``plainmod`` without one (it has a
    ``__version__``)."""
    import shutil
    import sys

    for old in site.glob("fakenum-*.dist-info"):
        shutil.rmtree(old)
    (site / "fakenum").mkdir(parents=True, exist_ok=True)
    (site / "fakenum" / "__init__.py").write_text("def double(x):\n    return 2 * x\n")
    info = site / f"fakenum-{fakenum}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakenum\nVersion: {fakenum}\n")
    (site / "plainmod.py").write_text(f"__version__ = {plainmod!r}\nVALUE = 10\n")
    # Rewritten within the same second at the same size, a module's cached bytecode would
    # still pass Python's check (mtime and size): pip removes it, and so does this.
    for cached in (site / "__pycache__", site / "fakenum" / "__pycache__"):
        shutil.rmtree(cached, ignore_errors=True)
    sys.modules.pop("plainmod", None)  # (an upgrade takes effect in a new process)
    sys.modules.pop("fakenum", None)


def test_package_versions_changed_since_stored(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """why should mention the installed packages a stored task's code uses whose version
    changed since it was stored, without making anything stale: for the target itself, and
    for the tasks upstream of it (grouped by family)."""
    site = tmp_path / "env" / "lib" / "site-packages"
    _install(site, "1.0", "0.1")
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "taskfile.py").write_text(PACKAGED)
    assert runner.invoke(cli, ["run", *INLINE, "main"]).exit_code == 0

    def why(*args: str) -> str:
        result = runner.invoke(cli, ["why", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert why("main").splitlines()[1:] == []  # nothing changed: nothing said
    _install(site, "2.0", "0.2")
    out = why("main").splitlines()
    assert out[0].startswith("main() is fresh (stored ")
    assert out[1:] == [
        "Installed packages changed since results upstream were stored (not a reason to "
        "re-run; `checkpoint clear NAME` recomputes a family):",
        "  plain(): plainmod 0.1 -> 0.2",
        "  2 scale tasks (scale(1), scale(2)): fakenum 1.0 -> 2.0",
    ]
    assert why("scale(1)").splitlines()[1:] == [
        "  fakenum 1.0 -> 2.0 since this was stored (not a reason to re-run; "
        "`checkpoint clear 'scale(1)'` to recompute)"
    ]
    doc = json.loads(why("--json", "scale(1)"))
    assert doc["packages"] == [{"task": "scale(1)", "family": "taskfile.scale",
                                "id": doc["packages"][0]["id"],
                                "changed": {"fakenum": ["1.0", "2.0"]}}]
    result = runner.invoke(cli, ["run", *INLINE, "--json", "main"])
    assert json.loads(result.stdout)["ran"] == 0  # not a reason to re-run


def test_package_versions_unrecorded_say_nothing(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries stored without a record of their packages' versions (by an older checkpoint,
    or pulled from a remote) should get no mention; the record is one row per process and
    family, not one per entry (a warm run reads every row)."""
    from checkpoint._format import PACKAGES
    from checkpoint.store import Store

    site = tmp_path / "env" / "lib" / "site-packages"
    _install(site, "1.0", "0.1")
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "taskfile.py").write_text(PACKAGED)
    assert runner.invoke(cli, ["run", *INLINE, "main"]).exit_code == 0
    store = Store.open()
    family = next(f for f in store.families() if f.endswith(".scale"))
    [row] = store.indexes.keys(family, PACKAGES)  # for both entries
    store.delete_row(family, row)
    _install(site, "2.0", "0.1")
    result = runner.invoke(cli, ["why", "main"], catch_exceptions=False)
    assert result.stdout.splitlines()[1:] == []


def test_package_rows_cover_the_entries_of_their_process(cache_dir: Path) -> None:
    """A row covers the entries its process stored (by worker and time); where rows of two
    processes with other versions both would, nothing is said; a family keeps at most
    MAX_ROWS rows, dropping the oldest."""
    from checkpoint import _packages
    from checkpoint._format import PACKAGES, Meta, Record
    from checkpoint.store import Store

    def meta(worker: str, stored: float) -> Meta:
        return Meta("t()", "{}", "f", "s", worker=worker, stored=stored)

    def record(worker: str, stored: float, versions: str) -> Record:
        return Record("m.t", "0" * 32, meta(worker, stored), b"", packages=versions)

    store = Store.open()
    store.tree.ensure()
    v1, v2 = '{"numpy":"1.0"}', '{"numpy":"2.0"}'
    store.indexes.write("m.t", lambda index: _packages.record_spans(
        [record("h:1", 10.0, v1), record("h:2", 12.0, v1)], index))
    _packages._token[1] = 0  # another process
    store.indexes.write("m.t", lambda index: _packages.record_spans(
        [record("h:3", 11.0, v2), record("h:1", 20.0, v2)], index))
    metas = {"a": meta("h:1", 10.0), "b": meta("h:2", 12.0), "c": meta("h:3", 11.0),
             "d": meta("h:1", 20.0), "e": meta("h:1", 11.5), "f": meta("h:9", 11.0)}
    assert store.package_versions("m.t", metas) == {
        "a": {"numpy": "1.0"}, "b": {"numpy": "1.0"}, "c": {"numpy": "2.0"},
        "d": {"numpy": "2.0"}}  # e: both rows cover it; f: none does
    for n in range(_packages.MAX_ROWS + 3):
        _packages._token[1] = 0
        store.indexes.write("m.t", lambda index, n=n: _packages.record_spans(
            [record("h:5", 100.0 + n, v1)], index))
    keys = store.indexes.keys("m.t", PACKAGES)
    assert len(keys) == _packages.MAX_ROWS
    assert store.package_versions("m.t", {"new": meta("h:5", 100.0 + _packages.MAX_ROWS + 2),
                                          "old": meta("h:1", 10.0)}) == {"new": {"numpy": "1.0"}}


def test_installed_packages_are_told_apart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only packages under site-packages count: not the standard library, checkpoint, or
    the project's own modules."""
    import importlib

    from checkpoint.fingerprint import installed_package

    site = tmp_path / "env" / "lib" / "site-packages"
    _install(site, "1.0", "0.1")
    (tmp_path / "mine.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("fakenum")
    importlib.import_module("mine")
    assert installed_package("fakenum") == "fakenum"
    assert installed_package("fakenum.sub") == "fakenum"
    assert installed_package("plainmod") == "plainmod"  # not imported: found on sys.path
    for other in ("json", "os.path", "checkpoint.store", "mine", "__main__", "nowhere"):
        assert installed_package(other) == "", other
