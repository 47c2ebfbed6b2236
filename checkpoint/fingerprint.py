"""Code fingerprints: the normalized source of a task and of everything its code reads.

A family's fingerprint hashes a text made of, in order:

1. the normalized source of the task (its outer function, or its whole class body): parsed
   and unparsed with :mod:`ast`, so comments, formatting and docstrings do not count;
2. for each *global* the code reads (found in the compiled code, so locals, parameters,
   closures, the nested ``__`` and comprehension variables never count), what it is bound to,
   followed transitively:

   * a function or class of the project: its normalized source, and what *it* reads;
   * a module of the project (``import features; features.scale``): the attributes read
     through it, or its whole normalized source when the module itself is passed around;
   * a value: a canonical text (literals, containers, dataclasses, ``SimpleNamespace``,
     NumPy arrays), else a digest of a deterministic pickle (sets sorted, arrays hashed,
     functions and classes by name), else the source of its assignment in the module;
   * functions, classes and modules from elsewhere (the standard library, installed
     packages, checkpoint itself) and other task families are not followed;
   * code run by ``eval``/``exec``/``compile`` from a string written out or a module-level
     string: what it reads (any other string warns);

3. the statements at the top of each module taken in that seed a global random generator
   (``np.random.seed(0)``), with what they read (see :meth:`_Walk.add_seed_statements`).

"The project" is the directory tree of the family's module (its import root: the taskfile's
directory, the folder of a script, the working directory of a notebook), and any other code
that is not installed (a library of yours imported from elsewhere: ``sys.path.insert(0, "..")``,
an editable install), minus anything under ``site-packages``/``dist-packages``, the
interpreter's own directories or checkpoint's.

A value that cannot be fingerprinted in any of these ways gets a :class:`FingerprintWarning`
(once per process) naming the global, the task and the fix: ``@task(version=...)``.

What depends only on code is cached: what compiled code reads, by code object; normalized
sources, by file version, in this process and on disk (see :mod:`checkpoint._sources`).
Values are read afresh each time a fingerprint is computed (once per run).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import io
import marshal
import os
import sys
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from functools import lru_cache, partial
from pathlib import PurePath
from typing import Any, cast

from . import _sources
from ._sources import UNKNOWN, Read
from .errors import StaleModuleError

__all__ = ["FingerprintWarning", "code_fingerprint"]


class FingerprintWarning(UserWarning):
    """A global that a task reads cannot be fingerprinted: changing it would not re-run the
    task. Pin the task's code with ``@task(version=...)`` and bump the version when it changes."""


# --- normalized source -------------------------------------------------------------------


def normalized_source(obj: Callable[..., object], *, strip_decorators: bool,
                      unwrap: bool = True) -> tuple[str, list[Read]] | None:
    """``(text, def-time reads)`` of a function's or class's source without comments,
    formatting and docstrings (and decorators, if asked), or ``None`` when the source is not
    available. The reads are what its def or class statement reads when it runs. A
    ``functools.wraps`` wrapper gives the source of the function it wraps, unless ``unwrap``
    is false: then its own."""
    if isinstance(obj, type):
        module = sys.modules.get(obj.__module__)
        filename = getattr(module, "__file__", None)
        method = next(_class_functions(obj), None)
        line = 0
        if method is not None and (not filename or method.__code__.co_filename == filename):
            filename, line = method.__code__.co_filename, method.__code__.co_firstlineno
        key: tuple[object, ...] = ("class", obj.__qualname__, line, strip_decorators)
        namespace = vars(module) if module is not None else None
    else:
        code = getattr(inspect.unwrap(obj) if unwrap else obj, "__code__", None)
        if not isinstance(code, types.CodeType):
            return None
        filename = code.co_filename
        key = ("def", code.co_name, code.co_firstlineno, strip_decorators)
        namespace = getattr(obj, "__globals__", None)
    idx = _sources.index(filename, namespace) if isinstance(filename, str) and filename else None
    found = idx.get(key) if idx is not None else None
    return found if found is not None else _getsource(obj, strip_decorators, unwrap)


def _getsource(obj: Callable[..., object], strip_decorators: bool, unwrap: bool = True) -> tuple[str, list[Read]] | None:
    """The slow way, for what the index does not find (a lambda, a function made by exec)."""
    import textwrap

    target = obj if unwrap else getattr(obj, "__code__", obj)
    try:
        lines, first = inspect.getsourcelines(target)
        source = "".join(lines)
        dedented = textwrap.dedent(source)
        tree = ast.parse(dedented)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if not tree.body:
        return None
    node = tree.body[0]
    code = getattr(inspect.unwrap(target) if callable(target) else target, "__code__", target)
    if isinstance(code, types.CodeType) and code.co_name == "<lambda>":
        # The source is the lambda's whole line, which may hold other statements before it
        # (``inc = lambda x: x + 1; dbl = lambda x: x * 2``): take the one that holds it.
        margin = len(lines[0]) - len(dedented.splitlines(keepends=True)[0])
        found = _statement_of_lambda(tree, code, first, margin)
        if found is None:
            return None  # not to be told apart: the compiled code counts instead
        node = found
    if strip_decorators and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        node.decorator_list = []
    _sources.strip_docstrings(node)
    return ast.unparse(node), _sources.def_time_reads(node)


def _statement_of_lambda(tree: ast.Module, code: types.CodeType, first: int,
                         margin: int) -> ast.stmt | None:
    """The statement of ``tree`` (the source from line ``first`` of the file, dedented by
    ``margin`` columns) that holds the lambda compiled to ``code`` (where its first
    instruction is), or ``None`` when that cannot be known."""
    if len(tree.body) == 1:
        return tree.body[0]
    positions = getattr(code, "co_positions", None)  # Python 3.11+
    spans = [p for p in positions() if None not in p and (p[0], p[2]) != (p[1], p[3])] if positions else []
    if not spans:
        return None  # Python 3.10, or python -X no_debug_ranges
    line, end_line, col, end_col = spans[0]
    start, end = (line - first + 1, col - margin), (end_line - first + 1, end_col - margin)
    return next((stmt for stmt in tree.body if (stmt.lineno, stmt.col_offset) <= start
                 and end <= (stmt.end_lineno or 0, stmt.end_col_offset or 0)), None)


def code_bytes(fn: object) -> str:
    """Fallback when no source is available (e.g. a function built by exec): a digest of its
    compiled code, the same in every process (not ``marshal``, whose output follows
    reference counts)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    from ._bytecode import code_digest

    return code_digest(code)


# --- constants and values ----------------------------------------------------------------

_CONSTANT_TYPES = (str, int, float, bool, type(None), bytes, complex, range, PurePath)


_unordered: ContextVar[bool] = ContextVar("_unordered", default=False)
"""Set while a value's text is made to compare it with another process's: dicts are written
with their items sorted, as sets are (see :func:`comparable_text`)."""


def constant_text(value: object, depth: int = 0, roots: tuple[str, ...] = ()) -> str | None:
    """``repr(value)`` for a constant worth fingerprinting, else ``None``.

    Sets are written with their elements sorted: their own order depends on the process's
    hash seed, which would make the fingerprint differ from one run to the next. A path (or
    ``str``) inside the project, whose directory (with a trailing separator) is in
    ``roots``, is written relative to it, so that moving the project changes nothing.
    """
    if isinstance(value, _CONSTANT_TYPES):
        return _project_path(value, roots) if roots else repr(value)
    if depth >= 3 or not isinstance(value, (tuple, list, set, frozenset, dict)) or len(value) > 1000:
        return None
    parts = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
    texts = [constant_text(v, depth + 1, roots) for v in parts]
    if any(text is None for text in texts):
        return None
    if isinstance(value, (set, frozenset)):
        inner = "{" + ", ".join(sorted(str(t) for t in texts)) + "}" if texts else ""
        return inner if type(value) is set and texts else f"{type(value).__name__}({inner})"
    if isinstance(value, dict) and len(value) > 1 and _unordered.get():
        n = len(value)
        return "{" + ", ".join(sorted(f"{k}: {v}" for k, v in zip(texts[:n], texts[n:], strict=True))) + "}"
    if all(text == repr(v) for text, v in zip(texts, parts, strict=True)):
        return repr(value)  # as it always was (a namedtuple keeps its field names)
    if isinstance(value, dict):  # a set inside: spelled out with its elements sorted
        n = len(value)
        return "{" + ", ".join(f"{k}: {v}" for k, v in zip(texts[:n], texts[n:], strict=True)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, texts)) + (",)" if len(texts) == 1 else ")")
    return "[" + ", ".join(map(str, texts)) + "]"


def _project_path(value: object, roots: tuple[str, ...]) -> str:
    """``repr(value)``, a path in the project spelled relative to it: ``project('data.csv')``
    or ``PosixPath(project('data.csv'))``."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, PurePath):
        text = str(value)
    else:
        return repr(value)
    for root in roots:
        if text.startswith(root) or text == root[:-1]:
            rel = f"project({text[len(root):]!r})"
            return rel if isinstance(value, str) else f"{type(value).__name__}({rel})"
    return repr(value)


