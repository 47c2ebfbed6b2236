"""A task computes with exactly the values its id names: its arguments as they were at the
call (a list or dict the caller changes afterwards is not what the task sees), and on a
process pool or a Dask cluster the values its outer function computed at planning, not
those a worker would compute again with its own environment (adversarial round 5: 01, 11,
12)."""

from __future__ import annotations

import subprocess
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ENV, PYTHON

import checkpoint
from checkpoint.cli import cli

MUTATED = '''
from checkpoint import task, requires

@task
def fit(cfg: dict):
    def __():
        return cfg["lr"] * 10
    return __

@task
def main():
    cfg = {"lr": 0}
    ts = []
    for lr in [1, 2, 3]:
        cfg["lr"] = lr
        ts.append(fit(cfg))
    @requires(ts)
    def __(xs):
        return xs
    return __
'''


def test_an_argument_changed_after_the_call_is_not_what_the_task_sees(
        tmp_path: Path, runner: CliRunner) -> None:
    """The tester's loop (one dict, changed before each call): each task computes with the
    value its id names (the call's), and is listed so."""
    (tmp_path / "taskfile.py").write_text(MUTATED)
    result = runner.invoke(cli, ["run", "--no-progress", "main"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "[10, 20, 30]"
    shown = runner.invoke(cli, ["cache", "show", "fit({'lr': 1})"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip().splitlines()[-1] == "10"
    listed = runner.invoke(cli, ["ls", "main"])
    assert all(f"fit({{'lr': {lr}}})" in listed.stdout for lr in (1, 2, 3)), listed.stdout


def test_arguments_are_copied_deep_and_handles_kept(make_module: Any) -> None:
    mod = make_module("copied", '''
        from checkpoint import task

        @task
        def leaf(n: int):
            def __():
                return n
            return __

        @task
        def echo(value: object):
            def __():
                return value
            return __
    ''')
    nested = {"a": [1, {"b": 2}], "t": (3, [4]), "o": OrderedDict(x=[5]), "h": mod.leaf(1)}
    t = mod.echo(nested)
    nested["a"][1]["b"] = 20
    nested["t"][1].append(40)
    nested["o"]["x"].append(50)
    value = t.run(executor="inline")
    assert value["a"] == [1, {"b": 2}] and value["t"] == (3, [4]) and value["o"] == OrderedDict(x=[5])
    assert t.args[0]["h"] is nested["h"]  # a handle is not copied
    plain = (1, "x", 2.5)
    assert mod.echo(plain).args[0] is plain  # nothing to copy: the same object


SWITCHED = '''
import json
from pathlib import Path
from checkpoint import task, requires

@task
def prepare():
    def __():
        Path("config.json").write_text('{"lr": 0.5}')  # `git checkout experiment` meanwhile
        return 1
    return __

@task
def train():
    cfg = json.loads(Path("config.json").read_text())
    @requires(prepare())
    def __(_):
        return cfg["lr"] * 10
    return __
'''


def test_a_captured_value_changed_while_the_run_goes_on_is_not_read_again(
        tmp_path: Path, runner: CliRunner) -> None:
    """The tester's config switched during the run, then back: the process worker computes
    with the config that was read (and digested) at planning, not the one on disk when it
    starts the task; so the stored result is right for the config it is recorded with."""
    (tmp_path / "taskfile.py").write_text(SWITCHED)
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    first = runner.invoke(cli, ["run", "--no-progress", "--executor", "process", "train"])
    assert first.exit_code == 0, first.output
    assert first.stdout.strip().splitlines()[-1] == "1.0"
    (tmp_path / "config.json").write_text('{"lr": 0.1}')  # `git checkout main` again
    again = runner.invoke(cli, ["run", "--no-progress", "--executor", "process", "train"])
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().splitlines()[-1] == "1.0"


SESSION = '''
import os
from concurrent.futures import ProcessPoolExecutor
import checkpoint
from tasks import train
if __name__ == "__main__":
    with ProcessPoolExecutor(1) as pool:
        print(checkpoint.run([train(1)], executor=pool).values[train(1).id])
        os.environ["LR"] = "0.5"
        r = checkpoint.run([train(1)], executor=pool)
        print(len(r.ran), r.values[train(1).id])
'''

ENV_TASKS = '''
import os
from checkpoint import task

@task
def train(seed: int):
    lr = float(os.environ.get("LR", "0.1"))
    def __():
        return lr * 10 + seed
    return __
'''


def test_a_pool_worker_computes_with_the_coordinators_environment(tmp_path: Path) -> None:
    """A session's own process pool, whose worker was started before LR was set: the task
    computes with the LR its outer function read on the coordinator (and recorded)."""
    (tmp_path / "tasks.py").write_text(ENV_TASKS)
    (tmp_path / "session.py").write_text(SESSION)
    env = {k: v for k, v in ENV.items() if k != "LR"}
    env["CP_CACHE_DIR"] = str(tmp_path / ".cache")
    done = subprocess.run([PYTHON, "session.py"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2.0", "1", "6.0"]


UNPICKLABLE = '''
import threading
from checkpoint import task

@task
def locked(n: int):
    lock = threading.Lock()
    def __():
        with lock:
            return n + 1
    return __
'''


def test_an_inner_function_that_cannot_travel_is_made_in_the_worker(make_module: Any) -> None:
    """A lock (a client, a connection) made by the outer function cannot be pickled: the
    process worker makes it again by calling the outer function, as before."""
    mod = make_module("unpicklable", UNPICKLABLE)
    with pytest.warns(Warning, match="cannot be fingerprinted"):
        result = checkpoint.run([mod.locked(1), mod.locked(2)], executor="process", max_workers=1)
    assert sorted(result.values.values()) == [2, 3]


SHARED = '''
import functools, json
from pathlib import Path
from checkpoint import task, requires

@functools.lru_cache
def load_params():
    return json.loads(Path("params.json").read_text())

@task
def fit(seed: int):
    params = load_params()           # one dict, shared by every task of this process
    def __():
        params.setdefault("seed", seed)  # completed in place, as xgboost wants it
        return params["seed"]
    return __

@task
def main():
    @requires([fit(s) for s in range(6)])
    def __(seeds):
        return seeds
    return __
'''


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_tasks_sharing_a_captured_object_each_compute_with_their_own(
        make_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    """adv6 §3: inner functions capturing one object (an lru_cache'd config) that they
    complete in place: each task starts from its own copy, in process and in one pickled
    batch of a worker alike (max_workers=1), and the planned object is left as it was."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.json").write_text('{"lr": 0.1}')
    mod = make_module("shared_params", SHARED)
    result = checkpoint.run([mod.main()], executor=executor, max_workers=1)
    assert result.values[mod.main().id] == list(range(6))
    assert mod.load_params() == {"lr": 0.1}


RETRIED = '''
import os
from checkpoint import task

@task(retries=1)
def build(layers: list):
    def __():
        layers.append("softmax")            # a builder completing its list in place
        if not os.path.exists("attempt1"):  # a transient failure, the first time
            open("attempt1", "w").close()
            raise RuntimeError("transient")
        return layers
    return __

@task(retries=1)
def configured():
    cfg = {"layers": ["dense"], "rounds": 3}
    count = 0
    def __():
        nonlocal count
        count += 1
        cfg["layers"].append("softmax")
        rounds = cfg.pop("rounds")          # LightGBM's aliases: popped in place
        if not os.path.exists("attempt2"):
            open("attempt2", "w").close()
            raise RuntimeError("transient")
        return cfg["layers"], rounds, count
    return __
'''


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_a_retry_starts_from_the_arguments_and_captured_values_as_planned(
        make_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    """adv6 §4: what a failed attempt changed in place (an argument, a captured config, a
    closure variable) is not what the retry computes with; nor a forced re-run of the same
    handle, whose arguments stay those its id names."""
    monkeypatch.chdir(tmp_path)
    mod = make_module("retried", RETRIED)
    handle = mod.build(["dense"])
    assert handle.run(executor=executor) == ["dense", "softmax"]
    assert handle.run(executor=executor, force=True) == ["dense", "softmax"]
    assert handle.args == (["dense"],) and repr(handle) == "build(['dense'])"
    assert mod.configured().run(executor=executor) == (["dense", "softmax"], 3, 1)
