"""What compiled code reads: globals (with the attributes read on them), globals it
changes, and modules imported inside functions, found with :mod:`dis`."""

from __future__ import annotations

import dis
import types
from collections.abc import Iterator
from typing import Any

from ._sources import Read

_GLOBAL_LOADS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"}
_ATTR_LOADS = {"LOAD_ATTR", "LOAD_METHOD"}
_STORES = {"STORE_FAST", "STORE_DEREF", "STORE_NAME", "STORE_GLOBAL"}
_IMPORT_GLUE = {"IMPORT_FROM", "SWAP", "POP_TOP", "COPY", *_STORES}


def _chain(ins: list[dis.Instruction], k: int) -> tuple[str, ...]:
    names: list[str] = []
    while k < len(ins) and ins[k].opname in _ATTR_LOADS:
        names.append(str(ins[k].argval))
        k += 1
    return tuple(names)


def _walk_code(code: types.CodeType) -> Iterator[types.CodeType]:
    stack = [code]
    while stack:
        c = stack.pop()
        yield c
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))


def disassemble(code: types.CodeType) -> tuple[Read, ...]:
    """What a function's code (nested functions, lambdas, classes and comprehensions
    included) reads and changes as globals, and the modules it imports inside (see
    :data:`~checkpoint._sources.Read`). Locals, parameters and closures are told apart by
    the compiler: only ``LOAD_GLOBAL``/``LOAD_NAME`` name a global."""
    reads: dict[Read, None] = {}
    imported: dict[str, tuple[str, tuple[str, ...]]] = {}  # local name -> (module, attrs)
    bodies = [[i for i in dis.get_instructions(c) if i.opname != "EXTENDED_ARG"]
              for c in _walk_code(code)]
    for ins in bodies:
        class_locals = {i.argval for i in ins if i.opname == "STORE_NAME"}
        for k, i in enumerate(ins):
            if i.opname in _GLOBAL_LOADS and i.argval not in class_locals:
                chain = _chain(ins, k + 1)
                reads[("g", str(i.argval), chain)] = None
                written = _written(ins, k + 1 + len(chain), chain)
                if written is not None:
                    reads[("w", str(i.argval), written)] = None
            elif i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                reads[("w", str(i.argval), ())] = None
            elif i.opname == "IMPORT_NAME":
                imported.update(_local_import(ins, k))
    if imported:
        for ins in bodies:
            for k, i in enumerate(ins):
                if not i.opname.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_NAME")):
                    continue
                names = i.argval if isinstance(i.argval, tuple) else (i.argval,)
                for name in names:
                    if name in imported:
                        module, attrs = imported[name]
                        chain = _chain(ins, k + 1) if len(names) == 1 else ()
                        reads[("i", module, attrs + chain)] = None
    return tuple(reads)


_MUTATORS = frozenset({
    "append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "popleft",
    "remove", "discard", "clear", "sort", "reverse", "appendleft", "extendleft",
    "__setitem__", "__delitem__",
})
_SIMPLE_LOADS = {"LOAD_FAST", "LOAD_CONST", "LOAD_DEREF", "LOAD_GLOBAL", "LOAD_NAME"}


def _written(ins: list[dis.Instruction], k: int, chain: tuple[str, ...]) -> tuple[str, ...] | None:
    """When the global loaded just before ``ins[k]`` (then ``chain``) is changed in place --
    ``X.append(...)``, ``X[key] = v``, ``X.attr = v``, ``del X[key]`` -- the attributes
    leading to the object changed (``()`` for the global itself), else ``None``."""
    if chain and chain[-1] in _MUTATORS:
        return chain[:-1]
    nxt = ins[k].opname if k < len(ins) else ""
    if nxt in ("STORE_ATTR", "DELETE_ATTR"):
        return chain
    if nxt in _SIMPLE_LOADS and k + 1 < len(ins) and ins[k + 1].opname in ("STORE_SUBSCR", "DELETE_SUBSCR"):
        return chain
    return None