_CODE_TYPES = (
    types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.ModuleType, type,
    types.MethodDescriptorType, types.WrapperDescriptorType, types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
_LONG_TEXT = 2000


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _is_array(value: object) -> bool:
    """A NumPy array or scalar whose bytes are its value (no Python objects inside)."""
    kind = type(value)
    return (
        kind.__module__ == "numpy"
        and hasattr(value, "tobytes")
        and not getattr(getattr(value, "dtype", None), "hasobject", True)
    )


def _array_text(value: Any) -> str:  # (a NumPy array: see _is_array)
    dtype, shape = value.dtype, getattr(value, "shape", ())
    if shape == ():
        return f"numpy.{type(value).__name__}({value.item()!r})"
    try:  # hash the array's own memory when it is one block (no copy)
        data: bytes | memoryview = memoryview(value).cast("B")
    except (TypeError, ValueError):
        data = value.tobytes()
    return f"numpy.ndarray(dtype={dtype.str}, shape={tuple(shape)}, blake2b={_digest(data)})"


def _stateful(value: object) -> bool:
    """Values whose pickled state changes as they are used (or that are not data at all):
    their assignment's source identifies them better."""
    if isinstance(value, (io.IOBase, types.GeneratorType, types.CoroutineType)):
        return True
    random = sys.modules.get("random")
    if random is not None and isinstance(value, random.Random):
        return True
    return type(value).__module__.startswith("numpy.random")


# --- what code reads ---------------------------------------------------------------------

_reads_cache: dict[types.CodeType, tuple[Read, ...]] = {}


def code_reads(code: types.CodeType) -> tuple[Read, ...]:
    """The globals a function's code (nested functions, lambdas, classes and comprehensions
    included) reads, with the attributes read on them, and the modules it imports inside."""
    cached = _reads_cache.get(code)
    if cached is not None:
        return cached
    # Kept with the file's other entries: a warm run disassembles nothing. Name, line, the
    # names it uses and its length tell apart code objects of one version of one file.
    idx = _sources.index(code.co_filename)
    key = ("reads", code.co_name, code.co_firstlineno, code.co_names, len(code.co_code))
    if idx is not None:
        stored = idx.entries.get(key)
        if stored is not None:
            result: tuple[Read, ...] = tuple(stored)
            _reads_cache[code] = result
            return result
    from ._bytecode import disassemble

    result = disassemble(code)
    _reads_cache[code] = result
    if idx is not None:
        idx.put(key, result)
    return result


def _class_functions(cls: type) -> Iterator[types.FunctionType]:
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            yield from (f for f in (value.fget, value.fset, value.fdel)
                        if isinstance(f, types.FunctionType))
            continue
        elif not callable(value) and isinstance(getattr(value, "func", None), types.FunctionType):
            # functools.cached_property, singledispatchmethod, partialmethod
            registry = getattr(getattr(value, "dispatcher", None), "registry", None)
            if registry is not None:
                yield from (f for f in registry.values() if isinstance(f, types.FunctionType))
            value = value.func
        value = inspect.unwrap(value) if callable(value) else value
        if isinstance(value, types.FunctionType):
            if value.__code__.co_filename != "<string>":  # not made by exec (dataclass, ...)
                yield value
        elif isinstance(value, type) and value.__qualname__.startswith(cls.__qualname__ + "."):
            yield from _class_functions(value)


def class_values(cls: type) -> list[tuple[str, object]]:
    """A class's immutable data attributes as they are now (``Config.LR = 0.5`` after the
    class statement counts; mutable ones count by the class's source, as they are often
    state, and with the code they hold: see :meth:`_Walk.add_held_code`; unless a statement
    of the module binds them after the class statement, see :func:`_bound_outside`)."""
    return [(name, value) for name, value in vars(cls).items()
            if not (name.startswith("__") or (name.startswith("_") and name.endswith("_")))
            and isinstance(value, (*_CONSTANT_TYPES, tuple, frozenset))
            and constant_text(value) is not None]


def _bound_outside(cls: type, label: str, namespace: Mapping[str, object]) -> bool:
    """Whether a statement at the top of the class's module binds or fills the attribute
    ``label`` (``Config.PARAMS``) after the class statement: ``Config.PARAMS =
    json.load(...)`` makes it a module-level value, not the class's source, nor state."""
    file = namespace.get("__file__")
    if "<" in cls.__qualname__ or not isinstance(file, str) or not file:
        return False
    idx = _sources.index(file)
    return idx is not None and idx.get(("bind", label)) is not None


def _data_attribute(name: str, value: object) -> bool:
    """Whether a class attribute is data (a registry, a memo), not a method, a descriptor, a
    nested class or Python's own (``__slots__``, an enum's ``_member_map_``)."""
    if name.startswith("__") or (name.startswith("_") and name.endswith("_")):
        return False
    return not (isinstance(value, (types.FunctionType, type, staticmethod, classmethod))
                or hasattr(type(value), "__get__"))


def bound_values(fn: types.FunctionType) -> list[tuple[str, object]]:
    """What a function holds besides its code: its parameters' defaults and the values of
    its closure (a factory's ``k`` in ``make_scaler(10)``, the function a decorator without
    ``functools.wraps`` wraps), as ``(label, value)``. Closure variables the code changes
    (a memo dict, a counter) are state, not input, and are left out."""
    out: list[tuple[str, object]] = [(f"<default {i}>", v) for i, v in enumerate(fn.__defaults__ or ())]
    out += [(f"<default {k}>", v) for k, v in sorted((fn.__kwdefaults__ or {}).items())]
    if fn.__closure__:
        from ._bytecode import written_cells

        written = written_cells(fn.__code__)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True):
            if name in written:
                continue
            try:
                out.append((f"<{name}>", cell.cell_contents))
            except ValueError:  # not bound yet
                continue
    return out


