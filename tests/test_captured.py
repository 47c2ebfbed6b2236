"""Values the outer function computes and the inner function captures count: a changed one
makes the task stale (``input changed``, ``why`` names the variable), an unchanged one
re-runs nothing, in this process or the next; one that cannot be fingerprinted warns."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ENV, PYTHON

import checkpoint
from checkpoint.cli import cli
from checkpoint.fingerprint import FingerprintWarning
from checkpoint.graph import plan
from checkpoint.store import Store

TASKS = '''
import json
import os
import threading
from pathlib import Path
from dataclasses import dataclass

from checkpoint import requires, task


@dataclass
class TrainConfig:
    lr: float
    tags: frozenset


@task
def prepare(seed: int):
    def __() -> list:
        return [seed, seed + 1]
    return __


@task
def train(seed: int):
    cfg = json.loads(Path("config.json").read_text())
    @requires(prepare(seed))
    def __(data: list) -> float:
        return sum(data) * cfg["lr"] + seed
    return __


@task
def scaled(seed: int):
    factor = float(os.environ["FACTOR"])
    def __() -> float:
        return seed * factor
    return __


@task
def built(seed: int):
    with open("config.json") as f:
        cfg = TrainConfig(lr=json.load(f)["lr"], tags=frozenset({"a", "b", "c"}))
    def __() -> float:
        return seed * cfg.lr
    return __


@task
def helped(seed: int):
    cfg = json.loads(Path("config.json").read_text())
    def helper(x: int) -> float:
        return x * cfg["lr"]
    def __() -> float:
        return helper(seed)
    return __


@task
def defaulted(seed: int):
    cfg = json.loads(Path("config.json").read_text())
    def __(lr: float = cfg["lr"]) -> float:
        return seed * lr
    return __


@task
def rebound(seed: int):
    seed = seed + int(os.environ.get("OFFSET", "0"))
    def __() -> int:
        return seed
    return __


@task
def locked(seed: int):
    gate = threading.Lock()
    def __() -> int:
        with gate:
            return seed
    return __


@task
def plain(i: int):
    def __() -> int:
        return i
    return __


@task
def rounded(seed: int):
    cfg = json.loads(Path("config.json").read_text())
    def __() -> int:
        return round(cfg["lr"])
    return __


@task
def downstream(seed: int):
    @requires(rounded(seed))
    def __(value: int) -> int:
        return value + 1
    return __
'''


@pytest.fixture
def tasks(tmp_path: Path, make_module: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.5}))
    monkeypatch.setenv("FACTOR", "2")
    return make_module("taskfile", TASKS)


def _set_lr(lr: float) -> None:
    Path("config.json").write_text(json.dumps({"lr": lr}))


def _ran(result: checkpoint.RunResult) -> set[str]:
    return {repr(t) for t in result.ran}


def test_a_config_file_read_by_the_outer_function_counts(tasks: Any, runner: CliRunner) -> None:
    """The tester's reproduction: config.json read in the outer function, used by the inner
    one. Editing it re-runs train (not prepare), `ls` and `why` say why."""
    assert tasks.train(1).run(executor="inline") == 3 * 0.5 + 1
    _set_lr(2.0)
    listed = runner.invoke(cli, ["ls", "train(1)"])
    assert listed.exit_code == 0, listed.output
    assert "input changed" in listed.stdout
    why = runner.invoke(cli, ["why", "train(1)"])
    assert why.exit_code == 0, why.output
    assert "train(1) would run: input changed" in why.stdout
    assert "captured value cfg changed" in why.stdout
    again = checkpoint.run([tasks.train(1)], executor="inline")
    assert _ran(again) == {"train(1)"}
    assert again.values[tasks.train(1).id] == 3 * 2.0 + 1
    assert not checkpoint.run([tasks.train(1)], executor="inline").ran


def test_an_environment_variable_read_by_the_outer_function_counts(
        tasks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tasks.scaled(3).run(executor="inline") == 6.0
    assert not checkpoint.run([tasks.scaled(3)], executor="inline").ran
    monkeypatch.setenv("FACTOR", "10")
    result = checkpoint.run([tasks.scaled(3)], executor="inline")
    assert _ran(result) == {"scaled(3)"}
    assert result.values[tasks.scaled(3).id] == 30.0


def test_a_dataclass_built_by_the_outer_function_counts(tasks: Any) -> None:
    assert tasks.built(2).run(executor="inline") == 1.0
    assert not checkpoint.run([tasks.built(2)], executor="inline").ran
    _set_lr(4.0)
    assert tasks.built(2).run(executor="inline") == 8.0


def test_a_helper_of_the_outer_function_counts_with_what_it_captured(tasks: Any) -> None:
    assert tasks.helped(2).run(executor="inline") == 1.0
    assert not checkpoint.run([tasks.helped(2)], executor="inline").ran
    _set_lr(4.0)
    assert tasks.helped(2).run(executor="inline") == 8.0


def test_a_default_value_the_outer_function_computed_counts(tasks: Any) -> None:
    assert tasks.defaulted(2).run(executor="inline") == 1.0
    _set_lr(4.0)
    assert tasks.defaulted(2).run(executor="inline") == 8.0


def test_a_parameter_the_outer_function_rebinds_counts(
        tasks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tasks.rebound(1).run(executor="inline") == 1
    monkeypatch.setenv("OFFSET", "5")
    assert tasks.rebound(1).run(executor="inline") == 6


def test_parameters_alone_record_nothing(tasks: Any) -> None:
    """A closure over the outer function's parameters only (the usual case, W2's) adds
    nothing to the stored entry: the parameters are the task's identity already."""
    checkpoint.run([tasks.plain(7), tasks.prepare(1)], executor="inline")
    store = Store.open()
    for t in (tasks.plain(7), tasks.prepare(1)):
        meta = store.get_meta(t.family.dirname, t.id)
        assert meta is not None and meta.deps == {}


