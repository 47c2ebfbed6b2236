"""Normalized sources for code fingerprints, computed once per file version.

For each source file, what the fingerprint needs from it -- the normalized text of a function
or class (parsed and unparsed with :mod:`ast`: no comments, formatting or docstrings), what
its ``def``/``class`` statement reads when it runs (decorators, defaults, bases, a class body),
how a module-level name is bound, the whole module's normalized text -- is computed on demand
from one parse of the file, and kept: in this process, and on disk next to Python's own
bytecode cache (``__pycache__/{name}.{cache_tag}.checkpoint{N}.fp``, not written when Python
writes no bytecode either), keyed by the file's (path, size, mtime_ns). A warm run reads those
small files instead of parsing the project's modules again.

Sources that exist only in :mod:`linecache` (notebook cells) are indexed in memory only.
"""

from __future__ import annotations

import ast
import atexit
import copy
import hashlib
import importlib.util
import linecache
import marshal
import os
import sys
import time
import types
from collections.abc import Iterable, Iterator
from typing import Any

_FORMAT = 3
"""Version of what the disk cache holds; bump it when any stored text or read changes."""

Read = tuple[str, str, tuple[str, ...]]
"""``(kind, name, attributes)``: kind ``"g"`` for a global ``name`` read (then attributes
read on it, e.g. ``("g", "features", ("scale",))``); ``"w"`` for a global changed by the
code (rebound, or changed in place through those attributes: ``CALLS.append(...)``); ``"i"``
for a module imported inside a function (``name`` is ``"{level}:{module}"``, attributes are
the names taken from it); ``"m"`` for a call whose first argument is a module name written
as a literal string (``importlib.import_module("pkg.util")``, ``__import__("pkg.util")``):
``name`` and the attributes up to ``"("`` are what is called (``name`` a global, or
``"{level}:{module}"`` for a module imported inside the function), then the arguments that
choose the module (see :func:`checkpoint._bytecode._call_by_literal_name`), then the
attributes read on the result."""

UNKNOWN = "\x00"
"""In a read of kind ``"m"``: an argument that is not a literal."""