# --- the project -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def outside_dirs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Directories never part of a project (the interpreter's libraries, checkpoint) and
    the interpreter prefixes (outside unless the project itself lives under one)."""
    libs = {os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(os.__file__))}
    try:
        import sysconfig
    except ImportError:  # a process that cannot read the standard library's files any more
        return _dirs(libs), _dirs({sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
    for base in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=base) if base else sysconfig.get_paths()
        libs.update(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    return _dirs(libs), _dirs(prefixes)


def _dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """The directories, resolved and as given (a path is checked both ways)."""
    return tuple(sorted({f(p) + os.sep for p in paths for f in (os.path.realpath, os.path.abspath)}))


def project_root(module_name: str) -> str:
    """The directory a family's project lives in: the import root of its module (the
    directory its top-level package or module is in), or the working directory when the
    module has no file (a notebook, ``python -c``)."""
    module = sys.modules.get(module_name)
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file:
        return os.path.realpath(os.getcwd())
    root = os.path.dirname(os.path.realpath(file))
    if module_name == "__main__":  # python -m experiments.train: the import name it has
        module_name = str(getattr(getattr(module, "__spec__", None), "name", None) or module_name)
    if module_name != "__main__":
        up = module_name.count(".") + (os.path.basename(file).startswith("__init__.") or 0)
        for _ in range(up):
            root = os.path.dirname(root)
    return root


@lru_cache(maxsize=4096)
def in_project(path: str, root: str) -> bool:
    """Whether the source file ``path`` belongs to the project at ``root``."""
    if not path or path.startswith("<"):
        return False
    # A module symlinked into the project (shared code linked into each experiment) is the
    # project's: its path as imported counts as well as the file it resolves to.
    return any(_inside(p, root) for p in {os.path.realpath(path), os.path.abspath(path)})


def _inside(real: str, root: str) -> bool:
    if not real.startswith(root.rstrip(os.sep) + os.sep):
        return False
    return not _installed(real, root)


def _installed(real: str, root: str) -> bool:
    """Whether a source file is installed code: the standard library, installed packages
    (``site-packages``), checkpoint itself, the interpreter's directories (unless the
    project at ``root`` lives under one)."""
    parts = real.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    libs, prefixes = outside_dirs()
    if real.startswith(libs):
        return True
    inside_prefix = [p for p in prefixes if real.startswith(p)]
    return not all((root.rstrip(os.sep) + os.sep).startswith(p) for p in inside_prefix)


@lru_cache(maxsize=4096)
def yours(path: str, root: str) -> bool:
    """Whether the code of the source file ``path`` counts in a fingerprint: it belongs to
    the project at ``root`` (:func:`in_project`), or it is your code from elsewhere that is
    not installed (``sys.path.insert(0, "..")`` in a notebook, an editable install,
    ``PYTHONPATH``)."""
    if in_project(path, root):
        return True
    if not path or path.startswith("<"):
        return False
    return not any(_installed(p, root) for p in {os.path.realpath(path), os.path.abspath(path)})


def _roots(root: str, module_name: str) -> tuple[str, ...]:
    """``root`` with a trailing separator, and the same directory as the module's
    ``__file__`` spells it when that differs (a symbolic link on the way)."""
    roots = [root.rstrip(os.sep) + os.sep]
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if isinstance(file, str) and file:
        spelled = os.path.dirname(os.path.abspath(file))
        for _ in range(module_name.count(".") + os.path.basename(file).startswith("__init__.")):
            spelled = os.path.dirname(spelled)
        if spelled.rstrip(os.sep) + os.sep not in roots:
            roots.append(spelled.rstrip(os.sep) + os.sep)
    return tuple(roots)


def _module_file(name: str) -> str | None:
    """The source file of module ``name``, without importing it."""
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
        return file if isinstance(file, str) else None
    parent, _, last = name.rpartition(".")
    search = getattr(sys.modules.get(parent), "__path__", None) if parent else None
    entries, parts = (list(search), [last]) if search is not None else (sys.path, name.split("."))
    for entry in entries:
        base = os.path.join(entry or os.getcwd(), *parts)
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
    return None


_package_of: dict[str, str] = {}
"""Top-level module name -> :func:`installed_package`'s answer."""


def installed_package(module: str) -> str:
    """The top-level name of the installed third-party package that module ``module``
    belongs to: one whose files are under ``site-packages`` or ``dist-packages`` (not the
    standard library, not checkpoint, not your code); ``""`` for any other."""
    top = module.partition(".")[0]
    found = _package_of.get(top)
    if found is not None:
        return found
    if not top or top == __name__.partition(".")[0] or top in _STDLIB:
        found = ""
    else:
        loaded = sys.modules.get(top)
        paths = [getattr(loaded, "__file__", None), *getattr(loaded, "__path__", ())] \
            if loaded is not None else [_module_file(top)]
        found = top if any(
            isinstance(p, str) and ("site-packages" in (parts := p.split(os.sep))
                                    or "dist-packages" in parts) for p in paths) else ""
        if loaded is None and not found:
            return ""  # not imported yet: asked again when it is
    _package_of[top] = found
    return found


_STDLIB: frozenset[str] = frozenset(getattr(sys, "stdlib_module_names", ())) | {"__main__"}


# --- the code that runs is the code on disk ----------------------------------------------


@lru_cache(maxsize=1024)
def _standard_loader(filename: str, module_name: str) -> bool:
    """Whether ``filename`` was loaded by Python's own source loader (which compiles it as
    :func:`compile` does; an import hook such as pytest's assertion rewriting does not)."""
    from importlib.machinery import SourceFileLoader

    module = sys.modules.get(module_name)
    if getattr(module, "__file__", None) != filename:
        module = next((m for m in list(sys.modules.values())
                       if getattr(m, "__file__", None) == filename), None)
    return type(getattr(module, "__loader__", None)) is SourceFileLoader


def check_loaded(fn: Callable[..., object], family: str) -> None:
    """Raise :class:`StaleModuleError` when the code of ``fn`` (a function) is not what its
    file compiles to now: the file was edited since it was imported (a notebook, a long
    session), so the fingerprint, taken from the file, would not describe the code that runs.

    Code changed at run time instead (an import hook such as pytest's, a decorator that
    recompiles a function such as typeguard's) is not an error: the file is then the one
    Python compiled, as its bytecode cache shows."""
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return
    filename = code.co_filename
    idx = _sources.index(filename) if filename and not filename.startswith("<") else None
    if idx is None or idx.key is None:  # no file (a notebook cell, exec): nothing to compare
        return
    from ._bytecode import code_digest, code_digests

    first = _first_seen.setdefault(filename, idx.key)
    key = ("codes", sys.flags.optimize)
    digests = idx.entries.get(key, False)
    if digests is False:  # what this version of the file compiles to, kept with its entries
        compiled = idx.compiled(sys.flags.optimize)
        digests = code_digests(compiled) if compiled is not None else None
        idx.put(key, digests)
    name = getattr(code, "co_qualname", code.co_name)
    if digests is not None and code_digest(code) in digests.get(name, ()):
        return
    module_name = str(getattr(fn, "__module__", "") or "")
    if not _standard_loader(filename, module_name):
        return
    # The bytecode cache Python would load for the file as it is now: the code in memory
    # is either that (a stale cache), or neither (changed at run time, when the file has
    # not changed since this process first looked), or an older version of the file.
    pyc, cached = _pyc_code(filename)
    stale_pyc = pyc if cached is not None and code_digest(code) in code_digests(cached).get(name, ()) \
        else None
    if stale_pyc is None and cached is not None and first == idx.key:
        return
    module = os.path.splitext(os.path.basename(filename))[0]
    shown = os.path.relpath(filename) if not os.path.relpath(filename).startswith("..") else filename
    what = (f"{shown} changed on disk since it was imported: {module_name}.{fn.__qualname__} "
            f"in memory is not the code in the file, so task {family} would run the old code "
            "under the new code's fingerprint: it was not run.")
    if stale_pyc is not None:
        raise StaleModuleError(
            f"{what} Python loaded it from bytecode cached for an earlier version of the file "
            f"saved within the same second with the same size: delete {stale_pyc} and run again.")
    raise StaleModuleError(f"{what} {_reload_advice(module)}")


def _reload_advice(module: str) -> str:
    return (f"Run again: a new `checkpoint run` imports the file as it is now; in a notebook or "
            f"a long session, reload it first (importlib.reload({module}), then re-run the "
            "imports from it; %autoreload in IPython; or restart the kernel or session).")


def check_source_text(module_name: str, filename: str, label: str, text: str, family: str) -> None:
    """Raise :class:`StaleModuleError` when ``text``, the normalized source of what counts by
    its source (a class, with its mutable attributes; a module-level assignment such as
    ``RNG = random.Random(1)``) differs from what this process saw of the same module before
    it was reloaded: the file was edited, the memory was not, and the fingerprint (taken from
    the file) would not describe the value that the code uses."""
    module = sys.modules.get(module_name)
    if module is None or not filename or getattr(module, "__file__", None) != filename:
        return
    spec = getattr(module, "__spec__", None)  # importlib.reload makes a new one
    seen = _texts.get((filename, label))
    if seen is None or seen[0] is not spec or seen[1] is not module:
        _texts[(filename, label)] = (spec, module, text)
        return
    if seen[2] == text:
        return
    shown = os.path.relpath(filename) if not os.path.relpath(filename).startswith("..") else filename
    short = module_name.rpartition(".")[2]
    raise StaleModuleError(
        f"{shown} changed on disk since it was imported: {label} in memory is not what the "
        f"file says now, so task {family} would run with the old one under the new code's "
        f"fingerprint: it was not run. {_reload_advice(short)}")


