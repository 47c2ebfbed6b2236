"""Class tasks (``@task`` on a class, ``requires()`` attributes, ``run()``) next to function tasks."""

from __future__ import annotations

import os
import pickle
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest
from click.testing import CliRunner

import checkpoint
from checkpoint import (
    File,
    InvalidRequirementError,
    Product,
    Requires,
    TaskDefinitionError,
    UnserializableArgumentError,
    requires,
    task,
)
from checkpoint.cli import cli

# The seed README's examples, each written both ways, wired so that class tasks require
# function tasks and function tasks require class tasks.
PIPELINE = '''
from pathlib import Path

from checkpoint import Requires, Task, TaskDirectory, requires, task


@task
def choose(n: int, k: int):
    """Binomial coefficient, the seed's way (its upper-left term is a class task)."""
    if 0 < k < n:
        @requires(Choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(prev1: int, prev2: int) -> int:
            return prev1 + prev2
    elif k == 0 or k == n:
        def __() -> int:
            return 1
    else:
        raise ValueError(f'{(n, k)}')
    return __


@task
class Choose:
    """Binomial coefficient as a class (its upper-left term is a function task)."""

    prev1: Requires[int] = requires(default=0)
    prev2: Requires[int] = requires(default=0)

    def __init__(self, n: int, k: int) -> None:
        if not 0 <= k <= n:
            raise ValueError(f'{(n, k)}')
        self.edge = k == 0 or k == n
        if not self.edge:
            self.prev1 = choose(n - 1, k - 1)
            self.prev2 = Choose(n - 1, k)

    def run(self) -> int:
        return 1 if self.edge else self.prev1 + self.prev2


@task
def f1(**param1):
    def __():
        return sum(param1.values())
    return __


@task
class F2:
    def __init__(self, **param2) -> None:
        self.param2 = param2

    def run(self) -> int:
        return max(self.param2.values())


@task
class F3:
    obj1: Requires[int] = requires()
    obj2: Requires[int] = requires()

    def __init__(self, json_params) -> None:
        self.obj1 = f1(**json_params['param1'])
        self.obj2 = F2(**json_params['param2'])

    def run(self) -> int:
        return self.obj1 + self.obj2


@task
def f3(json_params):
    @requires(F2(**json_params['param1']))
    @requires(f1(**json_params['param2']))
    def __(obj1, obj2):
        return obj1 + obj2
    return __


@task
def load_dataset():
    def __() -> list[float]:
        return [1.0, 2.0, 3.0, 4.0]
    return __


@task
class LoadDataset:
    def run(self) -> list[float]:
        return [1.0, 2.0, 3.0, 4.0]


@task
def train_model(dataset_task: Task[list[float]]):
    @requires(dataset_task)
    def __(dataset) -> float:
        return sum(dataset) / len(dataset)
    return __


@task
class TrainModel:
    dataset: Requires[list[float]] = requires()

    def __init__(self, dataset_task: Task[list[float]]) -> None:
        self.dataset = dataset_task

    def run(self) -> float:
        return sum(self.dataset) / len(self.dataset)


@task
def score_model(dataset_task: Task[list[float]], model_task: Task[float]):
    @requires(dataset_task)
    @requires(model_task)
    def __(dataset, model) -> float:
        return -sum((x - model) ** 2 for x in dataset)
    return __


@task
class ScoreModel:
    dataset: Requires[list[float]] = requires()
    model: Requires[float] = requires()

    def __init__(self, dataset_task: Task[list[float]], model_task: Task[float]) -> None:
        self.dataset = dataset_task
        self.model = model_task

    def run(self) -> float:
        return -sum((x - self.model) ** 2 for x in self.dataset)


@task
def summarize_scores(score_tasks: dict[str, Task[float]]):
    @requires(score_tasks)
    def __(score_dict: dict[str, float]) -> float:
        return max(score_dict.values())
    return __


@task
class SummarizeScores:
    scores: Requires[dict[str, float]] = requires()
    ranked: Requires[list[float]] = requires()

    def __init__(self, score_tasks: dict[str, Task[float]]) -> None:
        self.scores = score_tasks
        self.ranked = [score_tasks[name] for name in sorted(score_tasks)]

    def run(self) -> float:
        assert len(self.ranked) == len(self.scores)
        return max(self.scores.values())


@task(compress_level=-1)
class LargeOutput:
    def run(self) -> bytes:
        return b'0' * 100_000


@task
class WriteModel:
    workdir: Requires[Path] = requires()

    def __init__(self, size: int) -> None:
        self.size = size
        self.workdir = TaskDirectory()

    def run(self) -> str:
        path = self.workdir / 'model.bin'
        path.write_bytes(b'\\0' * self.size)
        return str(path)


@task(queue='gpu')
class OnGpu:
    def __init__(self, i: int) -> None:
        self.i = i

    def run(self) -> int:
        return self.i


@task
def main():
    """Everything above in one DAG."""
    dataset, Dataset = load_dataset(), LoadDataset()
    scores = {
        'ff': score_model(dataset, train_model(dataset)),
        'fc': score_model(Dataset, TrainModel(dataset)),
        'cf': ScoreModel(dataset, train_model(Dataset)),
        'cc': ScoreModel(Dataset, TrainModel(Dataset)),
    }
    params = {'param1': {'a': 1, 'b': 2}, 'param2': {'c': 3, 'd': 4}}

    @requires([choose(6, 3), Choose(6, 3), choose(7, 2), Choose(7, 5)])
    @requires([F3(params), f3(params)])
    @requires([summarize_scores(scores), SummarizeScores(scores)])
    @requires([LargeOutput(), WriteModel(16), OnGpu(1), OnGpu(2)])
    def __(binomials, ios, summaries, misc):
        return binomials, ios, summaries, [len(misc[0]), Path(misc[1]).stat().st_size, misc[2] + misc[3]]
    return __
'''

