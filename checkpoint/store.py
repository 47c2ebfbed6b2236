"""The on-disk store of task results: the facade the rest of checkpoint uses.

Layout (the original checkpoint-tool's, which this package keeps)::

    {cache_dir}/checkpoint/
        FORMAT                          store format version
        {module}.{function}/            one index per task family
            cache.db                    the family's index (diskcache)
            blobs/{id}.{token}.bin      payloads larger than INLINE_MAX
            data/{task_id}/             TaskDirectory() of each task

What an entry holds is :mod:`._format`'s (the one home of the stored format); how a value
becomes a payload and a value file, :mod:`._codec`'s (what workers use); the directory
tree, its checks and the data directories, :mod:`._storeroot`'s (who may have written it:
:mod:`._storetrust`); the indexes, :mod:`._index`'s, over :mod:`._diskcache`, the only
module that knows diskcache's internals; ``cache verify`` is :mod:`._verify`.

**Who writes.** Only the coordinating process (the one that plans and schedules the run)
opens the index and writes entries. Workers, local or remote, never touch the index: they
return small payloads to the coordinator and write large ones straight into ``blobs/`` (when
they can see the cache directory; otherwise they return them too), and they read large
prerequisite payloads from there. SQLite never has to be shared across machines.

**Atomic writes.** A blob file is complete before any index row names it, and the index rows
of a batch of results are inserted in one SQLite transaction (WAL), so a crash or ``kill -9``
at any moment leaves an entry either complete or absent (at worst an orphan blob file that
nothing names). A value file that diskcache itself keeps (a large ``log:`` or an entry with
many prerequisites) is deleted only once the transaction that replaced it has committed.
A stored payload is checked against its size and checksum when loaded; a mismatch raises
:class:`~checkpoint.errors.CorruptEntryError` and the entry counts as missing.

**Touching.** ``checkpoint touch`` rewrites the ``e:`` values of existing entries (new
fingerprint and prerequisite stamps, same payload) in one transaction per family.

**Clearing.** A family is cleared by renaming its directory into ``.trash-*`` (atomic) and
then deleting it; leftovers of an interrupted deletion are removed when a store is opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from ._codec import (
    BlobRef,
    decode_payload,
    decoded,
    encode_value,
    remove_blob,
    stream_value,
    verified_payload,
    write_blob,
)
from ._datadirs import DataDirs, read_manifest
from ._diskcache import INDEX_ERRORS, Index
from ._format import (
    DATA_MANIFEST,
    ENTRY,
    FAILED_RUN,
    FORMAT,
    INDEX_FILE,
    INLINE_MAX,
    LOG,
    PACKAGES,
    SOURCE,
    TASK_ID,
    FailedRun,
    Meta,
    Record,
    blob_dir,
    new_stamp,
)
from ._index import Indexes, rewrite_metas, store_records
from ._storefiles import open_stored, tree_size
from ._storeroot import StoreRoot, resolve_cache_dir
from ._types import FamilyDir
from ._verify import Problem, verify

__all__ = [
    "FORMAT", "INLINE_MAX", "BlobRef", "FailedRun", "Meta", "Problem", "Record", "Store",
    "decode_payload", "encode_value", "new_stamp", "open_stored", "resolve_cache_dir",
    "stream_value", "tree_size", "write_blob",
]


class Store:
    """A checkpoint store rooted at ``{cache_dir}/checkpoint``; see the module docstring.

    **Trust.** A stored value is a pickle, and loading a pickle runs code, so the store
    refuses directories that another user could write to (:mod:`._storetrust`), checks
    every name it reads from the index before it opens or deletes a file, opens only
    regular files and never follows a symbolic link inside the cache.

    **Families** are named by their directory (:data:`~checkpoint._types.FamilyDir`).
    """

    _open_stores: dict[Path, Store] = {}

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.tree = StoreRoot(cache_dir)
        """The directory tree (``tree.ensure()`` creates the store, or checks the one there)."""
        self.root = self.tree.path
        self.data = DataDirs(self.tree)
        """The tasks' data directories."""
        self.indexes = Indexes(self.tree)
        self._pid = os.getpid()

    @classmethod
    def open(cls, cache_dir: str | os.PathLike[str] | None = None) -> Store:
        """Return the (per-process, shared) store for a cache directory."""
        path = resolve_cache_dir(cache_dir)
        store = cls._open_stores.get(path)
        if store is not None and store._pid == os.getpid() and store._revalidate():
            return store
        store = cls._open_stores[path] = cls(path)
        return store

    def _revalidate(self) -> bool:
        """Whether this long-lived store still matches the disk; drop stale family handles.

        An open SQLite connection keeps reading a database file that was deleted or replaced
        behind its back (``rm -rf .cache`` in a shell while a notebook keeps its store), so
        each ``open`` compares the files' identities with those seen when they were opened."""
        if not self.tree.still_there():
            self.close()
            return False
        self.indexes.drop_stale()
        return True

    def check_writable(self, families: Iterable[FamilyDir]) -> None:
        """Check, before anything runs, that results of these families can be stored (a
        read-only cache still serves fresh results, but cannot take new ones).

        Raises:
            StoreError: a directory or index that must be written is not writable.
        """
        self.tree.check_writable(list(families))

    def take_notices(self) -> list[str]:
        """Problems the store found and repaired since the last call (e.g. a damaged index)."""
        return self.indexes.take_notices()

    def close(self) -> None:
        """Close every open family index."""
        self.indexes.close()

    # --- reading --------------------------------------------------------------------

    def get_meta(self, family: FamilyDir, task_id: str) -> Meta | None:
        """The metadata of a stored entry, or ``None`` when there is none."""
        return self.indexes.meta(family, task_id)

    def get_metas(self, family: FamilyDir, task_ids: Sequence[str]) -> dict[str, Meta]:
        """The metadata of many entries of one family at once (absent ones are left out)."""
        return self.indexes.metas(family, task_ids)

    def metas_in_order(self, family: FamilyDir, task_ids: Sequence[str]) -> list[Meta | None]:
        """:meth:`get_metas` in the order of ``task_ids``, ``None`` for an absent entry (a
        warm run's check reads 200,000 at once)."""
        return self.indexes.metas_in_order(family, task_ids)

    def load_payload(self, family: FamilyDir, task_id: str, meta: Meta | None = None) -> bytes:
        """The verified payload of a stored entry.

        Raises:
            CorruptEntryError: the entry is absent, truncated or fails its checksum.
        """
        meta = meta or self.get_meta(family, task_id)
        blob = self.blob_ref(family, meta) if meta is not None and meta.blob else None
        return verified_payload(meta, blob, f"{meta.expr if meta else task_id} ({family})")

    def load_value(self, family: FamilyDir, task_id: str) -> Any:
        """The stored value of an entry (verified, decompressed, unpickled)."""
        meta = self.get_meta(family, task_id)
        if meta is not None and meta.blob:  # read in place, never a second copy in memory
            return decoded(self.blob_ref(family, meta), f"{meta.expr} ({family})")
        payload = self.load_payload(family, task_id, meta)
        assert meta is not None
        return decoded((payload, meta.compressed), f"{meta.expr} ({family})", str(self.root))

    def get_source(self, family: FamilyDir, digest: str) -> str | None:
        """The normalized source remembered for a code fingerprint."""
        return self.indexes.text(family, SOURCE + digest)

    def get_log(self, family: FamilyDir, task_id: str) -> str | None:
        """The captured output kept for a task's entry (see :attr:`Meta.log`)."""
        return self.indexes.text(family, LOG + task_id)

    def get_failed_run(self, family: FamilyDir, task_id: str) -> FailedRun | None:
        """The task's last failed run, if one is recorded."""
        text = self.indexes.text(family, FAILED_RUN + task_id)
        return None if text is None else FailedRun.from_json(text)

    def failed_run_ids(self, family: FamilyDir) -> list[str]:
        """Ids of the family's tasks that have a recorded failed run (one range query)."""
        return [key[len(FAILED_RUN):] for key in self.indexes.keys(family, FAILED_RUN)]

    def families(self) -> list[FamilyDir]:
        """Directory names of the families that have a store."""
        return [FamilyDir(name) for name in self.tree.families()]

    def entries(self, family: FamilyDir) -> Iterator[tuple[str, Meta]]:
        """``(task id, meta)`` of every entry of a family."""
        for key in self.indexes.keys(family, ENTRY):
            if TASK_ID.fullmatch(key[2:]):  # a crafted row names no task: never a path
                meta = self.get_meta(family, key[2:])
                if meta is not None:
                    yield key[2:], meta

    def count_entries(self, family: FamilyDir) -> int:
        """How many entries a family has, read straight from its index (fast: no diskcache)."""
        from ._diskcache import count_keys

        if not self.tree.found() or not self.tree.family_index(family)[0]:
            return 0
        try:
            return count_keys(self.root / family / INDEX_FILE, ENTRY)
        except INDEX_ERRORS:
            return sum(1 for _ in self.entries(family))

    def blob_dir(self, family: FamilyDir) -> Path:
        """The directory of a family's large payloads."""
        return blob_dir(self.root, family)

    def blob_ref(self, family: FamilyDir, meta: Meta) -> BlobRef:
        """Where the payload of an entry stored as a blob lives."""
        return BlobRef(str(self.blob_dir(family) / meta.blob), meta.size, meta.crc, meta.compressed)

    def disk_usage(self, family: FamilyDir | None = None) -> int:
        """Bytes on disk under a family's directory (or the whole store when ``None``)."""
        return tree_size(self.root if family is None else self.root / family)

    def entry_size(self, family: FamilyDir, task_id: str, meta: Meta) -> int:
        """Bytes an entry takes: its stored value plus its data directory."""
        return meta.size + self.data.size(family, task_id)

    def held_size(self, family: FamilyDir) -> int:
        """Bytes a family's entries hold: the sum of :meth:`entry_size` (no index overhead)."""
        return sum(self.entry_size(family, tid, meta) for tid, meta in self.entries(family))

    def data_manifest(self, family: FamilyDir, task_id: str) -> dict[str, list[int]] | None:
        """What the entry's data directory held when it was stored (``None``: not recorded)."""
        return read_manifest(self.indexes.text(family, DATA_MANIFEST + task_id))

    def package_versions(self, family: FamilyDir, metas: Mapping[str, Meta]) -> dict[str, dict[str, str]]:
        """``{task id: {package: version}}``: the versions of the installed packages the code
        used, recorded when each entry of ``metas`` (by task id) was stored; entries without
        a record (none used, or stored before they were recorded) are left out."""
        from ._packages import Span, versions_of

        keys = self.indexes.keys(family, PACKAGES) if metas else []
        if not keys:
            return {}
        texts = [self.indexes.text(family, key) for key in keys]
        spans = [span for text in texts if (span := Span.from_text(text)) is not None]
        return {tid: versions for tid, meta in metas.items()
                if (versions := versions_of(spans, meta))}

    def data_dir(self, family: FamilyDir, task_id: str) -> Path:
        """The data directory of a task (not created)."""
        return self.data.path(family, task_id)

    # --- writing --------------------------------------------------------------------

    def put_many(self, records: Iterable[Record]) -> None:
        """Store finished results, one transaction per family."""
        by_family: dict[FamilyDir, list[Record]] = {}
        for record in records:
            by_family.setdefault(record.family, []).append(record)
        self.indexes.drop_stale(by_family)  # a family cleared meanwhile gets its results in a new index
        for family, items in by_family.items():
            self.data.record_manifests(family, items)
            try:
                for r in items:  # blob files first: an index row never names a missing file
                    if r.needs_blob:
                        assert r.payload is not None
                        r.meta.blob = write_blob(self.blob_dir(family), r.id, r.payload)
            except OSError as exc:
                raise self.indexes.write_error(family, exc) from None

            self.indexes.write(family, partial(store_records, items), quarantine=True)
            for r in items:
                if r.replaces and r.replaces != r.meta.blob:
                    remove_blob(self.blob_dir(family), r.replaces)

    def put_failed_runs(self, runs: Iterable[tuple[FamilyDir, str, FailedRun]]) -> None:
        """Record failed runs, given as ``(family, task id, run)``; one transaction per family."""
        by_family: dict[FamilyDir, list[tuple[str, FailedRun]]] = {}
        for family, task_id, run in runs:
            by_family.setdefault(family, []).append((task_id, run))
        for family, items in by_family.items():
            def store(index: Index, items: list[tuple[str, FailedRun]] = items) -> None:
                for task_id, run in items:
                    index.set(FAILED_RUN + task_id, run.to_json())

            self.indexes.write(family, store)

    def put_metas(self, family: FamilyDir, metas: dict[str, Meta], source: tuple[str, str] | None = None) -> None:
        """Rewrite the metadata of existing entries (``touch``), in one transaction.

        Payloads are kept as they are (an inline payload is copied into the rewritten
        ``e:`` value); an id without an entry is skipped.
        """
        self.indexes.write(family, partial(rewrite_metas, metas, source), create=False)

    def prepare_data_dir(self, family: FamilyDir, task_id: str) -> Path:
        """Create an empty data directory for a task about to run (see
        :meth:`DataDirs.prepare`)."""
        return self.data.prepare(family, task_id)

    def delete(self, family: FamilyDir, task_id: str) -> bool:
        """Remove one entry and its data directory; return whether an entry existed.

        Only files the store made are deleted: a value file whose name the index gives
        wrongly, or a data directory reached through a symbolic link, is left alone (the
        link itself is removed).
        """
        existed = False
        if self.indexes.existing(family) is not None:
            meta = self.get_meta(family, task_id)

            def remove(index: Index) -> None:
                nonlocal existed
                existed = index.delete(ENTRY + task_id)
                index.delete(LOG + task_id)
                index.delete(DATA_MANIFEST + task_id)

            self.indexes.write(family, remove, create=False, advise=True)
            if meta is not None and meta.blob:
                remove_blob(self.blob_dir(family), meta.blob)
        self.data.remove(family, task_id)
        return existed

    def delete_row(self, family: FamilyDir, key: str) -> None:
        """Remove an index row whose key is not a task id (no file is touched)."""
        def remove(index: Index) -> None:
            index.delete(key)

        self.indexes.write(family, remove, create=False)

    def verify(self, repair: bool = False) -> tuple[int, list[Problem]]:
        """Check every stored entry and every file the store made; see :func:`._verify.verify`."""
        return verify(self, repair)

    def clear_family(self, family: FamilyDir) -> None:
        """Remove a family's whole directory (entries and data directories)."""
        self.indexes.close_family(family)
        self.tree.remove_family(family)
