"""The boundary with diskcache: the only module that knows more of it than its public API.

A family's index is a ``diskcache.Cache`` (``cache.db``). The store relies on these
internals, all pinned by ``tests/test_diskcache_boundary.py`` so that a diskcache release
that changes one fails loudly:

- the ``Cache`` table's columns (``key``, ``raw``, ``mode``, ``filename``, ``value``, ...)
  and ``Settings``; a ``str`` key is stored as-is with ``raw = 1``; a value smaller than
  ``disk_min_file_size`` is stored in the row with ``mode = MODE_RAW``;
- ``Cache._sql`` (the connection's ``execute``, inside the current transaction) for range
  and batch queries, and ``Cache._disk`` (its :class:`Disk`);
- ``Disk.fetch(mode, filename, value, read)`` and ``Disk.remove(file_path)``, overridden in
  a subclass made on first use (:func:`_disk_class`): diskcache deletes the file of an
  overwritten or deleted large value *before* the enclosing transaction commits, so the
  store's ``Disk`` holds those deletions back until COMMIT, and it only reads and deletes
  its own regular files (:data:`_VALUE_FILE`);
- a new index file is started by :func:`_begin` with the pragmas ``DEFAULT_SETTINGS`` names
  (``sqlite_auto_vacuum``, ``sqlite_journal_mode``): ``tests/test_index_creation.py`` checks
  that the result is the index diskcache alone makes.

Everything else goes through :class:`Index`, typed; what it uses of diskcache, internals
included, is written down as the protocols :class:`Cache` and :class:`Disk` (diskcache has
no type information of its own), each member pinned by the same tests.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol

from ._format import INDEX_FILE
from ._storefiles import NotRegularFile, open_stored

Value = bytes | str
"""What the store keeps in an index: ``bytes`` (entries) or ``str`` (logs, records)."""

INDEX_ERRORS: Final = (sqlite3.Error, UnicodeDecodeError, OSError)
"""What reading a family's index can raise: SQLite's errors, text that is not UTF-8 (SQLite
hands Python the raw bytes of a damaged schema or key), and the file system's errors."""

SETTINGS: Final[dict[str, object]] = {
    "cull_limit": 0,  # a build cache never evicts by itself
    "eviction_policy": "none",
    "statistics": False,
    "tag_index": False,
    "size_limit": 2**62,
}

COLUMNS: Final = {
    "Cache": {"rowid", "key", "raw", "store_time", "expire_time", "access_time", "access_count",
              "tag", "size", "mode", "filename", "value"},
    "Settings": {"key", "value"},
}

MODE_RAW: Final = 1
MODE_BINARY: Final = 2
MODE_PICKLE: Final = 4

_VALUE_FILE = re.compile(r"[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val")
"""diskcache's own value files (``Disk.filename``): large ``e:`` and ``log:`` values."""


class Disk(Protocol):
    """What the store uses of a ``diskcache.Disk`` (the subclass :func:`_disk_class` makes)."""

    deferred: list[str] | None
    """Deletions held back until COMMIT (``None``: outside :meth:`Index.transaction`)."""

    def __init__(self, directory: str) -> None: ...

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object: ...

    def remove(self, file_path: str) -> None: ...


class Cache(Protocol):
    """What the store uses of a ``diskcache.Cache``, its internals ``_sql`` and ``_disk``
    included (diskcache has no type information: this is what mypy checks against)."""

    _disk: Disk

    def _sql(self, query: str, params: Sequence[object] = ..., /) -> sqlite3.Cursor: ...

    def get(self, key: str) -> object: ...

    def set(self, key: str, value: Value) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def transact(self, retry: bool = ...) -> contextlib.AbstractContextManager[object]: ...

    def close(self) -> None: ...


_DISK_CLASS: type[Disk] | None = None


