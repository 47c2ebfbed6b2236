"""The real console script and `python -m checkpoint`: values, exit codes, Ctrl-C, start-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHECKPOINT = str(Path(sys.executable).parent / "checkpoint")
HEAVY = {"rich", "networkx", "diskcache", "cloudpickle", "dask", "distributed"}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}
    environ.update(env)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=environ, timeout=60)


def test_console_script_runs_main(project: Path) -> None:
    """`checkpoint run main` should print main's value with the cache next to the taskfile."""
    sub = project.parent / "deeper"
    sub.mkdir()
    proc = run([CHECKPOINT, "run", "main"], sub)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[1, 4, 6, 4, 1]\n"
    assert (project.parent / ".cache" / "checkpoint" / "taskfile.choose").is_dir()
    proc = run([CHECKPOINT, "ls", "--json"], sub)
    entries = {f["name"]: f["entries"] for f in json.loads(proc.stdout)["families"]}
    assert entries["choose"] == 14



@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_value_the_output_cannot_encode_prints_escaped(project: Path, encoding: str) -> None:
    """A str value with a lone surrogate (json.loads accepts "\\ud800"), or text the output's
    encoding lacks, prints with those characters escaped (as `cache show` does), exit 0."""
    environ = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}
    proc = subprocess.run([CHECKPOINT, "run", "--no-progress", "greet('caf\\ud800 é 中')"],
                          cwd=project.parent, capture_output=True, timeout=60,
                          env={**environ, "PYTHONIOENCODING": encoding})
    assert proc.returncode == 0, proc.stderr
    expected = "hello caf\\ud800 é 中\n" if encoding == "utf-8" else "hello caf\\ud800 é \\u4e2d\n"
    assert proc.stdout == expected.encode(encoding)


