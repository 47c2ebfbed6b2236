"""`checkpoint run --watch`: runs again when the taskfile, a project module or an input changes."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from checkpoint.watch import WatchSet, changed, forget_project_modules, watch_set

pytest.importorskip("watchfiles")

CHECKPOINT = str(Path(sys.executable).parent / "checkpoint")

TASKFILE = '''
from checkpoint import File, requires, task

import helper


@task
def main():
    @requires(File("data.txt"))
    def __(path):
        return helper.BASE + len(path.read_text()) + {extra}

    return __
'''


class Lines:
    """The lines a process writes to one of its pipes, read on a thread."""

    def __init__(self, pipe: object) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))

    def expect(self, want: Callable[[str], bool], what: str, deadline: float = 90) -> str:
        """The next line for which ``want`` holds (earlier lines are kept in ``seen``)."""
        end = time.monotonic() + deadline
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line {what} came; seen: {self.seen}") from None
            self.seen.append(line)
            if want(line):
                return line


def _write(path: Path, text: str) -> None:
    """Write a file as an editor does: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_watch_runs_again_after_edits_and_ctrl_c_exits_130(tmp_path: Path) -> None:
    """Edits to the taskfile, a module it imports and a File() input each give a new run
    (a failing one keeps watching); Ctrl-C ends the watch with 130."""
    (tmp_path / "taskfile.py").write_text(TASKFILE.format(extra=0))
    (tmp_path / "helper.py").write_text("BASE = 1000\n")
    (tmp_path / "data.txt").write_text("abc")
    # Saved before the watch began: a file changed within 100 ms of a run's start counts as
    # changed during it (watch._changed_since), and would give one more run than the edits.
    time.sleep(0.3)
    env = {k: v for k, v in os.environ.items() if k not in ("CP_CACHE_DIR", "FORCE_COLOR")}
    with subprocess.Popen([CHECKPOINT, "run", "--watch", "main"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _edit_and_see(proc, tmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()


def _edit_and_see(proc: subprocess.Popen[str], tmp_path: Path) -> None:
    out, errs = Lines(proc.stdout), Lines(proc.stderr)
    watching = "Watching 3 files; Ctrl-C to stop."
    assert out.expect(lambda line: bool(line), "with the value") == "1003"
    errs.expect(lambda line: line == watching, "saying it watches")

    _write(tmp_path / "taskfile.py", TASKFILE.format(extra=20000))
    assert out.expect(lambda line: bool(line), "after the taskfile's edit") == "21003"
    assert errs.expect(lambda line: line.startswith("Changed:"), "naming the change") == (
        "Changed: taskfile.py; running again.")
    errs.expect(lambda line: line == watching, "after the second run")

    _write(tmp_path / "helper.py", "BASE = 1 // 0\n")  # the taskfile no longer imports
    errs.expect(lambda line: "ZeroDivisionError" in line, "with the import's error")
    errs.expect(lambda line: line.startswith("Watching"), "after the failure")

    _write(tmp_path / "helper.py", "BASE = 5000\n")
    assert out.expect(lambda line: bool(line), "after the module's edit") == "25003"
    errs.expect(lambda line: line == watching, "after the fourth run")

    _write(tmp_path / "data.txt", "abcdef")
    assert out.expect(lambda line: bool(line), "after the input's edit") == "25006"
    errs.expect(lambda line: line == watching, "after the fifth run")

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    errs.expect(lambda line: line == "Stopped watching.", "saying it stopped")


DURING = '''
import time
from pathlib import Path
from checkpoint import File, requires, task

import helper06


@task
def main():
    @requires(File("data.txt"))
    def __(path):
        value = f"{path.read_text()}-{helper06.f()}"
        if not Path("started").exists():  # the first run: the user saves meanwhile
            Path("started").touch()
            while not Path("saved").exists():
                time.sleep(0.01)
        return value

    return __
'''


@pytest.mark.parametrize("what", ["module", "input"])
def test_watch_sees_a_save_made_during_the_first_run(tmp_path: Path, what: str) -> None:
    """A module or an input saved while the first run computes (before the watch knew the
    files: only the taskfile was watched then) starts a second run, which shows the new
    value; Ctrl-C then ends the watch with 130."""
    (tmp_path / "taskfile.py").write_text(DURING)
    (tmp_path / "helper06.py").write_text("def f():\n    return 1\n")
    (tmp_path / "data.txt").write_text("a")
    env = {k: v for k, v in os.environ.items() if k not in ("CP_CACHE_DIR", "FORCE_COLOR")}
    with subprocess.Popen([CHECKPOINT, "run", "--watch", "main"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, errs = Lines(proc.stdout), Lines(proc.stderr)
            _wait_for(tmp_path / "started", proc)
            if what == "module":
                _write(tmp_path / "helper06.py", "def f():\n    return 2\n")
            else:
                _write(tmp_path / "data.txt", "b")
            (tmp_path / "saved").touch()
            # The first run shows a-1, or fails (StaleModuleError) if it sees the module's edit
            # as it ends: either way the watch must run again.
            line = errs.expect(lambda line: line.startswith("Changed:"), "naming the save")
            saved = "helper06.py" if what == "module" else "data.txt"
            # (a file saved moments before the run began may be named too: an extra run at
            # worst, never a missed one)
            assert saved in line.removeprefix("Changed: ").removesuffix("; running again.").split(", ")
            new = "a-2" if what == "module" else "b-1"
            assert out.expect(lambda line: line == new, "with the new value") == new
            assert out.seen[:-1] in ([], ["a-1"])
            errs.expect(lambda line: line.startswith("Watching"), "after the second run")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()


def _wait_for(path: Path, proc: subprocess.Popen[str], deadline: float = 90) -> None:
    """Wait until the process makes ``path``."""
    end = time.monotonic() + deadline
    while not path.exists():
        assert proc.poll() is None, "checkpoint ended early"
        assert time.monotonic() < end, f"{path.name} was not made"
        time.sleep(0.01)


def test_changed_counts_an_unknown_file_changed_since_the_run_began(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file the baseline did not know (the run added it to the watch set) counts when its
    mtime (or ctime) is not older than the run's start, with a margin for coarse clocks."""
    import types

    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("1")
    b.write_text("2")
    ws = WatchSet(frozenset({str(a), str(b)}))
    before = WatchSet(frozenset({str(a)})).snapshot()
    since = os.stat(b).st_ctime_ns + 10**9  # a run that began a second after b was saved
    assert changed(ws, before, since) == []
    assert changed(ws, before) == []  # no start given: only known files are compared
    os.utime(b, ns=(since, since))  # saved during that run
    assert changed(ws, before, since) == [str(b)]
    # A file system that keeps whole seconds: a save made just after the run began may
    # carry a time just before it.
    whole = since // 10**9 * 10**9
    real = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *args, **kw: types.SimpleNamespace(
        st_size=1, st_mtime_ns=whole, st_ctime_ns=whole, st_ino=1) if str(p) == str(b) else real(p, *args, **kw))
    assert changed(ws, before, whole + 10**9 - 1) == [str(b)]
    assert changed(ws, before, whole + 3 * 10**9) == []


def test_watch_set_covers_taskfile_modules_and_source_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch set has the taskfile, the project's modules, source File() inputs (a file,
    a directory, a pattern) and never a declared output or an input another task writes."""
    from checkpoint.taskfile import load_taskfile

    (tmp_path / "taskfile.py").write_text(textwrap.dedent('''
        from checkpoint import File, Product, requires, task
        import watchhelper

        @task
        def make():
            @requires(File("raw.csv"))
            @requires(Product("out/made.csv"))
            def __(raw, out):
                out.write_text(raw.read_text())
            return __

        @task
        def main():
            @requires([make(), File("out/made.csv"), File("data"), File("logs/*.log")])
            def __(inputs):
                return 1
            return __
    '''))
    (tmp_path / "watchhelper.py").write_text("X = 1\n")
    (tmp_path / "raw.csv").write_text("a\n")
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "x.txt").write_text("x")
    (tmp_path / "data" / ".zattrs").write_text("x")   # a hidden file counts (Zarr's metadata)
    (tmp_path / "data" / ".DS_Store").write_text("x")  # scratch files and hidden folders do not
    (tmp_path / "data" / ".git").mkdir()
    (tmp_path / "data" / ".git" / "index").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = load_taskfile(tmp_path / "taskfile.py")
        root = os.path.realpath(tmp_path)
        ws = watch_set(tmp_path / "taskfile.py", [module.main()])
        assert ws.files == {os.path.join(root, "taskfile.py"), os.path.join(root, "watchhelper.py"),
                            os.path.join(str(tmp_path), "raw.csv")}
        data = os.path.join(str(tmp_path), "data")
        assert ws.trees == ((data, None), (os.path.join(str(tmp_path), "logs"),
                                           os.path.join(str(tmp_path), "logs", "*.log")))
        assert ws.matches(os.path.join(data, "sub", "x.txt"))
        assert ws.matches(os.path.join(data, ".zattrs"))
        assert not ws.matches(os.path.join(data, ".DS_Store"))
        assert not ws.matches(os.path.join(data, ".git", "index"))
        assert not ws.matches(os.path.join(data, ".git"))
        assert not ws.matches(os.path.join(str(tmp_path), "logs", ".a.log"))  # nor a pattern's
        assert not ws.matches(os.path.join(str(tmp_path), "out", "made.csv"))
        assert not ws.matches(os.path.join(str(tmp_path), "notes.txt"))
        assert ws.matches(os.path.join(str(tmp_path), "logs"))  # made: its files may follow
        assert len(ws) == 5
        # A missing directory is watched through the nearest one that exists.
        assert ws.directories() == sorted({root, str(tmp_path), data, os.path.join(data, "sub")})

        before = ws.snapshot()
        (tmp_path / "data" / "sub" / "y.txt").write_text("y")
        assert changed(ws, before) == []  # a new file is no change to a known one...
        (tmp_path / "raw.csv").write_text("a, b\n")
        (tmp_path / "data" / "sub" / "x.txt").unlink()
        assert changed(ws, before) == sorted([os.path.join(str(tmp_path), "raw.csv"),
                                              os.path.join(data, "sub", "x.txt")])
        assert sorted(forget_project_modules(tmp_path)) == ["taskfile", "watchhelper"]
        assert "watchhelper" not in sys.modules
    finally:
        for name in ("taskfile", "watchhelper"):
            sys.modules.pop(name, None)


def test_changed_compares_only_known_files(tmp_path: Path) -> None:
    """A file the earlier snapshot did not know is not a change; a deleted one is."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("1")
    ws = WatchSet(frozenset({str(a)}))
    before = ws.snapshot()
    b.write_text("2")
    assert changed(WatchSet(frozenset({str(a), str(b)})), before) == []
    a.unlink()
    assert changed(ws, before) == [str(a)]


@pytest.mark.parametrize("flag", ["--json", "--dry-run", "--pdb"])
def test_watch_refuses_one_shot_options(invoke: Callable[..., object], flag: str) -> None:
    """--watch with an option of a single run is a usage error naming it."""
    result = invoke("run", "--watch", flag)
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert result.output == (  # type: ignore[attr-defined]
        f"Error: --watch runs again and again; it cannot be combined with {flag}. Leave one out.\n")


def test_watch_without_watchfiles_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the watchfiles package, waiting is a usage error naming the extra."""
    from checkpoint.errors import UsageError
    from checkpoint.watch import wait_for_change

    monkeypatch.setitem(sys.modules, "watchfiles", None)
    with pytest.raises(UsageError, match=r"pip install 'checkpoint-tool\[watch\]'"):
        wait_for_change(WatchSet(frozenset()), {})


def test_watch_set_follows_imports_in_tasks_and_recursive_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project module imported inside a task (run by a worker: never imported here) is
    watched, as its code is fingerprinted; a '**' pattern matches files at any depth, none
    of them (glob's rule); what a Product directory holds is never a reason to run again."""
    from checkpoint.taskfile import load_taskfile

    (tmp_path / "taskfile.py").write_text(textwrap.dedent('''
        from checkpoint import File, Product, requires, task

        @task
        def code():
            def __():
                import insidehelper
                return insidehelper.g()
            return __

        @task
        def split():
            @requires(Product("data/shards/"))
            def __(out):
                (out / "0.csv").write_text("0")
            return __

        @task
        def main():
            @requires([code(), split(), File("data/**/*.csv")])
            def __(got):
                return 1
            return __
    '''))
    (tmp_path / "insidehelper.py").write_text("def g():\n    return 1\n")
    (tmp_path / "data" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = load_taskfile(tmp_path / "taskfile.py")
        ws = watch_set(tmp_path / "taskfile.py", [module.main()])
        assert "insidehelper" not in sys.modules
        assert os.path.join(os.path.realpath(tmp_path), "insidehelper.py") in ws.files
        data = os.path.join(str(tmp_path), "data")
        assert ws.matches(os.path.join(data, "a.csv"))
        assert ws.matches(os.path.join(data, "deep", "b.csv"))
        assert not ws.matches(os.path.join(data, "a.txt"))
        assert not ws.matches(os.path.join(data, "shards", "0.csv"))
    finally:
        sys.modules.pop("taskfile", None)


READS = '''
import json
from pathlib import Path
from checkpoint import requires, task

SETTINGS = json.loads(Path("settings.json").read_text())


@task
def load():
    cfg = json.loads(Path("config.json").read_text())
    Path("planned.log").write_text("planned")  # written, not read: never watched
    def __():
        return cfg["lr"]
    return __


LOADED = load()  # a module-level task: the run plans it, watch_set finds it planned


@task
def main():
    try:
        extra = json.loads(Path("extra.json").read_text())
    except FileNotFoundError:
        extra = {"add": 0}
    @requires(LOADED)
    def __(lr):
        Path("ran.log").write_text(Path("inner.txt").read_text())  # the inner's reads: not planning
        return lr * 10 + SETTINGS["x"] + extra["add"]
    return __
'''


def test_watch_set_has_the_files_the_taskfile_and_outer_functions_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files read while the taskfile is imported and while outer functions run
    (captured values, module-level values: both count) are watched, also one missing
    (made later, it counts); files they write, files inner functions read and installed
    files are not."""
    import checkpoint
    from checkpoint import watch
    from checkpoint.taskfile import load_taskfile

    (tmp_path / "taskfile.py").write_text(READS)
    (tmp_path / "settings.json").write_text('{"x": 1}')
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    (tmp_path / "inner.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(watch, "_reads", None)
    try:
        watch.record_reads()  # as the watch loop does before its first run
        module = load_taskfile(tmp_path / "taskfile.py")
        assert checkpoint.run([module.main()], executor="inline").values[module.main().id] == 2.0
        ws = watch_set(tmp_path / "taskfile.py", [module.main()])
        root = os.path.realpath(tmp_path)
        assert ws.files == {os.path.join(root, name) for name in (
            "taskfile.py", "settings.json", "config.json", "extra.json")}
        assert ws.matches(os.path.join(root, "extra.json"))
    finally:
        sys.modules.pop("taskfile", None)


def test_watch_runs_again_when_a_file_an_outer_function_reads_changes(tmp_path: Path) -> None:
    """The tester's reproduction: config.json is read by the outer function (a captured
    value); saving it starts a new run, which shows the new value."""
    (tmp_path / "taskfile.py").write_text(textwrap.dedent('''
        import json
        from checkpoint import task

        @task
        def main():
            cfg = json.load(open("config.json"))
            def __():
                return cfg["lr"] * 10
            return __
    '''))
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    time.sleep(0.3)  # (see test_watch_runs_again_after_edits_and_ctrl_c_exits_130)
    env = {k: v for k, v in os.environ.items() if k not in ("CP_CACHE_DIR", "FORCE_COLOR")}
    with subprocess.Popen([CHECKPOINT, "run", "--watch", "main"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, errs = Lines(proc.stdout), Lines(proc.stderr)
            assert out.expect(lambda line: bool(line), "with the value") == "1.0"
            errs.expect(lambda line: line == "Watching 2 files; Ctrl-C to stop.", "saying it watches")
            _write(tmp_path / "config.json", '{"lr": 0.5}')
            assert errs.expect(lambda line: line.startswith("Changed:"), "naming the change") == (
                "Changed: config.json; running again.")
            assert out.expect(lambda line: bool(line), "after the edit") == "5.0"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 130
        finally:
            if proc.poll() is None:
                proc.kill()


SYSTEM_FILES = [p for p in ("/proc/self/status", "/sys/fs/cgroup/cpu.max", "/etc/hostname",
                            "/usr/share/zoneinfo/UTC") if os.path.isfile(p)]


@pytest.mark.skipif(not SYSTEM_FILES, reason="no system file to read here")
def test_system_files_read_while_planning_are_not_watched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files of the system (a cgroup limit, the time zone database: what a library reads
    once, on its first import, and caches) are not the project's: not watched, so the first
    run's count is not larger than the next runs' ("Watching 12 files", then 8)."""
    from checkpoint import watch
    from checkpoint.taskfile import load_taskfile

    (tmp_path / "taskfile.py").write_text(
        f"from pathlib import Path\nfrom checkpoint import task\n"
        f"SYSTEM = [Path(p).read_bytes() for p in {SYSTEM_FILES!r}]\n"
        f"PARAMS = Path('params.json').read_text()\n\n"
        f"@task\ndef main():\n    def __():\n        return PARAMS\n    return __\n")
    (tmp_path / "params.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(watch, "_reads", None)
    try:
        watch.record_reads()
        module = load_taskfile(tmp_path / "taskfile.py")
        ws = watch_set(tmp_path / "taskfile.py", [module.main()])
        root = os.path.realpath(tmp_path)
        assert ws.files == {os.path.join(root, "taskfile.py"), os.path.join(root, "params.json")}
    finally:
        sys.modules.pop("taskfile", None)
