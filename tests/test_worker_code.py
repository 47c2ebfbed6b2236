"""The code that runs is the fingerprinted code: the second adversarial test's reproductions
(/tmp/adv2/repros, numbered as there) 11 and 12 turned into tests (10 is in test_dask.py)."""

from __future__ import annotations

import importlib
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, PYTHON

from checkpoint._worker import Failed, WorkItem, run_pickled_batch
from checkpoint._workercode import module_digest
from checkpoint.errors import StaleModuleError

# --- 11: your own process pool, reused across runs ----------------------------------------

HELPERS = "K = {k}\n\ndef g():\n    return {k}\n\nclass C:\n    N = {k}\n"
TASKS11 = """
from checkpoint import task
import helpers
from helpers import C

@task
def a(i: int):
    def __():
        return [helpers.g(), helpers.K, C.N]
    return __
"""
SESSION11 = """
import importlib, pathlib, sys
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import tasks, helpers
if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        print(tasks.a(0).run(executor=pool))
        pathlib.Path("helpers.py").write_text({edited!r})
        importlib.reload(helpers)
        importlib.reload(tasks)  # as the docs ask after `from helpers import C`
        print(tasks.a(0).run(executor=pool))
        print(tasks.a(1).run(executor=pool))
"""


def test_11_a_reused_process_pool_runs_the_new_code(tmp_path: Path) -> None:
    """A session passes its own ProcessPoolExecutor to run() twice and edits and reloads a
    helper in between: the workers imported the old helper in the first run. The re-run must
    compute with the new code (and so store the right value), not the workers' old copy."""
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for method in ("fork", "spawn"):
        (tmp_path / "helpers.py").write_text(HELPERS.format(k=1))
        (tmp_path / "tasks.py").write_text(TASKS11)
        (tmp_path / "session.py").write_text(SESSION11.format(edited=HELPERS.format(k=2)))
        out = subprocess.run([PYTHON, "session.py", method], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.split("\n")[:3] == ["[1, 1, 1]", "[2, 2, 2]", "[2, 2, 2]"], (method, out)
        fresh = subprocess.run([PYTHON, "-c", "import tasks; print(tasks.a(0).run())"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert fresh.stdout.strip() == "[2, 2, 2]"


def test_11_a_worker_whose_files_differ_runs_nothing(make_module: Any, tmp_path: Path) -> None:
    """A worker that still has other code than the coordinator after importing the project
    again (its files are not the coordinator's) fails the batch's tasks: nothing runs."""
    module = make_module("workercode11", "def f():\n    return 1\n")
    item = WorkItem.running("t1", module.f, [], 0)
    blob = pickle.dumps(([item], {}))
    mine = module_digest(module)
    assert run_pickled_batch(blob, str(tmp_path), {"workercode11": mine})[0].__class__.__name__ == "Done"
    other = "0" * 24 + "/" + mine.split("/")[1]
    [outcome] = run_pickled_batch(blob, str(tmp_path), {"workercode11": other})
    assert isinstance(outcome, Failed) and isinstance(outcome.error, StaleModuleError)
    assert "workercode11" in str(outcome.error) and "The tasks sent to it were not run" in str(outcome.error)
    assert sys.modules["workercode11"] is not module  # imported again from its file


def test_11_module_digests_see_code_and_values(make_module: Any) -> None:
    first = module_digest(make_module("digest11", HELPERS.format(k=1)))
    again = module_digest(make_module("digest11", "# a comment\n" + HELPERS.format(k=1)))
    other = module_digest(make_module("digest11", HELPERS.format(k=2)))
    assert first == again
    assert first.split("/")[0] != other.split("/")[0] and first.split("/")[1] != other.split("/")[1]



# --- 12: a value that counts by its source, edited on disk and not reloaded ----------------

CFG12 = "import random\n\nRNG = random.Random({k})\n\nclass Cfg:\n    LRS = [{k}, 0.2]\n\n    def first(self):\n        return self.LRS[0]\n"
TASKS12 = """
from checkpoint import task
from {helpers} import Cfg
import {helpers}

@task
def a(i: int):
    def __():
        return {expr}
    return __
"""


def _rewrite(path: Path, source: str) -> None:
    path.write_text(source)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("expr", ["Cfg().first()", "{helpers}.RNG.random()"], ids=["class-attr", "rng"])
def test_12_a_value_counted_by_its_source_edited_but_not_reloaded(
    make_module: Any, tmp_path: Path, expr: str
) -> None:
    """A mutable class attribute and a module-level generator count by the source of their
    assignment. Edited on disk and not reloaded, memory and file disagree: the run must stop
    (as for a function's code), not store the old value's result under the new source."""
    helpers = f"helpers12{len(expr)}"
    make_module(helpers, CFG12.format(k=1))
    source = TASKS12.format(helpers=helpers, expr=expr.format(helpers=helpers))
    tasks = make_module(f"tasks12{len(expr)}", source)
    tasks.a(0).run(executor="inline")
    _rewrite(tmp_path / f"{helpers}.py", "# only a comment\n" + CFG12.format(k=1))
    tasks.a(0).run(executor="inline")  # an edit that changes nothing is not an error
    _rewrite(tmp_path / f"{helpers}.py", CFG12.format(k=5))
    with pytest.raises(StaleModuleError, match=rf"{helpers}\.py changed on disk.*reload\({helpers}\)"):
        tasks.a(0).run(executor="inline")
    importlib.reload(sys.modules[helpers])
    tasks = importlib.reload(tasks)
    assert tasks.a(0).run(executor="inline") in (5, random.Random(5).random())


# --- 16: a class of the project reached only through a stored value ------------------------

MODELS16 = "class Linear:\n    def __init__(self, w):\n        self.w = w\n\n    def predict(self, x):\n        return self.w * x\n"
TASKFILE16 = """
import pickle
from pathlib import Path
from checkpoint import task, requires, File
{extra}

@task
def model():
    @requires(File("model.pkl"))
    def __(p: Path):
        m = pickle.loads(p.read_bytes())
        {check}
        return [m]
    return __

@task
def main():
    @requires(model())
    def __(ms):
        return ms[0].predict(10)
    return __
"""


@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
def test_16_a_project_class_known_only_from_a_pickle_is_named_in_a_warning(
    tmp_path: Path, named: bool
) -> None:
    """A model loaded from a pickle file: no task's code names its class, so its code is in
    no fingerprint and an edit of it re-runs nothing. The run says so (FingerprintWarning
    naming the class and the fix); naming the class in the task's code makes it count."""
    (tmp_path / "mymodels.py").write_text(MODELS16)
    subprocess.run([PYTHON, "-c", "import pickle, mymodels; "
                    "open('model.pkl', 'wb').write(pickle.dumps(mymodels.Linear(3)))"],
                   cwd=tmp_path, env=ENV, check=True)
    (tmp_path / "taskfile.py").write_text(TASKFILE16.format(
        extra="from mymodels import Linear" if named else "",
        check="assert isinstance(m, Linear)" if named else "pass"))
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    first = subprocess.run([PYTHON, "-m", "checkpoint", "-q", "run", "main"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "30"
    warned = "FingerprintWarning: Task taskfile.model returned a value made of mymodels.Linear"
    assert (warned in first.stderr) is not named, first.stderr
    if named:
        (tmp_path / "mymodels.py").write_text(MODELS16.replace("w * x", "w * x + 1000"))
        again = subprocess.run([PYTHON, "-m", "checkpoint", "-q", "run", "main"], cwd=tmp_path,
                               env=env, capture_output=True, text=True, check=True)
        assert again.stdout.strip() == "1030"
    else:
        assert "from mymodels import Linear" in first.stderr


# --- 17: a file name that is not valid UTF-8 as an argument --------------------------------

TASKFILE17 = """
import os
from checkpoint import task, requires

@task
def size(name: str):
    def __():
        return len(name)
    return __

@task
def main():
    @requires([size(n) for n in sorted(os.listdir("data"))])
    def __(xs):
        return xs
    return __
"""


def test_17_an_undecodable_file_name_is_an_argument_like_any_str(tmp_path: Path) -> None:
    """os.listdir gives 'caf\\udce9.txt' (a lone surrogate) for a name that is not UTF-8:
    the task runs, keeps one id, is reused, and the report and graph can be written."""
    from checkpoint.identity import encode_arguments, task_id

    name = "caf\udce9.txt"
    ids = {task_id("f", encode_arguments("f", {"name": n})) for n in (name, name, "café.txt", "caf\udce8.txt")}
    assert len(ids) == 3
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ok.txt").write_text("")
    (tmp_path / "data" / name).write_text("")
    (tmp_path / "taskfile.py").write_text(TASKFILE17)
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for args, out in ((["run", "main"], "[8, 6]"), (["run", "main"], "[8, 6]"),
                      (["report", "-o", "r.html"], ""), (["graph", "main", "-o", "g.dot"], "")):
        done = subprocess.run([PYTHON, "-m", "checkpoint", "-q", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, errors="replace")
        assert done.returncode == 0 and out in done.stdout + done.stderr, done.stderr
    assert "udce9" in (tmp_path / "r.html").read_text() and "udce9" in (tmp_path / "g.dot").read_text()


# --- 18: your code imported from outside the project root ----------------------------------

CELL18 = """
import sys; sys.path.insert(0, "..")
import helpers18
from checkpoint import task

@task
def a(i: int):
    def __():
        return helpers18.g()
    return __

print(a(0).run(executor="inline"))
"""


def test_18_code_of_yours_outside_the_project_root_counts(tmp_path: Path) -> None:
    """A notebook in project/notebooks/ imports ../helpers18.py (its project root is its
    working directory); a taskfile in experiments/ uses a library installed in editable mode
    from ../src (PYTHONPATH here, as the editable .pth does). Neither is installed code:
    editing it re-runs the tasks that use it."""
    (tmp_path / "notebooks").mkdir()
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for k in (1, 2):
        (tmp_path / "helpers18.py").write_text(f"def g():\n    return {k}\n")
        out = subprocess.run([PYTHON, "-"], input=CELL18, cwd=tmp_path / "notebooks", env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(k)
    (tmp_path / "src" / "mylib18").mkdir(parents=True)
    (tmp_path / "src" / "mylib18" / "__init__.py").write_text("")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "taskfile.py").write_text(
        "from checkpoint import task\nfrom mylib18.core import score\n\n"
        "@task\ndef main():\n    def __():\n        return score(10)\n    return __\n")
    env["PYTHONPATH"] = str(tmp_path / "src")
    for k in (2, 3):
        (tmp_path / "src" / "mylib18" / "core.py").write_text(f"def score(x):\n    return x * {k}\n")
        out = subprocess.run([PYTHON, "-m", "checkpoint", "-q", "run", "main"], cwd=tmp_path / "experiments",
                             env=env, capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(10 * k)


def test_11_a_value_that_differs_in_every_process_is_imported_again_once(make_module: Any, tmp_path: Path) -> None:
    """RUN_ID = str(uuid4()) differs between the coordinator and a worker whatever the code:
    the worker imports the module again once for it, not before every batch."""
    module = make_module("workercode11b", "def f():\n    return 1\n\nRUN_ID = 'a'\n")
    blob = pickle.dumps(([WorkItem.running("t1", module.f, [], 0)], {}))
    code, _ = module_digest(module).split("/")
    manifest = {"workercode11b": code + "/" + "1" * 24}  # the coordinator's values differ
    assert type(run_pickled_batch(blob, str(tmp_path), manifest)[0]).__name__ == "Done"
    again = sys.modules["workercode11b"]
    assert again is not module  # imported again
    assert type(run_pickled_batch(blob, str(tmp_path), manifest)[0]).__name__ == "Done"
    assert sys.modules["workercode11b"] is again  # not a second time


# --- adv5 07: a module value set by the session, not by the file ---------------------------

SETTINGS07 = "LR = 0.1\nCFG = {'lr': 0.1}\n"
TASKS07 = """
import settings
from checkpoint import task

@task
def train(seed: int):
    def __():
        return settings.LR * 10 + seed
    return __

@task
def train_cfg(seed: int):
    def __():
        return settings.CFG["lr"] * 10 + seed
    return __
"""
SESSION07 = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
import settings, tasks

def show(t, pool):
    try:
        print(t.run(executor=pool))
    except Exception as exc:
        print(type(exc).__name__, str(exc).replace("\\n", " "))

if __name__ == "__main__":
    ctx = multiprocessing.get_context(sys.argv[1])
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:   # kept for the whole session
        show(tasks.train(1), pool)
        show(tasks.train_cfg(1), pool)
        settings.LR = 0.7                                 # the next experiment
        settings.CFG["lr"] = 0.5
        show(tasks.train(1), pool)
        show(tasks.train_cfg(1), pool)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:   # a pool started after setting it
        show(tasks.train(1), pool)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_07_a_module_value_set_by_the_session_is_not_computed_with_the_workers_old_one(
        tmp_path: Path, method: str) -> None:
    """The session sets ``settings.LR = 0.7`` (and ``settings.CFG["lr"]``) between two runs
    on its own pool: the fingerprint counts the new value, so the task runs again, but the
    worker imported ``settings`` with the file's 0.1, and importing it again gives 0.1 again.
    The task must fail with a StaleModuleError naming the value, never store 2.0 as the
    result for LR = 0.7. A pool forked after the value was set computes with it."""
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    (tmp_path / "settings.py").write_text(SETTINGS07)
    (tmp_path / "tasks.py").write_text(TASKS07)
    (tmp_path / "session.py").write_text(SESSION07)
    out = subprocess.run([PYTHON, "session.py", method], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:2] == ["2.0", "2.0"], out
    for line, name, value in ((out[2], "settings.LR", "0.7"), (out[3], "settings.CFG", "'lr': 0.5")):
        assert "StaleModuleError" in line and name in line and value in line, out
        assert "not from its file" in line and "as an argument" in line, line
    if method == "fork":
        assert out[4] == "8.0", out
    fresh = subprocess.run(
        [PYTHON, "-c", "import settings; settings.LR = 0.7; settings.CFG['lr'] = 0.5; import tasks; "
         "print(tasks.train(1).run(executor='inline'), tasks.train_cfg(1).run(executor='inline'))"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == ["8.0", "6.0"]  # nothing wrong was stored


# --- values whose text follows the hash seed ------------------------------------------------

SETTINGS_SEEDED = """
import dataclasses

NAMES = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"}
TABLE = {n: len(n) for n in NAMES}
TAGS = frozenset(NAMES)
PAIRS = tuple(sorted(NAMES))

@dataclasses.dataclass
class Config:
    widths: dict

CONFIG = Config({n: [len(n)] for n in NAMES})
"""
TASKS_SEEDED = """
import settings
from checkpoint import task

@task
def uses(i: int):
    def __():
        return (sum(settings.TABLE.values()) + len(settings.NAMES) + len(settings.TAGS)
                + len(settings.CONFIG.widths) + len(settings.PAIRS) + i)
    return __
"""
SESSION_SEEDED = """
import multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor
import checkpoint, settings, tasks

if __name__ == "__main__":
    os.environ["PYTHONHASHSEED"] = "2"  # the workers' (this process has 1)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        result = checkpoint.run([tasks.uses(i) for i in range(4)], executor=pool,
                                keep_going=True, raise_on_failure=False)
        print(len(result.ran), [str(e)[:200] for e in result.failed.values()])
        settings.TABLE = {**settings.TABLE, "alpha": 6}  # a real difference: refused
        result = checkpoint.run([tasks.uses(5)], executor=pool, keep_going=True,
                                raise_on_failure=False)
        print(len(result.ran), [type(e).__name__ for e in result.failed.values()])
"""


def test_values_whose_order_follows_the_hash_seed_are_equal_in_spawned_workers(
        tmp_path: Path) -> None:
    """A set, a dict built from one (alone or in a dataclass): a spawned worker has another
    hash seed, so another order, but equal values; no StaleModuleError. A value that differs
    is still refused."""
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    (tmp_path / "settings.py").write_text(SETTINGS_SEEDED)
    (tmp_path / "tasks.py").write_text(TASKS_SEEDED)
    (tmp_path / "session.py").write_text(SESSION_SEEDED)
    out = subprocess.run([PYTHON, "session.py"], cwd=tmp_path, env={**env, "PYTHONHASHSEED": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    # Also refused for a task never run before (its first batch carries the value too).
    assert out.stdout.splitlines() == ["4 []", "0 ['StaleModuleError']"], out.stdout