def _disk_class() -> type[Disk]:
    """A ``diskcache.Disk`` whose file deletions can be held back, and that only reads and
    deletes its own, regular files (made on first use: diskcache is imported lazily)."""
    global _DISK_CLASS
    import diskcache

    if _DISK_CLASS is None or not issubclass(_DISK_CLASS, diskcache.Disk):  # (re-imported)

        class _Disk(diskcache.Disk):  # type: ignore[misc]
            deferred: list[str] | None = None

            def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> object:
                if mode == MODE_PICKLE:
                    raise NotRegularFile(errno.EINVAL, "the store never pickles index values")
                if filename is None or mode == MODE_RAW:
                    return super().fetch(mode, filename, value, read)
                if read or not _VALUE_FILE.fullmatch(filename):  # diskcache reads an
                    raise NotRegularFile(errno.EINVAL, "not a value file of diskcache")  # OSError as absent
                with os.fdopen(open_stored(os.path.join(self._directory, filename)), "rb") as f:
                    data = f.read()
                return data if mode == MODE_BINARY else data.decode("utf-8")

            def remove(self, file_path: str) -> None:
                if not _VALUE_FILE.fullmatch(file_path):
                    return  # a crafted row: never delete outside the family's directory
                if self.deferred is not None:
                    self.deferred.append(file_path)
                else:
                    super().remove(file_path)

        _DISK_CLASS = _Disk
    return _DISK_CLASS