EXPECTED = ([20, 20, 21, 21], [7, 9], [-5.0, -5.0], [100_000, 16, 3])


@pytest.fixture
def pipeline(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    """The both-ways pipeline as an importable module."""
    return make_module("pipeline", PIPELINE)


@pytest.mark.parametrize("executor", ["inline", "thread", "process", "dask"])
def test_class_and_function_tasks_run_in_one_dag(pipeline: ModuleType, executor: str) -> None:
    """The seed's examples as classes and as functions, mixed in one DAG, should agree on every executor."""
    if executor == "dask":
        pytest.importorskip("distributed")
    result = checkpoint.run([pipeline.main()], executor=executor, max_workers=2,
                            rate_limits={"gpu": 1})
    assert result.values[pipeline.main().id] == EXPECTED
    ran = {t.family.short_name for t in result.ran}
    assert {"Choose", "choose", "F3", "F2", "LoadDataset", "TrainModel", "ScoreModel",
            "SummarizeScores", "LargeOutput", "WriteModel", "OnGpu"} <= ran
    again = checkpoint.run([pipeline.main()], executor=executor, max_workers=2)
    assert again.ran == []
    assert again.values[pipeline.main().id] == EXPECTED


def test_class_tasks_run_from_a_script_with_processes(tmp_path: Path) -> None:
    """Classes defined in __main__ (pickled by value) should run in worker processes."""
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(PIPELINE + textwrap.dedent(f"""
        if __name__ == "__main__":
            print(main().run(executor="process", max_workers=2) == {EXPECTED!r})
            print(Choose(10, 5).run(executor="process", max_workers=2))
        """))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "252"]


def test_local_class_tasks_run_in_worker_processes() -> None:
    """A class task defined inside a function (not importable) should travel by value."""

    @task
    class Square:
        base: Requires[int] = requires()

        def __init__(self, n: int) -> None:
            self.n = n
            self.base = Const(n)

        def run(self) -> int:
            return self.base * self.n

    @task
    class Const:
        def __init__(self, n: int) -> None:
            self.n = n

        def run(self) -> int:
            return self.n

    assert Square(7).run(executor="process", max_workers=2) == 49


def test_the_compute_function_does_not_carry_upstream_tasks(pipeline: ModuleType) -> None:
    """What a worker receives for a class task should hold plain state, not task handles."""
    spec = pipeline.Choose(30, 15).spec()
    assert [d.expression() for d in spec.dependencies] == ["choose(29, 14)", "Choose(29, 15)"]
    blob = cloudpickle.dumps(spec.fn)
    assert b"_rebuild_task" not in blob  # no Task handle inside
    assert len(blob) < 400  # the family travels by reference
    clone = pickle.loads(blob)
    assert clone.family is pipeline.Choose
    assert clone(10, 5) == 15
    assert pipeline.Choose(30, 0).spec().fn() == 1  # unset prerequisites read their defaults


