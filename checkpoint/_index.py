"""The families' indexes: opened once per process, checked against the disk, damage moved
aside, and the reads the store makes of them (entries, texts, keys)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ._diskcache import (
    INDEX_ERRORS,
    Index,
    bad_schema,
    damaged,
    open_index,
    open_read_only,
    read_only,
)
from ._format import DATA_MANIFEST, ENTRY, INDEX_FILE, LOG, SOURCE, Meta, Record
from ._storefiles import NotRegularFile, advice, describe, identity
from ._storeroot import StoreRoot
from .errors import StoreError


class Indexes:
    """Each family's :class:`~checkpoint._diskcache.Index`, opened on first use.

    An index that SQLite finds damaged is moved aside to ``cache.db.damaged-*`` (its
    entries then count as missing) and a notice says so (:meth:`take_notices`).
    """

    def __init__(self, root: StoreRoot) -> None:
        self.root = root
        self._open: dict[str, Index] = {}
        self._identities: dict[str, tuple[int, int] | None] = {}
        """(device, inode) of each open family's index file."""
        self.notices: list[str] = []

    def get(self, family: str, create: bool = True) -> Index | None:
        """A family's index; with ``create``, opened for writing and made if needed, else
        ``None`` when there is none (reading never creates the cache directory)."""
        index = self._open.get(family)
        if create and index is not None and not index.writable:  # now to be written: reopen it
            self._open.pop(family).close()
            index = None
        if index is not None:
            return index
        directory = self.root.path / family
        if create:
            self.root.ensure()
        elif not self.root.found():
            return None
        exists, problem = self.root.family_index(family)
        if problem:
            self.quarantine(family, NotRegularFile(errno.EINVAL, problem))
        if not exists and not create:
            return None
        try:
            try:
                index = open_index(directory)
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                if not self.is_damage(family, exc):
                    raise
                self.quarantine(family, exc)
                index = open_index(directory)
        except (OSError, sqlite3.Error, UnicodeDecodeError) as exc:
            index = None if create or not read_only(exc) else _read_only_index(directory)
            if index is None:
                raise StoreError(
                    f"Cannot open the cache of {family} at {directory}: {describe(exc)}. "
                    f"{advice(exc)}"
                ) from None
        self._open[family] = index
        self._identities[family] = identity(directory / INDEX_FILE)
        return index

    def existing(self, family: str) -> Index | None:
        """A family's index opened for writing (``None`` when it has none; never created)."""
        return None if self.get(family, create=False) is None else self.get(family)

    def drop_stale(self, families: Iterable[str] | None = None) -> None:
        """Close the indexes (of ``families``, else every open one) whose file was deleted
        or replaced since they were opened (``checkpoint clear`` in another process while
        this run goes on): the next use opens the one on disk now, not the deleted file an
        open SQLite connection would keep using. One ``stat`` per family."""
        for family in list(self._open) if families is None else [
                f for f in families if f in self._open]:
            if identity(self.root.path / family / INDEX_FILE) != self._identities.get(family):
                index = self._open.pop(family)
                with contextlib.suppress(Exception):
                    index.close()

    def is_damage(self, family: str, exc: BaseException) -> bool:
        """Whether an error from a family's index means the index is damaged."""
        if damaged(exc):
            return True
        return isinstance(exc, sqlite3.OperationalError) and bad_schema(
            self.root.path / family / INDEX_FILE)

    def read_error(self, family: str, exc: BaseException) -> None:
        """An error while reading a family's index: move a damaged index aside (its entries
        then count as missing); anything else is a :class:`StoreError`."""
        if not isinstance(exc, OSError) and self.is_damage(family, exc):
            self.quarantine(family, exc)
            return
        raise StoreError(
            f"Cannot read the cache of {family} at {self.root.path / family}: {describe(exc)}. "
            f"{advice(exc)}"
        ) from None

    def write_error(self, family: str, exc: BaseException, advise: bool = False) -> StoreError:
        """The error to raise when a family's index cannot be written: a full disk, unless
        ``advise`` (then what the error suggests)."""
        if advise:
            return StoreError(f"Cannot write to the cache at {self.root.path / family}: "
                              f"{describe(exc)}. {advice(exc)}")
        return StoreError(
            f"Cannot write to the cache at {self.root.path / family}: "
            f"{getattr(exc, 'strerror', None) or describe(exc)}. "
            "Free some space or choose another --cache-dir."
        )

    def write(self, family: str, change: Callable[[Index], None], *, create: bool = True,
              quarantine: bool = False, advise: bool = False) -> None:
        """Apply ``change`` to a family's index in one transaction (nothing when the index
        does not exist and ``create`` is false). With ``quarantine``, a damaged index is
        moved aside and the change applied to a new one.

        Raises:
            StoreError: the index cannot be written (a full disk, no permission, ...).
        """
        for attempt in (1, 2):
            index = self.get(family) if create else self.existing(family)
            if index is None:
                return
            try:
                with index.transaction():
                    change(index)
                return
            except INDEX_ERRORS as exc:
                if quarantine and attempt == 1 and not isinstance(exc, OSError) \
                        and self.is_damage(family, exc):
                    self.quarantine(family, exc)  # store into a new index
                    continue
                raise self.write_error(family, exc, advise) from None

    def quarantine(self, family: str, exc: BaseException) -> None:
        """Move a damaged index aside (its entries then count as missing) and say so."""
        self.close_family(family)
        db = self.root.path / family / INDEX_FILE
        aside = db.with_name(f"{INDEX_FILE}.damaged-{secrets.token_hex(4)}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{db}{suffix}", f"{aside}{suffix}")
        self.notices.append(
            f"The index of {family} ({db}) is damaged ({describe(exc)}). It was moved aside to "
            f"{aside.name}; the family's results will be recomputed."
        )

    def take_notices(self) -> list[str]:
        """Problems found and repaired since the last call (e.g. a damaged index)."""
        notices, self.notices = self.notices, []
        return notices

    def close_family(self, family: str) -> None:
        index = self._open.pop(family, None)
        if index is not None:
            with contextlib.suppress(Exception):
                index.close()

    def close(self) -> None:
        """Close every open index."""
        for index in self._open.values():
            index.close()
        self._open.clear()

    # --- reading ----------------------------------------------------------------------

    def text(self, family: str, key: str) -> str | None:
        """A text value of a family's index (``None`` when absent or unreadable)."""
        value = self.value(family, key)
        return value if isinstance(value, str) else None

    def value(self, family: str, key: str) -> bytes | str | None:
        """A value of a family's index (``None`` when absent or the index is damaged)."""
        index = self.get(family, create=False)
        if index is None:
            return None
        try:
            return index.get(key)
        except INDEX_ERRORS as exc:
            self.read_error(family, exc)
            return None

    def keys(self, family: str, prefix: str) -> list[str]:
        """The keys of a family's index that start with ``prefix`` (none when it is damaged)."""
        index = self.get(family, create=False)
        if index is None:
            return []
        try:
            return index.keys(prefix)
        except INDEX_ERRORS as exc:
            self.read_error(family, exc)
            return []

    def meta(self, family: str, task_id: str) -> Meta | None:
        """The metadata of a stored entry, or ``None`` when there is none."""
        return _parse(self.value(family, ENTRY + task_id))

    def metas(self, family: str, task_ids: Sequence[str]) -> dict[str, Meta]:
        """The metadata of many entries of one family at once (absent ones are left out)."""
        return {tid: meta for tid, meta in zip(task_ids, self.metas_in_order(family, task_ids),
                                               strict=True) if meta is not None}

    def metas_in_order(self, family: str, task_ids: Sequence[str]) -> list[Meta | None]:
        """The metadata of many entries of one family at once, in the order of ``task_ids``
        (``None`` for an absent or unreadable entry: it counts as missing).

        Reads the index with one query per 500 keys instead of one ``get`` per key, or, when
        most of the family is wanted (a warm run), with one scan of it.
        """
        index = self.get(family, create=False)
        if index is None or not task_ids:
            return [None] * len(task_ids)
        try:
            if len(task_ids) < 8:
                values: Mapping[str, bytes | str | None] = {
                    tid: index.get(ENTRY + tid) for tid in task_ids}
            elif len(task_ids) * 2 >= len(index):  # most of the family (a warm run): one scan
                values = index.scan(ENTRY, task_ids)
            else:
                values = {}
                for start in range(0, len(task_ids), 500):
                    for key, value in index.values(
                            [ENTRY + tid for tid in task_ids[start:start + 500]]):
                        values[key[2:]] = value
        except INDEX_ERRORS as exc:
            self.read_error(family, exc)
            return [None] * len(task_ids)
        return _parse_wanted(values, task_ids)


