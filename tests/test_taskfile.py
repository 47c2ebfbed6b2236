"""checkpoint.taskfile: finding, parsing targets, checking arguments, scanning names."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Optional, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint import TaskArgumentError, task
from checkpoint.errors import TargetSyntaxError, TaskfileNotFoundError
from checkpoint.taskfile import (
    Target,
    check_arguments,
    find_taskfile,
    parse_target,
    scan_family_names,
)


def _family(fn: Any) -> Any:
    return task(fn)


def test_find_taskfile_in_parents(tmp_path: Path) -> None:
    """find_taskfile should walk up from the start directory."""
    (tmp_path / "taskfile.py").write_text("")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_taskfile(start=deep) == tmp_path / "taskfile.py"
    with pytest.raises(TaskfileNotFoundError):
        find_taskfile(tmp_path / "nope.py")


literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(literals, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c"]), literals))
def test_parse_target_round_trip(args: list[Any], kwargs: dict[str, Any]) -> None:
    """Any literal arguments written with repr should parse back to the same values."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    target = parse_target(f"f({', '.join(parts)})")
    assert target.name == "f" and target.call
    assert list(target.args) == args and target.kwargs == kwargs


@pytest.mark.parametrize("text", ["f(", "f(x)", "f(1)(2)", "a.b(1)(2)", "a[0](1)", "f(*[1])", "1 + 2", "f(g())",
                                  "f(x=1, x=2)", "f(1, y=2, z=3, y=4)",
                                  "f(" + "-" * 3000 + "1)", "f(" + "[" * 300 + "]" * 300 + ")"])
def test_parse_target_rejects(text: str) -> None:
    """Non-literal or malformed targets should raise TargetSyntaxError with a caret."""
    with pytest.raises(TargetSyntaxError) as info:
        parse_target(text)
    assert "^" in str(info.value)


def test_parse_target_takes_full_names() -> None:
    """A family's full name (module.name, as the display shows it) parses as a name."""
    assert parse_target("taskfile.main") == Target("taskfile.main")
    assert parse_target("pkg.mod.f(1, k=2)") == Target("pkg.mod.f", (1,), {"k": 2}, call=True)


def test_check_arguments_simple_annotations() -> None:
    """Simple annotations should be checked; the message names the parameter and the signature."""

    def f(n: int, x: float, s: str, b: bool, items: list[int], d: dict[str, Any],
          o: Optional[int] = None, u: Union[int, str] = 0, p: int | None = None, anything: Any = None):  # noqa: UP045
        return lambda: None

    fam = _family(f)
    check_arguments(fam, (1, 2, "s", True, [1], {}), {"o": None, "u": "x", "p": 3, "anything": {1}})
    check_arguments(fam, (1, 2.5, "s", False, [], {"a": 1}), {})
    for args, kwargs, name in [
        (("1", 2, "s", True, [], {}), {}, "n"),
        ((True, 2, "s", True, [], {}), {}, "n"),
        ((1, "2", "s", True, [], {}), {}, "x"),
        ((1, 2, 3, True, [], {}), {}, "s"),
        ((1, 2, "s", 1, [], {}), {}, "b"),
        ((1, 2, "s", True, {}, {}), {}, "items"),
        ((1, 2, "s", True, [], []), {}, "d"),
        ((1, 2, "s", True, [], {}), {"o": "x"}, "o"),
        ((1, 2, "s", True, [], {}), {"u": 1.5}, "u"),
        ((1, 2, "s", True, [], {}), {"p": "x"}, "p"),
    ]:
        with pytest.raises(TaskArgumentError) as info:
            check_arguments(fam, args, kwargs)
        assert f"Argument {name!r} of task f must be" in str(info.value)
        assert "Its signature is f(n: int" in str(info.value)


def test_check_arguments_string_annotations(tmp_path: Path) -> None:
    """Annotations written as strings (from __future__ import annotations) should be checked too."""
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent("""
        from __future__ import annotations
        import typing
        def g(n: int, m: typing.Optional[float], k: list[int] | None, z: SomeClass = None):
            return lambda: None
    """), namespace)
    fam = _family(namespace["g"])
    check_arguments(fam, (1, None, None, object()), {})
    with pytest.raises(TaskArgumentError, match="'m' of task g must be float or None, not str"):
        check_arguments(fam, (1, "x", None), {})
    with pytest.raises(TaskArgumentError, match="'k' of task g must be list or None, not dict"):
        check_arguments(fam, (1, 1, {}), {})


def test_check_arguments_binding() -> None:
    """Arguments that do not bind should name the problem and the signature."""

    def h(a, *rest, key: int = 0):
        return lambda: None

    fam = _family(h)
    check_arguments(fam, (1, 2, 3), {"key": 4})
    with pytest.raises(TaskArgumentError, match=r"Wrong arguments for task h: missing"):
        check_arguments(fam, (), {})


