"""Stored values that name paths inside the cache, kept valid when the cache moves.

A task with ``TaskDirectory()`` typically returns ``str(path / "model.json")``: an absolute
path inside the store root (``{cache}/checkpoint``). Stored as it is, that value breaks as
soon as the cache is somewhere else: the project moved (``.cache`` with it), ``CP_CACHE_DIR``
points at a copy, a remote cache was pulled on another machine. So when a value is stored,
every ``str`` and :class:`pathlib.PurePath` in it that is the store root or lies under it,
at any depth pickle reaches (lists, dicts, tuples, sets, dataclasses, any object's state),
is written as a *reference relative to the store root*; loading resolves it against the
store root of the process that loads it. The value the task returned and the value its
dependents receive are equal wherever the cache is now.

Cost, as this runs for every stored value: the value is pickled as before, and only when
the payload contains the bytes ``checkpoint`` (the store root's name, which every such path
spells out, as text or as a ``Path`` part) is it pickled again with a hook on each object;
if no path is found, the first payload is kept. The search runs at about 1 GB/s; bytes and
NumPy arrays of numbers are not searched (nor streamed large values, see
:func:`may_hold_path`), and a large payload is searched only when a short walk of the
value's lists, tuples and dicts cannot tell (a dict of arrays needs no search). A rewritten payload starts with
:data:`PREFIX` (no pickle starts with a NUL byte), so loading tells them apart by looking
at its first bytes, never by scanning the payload.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import PurePath
from typing import Any

PREFIX = b"\x00cp-rel1\x00"
"""The first bytes of a payload whose value holds paths relative to the store root."""
_HINT = b"checkpoint"
"""Bytes every path under a store root contains (its last component's name)."""
_MARK = "checkpoint:store-root"
_OPAQUE = frozenset({bytes, bytearray, int, float, complex, bool, type(None)})
"""Types whose values never hold a path (not searched, whatever their size)."""


def portable(value: Any, payload: bytes, root: str) -> bytes:
    """The payload to store for ``value`` (``payload``: its plain pickle), with the paths
    under the store root ``root`` made relative to it; ``payload`` itself when there are none.
    """
    if type(value) in _OPAQUE:
        return payload
    if len(payload) > _SEARCH_MAX:  # a few containers around large arrays: look at them
        holds = _holds_path(value, root + os.sep, root)
        if holds is False:
            return payload
    if _HINT not in payload:
        return payload
    import cloudpickle

    buffer = io.BytesIO()
    buffer.write(PREFIX)
    pickler = _relocating_pickler(cloudpickle.CloudPickler)(buffer, root)
    pickler.dump(value)
    return buffer.getvalue() if pickler.found else payload


_SEARCH_MAX = 1 << 16
"""Above this size, a value's containers are looked at before its payload is searched."""
_WALK_MAX = 1000


def _holds_path(value: Any, prefix: str, root: str) -> bool | None:
    """Whether ``value`` holds a path under ``root``, told by walking at most ``_WALK_MAX``
    items of its lists, tuples and dicts down to numbers, bytes, text and NumPy arrays of
    numbers; ``None`` when that is not enough to tell (another kind of object, or more
    items): then its payload is searched."""
    stack = [value]
    budget = _WALK_MAX
    while stack:
        budget -= 1
        if budget < 0:
            return None
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if item.startswith(prefix) or item == root:
                return True
        elif kind in _OPAQUE or _plain_array(item):
            continue
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            return None
    return False


def may_hold_path(value: Any, root: str) -> bool:
    """Whether a large value about to be streamed to its file could hold a path under
    ``root`` (a ``str`` that starts with it, an array of Python objects): such a value is
    encoded in memory instead, where :func:`portable` sees it."""
    if isinstance(value, str):
        return value.startswith(root)
    dtype = getattr(value, "dtype", None)  # (a buffer of numbers: its index is not looked at)
    return bool(getattr(dtype, "hasobject", False))


def _plain_array(value: Any) -> bool:
    """A NumPy array of numbers or fixed-size text: no Python objects inside (a pandas
    Series has a dtype too, and an index that may hold paths)."""
    kind = type(value)
    return kind.__name__ == "ndarray" and kind.__module__ == "numpy" and not value.dtype.hasobject


def is_portable(payload: bytes | Any) -> bool:
    """Whether a (decompressed) payload was written by :func:`portable` with paths in it."""
    return payload[: len(PREFIX)] == PREFIX


def loads(payload: bytes | Any, root: str) -> Any:
    """Unpickle a payload written by :func:`portable`, its paths under the store root
    ``root`` (where the cache is now)."""
    return _Unpickler(io.BytesIO(payload[len(PREFIX):]), root).load()


_classes: dict[type, type] = {}


def _relocating_pickler(base: type) -> type:
    """``base`` (cloudpickle's pickler) with the hook that writes paths as references."""
    cls = _classes.get(base)
    if cls is not None:
        return cls

    class RelocatingPickler(base):  # type: ignore[misc]
        def __init__(self, file: io.BytesIO, root: str) -> None:
            super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
            self.root = root
            self.prefix = root + os.sep
            self.found = 0
            self.pids: dict[int, tuple[Any, tuple[str, str, type | None]]] = {}
            """The reference written for each path object, kept with the object (as
            pickle's memo does, so that its id is not reused): the same object gets the
            same reference, which pickle's memo then writes once."""

        def persistent_id(self, obj: Any) -> Any:
            kind = type(obj)
            if kind is str:
                text = obj
            elif isinstance(obj, PurePath):
                text = str(obj)
            else:
                return None
            seen = self.pids.get(id(obj))
            if seen is not None:
                return seen[1]
            if text.startswith(self.prefix):
                rel = text[len(self.prefix):]
            elif text == self.root:
                rel = ""
            else:
                return None
            self.found += 1
            if os.sep != "/":
                rel = rel.replace(os.sep, "/")
            pid = (_MARK, rel, None if kind is str else kind)
            self.pids[id(obj)] = (obj, pid)
            return pid

    _classes[base] = RelocatingPickler
    return RelocatingPickler


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, root: str) -> None:
        super().__init__(file)
        self.root = root

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is not tuple or len(pid) != 3 or pid[0] != _MARK:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r} in a stored value")
        _, rel, kind = pid
        path = os.path.join(self.root, *rel.split("/")) if rel else self.root
        return path if kind is None else kind(path)
