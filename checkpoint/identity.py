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
* an enum member -> ``{"$enum": ["<module>.<class>", "<name>", value]}`` (a ``str`` or ``int``
  enum is not its plain value: the task sees another object)
* an instance of a subclass of those types (a named tuple, an ``OrderedDict``, whose order
  counts, a ``defaultdict``) -> ``{"$type": ["<module>.<class>", <as its base type>]}``;
  except a NumPy ``float64``, which is the ``float`` it equals (what ``ls`` shows, and what
  pasted back names the same task)

Dicts are keyed by their content, not their order: ``{"x": 1, "y": 2}`` and ``{"y": 2, "x": 1}``
are one argument, as they are equal in Python (and for joblib.Memory).

Anything else (sets, paths, other numpy scalars, arbitrary objects) is rejected with
:class:`~checkpoint.errors.UnserializableArgumentError` rather than guessed at.

A family's *code fingerprint* hashes the normalized source of its function, or of its whole
class body for a class task, together with everything its code reads: see
:mod:`checkpoint.fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import PurePath
from typing import Any

from .errors import UnserializableArgumentError

_SCALARS = (str, int, float, bool, type(None))
_EXACT = frozenset(_SCALARS)


def _encode(value: Any, family: str, argument: str) -> Any:
    """Return a JSON-ready structure that identifies ``value`` without collisions."""
    if isinstance(value, Enum):  # before the scalars: Split.TRAIN is a str, but not "train"
        kind = type(value)
        return {"$enum": [f"{kind.__module__}.{kind.__qualname__}", value.name,
                          _encode(value.value, family, argument)]}
    kind = type(value)
    if kind in _EXACT:
        return value
    ident = getattr(value, "__checkpoint_identity__", None)
    if ident is not None:
        return {"$task": ident}
    if kind is list:
        return [_encode(v, family, argument) for v in value]
    if kind is tuple:
        return {"$tuple": [_encode(v, family, argument) for v in value]}
    if isinstance(value, (*_SCALARS, list, tuple, dict)) and kind is not dict:
        return _subclass(value, family, argument)
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


def detached(value: Any) -> Any:
    """A copy of an argument that no later change to ``value`` reaches: its lists and dicts
    copied at any depth, anything else of the types :func:`encode_arguments` accepts
    (scalars, tuples of them, enum members, task handles) kept as is, and a subclass
    instance (a named tuple, an ``OrderedDict``) deep-copied. A task keeps this copy,
    so that it computes with the values its id was made of."""
    kind = type(value)
    if kind in _EXACT:
        return value
    if kind is dict:  # (keys are hashable, so scalars or tuples of them)
        copied = value.copy()
        for k, v in value.items():
            if type(v) not in _EXACT:
                copied[k] = detached(v)
        return copied
    if kind is list:
        listed = value.copy()
        for i, v in enumerate(value):
            if type(v) not in _EXACT:
                listed[i] = detached(v)
        return listed
    if kind is tuple:
        for v in value:
            if type(v) not in _EXACT:
                return tuple([v if type(v) in _EXACT else detached(v) for v in value])
        return value
    if isinstance(value, Enum) or hasattr(value, "__checkpoint_identity__"):
        return value
    import copy

    return copy.deepcopy(value)


def _subclass(value: Any, family: str, argument: str) -> Any:
    """A subclass of an argument type (a named tuple, an ``OrderedDict``, a ``str``
    subclass) may behave otherwise in the task than its base: tagged with its class,
    ``{"$type": ["<module>.<class>", <its content as the base type>]}``. An ``OrderedDict``
    keeps its order (its ``==`` does), a ``defaultdict`` names its ``default_factory``. A
    NumPy ``float64`` is its ``float`` (see the docs: shown and identified as the literal a
    user types)."""
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if isinstance(value, float):
        if name == "numpy.float64":
            return float.__float__(value)
        return {"$type": [name, float.__float__(value)]}
    if isinstance(value, int):
        return {"$type": [name, int.__int__(value)]}
    if isinstance(value, str):
        return {"$type": [name, str.__str__(value)]}
    if isinstance(value, list):
        return {"$type": [name, [_encode(v, family, argument) for v in value]]}
    if isinstance(value, tuple):
        return {"$type": [name, {"$tuple": [_encode(v, family, argument) for v in value]}]}
    factory = getattr(value, "default_factory", None)  # a defaultdict
    if factory is not None:
        qualname = getattr(factory, "__qualname__", "<?>")
        if "<" in qualname:
            raise UnserializableArgumentError(
                f"Argument {argument!r} of task {family} is a {name} whose default_factory "
                f"({qualname}) has no name to identify it by. Pass dict(value), or a "
                "default_factory that is a class or a named function.",
                family=family,
                argument=argument,
            )
        name += f"({getattr(factory, '__module__', '?')}.{qualname})"
    pairs = [[_encode(k, family, argument), _encode(v, family, argument)] for k, v in value.items()]
    if not isinstance(value, OrderedDict):
        pairs.sort(key=lambda kv: _dumps(kv[0]))
    return {"$type": [name, {"$dict": pairs}]}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_PLAIN_NAMES: set[str] = set()
"""Argument names already seen to need no escaping in JSON (ASCII identifiers)."""


def encode_arguments(family: str, arguments: Mapping[str, Any]) -> str:
    """Encode bound arguments canonically; the result is the task's identity within its family.

    Raises:
        UnserializableArgumentError: an argument (named in the message) cannot be encoded.
    """
    # Fast path (the common case on the hot path of expansion): ints and plain strings
    # under plain names (remembered: a sweep names the same few parameters 200,000 times).
    parts = []
    plain = _PLAIN_NAMES
    for name in sorted(arguments):
        if name not in plain:
            if not (name.isidentifier() and name.isascii()):
                break
            plain.add(name)
        value = arguments[name]
        kind = type(value)
        if kind is int:
            parts.append(f'"{name}":{value}')
        elif kind is str and value.isalnum() and value.isascii():
            parts.append(f'"{name}":"{value}"')
        else:
            break
    else:
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
    key = f"{family}\x00{encoded_arguments}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def task_id_hasher(family: str) -> Any:
    """A BLAKE2 state fed with ``family`` and the separator: a ``copy()`` updated with the
    encoded arguments (UTF-8, ``surrogatepass``) gives :func:`task_id`'s digest, without
    hashing the family's name again for each task (a sweep makes 200,000)."""
    return hashlib.blake2b(f"{family}\x00".encode("utf-8", "surrogatepass"), digest_size=16)


# --- code fingerprints -------------------------------------------------------------------


def code_fingerprint(
    fn: Callable[..., Any], *, is_task: Callable[[Any], bool] = lambda _: False,
    family: str | None = None,
) -> tuple[str, str]:
    """Return ``(digest, normalized_source)`` of a task function (or class) and of what its
    code reads; see :mod:`checkpoint.fingerprint` (imported on first use)."""
    from .fingerprint import code_fingerprint as fingerprint

    return fingerprint(fn, is_task=is_task, family=family)
