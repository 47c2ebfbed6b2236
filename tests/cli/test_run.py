"""`checkpoint run`: targets, values on stdout, options, dry runs, JSON, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from .conftest import Invoke, edit, ran

INLINE = ("--executor", "inline")


def test_default_target_is_main(invoke: Invoke) -> None:
    """run without targets should build main and print its repr."""
    result = invoke("run", *INLINE)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "[1, 4, 6, 4, 1]\n"
    assert "15 ran" in result.stderr


def test_second_run_reuses(invoke: Invoke) -> None:
    """A second run should reuse every stored result."""
    invoke("run", *INLINE)
    result = invoke("run", *INLINE)
    assert result.stdout == "[1, 4, 6, 4, 1]\n"
    assert "Nothing to run: all 15 tasks reused" in result.stderr
    assert ran(invoke) == (0, 15)


@pytest.mark.parametrize(
    ("target", "value"),
    [
        ("choose", None),
        ("choose(6, 3)", "20"),
        ("choose(n=6, k=3)", "20"),
        ("choose(6, k=2)", "15"),
        ("greet", "hello world"),
        ("greet('you', excited=True)", "hello you!"),
        ("scale([1, 2], 2.5)", "[2.5, 5.0]"),
        ("scale([1], opts={'b': 1, 'a': [1, 2]})", "[1, 'a', 'b']"),
        ("scale(values=[3], factor=None)", "[3]"),
        ("double(21)", "42"),
    ],
    ids=["bare-name-needs-args", "positional", "keywords", "mixed", "defaults", "str-bool",
         "list-float", "nested-dict", "none", "sibling-module"],
)
def test_targets(invoke: Invoke, target: str, value: str | None) -> None:
    """Targets with literal arguments should run and print the value's repr."""
    result = invoke("run", *INLINE, target)
    if value is None:
        assert result.exit_code == 2
        assert "missing a required argument" in result.stderr
    else:
        assert result.exit_code == 0, result.stderr
        assert result.stdout == value + "\n"


def test_none_prints_nothing(invoke: Invoke) -> None:
    """A target whose value is None should print nothing to stdout."""
    result = invoke("run", *INLINE, "nothing")
    assert result.exit_code == 0
    assert result.stdout == ""


def test_several_targets_one_dag(invoke: Invoke) -> None:
    """Several targets should run as one DAG and print one value each, in order."""
    result = invoke("run", *INLINE, "choose(4, 2)", "choose(3, 1)", "main")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["6", "3", "[1, 4, 6, 4, 1]"]
    assert "15 ran" in result.stderr  # shared tasks ran once


def test_task_prints_stay_off_stdout(invoke: Invoke) -> None:
    """A task's own print should never reach stdout (it holds the value or the JSON document)."""
    result = invoke("run", *INLINE, "--json", "chatty")
    doc = json.loads(result.stdout)
    assert doc["targets"][0]["value"] == "said"
    result = invoke("run", *INLINE, "--force", "-v", "chatty")
    assert result.stdout == "said\n"
    assert "chatting on stdout" in result.stderr


def test_json_document(invoke: Invoke) -> None:
    """--json should print one document with values, counts and the ok flag."""
    result = invoke("run", *INLINE, "--json", "main", "blob(3)")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert [t["target"] for t in doc["targets"]] == ["main", "blob(3)"]
    assert doc["targets"][0]["value"] == [1, 4, 6, 4, 1]
    assert doc["ran"] == 16 and doc["reused"] == 0
    assert doc["failed"] == [] and doc["skipped"] == []


def test_json_non_serializable_value(invoke: Invoke, project: Path) -> None:
    """A value JSON cannot hold should appear as null with its repr."""
    edit(project, "double = helper.double", "double = helper.double\n\n@task\ndef aset():\n"
         "    def __():\n        return {1, 2}\n    return __\n")
    doc = json.loads(invoke("run", *INLINE, "--json", "aset").stdout)
    assert doc["targets"][0]["value"] is None
    assert doc["targets"][0]["repr"] == "{1, 2}"


def test_failure_exit_code_and_traceback(invoke: Invoke) -> None:
    """A failing task should exit 1 and show its traceback without checkpoint frames."""
    result = invoke("run", *INLINE, "booms")
    assert result.exit_code == 1
    assert "Task boom(1) (taskfile.boom) failed:" in result.stderr
    assert "RuntimeError: boom 1" in result.stderr
    assert "taskfile.py" in result.stderr
    assert "checkpoint/_worker.py" not in result.stderr
    assert "checkpoint/scheduler.py" not in result.stderr
    assert result.stdout == ""


def test_keep_going(invoke: Invoke, cache_dir: Path) -> None:
    """-k should run independent tasks after a failure and report the skipped ones."""
    result = invoke("run", *INLINE, "-k", "booms")
    assert result.exit_code == 1
    assert "1 skipped" in result.stderr
    dry = invoke("run", "-n", "booms")
    assert "boom(2)" not in dry.stdout  # boom(2) ran and was stored


