"""Find and import a taskfile; turn target expressions like ``choose(6, 3)`` into tasks.

Targets are parsed with :mod:`ast` and their arguments must be literals
(:func:`ast.literal_eval`): nothing from the command line is ever evaluated as code.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
import traceback
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import (
    TargetSyntaxError,
    TaskArgumentError,
    TaskfileImportError,
    TaskfileNotFoundError,
    UnknownTaskError,
)
from .task import Task, TaskFamily, binding_problem, signature_text

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
                    f"{str(path)!r} is a directory without a {DEFAULT_NAME}. Name the taskfile "
                    f"itself (e.g. {os.path.join(str(path), 'tasks.py')}), or create "
                    f"{DEFAULT_NAME} there."
                )
        if not candidate.is_file():
            # (Given with -f, or as `python -m checkpoint FILE`: the message names neither.)
            raise TaskfileNotFoundError(
                f"Taskfile {str(path)!r} not found: there is no such file in {Path.cwd()}."
                if not candidate.is_absolute() else
                f"Taskfile {str(path)!r} not found: there is no such file."
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
    if path.stem in sys.stdlib_module_names:
        raise TaskfileImportError(
            f"The taskfile {path.name} has the name of the standard-library module "
            f"{path.stem!r}: with its directory first on sys.path, it would be imported in place "
            f"of that module (by Python itself and by the libraries you use). Rename it, e.g. "
            f"{path.stem}_tasks.py."
        )
    directory = str(path.parent)
    if directory not in _project_dirs:
        _project_dirs.append(directory)
    if directory not in sys.path:
        _import_needed_first(directory)
        sys.path.insert(0, directory)
    name = path.stem if path.stem.isidentifier() else "taskfile"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Marks the module for remote executors, which pickle its code by value (see _dask.py).
    module.__checkpoint_taskfile__ = True  # type: ignore[attr-defined]
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
        # Directories end with a separator: a project at .../checkpoint_demo/ is not ours.
        hidden = (str(Path(importlib.__file__).parent) + os.sep, str(Path(__file__).parent) + os.sep)
        own = [f for f in frames if not f.filename.startswith(hidden) and not f.filename.startswith("<frozen")]
        text = "".join(traceback.format_list(own)) + "".join(
            traceback.format_exception_only(type(exc), exc)
        )
        hint = shadowing_message(exc)
        raise TaskfileImportError(
            f"The taskfile {path} raised an error while being imported:\n{text.rstrip()}"
            + (f"\n{hint}" if hint else "")
        ) from exc
    return module


_NEEDED_LATER = (
    "concurrent.futures.process", "concurrent.futures.thread", "multiprocessing.queues",
    "multiprocessing.synchronize", "multiprocessing.popen_fork", "multiprocessing.connection",
    "bdb", "colorsys", "contextvars", "faulthandler", "heapq", "logging", "pickletools",
    "queue", "select", "selectors", "socket", "string", "subprocess", "sysconfig", "tempfile",
)
"""Standard-library modules that checkpoint (its executors, the live display, the debugger)
imports after the taskfile, with theirs (measured on ``checkpoint run`` with each executor)."""
_project_dirs: list[str] = []
"""The directories :func:`load_taskfile` put on ``sys.path``."""


def _import_needed_first(directory: str) -> None:
    """If ``directory`` (about to go first on ``sys.path``) has modules named like
    standard-library modules, import those checkpoint needs later now, while Python still
    finds the standard ones: a project's ``queue.py`` or ``logging.py`` would otherwise be
    imported in their place by checkpoint's process pool. (The project's module of that name
    then cannot be imported: :func:`shadowing_message` says so when that fails.)"""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    stdlib = sys.stdlib_module_names
    if not any(
        n[:-3] in stdlib if n.endswith(".py")
        else n in stdlib and os.path.isfile(os.path.join(directory, n, "__init__.py"))
        for n in names
    ):
        return  # the usual case: one listdir
    for module in _NEEDED_LATER:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001,S112 - not on this platform: nothing to protect
            continue


def shadowing_message(exc: BaseException | None) -> str:
    """What to say when ``exc`` (or an exception it came from) failed to import a module, or
    to find a name in one, that a project module shares with the standard library (Python
    imports one of them in place of the other); ``""`` when it did not."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError):
            name = exc.name or ""
        else:
            obj = getattr(exc, "obj", None) if isinstance(exc, AttributeError) else None
            name = obj.__name__ if isinstance(obj, ModuleType) else ""
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names:
            for directory in _project_dirs:
                for own in (os.path.join(directory, f"{top}.py"), os.path.join(directory, top)):
                    if os.path.isfile(own) or os.path.isfile(os.path.join(own, "__init__.py")):
                        return (
                            f"The project's {os.path.basename(own)} ({own}) has the name of the "
                            f"standard-library module {top!r}, which checkpoint or a library it "
                            "uses needs: Python cannot import both under one name. Rename the "
                            f"project's module (e.g. {top}_utils) and the imports of it."
                        )
        exc = exc.__cause__ or exc.__context__
    return ""


