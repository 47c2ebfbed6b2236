"""What compiled code reads: globals (with the attributes read on them), globals it
changes, and modules imported inside functions, found with :mod:`dis`."""

from __future__ import annotations

import dis
import re
import types
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from ._sources import MUTATORS as _MUTATORS
from ._sources import UNKNOWN, Read

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
    bound: dict[str, dict[Read, None]] = {}  # local name -> reads whose attrs its uses extend
    bodies = [(c, [i for i in dis.get_instructions(c) if i.opname != "EXTENDED_ARG"])
              for c in _walk_code(code)]
    for c, ins in bodies:
        class_locals = {i.argval for i in ins if i.opname == "STORE_NAME"}
        for k, i in enumerate(ins):
            if i.opname in _GLOBAL_LOADS and i.argval not in class_locals:
                chain = _chain(ins, k + 1)
                if not chain and i.argval in _RUNNERS:
                    reads.update(dict.fromkeys(_code_run(str(i.argval), ins, k + 1, c)))
                call = _call_by_literal_name(ins, k + 1 + len(chain), c.co_consts)
                if call is None:
                    reads[("g", str(i.argval), chain)] = None
                else:
                    _put_call(reads, bound, ("m", str(i.argval), chain), call)
                written = _written(ins, k + 1 + len(chain), chain)
                if written is not None:
                    reads[("w", str(i.argval), written)] = None
            elif i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                reads[("w", str(i.argval), ())] = None
            elif i.opname == "IMPORT_NAME":
                for name, read in _local_import(ins, k).items():
                    bound.setdefault(name, {})[read] = None
    done: set[tuple[str, Read]] = set()
    while len(done) < sum(map(len, bound.values())):  # a call's result may bind one more
        todo: dict[str, list[Read]] = {}
        for name, found in list(bound.items()):
            for read in found:
                if (name, read) not in done:
                    done.add((name, read))
                    todo.setdefault(name, []).append(read)
        for c, ins in bodies:
            for k, i in enumerate(ins):
                if not i.opname.startswith(("LOAD_FAST", "LOAD_DEREF", "LOAD_NAME")):
                    continue
                names = i.argval if isinstance(i.argval, tuple) else (i.argval,)
                for kind, base, attrs in [r for n in names for r in todo.get(n, ())]:
                    chain = _chain(ins, k + 1) if len(names) == 1 else ()
                    call = None
                    if kind == "i" and len(names) == 1:
                        call = _call_by_literal_name(ins, k + 1 + len(chain), c.co_consts)
                    if call is None:
                        reads[(kind, base, attrs + chain)] = None
                    else:
                        _put_call(reads, bound, ("m", base, attrs + chain), call)
    return tuple(reads)


_CALLS = frozenset({"CALL", "CALL_FUNCTION", "CALL_METHOD", "CALL_KW", "CALL_FUNCTION_KW"})
_VARIABLES = frozenset({"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_DEREF", "LOAD_CLASSDEREF",
                        "LOAD_GLOBAL", "LOAD_NAME"})
_MODULE_NAME = re.compile(r"\.+|\.*\w+(\.\w+)*")