def test_json_failure(invoke: Invoke) -> None:
    """--json should report failures (task, error, traceback) and exit 1."""
    result = invoke("run", *INLINE, "--json", "-k", "booms")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["failed"][0]["task"] == "boom(1)"
    assert doc["failed"][0]["error"] == "RuntimeError: boom 1"
    assert "boom 1" in doc["failed"][0]["traceback"]
    assert doc["skipped"] == ["booms()"]


def test_dry_run_groups_by_family_with_reasons(invoke: Invoke, project: Path) -> None:
    """-n should list what would run, grouped by family, each with its reason, and run nothing."""
    result = invoke("run", "-n", "choose(2, 1)")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "choose: 3 tasks", "  choose(1, 0)  missing", "  choose(1, 1)  missing",
        "  choose(2, 1)  missing",
    ]
    assert "3 of 3 tasks would run" in result.stderr
    invoke("run", *INLINE, "choose(2, 1)")
    assert "Nothing to run" in invoke("run", "-n", "choose(2, 1)").stderr
    invoke("clear", "choose(1, 0)")
    result = invoke("run", "-n", "choose(2, 1)")
    assert result.stdout.splitlines()[1:] == ["  choose(1, 0)  missing", "  choose(2, 1)  upstream re-run"]
    edit(project, "return a + b", "return b + a")
    result = invoke("run", "-n", "choose(2, 1)")
    assert "  choose(1, 1)  code changed" in result.stdout  # the whole family's code changed


def test_dry_run_json_and_force(invoke: Invoke) -> None:
    """-n --json should list the tasks with reasons; --force marks the targets forced."""
    invoke("run", *INLINE, "choose(2, 1)")
    doc = json.loads(invoke("run", "-n", "--json", "--force", "choose(2, 1)").stdout)
    assert doc["total"] == 3
    assert [(t["task"], t["reason"]) for t in doc["to_run"]] == [("choose(2, 1)", "forced")]
    doc = json.loads(invoke("run", "-n", "--json", "--force-upstream", "choose(2, 1)").stdout)
    assert {t["reason"] for t in doc["to_run"]} == {"forced"} and len(doc["to_run"]) == 3


def test_force_reruns(invoke: Invoke) -> None:
    """--force should re-run the target only; --force-upstream everything under it."""
    invoke("run", *INLINE, "choose(3, 1)")
    assert ran(invoke, "--force", "choose(3, 1)") == (1, 4)
    assert ran(invoke, "--force-upstream", "choose(3, 1)") == (5, 0)


def test_no_code_check(invoke: Invoke, project: Path) -> None:
    """--no-code-check should reuse results after a code change."""
    invoke("run", *INLINE, "choose(3, 1)")
    edit(project, "return a + b", "return b + a")
    assert ran(invoke, "--no-code-check", "choose(3, 1)") == (0, 5)
    assert ran(invoke, "choose(3, 1)") == (5, 0)


@pytest.mark.parametrize("executor", ["thread", "inline", "threads"])
def test_executors_and_workers(invoke: Invoke, executor: str) -> None:
    """--executor and -j should be accepted and give the same value."""
    result = invoke("run", "--executor", executor, "-j", "2", "main")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "[1, 4, 6, 4, 1]\n"


def test_rate_limit_and_no_progress(invoke: Invoke) -> None:
    """--rate-limit QUEUE=N (repeatable) and --no-progress should be accepted."""
    result = invoke("run", "--executor", "thread", "--rate-limit", "disk=1",
                    "--rate-limit", "taskfile.choose=2", "--no-progress", "blob(2)", "main")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1] == "[1, 4, 6, 4, 1]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-limit", "disk"], "is not QUEUE=N"),
        (["--rate-limit", "disk=0"], "is not QUEUE=N"),
        (["--executor", "gpu"], "is not an executor"),
        (["-j", "0"], "0 is not in the range"),
    ],
    ids=["no-equals", "zero", "bad-executor", "zero-workers"],
)
def test_bad_options(invoke: Invoke, args: list[str], message: str) -> None:
    """Bad option values should exit 2 with a usage hint."""
    result = invoke("run", *args, "main")
    assert result.exit_code == 2
    assert message in result.stderr


def test_dask_without_extra(invoke: Invoke) -> None:
    """--executor dask should run, or (without the extra) say how to install it with exit 2."""
    pytest.importorskip("click")
    try:
        import distributed  # noqa: F401
    except ImportError:
        result = invoke("run", "--executor", "dask", "choose(2, 1)")
        assert result.exit_code == 2
        assert "dask" in result.stderr and "pip install" in result.stderr
    else:
        pytest.skip("distributed is installed; the Dask executor has its own tests")


