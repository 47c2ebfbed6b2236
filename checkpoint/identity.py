"""Task identity: canonical argument encoding and code fingerprints.

A task is identified by its family and its bound arguments. Arguments are encoded as
canonical JSON (sorted keys, no whitespace). Plain JSON would let different Python values
collide -- ``(1, 2)`` and ``[1, 2]`` both become ``[1, 2]``, ``{1: x}`` and ``{"1": x}`` both
``{"1": x}`` -- so the values JSON cannot tell apart are written in tagged forms that no
plain value produces:

* a tuple -> ``{"$tuple": [...]}``
* a dict with a non-``str`` key, or a key starting with ``$`` -> ``{"$dict": [[k, v], ...]}``
  (pairs sorted by their encoding)
* a task handle -> ``{"$task": "<family>:<id>"}`` (its own identity, so nesting stays cheap)

Anything else (sets, paths, numpy scalars, arbitrary objects) is rejected with
:class:`~checkpoint.errors.UnserializableArgumentError` rather than guessed at.

A family's *code fingerprint* hashes the normalized source of its function, or of its whole
class body for a class task (parsed and unparsed with :mod:`ast`, so comments, formatting and
docstrings do not count) together with the same-module helper functions, classes and
constants it references, transitively.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import marshal
import sys
import textwrap
import types
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from .errors import UnserializableArgumentError

_SCALARS = (str, int, float, bool, type(None))
_CONSTANT_TYPES = (str, int, float, bool, type(None), bytes, complex, range, PurePath)


def _encode(value: Any, family: str, argument: str) -> Any:
    """Return a JSON-ready structure that identifies ``value`` without collisions."""
    if isinstance(value, _SCALARS):
        return value
    ident = getattr(value, "__checkpoint_identity__", None)
    if ident is not None:
        return {"$task": ident}
    if isinstance(value, list):
        return [_encode(v, family, argument) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, family, argument) for v in value]}
    if isinstance(value, dict):
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: _encode(v, family, argument) for k, v in value.items()}
        pairs = []
        for k, v in value.items():
            if not isinstance(k, _SCALARS) and not isinstance(k, tuple):
                raise UnserializableArgumentError(
                    f"Argument {argument!r} of task {family} has a dict key of type "
                    f"{type(k).__name__}, which cannot be encoded. Use str, int, float, bool "
                    "or None keys.",
                    family=family,
                    argument=argument,
                )
            pairs.append([_encode(k, family, argument), _encode(v, family, argument)])
        pairs.sort(key=lambda kv: _dumps(kv[0]))
        return {"$dict": pairs}
    if isinstance(value, PurePath):
        raise UnserializableArgumentError(
            f"Argument {argument!r} of task {family} is a path ({str(value)!r}). Pass it as a "
            f"str and declare the file in the task, @requires(File({str(value)!r})), so that a "
            "change to its content re-runs the task (a str alone tracks only the name).",
            family=family,
            argument=argument,
        )
    raise UnserializableArgumentError(
        f"Argument {argument!r} of task {family} is a {type(value).__module__}."
        f"{type(value).__qualname__}, which is not JSON-serializable. Pass JSON-like values "
        "(str, int, float, bool, None, lists, tuples, dicts) or task handles; convert other "
        "objects (e.g. list(a_set), int(numpy_value)) or produce them with a task.",
        family=family,
        argument=argument,
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def encode_arguments(family: str, arguments: Mapping[str, Any]) -> str:
    """Encode bound arguments canonically; the result is the task's identity within its family.

    Raises:
        UnserializableArgumentError: an argument (named in the message) cannot be encoded.
    """
    # Fast path (the common case on the hot path of expansion): ints and plain strings.
    parts = []
    for name in sorted(arguments):
        value = arguments[name]
        kind = type(value)
        if kind is int:
            parts.append(f'"{name}":{value}')
        elif kind is str and value.isalnum() and value.isascii():
            parts.append(f'"{name}":"{value}"')
        else:
            break
    else:
        if all(name.isidentifier() and name.isascii() for name in arguments):
            return "{" + ",".join(parts) + "}"
    encoded = {}
    for name, value in arguments.items():
        encoded[name] = value if type(value) in _SCALARS else _encode(value, family, name)
    try:
        return _dumps(encoded)
    except ValueError as exc:  # circular reference inside an argument
        raise UnserializableArgumentError(
            f"An argument of task {family} cannot be encoded: {exc}.", family=family, argument="?"
        ) from None


def task_id(family: str, encoded_arguments: str) -> str:
    """Return the 32-hex-digit id of the task ``family(encoded_arguments)``."""
    key = f"{family}\x00{encoded_arguments}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


# --- code fingerprints -------------------------------------------------------------------


class _Normalizer(ast.NodeTransformer):
    """Drop docstrings so that only code counts."""

    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_FunctionDef = _strip
    visit_AsyncFunctionDef = _strip
    visit_ClassDef = _strip


def _normalized_source(obj: Any, *, strip_decorators: bool) -> tuple[str, ast.AST] | None:
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if not tree.body:
        return None
    node = tree.body[0]
    if strip_decorators and isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    ):
        node.decorator_list = []
    node = _Normalizer().visit(node)
    return ast.unparse(node), node


def _constant_text(value: Any, depth: int = 0) -> str | None:
    """``repr(value)`` for a constant worth fingerprinting, else ``None``.

    Sets are written with their elements sorted: their own order depends on the process's
    hash seed, which would make the fingerprint differ from one run to the next.
    """
    if isinstance(value, _CONSTANT_TYPES):
        return repr(value)
    if depth >= 3 or not isinstance(value, (tuple, list, set, frozenset, dict)) or len(value) > 1000:
        return None
    parts = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
    texts = [_constant_text(v, depth + 1) for v in parts]
    if any(text is None for text in texts):
        return None
    if isinstance(value, (set, frozenset)):
        inner = "{" + ", ".join(sorted(str(t) for t in texts)) + "}" if texts else ""
        return inner if type(value) is set and texts else f"{type(value).__name__}({inner})"
    if all(text == repr(v) for text, v in zip(texts, parts, strict=True)):
        return repr(value)  # as it always was (a namedtuple keeps its field names)
    if isinstance(value, dict):  # a set inside: spelled out with its elements sorted
        n = len(value)
        return "{" + ", ".join(f"{k}: {v}" for k, v in zip(texts[:n], texts[n:], strict=True)) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(str, texts)) + (",)" if len(texts) == 1 else ")")
    return "[" + ", ".join(map(str, texts)) + "]"


def _code_bytes(fn: Callable[..., Any]) -> str:
    """Fallback when no source is available (e.g. a function built by exec)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return marshal.dumps(code.replace(co_firstlineno=1)).hex()


