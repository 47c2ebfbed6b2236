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

import contextlib
import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any

from ._codec import Payload
from ._types import TaskId
from .errors import CorruptEntryError
from .store import Meta, Store, open_stored


class RunValues:
    """The current entry of each task and the payloads this run still needs."""

    def __init__(self, store: Store, family_of: Callable[[TaskId], str], keep: set[TaskId]) -> None:
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



def same_payload(store: Store, family: str, previous: Meta | None, new: Meta,
                 payload: bytes | None) -> bool:
    """Whether a new result's payload (``payload``, or the blob file ``new.blob``) is byte for
    byte the previous entry's: then the new entry keeps the previous stamp, and dependents
    computed from the previous value stay fresh (early cutoff)."""
    if previous is None or (previous.size, previous.crc, previous.compressed) != (
        new.size, new.crc, new.compressed
    ):
        return False
    if not new.size:
        return True
    try:
        with _view(store, family, previous, previous.inline) as old, \
                _view(store, family, new, payload) as cur:
            return bool(old == cur)
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _view(store: Store, family: str, meta: Meta, data: bytes | None) -> Iterator[Any]:
    if not meta.blob:
        if data is None:
            raise ValueError("no payload")
        yield data
        return
    with os.fdopen(open_stored(store.blob_dir(family) / meta.blob), "rb") as f:  # never a FIFO
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view