def test_a_changed_value_with_the_same_result_keeps_its_dependents(tasks: Any) -> None:
    """Early cutoff: rounded re-runs, its value is the same, downstream is kept."""
    _set_lr(1.2)
    assert tasks.downstream(0).run(executor="inline") == 2
    _set_lr(1.3)
    result = checkpoint.run([tasks.downstream(0)], executor="inline")
    assert _ran(result) == {"rounded(0)"}


def test_touch_accepts_the_values_as_they_are(tasks: Any, runner: CliRunner) -> None:
    tasks.train(1).run(executor="inline")
    _set_lr(3.0)
    touched = runner.invoke(cli, ["touch", "train(1)"])
    assert touched.exit_code == 0, touched.output
    assert not checkpoint.run([tasks.train(1)], executor="inline").ran


def test_a_pinned_version_tracks_no_captured_value(make_module: Any) -> None:
    """@task(version=...) pins what the task computes: captured values do not count, as
    module-level values do not (and nothing warns)."""
    _set_lr(0.5)
    mod = make_module("pinned", '''
        import json, threading
        from pathlib import Path
        from checkpoint import task

        @task(version="1")
        def pinned(seed: int):
            cfg = json.loads(Path("config.json").read_text())
            gate = threading.Lock()
            def __() -> float:
                with gate:
                    return seed * cfg["lr"]
            return __
    ''')
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)
        assert mod.pinned(2).run(executor="inline") == 1.0
        _set_lr(4.0)
        assert not checkpoint.run([mod.pinned(2)], executor="inline").ran


def test_an_unpicklable_captured_value_warns_once(tasks: Any) -> None:
    with pytest.warns(FingerprintWarning) as caught:
        assert tasks.locked(1).run(executor="inline") == 1
    messages = [str(w.message) for w in caught if issubclass(w.category, FingerprintWarning)]
    assert len(messages) == 1, messages
    assert "taskfile.locked" in messages[0]
    assert "'gate'" in messages[0]
    assert "@task(version=...)" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintWarning)
        checkpoint.run([tasks.locked(2)], executor="inline")  # once per process and variable


