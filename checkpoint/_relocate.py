"""Stored values that name paths inside the cache, kept valid when the cache moves.

A task with ``TaskDirectory()`` typically returns ``str(path / "model.json")``: an absolute
path inside the store root (``{cache}/checkpoint``). Stored as it is, that value breaks as
soon as the cache is somewhere else: the project moved (``.cache`` with it), ``CP_CACHE_DIR``
points at a copy, a remote cache was pulled on another machine. So when a value is stored,
every ``str`` and :class:`pathlib.PurePath` in it that is the store root or lies under it,
at any depth pickle reaches (lists, dicts, tuples, sets, dataclasses, any object's state),
(and each item of a NumPy array of text, which pickles as one buffer otherwise)
is written as a *reference relative to the store root*; loading resolves it against the
store root of the process that loads it. The value the task returned and the value its
dependents receive are equal wherever the cache is now. Only the root is replaced: what
follows it is kept as it is, character for character (a trailing ``/``, a ``//``, the rest
of a text that starts with the path), so a value read back where it was stored is the
value stored. A text counts when it is the root, or starts with it and a separator and has
no ``..`` part after it (a sibling ``{root}2/x`` or ``{root}/../x`` is not under it).

Paths into the *project* are kept valid the same way, when the cache lies inside the
project (the default ``.cache``): a ``str`` or path that is the working directory the value
is stored from (the project root: tasks run there) or lies under it, and not in the store
root, is written relative to it, with where the store root was in it (``.cache/checkpoint``)
and the project's path then. Loading resolves it against the project that holds the cache
now: the working directory it is loaded in, when the store root is at that same place in
it (``{cwd}/.cache/checkpoint``): a copy of the project with its cache (``cp -a proj exp``)
reads its own files. A cache found elsewhere (``CP_CACHE_DIR`` at a copy of it, whatever
its name, even ``.cache``) gives the paths as they were stored. Text that merely contains
such a path (``f"saved to {path}"``) is kept as it is, as for the store root.

Cost, as this runs for every stored value: the value is pickled as before, and only when
the payload contains the bytes ``checkpoint`` (the store root's name, which every such path
spells out, as text or as a ``Path`` part), or the project directory's name, is it pickled again with a hook on each object;
if no path is found, the first payload is kept. The search runs at about 1 GB/s; bytes and
NumPy arrays of numbers are not searched (nor large values streamed to their file, which
are only those known to hold no path: see :func:`may_hold_path`), and a large payload is searched only when a short walk of the
value's lists, tuples and dicts cannot tell (a dict of arrays needs no search). A rewritten payload starts with
:data:`PREFIX` (no pickle starts with a NUL byte), so loading tells them apart by looking
at its first bytes, never by scanning the payload.
"""

from __future__ import annotations

import io
import os
import pickle
from functools import lru_cache
from pathlib import PurePath
from typing import Any

PREFIX = b"\x00cp-rel1\x00"
"""The first bytes of a payload whose value holds paths relative to the store root."""
_HINT = b"checkpoint"
"""Bytes every path under a store root contains (its last component's name)."""
_HINT32 = "checkpoint".encode("utf-32-le")
"""The same in a NumPy array of text (fixed-width UTF-32)."""
_UNDER_ROOT = "checkpoint:under-store-root"
_UNDER_PROJECT = "checkpoint:under-project"
"""References whose path is the root followed by the text kept, as it is."""
_MARK = "checkpoint:store-root"
_PROJECT = "checkpoint:project"
"""References written before: the path's parts under the root, joined with ``/`` (a ``//``
or a trailing ``/`` was lost); still read."""
_SORTED_SET = "checkpoint:sorted-set"
_OPAQUE = frozenset({bytes, bytearray, int, float, complex, bool, type(None)})
"""Types whose values never hold a path (not searched, whatever their size)."""


_SET, _FROZENSET = pickle.EMPTY_SET, pickle.FROZENSET
"""The opcodes of a set and a frozenset (protocol 4 and later)."""
_SORTABLE = (frozenset({str}), frozenset({bytes}), frozenset({int}), frozenset({float}),
             frozenset({int, float}), frozenset({bool, int}), frozenset({bool, int, float}))
"""The element types of a set written with its elements sorted."""


def portable(value: Any, payload: bytes, root: str) -> bytes:
    """The payload to store for ``value`` (``payload``: its plain pickle), with the paths
    under the store root ``root`` made relative to it, and the elements of each set (of
    text, bytes or numbers) in sorted order, so that the payload does not depend on the
    process's hash seed (the same value, the same stamp: early cutoff); ``payload`` itself
    when there are neither.
    """
    if type(value) in _OPAQUE:
        return payload
    project = _project(root)
    if len(payload) > _SEARCH_MAX:  # a few containers around large arrays: look at them
        holds = _holds_path(value, root + os.sep, root)
        if holds is False and project:
            holds = _holds_path(value, project + os.sep, project)
        if holds is False:
            return payload
    if _HINT not in payload and _HINT32 not in payload and _SET not in payload \
            and _FROZENSET not in payload and not (project and _names(project, payload)):
        return payload
    import cloudpickle

    buffer = io.BytesIO()
    buffer.write(PREFIX)
    pickler = _relocating_pickler(cloudpickle.CloudPickler)(buffer, root, project)
    pickler.dump(value)
    return buffer.getvalue() if pickler.found else payload