def _module_namespace(module: str | None) -> Mapping[str, Any]:
    """The globals of a class's module (classes have no ``__globals__``)."""
    mod = sys.modules.get(module) if module else None
    return vars(mod) if mod is not None else {}


def code_fingerprint(
    fn: Callable[..., Any], *, is_task: Callable[[Any], bool] = lambda _: False
) -> tuple[str, str]:
    """Return ``(digest, normalized_source)`` for a task function (or class) and what it uses.

    The normalized source lists the function (or the whole class body) itself first, then each same-module helper
    (function or class) and constant it references, directly or through other helpers,
    sorted by name. Other task families are not followed: their changes reach dependents
    through the DAG. Modules and objects from other modules are not followed either.
    """
    module = getattr(fn, "__module__", None)
    namespace: Mapping[str, Any] = getattr(fn, "__globals__", None) or _module_namespace(module)
    first = _normalized_source(fn, strip_decorators=True)
    if first is None:
        main_text = "# source unavailable; compiled code:\n" + _code_bytes(fn)
        return hashlib.blake2b(main_text.encode(), digest_size=16).hexdigest(), main_text
    main_text, tree = first
    pieces: dict[str, str] = {}
    seen: set[str] = set()
    work: list[ast.AST] = [tree]
    while work:
        node = work.pop()
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Name) or sub.id in seen:
                continue
            seen.add(sub.id)
            if sub.id not in namespace:
                continue
            value = namespace[sub.id]
            if value is fn or is_task(value):
                continue
            if isinstance(value, (types.FunctionType, type)) and getattr(
                value, "__module__", None
            ) == module:
                helper = _normalized_source(value, strip_decorators=False)
                if helper is None:
                    pieces[sub.id] = f"# {sub.id}: " + _code_bytes(value)
                else:
                    pieces[sub.id] = helper[0]
                    work.append(helper[1])
            elif not isinstance(value, types.ModuleType):
                text = _constant_text(value)
                if text is not None:
                    pieces[sub.id] = f"{sub.id} = {text}"
    text = "\n\n".join([main_text, *(pieces[name] for name in sorted(pieces))])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest(), text