_texts: dict[tuple[str, str], tuple[object, object, str]] = {}
"""``(file, label) -> (module spec, module, normalized source)`` as first seen for each
module object and reload."""

_first_seen: dict[str, tuple[int, int]] = {}
"""``(size, mtime_ns)`` of each source file when this process first compared its code (or
noted it: :func:`note_imported`)."""


def note_imported(modules: Iterable[str]) -> None:
    """Note the state of the source file of each module imported so far from the projects
    of ``modules`` (the modules of the families about to run) that :func:`check_loaded` has
    not compared yet: the file its code in memory came from, as far as this process can
    tell. A run calls it before any task runs: a module edited during the run (by a task,
    by a ``git checkout``) whose families are fingerprinted only afterwards is then known as
    edited, even once another process has written a bytecode cache for the new file (which
    would otherwise pass the old code in memory for code changed at run time)."""
    roots = {project_root(name) for name in modules}
    prefixes = tuple(root.rstrip(os.sep) + os.sep for root in roots)
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if (isinstance(file, str) and file.endswith(".py") and file not in _first_seen
                and file.startswith(prefixes)
                and any(in_project(file, root) for root in roots)):
            key = _sources.file_key(file)
            if key is not None:
                _first_seen[file] = key


def _pyc_code(filename: str) -> tuple[str, types.CodeType | None]:
    """The bytecode cache of ``filename`` and its code when Python would load it for the
    file as it is now (same size and mtime in seconds), else ``None``."""
    try:
        pyc = importlib.util.cache_from_source(filename)
        with open(pyc, "rb") as f:
            data = f.read()
        st = os.stat(filename)
    except (OSError, NotImplementedError, ValueError):
        return "", None
    flags, mtime, size = (int.from_bytes(data[k:k + 4], "little") for k in (4, 8, 12))
    if data[:4] != importlib.util.MAGIC_NUMBER or flags != 0 or mtime != int(st.st_mtime) & 0xFFFFFFFF \
            or size != st.st_size & 0xFFFFFFFF:
        return pyc, None
    try:
        code = marshal.loads(data[16:])
    except (EOFError, ValueError, TypeError):
        return pyc, None
    return pyc, code if isinstance(code, types.CodeType) else None


def _importer(obj: object) -> str | None:
    """``"importlib.import_module"`` or ``"__import__"`` when ``obj`` is that function."""
    import builtins

    importlib_module = sys.modules.get("importlib")
    if obj is None:
        return None
    if obj is getattr(importlib_module, "import_module", None):
        return "importlib.import_module"
    if obj is builtins.__import__ or obj is getattr(importlib_module, "__import__", None):
        return "__import__"
    return None


def _by_computed_name(obj: object, attrs: tuple[str, ...]) -> str | None:
    """What ``obj`` then ``attrs`` is when it reaches modules by a name computed when the
    code runs: ``importlib.import_module``, ``sys.modules[...]``; else ``None``."""
    importlib_module = sys.modules.get("importlib")
    if (obj is importlib_module and attrs[:1] == ("import_module",)) or (
            not attrs and obj is getattr(importlib_module, "import_module", None)):
        return "importlib.import_module"
    if (obj is sys and attrs[:1] == ("modules",)) or (not attrs and obj is sys.modules):
        return "sys.modules[...]"
    return None


# --- the walk ----------------------------------------------------------------------------

_warned: set[tuple[str, str]] = set()

followed_files: set[str] = set()
"""Source files of the project modules whose text a fingerprint took in (an ``import``
inside a task included), for ``run --watch``: such a module need not be loaded here."""

followed_modules: dict[str, None] = {}
"""Every module whose code or values a fingerprint of this process took in (in order): the
code that workers elsewhere must have the same (see :mod:`checkpoint._workercode`)."""

read_values: dict[tuple[str, str], str] = {}
"""``(module, name)`` -> the text of a module-level value (or class attribute, ``Cls.name``)
that the fingerprints of this run counted by value: what workers elsewhere must hold too
(see :mod:`checkpoint._workercode`; emptied when a run begins)."""