def test_class_tasks_share_identity_rules(pipeline: ModuleType) -> None:
    """Class task arguments should bind, default and encode exactly like a function's."""
    Choose = pipeline.Choose
    assert Choose(6, 3) == Choose(n=6, k=3) == Choose(6, k=3)
    assert Choose(6, 3) != Choose(6, 2)
    assert repr(Choose(6, 3)) == "Choose(6, 3)"
    assert Choose.name == "pipeline.Choose" and Choose.queue == "pipeline.Choose"
    assert Choose.__doc__ is not None and "class" in Choose.__doc__
    assert str(Choose.signature) == "(n: int, k: int) -> None"
    assert pipeline.OnGpu.queue == "gpu"
    assert pipeline.F2(a=1) != pipeline.F2(a=(1,))
    with pytest.raises(UnserializableArgumentError, match=r"Argument 'k' of task pipeline.Choose"):
        Choose(6, {3})
    with pytest.raises(TypeError, match=r"Wrong arguments for task pipeline.Choose.*\(n: int, k: int\)"):
        Choose(6)


def test_clearing_a_class_task_reruns_it_and_its_dependents(pipeline: ModuleType, cache_dir: Path) -> None:
    """task.clear() and family.clear() should work on class families as on functions."""
    Choose = pipeline.Choose
    checkpoint.run([Choose(5, 2)], executor="inline")
    assert (cache_dir / "checkpoint" / "pipeline.Choose").is_dir()
    Choose(3, 2).clear()
    again = checkpoint.run([Choose(5, 2)], executor="inline")
    assert {t.expression() for t in again.ran} == {"Choose(3, 2)"}  # the same value: kept
    assert {t.expression() for t in again.kept} == {"Choose(4, 2)", "Choose(5, 2)"}
    Choose.clear()
    again = checkpoint.run([Choose(5, 2)], executor="inline")
    assert {t.expression() for t in again.ran} >= {"Choose(5, 2)", "Choose(4, 2)"}
    assert again.values[Choose(5, 2).id] == 10


CHANGING = '''
from checkpoint import Requires, requires, task

OFFSET = 0


def helper(x: int) -> int:
    return x + OFFSET


@task
def source(n: int):
    def __() -> int:
        return n
    return __


@task
class Doubled:
    """A class task whose body the test edits."""

    value: Requires[int] = requires()

    def __init__(self, n: int) -> None:
        self.value = source(n)

    def run(self) -> int:
        return helper(self.value * 2)


@task
def consumer(n: int):
    @requires(Doubled(n))
    def __(v: int) -> int:
        return v + 1
    return __
'''


@pytest.mark.parametrize(
    ("edit", "reruns"),
    [
        (("# edited", "# edited"), False),
        (('"""A class task whose body the test edits."""', '"""New docstring."""'), False),
        (("return helper(self.value * 2)", "return helper(self.value  *  2)  # same code"), False),
        (("return helper(self.value * 2)", "return helper(self.value * 3)"), True),
        (("self.value = source(n)", "self.value = source(n)\n        self.unused = 1"), True),
        (("OFFSET = 0", "OFFSET = 10"), True),
        (("    return x + OFFSET", "    return x + OFFSET + 0"), True),
    ],
    ids=["nothing", "docstring", "formatting", "run body", "__init__ body", "constant", "helper"],
)
def test_code_changes_in_a_class_body_rerun_it(
    make_module: Callable[[str, str], ModuleType], edit: tuple[str, str], reruns: bool
) -> None:
    """Editing a class task's code (not its comments or docstrings) should re-run it and its dependents."""
    module = make_module("changing", CHANGING)
    first = checkpoint.run([module.consumer(4)], executor="inline")
    assert len(first.ran) == 3
    old, new = edit
    assert old in CHANGING or old == "# edited"
    module = make_module("changing", CHANGING.replace(old, new) + "\n# edited\n")
    again = checkpoint.run([module.consumer(4)], executor="inline")
    ran = sorted(t.expression() for t in again.ran)
    if reruns:
        # consumer(4) re-runs too, even where Doubled(4)'s value is the same: new code
        # upstream is never cut off (a value may carry code by name).
        assert ran == ["Doubled(4)", "consumer(4)"]
        assert again.plan.nodes[module.Doubled(4).id].reason == "code changed"
    else:
        assert ran == []