def test_a_misspelt_keyword_is_named_first() -> None:
    """`fit(alpah=1.0)`: the typo is the problem, not the missing 'alpha' it leads to."""

    def fit(alpha: float, depth: int = 3):
        return lambda: None

    with pytest.raises(TaskArgumentError, match=r"fit: unknown argument 'alpah' "
                       r"\(did you mean 'alpha'\?\)\. Its signature is fit\(alpha: float"):
        check_arguments(_family(fit), (), {"alpah": 1.0})
    with pytest.raises(TaskArgumentError, match=r"Wrong arguments for task .*fit: unknown argument 'alpah'"):
        _family(fit)(alpah=1.0)


def test_scan_family_names(tmp_path: Path) -> None:
    """scan_family_names should find @task functions without importing the file."""
    path = tmp_path / "taskfile.py"
    path.write_text(textwrap.dedent("""
        import checkpoint, nonexistent_module_that_would_fail
        from checkpoint import task
        @task
        def a(): ...
        @task(queue="q")
        def b(): ...
        @checkpoint.task
        def c(): ...
        def plain(): ...
        @task
        def _private(): ...
        d = task(plain)
    """))
    assert scan_family_names(path) == ["a", "b", "c", "d"]
    path.write_text("def (:\n")
    assert scan_family_names(path) == []


def test_scan_family_names_classes_and_siblings(tmp_path: Path) -> None:
    """Class tasks and families imported from sibling modules should be found too."""
    (tmp_path / "helpers.py").write_text(textwrap.dedent("""
        from checkpoint import task
        @task
        def train(x): ...
        @task
        class Evaluate: ...
        def plain(): ...
    """))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from checkpoint import task\n@task\ndef deep(): ...\n")
    path = tmp_path / "taskfile.py"
    path.write_text(textwrap.dedent("""
        import helpers
        import os
        from checkpoint import task
        from helpers import train as fit, plain
        from pkg import deep
        from missing_module import ghost
        @task
        class Report: ...
        evaluate = helpers.Evaluate
        other = helpers.plain
        sep = os.sep
    """))
    assert scan_family_names(path) == ["Report", "deep", "evaluate", "fit"]


def test_import_error_keeps_frames_of_a_project_named_like_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A taskfile in a directory whose name starts like checkpoint's own should keep its frames."""
    import checkpoint.taskfile as taskfile_module
    from checkpoint.errors import TaskfileImportError
    from checkpoint.taskfile import load_taskfile

    monkeypatch.setattr(taskfile_module, "__file__", str(tmp_path / "checkpoint" / "taskfile.py"))
    project = tmp_path / "checkpoint_demo"
    project.mkdir()
    path = project / "demo_tasks.py"
    path.write_text("def f():\n    raise KeyError('x')\n\nf()\n")
    with pytest.raises(TaskfileImportError) as info:
        load_taskfile(path)
    assert f'File "{path}", line 4, in <module>' in str(info.value)
    assert f'File "{path}", line 2, in f' in str(info.value)


def test_errors_about_a_module_the_project_shares_with_the_stdlib_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ImportError or AttributeError about a module that a project module shares its name
    with (queue.py) should be explained as such; one about another module should not."""
    import types

    import checkpoint.taskfile as taskfile_module
    from checkpoint.taskfile import shadowing_message

    (tmp_path / "queue.py").write_text("")
    (tmp_path / "string").mkdir()
    (tmp_path / "string" / "__init__.py").write_text("")
    monkeypatch.setattr(taskfile_module, "_project_dirs", [str(tmp_path)])
    lazy = ImportError("cannot import name 'Empty' from 'queue'", name="queue",
                       path=str(tmp_path / "queue.py"))
    assert shadowing_message(lazy).startswith(
        f"The project's queue.py ({tmp_path / 'queue.py'}) has the name of the standard-library "
        "module 'queue', which checkpoint or a library it uses needs")
    wrapped = RuntimeError("while importing")
    wrapped.__cause__ = AttributeError("no Template", name="Template", obj=types.ModuleType("string"))
    assert "The project's string (" in shadowing_message(wrapped)
    assert shadowing_message(AttributeError("x", name="y", obj=types.ModuleType("logging"))) == ""
    assert shadowing_message(ImportError("x", name="mylib")) == ""
    assert shadowing_message(ValueError("queue")) == ""


def test_cli_explains_an_import_of_a_project_module_named_like_the_stdlib(
    tmp_path: Path, runner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's outer function that imports the project's queue.py (which the standard one
    shadows, since checkpoint needs it) should get an error that says so, exit 2."""
    import checkpoint.taskfile as taskfile_module
    from checkpoint.cli import cli

    monkeypatch.setattr(taskfile_module, "_project_dirs", [])
    (tmp_path / "queue.py").write_text("JOBS = []\n")
    (tmp_path / "taskfile.py").write_text(textwrap.dedent("""
        from checkpoint import task

        @task
        def main():
            from queue import JOBS
            def __():
                return JOBS
            return __
    """))
    monkeypatch.syspath_prepend(str(tmp_path))  # (load_taskfile's insertion, undone after)
    result = runner.invoke(cli, ["run", "main"])
    assert result.exit_code == 2, result.output
    assert "Error: The project's queue.py (" in result.stderr
    assert "ImportError: cannot import name 'JOBS' from 'queue'" in result.stderr