class _Walk:
    """Collects the pieces of one family's fingerprint."""

    def __init__(self, fn: Callable[..., object] | None, is_task: Callable[[object], bool], family: str,
                 module: str | None = None) -> None:
        self.fn = fn
        self.is_task = is_task
        self.family = family
        self.module: str = module if module is not None else getattr(fn, "__module__", None) or ""
        followed_modules[self.module] = None
        self.root = project_root(self.module)
        self.roots = _roots(self.root, self.module)
        """The project directory as paths in values spell it (see :func:`_project_path`)."""
        self.own: dict[str, str] = {}
        self.other: dict[str, str] = {}
        self.seen: set[int] = {id(fn)}
        self.keep: list[object] = []  # keeps ids in `seen` from being reused
        self.modules: set[str] = set()
        """Project modules whose whole source is in (imported but not loaded)."""
        self.values = _Values(self)
        self.written: set[tuple[str, str]] = set()
        """``(module, name)`` of the globals the code changes: state, not input."""
        self.imported: dict[str, None] = {}
        """Source files of the project modules the code imports as it runs."""
        self.packages: set[str] = set()
        """Installed third-party packages the code uses (see :func:`installed_package`)."""
        self.touched: dict[str, bool] = {self.module: False}
        """Modules whose code or values are in, and whether their seeding statements are."""

    # pieces

    def _put(self, module: str, name: str, text: str) -> None:
        followed_modules[module] = None
        self.touched.setdefault(module, False)
        pieces, key = (self.own, name) if module == self.module else (self.other, f"{module}.{name}")
        n = 1
        while pieces.setdefault(key if n == 1 else f"{key}#{n}", text) != text:
            n += 1  # another function of the same name (singledispatch's `_`, two lambdas)

    def text(self, main: str) -> str:
        pieces = [self.own[k] for k in sorted(self.own)]
        pieces += [self.other[k] for k in sorted(self.other)]
        return "\n\n".join([main, *pieces])

    # code

    def follows(self, obj: object) -> bool:
        """Whether a function or class is the project's (so its code counts): its file is
        in the project, or it comes from the task's own module (a notebook's cells)."""
        if isinstance(obj, type):
            module = sys.modules.get(obj.__module__)
            file = getattr(module, "__file__", None)
            return obj.__module__ == self.module or (
                isinstance(file, str) and yours(file, self.root))
        code = getattr(obj, "__code__", None)
        if not isinstance(code, types.CodeType):
            return False
        # A decorator's wrapper carries the wrapped function's __module__: trust its file.
        own = obj.__module__ == self.module and getattr(obj, "__wrapped__", None) is None
        return own or yours(code.co_filename, self.root)

    def is_project_module(self, module: types.ModuleType) -> bool:
        file = getattr(module, "__file__", None)
        if file is None and module.__name__ != self.module:  # a namespace package: its dirs
            return any(yours(os.path.join(d, "__init__.py"), self.root)
                       for d in getattr(module, "__path__", ()) if isinstance(d, str))
        return module.__name__ == self.module or (isinstance(file, str) and yours(file, self.root))

    def follow_reads(self, reads: Iterable[Read], namespace: Mapping[str, object]) -> None:
        for kind, name, attrs in reads:
            if kind == "i":
                self.follow_import(name, attrs, namespace)
                continue
            if kind == "m":
                self.follow_call(name, attrs, namespace)
                continue
            if kind == "x":
                self.follow_run_code(name, attrs, namespace)
                continue
            if name not in namespace:
                if name == "__import__" and kind == "g":
                    self.values.warn_dynamic_import("__import__")
                elif name == "globals" and kind == "g":
                    self.add_globals(namespace)
                continue  # a builtin, or not defined (yet)
            obj, label, home = namespace[name], name, namespace
            rest = attrs
            for attr in attrs:  # through modules: features.scale, pkg.sub.CONSTANT
                if not isinstance(obj, types.ModuleType) or not hasattr(obj, attr):
                    break
                if not self.is_project_module(obj):
                    self.note_package(obj.__name__)
                    obj = None  # sys.stderr, np.random.default_rng: not the project's
                    break
                home, label, obj, rest = vars(obj), attr, getattr(obj, attr), rest[1:]
            if kind == "w":
                self.written.add((str(home.get("__name__", "")), label))
                if isinstance(obj, type) and rest:  # Config.MEMO[k] = v: that attribute
                    self.written.add((str(home.get("__name__", "")), f"{label}.{rest[0]}"))
            elif obj is not None:
                self.add(obj, label, home)
            call = _by_computed_name(namespace[name], attrs) if kind == "g" else None
            if call is not None:
                self.values.warn_dynamic_import(call)

    def note_package(self, module: object) -> None:
        """The code uses something of module ``module``: note its package if installed."""
        if isinstance(module, str) and (package := installed_package(module)):
            self.packages.add(package)

    def add_globals(self, namespace: Mapping[str, object]) -> None:
        """The code calls ``globals()``, to read globals by computed names (``globals()[f"fit_
        {kind}"]``): which ones cannot be known, so each global of the module counts as if it
        were read by name (functions and classes by their code, values by their value; task
        families, as always, do not)."""
        for name, value in list(namespace.items()):
            if not name.startswith("__"):
                self.add(value, name, namespace)

    def follow_call(self, base: str, attrs: tuple[str, ...], namespace: Mapping[str, object]) -> None:
        """A call whose first argument is a module name written as a literal string (see
        :func:`checkpoint._bytecode._call_by_literal_name`): when it calls
        ``importlib.import_module`` or ``__import__``, the module it imports, as ``import``
        would; in any case what it calls, as any other read."""
        cut = attrs.index("(")
        callee: Read = ("i" if ":" in base else "g", base, attrs[:cut])
        importer = _importer(self._resolve(callee, namespace))
        if importer is None:
            self.follow_reads([callee], namespace)
            return
        name, package, fromlist, level, how = attrs[cut + 1:cut + 6]
        if how == "stored":
            return  # the uses of the local that holds the result are read apart
        use = attrs[cut + 6:]
        if UNKNOWN in (package if name.startswith(".") else "", level):
            self.values.warn_dynamic_import(importer)  # a package or level known when it runs
            return
        try:
            if importer == "importlib.import_module":
                module = importlib.util.resolve_name(name, package or None)
                targets = [(module, use)]
            else:
                relative = "." * int(level) + name if int(level) else name
                module = importlib.util.resolve_name(
                    relative, str(namespace.get("__package__") or "") if int(level) else None)
                top = module[:len(module) - len(name) + len(name.partition(".")[0])] if name else module
                targets = [(module, use)] if fromlist == "1" else [(top, use)]
                if fromlist == UNKNOWN:
                    targets.append((module, use))
                if not use:  # the module for what importing it does, or passed around
                    targets.append((module, ()))
        except (ImportError, ValueError, TypeError):
            return  # fails when it runs
        for module, chain in targets:
            self.follow_import(f"0:{module}", chain, namespace)

    def follow_run_code(self, runner: str, attrs: tuple[str, ...], namespace: Mapping[str, object]) -> None:
        """The code calls ``eval``/``exec``/``compile`` on a string not written out: a global
        (``eval(EXPR)``) is compiled and what it reads counts; any other warns."""
        if runner in namespace:  # the module's own function of that name: read as such
            return
        source = namespace.get(attrs[0]) if attrs else None
        if isinstance(source, str):
            from ._bytecode import source_reads

            reads = source_reads(source)
            if reads is not None:
                self.follow_reads(reads, namespace)
                return
        self.values.warn_run_code(runner)

    def _resolve(self, read: Read, namespace: Mapping[str, object]) -> object:
        """What a read (of a global, or of a module imported inside the code) is bound to
        now, through modules only, or ``None``."""
        kind, name, attrs = read
        obj: object
        if kind == "i":
            obj = sys.modules.get(self._module_name(name, namespace) or "")
        else:
            import builtins

            obj = namespace[name] if name in namespace else getattr(builtins, name, None)
        for attr in attrs:
            obj = getattr(obj, attr, None) if isinstance(obj, types.ModuleType) else None
        return obj

    @staticmethod
    def _module_name(name: str, namespace: Mapping[str, object]) -> str | None:
        """The module an import inside the code names (``"{level}:{module}"``)."""
        level, _, module = name.partition(":")
        if level == "0":
            return module
        package = str(namespace.get("__package__") or "")
        try:
            return importlib.util.resolve_name("." * int(level) + module, package)
        except (ImportError, ValueError):
            return None

    def follow_import(self, name: str, attrs: tuple[str, ...], namespace: Mapping[str, object]) -> None:
        found = self._module_name(name, namespace)
        if found is None:
            return
        module = found
        # import pkg.util, then pkg.util.h: the submodule may not be loaded in this process
        while attrs:
            parent = sys.modules.get(module)
            sub = f"{module}.{attrs[0]}"
            if parent is not None and hasattr(parent, attrs[0]):
                break  # followed through the loaded package
            if sub not in sys.modules and (
                    not os.path.basename(_module_file(module) or "").startswith("__init__.")
                    or _module_file(sub) is None):
                break
            self._follow_module(module, ())  # the package runs too
            module, attrs = sub, attrs[1:]
        self._follow_module(module, attrs)

    def _follow_module(self, module: str, attrs: tuple[str, ...]) -> None:
        loaded = sys.modules.get(module)
        file = getattr(loaded, "__file__", None) if loaded is not None else _module_file(module)
        if isinstance(file, str) and file and yours(file, self.root):
            self.imported[file] = None
        if loaded is not None:
            self.follow_reads([("g", "m", attrs)], {"m": loaded})
        elif file is not None and yours(file, self.root):
            self.add_module_text(module, file)
        else:
            self.note_package(module)

    def add(self, obj: object, label: str, namespace: Mapping[str, object]) -> None:
        """Fingerprint whatever the global ``label`` of ``namespace`` is bound to."""
        if obj is self.fn or self.is_task(obj):
            return
        code_like = isinstance(obj, (types.FunctionType, type, types.ModuleType, types.MethodType))
        wrapper = not code_like and callable(obj) and getattr(obj, "__wrapped__", None) is not None \
            and not hasattr(obj, "__checkpoint_identity__")
        if not (code_like or wrapper):
            if not isinstance(obj, _CODE_TYPES):  # built-in functions: not Python code
                self.values.add(obj, label, namespace)
                self.note_package(type(obj).__module__)
            else:
                self.note_package(getattr(obj, "__module__", None))
            return
        if id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        self.keep.append(obj)
        if wrapper and callable(obj):  # e.g. functools.lru_cache, or an object of a project class
            self.add(inspect.unwrap(obj), label, namespace)
            self.add(type(obj), label, namespace)
        elif isinstance(obj, types.FunctionType):
            if getattr(obj, "__wrapped__", None) is not None:
                self.add(inspect.unwrap(obj), label, namespace)
            if self.follows(obj):
                self.add_code(obj, obj.__globals__)
                for suffix, value in bound_values(obj):
                    self.add(value, f"{label}.{suffix}", namespace)
            else:
                self.note_package(obj.__module__)
            registry = getattr(obj, "registry", None)  # functools.singledispatch
            if isinstance(registry, Mapping) and callable(getattr(obj, "dispatch", None)):
                for impl in list(registry.values()):
                    self.add(impl, label, namespace)
            else:  # a decorator from elsewhere, without functools.wraps: what it wraps
                for _, value in bound_values(obj):
                    if isinstance(value, (types.FunctionType, type)):
                        self.add(value, label, namespace)
        elif isinstance(obj, type):
            if self.follows(obj):
                module = sys.modules.get(obj.__module__)
                self.add_code(obj, vars(module) if module is not None else namespace)
            else:
                self.note_package(obj.__module__)
        elif isinstance(obj, types.ModuleType):
            if self.is_project_module(obj):
                self.add_module_text(obj.__name__, obj.__file__ or "")
            else:
                self.note_package(obj.__name__)
        else:
            assert isinstance(obj, types.MethodType)
            self.add(obj.__func__, label, namespace)
            self.values.add(obj.__self__, label + ".__self__", namespace)

    def add_code(self, obj: types.FunctionType | type, namespace: Mapping[str, object]) -> None:
        name = obj.__qualname__
        if isinstance(obj, types.FunctionType) and getattr(obj, "__wrapped__", None) is not None:
            # a functools.wraps wrapper borrows the name of what it wraps (followed apart):
            # its own code counts under its own name (f = deco(f), without @, reads no deco)
            name = getattr(obj.__code__, "co_qualname", obj.__code__.co_name)
        self.check_loaded(obj)
        found = normalized_source(obj, strip_decorators=False, unwrap=False)
        if found is None:
            self._put(obj.__module__, name, f"# {name}: " + code_bytes(obj))
            self.follow_code(obj, [], namespace)
            return
        text, reads = found
        if isinstance(obj, type):  # mutable class attributes count by this source
            file = getattr(sys.modules.get(obj.__module__), "__file__", None)
            check_source_text(obj.__module__, file or "", obj.__qualname__, text, self.family)
        if obj.__module__ != self.module:
            text = f"# {obj.__module__}\n{text}"
        self._put(obj.__module__, name, text)
        self.follow_code(obj, reads, namespace)

    def follow_code(self, obj: Callable[..., object], def_reads: Iterable[Read], namespace: Mapping[str, object]) -> None:
        """Follow what a function or class reads: its compiled code, and what its def or
        class statement read (``def_reads``) in ``namespace``."""
        functions = _class_functions(obj) if isinstance(obj, type) else [obj]
        for fn in functions:
            if isinstance(getattr(fn, "__code__", None), types.CodeType):
                self.follow_reads(code_reads(fn.__code__), fn.__globals__)
        self.follow_reads(def_reads, namespace)
        if isinstance(obj, type):
            home = sys.modules.get(obj.__module__)
            where = vars(home) if home else namespace
            immutable = dict(class_values(obj))
            for name, value in immutable.items():
                self.values.add(value, f"{obj.__qualname__}.{name}", where)
            for name, value in list(vars(obj).items()):
                if _data_attribute(name, value):
                    label = f"{obj.__qualname__}.{name}"
                    if name not in immutable and _bound_outside(obj, label, where):
                        self.values.add(value, label, where)  # Config.PARAMS = json.load(...)
                    self.add_held_code(value, label, where, 0)

    def add_held_code(self, value: object, label: str, namespace: Mapping[str, object], depth: int) -> None:
        """Follow the functions and classes that a mutable value counted by its source holds
        (a registry in a class attribute, filled by ``__init_subclass__`` or a decorator): they
        count with their code, as those of a module-level registry do. The rest of it (a
        memo's numbers) is state and does not count."""
        if isinstance(value, (types.FunctionType, type, types.MethodType)) or (
                callable(value) and getattr(value, "__wrapped__", None) is not None):
            self.add(value, label, namespace)
            return
        if isinstance(value, _CONSTANT_TYPES) or depth > 3:
            return
        if isinstance(value, Mapping):
            items: list[object] = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset, deque)):
            items = list(value)
        elif isinstance(value, partial):
            items = [value.func, *value.args, *value.keywords.values()]
        else:  # an object of a project class (a plugin's instance): its class, its attributes
            kind = type(value)
            if kind.__module__ == "builtins" or not self.follows(kind):
                return
            self.add(kind, label, namespace)
            items = list(getattr(value, "__dict__", {}).values())
        for item in items:
            if not isinstance(item, _CONSTANT_TYPES):
                self.add_held_code(item, label, namespace, depth + 1)

    def add_seed_statements(self) -> bool:
        """Add the statements at the top of each module taken in so far that seed a global
        random generator (``np.random.seed(0)``, ``torch.manual_seed(SEED)``: see
        :func:`checkpoint._sources._seeds`), with what they read: they decide what the code
        draws from ``np.random``, and workers forked from this process inherit that state.
        Other module-level calls (``print``, logging setup) do not count. Whether any was
        added (what it reads is then to be fingerprinted)."""
        added = False
        for name in [m for m, done in self.touched.items() if not done]:
            self.touched[name] = True
            file = getattr(sys.modules.get(name), "__file__", None)
            idx = _sources.index(file) if isinstance(file, str) and file else None
            found = idx.get(("seeds",)) if idx is not None else None
            if found is None:
                continue
            text, reads = found
            check_source_text(name, str(file), "<seeding statements>", text, self.family)
            self._put(name, "<seeding statements>", text if name == self.module else f"# {name}\n{text}")
            module = sys.modules.get(name)
            self.follow_reads(reads, vars(module) if module is not None else {})
            added = True
        return added

    def check_loaded(self, obj: Callable[..., object]) -> None:
        """See :func:`check_loaded`: for a function, or each method of a class."""
        for fn in _class_functions(obj) if isinstance(obj, type) else [inspect.unwrap(obj)]:
            check_loaded(fn, self.family)

    def add_module_text(self, name: str, file: str) -> None:
        if name in self.modules:
            return
        self.modules.add(name)
        if file:
            followed_files.add(file)
        followed_modules[name] = None
        loaded = sys.modules.get(name)
        for value in list(vars(loaded).values()) if loaded is not None else ():
            if isinstance(value, (types.FunctionType, type)) and value.__module__ == name:
                self.check_loaded(value)
        idx = _sources.index(file) if file else None
        text = idx.get(("module",)) if idx is not None else None
        self.other.setdefault(f"{name}.*", f"# module {name}\n{text or '# source unavailable'}")