def families(module: ModuleType) -> dict[str, TaskFamily[..., object]]:
    """The task families a taskfile defines or imports, by the name it gives them."""
    return {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, TaskFamily) and not name.startswith("_")
    }


def loaded_families() -> list[TaskFamily[..., object]]:
    """Every task family of every imported module (the taskfile's and its helpers')."""
    found: dict[str, TaskFamily[..., object]] = {}
    for module in list(sys.modules.values()):
        for value in list(getattr(module, "__dict__", {}).values()):
            if isinstance(value, TaskFamily):
                found.setdefault(value.dirname, value)
    return list(found.values())


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
    if not source:
        raise TargetSyntaxError(
            f"Bad target {text!r}: it is empty. Name a task, as in main or 'choose(6, 3)'; "
            "run 'checkpoint ls' to list tasks."
        )
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise TargetSyntaxError(_pointed(text, exc.offset, f"invalid syntax ({exc.msg})")) from None
    except (RecursionError, MemoryError):
        raise TargetSyntaxError(
            _pointed(text, 1, "it is nested too deeply to be parsed; write the arguments flatter")
        ) from None
    except ValueError as exc:  # e.g. a NUL character
        raise TargetSyntaxError(_pointed(text, 1, str(exc))) from None
    node = tree.body
    name = _dotted(node)
    if name is not None:
        return Target(name)
    func = node.func if isinstance(node, ast.Call) else None
    name = _dotted(func) if func is not None else None
    if not isinstance(node, ast.Call) or name is None:
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
        if kw.arg in kwargs:  # as Python says (its parser accepts it; the compiler does not)
            raise TargetSyntaxError(_pointed(text, kw.col_offset + 1, f"keyword argument repeated: {kw.arg}"))
        kwargs[kw.arg] = _literal(text, kw.value)
    return Target(name, tuple(args), kwargs, call=True)