def test_values_print_strings_as_is_and_others_as_repr(invoke: Invoke, project: Path) -> None:
    """A string value should print as it is (every line), a Path or tuple as its repr, None as nothing."""
    edit(project, "double = helper.double", "double = helper.double\n\n"
         "@task\ndef report():\n    def __():\n        return 'line one\\nline two'\n    return __\n\n"
         "@task\ndef where():\n    def __():\n        import pathlib\n"
         "        return pathlib.PurePosixPath('out/model.bin')\n    return __\n\n"
         "@task\ndef pair():\n    def __():\n        return ('1', 1)\n    return __\n")
    result = invoke("run", *INLINE, "report", "where", "pair", "nothing", "greet")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ("line one\nline two\nPurePosixPath('out/model.bin')\n('1', 1)\nhello world\n")


def test_live_display_gets_the_family_mean_from_the_cache(invoke: Invoke, project: Path,
                                                           cache_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's live reporter should look up a family's mean stored duration for its ETA."""
    import checkpoint.progress as progress
    from checkpoint.cli import App
    from checkpoint.cli.run import subscribers

    invoke("run", *INLINE, "choose(3, 1)")
    durations = [e["duration"] for e in json.loads(invoke("cache", "ls", "--json", "choose").stdout)["entries"]]
    monkeypatch.setattr(progress, "wants_live", lambda stream=None: True)
    _, reporter, _ = subscribers(App(str(project), str(cache_dir)), no_progress=False,
                                 show_output=False, as_json=False)
    assert isinstance(reporter, progress.LiveReporter)
    lookup = reporter.tally.family_mean
    assert lookup is not None
    assert lookup("taskfile.choose") == pytest.approx(sum(durations) / len(durations))
    assert lookup("taskfile.main") is None


def test_counts_read_as_english_for_one(invoke: Invoke) -> None:
    """One task is "1 task", never "1 tasks" or "1 task(s)"."""
    first = invoke("run", "--executor", "inline", "greet")
    again = invoke("run", "--executor", "inline", "greet")
    dry = invoke("run", "-n", "choose(1, 0)")
    text = first.stderr + again.stderr + dry.stdout + dry.stderr
    assert "Nothing to run: 1 task reused" in again.stderr
    assert "1 of 1 task would run" in dry.stderr
    assert "(s)" not in text and "1 tasks" not in text


def test_jobs_quiet_after_run_and_unknown_queue(invoke: Invoke) -> None:
    """--jobs is -j; -q works after `run` too; a --rate-limit queue no family uses is named."""
    result = invoke("run", "--executor", "inline", "--jobs", "2", "-q", "--rate-limit", "gpu=1",
                    "choose(2, 1)")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "2"
    assert result.stderr == ""  # -q: only errors and data (the queue warning too)
    result = invoke("run", "--executor", "inline", "--rate-limit", "gpu=1", "choose(2, 1)")
    assert "warning: no task family uses the queue 'gpu' of --rate-limit" in result.stderr
    assert "taskfile.choose" in result.stderr


def test_help_has_examples_and_executor_completes(tmp_path: Path) -> None:
    """Every task command's --help shows real examples; --executor <TAB> offers the names."""
    from checkpoint.cli import cli

    runner = CliRunner()
    for command in ("run", "ls", "why", "log", "touch", "graph"):
        out = runner.invoke(cli, [command, "--help"]).output
        assert "Examples:" in out and f"checkpoint {command} " in out, command
    env = {"_CHECKPOINT_COMPLETE": "bash_complete", "COMP_WORDS": "checkpoint run --executor th",
           "COMP_CWORD": "3"}
    out = runner.invoke(cli, [], env=env, prog_name="checkpoint").output
    assert "thread" in out


def test_a_value_whose_repr_raises_prints_as_cache_show_does(invoke: Invoke, project: Path) -> None:
    """The run succeeded and stored the value: a bug in its ``__repr__`` should print it as
    ``<repr-error ...>`` (as ``cache show`` does, in --json too) and exit 0, not call it task
    code that raised while the DAG was built."""
    edit(project, "double = helper.double", "double = helper.double\n\n"
         "class Model:\n    def __init__(self, w):\n        self.w = w\n\n"
         "    def __repr__(self):\n        return f'Model(w={self.w[\"x\"]})'\n\n"
         "@task\ndef model():\n    def __():\n        return Model([1, 2])\n    return __\n")
    result = invoke("run", *INLINE, "model")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "<repr-error 'list indices must be integers or slices, not str'>\n"
    assert "DAG" not in result.stderr
    result = invoke("run", *INLINE, "--json", "model")
    assert result.exit_code == 0, result.stderr
    [target] = json.loads(result.stdout)["targets"]
    assert target["value"] is None and target["repr"].startswith("<repr-error ")
    assert "<repr-error " in invoke("cache", "show", "model").stdout