class _Values:
    """The values a walk finds the code reading, and their texts in the fingerprint: a
    literal's repr, a canonical text (dataclasses, containers, arrays by digest), a
    deterministic pickle's digest, or the source of the assignment that binds them."""

    def __init__(self, walk: _Walk) -> None:
        self.walk = walk
        self.seen: set[tuple[str, str]] = set()
        self.pending: list[tuple[object, str, Mapping[str, object]]] = []
        """Values read, fingerprinted once all the code is known (see :meth:`finish`)."""

    def add(self, value: object, label: str, namespace: Mapping[str, object]) -> None:
        where = str(namespace.get("__name__", ""))
        if (where, label) not in self.seen:
            self.seen.add((where, label))
            self.pending.append((value, label, namespace))

    def finish(self) -> None:
        """Fingerprint the values read. A global the code changes (``CALLS.append(x)``,
        ``CACHE[k] = v``, ``global N; N += 1``) is state, not input: its content changes as
        tasks run, so its assignment counts instead (else a second run in one process
        would see a "code change")."""
        done: dict[tuple[str, str], tuple[object, str, Mapping[str, object]]] = {}
        as_state: set[tuple[str, str]] = set()
        by_value: dict[tuple[str, str], str] = {}
        while self.pending:
            while self.pending:  # a value may lead to more code, and so to more values
                value, label, namespace = item = self.pending.pop(0)
                key = (str(namespace.get("__name__", "")), label)
                done[key] = item
                if key in self.walk.written:
                    as_state.add(key)
                text = None if key in as_state else self.by_value(value)
                if text is not None and _global_of(namespace, label) is value:
                    by_value[key] = (comparable_text(self, value) or text) if _has_dict(value) else text
                self._put_value(key, text if text is not None else
                                self.value_text(value, label, namespace, key in as_state))
            for key in self.walk.written & done.keys() - as_state:  # found written afterwards
                as_state.add(key)
                by_value.pop(key, None)
                value, label, namespace = done[key]
                self._put_value(key, self.value_text(value, label, namespace, True))
        read_values.update(by_value)

    def _put_value(self, key: tuple[str, str], text: str) -> None:
        where, label = key
        followed_modules[where] = None
        self.walk.touched.setdefault(where, False)
        if where == self.walk.module:
            self.walk.own[label] = f"{label} = {text}"
        else:
            self.walk.other[f"{where}.{label}"] = f"{where}.{label} = {text}"

    def value_text(self, value: object, label: str, namespace: Mapping[str, object], state: bool) -> str:
        if state:
            source = self.source(label, namespace)
            return source or f"<{type(value).__qualname__}, changed by the code>"
        text = self.by_value(value)
        if text is not None:
            return text
        source = self.source(label, namespace)
        if source is not None:
            return source
        self.warn(value, label, namespace)
        return f"<{type(value).__qualname__}: cannot be fingerprinted>"

    def by_value(self, value: object) -> str | None:
        """The text of a value that counts by what it holds (a literal's, a canonical text,
        a deterministic pickle's digest); ``None`` when it counts by its source instead."""
        text = constant_text(value, 0, self.walk.roots)
        if text is not None:
            return text
        if _stateful(value):
            return None
        text = self.canonical(value, 0, set())
        if text is not None:
            return text if len(text) <= _LONG_TEXT else \
                f"<{type(value).__qualname__}: {_digest(text.encode())}>"
        from ._pickling import pickle_bytes

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    data = pickle_bytes(value, self.reference, fast=True)
                except RecursionError:
                    data = pickle_bytes(value, self.reference, fast=False)
        except Exception:  # noqa: BLE001 - anything a __reduce__ may raise: try the source
            return None
        return f"<{type(value).__qualname__}, pickled: {_digest(data)}>"

    def reference(self, obj: object) -> str | None:
        """How the deterministic pickle writes an object by name: arrays by their digest;
        functions, classes, modules and tasks as :meth:`code_ref` does; else ``None``."""
        if _is_array(obj):
            return _array_text(obj)
        if isinstance(obj, PurePath):  # inside the project: relative (a project can move)
            return _project_path(obj, self.walk.roots)
        if isinstance(obj, _CODE_TYPES) or hasattr(obj, "__checkpoint_identity__") or self.walk.is_task(obj):
            return self.code_ref(obj)
        return None

    def code_ref(self, obj: object) -> str:
        """How a function, class, module or task inside a value is written (and followed)."""
        ident = getattr(obj, "__checkpoint_identity__", None)
        if isinstance(ident, str):
            return f"<task {ident}>"
        if self.walk.is_task(obj):
            return f"<task family {getattr(obj, 'name', '?')}>"
        if isinstance(obj, (types.FunctionType, type, types.ModuleType, types.MethodType)):
            self.walk.add(obj, getattr(obj, "__qualname__", getattr(obj, "__name__", "?")), {})
        module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
        bound = ""
        if isinstance(obj, types.FunctionType) and self.walk.follows(obj):
            # one lambda of a list made in a loop differs from the next by its values only
            qualname = obj.__qualname__
            bound = "".join(
                f" {suffix}={self.value_text(v, f'{qualname}.{suffix}', {}, False)}"
                for suffix, v in bound_values(obj) if not isinstance(v, _CODE_TYPES))
        return f"<{type(obj).__name__} {module}.{getattr(obj, '__qualname__', '')}{bound}>"

    def canonical(self, value: object, depth: int, path: set[int]) -> str | None:
        """A readable text that identifies ``value``, or ``None`` (then it is pickled)."""
        if isinstance(value, _CONSTANT_TYPES):
            return _project_path(value, self.walk.roots)
        if isinstance(value, _CODE_TYPES) or hasattr(value, "__checkpoint_identity__") \
                or self.walk.is_task(value):
            return self.code_ref(value)
        if _is_array(value):
            return _array_text(value)
        if type(value).__module__.startswith("checkpoint."):
            # checkpoint's own markers (TaskDirectory(), ...) by their repr: their state may
            # hold what they learned while running (a resolved path), which is not identity
            text = repr(value)
            if " at 0x" not in text:
                return text
        if depth > 50 or id(value) in path:
            return None
        path = path | {id(value)}
        kind = type(value)
        if is_dataclass(value):
            self.walk.add(kind, kind.__qualname__, {})
            parts = [(f.name, self.canonical(getattr(value, f.name, None), depth + 1, path))
                     for f in fields(value)]
            names = {f.name for f in fields(value)}
            from functools import cached_property

            parts += [(k, self.canonical(v, depth + 1, path))  # set outside the fields
                      for k, v in sorted(getattr(value, "__dict__", {}).items())
                      if k not in names and not isinstance(getattr(kind, k, None), cached_property)]
            return _call_text(kind.__qualname__, parts)
        if kind is types.SimpleNamespace:
            items = sorted(vars(value).items())
            return _call_text("namespace", [(k, self.canonical(v, depth + 1, path))
                                            for k, v in items])
        if kind in (list, tuple, set, frozenset) or (
                isinstance(value, tuple) and hasattr(kind, "_fields")):
            texts = [self.canonical(v, depth + 1, path) for v in cast("Iterable[object]", value)]
            if any(t is None for t in texts):
                return None
            if kind in (set, frozenset):
                return f"{kind.__name__}({{{', '.join(sorted(map(str, texts)))}}})"
            if kind is list:
                return "[" + ", ".join(map(str, texts)) + "]"
            if kind is tuple:
                return "(" + ", ".join(map(str, texts)) + (",)" if len(texts) == 1 else ")")
            self.walk.add(kind, kind.__qualname__, {})
            return _call_text(kind.__qualname__, list(zip(kind._fields, texts, strict=True)))
        if kind is dict:
            pairs = [(self.canonical(k, depth + 1, path), self.canonical(v, depth + 1, path))
                     for k, v in cast("dict[object, object]", value).items()]
            if any(k is None or v is None for k, v in pairs):
                return None
            if _unordered.get():
                pairs.sort()
            return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        enum = sys.modules.get("enum")
        if enum is not None and isinstance(value, enum.Enum):
            self.walk.add(kind, kind.__qualname__, {})
            return f"{kind.__qualname__}.{value.name}"
        return None

    def source(self, label: str, namespace: Mapping[str, object]) -> str | None:
        """The source of what binds ``label``: ``Config.MEMO = {}`` after the class statement
        for a class attribute so bound, else the statements that bind its first name."""
        found = self.assignment(label, namespace, 0) if "." in label else None
        return found if found is not None else self.assignment(label.split(".")[0], namespace, 0)

    def assignment(self, name: str, namespace: Mapping[str, object], depth: int) -> str | None:
        """The normalized source of the module-level statements that bind ``name``, with
        what they read followed; ``"<imported from X>"`` when it comes from outside the
        project; ``None`` when there is no such source."""
        file = namespace.get("__file__")
        idx = _sources.index(file) if isinstance(file, str) and file and depth < 10 else None
        binding = idx.get(("bind", name)) if idx is not None else None
        if binding is None:
            return None
        if binding[0] == "assign":
            check_source_text(str(namespace.get("__name__", "")), str(file), name, binding[1],
                              self.walk.family)
            self.walk.follow_reads(binding[2], namespace)
            return f"<value of: {binding[1]}>"
        _, level, module, original = binding
        try:
            module = importlib.util.resolve_name(
                "." * level + module, str(namespace.get("__package__") or ""))
        except (ImportError, ValueError):
            return None
        loaded = sys.modules.get(module)
        if loaded is None or not self.walk.is_project_module(loaded):
            return f"<imported from {module}>"
        found = self.assignment(original, vars(loaded), depth + 1)
        return None if found is None else f"{module}.{original} = {found}"

    def warn(self, value: object, label: str, namespace: Mapping[str, object]) -> None:
        module = str(namespace.get("__name__", ""))
        if (module, label) in _warned:
            return
        _warned.add((module, label))
        self._warn(
            f"Task {self.walk.family} reads the global {label!r} ({type(value).__qualname__}), whose "
            "value cannot be fingerprinted: changing it will not re-run the task. Make it a "
            "literal, a dataclass or another picklable value, or pin the task's code with "
            "@task(version=...) and bump the version when it changes.", module)

    def warn_dynamic_import(self, call: str) -> None:
        """The code imports or reads modules by a name computed when it runs: which ones
        cannot be known."""
        if (self.walk.family, "<import>") in _warned:
            return
        _warned.add((self.walk.family, "<import>"))
        if call.startswith("sys."):
            what = f"reads modules through {call}"
            fix = "Import them by name (import models.linear)"
        else:
            what = f"imports modules by a name computed when it runs ({call})"
            fix = ('Import them by name (import models.linear, or '
                   'importlib.import_module("models.linear") with the name written out)')
        self._warn(
            f"Task {self.walk.family} {what}: the code of the modules it loads that way is not "
            f"fingerprinted, so editing them will not re-run the task. {fix}, or pin the "
            "task's code with @task(version=...) and bump the version when they change.",
            self.walk.module)

    def warn_run_code(self, runner: str) -> None:
        """The code runs code given as a string computed when it runs: what it reads cannot
        be known."""
        if (self.walk.family, "<eval>") in _warned:
            return
        _warned.add((self.walk.family, "<eval>"))
        self._warn(
            f"Task {self.walk.family} runs code through {runner}() from a string computed when "
            "it runs (or read from a file): what that code reads is not fingerprinted, so "
            "editing it will not re-run the task. Write the code out (a string literal or a "
            "module-level string) or call it directly, or pin the task's code with "
            "@task(version=...) and bump the version when it changes.", self.walk.module)

    def _warn(self, message: str, module: str) -> None:
        fn = next(_class_functions(self.walk.fn), None) if isinstance(self.walk.fn, type) else self.walk.fn
        code = getattr(fn, "__code__", None)
        file, line = (code.co_filename, code.co_firstlineno) if isinstance(code, types.CodeType) \
            else ("<unknown>", 1)
        warnings.warn_explicit(message, FingerprintWarning, file, line, module=module)