class Index:
    """A family's index: reads, batch reads, and writes in transactions.

    Open it with :func:`open_index` (diskcache, read and write) or :func:`open_read_only`
    (a cache on a read-only filesystem: diskcache cannot open it, it writes its settings on
    every open). Methods raise :data:`INDEX_ERRORS`.
    """

    def __init__(self, cache: Cache | None, con: sqlite3.Connection | None, directory: Path) -> None:
        self._cache = cache
        self._con = con
        self._disk = cache._disk if cache is not None else _disk_class()(str(directory))

    @property
    def writable(self) -> bool:
        return self._cache is not None

    def _sql(self, query: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        if self._cache is not None:
            return self._cache._sql(query, params)
        assert self._con is not None
        return self._con.execute(query, params)

    def get(self, key: str) -> Value | None:
        """The value of a key; ``None`` when absent, or when its file cannot be read."""
        if self._cache is not None:
            value = self._cache.get(key)
        else:
            row = self._sql("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                            (key,)).fetchone()
            if row is None:
                return None
            try:
                value = self._disk.fetch(row[0], row[1], row[2], False)
            except OSError:  # as diskcache: a value file that cannot be read is absent
                return None
        return value if isinstance(value, (bytes, str)) else None

    def __contains__(self, key: str) -> bool:
        return self._sql("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._sql("SELECT COUNT(*) FROM Cache").fetchone()[0])

    def keys(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix``, in order (one range query)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._sql("SELECT key FROM Cache WHERE key >= ? AND key < ? AND raw = 1 ORDER BY key",
                         (prefix, end)).fetchall()
        return [key for (key,) in rows if isinstance(key, str)]

    def values(self, keys: Sequence[str] | None = None) -> Iterator[tuple[str, Value | None]]:
        """``(key, value)`` of ``keys`` (absent ones left out; at most 500 keys), or of every
        row: one query, where a value kept in its row costs no further read."""
        if keys is None:
            rows = self._sql("SELECT key, mode, value FROM Cache WHERE raw = 1").fetchall()
        else:
            marks = ",".join("?" * len(keys))
            rows = self._sql(
                f"SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN ({marks})", keys
            ).fetchall()
        for key, mode, value in rows:
            if not isinstance(key, str):
                continue
            if mode == MODE_RAW and isinstance(value, bytes):
                yield key, value
            else:
                yield key, self.get(key)

    def scan(self, prefix: str, wanted: Collection[str]) -> dict[str, Value | None]:
        """``{key without prefix: value}`` of the rows whose key is ``prefix`` + any name,
        in one pass over the index (a warm run's check): SQLite matches and cuts the
        prefix, and the dict is made as the rows come, without a Python loop. A value kept
        in a file is read only for a name in ``wanted`` (``None`` if it cannot be read);
        rows of other names may be left in. ``prefix``: two characters."""
        found: dict[str, Value | None] = dict(self._sql(
            "SELECT substr(key, 3), value FROM Cache WHERE raw = 1 AND mode = ? "
            "AND substr(key, 1, 2) = ?", (MODE_RAW, prefix)))
        in_files = self._sql("SELECT substr(key, 3) FROM Cache WHERE raw = 1 AND mode IS NOT ? "
                             "AND substr(key, 1, 2) = ?", (MODE_RAW, prefix)).fetchall()
        if in_files:  # (rare: large entries)
            names = set(wanted)
            for (name,) in in_files:
                if name in names:
                    found[name] = self.get(prefix + name)
        return found

    def set(self, key: str, value: Value) -> None:
        self._writer().set(key, value)

    def delete(self, key: str) -> bool:
        return bool(self._writer().delete(key))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One SQLite transaction; replaced value files are deleted after COMMIT."""
        cache = self._writer()
        deferred: list[str] = []
        self._disk.deferred = deferred
        try:
            with cache.transact(retry=True):
                yield
        finally:
            self._disk.deferred = None
        for path in deferred:  # only reached once committed; after a rollback they are still used
            self._disk.remove(path)

    def _writer(self) -> Cache:
        if self._cache is None:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return self._cache

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self._con is not None:
            self._con.close()


def open_index(directory: Path) -> Index:
    """Open (creating it if needed) the index in ``directory`` for reading and writing."""
    import diskcache

    if not os.path.lexists(directory / INDEX_FILE):
        _begin(directory, {**diskcache.DEFAULT_SETTINGS, **SETTINGS})
    return Index(diskcache.Cache(str(directory), disk=_disk_class(), **SETTINGS), None, directory)


def _begin(directory: Path, settings: Mapping[str, object]) -> None:
    """Start a new index file as diskcache would (its directory, ``auto_vacuum`` and the
    write-ahead log), but without syncing: diskcache's creation then takes 4 syncs, not 12.

    diskcache sets these two pragmas on a new file in SQLite's rollback mode, before its
    ``synchronous`` setting applies, so each is a fully synced transaction (journal,
    directory, journal, file); the rest of its creation runs in WAL mode, whose commits it
    does not sync, and the checkpoint when it closes in ``Cache.__init__`` syncs the log, the
    file and the directory before any entry is written. A crash before then leaves at worst
    a file that diskcache completes (every statement of its creation is ``IF NOT EXISTS``)
    or finds damaged (moved aside: it held no entries). Best effort: on any error,
    diskcache's own creation runs, and raises what it raises.
    """
    with contextlib.suppress(OSError, sqlite3.Error):
        os.makedirs(directory, 0o755, exist_ok=True)  # (diskcache's mode)
        con = sqlite3.connect(directory / INDEX_FILE, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous = 0")
            con.execute(f"PRAGMA auto_vacuum = {int(str(settings['sqlite_auto_vacuum']))}")
            con.execute(f"PRAGMA journal_mode = {settings['sqlite_journal_mode']}").fetchall()
            # Synced again before closing: if another process made this file meanwhile and
            # left entries in its log, the checkpoint on close must sync them.
            con.execute("PRAGMA synchronous = 1")
        finally:
            con.close()


def open_read_only(directory: Path) -> Index:
    """Open the index in ``directory`` for reading only."""
    db = directory / "cache.db"
    # Without a write-ahead log (closed cleanly), nothing else can be changing it: opened
    # "immutable", SQLite needs no shared-memory file, which it could not create here.
    immutable = "&immutable=1" if not os.path.lexists(f"{db}-wal") else ""
    con = sqlite3.connect(f"file:{db}?mode=ro{immutable}", uri=True, timeout=60,
                          check_same_thread=False)
    try:
        con.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()  # readable at all?
    except BaseException:
        con.close()
        raise
    return Index(None, con, directory)


def count_keys(db: Path, prefix: str) -> int:
    """How many keys of an index start with ``prefix``, read without diskcache (fast).

    Raises:
        sqlite3.Error, UnicodeDecodeError: the index cannot be read.
    """
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT COUNT(*) FROM Cache WHERE raw = 1 AND key >= ? AND key < ?",
                          (prefix, end)).fetchone()
    finally:
        con.close()
    return int(row[0])


def damaged(exc: BaseException) -> bool:
    """Whether an error from an index means that the file is damaged (not: locked, read-only,
    full): SQLite says it is not a database or is malformed, or its text is not UTF-8."""
    return (type(exc) is sqlite3.DatabaseError or isinstance(exc, UnicodeDecodeError)
            or str(exc).startswith("Could not decode to UTF-8"))  # (an OperationalError)


def bad_schema(db: Path) -> bool:
    """Whether an index lacks the tables and columns that diskcache made: a damaged schema
    that SQLite still parses ("no such column: key"). Read on a connection of its own."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            for table, columns in COLUMNS.items():
                found = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                if not columns <= found:
                    return True
        finally:
            con.close()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        return damaged(exc)
    return False


def read_only(exc: BaseException) -> bool:
    """Whether an error opening an index says the cache cannot be written (but maybe read)."""
    text = str(exc).lower()
    return (getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM)
            or "readonly" in text or "read-only" in text or "unable to open database" in text)
