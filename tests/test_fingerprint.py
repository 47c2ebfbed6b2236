"""Code fingerprints: every value the code reads, and nothing else (issue 17, items 3 and 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from checkpoint.fingerprint import FingerprintWarning, code_fingerprint, normalized_source

ENV = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}


def _fp(fn: Any) -> tuple[str, str]:
    return code_fingerprint(fn)


# --- scope: locals are not globals --------------------------------------------------------

SCOPES = """
from checkpoint import task

__ = {dunder!r}          # IPython's output history in a notebook
parts = {parts!r}
n = {n!r}
x = {x!r}
helper = {helper!r}

@task
def f(n):
    parts = [n, n + 1]
    def __():
        helper = sum(parts)
        return [x for x in range(helper)] + [(lambda parts: parts)(1)]
    return __
"""


def test_locals_parameters_closures_and_comprehensions_are_not_globals(make_module: Any) -> None:
    """Names Python resolves locally (the inner `__`, a local `parts`, a parameter, a
    comprehension variable, a lambda's parameter) must not pull in same-named globals: in a
    notebook `__` is the output history, and the fingerprint changed whenever it did."""
    first = make_module("scopes1", SCOPES.format(dunder="", parts=[1, 2], n=1, x=2, helper=3)).f
    digest, text = first.fingerprint
    for name in ("__ =", "parts =", "n =", "x =", "helper ="):
        assert "\n" + name not in text, text  # a global is a piece at the start of a line
    second = make_module("scopes1", SCOPES.format(dunder=2, parts=[3], n=5, x=6, helper=7)).f
    assert second.fingerprint[0] == digest


NOTEBOOK_CELL = """
from checkpoint import task

__ = {dunder!r}
BASE = 10

@task
def a(i):
    def __():
        return i + {a_body}
    return __

@task
def b(i):
    def __():
        return i * BASE
    return __
"""


def test_editing_one_family_of_a_cell_changes_only_its_fingerprint(make_module: Any) -> None:
    """A cell that defines two families, run again with one edited after a value was
    displayed (IPython's `__` changed): only the edited family's fingerprint changes."""
    before = make_module("cell", NOTEBOOK_CELL.format(dunder="", a_body=1))
    a1, b1 = before.a.fingerprint[0], before.b.fingerprint[0]
    after = make_module("cell", NOTEBOOK_CELL.format(dunder=2, a_body=2))
    assert after.a.fingerprint[0] != a1
    assert after.b.fingerprint[0] == b1
    assert "BASE = 10" in after.b.fingerprint[1]


def test_a_global_rebound_between_runs_reruns_in_the_same_process(make_module: Any) -> None:
    """In a notebook a cell may bind a global again between two runs: the second run must see
    it (the fingerprint was computed once per process, so the old result was reused)."""
    mod = make_module("rebind", """
        from dataclasses import dataclass
        from checkpoint import task

        @dataclass
        class Config:
            lr: float

        CFG = Config(lr=0.1)

        @task
        def train():
            def __():
                return CFG.lr * 10
            return __
    """)
    assert mod.train().run(executor="inline") == 1.0
    mod.CFG = mod.Config(lr=0.2)
    assert mod.train().run(executor="inline") == 2.0


# --- values of any type -------------------------------------------------------------------

VALUES = """
import random
import threading
from dataclasses import dataclass
from types import SimpleNamespace
from checkpoint import task

@dataclass
class TrainConfig:
    lr: float
    epochs: int = 10

class Thing:
    def __init__(self, tags):
        self.tags = set(tags)
        self.table = {{t: len(t) for t in self.tags}}

CFG = TrainConfig(lr={lr})
NS = SimpleNamespace(scale={lr}, names=["a", "b"])
THING = Thing({tags!r})
BIG = list(range({big}))
RNG = random.Random(0)
LOCK = threading.Lock()

@task
def train():
    def __():
        with LOCK:
            noise = RNG.random()
        return CFG.lr * CFG.epochs, NS.scale, sorted(THING.tags), len(BIG), noise
    return __
"""


def _values(make_module: Any, name: str, lr: float = 0.1, tags: tuple[str, ...] = ("x", "y"),
            big: int = 2000) -> Any:
    return make_module(name, VALUES.format(lr=lr, tags=list(tags), big=big)).train


def test_dataclass_namespace_and_object_values_count(make_module: Any) -> None:
    """A dataclass instance, a SimpleNamespace, an arbitrary object and a long list are
    fingerprinted: changing any of them changes the fingerprint (they were ignored)."""
    base = _values(make_module, "vals1")
    digest, text = base.fingerprint
    assert "CFG = TrainConfig(lr=0.1, epochs=10)" in text
    assert "NS = namespace(names=['a', 'b'], scale=0.1)" in text
    assert "class TrainConfig" in text and "class Thing" in text
    assert _values(make_module, "vals1", lr=0.2).fingerprint[0] != digest
    assert _values(make_module, "vals1", tags=("x", "z")).fingerprint[0] != digest
    assert _values(make_module, "vals1", big=2001).fingerprint[0] != digest
    assert _values(make_module, "vals1").fingerprint[0] == digest


def test_stateful_values_are_known_by_their_assignment(make_module: Any) -> None:
    """A random generator (its state changes as it is used) and a lock (cannot be pickled)
    are fingerprinted by the source of their assignment: using them changes nothing."""
    family = _values(make_module, "vals2")
    digest, text = family.fingerprint
    assert "RNG = <value of: RNG = random.Random(0)>" in text
    assert "LOCK = <value of: LOCK = threading.Lock()>" in text
    sys.modules["vals2"].RNG.random()
    assert code_fingerprint(family.fn)[0] == digest


def test_pickled_values_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """An object holding a set and a dict filled from it pickles in hash-seed order; its
    fingerprint must not (else the task would re-run on every run)."""
    (tmp_path / "seeded.py").write_text(VALUES.format(lr=0.1, tags=list("abcdefgh"), big=3))
    probe = "import seeded; fp = seeded.train.fingerprint; print(fp[0], 'THING = <Thing' in fp[1])"
    digests = {
        subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, text=True,
                       capture_output=True, env={**ENV, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(digests) == 1 and digests.pop().endswith(" True\n"), digests


def test_numpy_and_pandas_values(make_module: Any) -> None:
    """Arrays are hashed by dtype, shape and bytes; pandas objects by a deterministic pickle."""
    pytest.importorskip("numpy")
    pytest.importorskip("pandas")
    source = """
        import numpy as np
        import pandas as pd
        from checkpoint import task

        WEIGHTS = np.array({w!r})
        TABLE = pd.DataFrame({{"a": {w!r}, "b": ["x", "y", "z"]}})

        @task
        def f():
            def __():
                return float(WEIGHTS.sum() + TABLE.a.sum())
            return __
    """
    digest, text = make_module("arrays", source.format(w=[1.0, 2.0, 3.0])).f.fingerprint
    assert "WEIGHTS = numpy.ndarray(dtype=<f8, shape=(3,), blake2b=" in text
    assert "TABLE = <DataFrame, pickled: " in text
    assert make_module("arrays", source.format(w=[1.0, 2.0, 3.0])).f.fingerprint[0] == digest
    assert make_module("arrays", source.format(w=[1.0, 2.0, 4.0])).f.fingerprint[0] != digest


def test_third_party_code_is_not_fingerprinted(make_module: Any) -> None:
    """Modules, functions and classes from the standard library or installed packages are
    neither pickled nor copied into the fingerprint."""
    mod = make_module("thirdparty", """
        import json
        import os.path
        from collections import OrderedDict
        from json import dumps
        from checkpoint import task

        @task
        def f():
            def __():
                return json.loads(dumps(OrderedDict(a=os.path.join("x", "y"))))
            return __
    """)
    own = normalized_source(mod.f.fn, strip_decorators=True)
    assert own is not None
    assert mod.f.fingerprint[1] == own[0]  # the task's own source, nothing else


def test_unfingerprintable_value_warns_once(make_module: Any) -> None:
    """A value that cannot be pickled and has no assignment in the source gets a warning
    naming the global, the task and @task(version=...); once per process."""
    mod = make_module("opaque", """
        import threading
        from checkpoint import task

        globals()["GATE"] = threading.Lock()

        @task
        def guarded():
            def __():
                with GATE:
                    return 1
            return __
    """)
    with pytest.warns(FingerprintWarning, match=r"opaque\.guarded reads the global 'GATE'.*version="):
        digest, text = mod.guarded.fingerprint
    assert "GATE = <lock: cannot be fingerprinted>" in text
    assert code_fingerprint(mod.guarded.fn, family="opaque.guarded")[0] == digest  # no second warning


# --- same-project modules -----------------------------------------------------------------

FEATURES = """
from util import clip

FACTOR = {factor}

def scale(xs):
    return [clip(x * FACTOR) for x in xs]

def shift(xs):
    return [x + {shift} for x in xs]
"""

UTIL = """
LIMIT = {limit}

def clip(x):
    return min(x, LIMIT)
"""

USES = """
import features
import pkg.sub as sub
from features import scale
from checkpoint import task

@task
def by_name():
    def __():
        return scale([0, 1, 2])
    return __

@task
def by_attribute():
    def __():
        return features.shift([0, 1, 2])
    return __

@task
def by_package():
    def __():
        return sub.twice(1)
    return __

@task
def local_import():
    def __():
        from features import scale as s
        import util
        return s([1]), util.clip(5)
    return __
"""


def _project(make_module: Any, tmp_path: Path, factor: int = 2, shift: int = 1, limit: int = 100,
             twice: str = "2 * x") -> dict[str, str]:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub.py").write_text(f"def twice(x):\n    return {twice}\n")
    for name in ("pkg", "pkg.sub", "features", "util"):
        sys.modules.pop(name, None)
    make_module("util", UTIL.format(limit=limit))
    make_module("features", FEATURES.format(factor=factor, shift=shift))
    mod = make_module("uses", USES)
    return {name: getattr(mod, name).fingerprint[0]
            for name in ("by_name", "by_attribute", "by_package", "local_import")}


def test_helpers_from_sibling_modules_count(make_module: Any, tmp_path: Path) -> None:
    """`from features import scale`, `features.shift`, `import pkg.sub as sub` and imports
    inside the task are followed, transitively (features -> util), and only what is read."""
    base = _project(make_module, tmp_path)
    text = sys.modules["uses"].by_name.fingerprint[1]
    assert "def scale(xs)" in text and "features.FACTOR = 2" in text
    assert "def clip(x)" in text and "util.LIMIT = 100" in text
    assert "def shift" not in text

    changed = _project(make_module, tmp_path, factor=3)
    assert {k for k in base if base[k] != changed[k]} == {"by_name", "local_import"}
    changed = _project(make_module, tmp_path, shift=2)
    assert {k for k in base if base[k] != changed[k]} == {"by_attribute"}
    changed = _project(make_module, tmp_path, limit=50)
    assert {k for k in base if base[k] != changed[k]} == {"by_name", "local_import"}
    changed = _project(make_module, tmp_path, twice="x + x")
    assert {k for k in base if base[k] != changed[k]} == {"by_package"}
    assert _project(make_module, tmp_path) == base


def test_import_cycles_between_project_modules_end(make_module: Any, tmp_path: Path) -> None:
    """Two modules whose helpers call each other are each included once."""
    (tmp_path / "pong.py").write_text("import ping\n\ndef pong(n):\n    return ping.ping(n - 1) if n else 1\n")
    make_module("ping", """
        import pong

        def ping(n):
            return pong.pong(n - 1) if n else 0
    """)
    mod = make_module("cycle", """
        from ping import ping
        from checkpoint import task

        @task
        def f():
            def __():
                return ping(3)
            return __
    """)
    text = mod.f.fingerprint[1]
    assert text.count("def ping(n)") == 1 and text.count("def pong(n)") == 1


def test_modules_under_site_packages_are_not_followed(make_module: Any, tmp_path: Path) -> None:
    """A package installed into a virtualenv inside the project is third-party."""
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    (site / "vendored.py").write_text("def helper():\n    return 1\n")
    sys.path.insert(0, str(site))
    mod = make_module("usesvendored", """
        from vendored import helper
        from checkpoint import task

        @task
        def f():
            def __():
                return helper()
            return __
    """)
    assert "def helper" not in mod.f.fingerprint[1]


# --- __main__ families from different scripts ---------------------------------------------

SCRIPT = """
import json
import checkpoint
from checkpoint import task

@task
def load():
    def __():
        return {value!r}
    return __

result = checkpoint.run([load()], executor="inline")
print(json.dumps({{"value": result.values[load().id], "ran": len(result.ran),
                  "dirname": load.dirname}}))
"""


def test_scripts_in_one_folder_keep_their_own_main_families(tmp_path: Path) -> None:
    """`python a.py` and `python b.py` both define `load` in `__main__`: each keeps its own
    entries (b overwrote a's, so a ran again after b)."""
    for name in ("a", "b"):
        (tmp_path / f"{name}.py").write_text(SCRIPT.format(value=name))

    def script(name: str) -> dict[str, Any]:
        proc = subprocess.run([sys.executable, f"{name}.py"], cwd=tmp_path, env=ENV, text=True,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    runs = [script(name) for name in ("a", "a", "b", "a")]
    assert [(r["value"], r["ran"]) for r in runs] == [("a", 1), ("a", 0), ("b", 1), ("a", 0)]
    assert [r["dirname"] for r in runs[2:]] == ["__main__.b.load", "__main__.a.load"]


def test_main_family_name_is_relative_to_the_cache_parent(tmp_path: Path) -> None:
    """Run from elsewhere with the project's cache, a script keeps the same family directory;
    a moved project too."""
    project = tmp_path / "proj"
    (project / "scripts").mkdir(parents=True)
    (project / "scripts" / "a.py").write_text(SCRIPT.format(value="a"))
    env = {**ENV, "CP_CACHE_DIR": str(project / ".cache")}
    proc = subprocess.run([sys.executable, "proj/scripts/a.py"], cwd=tmp_path, env=env,
                          text=True, capture_output=True, timeout=60)
    assert json.loads(proc.stdout)["dirname"] == "__main__.scripts.a.load", proc.stderr
    moved = tmp_path / "moved"
    project.rename(moved)
    proc = subprocess.run([sys.executable, "scripts/a.py"], cwd=moved, env=ENV, text=True,
                          capture_output=True, timeout=60)
    assert json.loads(proc.stdout) == {"value": "a", "ran": 0, "dirname": "__main__.scripts.a.load"}


# --- end to end: the CLI and a sibling module ----------------------------------------------

TASKFILE = """
import features
from features import scale
from checkpoint import requires, task

@task
def scaled(n: int):
    def __():
        return scale(list(range(n)))
    return __

@task
def shifted(n: int):
    def __():
        return features.shift(list(range(n)))
    return __

@task
def main():
    @requires([scaled(3), shifted(3)])
    def __(parts):
        return parts
    return __
"""

SIBLING = """
def scale(xs):
    return [x * 2 for x in xs]

def shift(xs):
    return [x + 1 for x in xs]
"""


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    checkpoint = str(Path(sys.executable).parent / "checkpoint")
    return subprocess.run([checkpoint, *args], cwd=project, env=ENV, text=True,
                          capture_output=True, timeout=60)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 2))  # bytecode caches: 1 s resolution


def test_cli_sees_an_edit_in_a_sibling_module(tmp_path: Path) -> None:
    """Editing features.scale: `why` names the change, the run recomputes; editing
    features.shift then re-runs only the task that uses it."""
    (tmp_path / "taskfile.py").write_text(textwrap.dedent(TASKFILE))
    (tmp_path / "features.py").write_text(textwrap.dedent(SIBLING))
    assert _cli(tmp_path, "run", "main").stdout == "[[0, 2, 4], [1, 2, 3]]\n"

    _edit(tmp_path / "features.py", "x * 2", "x * 3")
    why = _cli(tmp_path, "why", "main")
    assert "prerequisite scaled(3) will run (code changed)" in why.stdout, why.stdout + why.stderr
    assert "scaled: code changed, for 1 task" in why.stdout
    assert "-    return [x * 2 for x in xs]" in why.stdout
    assert "+    return [x * 3 for x in xs]" in why.stdout
    assert "shifted" not in why.stdout
    run = _cli(tmp_path, "run", "main", "--json")
    doc = json.loads(run.stdout)
    assert doc["targets"][0]["value"] == [[0, 3, 6], [1, 2, 3]]
    assert doc["ran"] == 2  # scaled(3) and main()

    _edit(tmp_path / "features.py", "x + 1", "x + 10")
    doc = json.loads(_cli(tmp_path, "run", "main", "--json").stdout)
    assert doc["targets"][0]["value"] == [[0, 3, 6], [10, 11, 12]]
    assert doc["ran"] == 2  # shifted(3) and main()
    assert _cli(tmp_path, "why", "main").stdout.startswith("main() is fresh")


def test_globals_the_code_changes_are_state_not_input(make_module: Any) -> None:
    """A list the task appends to, a memo dict a helper fills, a counter it rebinds: their
    content changes as tasks run, so a second run in the same process must reuse everything
    (their assignment is fingerprinted, not their content)."""
    mod = make_module("stateful", """
        from checkpoint import requires, task

        CALLS = []
        MEMO = {}
        COUNT = 0

        def slow_square(x):
            if x not in MEMO:
                MEMO[x] = x * x
            return MEMO[x]

        @task
        def square(x: int):
            def __():
                global COUNT
                COUNT += 1
                CALLS.append(x)
                return slow_square(x)
            return __

        @task
        def total():
            @requires([square(x) for x in range(3)])
            def __(values):
                return sum(values)
            return __
    """)
    import checkpoint

    first = checkpoint.run([mod.total()], executor="inline")
    assert len(first.ran) == 4 and mod.CALLS == [0, 1, 2]
    second = checkpoint.run([mod.total()], executor="inline")
    assert len(second.ran) == 0, second.plan.to_run if second.plan else None
    text = mod.square.fingerprint[1]
    assert "CALLS = <value of: CALLS = []>" in text and "MEMO = <value of: MEMO = {}>" in text
    assert "COUNT = <value of: COUNT = 0>" in text


def test_normalized_sources_are_kept_next_to_the_bytecode(tmp_path: Path) -> None:
    """A process keeps what it parsed in __pycache__ (unless Python writes no bytecode); the
    next one uses it, an edit invalidates it, and a damaged cache file is ignored."""
    for name, text in (("features.py", SIBLING), ("taskfile.py", TASKFILE)):
        (tmp_path / name).write_text(textwrap.dedent(text))
        os.utime(tmp_path / name, (1e9, 1e9))  # not just written (see the next test)
    probe = "import taskfile; print(taskfile.scaled.fingerprint[0])"
    env = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def digest(**extra: str) -> str:
        return subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, text=True,
                              capture_output=True, env={**env, **extra}).stdout

    cache = tmp_path / "__pycache__"
    first = digest(PYTHONDONTWRITEBYTECODE="1")
    assert not list(cache.glob("*.fp")) if cache.exists() else True
    assert digest() == first
    kept = sorted(p.name.split(".")[0] for p in cache.glob("*.checkpoint*.fp"))
    assert kept == ["features", "taskfile"]
    assert digest() == first
    _edit(tmp_path / "features.py", "x * 2", "x * 3")
    edited = digest()
    assert edited != first
    for path in cache.glob("*.fp"):
        path.write_bytes(b"garbage")
    assert digest() == edited


def test_a_file_rewritten_within_one_clock_tick_is_read_again(make_module: Any, tmp_path: Path) -> None:
    """Two versions of a file with the same size and mtime (written within one tick of the
    file system's clock): the second must not get the first one's cached source."""
    import time

    source = """
        from checkpoint import task

        def helper():
            return {n}

        @task
        def f():
            def __():
                return helper()
            return __
    """
    stamp = time.time_ns() + 10**10  # "just written", in the same tick for both versions
    one = make_module("ticked", source.format(n=1))
    os.utime(tmp_path / "ticked.py", ns=(stamp, stamp))
    first = code_fingerprint(one.f.fn)
    two = make_module("ticked", source.format(n=2))
    os.utime(tmp_path / "ticked.py", ns=(stamp, stamp))
    second = code_fingerprint(two.f.fn)
    assert "return 1" in first[1] and "return 2" in second[1]


def test_checkpoint_markers_in_globals_count_by_their_repr(make_module: Any) -> None:
    """A module-level marker (`DIR = TaskDirectory()`) counts as its repr, not its pickled
    state (which may hold what it learned during a run)."""
    (Path.cwd() / "data.csv").write_text("a\n1\n")
    mod = make_module("markers", """
        from checkpoint import File, TaskDirectory, requires, task

        DIR = TaskDirectory()
        RAW = File("data.csv")

        @task
        def f():
            @requires(DIR)
            @requires(RAW)
            def __(path, raw):
                return str(path), raw.read_text()
            return __
    """)
    digest, text = mod.f.fingerprint
    assert "DIR = TaskDirectory()" in text and "RAW = File('data.csv')" in text
    assert mod.f().run(executor="inline")[1] == "a\n1\n"
    assert mod.f.fingerprint[0] == digest  # what the File learned while running is not identity