# --- errors -------------------------------------------------------------------------------


def test_a_class_without_run_is_rejected() -> None:
    """@task on a class without a run() method should say what to define."""
    with pytest.raises(TaskDefinitionError, match=r"Task class NoRun \(module [\w.]*test_classes\) has no run\(\) method"):

        @task
        class NoRun:
            def compute(self) -> int:
                return 1

    with pytest.raises(TaskDefinitionError, match=r"Static\.run must be a plain method"):

        @task
        class Static:
            @staticmethod
            def run() -> int:
                return 1


def test_an_unset_prerequisite_names_the_task_and_attribute() -> None:
    """A requires() without default left unset by __init__ should be a clear error at expansion."""

    @task
    class Leaf:
        def run(self) -> int:
            return 1

    @task
    class Half:
        left: Requires[int] = requires()

        def __init__(self, n: int) -> None:
            if n > 0:
                self.left = Leaf()

        def run(self) -> int:
            return self.left

    assert Half(1).run(executor="inline") == 1
    with pytest.raises(TaskDefinitionError) as info:
        Half(0).run(executor="inline")
    message = str(info.value)
    assert "Task Half(0)" in message and "self.left" in message
    assert "requires(default=...)" in message


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("5", r"assigns 5 \(int\) to self\.dep"),
        ("Leaf", r"Did you mean to call it, e\.g\. Leaf\(\.\.\.\)\?"),
        ("(Leaf(),)", r"Use a list instead of a tuple"),
        ("[Leaf(), 'x']", r"assigns 'x' \(str\) inside list to self\.dep"),
        ("TaskDirectory", r"Write TaskDirectory\(\) with parentheses"),
    ],
    ids=["int", "family", "tuple", "list-item", "TaskDirectory-class"],
)
def test_assigning_a_non_task_to_a_prerequisite_is_rejected(
    make_module: Callable[[str, str], ModuleType], value: str, hint: str
) -> None:
    """Assigning something other than a task (or list/dict of tasks, TaskDirectory()) should fail clearly."""
    module = make_module("badassign", f'''
from checkpoint import Requires, TaskDirectory, requires, task

@task
class Leaf:
    def run(self) -> int:
        return 1

@task
class Bad:
    dep: Requires[int] = requires()

    def __init__(self, n: int) -> None:
        self.dep = {value}

    def run(self) -> int:
        return self.dep
''')
    with pytest.raises(InvalidRequirementError, match=hint) as info:
        module.Bad(3).run(executor="inline")
    assert "Task Bad(3) (badassign.Bad)" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_a_task_in_a_plain_attribute_is_rejected() -> None:
    """A task kept in an attribute not declared with requires() would not run first: an error."""

    @task
    class Leaf:
        def run(self) -> int:
            return 1

    @task
    class Sneaky:
        def __init__(self) -> None:
            self.helpers = {"a": [Leaf()]}

        def run(self) -> int:
            return 0

    with pytest.raises(TaskDefinitionError, match=r"keeps the task Leaf\(\) in self\.helpers"):
        Sneaky().run(executor="inline")


def test_prerequisites_are_read_in_run_and_assigned_in_init() -> None:
    """Reading a prerequisite in __init__, or assigning one in run(), should explain the split."""

    @task
    class Leaf:
        def run(self) -> int:
            return 1

    @task
    class EarlyRead:
        dep: Requires[int] = requires()

        def __init__(self) -> None:
            self.dep = Leaf()
            self.copy = self.dep

        def run(self) -> int:
            return self.dep

    @task
    class LateAssign:
        dep: Requires[int] = requires()

        def __init__(self) -> None:
            self.dep = Leaf()

        def run(self) -> int:
            self.dep = Leaf()
            return 0

    with pytest.raises(TaskDefinitionError, match=r"reads self\.dep in __init__.*only in run\(\)"):
        EarlyRead().run(executor="inline")
    with pytest.raises(TaskDefinitionError, match=r"assign it in __init__ only"):
        LateAssign().run(executor="inline")


