"""Where a task's prerequisite values come from during a run: the one place that knows them.

Every task of a plan has a *current entry*: the stored entry as planned, one another run
stored while we waited (adopted), or the one this run stored after computing it (again,
after a damaged value was found). A dependent always receives the value of the current
entry, together with that entry's stamp, and its own entry records exactly the stamps of the
values it was given: so a value that changes under a task can make its result stale, never
wrong.

Payloads of values this run computed stay in memory while a dependent that reads them has
not settled (finished, failed for good, skipped): a retry, a re-run after a dead worker or
after another damaged prerequisite reads the same value again without going back to disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._codec import Payload
from ._types import FamilyDir, TaskId
from .errors import CorruptEntryError
from .store import Meta, Store

if TYPE_CHECKING:
    from .graph import Node


class RunValues:
    """The current entry of each task and the payloads this run still needs."""

    def __init__(self, store: Store, family_of: Callable[[TaskId], FamilyDir], keep: set[TaskId]) -> None:
        self.store = store
        self.family_of = family_of
        self.entries: dict[TaskId, Meta] = {}
        """The current entry of each task that has one."""
        self.held: dict[TaskId, Payload] = {}
        self.readers: dict[TaskId, int] = {}
        """Unsettled dependents that will read a value; its payload is dropped at zero."""
        self.keep = keep
        """Tasks whose payload is kept to the end (the targets)."""
        self.recomputed: set[TaskId] = set()
        """Tasks recomputed in this run because their stored value was damaged."""
        self.damaged: dict[TaskId, Meta] = {}
        """The entries found damaged (another run may have replaced them since)."""
        self.flush: Callable[[], None] = lambda: None
        """Stores what the run has finished (set by the scheduler)."""
        self.given: dict[TaskId, dict[TaskId, str]] = {}
        """The stamps of the values each running task was given: its entry records them."""
        self.seq = 0
        self.handed: dict[TaskId, int] = {}
        """When (in ``seq``) each task was last handed its values, once a damaged value is
        being recomputed: a report of damage from a task handed the entry before it was
        recomputed (``renewed``) is out of date, not "damaged again"."""
        self.renewed: dict[TaskId, int] = {}
        """When (in ``seq``) each damaged value was recomputed."""

    def stamp(self, tid: TaskId) -> str | None:
        entry = self.entries.get(tid)
        return None if entry is None else entry.stamp

    def add_reader(self, tid: TaskId) -> None:
        self.readers[tid] = self.readers.get(tid, 0) + 1

    def drop_reader(self, tid: TaskId) -> None:
        left = self.readers.get(tid, 0) - 1
        self.readers[tid] = left
        if left <= 0 and tid not in self.keep:
            self.held.pop(tid, None)

    def get(self, tid: TaskId) -> tuple[str, Payload]:
        """The current entry's stamp and payload.

        Raises:
            CorruptEntryError: the value is missing, damaged, or was replaced under this run.
        """
        entry = self.entries.get(tid)
        if entry is None:
            raise CorruptEntryError(
                f"The stored result of entry {tid} ({self.family_of(tid)}) is missing its value; "
                "it will be recomputed."
            )
        held = self.held.get(tid)
        if held is not None:
            return entry.stamp, held
        family = self.family_of(tid)
        if entry.blob:  # the worker reads (and checks) it from the cache
            held = self.store.blob_ref(family, entry)
        elif entry.inline is not None:
            held = (self.store.load_payload(family, tid, entry), entry.compressed)
        else:
            # Computed in this run, payload since dropped: read the entry this run stored.
            self.flush()
            stored = self.store.get_meta(family, tid)
            if stored is None or stored.stamp != entry.stamp:
                raise CorruptEntryError(
                    f"The stored result of {entry.expr} ({family}) was removed or replaced "
                    "while this run needed it; it will be recomputed."
                )
            self.entries[tid] = stored
            return self.get(tid)
        self.held[tid] = held
        return entry.stamp, held

    def hand(self, tid: TaskId, given: dict[TaskId, str]) -> None:
        """``tid`` goes to a worker with the values whose stamps are ``given``."""
        self.given[tid] = given
        if self.recomputed:  # only a damaged value's readers need to know when
            self.seq += 1
            self.handed[tid] = self.seq

    def outdated(self, reader: TaskId, tid: TaskId) -> bool:
        """Whether ``reader`` was handed ``tid``'s value before it was recomputed in this
        run (so its report that the value is damaged is about the old one)."""
        return self.renewed.get(tid, -1) > self.handed.get(reader, -1)

    def stored(self, tid: TaskId, entry: Meta, payload: bytes | None) -> Payload:
        """This run computed ``tid``'s entry (``payload`` is ``None`` when in a blob file)."""
        held: Payload
        if payload is None:
            held = self.store.blob_ref(self.family_of(tid), entry)
        else:
            held = (payload, entry.compressed)
        self.entries[tid] = entry
        if self.readers.get(tid, 0) > 0 or tid in self.keep:
            self.held[tid] = held
        else:
            self.held.pop(tid, None)
        if tid in self.recomputed:
            self.renewed[tid] = self.seq
        return held

    def forget(self, tid: TaskId) -> None:
        """``tid``'s value is damaged: it is recomputed before anyone reads it again."""
        self.held.pop(tid, None)
        self.recomputed.add(tid)
        damaged = self.entries.get(tid)
        if damaged is not None:
            self.damaged[tid] = damaged

    def is_damaged(self, tid: TaskId, entry: Meta) -> bool:
        """Whether ``entry`` (read from the store) is the one found damaged in this run."""
        damaged = self.damaged.get(tid)
        return damaged is not None and (damaged.stamp, damaged.stored, damaged.blob) == (
            entry.stamp, entry.stored, entry.blob
        )

    def adopted(self, tid: TaskId, entry: Meta) -> None:
        """Another run stored ``tid``'s current entry."""
        self.entries[tid] = entry
        self.held.pop(tid, None)



