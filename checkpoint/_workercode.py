"""Workers run the code that was fingerprinted, not what they imported in an earlier run.

A worker that outlives a run -- your own ``ProcessPoolExecutor`` passed to ``run()`` again
in a session, a Dask cluster that serves many runs -- keeps the project modules it imported
first. After an edit (and ``importlib.reload`` in the session), the coordinator fingerprints
the new code, while a task that reaches the worker by reference would run the old one and
store its result under the new fingerprint.

So the coordinator sends with each batch a *manifest*: for each project module whose code a
fingerprint of this process covered (see :data:`checkpoint.fingerprint.followed_modules`),
a digest of that module as it is in memory (its functions' and classes' code, and its
immutable values), and the text of each module-level value the run's fingerprints counted
by value (:data:`checkpoint.fingerprint.read_values`, ``"module:NAME"`` keys): what the
tasks must compute with. The worker compares the modules it has loaded before it unpickles
the batch: when one differs, it forgets every project module it holds (they may refer to
each other) so that unpickling imports them again from the files, and compares once more. A
module whose code still differs (the worker's copy of the files is not the coordinator's,
or a file changed since the run began), or a value the fingerprint read that still differs
(the coordinator's session set it: ``settings.LR = 0.7`` in a notebook, which no file says),
fails the batch's tasks with a :class:`~checkpoint.errors.StaleModuleError`: nothing runs
on code or values other than the fingerprinted ones. Values are compared by texts made for
it (:func:`~checkpoint.fingerprint.comparable_text`: sets and dicts in sorted order, so
that a worker with another hash seed holds the same text for an equal value), and a
family is fingerprinted before its first batch is sent (``ExecutorAdapter.manifests``), so
that batch's manifest carries what it reads. The coordinator makes its manifest
afresh in each run; a worker caches its digests per module object (and reload), and its
values' texts per value object, so a batch costs a few dictionary lookups per module.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from ._bytecode import code_digest
from ._text import clip

Manifest = dict[str, str]
"""Module name -> digest of the module as the coordinator has it; ``"module:NAME"`` -> the
fingerprint's text of a value of that module the run counted by value."""

_IMMUTABLE = (str, int, float, bool, type(None), bytes, complex, range, tuple, frozenset)
_digests: dict[str, tuple[types.ModuleType, Any, int, str]] = {}


def module_digest(module: types.ModuleType, cached: bool = True) -> str:
    """``"{code}/{values}"``: digests of a module's code (its functions' and classes') and
    of its immutable values (module-level and class attributes) as they are in memory, the
    same in every process that loaded the same file (with ``cached``, kept per module object
    until it is reloaded: in a worker, a counter the code rebinds later does not count)."""
    name = module.__name__
    spec = getattr(module, "__spec__", None)
    size = len(vars(module))
    known = _digests.get(name)
    if cached and known is not None and known[0] is module and known[1] is spec and known[2] == size:
        return known[3]
    parts: list[str] = []
    values: list[str] = []
    for key, value in sorted(vars(module).items()):
        if isinstance(value, types.FunctionType) and value.__module__ == name:
            parts.append(f"{key}={code_digest(value.__code__)}")
        elif isinstance(value, type) and value.__module__ == name:
            parts.append(f"{key}=class({','.join(_class_parts(value, 0, values))})")
        elif isinstance(value, _IMMUTABLE) and not key.startswith("__"):
            text = _value_text(value)
            if text is not None:
                values.append(f"{key}={text}")
    digest = "/".join(hashlib.blake2b("\n".join(p).encode("utf-8", "surrogatepass"),
                                      digest_size=12).hexdigest() for p in (parts, values))
    _digests[name] = (module, spec, size, digest)
    return digest


def _class_parts(cls: type, depth: int, values: list[str]) -> Iterator[str]:
    for key, value in sorted(vars(cls).items()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f"{key}.{f.__name__}={code_digest(f.__code__)}"
                        for f in (value.fget, value.fset, value.fdel)
                        if isinstance(f, types.FunctionType))
        elif isinstance(value, types.FunctionType):
            yield f"{key}={code_digest(value.__code__)}"
        elif isinstance(value, type) and depth < 5 and value.__qualname__.startswith(cls.__qualname__ + "."):
            yield f"{key}=class({','.join(_class_parts(value, depth + 1, values))})"
        elif isinstance(value, _IMMUTABLE) and not key.startswith("__"):
            text = _value_text(value)
            if text is not None:
                values.append(f"{cls.__qualname__}.{key}={text}")


def _value_text(value: Any, depth: int = 0) -> str | None:
    """The repr of an immutable value made of literals (a frozenset sorted), else ``None``."""
    if isinstance(value, (tuple, frozenset)):
        if depth > 3 or len(value) > 1000:
            return None
        texts = [_value_text(v, depth + 1) for v in value]
        if any(t is None for t in texts):
            return None
        inner = sorted(texts) if isinstance(value, frozenset) else texts  # type: ignore[type-var]
        return f"{type(value).__name__}({', '.join(map(str, inner))})"
    if not isinstance(value, _IMMUTABLE):  # (inside a tuple) a set's repr follows the hash seed
        return None
    text = repr(value)
    return None if " at 0x" in text else text


def _from_file(name: str) -> bool:
    """Whether module ``name`` is loaded from a file (``__main__`` and notebook code travel
    by value, with the values they read: nothing to compare)."""
    module = sys.modules.get(name)
    return module is not None and name not in ("__main__", "__mp_main__") \
        and isinstance(getattr(module, "__file__", None), str)