def test_python_m_seed_form(project: Path, tmp_path: Path) -> None:
    """`python -m checkpoint path/to/taskfile.py` should run main (the seed's form)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run([sys.executable, "-m", "checkpoint", str(project)], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[1, 4, 6, 4, 1]\n"
    assert (project.parent / ".cache").is_dir() and not (elsewhere / ".cache").exists()
    proc = run([sys.executable, "-m", "checkpoint", str(project), "choose(3, 1)", "-j", "2"], elsewhere)
    assert proc.stdout == "3\n"


def test_python_m_seed_options(project: Path, tmp_path: Path) -> None:
    """The seed's own options (-e, -t, -w, --cache-dir, --rate-limits, -D) should still work."""
    cache = tmp_path / "seed-cache"
    proc = run([sys.executable, "-m", "checkpoint", str(project), "-e", "choose(3, 1)", "-t", "thread",
                "-w", "-1", "--cache-dir", str(cache), "--rate-limits", '{"disk": 1}', "-D"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "3\n"
    assert (cache / "checkpoint" / "taskfile.choose").is_dir()
    proc = run([sys.executable, "-m", "checkpoint", str(project), "--rate-limits", "gpu=1"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("Error: --rate-limits wants a JSON object of queue limits like "
                           "'{\"gpu\": 1}', not 'gpu=1'.\n")


def test_python_m_subcommands(project: Path) -> None:
    """`python -m checkpoint run ...` should be the same CLI as `checkpoint`."""
    proc = run([sys.executable, "-m", "checkpoint", "run", "--executor", "thread", "choose(4, 2)"], project.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "6\n"
    proc = run([sys.executable, "-m", "checkpoint", "--version"], project.parent)
    assert proc.returncode == 0 and "checkpoint" in proc.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "booms"], 1, "RuntimeError: boom 1"),
        (["run", "chose"], 2, "Did you mean 'choose'?"),
        (["run", "--workers", "x"], 2, "'x' is not a valid integer"),
        (["ls"], 0, "choose"),
    ],
    ids=["task-failed", "unknown-task", "bad-option", "ok"],
)
def test_exit_codes(project: Path, args: list[str], code: int, message: str) -> None:
    """The console script should exit 0/1/2 as documented, with messages on stderr."""
    proc = run([CHECKPOINT, *args], project.parent)
    assert proc.returncode == code, proc.stderr
    assert message in (proc.stderr if code else proc.stdout)
    assert "checkpoint/cli" not in proc.stderr


def test_task_failure_traceback_in_process_worker(project: Path) -> None:
    """A task failing in a worker process should show its own file and line, not checkpoint's."""
    proc = run([CHECKPOINT, "run", "--executor", "process", "boom(3)"], project.parent)
    assert proc.returncode == 1
    assert "Task boom(3) (taskfile.boom) failed:" in proc.stderr
    assert "RuntimeError: boom 3" in proc.stderr
    assert "checkpoint/_worker.py" not in proc.stderr


def test_sigint_exits_130(project: Path) -> None:
    """Ctrl-C during a run should stop it with exit code 130 and a short message."""
    marker = project.parent / "started"
    project.write_text(project.read_text() + textwrap.dedent(f'''
        @task
        def slow():
            def __():
                import pathlib, time
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(30)
            return __
    '''))
    environ = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}
    # A shell without job control starts background jobs with SIGINT ignored, which children
    # inherit: give the CLI a normal Ctrl-C, in a session of its own.
    proc = subprocess.Popen([CHECKPOINT, "run", "slow", "-j", "1"], cwd=project.parent, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120  # generous: the suite may run on a loaded machine
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert stderr.count("interrupted: 0 done, 1 not run") == 1, stderr
    assert "Traceback" not in stderr


def _loaded_modules(argv: list[str], cwd: Path, **env: str) -> tuple[set[str], str]:
    code = (
        "import sys, json\n"
        "from checkpoint.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "names = {m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith('checkpoint')}\n"
        "sys.stderr.write('MODULES=' + json.dumps(sorted(names)))\n"
    )
    proc = run([sys.executable, "-c", code], cwd, **env)
    modules = json.loads(proc.stderr.rsplit("MODULES=", 1)[1])
    return set(modules), proc.stdout


def test_help_is_light(project: Path) -> None:
    """`checkpoint --help` should not import rich, networkx, diskcache or cloudpickle."""
    modules, out = _loaded_modules(["--help"], project.parent)
    assert "Usage: checkpoint" in out
    assert not modules & HEAVY
    assert "checkpoint.scheduler" not in modules  # nor the executors and multiprocessing


def test_thread_run_does_not_import_multiprocessing(project: Path) -> None:
    """A thread run needs no process pool: no multiprocessing, socket or difflib import (~15 ms)."""
    modules, out = _loaded_modules(["run", "--executor", "thread", "--no-progress", "main"],
                                   project.parent)
    assert out == "[1, 4, 6, 4, 1]\n"
    assert not modules & {"multiprocessing", "socket", "difflib"}
    modules, _ = _loaded_modules(["run", "--executor", "process", "--no-progress", "--force", "main"],
                                 project.parent)
    assert "multiprocessing" in modules  # the check above can see these imports


def test_runs_are_recorded_without_the_report_code(project: Path) -> None:
    """A run is recorded for `checkpoint report`, but neither it nor a warm run imports the
    report's code or networkx (that cost is paid by `report` and `run --report` only)."""
    for _ in ("cold", "warm"):
        modules, out = _loaded_modules(["run", "--executor", "thread", "--no-progress", "main"],
                                       project.parent)
        assert out == "[1, 4, 6, 4, 1]\n"
        assert not modules & {"networkx", "checkpoint.report", "checkpoint.export"}
    assert "checkpoint.runs" in modules  # the check above can see checkpoint's modules
    assert sorted(p.name for p in (project.parent / ".cache/checkpoint/runs").iterdir()) == \
        ["000001.run"]  # the warm run was not saved


def test_completion_is_light_and_lists_families(project: Path) -> None:
    """Completing a target should list family names without importing heavy modules or the taskfile."""
    modules, out = _loaded_modules([], project.parent, _CHECKPOINT_COMPLETE="bash_complete",
                                   COMP_WORDS="checkpoint run ch", COMP_CWORD="2")
    assert out.split() == ["plain,chatty", "plain,choose"]
    assert not modules & HEAVY
    assert "taskfile" not in modules and "helper" not in modules


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(project: Path, shell: str) -> None:
    """The console script should print a completion script for bash, zsh and fish."""
    proc = run([CHECKPOINT], project.parent, _CHECKPOINT_COMPLETE=f"{shell}_source")
    assert proc.returncode == 0
    assert "_CHECKPOINT_COMPLETE" in proc.stdout


def test_completion_commands_and_options(project: Path) -> None:
    """Completion should offer subcommands and options of the real console script."""
    proc = run([CHECKPOINT], project.parent, _CHECKPOINT_COMPLETE="bash_complete",
               COMP_WORDS="checkpoint c", COMP_CWORD="1")
    assert proc.stdout.split() == ["plain,cache", "plain,clear"]
    proc = run([CHECKPOINT], project.parent, _CHECKPOINT_COMPLETE="zsh_complete",
               COMP_WORDS="checkpoint run --no", COMP_CWORD="2")
    assert "--no-code-check" in proc.stdout and "--no-progress" in proc.stdout
    proc = run([CHECKPOINT], project.parent, _CHECKPOINT_COMPLETE="fish_complete",
               COMP_WORDS="checkpoint cache show b", COMP_CWORD="b")
    assert proc.stdout.split() == ["plain,big", "plain,blob", "plain,boom", "plain,booms"]
    proc = run([CHECKPOINT], project.parent, _CHECKPOINT_COMPLETE="bash_complete",
               COMP_WORDS="checkpoint run d", COMP_CWORD="2")
    assert proc.stdout.split() == ["plain,double"]  # `double = helper.double`, from helper.py


def test_process_workers_import_sibling_modules(project: Path) -> None:
    """Run from a subdirectory with process workers, a family from a sibling module should work."""
    sub = project.parent / "sub"
    sub.mkdir()
    proc = run([CHECKPOINT, "run", "--executor", "process", "-j", "2", "double(21)", "choose(3, 1)"], sub)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n3\n"


RAISING = "import json\n\n\ndef connect():\n    raise ConnectionError('no database')\n\n\nconnect()\n"


@pytest.mark.parametrize(
    ("args", "taskfile", "expected"),
    [
        (["run", "chose(6, 3)"], None,
         ["Error: Unknown task 'chose' in ", "Did you mean 'choose'? Run 'checkpoint ls' to list tasks."]),
        (["run", "choose(6, x)"], None,
         ["Error: Bad target 'choose(6, x)': arguments must be literals", "\n  choose(6, x)\n            ^\n"]),
        (["-f", "nowhere/taskfile.py", "ls"], None,
         ["Error: Taskfile 'nowhere/taskfile.py' not found: there is no such file in "]),
        (["ls"], "", ["Error: No taskfile.py in ", "or name it with -f/--file PATH."]),
        (["ls"], RAISING,
         ["raised an error while being imported:\n", '", line 8, in <module>\n    connect()\n',
          '", line 5, in connect\n', "ConnectionError: no database\n"]),
        (["run", "choose(6)"], None,
         ["Error: Wrong arguments for task choose: missing a required argument: 'k'. "
          "Its signature is choose(n: int, k: int)."]),
        (["run", "greet(excited='yes')"], None,
         ["Error: Argument 'excited' of task greet must be bool, not str ('yes'). Its signature is "
          "greet(name: str = 'world', excited: bool = False)."]),
        (["run", "choose(" + "-" * 3000 + "1, 0)"], None,
         ["Error: Bad target 'choose(---", "it is nested too deeply to be parsed"]),
    ],
    ids=["unknown-task", "bad-expression", "missing-f", "no-taskfile", "raising-taskfile",
         "wrong-arguments", "annotation-mismatch", "deeply-nested"],
)
def test_bad_input_exits_2_with_a_message(project: Path, tmp_path_factory: pytest.TempPathFactory,
                                          args: list[str], taskfile: str | None,
                                          expected: list[str]) -> None:
    """Each kind of bad input should exit 2 with its message and no checkpoint-internal frame."""
    cwd = project.parent
    if taskfile == "":
        cwd = tmp_path_factory.mktemp("no-taskfile")
    elif taskfile is not None:
        project.write_text(taskfile)
    proc = run([CHECKPOINT, *args], cwd)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    for text in expected:
        assert text in proc.stderr
    assert "site-packages" not in proc.stderr and "checkpoint/" not in proc.stderr
    assert "importlib" not in proc.stderr and "<frozen" not in proc.stderr


def test_console_entry_skips_the_final_collection_and_keeps_exit_codes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console script (and `python -m checkpoint`) should freeze the GC once the command
    is done, so that exiting does not walk every imported object, with the command's exit
    code unchanged; the in-process `main()` that tests and notebooks call should not."""
    import gc

    from checkpoint.cli import console, main

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr("checkpoint._gcpolicy.for_good", False)  # console() sets it: not for later tests
    monkeypatch.chdir(project.parent)
    with pytest.raises(SystemExit) as exit_info:
        console(["run", "nosuchtask"])
    assert exit_info.value.code == 2 and frozen == [True]
    with pytest.raises(SystemExit):
        main(["run", "nosuchtask"])
    assert frozen == [True]
    script = Path(CHECKPOINT).read_text()
    assert "from checkpoint.cli import console" in script, "reinstall: pyproject's script changed"


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`checkpoint ... | head -1`: no 'Internal error', no BrokenPipeError, exit 141."""
    (tmp_path / "taskfile.py").write_text(
        "from checkpoint import task\n"
        "@task\n"
        "def main():\n"
        "    def __():\n"
        "        return 'x\\n' * 200000\n"
        "    return __\n"
    )
    env = {**os.environ, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for command in ("run --executor inline -q", "ls", "why main"):
        # `true` has exited before checkpoint writes: its first write meets a closed pipe.
        proc = subprocess.run(
            f"{sys.executable} -m checkpoint {command} | true; echo ${{PIPESTATUS[0]}}",
            shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120,
            executable="/bin/bash", env=env,
        )
        assert proc.stdout.strip() in ("0", "141"), (command, proc.stdout)
        assert "Error" not in proc.stderr and "Broken" not in proc.stderr, (command, proc.stderr)


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_a_child_processes_output_goes_to_stderr_not_among_the_values(tmp_path: Path, executor: str) -> None:
    """stdout holds only the values: what a task's child process (or a raw write to file
    descriptor 1) prints goes to stderr, as docs/progress.md says."""
    (tmp_path / "taskfile.py").write_text(textwrap.dedent('''
        import os, subprocess, sys
        from checkpoint import task

        @task
        def main():
            def __():
                subprocess.run([sys.executable, "-c", "print('from the child')"], check=True)
                os.write(1, b"raw on fd 1\\n")
                return 42
            return __
    '''))
    proc = run([CHECKPOINT, "run", "--executor", executor, "main"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "42\n"
    assert "from the child\n" in proc.stderr and "raw on fd 1\n" in proc.stderr


LOGGING_TASKFILE = '''
import logging
from checkpoint import task, requires

logging.basicConfig(level=logging.INFO)  # a handler holding the real stderr, made at import
log = logging.getLogger("pipeline")

@task
def leaf(i: int):
    def __():
        log.info("leaf %d working", i)
        if i == 3:
            raise ValueError("bad leaf")
        return i
    return __

@task
def main():
    @requires([leaf(i) for i in range(2)])
    def __(xs):
        log.warning("summing %s", xs)
        return sum(xs)
    return __
'''


@pytest.mark.parametrize("executor", ["process", "thread", "inline"])
def test_log_records_are_captured_per_task_like_prints(tmp_path: Path, executor: str) -> None:
    """logging.basicConfig at the taskfile's top: a task's records are captured with its
    output (`checkpoint log` shows them, a failure's report too), not written over the run."""
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(LOGGING_TASKFILE))
    proc = run([CHECKPOINT, "run", "--executor", executor, "main"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"
    assert "pipeline" not in proc.stderr
    proc = run([CHECKPOINT, "log", "main"], tmp_path)
    assert proc.stdout == "WARNING:pipeline:summing [0, 1]\n"
    proc = run([CHECKPOINT, "log", "leaf(1)"], tmp_path)
    assert proc.stdout == "INFO:pipeline:leaf 1 working\n"
    proc = run([CHECKPOINT, "run", "--executor", executor, "leaf(3)"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("INFO:pipeline:leaf 3 working") == 1
    assert "Captured output:\n  INFO:pipeline:leaf 3 working\n" in proc.stderr


def test_hints_follow_what_was_typed(project: Path, tmp_path: Path) -> None:
    """A hint names the taskfile given with -f, never an option that was not given, and a
    directory without a taskfile is not 'not found'."""
    (tmp_path / "empty.py").write_text("")
    proc = run([CHECKPOINT, "-f", "empty.py", "run"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == (f"Error: Unknown task 'main' in {tmp_path / 'empty.py'}: it defines no "
                           "task. Decorate a function with @task (from checkpoint import task), "
                           "or name another taskfile with -f.\n")
    proc = run([CHECKPOINT, "-f", str(project), "run", "chose"], tmp_path)
    assert proc.stderr.endswith(
        f"Did you mean 'choose'? Run 'checkpoint -f {project} ls' to list tasks.\n")
    proc = run([sys.executable, "-m", "checkpoint", "nope.py"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"Error: Taskfile 'nope.py' not found: there is no such file in {tmp_path}.\n"
    (tmp_path / "sub").mkdir()
    proc = run([CHECKPOINT, "-f", "sub", "ls"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("Error: 'sub' is a directory without a taskfile.py. Name the taskfile "
                           "itself (e.g. sub/tasks.py), or create taskfile.py there.\n")


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_module_level_file_the_tasks_write_is_flushed_at_exit(tmp_path: Path, executor: str) -> None:
    # The command line freezes its objects out of the last collection and pool workers end
    # by os._exit: a taskfile's open file, kept alive by the module's own functions, lost
    # the lines its tasks wrote.
    (tmp_path / "taskfile.py").write_text(textwrap.dedent("""
        import os
        from checkpoint import requires, task

        LOG = open(f"log-{os.getpid()}.txt", "w")

        @task()
        def step(i):
            def run():
                LOG.write(f"step {i}\\n")
                return i
            return run

        @task()
        def main():
            @requires([step(i) for i in range(20)])
            def run(values):
                return sum(values)
            return run
    """))
    proc = run([CHECKPOINT, "run", "--no-progress", "--executor", executor, "main"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("190")
    lines = [line for log in tmp_path.glob("log-*.txt") for line in log.read_text().splitlines()]
    assert sorted(lines) == sorted(f"step {i}" for i in range(20))


SHADOWS = ("queue", "logging", "string", "select")


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_project_modules_named_like_the_standard_library(tmp_path: Path, executor: str) -> None:
    """Project modules named like standard-library modules checkpoint needs (queue.py,
    logging.py, ...) should not break a run whose taskfile does not use them; when it does,
    the error should say which file shadows which module, and to rename it."""
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text("JOBS = []  # the project's own helpers\n")
    (tmp_path / "taskfile.py").write_text(textwrap.dedent("""
        from checkpoint import task

        @task
        def main():
            def __():
                return 42
            return __
    """))
    proc = run([CHECKPOINT, "run", "--executor", executor, "main"], tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "42\n"), proc.stderr
    (tmp_path / "taskfile.py").write_text("from queue import JOBS\n" + (tmp_path / "taskfile.py").read_text())
    proc = run([CHECKPOINT, "run", "--executor", executor, "main"], tmp_path)
    assert proc.returncode == 2
    assert (f"The project's queue.py ({tmp_path / 'queue.py'}) has the name of the "
            "standard-library module 'queue'") in " ".join(proc.stderr.split()), proc.stderr