def _parse_wanted(values: Mapping[str, bytes | str | None], task_ids: Sequence[str]) -> list[Meta | None]:
    """Metadata of the ``e:`` values of ``task_ids`` (by task id), in their order; absent
    or unreadable values count as missing (``None``)."""
    found: list[Meta | None] = []
    append = found.append
    from_entry = Meta.from_entry
    get = values.get
    for tid in task_ids:
        value = get(tid)
        if type(value) is bytes:
            try:
                append(from_entry(value))
                continue
            except (ValueError, TypeError):
                pass
        append(None)
    return found


def _parse(value: bytes | str | None) -> Meta | None:
    """An ``e:`` value as metadata; ``None`` when absent or unreadable (counts as missing)."""
    if not isinstance(value, bytes):
        return None
    try:
        return Meta.from_entry(value)
    except (ValueError, TypeError):
        return None


def _read_only_index(directory: Path) -> Index | None:
    """The index opened for reading only (``None`` when even that fails)."""
    try:
        return open_read_only(directory)
    except (sqlite3.Error, UnicodeDecodeError):
        return None


def store_records(records: list[Record], index: Index) -> None:
    """Write finished results' rows (their value files are written already)."""
    for r in records:
        if r.source is not None and (SOURCE + r.source[0]) not in index:
            index.set(SOURCE + r.source[0], r.source[1])
        index.set(ENTRY + r.id, r.meta.to_entry(r.payload))
        if r.log:
            index.set(LOG + r.id, r.log)
        if r.data:  # a row per data directory only: no cost for the other entries
            index.set(DATA_MANIFEST + r.id, r.data)
    if any(r.packages for r in records):  # a row per process, not per entry
        from ._packages import record_spans

        record_spans(records, index)


def rewrite_metas(metas: dict[str, Meta], source: tuple[str, str] | None, index: Index) -> None:
    """Rewrite the metadata of existing entries, keeping their payloads (an id without an
    entry, or with an unreadable one, is left as it is)."""
    if source is not None and (SOURCE + source[0]) not in index:
        index.set(SOURCE + source[0], source[1])
    for task_id, meta in metas.items():
        entry = index.get(ENTRY + task_id)
        if not isinstance(entry, bytes):
            continue
        try:
            payload = Meta.from_entry(entry).inline
        except ValueError:
            continue  # an unreadable row stays as it is (it counts as missing)
        index.set(ENTRY + task_id, meta.to_entry(payload))