class StampContext:
    """What a value's stamp names besides its bytes, so that early cutoff never keeps a
    dependent whose value's meaning changed although its bytes did not:

    * the code of the task and of every task upstream of it. A value pickles a class or a
      function of the project by name: after an edit of ``Linear.predict``, the ``Linear``
      that ``train()`` returns has the same bytes, and so has every task that passes it on
      without naming the class (``best()`` returning one of its models).
    * the stamps of the prerequisites that own files (a ``TaskDirectory()``, a declared
      ``Product`` or a ``File`` input), or are downstream of one: a value may be a path to
      those files (passed on as is), and the same string then names other content; and a
      task may read a ``File`` or a ``Product`` by its name whatever its prerequisites gave
      it (a count, or ``None``). So what is downstream of files is cut off only when they
      are the same (below data directories alone, also when the value is made of numbers).

    So a value is cut off only when the code that made it is the same, upstream included:
    a clear, a forced run, a prerequisite that re-ran and gave another value, a changed
    input file. Both parts are the same on every machine with the same code (remote caches
    key entries by stamps)."""

    def __init__(self, nodes: Mapping[TaskId, Node]) -> None:
        self.nodes = nodes
        """The plan's nodes."""
        self._code: dict[TaskId, bytes] = {}
        self._files: dict[TaskId, bool] = {}
        """Whether a task owns files or is downstream of a task that does."""
        self._named: dict[TaskId, bool] = {}
        """The same, for files with a name (``File`` inputs, ``Product``s): data directories
        left out."""
        self._covered: dict[tuple[str, str], bool] = {}
        self._producers: dict[TaskId, frozenset[TaskId]] = {}

    def named_classes(self, tid: TaskId, classes: tuple[str, ...], unpickled: bool = False) -> None:
        """Warn (:class:`~checkpoint.fingerprint.FingerprintWarning`, once per family and
        class) when ``tid``'s value is made of a class of the project (``module.qualname``)
        that neither its code nor the code upstream of it names: a model loaded from a
        pickle file (``unpickled``: the task met the class by unpickling, whatever it
        returned). That class's code is in no fingerprint, so an edit of it re-runs nothing."""
        import re

        family = self.nodes[tid].task.family
        for name in classes:
            key = (family.name, name)
            if key in self._covered or key in _warned_classes:
                continue
            pattern = re.compile(rf"\bclass {re.escape(name.rpartition('.')[2])}\b")
            texts = (f.fingerprint[1] for f in self._families_upstream(tid))
            self._covered[key] = covered = any(pattern.search(text) for text in texts)
            if not covered:
                _warned_classes.add(key)
                _warn_class(family, name, unpickled)

    def _families_upstream(self, tid: TaskId) -> list[Any]:
        """The families of ``tid`` and of every task upstream of it (each once)."""
        families: dict[str, Any] = {}
        seen, stack = {tid}, [tid]
        while stack:
            node = self.nodes[stack.pop()]
            families.setdefault(node.task.family.name, node.task.family)
            for dep in node.deps:
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        return list(families.values())

    def _fill(self, tid: TaskId) -> None:
        """Compute the code digest and the file flag of ``tid`` and its upstream (iterative:
        a chain may be 100,000 deep)."""
        stack = [tid]
        while stack:
            top = stack[-1]
            if top in self._code:
                stack.pop()
                continue
            deps = self.nodes[top].deps
            todo = [dep for dep in deps if dep not in self._code]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            node = self.nodes[top]
            digest = hashlib.blake2b(node.task.family.fingerprint[0].encode(), digest_size=16,
                                     person=b"cp-code")
            for dep in sorted(deps):
                digest.update(self._code[dep])
            self._code[top] = digest.digest()
            files = node.files
            self._named[top] = named = (
                (files is not None and bool(files.outputs or files.inputs))
                or any(self._named[dep] for dep in deps)
            )
            self._files[top] = (
                named or node.task.spec().has_data_dir or any(self._files[dep] for dep in deps)
            )

    def producers_upstream(self, tid: TaskId) -> frozenset[TaskId]:
        """The tasks upstream of ``tid`` that declare outputs (``Product``) or ``File``
        inputs: the files it may read (a path is passed on as is, or named in its code).
        For a task with no files upstream (most of a large plan): a lookup. Each task's set
        is the union of its prerequisites', shared when only one of them contributes (a
        chain below one producer holds one set)."""
        owns = self._files.get(tid)
        if owns is None:
            self._fill(tid)
            owns = self._files[tid]
        if not owns:
            return _NO_TASKS
        known = self._producers
        found = known.get(tid)
        if found is not None:
            return found
        stack = [tid]  # iterative: a chain may be 100,000 deep
        while stack:
            top = stack[-1]
            if top in known:
                stack.pop()
                continue
            deps = [dep for dep in self.nodes[top].deps if self._files[dep]]
            todo = [dep for dep in deps if dep not in known]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            parts = []
            for dep in deps:
                if known[dep]:
                    parts.append(known[dep])
                files = self.nodes[dep].files
                if files is not None and (files.outputs or files.inputs):
                    parts.append(frozenset((dep,)))
            known[top] = (_NO_TASKS if not parts else parts[0] if len(parts) == 1
                          else frozenset().union(*parts))
        return known[tid]

    def digest(self, tid: TaskId, given: Mapping[str, str], payload: bytes | None = None,
               compressed: bool = False) -> str:
        """The context of the value ``tid`` computed from the prerequisite stamps ``given``
        (``payload``: the value in memory, ``None`` when in a blob file). The stamps of its
        prerequisites with named files upstream (``File`` inputs, ``Product``s) are folded
        in whatever the value is: even a number or ``None`` does not show that what depends
        on it reads no such file by its name (adv5 finding 06). Those with only data
        directories upstream, only when the value may hand on a path: a data directory has
        no name to write in code."""
        self._fill(tid)
        digest = hashlib.blake2b(self._code[tid], digest_size=8, person=b"cp-context")
        files, named = self._files, self._named
        may_name: bool | None = None
        for dep in sorted(self.nodes[tid].deps):
            if not files[dep]:
                continue
            if not named[dep]:
                if may_name is None:
                    may_name = _may_name_a_path(payload, compressed)
                if not may_name:
                    continue
            digest.update(f"\0{dep}\0{given.get(dep, '')}".encode())
        return digest.hexdigest()