def test_unchanged_values_rerun_nothing_in_another_process(tmp_path: Path) -> None:
    """The digest of a captured value is the same in every process, whatever the hash seed
    (a set, a dict, a frozenset inside a dataclass), also through the command line."""
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.5}))
    (tmp_path / "taskfile.py").write_text(TASKS + '''

@task
def mixed(seed: int):
    names = set(json.loads(Path("config.json").read_text())) | {"x", "y", "z", "w"}
    table = {name: len(name) for name in sorted(names)}
    cfg = TrainConfig(lr=0.5, tags=frozenset(names))
    def __() -> int:
        return seed + len(names) + len(table) + len(cfg.tags)
    return __


@task
def everything():
    @requires([train(1), scaled(2), built(3), helped(4), defaulted(5), mixed(6)])
    def __(values: list) -> list:
        return values
    return __
''')
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache"), "FACTOR": "2"}
    outs = []
    for seed in ("1", "2", "3"):
        out = subprocess.run([PYTHON, "-m", "checkpoint", "run", "everything", "--executor", "inline"],
                             cwd=tmp_path, env={**env, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        outs.append(out.stderr + out.stdout)
    assert ": 8 ran," in outs[0], outs[0]
    assert all("Nothing to run: all 8 tasks reused" in out for out in outs[1:]), outs
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.25}))
    out = subprocess.run([PYTHON, "-m", "checkpoint", "run", "everything", "--executor", "process"],
                         cwd=tmp_path, env={**env, "PYTHONHASHSEED": "4"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # mixed's set is made of the file's keys, not values: unchanged
    assert ": 5 ran," in out.stderr + out.stdout, out.stderr + out.stdout


def test_ls_shows_the_plan_without_running(tasks: Any) -> None:
    """Planning alone (no run) finds the change: the stale entry is 'input changed'."""
    tasks.train(1).run(executor="inline")
    _set_lr(9.0)
    nodes = plan([tasks.train(1)], Store.open()).nodes
    assert nodes[tasks.train(1).id].reason == "input changed"
    assert nodes[tasks.prepare(1).id].reason is None
    assert os.path.exists("config.json")


def test_an_inner_function_made_by_a_factory_counts_its_defaults(make_module: Any) -> None:
    """The outer function calls a factory of the project that makes the inner function: its
    closure and its defaults were computed when the outer function ran, and count."""
    _set_lr(0.5)
    mod = make_module("factory", '''
        import json
        from pathlib import Path
        from checkpoint import task

        def make(cfg: dict, scale: float):
            def __(lr: float = cfg["lr"]) -> float:
                return lr * scale
            return __

        @task
        def made(seed: int):
            cfg = json.loads(Path("config.json").read_text())
            return make(cfg, float(seed))
    ''')
    assert mod.made(2).run(executor="inline") == 1.0
    assert not checkpoint.run([mod.made(2)], executor="inline").ran
    _set_lr(4.0)
    assert mod.made(2).run(executor="inline") == 8.0


def test_an_entry_stored_before_values_were_captured_runs_once(
        make_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result stored by a checkpoint that did not record captured values (only its input
    file's digest) runs once more; with the file unchanged and trusted (the fast path that
    takes the stored digests as they are), the captured value must still be compared."""
    import time

    from checkpoint import files as files_module

    monkeypatch.setattr(files_module, "_clock", lambda: time.time_ns() + 3600 * 10**9)
    _set_lr(0.5)
    Path("data.txt").write_text("3")
    mod = make_module("older", '''
        import json
        from pathlib import Path
        from checkpoint import File, requires, task

        @task
        def read(seed: int):
            cfg = json.loads(Path("config.json").read_text())
            @requires(File("data.txt"))
            def __(path: Path) -> float:
                return float(path.read_text()) * cfg["lr"]
            return __
    ''')
    t = mod.read(1)
    assert t.run(executor="inline") == 1.5
    store = Store.open()
    meta = store.get_meta(t.family.dirname, t.id)
    assert meta is not None and set(meta.deps) == {"file:data.txt", "captured:cfg"}
    meta.deps = {"file:data.txt": meta.deps["file:data.txt"]}  # as an older checkpoint stored it
    store.put_metas(t.family.dirname, {t.id: meta}, t.family.fingerprint)
    for _ in range(2):  # the second time through the digest cache's record of the whole plan
        result = checkpoint.run([mod.read(1)], executor="inline")
        assert _ran(result) == {"read(1)"}
        assert not checkpoint.run([mod.read(1)], executor="inline").ran
        meta = store.get_meta(t.family.dirname, t.id)
        assert meta is not None
        meta.deps = {"file:data.txt": meta.deps["file:data.txt"]}
        store.put_metas(t.family.dirname, {t.id: meta}, t.family.fingerprint)


STATEFUL = '''
import json
import random
from pathlib import Path

import numpy as np

from checkpoint import requires, task


def _cfg() -> dict:
    return json.loads(Path("config.json").read_text())


@task
def completed(seed: int):
    params = _cfg()
    def __() -> float:
        params["seed"] = seed  # completes the config in place, then uses it
        return params["lr"] * 100 + params["seed"]
    return __


@task
def counted(seed: int):
    calls = 0
    memo: dict = {}
    def __() -> int:
        nonlocal calls
        calls += 1
        memo[seed] = calls
        return seed
    return __


@task
def sampled(n: int):
    rng = random.Random(_cfg()["seed"])
    def __() -> list:
        return [rng.randint(0, 999) for _ in range(n)]
    return __


@task
def sampled_np(n: int):
    rng = np.random.default_rng(_cfg()["seed"])
    legacy = np.random.RandomState(_cfg()["seed"])
    def __() -> list:
        return [int(x) for x in rng.integers(0, 999, n)] + [int(legacy.randint(0, 999))]
    return __


RNG = random.Random(7)
MEMO: dict = {}


@task
def drawn_from_global(n: int):
    rng, memo = RNG, MEMO  # module-level values, reached through the closure
    def __() -> list:
        memo[n] = True
        return [rng.randint(0, 999) for _ in range(n)]
    return __


@task
def streamed(n: int):
    lines = open("config.json")
    def __() -> str:
        with lines:
            return lines.read()[:n]
    return __


class Fit:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, x: int) -> int:
        return x * self.k

    def run(self, x: int) -> int:
        return x * self.k


@task
def base():
    def __() -> int:
        return 2
    return __


@task
def fit_object():
    return requires(base())(Fit(_cfg()["k"]))


@task
def fit_method():
    return requires(base())(Fit(_cfg()["k"]).run)


@task
def fit_method_wrong():
    return requires(base())(requires(base())(Fit(_cfg()["k"]).run))
'''


@pytest.fixture
def stateful(tmp_path: Path, make_module: Any) -> Any:
    Path("config.json").write_text(json.dumps({"lr": 0.1, "seed": 1, "k": 3}))
    return make_module("stateful", STATEFUL)


def _config(**values: object) -> None:
    Path("config.json").write_text(json.dumps({"lr": 0.1, "seed": 1, "k": 3, **values}))


def test_a_captured_config_the_inner_function_completes_counts(stateful: Any) -> None:
    """`params["seed"] = seed` in the inner function (the xgboost idiom): params is still
    the outer function's value, read afresh at each expansion, so an edit counts. Its
    value is taken before the inner function runs: running the same task object again in
    the session, or a new one, re-runs nothing."""
    t = stateful.completed(1)
    assert t.run(executor="inline") == 11.0
    assert not checkpoint.run([t], executor="inline").ran  # params now holds "seed"
    assert not checkpoint.run([stateful.completed(1)], executor="inline").ran
    _config(lr=0.5)
    result = checkpoint.run([stateful.completed(1)], executor="inline")
    assert _ran(result) == {"completed(1)"}
    assert result.values[stateful.completed(1).id] == 51.0


def test_closure_state_made_by_the_outer_function_reruns_nothing(stateful: Any) -> None:
    """A counter and a memo the inner function changes start from the outer function's
    value at each expansion: they never make the task stale."""
    t = stateful.counted(3)
    assert t.run(executor="inline") == 3
    assert not checkpoint.run([t], executor="inline").ran
    assert not checkpoint.run([stateful.counted(3)], executor="inline").ran


def test_a_captured_random_generator_counts_by_its_seed(stateful: Any) -> None:
    """A generator seeded from a config value counts by its state before the inner
    function draws from it (the seed), not by the outer function's source alone."""
    import random

    t = stateful.sampled(3)
    first = t.run(executor="inline")
    assert not checkpoint.run([t], executor="inline").ran  # the same generator, drawn from
    assert not checkpoint.run([stateful.sampled(3)], executor="inline").ran
    _config(seed=2)
    result = checkpoint.run([stateful.sampled(3)], executor="inline")
    assert _ran(result) == {"sampled(3)"}
    rng = random.Random(2)
    assert result.values[stateful.sampled(3).id] == [rng.randint(0, 999) for _ in range(3)] != first


def test_a_captured_numpy_generator_counts_by_its_seed(stateful: Any) -> None:
    stateful.sampled_np(2).run(executor="inline")
    assert not checkpoint.run([stateful.sampled_np(2)], executor="inline").ran
    _config(seed=2)
    assert _ran(checkpoint.run([stateful.sampled_np(2)], executor="inline")) == {"sampled_np(2)"}


def test_a_module_level_generator_or_memo_through_the_closure_stays_module_level(
        stateful: Any) -> None:
    """RNG and MEMO are the module's, not made by the outer function: they count as
    module-level values do (a generator by its assignment, a memo the code fills as
    state), so drawing from them or filling them re-runs nothing."""
    stateful.drawn_from_global(2).run(executor="inline")
    assert not checkpoint.run([stateful.drawn_from_global(2)], executor="inline").ran
    assert not checkpoint.run([stateful.drawn_from_global(2)], executor="inline").ran


def test_a_captured_open_file_warns(stateful: Any) -> None:
    """What a generator or an open file will give cannot be digested: never silently."""
    with pytest.warns(FingerprintWarning, match=r"stateful\.streamed reads 'lines' \(TextIOWrapper\)"):
        stateful.streamed(2).run(executor="inline")


def test_a_callable_object_as_the_inner_function_counts_what_it_holds(stateful: Any) -> None:
    assert stateful.fit_object().run(executor="inline") == 6
    assert not checkpoint.run([stateful.fit_object()], executor="inline").ran
    _config(k=5)
    result = checkpoint.run([stateful.fit_object()], executor="inline")
    assert _ran(result) == {"fit_object()"}
    assert result.values[stateful.fit_object().id] == 10


def test_a_bound_method_as_the_inner_function_runs_and_counts_its_object(stateful: Any) -> None:
    assert stateful.fit_method().run(executor="inline") == 6
    assert not checkpoint.run([stateful.fit_method()], executor="inline").ran
    _config(k=5)
    result = checkpoint.run([stateful.fit_method()], executor="inline")
    assert _ran(result) == {"fit_method()"}
    assert result.values[stateful.fit_method().id] == 10


def test_a_bound_method_is_counted_without_self(stateful: Any) -> None:
    with pytest.raises(checkpoint.TaskDefinitionError,
                       match=r"inner function run\(x: int\) takes 1 argument, one per "
                             r"prerequisite, but 2 are declared"):
        stateful.fit_method_wrong().run(executor="inline")
