"""Find and import a taskfile; turn target expressions like ``choose(6, 3)`` into tasks.

Targets are parsed with :mod:`ast` and their arguments must be literals
(:func:`ast.literal_eval`): nothing from the command line is ever evaluated as code.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import TargetSyntaxError, TaskfileImportError, TaskfileNotFoundError, UnknownTaskError
from .task import Task, TaskFamily

DEFAULT_NAME = "taskfile.py"


def find_taskfile(path: str | Path | None = None, start: Path | None = None) -> Path:
    """The taskfile to use: ``path`` if given, else ``taskfile.py`` here or in a parent.

    Raises:
        TaskfileNotFoundError: there is no such file.
    """
    if path is not None:
        candidate = Path(path)
        if candidate.is_dir():
            candidate = candidate / DEFAULT_NAME
        if not candidate.is_file():
            raise TaskfileNotFoundError(
                f"Taskfile {str(path)!r} not found. Check the path given to -f/--file."
            )
        return candidate.resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / DEFAULT_NAME
        if candidate.is_file():
            return candidate
    raise TaskfileNotFoundError(
        f"No {DEFAULT_NAME} in {here} or its parents. Create one that defines your tasks, "
        "or name it with -f/--file PATH."
    )


def load_taskfile(path: Path) -> ModuleType:
    """Import a taskfile as a module named after its file, with its directory on ``sys.path``.

    Its directory goes first on ``sys.path`` so that sibling modules import, and the module
    is registered in ``sys.modules`` so that worker processes can find its functions.

    Raises:
        TaskfileImportError: the taskfile raised while being imported (with its traceback).
    """
    path = path.resolve()
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem if path.stem.isidentifier() else "taskfile"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        frames = traceback.extract_tb(exc.__traceback__)
        own = [f for f in frames if not f.filename.startswith(str(Path(importlib.__file__).parent))]
        text = "".join(traceback.format_list(own)) + "".join(
            traceback.format_exception_only(type(exc), exc)
        )
        raise TaskfileImportError(
            f"The taskfile {path} raised an error while being imported:\n{text.rstrip()}"
        ) from exc
    return module


def families(module: ModuleType) -> dict[str, TaskFamily[Any, Any]]:
    """The task families a taskfile defines or imports, by the name it gives them."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, TaskFamily) and not name.startswith("_")
    }


@dataclass(frozen=True)
class Target:
    """A parsed target expression: ``name(*args, **kwargs)``."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    call: bool = False
    """Whether the expression had parentheses."""


def parse_target(text: str) -> Target:
    """Parse ``name``, ``name(1, 'a')`` or ``name(n=6, k=[1, 2])`` with literal arguments.

    Raises:
        TargetSyntaxError: the text is not such an expression (the message shows where).
    """
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise TargetSyntaxError(_pointed(text, exc.offset, f"invalid syntax ({exc.msg})")) from None
    node = tree.body
    if isinstance(node, ast.Name):
        return Target(node.id)
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise TargetSyntaxError(
            _pointed(text, node.col_offset + 1, "a target is a task name or a call like name(1, 'a')")
        )
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for arg in node.args:
        args.append(_literal(text, arg))
    for kw in node.keywords:
        if kw.arg is None:
            raise TargetSyntaxError(_pointed(text, kw.value.col_offset + 1, "**kwargs are not allowed"))
        kwargs[kw.arg] = _literal(text, kw.value)
    return Target(node.func.id, tuple(args), kwargs, call=True)


def _literal(text: str, node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise TargetSyntaxError(
            _pointed(text, node.col_offset + 1, "arguments must be literals (numbers, strings, "
                     "True/False/None, lists, tuples, dicts)")
        ) from None


def _pointed(text: str, offset: int | None, why: str) -> str:
    col = max(1, offset or 1)
    return f"Bad target {text!r}: {why}.\n  {text}\n  {' ' * (col - 1)}^"


def resolve_target(module: ModuleType, text: str, *, taskfile: Path | None = None) -> Task[Any]:
    """Turn a target expression into a task handle of the taskfile's families.

    Raises:
        TargetSyntaxError, UnknownTaskError, TaskArgumentError: bad input, with a hint.
    """
    target = parse_target(text)
    known = families(module)
    family = known.get(target.name)
    if family is None:
        where = f" in {taskfile}" if taskfile else ""
        close = difflib.get_close_matches(target.name, list(known), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownTaskError(
            f"Unknown task {target.name!r}{where}.{hint} Run 'checkpoint ls' to list tasks."
        )
    return family(*target.args, **(target.kwargs or {}))