def _call_text(name: str, parts: list[tuple[str, str | None]]) -> str | None:
    if any(text is None for _, text in parts):
        return None
    return f"{name}(" + ", ".join(f"{k}={v}" for k, v in parts) + ")"


def code_fingerprint(
    fn: Callable[..., object], *, is_task: Callable[[object], bool] = lambda _: False,
    family: str | None = None,
) -> tuple[str, str]:
    """Return ``(digest, normalized_source)`` for a task function (or class) and what it reads.

    The text is the task's normalized source, then each piece it reads (see the module
    docstring): the task module's own helpers and values sorted by name, then those of other
    project modules sorted by module and name. ``is_task`` tells task families apart (their
    changes reach dependents through the graph); ``family`` names the task in warnings.
    """
    _sources.begin()
    walk = _Walk(fn, is_task, family or str(getattr(fn, "__qualname__", fn)))
    first = normalized_source(fn, strip_decorators=True)
    reads: list[Read] = []
    if first is None:
        main_text = "# source unavailable; compiled code:\n" + code_bytes(fn)
    else:
        main_text, reads = first
    walk.check_loaded(fn)
    if isinstance(fn, type):
        module = sys.modules.get(fn.__module__)
        walk.follow_code(fn, reads, vars(module) if module is not None else {})
    elif isinstance(getattr(fn, "__code__", None), types.CodeType):
        walk.follow_reads(code_reads(fn.__code__), getattr(fn, "__globals__", {}))
        if isinstance(fn, types.FunctionType):
            for suffix, value in bound_values(fn):
                walk.add(value, f"{fn.__name__}.{suffix}", fn.__globals__)
    walk.values.finish()
    while walk.add_seed_statements():
        walk.values.finish()
    text = walk.text(main_text)
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    code_files[digest] = tuple((f, k) for f in walk.imported if (k := _sources.seen_key(f)))
    code_packages[digest] = tuple(sorted(walk.packages))
    return digest, text