MUTATORS = frozenset({
    "append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "popleft",
    "remove", "discard", "clear", "sort", "reverse", "appendleft", "extendleft",
    "__setitem__", "__delitem__",
})
"""Methods that change a container in place (``CALLS.append(x)``: the global is state)."""

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def file_key(filename: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or ``None`` when it is not one."""
    try:
        st = os.stat(filename)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


# --- reads of def-time expressions -------------------------------------------------------


def ast_reads(nodes: Iterable[ast.AST], bound: Iterable[str] = ()) -> list[Read]:
    """Global reads of expressions (a name and the attributes read on it), except ``bound``."""
    skip = set(bound)
    out: list[Read] = []
    for node in nodes:
        inner: set[int] = set()  # attributes and names inside a chain already counted
        for sub in ast.walk(node):
            if id(sub) in inner:
                continue
            if isinstance(sub, ast.Attribute):
                attrs: list[str] = []
                base: ast.AST = sub
                while isinstance(base, ast.Attribute):
                    inner.add(id(base))
                    attrs.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and base.id not in skip:
                    inner.add(id(base))
                    out.append(("g", base.id, tuple(reversed(attrs))))
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in skip:
                out.append(("g", sub.id, ()))
    return out


def _def_time_nodes(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]
    assert isinstance(node, _FUNCS)
    return [*node.decorator_list, *node.args.defaults,
            *(d for d in node.args.kw_defaults if d is not None)]


def def_time_reads(node: ast.AST) -> list[Read]:
    """What a def or class statement reads when it runs: decorators, defaults, bases and,
    for a class, its body outside the methods (the names it assigns itself excluded).
    Annotations are left out: they do not change what the code does."""
    if isinstance(node, _FUNCS):
        return ast_reads(_def_time_nodes(node))
    if not isinstance(node, ast.ClassDef):
        return []
    assigned = {sub.id for stmt in node.body for sub in ast.walk(stmt)
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store)}
    assigned |= {stmt.name for stmt in node.body if isinstance(stmt, _DEFS)}
    exprs = _def_time_nodes(node)
    for stmt in node.body:
        if isinstance(stmt, _DEFS):
            exprs.extend(_def_time_nodes(stmt))
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is not None:
                exprs.append(stmt.value)
        else:
            exprs.append(stmt)
    return ast_reads(exprs, assigned)


def strip_docstrings(node: ast.AST, done: set[int] | None = None) -> None:
    """Drop the docstrings of ``node`` and of the defs inside it, in place (each def only
    once when ``done`` records them: stripping twice would drop a second string)."""
    for sub in ast.walk(node):
        if not isinstance(sub, (*_DEFS, ast.Module)):
            continue
        if done is not None:
            if id(sub) in done:
                continue
            done.add(id(sub))
        body = sub.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            sub.body = body[1:] or ([] if isinstance(sub, ast.Module) else [ast.Pass()])


# --- one file's index --------------------------------------------------------------------


def _start(node: ast.AST) -> int:
    """The line a def starts on, decorators included (a code object's ``co_firstlineno``)."""
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([getattr(node, "lineno", 0), *(d.lineno for d in decorators)])


def _defs(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.AST]]:
    """``(qualname, node)`` of every function and class, nested ones too."""
    for stmt in body:
        if isinstance(stmt, _DEFS):
            qualname = prefix + stmt.name
            yield qualname, stmt
            inner = qualname + (".<locals>." if isinstance(stmt, _FUNCS) else ".")
            yield from _defs(stmt.body, inner)
        else:
            for attr in ("body", "orelse", "finalbody"):
                block = getattr(stmt, attr, None)
                if isinstance(block, list):
                    yield from _defs([s for s in block if isinstance(s, ast.stmt)], prefix)
            for handler in getattr(stmt, "handlers", ()):
                yield from _defs(handler.body, prefix)


def _bindings(body: list[ast.stmt], out: dict[str, list[ast.stmt]]) -> None:
    """The module-level statements that bind each name (inside if/try/with/for too)."""
    for stmt in body:
        names: list[str] = []
        if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in stmt.names]
        elif isinstance(stmt, _DEFS):
            names = [stmt.name]
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            names = [n.id for item in stmt.items if item.optional_vars is not None
                     for n in ast.walk(item.optional_vars) if isinstance(n, ast.Name)]
        for name in names:
            out.setdefault(name, []).append(stmt)
        for dotted in _attribute_targets(stmt):
            out.setdefault(dotted, []).append(stmt)
        if isinstance(stmt, _DEFS):
            continue
        for attr in ("body", "orelse", "finalbody"):
            block = getattr(stmt, attr, None)
            if isinstance(block, list):
                _bindings([s for s in block if isinstance(s, ast.stmt)], out)
        for handler in getattr(stmt, "handlers", ()):
            _bindings(handler.body, out)


def _seeds(call: ast.expr) -> bool:
    """Whether an expression calls a function that seeds (or sets the state of) a random
    generator: ``random.seed``, ``np.random.seed``, ``torch.manual_seed``, ``set_seed``,
    ``seed_everything``, ``np.random.set_state``."""
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return "seed" in name.lower() or name in ("setstate", "set_state")