def _dotted(node: ast.expr) -> str | None:
    """``name`` or ``module.name`` (the full name the display shows), else ``None``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


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


def resolve_target(
    module: ModuleType, text: str, *, taskfile: Path | None = None, listing: str = "checkpoint ls"
) -> Task[object]:
    """Turn a target expression into a task handle of the taskfile's families (``listing``:
    see :func:`get_family`).

    Raises:
        TargetSyntaxError, UnknownTaskError, TaskArgumentError: bad input, with a hint.
    """
    target = parse_target(text)
    family = get_family(module, target.name, taskfile=taskfile, listing=listing)
    check_arguments(family, target.args, target.kwargs or {})
    return family(*target.args, **(target.kwargs or {}))


def resolve_targets(
    module: ModuleType, texts: Sequence[str], *, taskfile: Path | None = None,
    listing: str = "checkpoint ls",
) -> list[Task[object]]:
    """:func:`resolve_target` for each text, in order (one DAG when run together)."""
    return [resolve_target(module, text, taskfile=taskfile, listing=listing) for text in texts]


def get_family(
    module: ModuleType, name: str, *, taskfile: Path | None = None, listing: str = "checkpoint ls"
) -> TaskFamily[..., object]:
    """The taskfile's family called ``name``.

    ``listing`` is the command that lists the tasks, as the hint should spell it (with the
    ``-f`` that was given, say).

    Raises:
        UnknownTaskError: there is none (close matches are suggested).
    """
    known = families(module)
    family = known.get(name)
    if family is None and "." in name:  # the full name, as the display shows it
        family = next((f for f in known.values() if f.name == name), None)
    if family is None:
        where = f" in {taskfile}" if taskfile else ""
        import difflib  # only for a misspelled name

        close = difflib.get_close_matches(name.rpartition(".")[2], list(known), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        if not known:
            raise UnknownTaskError(
                f"Unknown task {name!r}{where}: it defines no task. Decorate a function with "
                "@task (from checkpoint import task), or name another taskfile with -f."
            )
        if listing == "checkpoint ls":
            raise UnknownTaskError(
                f"Unknown task {name!r}{where}.{hint} Run 'checkpoint ls' to list tasks."
            )
        raise UnknownTaskError(f"Unknown task {name!r}{where}.{hint} Run '{listing}' to list tasks.")
    return family


# --- argument checking -------------------------------------------------------------------

_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list,),
    "List": (list,),
    "dict": (dict,),
    "Dict": (dict,),
    "tuple": (tuple,),
    "Tuple": (tuple,),
    "None": (type(None),),
    "NoneType": (type(None),),
}


def _accepted_types(annotation: Any) -> tuple[type, ...] | None:
    """The types a simple annotation accepts, or ``None`` when it is not simple enough."""
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        try:
            node = ast.parse(annotation, mode="eval").body
        except SyntaxError:
            return None
        return _accepted_from_ast(node)
    if annotation is None or annotation is type(None):
        return (type(None),)
    if isinstance(annotation, type) and annotation.__name__ in _SIMPLE_TYPES and annotation.__module__ == "builtins":
        return _SIMPLE_TYPES[annotation.__name__]
    origin = typing.get_origin(annotation)
    if origin in (list, dict, tuple):
        return _SIMPLE_TYPES[origin.__name__]
    if origin is typing.Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        accepted: list[type] = []
        for arg in typing.get_args(annotation):
            sub = _accepted_types(arg)
            if sub is None:
                return None
            accepted.extend(sub)
        return tuple(accepted)
    return None


def _accepted_from_ast(node: ast.expr) -> tuple[type, ...] | None:
    if isinstance(node, ast.Constant) and node.value is None:
        return (type(None),)
    if isinstance(node, ast.Name):
        return _SIMPLE_TYPES.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("typing", "t"):
        return _accepted_from_ast(ast.Name(node.attr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _accepted_from_ast(node.left), _accepted_from_ast(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.Subscript):
        head = node.value
        name = head.attr if isinstance(head, ast.Attribute) else head.id if isinstance(head, ast.Name) else ""
        if name == "Optional":
            inner = _accepted_from_ast(node.slice)
            return None if inner is None else (*inner, type(None))
        if name == "Union" and isinstance(node.slice, ast.Tuple):
            accepted: list[type] = []
            for elt in node.slice.elts:
                sub = _accepted_from_ast(elt)
                if sub is None:
                    return None
                accepted.extend(sub)
            return tuple(accepted)
        return _SIMPLE_TYPES.get(name) if name in ("list", "List", "dict", "Dict", "tuple", "Tuple") else None
    return None


def _type_name(types_: tuple[type, ...]) -> str:
    names: list[str] = []
    for t in types_:
        name = "None" if t is type(None) else t.__name__
        if name not in names and not (name == "int" and float in types_):
            names.append(name)
    return " or ".join(names)


def check_arguments(family: TaskFamily[..., object], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Check target arguments against the family's simple annotations.

    Simple annotations are ``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``,
    ``tuple`` (parametrized or not), and ``Optional``/unions of those; anything else is
    not checked. A float parameter accepts an int; an int parameter does not accept a bool.

    Raises:
        TaskArgumentError: an argument does not fit (the message names the parameter and
            shows the signature), or the arguments do not bind to the signature.
    """
    signature = family.signature
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise TaskArgumentError(
            f"Wrong arguments for task {family.short_name}: "
            f"{binding_problem(signature, kwargs, exc)}. "
            f"Its signature is {family.short_name}{signature_text(signature)}."
        ) from None
    for name, value in bound.arguments.items():
        param = signature.parameters[name]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        accepted = _accepted_types(param.annotation)
        if accepted is None:
            continue
        ok = isinstance(value, accepted) and not (
            isinstance(value, bool) and bool not in accepted
        )
        if not ok:
            raise TaskArgumentError(
                f"Argument {name!r} of task {family.short_name} must be {_type_name(accepted)}, "
                f"not {type(value).__name__} ({value!r}). "
                f"Its signature is {family.short_name}{signature_text(signature)}."
            )


# --- reading family names without importing ------------------------------------------------


def scan_family_names(path: Path) -> list[str]:
    """Names of the task families a taskfile defines, read with :mod:`ast` (no import).

    Used by shell completion, which must stay fast. Found: functions and classes decorated
    with ``@task``, ``@task(...)`` or ``@checkpoint.task``; ``name = task(fn)``; and
    families taken from a sibling module (``from helpers import train``, ``import helpers``
    then ``train = helpers.train``), whose file is read the same way. Families built in
    other ways are found only by ``checkpoint ls``, which imports the taskfile.
    """
    return sorted(n for n in _scan(path, 0) if not n.startswith("_"))


def _scan(path: Path, depth: int) -> set[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    modules: dict[str, str] = {}  # local name -> sibling module name

    def sibling(module: str) -> set[str]:
        if depth >= 2:
            return set()
        base = path.parent.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return _scan(candidate, depth + 1)
        return set()

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if any(_is_task_decorator(d) for d in node.decorator_list):
                names.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            wanted = {alias.name: alias.asname or alias.name for alias in node.names}
            if node.module.split(".")[0] != "checkpoint":
                found = sibling(node.module)
                names.update(local for name, local in wanted.items() if name in found)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Assign):
            value = node.value
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(value, ast.Call) and (
                _is_task_decorator(value.func) or _is_task_decorator(value)
            ):
                names.update(targets)
            elif (isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
                  and value.value.id in modules and value.attr in sibling(modules[value.value.id])):
                names.update(targets)
    return names


def _is_task_decorator(node: ast.expr) -> bool:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id == "task"
    return isinstance(node, ast.Attribute) and node.attr == "task"