def _local_import(ins: list[dis.Instruction], k: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The names bound by the import statement whose ``IMPORT_NAME`` is ``ins[k]``."""
    module = str(ins[k].argval)
    level = ins[k - 2].argval if k >= 2 and ins[k - 2].opname == "LOAD_CONST" else 0
    fromlist = ins[k - 1].argval if k >= 1 and ins[k - 1].opname == "LOAD_CONST" else None
    qualified = f"{level or 0}:{module}"
    bound: dict[str, tuple[str, tuple[str, ...]]] = {}
    taken: list[str] = []
    for i in ins[k + 1:]:
        if i.opname not in _IMPORT_GLUE:
            break
        if i.opname == "IMPORT_FROM":
            taken.append(str(i.argval))
        elif i.opname in _STORES:
            name = str(i.argval)
            if fromlist:  # from module import a as name
                bound[name] = (qualified, tuple(taken[-1:]))
            elif taken:  # import a.b.c as name
                bound[name] = (qualified, ())
                break
            else:  # import a.b.c binds a
                bound[name] = (f"{level or 0}:{module.split('.')[0]}", ())
                break
    return bound


def code_digest(code: types.CodeType) -> str:
    """A digest of what a code object does (its bytecode, constants, names and nested code),
    leaving out line numbers and file name: the same for the code Python loaded from a file
    and for the same file compiled again, and in every process (the text hashed is a
    ``repr``, not :func:`marshal.dumps`, whose back-references depend on reference counts);
    different once the file's code changed."""
    cached = _digests.get(code)
    if cached is None:
        import hashlib

        data: Any = (
            code.co_name, code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount,
            code.co_flags, code.co_code, tuple(_const_key(c) for c in code.co_consts),
            code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
        )
        text = repr(data).encode("utf-8", "surrogatepass")
        cached = _digests[code] = hashlib.blake2b(text, digest_size=12).hexdigest()
    return cached


_digests: dict[types.CodeType, str] = {}


def _const_key(value: object) -> object:
    """A constant as marshal can write it the same in every process (a frozenset's order
    depends on the hash seed; nested code by its digest)."""
    if isinstance(value, types.CodeType):
        return ("<code>", code_digest(value))
    if isinstance(value, tuple):
        return tuple(_const_key(v) for v in value)
    if isinstance(value, frozenset):
        return ("<frozenset>", tuple(sorted(repr(_const_key(v)) for v in value)))
    return value


def code_digests(module_code: types.CodeType) -> dict[str, tuple[str, ...]]:
    """The digest of every function and class body compiled from one file, by qualified
    name (several when a name is defined more than once)."""
    out: dict[str, list[str]] = {}
    for code in _walk_code(module_code):
        name = getattr(code, "co_qualname", code.co_name)
        out.setdefault(name, []).append(code_digest(code))
    return {name: tuple(digests) for name, digests in out.items()}


_cells_written: dict[types.CodeType, frozenset[str]] = {}


def written_cells(code: types.CodeType) -> frozenset[str]:
    """The closure variables a function's code changes (``nonlocal n; n += 1``, or in place:
    ``cache[key] = v``, ``seen.add(x)``): state kept between calls, not input."""
    cached = _cells_written.get(code)
    if cached is None:
        names: set[str] = set()
        for c in _walk_code(code):
            ins = [i for i in dis.get_instructions(c) if i.opname != "EXTENDED_ARG"]
            for k, i in enumerate(ins):
                if i.opname in ("STORE_DEREF", "DELETE_DEREF"):
                    names.add(str(i.argval))
                elif i.opname == "LOAD_DEREF":
                    chain = _chain(ins, k + 1)
                    if _written(ins, k + 1 + len(chain), chain) is not None:
                        names.add(str(i.argval))
        cached = _cells_written[code] = frozenset(names)
    return cached