def test_one_requires_shared_by_two_names_is_rejected() -> None:
    """`a = b = requires()` would make two attributes one; it should be an error."""
    with pytest.raises((TaskDefinitionError, RuntimeError), match=r"share one requires\(\)"):

        @task
        class Shared:
            a = b = requires()

            def run(self) -> int:
                return 0


def test_requires_rejects_mixed_forms() -> None:
    """requires(task, default=...) and unknown options should be TypeErrors."""

    @task
    class Leaf:
        def run(self) -> int:
            return 1

    with pytest.raises(TypeError, match="takes no keyword arguments"):
        requires(Leaf(), default=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="unexpected keyword"):
        requires(defualt=1)  # type: ignore[call-overload]
    with pytest.raises(InvalidRequirementError):
        requires(None)


def test_prerequisites_are_inherited_from_plain_base_classes() -> None:
    """A class task may inherit requires() attributes and helpers from an undecorated base."""

    @task
    class Leaf:
        def __init__(self, n: int) -> None:
            self.n = n

        def run(self) -> int:
            return self.n

    class Pair:
        left: Requires[int] = requires()
        right: Requires[int] = requires()

        def total(self) -> int:
            return self.left + self.right

    @task
    class Sum(Pair):
        def __init__(self, a: int, b: int) -> None:
            self.left, self.right = Leaf(a), Leaf(b)

        def run(self) -> int:
            return self.total()

    assert [d.expression() for d in Sum(2, 3).spec().dependencies] == ["Leaf(2)", "Leaf(3)"]
    assert Sum(2, 3).run(executor="thread") == 5


def test_a_failing_class_task_reraises_its_own_exception() -> None:
    """An exception in run() should reach the caller as itself, naming the task."""

    @task
    class Boom:
        def run(self) -> int:
            raise KeyError("boom")

    with pytest.raises(KeyError, match="boom") as info:
        Boom().run(executor="inline")
    assert "Boom()" in " ".join(getattr(info.value, "__notes__", []))


def test_a_worker_traceback_starts_in_the_class_run_method(
    make_module: Callable[[str, str], ModuleType],
) -> None:
    """A class task failing in a worker process should report its own run() frame."""
    module = make_module("failing", """
from checkpoint import task

@task
class Boom:
    def run(self) -> float:
        return 1 / 0
""")
    with pytest.raises(ZeroDivisionError) as info:
        module.Boom().run(executor="process", max_workers=1)
    import traceback

    text = "".join(traceback.format_exception(info.value))
    assert 'failing.py", line 7, in run' in text


def test_function_tasks_are_unchanged_by_class_support() -> None:
    """@task on a function should still make a function family whose spec is the inner function."""

    @task
    def plain(n: int):  # type: ignore[no-untyped-def]
        def __() -> int:
            return n

        return __

    assert plain.is_class is False
    spec = plain(3).spec()
    assert spec.fn() == 3 and spec.requirements == []
    assert plain(3).run(executor="inline") == 3


# --- command line -------------------------------------------------------------------------