class _Variable:
    """An argument read from a variable: not known before the code runs (``name``: the
    global it is, if one)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name


_RUNNERS = frozenset({"eval", "exec", "compile"})


def _code_run(runner: str, ins: list[dis.Instruction], k: int, code: types.CodeType) -> list[Read]:
    """What the code that ``eval``/``exec``/``compile`` (loaded just before ``ins[k]``, in
    ``code``) runs reads: for a string written out, what it reads as code (a name that is a
    local of ``code`` excluded: it is that local); for a global (``eval(EXPR)``), ``("x",
    runner, (name,))``, compiled when its value is known; for any other, ``("x", runner,
    ())``: not known before it runs."""
    found = _literal_arguments(ins, k, code.co_consts)
    first = found[0][0] if found is not None and found[0] else None
    if isinstance(first, str):
        own = {*code.co_varnames, *code.co_cellvars, *code.co_freevars}
        reads = source_reads(first)
        return [r for r in reads or () if not (r[0] == "g" and r[1] in own)]
    name = first.name if isinstance(first, _Variable) else None
    return [("x", runner, (name,) if name else ())]


@lru_cache(maxsize=256)
def source_reads(source: str) -> tuple[Read, ...] | None:
    """What code given as a string reads (see :func:`disassemble`), or ``None`` when it is
    not Python."""
    for mode in ("eval", "exec"):
        try:
            return disassemble(compile(source, "<string>", mode, dont_inherit=True))
        except (SyntaxError, ValueError):
            continue
    return None


def _call_by_literal_name(ins: list[dis.Instruction], k: int, consts: tuple[object, ...],
                          ) -> tuple[tuple[str, ...], tuple[str, ...], str | None] | None:
    """When ``ins[k:]`` calls what was loaded just before with a first argument that is a
    module name written as a literal string (``import_module("pkg.util")``,
    ``__import__("pkg.util", fromlist=["h"])``): ``(spec, use, stored)``, where ``spec`` is
    ``("(", name, package, fromlist, level, how)``, the arguments that choose the module
    whichever function it is (:data:`UNKNOWN` when one is not a literal; fromlist ``"1"``
    when given and not empty), ``how`` is ``"stored"`` when the result goes into the local
    ``stored`` (its uses are read apart) else ``"used"``, and ``use`` the attributes read on
    the result. ``None`` for any other code (then the name is computed, or not a module's)."""
    found = _literal_arguments(ins, k, consts)
    if found is None:
        return None
    positional, keywords, end = found
    name = positional[0] if positional else None
    if not isinstance(name, str) or not _MODULE_NAME.fullmatch(name):
        return None

    def argument(n: int, keyword: str, default: object) -> object:
        return positional[n] if len(positional) > n else keywords.get(keyword, default)

    package, fromlist, level = argument(1, "package", ""), argument(3, "fromlist", ()), argument(4, "level", 0)
    spec = ("(", name, package if isinstance(package, str) else UNKNOWN,
            UNKNOWN if isinstance(fromlist, _Variable) else "1" if fromlist else "",
            str(level) if type(level) is int else UNKNOWN)
    after = ins[end + 1] if end + 1 < len(ins) else None
    if after is not None and after.opname in ("STORE_FAST", "STORE_DEREF", "STORE_NAME"):
        return (*spec, "stored"), (), str(after.argval)
    return (*spec, "used"), _chain(ins, end + 1), None


def _literal_arguments(ins: list[dis.Instruction], k: int, consts: tuple[object, ...],
                       ) -> tuple[list[object], dict[str, object], int] | None:
    """The arguments of the call of what was loaded just before ``ins[k]`` when each is a
    literal (a constant, a list or tuple of them) or a plain variable (``globals()``
    included: then a :class:`_Variable`), and the index of the call; else ``None``."""
    stack: list[object] = []
    keywords: object = ()
    j = k + (k < len(ins) and ins[k].opname == "PUSH_NULL")
    while j < len(ins) and j < k + 40:
        i, op = ins[j], ins[j].opname
        if op == "LOAD_CONST":
            stack.append(i.argval)
        elif op in ("LOAD_GLOBAL", "LOAD_NAME") and (call := _no_argument_call(ins, j + 1)):
            stack.append(_Variable())  # globals(), locals()
            j = call
        elif op in _VARIABLES and dis.stack_effect(i.opcode, i.arg) == 1:
            stack.append(_Variable(str(i.argval) if op in ("LOAD_GLOBAL", "LOAD_NAME") else None))
        elif op == "LOAD_ATTR" and stack and dis.stack_effect(i.opcode, i.arg) == 0:
            stack[-1] = _Variable()
        elif op in ("BUILD_LIST", "BUILD_TUPLE") and i.arg is not None and i.arg <= len(stack):
            items = stack[len(stack) - i.arg:]
            del stack[len(stack) - i.arg:]
            stack.append(items)
        elif op == "LIST_EXTEND" and i.arg == 1 and len(stack) >= 2 and isinstance(stack[-1], tuple):
            extra = stack.pop()
            stack[-1] = [*stack[-1], *extra] if isinstance(stack[-1], list) else _Variable()
        elif op == "KW_NAMES" and i.arg is not None:
            keywords = consts[i.arg]
        elif op in _CALLS:
            if op in ("CALL_KW", "CALL_FUNCTION_KW"):
                keywords = stack.pop() if stack else None
            if not isinstance(keywords, tuple) or i.arg != len(stack) or len(keywords) > len(stack):
                return None
            cut = len(stack) - len(keywords)
            return stack[:cut], dict(zip(map(str, keywords), stack[cut:], strict=True)), j
        elif op != "PRECALL":
            return None
        j += 1
    return None


def _no_argument_call(ins: list[dis.Instruction], k: int) -> int | None:
    """The index of the call at ``ins[k]`` when it calls, with no arguments, what was loaded
    just before (``globals()``), else ``None``."""
    k += k < len(ins) and ins[k].opname == "PRECALL"
    return k if k < len(ins) and ins[k].opname in _CALLS and ins[k].arg == 0 else None


def _put_call(reads: dict[Read, None], bound: dict[str, dict[Read, None]], callee: Read,
              call: tuple[tuple[str, ...], tuple[str, ...], str | None]) -> None:
    """Record a call by a literal module name (see :func:`_call_by_literal_name`)."""
    kind, base, attrs = callee
    spec, use, stored = call
    reads[(kind, base, attrs + spec + use)] = None
    if stored is not None:
        bound.setdefault(stored, {})[(kind, base, attrs + spec[:-1] + ("used",))] = None


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


def _local_import(ins: list[dis.Instruction], k: int) -> dict[str, Read]:
    """The names bound by the import statement whose ``IMPORT_NAME`` is ``ins[k]``."""
    module = str(ins[k].argval)
    level = ins[k - 2].argval if k >= 2 and ins[k - 2].opname == "LOAD_CONST" else 0
    fromlist = ins[k - 1].argval if k >= 1 and ins[k - 1].opname == "LOAD_CONST" else None
    qualified = f"{level or 0}:{module}"
    bound: dict[str, Read] = {}
    taken: list[str] = []
    for i in ins[k + 1:]:
        if i.opname not in _IMPORT_GLUE:
            break
        if i.opname == "IMPORT_FROM":
            taken.append(str(i.argval))
        elif i.opname in _STORES:
            name = str(i.argval)
            if fromlist:  # from module import a as name
                bound[name] = ("i", qualified, tuple(taken[-1:]))
            elif taken:  # import a.b.c as name
                bound[name] = ("i", qualified, ())
                break
            else:  # import a.b.c binds a
                bound[name] = ("i", f"{level or 0}:{module.split('.')[0]}", ())
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