_NO_TASKS: frozenset[TaskId] = frozenset()

_TEXT_OPS = frozenset({
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "GLOBAL",
    "STACK_GLOBAL", "INST", "PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER",
})
"""Pickle opcodes of values that may spell a path: text, bytes, any object or buffer."""


def _may_name_a_path(payload: bytes | None, compressed: bool) -> bool:
    """Whether a value may be (or hold) a path: a value made of numbers alone (a score, a
    list of floats) cannot, so a recomputation that gives it again is cut off although a
    prerequisite owns files. Unknown (in a blob file, large, unreadable): it may."""
    if payload is None or len(payload) > _SCANNED:
        return True
    import pickletools
    import zlib

    try:
        data = zlib.decompress(payload) if compressed else payload
        return any(op.name in _TEXT_OPS for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a pickle we can read: assume it may
        return True


_SCANNED = 1 << 16
"""The largest payload (bytes) read for :func:`_may_name_a_path`."""


_warned_classes: set[tuple[str, str]] = set()


def _warn_class(family: Any, name: str, unpickled: bool) -> None:
    import types
    import warnings

    from .fingerprint import FingerprintWarning

    code = getattr(family.fn, "__code__", None)
    file, line = (code.co_filename, code.co_firstlineno) if isinstance(code, types.CodeType) \
        else ("<unknown>", 1)
    module, _, qualname = name.rpartition(".")
    fix = (f"Name the class in the task's code (from {module} import {qualname.split('.')[0]}), "
           "or pin the task with @task(version=...) and bump the version when the class changes.")
    if unpickled:
        text = (f"Task {family.name} unpickled {name}, a class of your project that neither "
                "its code nor the code of the tasks upstream of it names (a model loaded from "
                "a file?): the class's code is not fingerprinted, so editing it will not re-run "
                f"this task. {fix}")
    else:
        text = (f"Task {family.name} returned a value made of {name}, a class of your project "
                "that neither its code nor the code of the tasks upstream of it names (loaded "
                "from a pickle file?): the class's code is not fingerprinted, so editing it will "
                f"not re-run the tasks that use this value. {fix}")
    warnings.warn_explicit(text, FingerprintWarning, file, line, module=family.module)