def _seed_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module-level statements that seed a global random generator (see :func:`_seeds`),
    inside ``if``, ``try`` and ``with`` blocks too, except under ``if __name__ ==
    "__main__":`` (which does not run when the module is imported)."""
    for stmt in body:
        if isinstance(stmt, (ast.Expr, ast.Assign)) and _seeds(stmt.value):
            yield stmt
        elif isinstance(stmt, ast.If) and "__main__" in ast.unparse(stmt.test):
            continue
        elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
            blocks = [stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", []),
                      *(h.body for h in getattr(stmt, "handlers", ()))]
            for block in blocks:
                yield from _seed_statements(block)


def _attribute_targets(stmt: ast.stmt) -> set[str]:
    """``"Cls.attr"`` for each attribute of a module-level name that a statement binds or
    changes in place: ``Config.PARAMS = ...``, ``Config.PARAMS["lr"] = ...``,
    ``Config.PARAMS.update(...)``."""
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    elif (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
          and isinstance(stmt.value.func, ast.Attribute) and stmt.value.func.attr in MUTATORS):
        targets = [stmt.value.func.value]
    else:
        return set()
    out = set()
    for target in (t for top in targets for t in ast.walk(top)):
        while isinstance(target, ast.Subscript):
            target = target.value
        parts: list[str] = []
        while isinstance(target, ast.Attribute):
            parts.append(target.attr)
            target = target.value
        if parts and isinstance(target, ast.Name):
            out.add(".".join([target.id, *reversed(parts)]))
    return out


class _Index:
    """What is known of one version of one source file; entries are computed on demand."""

    def __init__(self, filename: str, key: tuple[int, int] | None, source: str | bytes | None,
                 entries: dict[Any, Any], digest: str | None = None) -> None:
        self.filename = filename
        self.key = key
        """``(size, mtime_ns)`` of the file; ``None`` for a source known to linecache only."""
        self.source = source
        """The source if already read (else the file is read when first needed)."""
        self.digest = digest
        """For a file changed moments ago: a hash of its content, checked again before the
        index is reused (another change in the same clock tick keeps size and mtime), and the
        index is never written to disk (git's "racily clean" entries)."""
        self.checked = -1
        self.entries = entries
        self.dirty = False
        self._parsed = False
        self._tree: ast.Module | None = None
        self._stripped: set[int] = set()
        self._functions: dict[tuple[str, int], ast.AST] = {}
        self._classes: dict[str, list[ast.ClassDef]] = {}
        self._bindings: dict[str, list[ast.stmt]] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        try:
            return self.entries[key]
        except KeyError:
            pass
        value = self._compute(key) if self._parse() else None
        self.put(key, value)
        return value

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        """Keep an entry (also one computed elsewhere: what a code object of this file reads)."""
        self.entries[key] = value
        if not self.dirty and self.key is not None and self.digest is None:
            self.dirty = True
            _save_at_exit()

    def _parse(self) -> bool:
        if not self._parsed:
            self._parsed = True
            source = self.source
            if source is None:
                source = _read(self.filename)
                if source is None:
                    return False
                if file_key(self.filename) != self.key:  # changed while we read it
                    self.key = None
            self.source = source
            try:
                tree = ast.parse(source)
            except (SyntaxError, ValueError):
                return False
            self._tree = tree
            for qualname, node in _defs(tree.body, ""):
                if isinstance(node, ast.ClassDef):
                    self._classes.setdefault(qualname, []).append(node)
                else:
                    self._functions[(getattr(node, "name", ""), _start(node))] = node
            _bindings(tree.body, self._bindings)
        return self._tree is not None

    def _strip(self, node: ast.AST) -> None:
        strip_docstrings(node, self._stripped)

    def _text(self, node: ast.AST, strip_decorators: bool) -> tuple[str, list[Read]]:
        self._strip(node)
        if strip_decorators:
            node = copy.copy(node)
            node.decorator_list = []  # type: ignore[attr-defined]
        return ast.unparse(node), def_time_reads(node)

    def _compute(self, key: tuple[Any, ...]) -> Any:
        kind = key[0]
        if kind == "def":
            _, name, line, strip = key
            node = self._functions.get((name, line))
            return None if node is None else self._text(node, strip)
        if kind == "class":
            _, qualname, line, strip = key
            candidates = self._classes.get(qualname, [])
            if line:  # a line of one of its methods tells apart classes of the same name
                candidates = [c for c in candidates
                              if c.lineno <= line <= (c.end_lineno or c.lineno)] or candidates
            return None if not candidates else self._text(candidates[-1], strip)
        if kind == "bind":
            return self._binding(key[1])
        if kind == "seeds":
            assert self._tree is not None
            stmts = list(_seed_statements(self._tree.body))
            for stmt in stmts:
                self._strip(stmt)
            return ("\n".join(ast.unparse(s) for s in stmts), tuple(ast_reads(stmts))) if stmts else None
        assert kind == "module" and self._tree is not None
        self._strip(self._tree)
        return ast.unparse(self._tree)

    def compiled(self, optimize: int) -> types.CodeType | None:
        """This version of the file compiled as the import system compiles it (not kept:
        :func:`checkpoint.fingerprint.check_loaded` keeps digests of it as an entry)."""
        if not self._parse():
            return None
        assert self.source is not None
        try:
            return compile(self.source, self.filename, "exec", dont_inherit=True, optimize=optimize)
        except (SyntaxError, ValueError):
            return None

    def _binding(self, name: str) -> tuple[Any, ...] | None:
        """``("from", level, module, original)`` for a name imported from another module,
        ``("assign", text, reads)`` for one assigned here, ``None`` when none is found."""
        stmts = self._bindings.get(name)
        if not stmts:
            return None
        if all(isinstance(s, ast.ImportFrom) for s in stmts):
            last = stmts[-1]
            assert isinstance(last, ast.ImportFrom)
            original = next(a.name for a in last.names if (a.asname or a.name) == name)
            return ("from", last.level, last.module or "", original)
        for stmt in stmts:
            self._strip(stmt)
        values = [getattr(s, "value", None) or s for s in stmts]
        return ("assign", "; ".join(ast.unparse(s) for s in stmts),
                tuple(ast_reads(values, [name])))


# --- the indexes of this process, and their disk cache ------------------------------------

_indexes: dict[str, _Index] = {}
_linecache_sources: dict[str, list[str]] = {}


def _cache_path(filename: str) -> str | None:
    try:
        pyc = importlib.util.cache_from_source(filename)
    except (NotImplementedError, ValueError):
        return None
    return pyc.removesuffix(".pyc") + f".checkpoint{_FORMAT}.fp"


def _load(filename: str, key: tuple[int, int]) -> dict[Any, Any]:
    path = _cache_path(filename)
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if isinstance(data, tuple) and len(data) == 3 and data[0] == _FORMAT and data[1] == key \
            and isinstance(data[2], dict):
        return data[2]
    return {}


_RACY_NS = 2_000_000_000
"""A file whose mtime is this recent may change again without its (size, mtime) changing."""

_stats: dict[str, tuple[int, int] | None] = {}
"""``file_key`` of each file seen since :func:`begin`: one ``stat`` per file and fingerprint."""
_generation = 0


def begin() -> None:
    """Start a fingerprint: files are looked at (``stat``) again."""
    global _generation
    _stats.clear()
    _generation += 1


def seen_key(filename: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file as the fingerprint begun last saw it (now, if it did not)."""
    return _stats[filename] if filename in _stats else file_key(filename)


def _read(filename: str) -> bytes | None:
    try:
        with open(filename, "rb") as f:
            return f.read()
    except OSError:
        return None


def _content_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def index(filename: str, module_globals: dict[str, Any] | None = None) -> _Index | None:
    """The index of a source file (or of a source that only :mod:`linecache` has)."""
    try:
        key = _stats[filename]
    except KeyError:
        key = _stats[filename] = file_key(filename)
    found = _indexes.get(filename)
    if key is not None:
        if found is not None and found.key == key:
            if found.digest is None or found.checked == _generation:
                return found
            data = _read(filename)
            if data is not None and _content_digest(data) == found.digest:
                found.checked = _generation
                return found
        if time.time_ns() - key[1] < _RACY_NS:
            data = _read(filename)
            if data is None:
                return None
            found = _Index(filename, key, data, {}, _content_digest(data))
            found.checked = _generation
        else:
            found = _Index(filename, key, None, _load(filename, key))
        _indexes[filename] = found
        return found
    lines = linecache.getlines(filename, module_globals)
    if not lines:
        return None
    if found is None or _linecache_sources.get(filename) is not lines:
        _linecache_sources[filename] = lines
        found = _indexes[filename] = _Index(filename, None, "".join(lines), {})
    return found


_registered = False


def _save_at_exit() -> None:
    """Write the disk caches once, when the process ends, rather than after each family."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(save)


def save() -> None:
    """Write the indexes that gained entries to their disk cache (errors are ignored: the
    cache only saves time)."""
    if sys.dont_write_bytecode:
        return
    for idx in _indexes.values():
        if not idx.dirty or idx.key is None:
            continue
        idx.dirty = False
        path = _cache_path(idx.filename)
        if path is None or file_key(idx.filename) != idx.key:
            continue
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                marshal.dump((_FORMAT, idx.key, idx.entries), f)
            os.replace(tmp, path)
        except (OSError, ValueError):
            try:
                os.unlink(tmp)
            except OSError:
                pass
