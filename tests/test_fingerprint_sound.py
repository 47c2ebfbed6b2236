"""Code fingerprints describe the code that runs: the adversarial tester's reproductions
(/tmp/adv/repros, numbered as there) turned into tests."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import ENV, PYTHON

from checkpoint.errors import StaleModuleError
from checkpoint.fingerprint import FingerprintWarning, code_fingerprint


def _rewrite(path: Path, source: str) -> None:
    """Rewrite a file as an editor does, with a new mtime even within one clock tick."""
    path.write_text(textwrap.dedent(source))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


# --- 08: a helper edited on disk, not reloaded -------------------------------------------

UTILS = "def f(x):\n    return x + {k}\n"
TASKS = """
from checkpoint import task
import utils08

@task
def g(x: int):
    def __() -> int:
        return utils08.f(x)
    return __
"""


def test_08_a_helper_edited_but_not_reloaded_runs_nothing(make_module: Any, tmp_path: Path) -> None:
    """A long session edits a helper without reloading it: the old code is in memory, the new
    on disk. Running must not store the old code's result under the new code's fingerprint
    (every fresh process would then get it as fresh): it raises, naming the file and the fix."""
    make_module("utils08", UTILS.format(k=1))
    tasks = make_module("tasks08", TASKS)
    assert tasks.g(1).run(executor="inline") == 2
    _rewrite(tmp_path / "utils08.py", UTILS.format(k=100))
    for executor in ("inline", "thread", "process"):
        with pytest.raises(StaleModuleError, match=r"utils08\.py changed on disk.*importlib\.reload\(utils08\)"):
            tasks.g(1).run(executor=executor)
    importlib.reload(sys.modules["utils08"])
    assert tasks.g(1).run(executor="inline") == 101


def test_08_an_edit_before_the_first_run_is_seen_too(make_module: Any, tmp_path: Path) -> None:
    """Imported, edited, then run for the first time: no earlier fingerprint to compare with."""
    make_module("utils08b", UTILS.format(k=1))
    tasks = make_module("tasks08b", TASKS.replace("utils08", "utils08b"))
    _rewrite(tmp_path / "utils08b.py", UTILS.format(k=100))
    with pytest.raises(StaleModuleError):
        code_fingerprint(tasks.g.fn)


def test_08_the_task_module_itself_edited_but_not_reloaded(make_module: Any, tmp_path: Path) -> None:
    make_module("utils08c", UTILS.format(k=1))
    tasks = make_module("tasks08c", TASKS.replace("utils08", "utils08c"))
    _rewrite(tmp_path / "tasks08c.py", TASKS.replace("utils08", "utils08c").replace("(x)", "(x + 1)"))
    with pytest.raises(StaleModuleError, match="tasks08c"):
        code_fingerprint(tasks.g.fn)


def test_08_edits_that_change_no_code_are_not_an_error(make_module: Any, tmp_path: Path) -> None:
    """Comments, blank lines (lines shift) and formatting leave the compiled code as it was."""
    make_module("utils08d", UTILS.format(k=1))
    tasks = make_module("tasks08d", TASKS.replace("utils08", "utils08d"))
    before = code_fingerprint(tasks.g.fn)
    _rewrite(tmp_path / "utils08d.py", "# a comment\n\n\ndef f(x):   # more\n    return (x +\n 1)\n")
    assert code_fingerprint(tasks.g.fn) == before


def test_08_the_session_reproduction(tmp_path: Path) -> None:
    """The tester's script, in a real process with fork workers: no wrong value ever."""
    (tmp_path / "utils.py").write_text(UTILS.format(k=1))
    (tmp_path / "tasks.py").write_text(TASKS.replace("utils08", "utils"))
    (tmp_path / "session.py").write_text(textwrap.dedent("""
        import pathlib, sys
        from checkpoint.errors import StaleModuleError
        from tasks import g
        print(g(1).run(executor=sys.argv[1]))
        pathlib.Path("utils.py").write_text("def f(x):\\n    return x + 100\\n")
        try:
            g(1).run(executor=sys.argv[1])
        except StaleModuleError:
            print("stale")
    """))
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    for executor in ("process", "thread"):
        out = subprocess.run([PYTHON, "session.py", executor], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.split() == ["2", "stale"], out
        fresh = subprocess.run([PYTHON, "-c", "from tasks import g; print(g(1).run())"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert fresh.stdout.strip() == "101"
        (tmp_path / "utils.py").write_text(UTILS.format(k=1))


def test_08_bytecode_python_cached_for_another_version_is_named(tmp_path: Path, runner: Any) -> None:
    """An edit saved within the second of the last import, with the same size: Python loads the
    old bytecode from __pycache__ (it compares mtimes in seconds). The code that would run is
    not the file's: the error names the bytecode file to delete."""
    from checkpoint.cli import cli

    source = TASKS.replace("utils08", "utils") + "\n"
    (tmp_path / "utils.py").write_text(UTILS.format(k=1))
    (tmp_path / "taskfile.py").write_text(source)
    mtime = os.stat(tmp_path / "taskfile.py").st_mtime_ns
    assert runner.invoke(cli, ["run", "g(1)", "--executor", "inline"]).exit_code == 0
    (tmp_path / "taskfile.py").write_text(source.replace("f(x)", "f(2)"))
    os.utime(tmp_path / "taskfile.py", ns=(mtime, mtime + 1000))
    sys.modules.pop("taskfile", None)
    result = runner.invoke(cli, ["run", "g(1)", "--executor", "inline"])
    assert result.exit_code == 2, result.output
    assert "changed on disk" in result.output and "__pycache__" in result.output


# --- 01, 02, 09: what a function holds besides its code -----------------------------------

HELPERS = """
def timed(f):            # a home-made decorator, without functools.wraps
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)
    return wrapper

@timed
def clean(x):
    return x * {clean}

def make_scaler(k):
    def scale(x):
        return x * k
    return scale

scale = make_scaler({k})

K = {k}
KS = {ks}
lam = lambda x, k=K: x * k
transforms = [lambda x, k=k: x * k for k in KS]

def memo(f):
    cache = {{}}
    def wrapper(x):
        if x not in cache:
            cache[x] = f(x)
        return cache[x]
    return wrapper

@memo
def slow(x):
    return x + 1
"""
USES = """
from checkpoint import task
from helpers01 import clean, scale, lam, transforms, slow

@task
def a():
    def __():
        return clean(1)
    return __

@task
def b():
    def __():
        return scale(1)
    return __

@task
def c():
    def __():
        return lam(1), [t(1) for t in transforms]
    return __

@task
def d():
    def __():
        return slow(1)
    return __
"""


def _bound(make_module: Any, clean: int = 2, k: int = 10, ks: Any = (1, 2)) -> dict[str, str]:
    make_module("helpers01", HELPERS.format(clean=clean, k=k, ks=list(ks)))
    mod = make_module("uses01", USES)
    return {name: code_fingerprint(getattr(mod, name).fn)[0] for name in "abcd"}


def test_01_02_09_closures_and_defaults_count(make_module: Any) -> None:
    """01: a function wrapped by a decorator without functools.wraps (reached through the
    wrapper's closure); 02: a factory's captured value; 09: a lambda's default and a list
    of lambdas made in a loop; and a memo dict the code fills is state, not input."""
    base = _bound(make_module)
    assert _bound(make_module) == base
    changed = _bound(make_module, clean=3)
    assert {n for n in base if base[n] != changed[n]} == {"a"}
    changed = _bound(make_module, k=20)
    assert {n for n in base if base[n] != changed[n]} == {"b", "c"}
    changed = _bound(make_module, ks=(1, 5))
    assert {n for n in base if base[n] != changed[n]} == {"c"}
    mod = sys.modules["uses01"]
    before = code_fingerprint(mod.d.fn)
    assert mod.d().run(executor="inline") == 2  # fills the memo dict
    assert code_fingerprint(mod.d.fn) == before


# --- 07: task families made by a factory --------------------------------------------------

FACTORY = """
from checkpoint import task, requires

def make_loader(scale):
    @task
    def load(x: int):
        def __() -> int:
            return x * scale
        return __
    return load

load10 = make_loader({first})
load100 = make_loader({second})

@task
def main():
    @requires(load10(1))
    @requires(load100(1))
    def __(a: int, b: int) -> list:
        return [a, b]
    return __
"""


def test_07_families_from_a_factory_that_differ_are_an_error(make_module: Any) -> None:
    from checkpoint import TaskDefinitionError

    mod = make_module("factory07", FACTORY.format(first=10, second=100))
    with pytest.raises(TaskDefinitionError, match=r"Two different task families are named "
                       r"factory07\.make_loader\.<locals>\.load.*as an argument"):
        mod.main().run(executor="inline")
    mod = make_module("factory07", FACTORY.format(first=10, second=10))
    assert mod.main().run(executor="inline") == [10, 10]
    # the captured value is part of the code fingerprint: an edit re-runs
    mod = make_module("factory07", FACTORY.format(first=7, second=7))
    assert mod.main().run(executor="inline") == [7, 7]


# --- 13, 22, 27: what the project is --------------------------------------------------------


def test_13_a_namespace_package_is_followed(make_module: Any, tmp_path: Path) -> None:
    """`import nslib13.helpers` then `nslib13.helpers.f(...)`, nslib13/ without __init__.py."""
    (tmp_path / "nslib13").mkdir()

    def fingerprint(factor: int) -> str:
        (tmp_path / "nslib13" / "helpers.py").write_text(
            f"SCALE = {factor}\ndef f(x):\n    return x * {factor}\n")
        sys.modules.pop("nslib13.helpers", None)
        sys.modules.pop("nslib13", None)
        mod = make_module("uses13", """
            from checkpoint import task
            import nslib13.helpers

            @task
            def a():
                def __() -> list:
                    return [nslib13.helpers.f(1), nslib13.helpers.SCALE]
                return __
        """)
        return code_fingerprint(mod.a.fn)[1]

    text = fingerprint(2)
    assert "return x * 2" in text and "SCALE = 2" in text
    assert fingerprint(3) != text


def test_22_python_m_takes_the_project_root_from_the_package(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "lib" / "__init__.py").write_text("")
    (tmp_path / "lib" / "models.py").write_text("def f(x):\n    return x * 2\n")
    (tmp_path / "experiments" / "train.py").write_text(textwrap.dedent("""
        from checkpoint import task
        from lib.models import f

        @task
        def train():
            def __() -> int:
                return f(1)
            return __

        if __name__ == "__main__":
            print(train().run())
    """))
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}

    def run() -> str:
        return subprocess.run([PYTHON, "-m", "experiments.train"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True).stdout.strip()

    assert run() == "2"
    _rewrite(tmp_path / "lib" / "models.py", "def f(x):\n    return x * 3\n")
    assert run() == "3"


def test_27_a_module_symlinked_into_the_project_is_followed(make_module: Any, tmp_path: Path) -> None:
    shared = tmp_path.parent / f"{tmp_path.name}-shared"
    shared.mkdir()
    (tmp_path / "util27.py").symlink_to(shared / "util27.py")

    def fingerprint(factor: int) -> str:
        (shared / "util27.py").write_text(f"def f(x):\n    return x * {factor}\n")
        sys.modules.pop("util27", None)
        mod = make_module("uses27", """
            from checkpoint import task
            from util27 import f

            @task
            def a():
                def __() -> int:
                    return f(1)
                return __
        """)
        return code_fingerprint(mod.a.fn)[1]

    assert "return x * 2" in fingerprint(2)
    assert "return x * 3" in fingerprint(3)


# --- 05, 19, 09c, 24: values reached through classes and dispatchers ----------------------

HOLDERS = """
from dataclasses import dataclass
from functools import cached_property, singledispatch

WEIGHT = {weight}

class Model:
    @cached_property
    def weight(self):
        return WEIGHT * 10

@singledispatch
def encode(x):
    raise TypeError(x)

@encode.register
def _(x: int):
    return x * {int_factor}

@encode.register
def _(x: str):
    return x.upper()

class Config:
    LR = 0.1
    STATE = []
Config.LR = {lr}

@dataclass
class Params:
    lr: float = 0.1

    @cached_property
    def doubled(self):
        return self.lr * 2

PARAMS = Params()
PARAMS.epochs = {epochs}
"""
READERS = """
from checkpoint import task
from holders05 import Model, encode, Config, PARAMS

@task
def model():
    def __():
        return Model().weight
    return __

@task
def dispatch():
    def __():
        return encode(1), encode("a")
    return __

@task
def config():
    def __():
        Config.STATE.append(1)
        return Config.LR
    return __

@task
def params():
    def __():
        return PARAMS.lr, PARAMS.epochs, PARAMS.doubled
    return __
"""


def _held(make_module: Any, weight: int = 2, int_factor: int = 2, lr: float = 0.5,
          epochs: int = 10) -> dict[str, str]:
    make_module("holders05", HOLDERS.format(weight=weight, int_factor=int_factor, lr=lr, epochs=epochs))
    mod = make_module("readers05", READERS)
    return {name: code_fingerprint(getattr(mod, name).fn)[0]
            for name in ("model", "dispatch", "config", "params")}


def test_05_19_09_24_values_behind_classes_and_dispatchers_count(make_module: Any) -> None:
    """05: a global read in a cached_property; 19: singledispatch implementations; 09c: a
    class attribute set after the class statement; 24: a dataclass attribute outside its
    fields. A mutable class attribute the code appends to, and a cached_property's cached
    value in an instance, do not make the code look changed."""
    base = _held(make_module)
    assert _held(make_module) == base
    for edit, expected in (({"weight": 3}, {"model"}), ({"int_factor": 3}, {"dispatch"}),
                           ({"lr": 0.9}, {"config"}), ({"epochs": 20}, {"params"})):
        changed = _held(make_module, **edit)
        assert {n for n in base if base[n] != changed[n]} == expected, edit
    mod = sys.modules["readers05"]
    before = {n: code_fingerprint(getattr(mod, n).fn) for n in ("config", "params")}
    mod.config().run(executor="inline")
    mod.params().run(executor="inline")
    assert {n: code_fingerprint(getattr(mod, n).fn) for n in before} == before


# --- 28: modules imported by a computed name ----------------------------------------------


def test_28_a_dynamic_import_warns_once(make_module: Any) -> None:
    mod = make_module("dynamic28", """
        import importlib
        from checkpoint import task

        @task
        def fit(model: str):
            def __() -> float:
                return importlib.import_module(f"models.{model}").predict(10)
            return __

        @task
        def plain(name: str):
            def __():
                return __import__(name).dumps(1)
            return __
    """)
    with pytest.warns(FingerprintWarning, match=r"dynamic28\.fit imports modules by a name "
                      r"computed when it runs \(importlib\.import_module\).*"
                      r"@task\(version=\.\.\.\)"):
        code_fingerprint(mod.fit.fn, family="dynamic28.fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code_fingerprint(mod.fit.fn, family="dynamic28.fit")  # once
    with pytest.warns(FingerprintWarning, match=r"__import__"):
        code_fingerprint(mod.plain.fn, family="dynamic28.plain")


# --- bad errors: 10, 20 ---------------------------------------------------------------------


def test_10_subclassing_a_task_class_is_a_clear_error() -> None:
    from checkpoint import TaskDefinitionError, task

    @task
    class Base:
        def __init__(self, n: int) -> None:
            self.n = n

        def run(self) -> int:
            return self.n

    with pytest.raises(TaskDefinitionError, match=r"Base cannot be subclassed.*undecorated base"):
        class Child(Base):  # type: ignore[misc,valid-type]
            pass


@pytest.mark.parametrize("name", ["random", "types"])
def test_20_a_taskfile_named_like_a_stdlib_module_is_refused(tmp_path: Path, runner: Any, name: str) -> None:
    from checkpoint.cli import cli

    (tmp_path / f"{name}.py").write_text("from checkpoint import task\n")
    result = runner.invoke(cli, ["-f", f"{name}.py", "run"])
    assert result.exit_code == 2, result.output
    assert f"has the name of the standard-library module '{name}'" in result.output
    assert f"{name}_tasks.py" in result.output


# --- files: 06, 11 --------------------------------------------------------------------------


def test_06_a_directory_input_follows_symlinked_subdirectories(tmp_path: Path) -> None:
    from checkpoint import File, requires, task

    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.csv").write_text("1,2,3")
    (tmp_path / "data06").mkdir()
    (tmp_path / "data06" / "raw").symlink_to(tmp_path / "shared")
    (tmp_path / "shared" / "loop").symlink_to(tmp_path / "shared")  # a loop ends

    @task
    def total06():
        @requires(File("data06"))
        def __(d: Path) -> int:
            return sum(int(v) for v in (d / "raw" / "a.csv").read_text().split(","))
        return __

    assert total06().run(executor="inline") == 6
    (tmp_path / "shared" / "a.csv").write_text("5,5,5")
    assert total06().run(executor="inline") == 15


def test_11_an_existing_path_with_brackets_is_a_file_not_a_pattern(tmp_path: Path) -> None:
    from checkpoint import File, requires, task

    (tmp_path / "run[1].csv").write_text("5")
    (tmp_path / "run1.csv").write_text("other")

    @task
    def r11():
        @requires(File("run[1].csv"))
        def __(p: Path) -> str:
            return p.read_text()
        return __

    @task
    def pattern11():
        @requires(File("run[0-9].csv"))
        def __(paths: list[Path]) -> list[str]:
            return [p.name for p in paths]
        return __

    assert r11().run(executor="inline") == "5"
    assert pattern11().run(executor="inline") == ["run1.csv"]


def test_08_code_changed_at_run_time_is_not_an_error(tmp_path: Path) -> None:
    """A decorator that recompiles a function (typeguard's @typechecked does) leaves code in
    memory that no file compiles to; the file itself is the one Python imported, as its
    bytecode cache shows, so that is no edit."""
    (tmp_path / "instr08.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / "tasks08i.py").write_text(TASKS.replace("utils08", "instr08"))
    sys.path.insert(0, str(tmp_path))
    dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, False
    try:
        instr = importlib.import_module("instr08")
        tasks = importlib.import_module("tasks08i")
    finally:
        sys.dont_write_bytecode = dont_write
        sys.path.remove(str(tmp_path))
    assert os.path.exists(importlib.util.cache_from_source(str(tmp_path / "instr08.py")))
    module = compile("def f(x):\n    assert isinstance(x, int)\n    return x + 1\n",
                     str(tmp_path / "instr08.py"), "exec")
    instr.f.__code__ = next(c for c in module.co_consts if hasattr(c, "co_code"))
    code_fingerprint(tasks.g.fn)  # no StaleModuleError


# --- adv2 03, 04: a wrapper applied by a call; helpers reached by a computed name ---------

WRAPPED = """
import functools

def as_percent(f):
    @functools.wraps(f)
    def wrapper(*args):
        return f(*args) * {factor}
    return wrapper

def ratio(a, b):
    return a / b

ratio_pct = as_percent(ratio)   # applied by a call, not with @
"""


def test_adv2_03_a_wraps_wrapper_applied_by_a_call_counts(make_module: Any) -> None:
    """``f = deco(f)`` with a functools.wraps wrapper: the wrapper's own code counts, not
    only the function it wraps (whose name and source it borrows)."""
    def fingerprint(factor: int) -> str:
        make_module("helpers03w", WRAPPED.format(factor=factor))
        mod = make_module("uses03w", """
            from checkpoint import task
            import helpers03w

            @task
            def main():
                def __():
                    return helpers03w.ratio_pct(1, 4)
                return __
        """)
        return code_fingerprint(mod.main.fn)[0]

    assert fingerprint(100) == fingerprint(100)
    assert fingerprint(100) != fingerprint(1000)


DISPATCH = """
import sys
from checkpoint import task

def fit_linear(x):
    return {k} * x

@task
def by_globals(kind: str, x: int):
    def __():
        return globals()[f"fit_{{kind}}"](x)
    return __

@task
def by_sys_modules(kind: str, x: int):
    def __():
        return getattr(sys.modules[__name__], f"fit_{{kind}}")(x)
    return __
"""


def test_adv2_04_globals_by_a_computed_name_count_every_global(make_module: Any) -> None:
    """``globals()[name]``: which global is read cannot be known, so each global of the
    module counts (an edit of the helper re-runs the task), but not other task families
    (an edit of another family's code alone re-runs nothing: the model fault test's
    taskfiles find their families this way)."""
    def fingerprint(k: int, other: int = 1) -> str:
        source = DISPATCH.format(k=k) + OTHER.format(other=other)
        return make_module("dispatch04", source).by_globals.fingerprint[0]

    assert fingerprint(2) == fingerprint(2)
    assert fingerprint(2) != fingerprint(3)
    assert fingerprint(2) == fingerprint(2, other=5)


OTHER = """
@task
def other():
    def __():
        return {other}
    return __
"""


def test_adv2_04_sys_modules_by_a_computed_name_warns(make_module: Any) -> None:
    """``sys.modules[name]``: which module is read cannot be known: a FingerprintWarning, as
    for importlib.import_module."""
    mod = make_module("dispatch04s", DISPATCH.format(k=2))
    with pytest.warns(FingerprintWarning, match=r"dispatch04s\.by_sys_modules reads modules "
                      r"through sys\.modules\[\.\.\.\].*@task\(version=\.\.\.\)"):
        code_fingerprint(mod.by_sys_modules.fn, family="dispatch04s.by_sys_modules")


def test_adv2_03_a_wrapper_object_counts_with_its_class(make_module: Any) -> None:
    """A callable object that wraps a function (functools.update_wrapper on an instance of
    a project class) counts with its class's code too."""
    def fingerprint(factor: int) -> str:
        make_module("helpers03c", f"""
import functools

class AsPercent:
    def __init__(self, f):
        functools.update_wrapper(self, f)
        self.f = f

    def __call__(self, *args):
        return self.f(*args) * {factor}

def ratio(a, b):
    return a / b

ratio_pct = AsPercent(ratio)
""")
        mod = make_module("uses03c", """
            from checkpoint import task
            import helpers03c

            @task
            def main():
                def __():
                    return helpers03c.ratio_pct(1, 4)
                return __
        """)
        return code_fingerprint(mod.main.fn)[0]

    assert fingerprint(100) == fingerprint(100)
    assert fingerprint(100) != fingerprint(1000)


# --- adversarial round 3 (/tmp/adv3/repros) ----------------------------------------------


def test_adv3_03_code_in_a_class_registry_counts(make_module: Any) -> None:
    """A registry held in a class attribute and filled by ``__init_subclass__`` (or a
    decorator): the classes and functions it holds count with their code, as those of a
    module-level registry do. What a mutable class attribute holds that is not code (a
    memo's numbers) is state and still does not count."""
    def fingerprint(k: int, memo: int = 0) -> str:
        models = make_module("models03r", """
            class Base:
                registry = {}
                hooks = []
                memo = {}

                def __init_subclass__(cls, **kw):
                    super().__init_subclass__(**kw)
                    Base.registry[cls.__name__.lower()] = cls

            def hook(f):
                Base.hooks.append(f)
                return f
        """)
        models.Base.memo.update({i: i * i for i in range(memo)})
        make_module("zoo03r", f"""
            from models03r import Base, hook

            class Linear(Base):
                def predict(self, x):
                    return x + {k}

            @hook
            def shift(x):
                return x - {k}
        """)
        mod = make_module("uses03r", """
            from checkpoint import task
            import zoo03r
            from models03r import Base

            @task
            def main():
                def __():
                    return Base.registry["linear"]().predict(10) + Base.hooks[0](1)
                return __
        """)
        return code_fingerprint(mod.main.fn)[0]

    assert fingerprint(1) == fingerprint(1)
    assert fingerprint(1) != fingerprint(100)
    assert fingerprint(1) == fingerprint(1, memo=50)


def test_adv3_04_a_lambda_after_another_statement_on_its_line(make_module: Any) -> None:
    """``inc = lambda ...; dbl = lambda ...``: the lambda counts with its own statement, not
    with the first one of its line."""
    def fingerprint(inc: str, dbl: str) -> str:
        make_module("helpers04l", f"inc = lambda x: x + {inc}; dbl = lambda x: x * {dbl}\n")
        mod = make_module("uses04l", """
            from checkpoint import task
            from helpers04l import dbl

            @task
            def main():
                def __():
                    return dbl(5)
                return __
        """)
        return code_fingerprint(mod.main.fn)[0]

    assert fingerprint("1", "2") == fingerprint("1", "2")
    assert fingerprint("1", "2") != fingerprint("1", "3")
    assert fingerprint("1", "2") == fingerprint("7", "2")  # the other statement does not count


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_adv3_10_code_edited_while_a_task_ran_is_stale(make_module: Any, tmp_path: Path,
                                                        executor: str) -> None:
    """A module the task imports inside it, edited while the run goes on (``git checkout
    other-branch``) and restored afterwards: the task may have run either version, so its
    result is stored as stale, and the next run computes it again with the code as it is."""
    name = f"helpers10{executor[0]}"
    helpers, flag = tmp_path / f"{name}.py", tmp_path / f"{name}.flag"
    _rewrite(helpers, "def scale(i):\n    return i * 10\n")
    mod = make_module(f"uses10{executor[0]}", f"""
        from pathlib import Path
        from checkpoint import task

        @task
        def t():
            def __():
                if not Path({str(flag)!r}).exists():  # the first time only
                    Path({str(flag)!r}).touch()
                    Path({str(helpers)!r}).write_text("def scale(i):\\n    return i * 1000\\n")
                import {name}
                return {name}.scale(1)
            return __
    """)
    assert mod.t().run(executor=executor) == 1000   # computed with the other branch's code
    _rewrite(helpers, "def scale(i):\n    return i * 10\n")  # back: the fingerprint's code
    sys.modules.pop(name, None)                      # as in a new process
    assert mod.t().run(executor=executor) == 10


def test_code_without_source_has_one_fingerprint_whatever_references_its_constants() -> None:
    # marshal marks an object referenced more than once, so its output followed reference
    # counts: holding a function's constants elsewhere changed the fallback fingerprint.
    from checkpoint.fingerprint import code_bytes

    namespace: dict[str, object] = {}
    exec(compile("def f(x):\n    return x + 1.5 + 2.5\n", "<generated>", "exec"), namespace)
    fn = namespace["f"]
    before = code_bytes(fn)
    held = list(fn.__code__.co_consts)  # type: ignore[attr-defined]
    assert code_bytes(fn) == before
    namespace2: dict[str, object] = {}
    exec(compile("def f(x):\n    return x + 1.5 + 3.5\n", "<generated>", "exec"), namespace2)
    assert code_bytes(namespace2["f"]) != before
    assert held


# --- adv4 05: modules imported by a literal name (importlib.import_module("pkg.util")) ------

LITERAL_IMPORTS = {
    "import_module": ('import importlib', 'importlib.import_module("pkg{n}.util").h(1)'),
    "alias": ('import importlib as il', 'il.import_module("pkg{n}.util").h(1)'),
    "from_importlib": ('from importlib import import_module as load',
                       'load("pkg{n}.util").h(1)'),
    "relative": ('import importlib', 'importlib.import_module(".util", "pkg{n}").h(1)'),
    "relative_kw": ('import importlib',
                    'importlib.import_module(".util", package="pkg{n}").h(1)'),
    "stored": ('import importlib',
               '(util := importlib.import_module("pkg{n}.util")).h(1) + util.h(0)'),
    "dunder": ('', '__import__("pkg{n}.util").util.h(1)'),
    "dunder_fromlist": ('', '__import__("pkg{n}.util", fromlist=["h"]).h(1)'),
    "dunder_globals": ('', '__import__("pkg{n}.util", globals(), locals(), ["h"]).h(1)'),
    "local_importlib": ('', 'importlib.import_module("pkg{n}.util").h(1)', 'import importlib'),
    "local_from": ('', 'import_module("pkg{n}.util").h(1)', 'from importlib import import_module'),
    "for_side_effects": ('import importlib',
                         'importlib.import_module("pkg{n}.util") and __import__("pkg{n}.util").util.h(1)'),
}


@pytest.mark.parametrize("form", sorted(LITERAL_IMPORTS))
def test_adv4_05_a_module_imported_by_a_literal_name_counts(make_module: Any, tmp_path: Path,
                                                              form: str) -> None:
    """``importlib.import_module("pkg.util")`` (however importlib or the function is named),
    ``import_module(".util", "pkg")`` and ``__import__("pkg.util")`` inside a task name their
    module as ``import pkg.util`` does: its code counts (here the module is not loaded by the
    process that fingerprints, as in ``checkpoint run``), and there is no warning."""
    n = sorted(LITERAL_IMPORTS).index(form)
    head, call, *inner = LITERAL_IMPORTS[form]
    pkg = tmp_path / f"pkg{n}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    _rewrite(pkg / "util.py", "def h(x):\n    return x * 3\n")
    mod = make_module(f"literal05{n}", f"""
        {head}
        from checkpoint import task

        @task
        def main():
            def __():
                {"".join(inner)}
                return {call.format(n=n)}
            return __
    """)

    def fingerprint() -> str:
        for name in (f"pkg{n}", f"pkg{n}.util"):
            sys.modules.pop(name, None)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FingerprintWarning)
            return code_fingerprint(mod.main.fn, family=f"literal05{n}.main")[0]

    before = fingerprint()
    assert fingerprint() == before
    _rewrite(pkg / "util.py", "def h(x):\n    return x * 4\n")
    assert fingerprint() != before


def test_adv4_05_the_user_edits_a_module_imported_by_a_literal_name(tmp_path: Path) -> None:
    """The tester's steps: run, edit pkg/util.py, run again: the new value."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    _rewrite(tmp_path / "pkg" / "util.py", "def h(x):\n    return x * 3\n")
    (tmp_path / "taskfile.py").write_text(textwrap.dedent("""
        import importlib
        from checkpoint import task

        @task
        def main():
            def __():
                util = importlib.import_module("pkg.util")
                return util.h(1)
            return __
    """))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "checkpoint", "run", "--no-progress", "main"],
                              cwd=tmp_path, env=ENV, text=True, capture_output=True, timeout=120)

    first = run()
    assert (first.returncode, first.stdout.strip()) == (0, "3"), first.stderr
    assert "FingerprintWarning" not in first.stderr
    _rewrite(tmp_path / "pkg" / "util.py", "def h(x):\n    return x * 4\n")
    second = run()
    assert (second.returncode, second.stdout.strip()) == (0, "4"), second.stderr


def test_adv4_05_import_pkg_sub_inside_a_task_counts_the_submodule(make_module: Any,
                                                                  tmp_path: Path) -> None:
    """``import pkg.util`` inside the task, then ``pkg.util.h``, where the process that
    fingerprints has not loaded the package: the submodule's code counts, not only the
    package's ``__init__``."""
    (tmp_path / "pkg05i").mkdir()
    (tmp_path / "pkg05i" / "__init__.py").write_text("")
    _rewrite(tmp_path / "pkg05i" / "util.py", "def h(x):\n    return x * 3\n")
    mod = make_module("statement05", """
        from checkpoint import task

        @task
        def main():
            def __():
                import pkg05i.util
                return pkg05i.util.h(1)
            return __
    """)
    before = code_fingerprint(mod.main.fn)[0]
    _rewrite(tmp_path / "pkg05i" / "util.py", "def h(x):\n    return x * 4\n")
    assert code_fingerprint(mod.main.fn)[0] != before


@pytest.mark.parametrize("call", [
    'importlib.import_module(f"models.{kind}")',
    'importlib.import_module(".linear", package)',
    '__import__(kind)',
    '__import__("models.linear", globals(), locals(), [], level)',
])
def test_adv4_05_a_computed_name_still_warns(make_module: Any, call: str) -> None:
    """A name (or package, or level) known only when the code runs: the warning says so."""
    name = f"computed05{abs(hash(call)) % 10_000}"
    mod = make_module(name, f"""
        import importlib
        from checkpoint import task

        @task
        def main(kind: str, package: str = "models", level: int = 0):
            def __():
                return {call}
            return __
    """)
    with pytest.warns(FingerprintWarning, match=rf"{name}\.main imports modules by a name "
                      r"computed when it runs \((importlib\.import_module|__import__)\)"):
        code_fingerprint(mod.main.fn, family=f"{name}.main")