def test_cli_runs_class_targets(tmp_path: Path, runner: CliRunner) -> None:
    """`checkpoint run 'Choose(6, 3)'` should build a class task from the taskfile."""
    (tmp_path / "taskfile.py").write_text(PIPELINE)
    result = runner.invoke(cli, ["run", "Choose(6, 3)", "choose(n=7, k=2)", "--executor", "thread"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["20", "21"]
    result = runner.invoke(cli, ["run", "Chose(6, 3)"])
    assert result.exit_code != 0
    assert "Did you mean 'Choose'" in str(result.exception) + result.output


def test_cli_graph_shows_class_tasks_with_their_states(tmp_path: Path, runner: CliRunner) -> None:
    """`checkpoint graph` should draw class and function tasks of one DAG, with their states."""
    import json

    (tmp_path / "taskfile.py").write_text(PIPELINE)
    assert runner.invoke(cli, ["run", "Choose(3, 1)", "--executor", "inline"]).exit_code == 0
    (tmp_path / "taskfile.py").write_text(PIPELINE.replace(
        "return 1 if self.edge else self.prev1 + self.prev2",
        "return 1 if self.edge else self.prev2 + self.prev1",
    ))
    # Same size, same second: Python would load the first version's bytecode from
    # __pycache__ (a StaleModuleError); a real edit takes longer than that.
    st = os.stat(tmp_path / "taskfile.py")
    os.utime(tmp_path / "taskfile.py", ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    result = runner.invoke(cli, ["graph", "Choose(3, 1)", "--json"])
    assert result.exit_code == 0, result.output
    states = {n["label"]: (n["state"], n["reason"]) for n in json.loads(result.stdout)["nodes"]}
    changed = ("stale", "code changed")
    assert states == {
        "choose(2, 0)": ("fresh", None), "choose(1, 0)": ("fresh", None),
        "Choose(1, 1)": changed, "Choose(2, 1)": changed, "Choose(3, 1)": changed,
    }


def test_cli_ls_why_and_clear_cover_class_families(tmp_path: Path, runner: CliRunner) -> None:
    """`ls`, `why` and `clear` should treat class families like function families."""
    (tmp_path / "taskfile.py").write_text(PIPELINE)
    assert runner.invoke(cli, ["run", "Choose(4, 2)", "--executor", "inline"]).exit_code == 0
    listing = runner.invoke(cli, ["ls"])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.stdout.splitlines() if line.startswith("Choose "))
    assert "Binomial coefficient as a class" in row and " 5 " in row
    result = runner.invoke(cli, ["clear", "Choose(3, 2)"])
    assert result.exit_code == 0, result.output
    why = runner.invoke(cli, ["why", "Choose(4, 2)"])
    assert why.exit_code == 0, why.output
    assert "Choose(3, 2) would run: missing" in why.stdout
    assert runner.invoke(cli, ["clear", "Choose", "-y"]).exit_code == 0
    listing = runner.invoke(cli, ["ls"])
    row = next(line for line in listing.stdout.splitlines() if line.startswith("Choose "))
    assert " 0 " in row


def test_cli_reports_a_class_definition_error(tmp_path: Path) -> None:
    """A class task whose __init__ assigns a non-task should fail with exit 2 and no traceback."""
    import subprocess
    import sys

    (tmp_path / "taskfile.py").write_text(textwrap.dedent('''
        from checkpoint import Requires, requires, task

        @task
        class main:
            dep: Requires[int] = requires()

            def __init__(self) -> None:
                self.dep = 42

            def run(self) -> int:
                return self.dep
    '''))
    proc = subprocess.run([sys.executable, "-m", "checkpoint", "run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Task main() (taskfile.main) assigns 42 (int) to self.dep" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_requires_descriptor_is_generic_at_runtime() -> None:
    """Requires[int] should be usable in annotations evaluated at runtime."""
    assert Requires[int] is not None
    assert repr(requires(default=3)) == "requires(default=3)"
    value: Any = Requires[int]()
    assert isinstance(value, Requires)


@pytest.mark.parametrize("requirement", [File("nums.txt"), Product("out.txt")])
def test_a_decorator_form_requires_as_a_class_attribute_is_refused(requirement: File) -> None:
    """`src: Requires[Path] = requires(File(...))` in a class is the decorator form (it would
    make the attribute a function): refused when @task is applied, saying what to write."""
    with pytest.raises(TaskDefinitionError) as info:

        @task
        class Sum:
            src: Requires[Path] = requires(requirement)  # type: ignore[assignment]

            def run(self) -> int:
                return 0

    message = str(info.value)
    assert f"Sum.src = requires({requirement!r})" in message
    assert "src: Requires[Path] = requires()" in message
    assert f"self.src = {requirement!r}" in message


def test_a_class_task_reads_and_writes_declared_files() -> None:
    """The documented idiom: File and Product assigned in __init__ read as paths in run."""
    Path("nums.txt").write_text("1 2 3")

    @task
    class Total:
        src: Requires[Path] = requires()
        out: Requires[Path] = requires()

        def __init__(self, name: str) -> None:
            self.src = File("nums.txt")
            self.out = Product(f"{name}.txt")

        def run(self) -> int:
            total = sum(int(x) for x in self.src.read_text().split())
            self.out.write_text(str(total))
            return total

    assert Total("sum").run(executor="inline") == 6
    assert Path("sum.txt").read_text() == "6"
    assert not checkpoint.run([Total("sum")], executor="inline").ran
    Path("nums.txt").write_text("1 2 3 4")
    assert Total("sum").run(executor="inline") == 10