_NO_VALUE = object()


def _global_of(namespace: Mapping[str, object], label: str) -> object:
    """What ``label`` (``NAME`` or ``Cls.NAME``: no dunder, no ``<default 0>``) names in a
    module's namespace, else a marker that is no value."""
    parts = label.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts) \
            or not isinstance(namespace.get("__file__"), str):
        return _NO_VALUE
    obj = namespace.get(parts[0], _NO_VALUE)
    for part in parts[1:]:
        if not isinstance(obj, type):
            return _NO_VALUE
        obj = vars(obj).get(part, _NO_VALUE)
    return obj


def value_text_here(module: types.ModuleType, label: str) -> str | None:
    """The text :data:`read_values` would hold for the value ``label`` of ``module`` if a
    fingerprint were taken in this process, or ``None``: it does not count by value here (a
    worker comparing its module values with the coordinator's)."""
    value = _global_of(vars(module), label)
    if value is _NO_VALUE:
        return None
    family = getattr(sys.modules.get("checkpoint.task"), "TaskFamily", None)  # (no import cycle)
    walk = _Walk(None, lambda obj: family is not None and isinstance(obj, family), label,
                 module=module.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return comparable_text(walk.values, value)


def comparable_text(values: _Values, value: object) -> str | None:
    """The text of a value counted by value, made to compare it with another process's:
    the fingerprint's, but with every dict's items sorted. A dict filled from a set has the
    order of that process's hash seed (a spawned worker, a Dask worker has another), and
    equal dicts must compare equal; the fingerprint itself keeps the order it always had."""
    token = _unordered.set(True)
    try:
        return values.by_value(value)
    finally:
        _unordered.reset(token)


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _has_dict(value: object, depth: int = 0) -> bool:
    """Whether a value's canonical text may hold a dict of two items or more (whose text
    :func:`comparable_text` sorts): conservatively True when too deep to tell."""
    if isinstance(value, dict):
        return len(value) > 1 or any(_has_dict(v, depth + 1) for v in value.values())
    if depth > 6:
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(type(v) not in _SCALARS and _has_dict(v, depth + 1) for v in value)
    if (is_dataclass(value) and not isinstance(value, type)) or type(value) is types.SimpleNamespace:
        held = vars(value).values() if hasattr(value, "__dict__") else \
            [getattr(value, f.name, None) for f in fields(value)]  # type: ignore[arg-type]
        return any(_has_dict(v, depth + 1) for v in held)
    return False


code_files: dict[str, tuple[tuple[str, tuple[int, int]], ...]] = {}
"""Fingerprint -> the source files of the project modules its code imports as it runs
(``import helpers`` inside a task), with their ``(size, mtime_ns)`` when it was taken."""
code_packages: dict[str, tuple[str, ...]] = {}
"""Fingerprint -> the installed third-party packages its code uses (top-level module names,
see :func:`installed_package`), whose versions are recorded with the results it computes
(see :mod:`checkpoint._packages`): a version change is reported, but re-runs nothing."""
_checked: dict[tuple[str, tuple[int, int]], tuple[float, bool]] = {}
"""``(file, (size, mtime_ns))`` -> when it was last compared with the file, and whether the
file had changed (then it stays changed: a revert gives it a new mtime)."""


def edited_since(digest: str, ended: float | None) -> list[str]:
    """The source files of the modules that the code of fingerprint ``digest`` imports as it
    runs, changed since it was taken: a task that imported one (a worker that had not loaded
    it) may have run either version, so its result may not be what the fingerprint says.
    One ``os.stat`` per file, or none when a comparison made after ``ended`` (a time on this
    machine's clock; ``None``: unknown) is at hand."""
    import time

    edited = []
    for file, key in code_files.get(digest, ()):
        seen = _checked.get((file, key))
        if seen is None or not (seen[1] or (ended is not None and seen[0] >= ended)):
            now = time.time()
            seen = _checked[(file, key)] = (now, _sources.file_key(file) != key)
        if seen[1]:
            edited.append(file)
    return edited