def _project(root: str) -> str:
    """The project whose paths a value stored now is written relative to: the working
    directory, when the store root ``root`` lies inside it (else ``""``: none)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""
    return cwd if root.startswith(cwd + os.sep) and cwd != os.sep else ""


def _names(project: str, payload: bytes) -> bool:
    """Whether ``payload`` may hold a path under ``project``: it holds the directory's name
    (as text, or in a NumPy array of text)."""
    utf8, utf32 = _needles(project)
    return utf8 in payload or utf32 in payload


@lru_cache(maxsize=8)
def _needles(project: str) -> tuple[bytes, bytes]:
    name = os.path.basename(project)
    return name.encode("utf-8", "surrogatepass"), name.encode("utf-32-le", "surrogatepass")


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
        elif kind in _OPAQUE:
            continue
        elif _plain_array(item):
            if item.dtype.kind == "U" and _text_array_holds_path(item, prefix, root):
                return True
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            return None
    return False


_NUMBERS = frozenset("biufcmM")
"""NumPy dtype kinds of numbers, booleans and times: never a path."""
_LABELS_MAX = 10_000


def may_hold_path(value: Any, root: str) -> bool:
    """Whether a large value about to be streamed to its file could hold a path under
    ``root`` or the project that holds it: such a value is encoded in memory instead, where
    :func:`portable` sees it. Only what is known to hold none is streamed: bytes, a ``str``
    that does not start with either, NumPy arrays of numbers, pandas objects of numbers
    (their index and column labels looked at), tensors of PyTorch."""
    if isinstance(value, str):
        project = _project(root)
        return value.startswith(root) or bool(project and value.startswith(project))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return False
    kind = type(value)
    module = kind.__module__
    if module == "numpy":
        return getattr(getattr(value, "dtype", None), "kind", "O") not in _NUMBERS
    if module.startswith("torch"):
        return False
    if module.startswith("pandas."):
        project = _project(root)
        return not (_numeric_pandas(value, root) and (not project or _numeric_pandas(value, project)))
    return True


def _numeric_pandas(value: Any, root: str) -> bool:
    """A pandas Series or DataFrame of numbers whose labels are numbers or a few texts that
    are not paths under ``root``."""
    dtypes: Any = getattr(value, "dtypes", None)
    kinds = [getattr(d, "kind", None) for d in dtypes] if hasattr(dtypes, "__iter__") else \
        [getattr(dtypes, "kind", None)]
    if not kinds or any(k not in _NUMBERS for k in kinds):
        return False
    prefix = root + os.sep
    for labels in (getattr(value, "index", None), getattr(value, "columns", None)):
        if labels is None or getattr(labels.dtype, "kind", None) in _NUMBERS:
            continue
        if len(labels) > _LABELS_MAX or any(
                not isinstance(x, (str, int, float)) or (isinstance(x, str) and (
                    x.startswith(prefix) or x == root)) for x in labels):
            return False
    return True


def _plain_array(value: Any) -> bool:
    """A NumPy array of numbers or fixed-size text: no Python objects inside (a pandas
    Series has a dtype too, and an index that may hold paths)."""
    kind = type(value)
    return kind.__name__ == "ndarray" and kind.__module__ == "numpy" and not value.dtype.hasobject


def _text_array_holds_path(value: Any, prefix: str, root: str) -> bool:
    """Whether a NumPy array of text holds a path under ``root``."""
    import numpy

    return bool(numpy.char.startswith(value, prefix).any() or (value == root).any())


def _text_array(items: list[str], dtype: str, shape: tuple[int, ...]) -> Any:
    """A NumPy array of text rebuilt from its relocated items (wide enough for them)."""
    import numpy

    array = numpy.array(items)
    if array.dtype.itemsize < numpy.dtype(dtype).itemsize:
        array = array.astype(dtype)
    return array.reshape(shape)


def is_portable(payload: bytes | Any) -> bool:
    """Whether a (decompressed) payload was written by :func:`portable` with paths in it."""
    return payload[: len(PREFIX)] == PREFIX


def loads(payload: bytes | Any, root: str) -> Any:
    """Unpickle a payload written by :func:`portable`, its paths under the store root
    ``root`` (where the cache is now)."""
    return _Unpickler(io.BytesIO(payload[len(PREFIX):]), root).load()


_classes: dict[type, type] = {}


def _remainder(text: str, prefix: str, root: str) -> str | None:
    """What follows ``root`` in ``text`` (``prefix``: ``root`` with a trailing separator),
    kept as it is (``""``, or from its separator on), when ``text`` is ``root`` or a path
    below it; ``None`` otherwise: another directory (``{root}2``), or a path that leaves it
    (a ``..`` part)."""
    if text == root:
        return ""
    if not text.startswith(prefix):
        return None
    rest = text[len(root):]
    return None if ".." in rest.split(os.sep) else rest


def _relocating_pickler(base: type) -> type:
    """``base`` (cloudpickle's pickler) with the hooks that write paths as references
    (:class:`_Relocating`), made once per base."""
    cls = _classes.get(base)
    if cls is None:
        cls = _classes[base] = type("RelocatingPickler", (_Relocating, base), {})
    return cls


class _Relocating:
    """The hooks :func:`_relocating_pickler` puts before cloudpickle's pickler: paths under
    the store root (or the project) become references relative to it, and sets of sortable
    items are written sorted; ``found`` counts them."""

    def __init__(self, file: io.BytesIO, root: str, project: str = "") -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)  # type: ignore[call-arg]
        self.root = root
        self.prefix = root + os.sep
        self.project = project
        self.project_prefix = project + os.sep
        self.store_in_project = root[len(self.project_prefix):] if project else ""
        self.found = 0
        self.pids: dict[int, tuple[Any, tuple[Any, ...]]] = {}
        """The reference written for each path object, kept with the object (as
        pickle's memo does, so that its id is not reused): the same object gets the
        same reference, which pickle's memo then writes once."""

    def reducer_override(self, obj: Any) -> Any:
        # A NumPy array of text pickles as one buffer: its paths, as items, are seen.
        if _plain_array(obj) and obj.dtype.kind == "U" and obj.size and (
                _text_array_holds_path(obj, self.prefix, self.root) or (self.project and
                _text_array_holds_path(obj, self.project_prefix, self.project))):
            return _text_array, (obj.ravel().tolist(), obj.dtype.str, obj.shape)
        return super().reducer_override(obj)  # type: ignore[misc]

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is str:
            text = obj
        elif isinstance(obj, PurePath):
            text = str(obj)
        elif (kind is set or kind is frozenset) and len(obj) > 1:
            return self._sorted_set(obj)
        else:
            return None
        seen = self.pids.get(id(obj))
        if seen is not None:
            return seen[1]
        rest = _remainder(text, self.prefix, self.root)
        pid: tuple[Any, ...]
        if rest is not None:
            pid = (_UNDER_ROOT, rest, None if kind is str else kind)
        elif self.project and (rest := _remainder(
                text, self.project_prefix, self.project)) is not None:
            # (the project's own path as its parts: a str of it would be relocated too)
            pid = (_UNDER_PROJECT, rest, None if kind is str else kind, self.store_in_project,
                   tuple(self.project.split(os.sep)))
        else:
            return None
        self.found += 1
        self.pids[id(obj)] = (obj, pid)
        return pid

    def _sorted_set(self, obj: set[Any] | frozenset[Any]) -> Any:
        seen = self.pids.get(id(obj))
        if seen is not None:
            return seen[1]
        if frozenset(map(type, obj)) not in _SORTABLE:
            return None
        self.found += 1
        pid = (_SORTED_SET, sorted(obj), type(obj) is frozenset)
        self.pids[id(obj)] = (obj, pid)
        return pid


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, root: str) -> None:
        super().__init__(file)
        self.root = root
        self.sets: dict[int, tuple[Any, set[Any] | frozenset[Any]]] = {}
        self.projects: dict[str, str | None] = {}

    def persistent_load(self, pid: Any) -> Any:
        if type(pid) is not tuple or len(pid) not in (3, 5):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r} in a stored value")
        tag = pid[0]
        if tag == _SORTED_SET and len(pid) == 3:
            made = self.sets.get(id(pid))  # one set referred to twice is one set again
            if made is None:
                made = self.sets[id(pid)] = (pid, frozenset(pid[1]) if pid[2] else set(pid[1]))
            return made[1]
        if tag in (_UNDER_PROJECT, _PROJECT) and len(pid) == 5:
            _, rest, kind, store, parts = pid
            base = self._project(store) or os.sep.join(parts)
        elif tag in (_UNDER_ROOT, _MARK) and len(pid) == 3:
            _, rest, kind = pid
            base = self.root
        else:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r} in a stored value")
        if tag in (_UNDER_ROOT, _UNDER_PROJECT):
            path = base + rest
        else:
            path = os.path.join(base, *rest.split("/")) if rest else base
        return path if kind is None else kind(path)

    def _project(self, store: str) -> str | None:
        """The project that holds the cache now, at ``store`` (the store root's place in the
        project when the value was stored): the working directory, when the store root is
        there in it; else ``None`` (a copy of the cache used from elsewhere, whatever its
        name: the paths as stored)."""
        if store not in self.projects:
            self.projects[store] = _holding_project(self.root, store)
        return self.projects[store]


def _holding_project(root: str, store: str) -> str | None:
    """The working directory, if the store root ``root`` is ``store`` in it."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    if cwd == os.sep:
        return None
    expected = cwd + os.sep + store
    if root == expected or os.path.realpath(root) == os.path.realpath(expected):
        return cwd
    return None