def manifest(names: Iterable[str], values: dict[tuple[str, str], str] | None = None) -> Manifest:
    """The coordinator's digests of the modules ``names`` that are loaded from a file, made
    afresh (the session may have rebound anything since the last run), and the texts of
    ``values``, ``(module, NAME) -> text``, of those modules."""
    out: Manifest = {name: module_digest(sys.modules[name], cached=False)
                     for name in names if _from_file(name)}
    for (name, label), text in (values or {}).items():
        if name in out or _from_file(name):
            out[f"{name}:{label}"] = text
    return out


def _differs(code: Manifest, values: bool) -> list[str]:
    """The modules of the manifest this process holds with other code (or, with ``values``,
    other immutable values)."""
    out = []
    for name, digest in code.items():
        module = sys.modules.get(name)
        if module is None or ":" in name:
            continue
        mine = module_digest(module)
        if mine != digest and (values or mine.split("/")[0] != digest.split("/")[0]):
            out.append(name)
    return out


_texts: dict[str, tuple[types.ModuleType, object, str | None]] = {}
"""``"module:NAME"`` -> (the module, the value, its text) as last computed here."""


def _values_differ(code: Manifest) -> list[tuple[str, str | None, str]]:
    """``(key, text here, coordinator's text)`` of each value of the manifest that this
    process holds otherwise (``None``: not at all, or not counted by value here). A module
    not loaded here is not compared: unpickling the batch imports it."""
    from .fingerprint import _global_of, value_text_here

    out: list[tuple[str, str | None, str]] = []
    for key, theirs in code.items():
        name, _, label = key.partition(":")
        module = sys.modules.get(name) if label else None
        if module is None:
            continue
        value = _global_of(vars(module), label)
        known = _texts.get(key)
        if known is not None and known[0] is module and known[1] is value:
            mine = known[2]
        else:
            mine = value_text_here(module, label)
            _texts[key] = (module, value, mine)
        if mine != theirs:
            out.append((key, mine, theirs))
    return out


_refreshed_for_values: set[tuple[str, str]] = set()
"""``(module, coordinator's digest)`` whose values differed here: imported again once only
(a value computed at import, ``RUN_ID = str(uuid4())``, differs in every process)."""


def refresh(code: Manifest, cwd: str) -> None:
    """Before a batch is unpickled: when a loaded module differs from the coordinator's,
    forget the project's modules (those of the manifest and any other under ``cwd``, the
    project root), so that the batch imports them again from their files."""
    if not code:
        return
    differ = _differs(code, values=True) + [key for key, _, _ in _values_differ(code)]
    if not differ:
        return
    if not _differs(code, values=False):  # values only: once per version of the module
        keys = {(name, code[name]) for name in differ}
        if keys <= _refreshed_for_values:
            return
        _refreshed_for_values.update(keys)
    root = os.path.realpath(cwd) + os.sep if cwd else None
    for name, module in list(sys.modules.items()):
        if name in ("__main__", "__mp_main__") or name.split(".")[0] == "checkpoint":
            continue
        file = getattr(module, "__file__", None)
        inside = root is not None and isinstance(file, str) and \
            os.path.realpath(file).startswith(root) and "site-packages" not in file
        if name in code or inside:
            del sys.modules[name]


def stale_error(code: Manifest, worker: str) -> Exception | None:
    """After a batch is unpickled: a :class:`StaleModuleError` when a module's code still
    differs, or a value the run's fingerprints read. (Other module-level values may: a value
    computed at import, ``RUN_ID = str(uuid4())``, that no task reads.)"""
    differ = _differs(code, values=False) if code else []
    from .errors import StaleModuleError

    if not differ:
        values = _values_differ(code) if code else []
        if not values:
            return None
        key, mine, theirs = values[0]
        name, _, label = key.partition(":")
        file = getattr(sys.modules.get(name), "__file__", "?")
        here = "another value" if mine is None else clip(mine, 80)
        return StaleModuleError(
            f"Worker {worker} holds {here} for {name}.{label}, not the run coordinator's "
            f"{clip(theirs, 80)}, even after importing {name} again from its file ({file}): the "
            "value was set in the coordinator's session (a notebook cell, a script), not from "
            "its file, and a worker that outlives a run does not see that. The tasks sent to it "
            "were not run: a result computed with the worker's value would be stored as the "
            "coordinator's. "
            "Pass the value to the task as an argument, or set it in the file (and reload "
            "it), or start the pool after setting it (a forked worker copies the session), "
            "and run again.")
    name = differ[0]
    file = getattr(sys.modules.get(name), "__file__", "?")
    return StaleModuleError(
        f"Worker {worker} has other code for module {name} ({file}) than the run's "
        "coordinator, even after importing it again: its files are not the coordinator's, "
        "or the file changed since the run began. The tasks sent to it were not run: a result "
        "computed with "
        "code other than the fingerprinted one would be stored as fresh. Give the workers the "
        "same project files as the coordinator (a shared filesystem), or restart them, and "
        "run again.")


class CoordinatorCode:
    """The coordinator's manifest for one run, made again only when more modules were
    fingerprinted since (a task family first seen during the run)."""

    def __init__(self) -> None:
        self._count = -1
        self._code: Manifest = {}

    def get(self) -> Manifest:
        fingerprint = sys.modules.get("checkpoint.fingerprint")  # none taken: nothing to check
        followed: dict[str, None] = getattr(fingerprint, "followed_modules", {})
        values: dict[tuple[str, str], str] = getattr(fingerprint, "read_values", {})
        count = len(followed) + len(values)
        if count != self._count:
            self._count = count
            self._code = manifest(list(followed), dict(values))
        return self._code
