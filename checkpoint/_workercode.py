"""Workers run the code that was fingerprinted, not what they imported in an earlier run.

A worker that outlives a run -- your own ``ProcessPoolExecutor`` passed to ``run()`` again
in a session, a Dask cluster that serves many runs -- keeps the project modules it imported
first. After an edit (and ``importlib.reload`` in the session), the coordinator fingerprints
the new code, while a task that reaches the worker by reference would run the old one and
store its result under the new fingerprint.

So the coordinator sends with each batch a *manifest*: for each project module whose code a
fingerprint of this process covered (see :data:`checkpoint.fingerprint.followed_modules`),
a digest of that module as it is in memory (its functions' and classes' code, and its
immutable values). The worker compares the modules it has loaded before it unpickles the
batch: when one differs, it forgets every project module it holds (they may refer to each
other) so that unpickling imports them again from the files, and compares once more. A
module that still differs (the worker's copy of the files is not the coordinator's, or a
file changed since the run began) fails the batch's tasks with a
:class:`~checkpoint.errors.StaleModuleError`: nothing runs on code other than the
fingerprinted one. Digests are cached per module object (and reload), so a batch costs one
dictionary lookup per module in the manifest.
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from collections.abc import Iterable, Iterator
from typing import Any

from ._bytecode import code_digest

Manifest = dict[str, str]
"""Module name -> digest of the module as the coordinator has it."""

_IMMUTABLE = (str, int, float, bool, type(None), bytes, complex, range, tuple, frozenset)
_digests: dict[str, tuple[types.ModuleType, Any, int, str]] = {}


def module_digest(module: types.ModuleType) -> str:
    """``"{code}/{values}"``: digests of a module's code (its functions' and classes') and
    of its immutable values (module-level and class attributes) as they are in memory, the
    same in every process that loaded the same file (cached per module object until it is
    reloaded: a counter the code rebinds later does not count)."""
    name = module.__name__
    spec = getattr(module, "__spec__", None)
    size = len(vars(module))
    cached = _digests.get(name)
    if cached is not None and cached[0] is module and cached[1] is spec and cached[2] == size:
        return cached[3]
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
    text = repr(value)
    return None if " at 0x" in text else text


def manifest(names: Iterable[str]) -> Manifest:
    """The coordinator's digests of the modules ``names`` that are loaded from a file
    (``__main__`` and notebook code travel by value: nothing to compare)."""
    out: Manifest = {}
    for name in names:
        module = sys.modules.get(name)
        if module is None or name in ("__main__", "__mp_main__") \
                or not isinstance(getattr(module, "__file__", None), str):
            continue
        out[name] = module_digest(module)
    return out


def _differs(code: Manifest, values: bool) -> list[str]:
    """The modules of the manifest this process holds with other code (or, with ``values``,
    other immutable values)."""
    out = []
    for name, digest in code.items():
        module = sys.modules.get(name)
        if module is None:
            continue
        mine = module_digest(module)
        if mine != digest and (values or mine.split("/")[0] != digest.split("/")[0]):
            out.append(name)
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
    differ = _differs(code, values=True)
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
    differs. (Module-level values may: the coordinator's code may have rebound them.)"""
    differ = _differs(code, values=False) if code else []
    if not differ:
        return None
    name = differ[0]
    from .errors import StaleModuleError

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
        if len(followed) != self._count:
            self._count = len(followed)
            self._code = manifest(list(followed))
        return self._code
