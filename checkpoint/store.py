"""The on-disk store of task results.

Layout (the original checkpoint-tool's, which this package keeps)::

    {cache_dir}/checkpoint/
        FORMAT                          store format version
        {module}.{function}/            one diskcache.Cache per task family
            cache.db                    diskcache's index
            blobs/{id}.{token}.bin      payloads larger than INLINE_MAX
            data/{task_id}/             TaskDirectory() of each task

Each family's diskcache holds, per task id, one key ``e:{id}``: the entry's metadata as a
length-prefixed ``marshal``-ed tuple (:class:`Meta`: code fingerprint, the stamps of the prerequisites it was computed
from, its own stamp, size, CRC-32, timings) followed by the payload when the payload is small
(at most ``INLINE_MAX`` bytes), so most results cost one write. A larger payload is a file of
its own under ``blobs/``, named uniquely per computation, which the metadata names. The payload is
``cloudpickle.dumps(value)``, zlib-compressed when the family has a ``compress_level``.
``fp:{digest}`` keeps the normalized source behind each code fingerprint.

Run history rides along: the metadata records when and where the result was computed
(``started``, ``duration``, ``worker``); ``log:{id}`` holds the task's captured output, written
in the same transaction and only when there was output (``Meta.log`` says whether the
current entry has one); ``run:{id}`` records the last *failed* run (:class:`FailedRun`).
A silent, successful task thus costs no extra write.

**Who writes.** Only the coordinating process (the one that plans and schedules the run)
opens the index and writes entries. Workers, local or remote, never touch the index: they
return small payloads to the coordinator and write large ones straight into ``blobs/`` (when
they can see the cache directory; otherwise they return them too), and they read large
prerequisite payloads from there. SQLite never has to be shared across machines.

**Atomic writes.** A blob file is complete before any index row names it, and the index rows
of a batch of results are inserted in one SQLite transaction (WAL), so a crash or ``kill -9``
at any moment leaves an entry either complete or absent (at worst an orphan blob file that
nothing names).
diskcache itself deletes the file of an overwritten or deleted large value (a ``log:`` or an
entry with many prerequisites) as soon as the row changes, *before* the enclosing
transaction commits, so the store's caches use a ``Disk`` that holds those deletions back
until COMMIT (:func:`_atomic`).
A stored payload is checked against its size and CRC-32 when loaded; a mismatch raises
:class:`~checkpoint.errors.CorruptEntryError` and the entry counts as missing.

**Touching.** ``checkpoint touch`` rewrites the ``e:`` values of existing entries (new
fingerprint and prerequisite stamps, same payload) in one transaction per family.

**Clearing.** A family is cleared by renaming its directory into ``.trash-*`` (atomic) and
then deleting it; leftovers of an interrupted deletion are removed when a store is opened.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import marshal
import os
import pickle
import re
import secrets
import shutil
import sqlite3
import stat
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mmap

from . import _relocate
from .errors import (
    CorruptEntryError,
    StoreError,
    StoreVersionError,
    UnsafeCacheError,
    UnsafeCacheWarning,
)

FORMAT = "checkpoint-store 2"
INLINE_MAX = 16 * 1024

# Names the store derives from stored data are checked against these before any file is
# read or deleted: a crafted index row must not lead outside the cache.
_TASK_ID = re.compile(r"[0-9a-f]{32}")
_BLOB_NAME = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{12}\.bin")
_DISKCACHE_FILE = re.compile(r"[0-9a-f]{2}[/\\][0-9a-f]{2}[/\\][0-9a-f]{28}\.val")
"""diskcache's own value files (``Disk.filename``): large ``e:`` and ``log:`` values."""

_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class _NotRegularFile(OSError):
    """A stored file that is a FIFO, a device, a socket, a directory or a symbolic link."""


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _kind(mode: int) -> str:
    """What a file is, from its ``st_mode``: 'a FIFO', 'a symbolic link', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_stored(path: str | os.PathLike[str]) -> int:
    """Open a file of the store for reading; return its descriptor.

    Only a regular file is opened: a FIFO would block the reader forever, and a symbolic
    link could lead outside the cache (``O_NONBLOCK | O_NOFOLLOW``, then ``fstat``).

    Raises:
        OSError: it cannot be opened, or it is not a regular file (``str(exc)`` says why).
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise _NotRegularFile(errno.ELOOP, "it is a symbolic link, not a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegularFile(errno.EINVAL, f"it is {_kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _why(exc: OSError) -> str:
    """An OSError as a short phrase: 'it is a FIFO, not a regular file', 'No such file ...'."""
    return exc.strerror or str(exc)


_DISK_CLASS: Any = None


def _disk_class() -> Any:
    """A ``diskcache.Disk`` whose file deletions can be held back, and that only reads and
    deletes its own, regular files (made on first use)."""
    global _DISK_CLASS
    import diskcache

    if _DISK_CLASS is None or not issubclass(_DISK_CLASS, diskcache.Disk):  # (re-imported)

        class _Disk(diskcache.Disk):  # type: ignore[misc]
            deferred: list[str] | None = None

            def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
                if mode == diskcache.core.MODE_PICKLE:
                    raise _NotRegularFile(errno.EINVAL, "the store never pickles index values")
                if filename is None or mode == diskcache.core.MODE_RAW:
                    return super().fetch(mode, filename, value, read)
                if read or not _DISKCACHE_FILE.fullmatch(filename):  # diskcache reads an
                    raise _NotRegularFile(errno.EINVAL, "not a value file of diskcache")  # OSError as absent
                with os.fdopen(open_stored(os.path.join(self._directory, filename)), "rb") as f:
                    data = f.read()
                return data if mode == diskcache.core.MODE_BINARY else data.decode("utf-8")

            def remove(self, file_path: str) -> None:
                if not _DISKCACHE_FILE.fullmatch(file_path):
                    return  # a crafted row: never delete outside the family's directory
                if self.deferred is not None:
                    self.deferred.append(file_path)
                else:
                    super().remove(file_path)

        _DISK_CLASS = _Disk
    return _DISK_CLASS


class _ReadOnlyIndex:
    """A family's index opened read-only, for a cache on a read-only filesystem or mount (an
    archived result set): what reading needs of ``diskcache.Cache``, and no writing.

    diskcache itself cannot open such an index: it writes its settings on every open.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        db = directory / "cache.db"
        # Without a write-ahead log (closed cleanly), nothing else can be changing it: opened
        # "immutable", SQLite needs no shared-memory file, which it could not create here.
        immutable = "&immutable=1" if not os.path.lexists(f"{db}-wal") else ""
        self._con = sqlite3.connect(f"file:{db}?mode=ro{immutable}", uri=True, timeout=60,
                                    check_same_thread=False)
        self._con.execute("SELECT 1 FROM Cache LIMIT 1").fetchall()  # readable at all?
        self._disk = _disk_class()(str(directory))

    def _sql(self, *args: Any) -> sqlite3.Cursor:
        return self._con.execute(*args)

    def get(self, key: str, default: Any = None) -> Any:
        row = self._con.execute("SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = 1",
                                (key,)).fetchone()
        if row is None:
            return default
        try:
            return self._disk.fetch(row[0], row[1], row[2], False)
        except OSError:  # as diskcache: a value file that cannot be read is absent
            return default

    def __contains__(self, key: str) -> bool:
        return self._con.execute("SELECT 1 FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM Cache").fetchone()[0])

    def iterkeys(self) -> Iterator[Any]:
        for (key,) in self._con.execute("SELECT key FROM Cache ORDER BY key, raw").fetchall():
            yield key

    def close(self) -> None:
        self._con.close()


def _read_only(exc: BaseException) -> bool:
    """Whether an error opening an index says the cache cannot be written (but maybe read)."""
    text = str(exc).lower()
    return (getattr(exc, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM)
            or "readonly" in text or "read-only" in text or "unable to open database" in text)


@contextlib.contextmanager
def _atomic(cache: Any) -> Iterator[None]:
    """One SQLite transaction on ``cache``; replaced value files are deleted after COMMIT."""
    disk = cache._disk
    deferred: list[str] = []
    disk.deferred = deferred
    try:
        with cache.transact(retry=True):
            yield
    finally:
        disk.deferred = None
    for path in deferred:  # only reached once committed; after a rollback they are still used
        disk.remove(path)


_CACHE_SETTINGS: dict[str, Any] = {
    "cull_limit": 0,  # a build cache never evicts by itself
    "eviction_policy": "none",
    "statistics": False,
    "tag_index": False,
    "size_limit": 2**62,
}


_META_FIELDS = (
    "expr", "args", "fingerprint", "stamp", "deps", "size", "crc", "compressed", "started",
    "duration", "stored", "blob", "worker", "log",
)
_HEAD = struct.Struct("<I")


@dataclass(slots=True)
class Meta:
    """Metadata of one stored result."""

    expr: str
    """The task as an expression, e.g. ``choose(6, 3)``."""
    args: str
    """Canonical JSON of the bound arguments."""
    fingerprint: str
    """Code fingerprint of the family when the result was computed."""
    stamp: str
    """Unique id of this computation; dependents record it."""
    deps: dict[str, str] = field(default_factory=dict)
    """``{prerequisite id: its stamp}`` at the time this result was computed."""
    size: int = 0
    crc: int = 0
    compressed: bool = False
    started: float = 0.0
    duration: float = 0.0
    stored: float = 0.0
    blob: str = ""
    """File name of the payload under the family's ``blobs/``; empty when stored inline."""
    worker: str = ""
    """``hostname:pid`` of the process that computed the result."""
    log: bool = False
    """Whether this computation wrote output, kept under ``log:{id}``."""
    inline: bytes | None = field(default=None, repr=False, compare=False)
    """The payload, when it was stored inline and read together with the metadata."""

    def to_dict(self) -> dict[str, Any]:
        """The stored fields as a JSON-friendly dict (for display and ``--json``)."""
        return {name: getattr(self, name) for name in _META_FIELDS}

    @classmethod
    def from_entry(cls, entry: bytes) -> Meta:
        """Parse an ``e:{id}`` value: the length of the header, the header, the payload if any.

        The header is a ``marshal``-ed tuple of the fields in a fixed order: a warm run reads
        one per task of its DAG, and this decodes ~8x faster than a JSON object.

        Raises:
            ValueError: the value is not a well-formed entry.
        """
        try:
            (length,) = _HEAD.unpack_from(entry)
            fields = marshal.loads(entry[4:4 + length])
        except (struct.error, EOFError, TypeError) as exc:
            raise ValueError(f"malformed entry: {exc}") from None
        if type(fields) is not tuple or len(fields) != len(_META_FIELDS):
            raise ValueError("malformed entry: unexpected header")
        meta = cls(*fields)
        if not meta.blob:
            meta.inline = entry[4 + length:]
        elif type(meta.blob) is not str or not _BLOB_NAME.fullmatch(meta.blob):
            raise ValueError("malformed entry: bad value file name")  # never a path elsewhere
        return meta

    def to_entry(self, payload: bytes | None) -> bytes:
        """The ``e:{id}`` value for this metadata (and the payload, unless in a blob)."""
        head = marshal.dumps(
            (self.expr, self.args, self.fingerprint, self.stamp, self.deps, self.size, self.crc,
             self.compressed, self.started, self.duration, self.stored, self.blob, self.worker,
             self.log),
            4,
        )
        parts = [_HEAD.pack(len(head)), head]
        if not self.blob and payload is not None:
            parts.append(payload)
        return b"".join(parts)


@dataclass(frozen=True)
class BlobRef:
    """Where a large payload lives, for workers that read it straight from the cache."""

    path: str
    size: int
    crc: int
    compressed: bool

    def read(self) -> bytes:
        """The verified payload.

        Raises:
            CorruptEntryError: the file is missing, not a regular file, truncated or fails
                its checksum.
        """
        try:
            with os.fdopen(open_stored(self.path), "rb") as f:
                payload = f.read()
        except OSError as exc:
            raise self._unreadable(exc) from None
        if len(payload) != self.size or zlib.crc32(payload) != self.crc:
            raise self._corrupt()
        return payload

    def load(self) -> Any:
        """The verified, decoded value, read through a memory map: the payload is checked
        and unpickled in place, without first copying it into this process's memory.

        Raises:
            CorruptEntryError: the file is missing, not a regular file, truncated or fails
                its checksum.
        """
        import mmap

        try:
            with os.fdopen(open_stored(self.path), "rb") as f:
                if os.fstat(f.fileno()).st_size != self.size or not self.size:
                    raise self._corrupt()
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                    if zlib.crc32(view) != self.crc:
                        raise self._corrupt()
                    # the blob is {store root}/{family}/blobs/{name}
                    root = os.path.dirname(os.path.dirname(os.path.dirname(self.path)))
                    return decode_payload(view, self.compressed, root)
        except OSError as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: OSError) -> CorruptEntryError:
        why = _why(exc)
        return CorruptEntryError(f"The stored value file {self.path} cannot be read: {why}.",
                                 reason=f"its value file cannot be read: {why}")

    def _corrupt(self) -> CorruptEntryError:
        return CorruptEntryError(
            f"The stored value file {self.path} is corrupt (size or checksum mismatch).",
            reason="its value file failed the size or checksum test",
        )


def _blob_name(task_id: str) -> str:
    """A new blob file's name: unique, so a re-run never overwrites a file being read."""
    return f"{task_id}.{secrets.token_hex(6)}.bin"


class _SpillingWriter:
    """A pickler's file: keeps up to ``INLINE_MAX`` bytes in memory, then moves to a new
    blob file and writes the rest straight through, with a running CRC-32 and size."""

    def __init__(self, directory: str | os.PathLike[str], task_id: str) -> None:
        self.directory = directory
        self.task_id = task_id
        self.parts: list[bytes] = []
        self.crc = 0
        self.size = 0
        self.name = ""
        self.file: Any = None

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.crc = zlib.crc32(data, self.crc)
        self.size += n
        if self.file is None:
            if self.size <= INLINE_MAX:
                self.parts.append(bytes(data))
                return n
            os.makedirs(self.directory, exist_ok=True)
            self.name = _blob_name(self.task_id)
            self.file = open(os.path.join(self.directory, self.name), "wb")
            self.file.writelines(self.parts)
            self.parts = []
        self.file.write(data)
        return n


def stream_value(
    value: Any, directory: str | os.PathLike[str], task_id: str
) -> tuple[bytes | None, str, int, int]:
    """Pickle a value (uncompressed) without building its payload in memory if it is large.

    Large buffers (bytes, NumPy arrays) go from the value straight into a new blob file in
    ``directory``: no copy of the payload, half the peak memory of :func:`encode_value`
    followed by :func:`write_blob`. The file holds the same bytes those would have written.

    Returns:
        ``(payload, "", crc, size)`` when the payload came out small after all, else
        ``(None, blob_name, crc, size)``.

    Raises:
        Whatever pickling or writing raised; a partial file is removed first.
    """
    writer = _SpillingWriter(directory, task_id)
    try:
        if type(value) in _PLAIN:
            pickle.dump(value, writer, protocol=pickle.HIGHEST_PROTOCOL)
        else:
            import cloudpickle

            cloudpickle.dump(value, writer, protocol=pickle.HIGHEST_PROTOCOL)
        if writer.file is not None:
            writer.file.close()
    except BaseException:
        if writer.file is not None:  # a partial file would fill a full disk for good
            with contextlib.suppress(OSError):
                writer.file.close()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, writer.name))
        raise
    if writer.file is None:
        return b"".join(writer.parts), "", writer.crc, writer.size
    return None, writer.name, writer.crc, writer.size


def write_blob(directory: str | os.PathLike[str], task_id: str, payload: bytes) -> str:
    """Write a payload to a new, uniquely named file in ``directory``; return its name."""
    os.makedirs(directory, exist_ok=True)
    name = _blob_name(task_id)
    path = os.path.join(directory, name)
    try:
        with open(path, "wb") as f:
            f.write(payload)
    except BaseException:
        with contextlib.suppress(OSError):  # a partial file would fill a full disk for good
            os.unlink(path)
        raise
    return name


@dataclass
class Record:
    """A finished result on its way into the store."""

    family: str
    """The family's directory name."""
    id: str
    meta: Meta
    payload: bytes | None
    """The payload, unless a worker already wrote it to the blob ``meta.blob``."""
    source: tuple[str, str] | None = None
    """``(fingerprint digest, normalized source)`` to remember, if not yet stored."""
    replaces: str = ""
    """The blob of the entry this one replaces, deleted once this one is stored."""
    log: str = ""
    """The task's captured output (stored only when not empty)."""


@dataclass
class FailedRun:
    """The record of a task's last failed run (``run:{id}``)."""

    expr: str
    started: float
    duration: float
    worker: str
    output: str = ""
    traceback: str = ""
    status: str = "failed"

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FailedRun:
        return cls(**json.loads(text))


_STAMP_PREFIX = [secrets.token_hex(6), os.getpid()]
_stamp_counter = itertools.count()


def new_stamp() -> str:
    """Return a fresh, unique computation stamp (a random per-process prefix and a counter)."""
    if _STAMP_PREFIX[1] != os.getpid():  # a forked child must not repeat its parent's stamps
        _STAMP_PREFIX[:] = [secrets.token_hex(6), os.getpid()]
    return f"{_STAMP_PREFIX[0]}{next(_stamp_counter):x}"


_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


def encode_value(value: Any, compress_level: int, root: str = "") -> bytes:
    """Serialize a value as stored: cloudpickle, then zlib if ``compress_level`` is set.
    With ``root`` (the store root), paths under it are stored relative to it
    (:mod:`checkpoint._relocate`)."""
    if type(value) in _PLAIN:  # same bytes as cloudpickle, without building its pickler
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    else:
        import cloudpickle

        payload = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if root:
        payload = _relocate.portable(value, payload, root)
    if compress_level:
        payload = zlib.compress(payload, compress_level)
    return payload


def decode_payload(payload: bytes | mmap.mmap, compressed: bool, root: str = "") -> Any:
    """Inverse of :func:`encode_value`; stored paths under a store root come back under
    ``root`` (default: the store root of the default cache directory)."""
    if compressed:
        payload = zlib.decompress(payload)
    if _relocate.is_portable(payload):
        return _relocate.loads(payload, root or str(resolve_cache_dir() / "checkpoint"))
    return pickle.loads(payload)


_INDEX_ERRORS = (sqlite3.Error, UnicodeDecodeError, OSError)
"""What reading a family's index can raise: SQLite's errors, text that is not UTF-8 (SQLite
hands Python the raw bytes of a damaged schema or key), and the file system's errors."""

_DISKCACHE_COLUMNS = {
    "Cache": {"rowid", "key", "raw", "store_time", "expire_time", "access_time", "access_count",
              "tag", "size", "mode", "filename", "value"},
    "Settings": {"key", "value"},
}


def _damaged(exc: BaseException) -> bool:
    """Whether an error from an index means that the file is damaged (not: locked, read-only,
    full): SQLite says it is not a database or is malformed, or its text is not UTF-8."""
    return (type(exc) is sqlite3.DatabaseError or isinstance(exc, UnicodeDecodeError)
            or str(exc).startswith("Could not decode to UTF-8"))  # (an OperationalError)


def _bad_schema(db: Path) -> bool:
    """Whether an index lacks the tables and columns that diskcache made: a damaged schema
    that SQLite still parses ("no such column: key"). Read on a connection of its own."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            for table, columns in _DISKCACHE_COLUMNS.items():
                found = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                if not columns <= found:
                    return True
        finally:
            con.close()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        return _damaged(exc)
    return False


def _describe(exc: BaseException) -> str:
    """An error of the file system or of an index, as a phrase for a message."""
    if isinstance(exc, UnicodeDecodeError) or str(exc).startswith("Could not decode to UTF-8"):
        return "text in it is not valid UTF-8"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.strerror} ({exc.filename})"
    return str(exc)


def _advice(exc: BaseException) -> str:
    """What to do about an error opening a family's cache: a full disk, no permission, damage."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text:
        return "Free some space or choose another --cache-dir."
    if code in (errno.EACCES, errno.EPERM):
        filename = getattr(exc, "filename", None)
        where = f" {os.path.dirname(filename)}" if isinstance(filename, str) else ""
        return (f"Check the permissions (ls -l{where}): the cache must be yours, readable and "
                "writable by you. Or choose another location with --cache-dir or CP_CACHE_DIR.")
    if code == errno.EROFS or "readonly" in text:
        return "Choose a writable location with --cache-dir or CP_CACHE_DIR."
    return "If the index is damaged, remove that directory (its results will be recomputed)."


def _user(uid: int) -> str:
    """A user's name (its number when it has none)."""
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"user {uid}"


def _group(gid: int) -> str:
    """A group's name (its number when it has none)."""
    try:
        import grp

        return f"group {grp.getgrgid(gid).gr_name}"
    except (ImportError, KeyError):
        return f"group {gid}"


def _private_group(gid: int, uid: int) -> bool:
    """Whether a group is a user's own (the user private groups of many Linux systems: named
    after the user, nobody else in it), so that its write permission lets in no one else."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


_SHARED_HINT = ("set CP_SHARED_CACHE=1 if you share this cache with them on purpose "
                "(see the Security page of the docs)")


@dataclass(frozen=True)
class Problem:
    """A stored entry that failed :meth:`Store.verify`."""

    family: str
    id: str
    task: str
    """The task as an expression, or ``""`` when its metadata is unreadable."""
    message: str


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$CP_CACHE_DIR``, else ``./.cache``."""
    if cache_dir is None:
        cache_dir = os.environ.get("CP_CACHE_DIR") or ".cache"
    return Path(cache_dir).absolute()


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _lexists(path: Path) -> bool:
    """Whether a path exists (a link counts as itself).

    Raises:
        OSError: it cannot be examined (e.g. no permission), unlike ``os.path.lexists``.
    """
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of a file, or ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Store:
    """A checkpoint store rooted at ``{cache_dir}/checkpoint``; see the module docstring.

    **Trust.** A stored value is a pickle, and loading a pickle runs code, so the store
    refuses directories that another user could write to (:meth:`_check_owner`), checks
    every name it reads from the index before it opens or deletes a file, opens only
    regular files and never follows a symbolic link inside the cache.
    """

    _open_stores: dict[Path, Store] = {}

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.root = cache_dir / "checkpoint"
        self._caches: dict[str, Any] = {}
        self._pid = os.getpid()
        self._checked = False
        self._identities: dict[str, tuple[int, int] | None] = {}
        """(device, inode) of FORMAT (key "") and of each open family's index."""
        self.notices: list[str] = []
        self.shared = os.environ.get("CP_SHARED_CACHE", "") not in ("", "0")
        """``CP_SHARED_CACHE=1``: accept directories and files of other users and directories
        that the group may write to (a cache shared by a group on purpose)."""
        self._warned: set[str] = set()
        self._private = False
        """Whether the store root grants group and others nothing (then the modes of what is
        below it let no one in; their owners are still checked)."""

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
        each ``open`` compares the files' identities with those seen when they were opened.
        """
        if self._checked and _identity(self.root / "FORMAT") != self._identities.get(""):
            self.close()
            return False
        for family in list(self._caches):
            if _identity(self.root / family / "cache.db") != self._identities.get(family):
                cache = self._caches.pop(family)
                with contextlib.suppress(Exception):
                    cache.close()
        return True

    # --- set-up ---------------------------------------------------------------------

    def _ensure_root(self) -> None:
        if self._checked:
            return
        fmt = self.root / "FORMAT"
        try:
            if self.cache_dir.exists():
                self._check_owner(self.cache_dir, os.stat(self.cache_dir), top=True)
            found = self._read_format(fmt)
            if found is None:
                self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.root.mkdir(mode=0o700, exist_ok=True)
            st = os.stat(self.root)
            self._check_owner(self.root, st)
            self._private = not st.st_mode & 0o077
            if found is None:
                tmp = self.root / f".FORMAT.{secrets.token_hex(4)}"
                tmp.write_text(FORMAT + "\n")
                os.replace(tmp, fmt)
            elif found != FORMAT:
                if not re.fullmatch(r"checkpoint-store \d+", found):
                    raise StoreVersionError(
                        f"The cache at {self.root} has a damaged FORMAT file ({fmt}: {found!r}), "
                        f"so checkpoint cannot tell how it was written. Use another --cache-dir, "
                        f"or delete {self.root} to start afresh."
                    )
                raise StoreVersionError(
                    f"The cache at {self.root} was written by another version of checkpoint "
                    f"({found!r}; this version reads {FORMAT!r}). Use another --cache-dir, or "
                    f"delete {self.root} to start afresh."
                )
            for trash in self.root.glob(".trash-*"):
                if trash.is_symlink():
                    trash.unlink()
                else:
                    shutil.rmtree(trash, ignore_errors=True)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise StoreError(
                    f"Cannot use the cache directory {self.cache_dir}: {_describe(exc)}. "
                    f"{_advice(exc)}"
                ) from None
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {exc.strerror or exc}. "
                "Choose a writable location with --cache-dir or CP_CACHE_DIR."
            ) from None
        self._identities[""] = _identity(fmt)
        self._checked = True

    def _read_format(self, fmt: Path) -> str | None:
        """The text of the FORMAT file (``None`` when there is none)."""
        try:
            fd = open_stored(fmt)
        except FileNotFoundError:
            return None
        except _NotRegularFile as exc:
            return f"<{_why(exc)}>"
        with os.fdopen(fd, "rb") as f:
            return f.read(200).decode("utf-8", errors="replace").strip()

    def _check_owner(self, path: Path, st: os.stat_result, *, top: bool = False,
                     below: bool = False) -> None:
        """Refuse a directory or file of the store that another user could have written,
        and warn (once) about one that its group may write to; see :meth:`_owner_problem`.

        Raises:
            UnsafeCacheError: it belongs to another user, or everyone may write to it.
        """
        found = self._owner_problem(path, st, top=top, below=below)
        if found is None:
            return
        message, refused = found
        if refused:
            raise UnsafeCacheError(message)
        if str(path) not in self._warned:
            self._warned.add(str(path))
            warnings.warn(message, UnsafeCacheWarning, stacklevel=3)

    def _owner_problem(self, path: Path, st: os.stat_result, *, top: bool = False,
                       below: bool = False) -> tuple[str, bool] | None:
        """What is unsafe about a directory or file of the store, and whether it is refused.

        Refused: owned by someone else than you or root (a stored value is a pickle, and
        loading it runs code as you), or writable by everyone. Warned: writable by its group.
        ``CP_SHARED_CACHE=1`` accepts the first and the last, never the second. ``top``: the
        cache directory itself, which may be a shared place such as ``/tmp`` when it has the
        sticky bit (others cannot replace what is yours in it, and everything below is checked).
        ``below``: inside the store, where modes matter only if the store lets others in (with
        the umask 002 of many systems, the directories a store makes are group-writable).
        """
        geteuid = getattr(os, "geteuid", None)
        if geteuid is None:  # Windows: no POSIX ownership to check
            return None
        me = geteuid()
        unreachable = (top and bool(st.st_mode & stat.S_ISVTX)) or (below and self._private)
        if st.st_uid not in (me, 0) and not self.shared:
            return (f"The cache at {path} belongs to {_user(st.st_uid)}, not to you ({_user(me)}): "
                    "a value stored there is a pickle, and loading it runs code as you. Use a cache "
                    f"directory of your own (--cache-dir or CP_CACHE_DIR), or {_SHARED_HINT}."), True
        if st.st_mode & stat.S_IWOTH and not unreachable and not stat.S_ISLNK(st.st_mode):
            return (f"The cache at {path} is writable by every user (mode {stat.filemode(st.st_mode)}): "
                    "anyone could put values there that run as code when you load them. Remove "
                    f"that permission (chmod o-w {path}) or use another cache directory."), True
        if (st.st_mode & stat.S_IWGRP and not unreachable and not self.shared
                and not stat.S_ISLNK(st.st_mode) and not _private_group(st.st_gid, me)):
            return (f"The cache at {path} is writable by {_group(st.st_gid)} (mode "
                    f"{stat.filemode(st.st_mode)}): its members could put values there that run as "
                    f"code when you load them. Remove that permission (chmod g-w {path}), or set "
                    "CP_SHARED_CACHE=1 if the group shares this cache on purpose."), False
        return None

    def _root_found(self) -> bool:
        """Whether the store exists; if so, check it (:meth:`_ensure_root`) before any of
        its families, so that a problem of the whole store is reported as such."""
        if self._checked:
            return True
        try:
            if not _lexists(self.root):
                return False
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {_describe(exc)}. {_advice(exc)}"
            ) from None
        self._ensure_root()
        return True

    def _family_index(self, family: str) -> bool:
        """Check a family's directory and index file before opening them; return whether
        the index exists. An index that is not a regular file is moved aside.

        Raises:
            StoreError: the directory is a symbolic link or cannot be examined.
            UnsafeCacheError: see :meth:`_check_owner`.
        """
        directory = self.root / family
        db = directory / "cache.db"
        try:
            try:
                st = os.lstat(directory)
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(
                    f"The cache of {family} at {directory} is {_kind(st.st_mode)}, not a directory; "
                    "checkpoint never follows links inside the cache. Remove it (its results "
                    "will be recomputed): checkpoint clear " + family.rsplit(".", 1)[-1]
                )
            self._check_owner(directory, st, below=True)
            try:
                st = os.lstat(db)
            except FileNotFoundError:
                return False
        except OSError as exc:
            raise StoreError(
                f"Cannot open the cache of {family} at {directory}: {_describe(exc)}. {_advice(exc)}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            self._quarantine(family, _NotRegularFile(errno.EINVAL, f"it is {_kind(st.st_mode)}"))
            return False
        self._check_owner(db, st, below=True)
        return True

    def open_family(self, family: str) -> None:
        """Open (creating it if needed) a family's index ahead of its first write."""
        self._cache(family)

    def _cache(self, family: str, create: bool = True) -> Any:
        cache = self._caches.get(family)
        if create and isinstance(cache, _ReadOnlyIndex):  # now to be written: reopen it
            self._caches.pop(family).close()
            cache = None
        if cache is None:
            directory = self.root / family
            if create:
                self._ensure_root()
            elif not self._root_found():
                return None  # reading must not create the cache directory
            if not self._family_index(family) and not create:
                return None
            import diskcache

            try:
                try:
                    cache = diskcache.Cache(str(directory), disk=_disk_class(), **_CACHE_SETTINGS)
                except (sqlite3.Error, UnicodeDecodeError) as exc:
                    if not self._is_damage(family, exc):
                        raise
                    self._quarantine(family, exc)
                    cache = diskcache.Cache(str(directory), disk=_disk_class(), **_CACHE_SETTINGS)
            except (OSError, sqlite3.Error, UnicodeDecodeError) as exc:
                cache = None if create or not _read_only(exc) else self._read_only_index(directory)
                if cache is None:
                    raise StoreError(
                        f"Cannot open the cache of {family} at {directory}: {_describe(exc)}. "
                        f"{_advice(exc)}"
                    ) from None
            self._caches[family] = cache
            self._identities[family] = _identity(directory / "cache.db")
        return cache

    def _existing(self, family: str) -> Any:
        """A family's index opened for writing (``None`` when it has none; never created)."""
        return None if self._cache(family, create=False) is None else self._cache(family)

    @staticmethod
    def _read_only_index(directory: Path) -> _ReadOnlyIndex | None:
        """The index opened for reading only (``None`` when even that fails)."""
        try:
            return _ReadOnlyIndex(directory)
        except (sqlite3.Error, UnicodeDecodeError):
            return None

    def check_writable(self, families: Iterable[str]) -> None:
        """Check, before anything runs, that results of these families can be stored (a
        read-only cache still serves fresh results, but cannot take new ones).

        Raises:
            StoreError: a directory or index that must be written is not writable.
        """
        self._ensure_root()
        for family in families:
            directory = self.root / family
            try:
                exists = _lexists(directory)
                db = directory / "cache.db"
                target = (db if _lexists(db) else directory) if exists else self.root
                mode = os.W_OK if target == db else os.W_OK | os.X_OK
                if os.access(target, mode) and (target != db or os.access(directory, os.W_OK | os.X_OK)):
                    continue
                readonly = hasattr(os, "statvfs") and bool(os.statvfs(target).f_flag & os.ST_RDONLY)
            except OSError:
                continue  # the run will say what it is when it opens the family
            why = "it is on a read-only file system" if readonly else "you may not write there"
            raise StoreError(
                f"Cannot store the results of {family}: the cache at {target} is read-only "
                f"({why}), and tasks of that family need to run; nothing was run. Fresh results "
                "can be read from a read-only cache, but new ones must be stored: make it "
                "writable, or choose a writable location with --cache-dir or CP_CACHE_DIR."
            )

    def _is_damage(self, family: str, exc: BaseException) -> bool:
        """Whether an error from a family's index means the index is damaged."""
        if _damaged(exc):
            return True
        return isinstance(exc, sqlite3.OperationalError) and _bad_schema(self.root / family / "cache.db")

    def _index_error(self, family: str, exc: BaseException) -> None:
        """An error while reading a family's index: move a damaged index aside (its entries
        then count as missing); anything else is a :class:`StoreError`."""
        if not isinstance(exc, OSError) and self._is_damage(family, exc):
            self._quarantine(family, exc)
            return
        raise StoreError(
            f"Cannot read the cache of {family} at {self.root / family}: {_describe(exc)}. "
            f"{_advice(exc)}"
        ) from None

    def _quarantine(self, family: str, exc: BaseException) -> None:
        """Move a damaged index aside (its entries then count as missing) and say so."""
        cache = self._caches.pop(family, None)
        if cache is not None:
            with contextlib.suppress(Exception):
                cache.close()
        db = self.root / family / "cache.db"
        aside = db.with_name(f"cache.db.damaged-{secrets.token_hex(4)}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{db}{suffix}", f"{aside}{suffix}")
        self.notices.append(
            f"The index of {family} ({db}) is damaged ({_describe(exc)}). It was moved aside to "
            f"{aside.name}; the family's results will be recomputed."
        )

    def take_notices(self) -> list[str]:
        """Problems the store found and repaired since the last call (e.g. a damaged index)."""
        notices, self.notices = self.notices, []
        return notices

    def close(self) -> None:
        """Close every open family cache."""
        for cache in self._caches.values():
            cache.close()
        self._caches.clear()

    # --- reading --------------------------------------------------------------------

    def get_meta(self, family: str, task_id: str) -> Meta | None:
        """The metadata of a stored entry, or ``None`` when there is none."""
        cache = self._cache(family, create=False)
        if cache is None:
            return None
        try:
            entry = cache.get("e:" + task_id)
        except _INDEX_ERRORS as exc:
            self._index_error(family, exc)
            return None
        if not isinstance(entry, bytes):
            return None
        try:
            return Meta.from_entry(entry)
        except (ValueError, TypeError):
            return None  # an unreadable index row counts as missing

    def get_metas(self, family: str, task_ids: Sequence[str]) -> dict[str, Meta]:
        """The metadata of many entries of one family at once (absent ones are left out).

        Reads the index with one query per 500 keys instead of one ``get`` per key: a warm
        run checks every task of its DAG. diskcache keeps small values inline in its
        ``Cache`` table (``mode`` 1); anything else is read through diskcache's API.
        """
        cache = self._cache(family, create=False)
        found: dict[str, Meta] = {}
        if cache is None or not task_ids:
            return found
        sql = getattr(cache, "_sql", None)
        if sql is None or len(task_ids) < 8:
            for tid in task_ids:
                meta = self.get_meta(family, tid)
                if meta is not None:
                    found[tid] = meta
            return found
        try:
            # Most of the family wanted (a warm run): one scan beats thousands of index probes.
            if len(task_ids) * 2 >= len(cache):
                return self._scan_metas(cache, set(task_ids))
            for start in range(0, len(task_ids), 500):
                keys = ["e:" + tid for tid in task_ids[start:start + 500]]
                marks = ",".join("?" * len(keys))
                rows = sql(
                    f"SELECT key, mode, value FROM Cache WHERE raw = 1 AND key IN ({marks})",
                    keys,
                ).fetchall()
                for key, mode, value in rows:
                    entry = bytes(value) if mode == 1 and value is not None else cache.get(key)
                    if not isinstance(entry, bytes):
                        continue
                    try:
                        found[key[2:]] = Meta.from_entry(entry)
                    except (ValueError, TypeError):
                        continue  # an unreadable index row counts as missing
        except _INDEX_ERRORS as exc:
            self._index_error(family, exc)
            return {}
        return found

    @staticmethod
    def _scan_metas(cache: Any, wanted: set[str]) -> dict[str, Meta]:
        """:meth:`get_metas` by one pass over a family's index: the entries of ``wanted``
        (the hot loop of a warm run's check: one slice and one lookup per row)."""
        found: dict[str, Meta] = {}
        from_entry = Meta.from_entry
        rows = cache._sql("SELECT key, mode, value FROM Cache WHERE raw = 1").fetchall()
        for key, mode, value in rows:
            tid = key[2:]
            if tid not in wanted or key[:2] != "e:":
                continue
            entry = value if mode == 1 and type(value) is bytes else cache.get(key)
            if not isinstance(entry, bytes):
                continue
            try:
                found[tid] = from_entry(entry)
            except (ValueError, TypeError):
                continue  # an unreadable index row counts as missing
        return found

    def load_payload(self, family: str, task_id: str, meta: Meta | None = None) -> bytes:
        """The verified payload of a stored entry.

        Raises:
            CorruptEntryError: the entry is absent, truncated or fails its checksum.
        """
        meta = meta or self.get_meta(family, task_id)
        if meta is not None and meta.blob:
            try:
                return self.blob_ref(family, meta).read()
            except CorruptEntryError as exc:
                raise CorruptEntryError(
                    f"The stored result of {meta.expr} ({family}) is missing or corrupt "
                    f"({exc.reason}); it will be recomputed.", reason=exc.reason,
                ) from None
        payload = None if meta is None else meta.inline
        if meta is None or not isinstance(payload, bytes):
            raise CorruptEntryError(
                f"The stored result of {meta.expr if meta else task_id} ({family}) is missing "
                "its value; it will be recomputed."
            )
        if len(payload) != meta.size or zlib.crc32(payload) != meta.crc:
            raise CorruptEntryError(
                f"The stored result of {meta.expr} ({family}) is corrupt (size or checksum "
                "mismatch); it will be recomputed."
            )
        return payload

    def load_value(self, family: str, task_id: str) -> Any:
        """The stored value of an entry (verified, decompressed, unpickled)."""
        meta = self.get_meta(family, task_id)
        payload = self.load_payload(family, task_id, meta)
        assert meta is not None
        try:
            return decode_payload(payload, meta.compressed, str(self.root))
        except Exception as exc:
            raise CorruptEntryError(
                f"The stored result of {meta.expr} ({family}) cannot be decoded: {exc}"
            ) from exc

    def _get_text(self, family: str, key: str) -> str | None:
        """A text value of a family's index (``None`` when absent or unreadable)."""
        cache = self._cache(family, create=False)
        if cache is None:
            return None
        try:
            text = cache.get(key)
        except _INDEX_ERRORS as exc:
            self._index_error(family, exc)
            return None
        return text if isinstance(text, str) else None

    def get_source(self, family: str, digest: str) -> str | None:
        """The normalized source remembered for a code fingerprint."""
        return self._get_text(family, "fp:" + digest)

    def families(self) -> list[str]:
        """Directory names of the families that have a store."""
        try:
            if not self.root.is_dir():
                return []
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {_describe(exc)}. {_advice(exc)}"
            ) from None
        self._ensure_root()  # a cache of another format is refused, not listed
        names = []
        try:
            with os.scandir(self.root) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_symlink() or (entry.is_dir(follow_symlinks=False)
                                                  and _lexists(Path(entry.path, "cache.db"))):
                            names.append(entry.name)
                    except PermissionError:
                        names.append(entry.name)  # opening it says what is wrong
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {_describe(exc)}. {_advice(exc)}"
            ) from None
        return sorted(names)

    def entries(self, family: str) -> Iterator[tuple[str, Meta]]:
        """``(task id, meta)`` of every entry of a family."""
        cache = self._cache(family, create=False)
        if cache is None:
            return
        try:
            keys = [k for k in cache.iterkeys() if isinstance(k, str) and k.startswith("e:")]
        except _INDEX_ERRORS as exc:
            self._index_error(family, exc)
            return
        for key in keys:
            if _TASK_ID.fullmatch(key[2:]):  # a crafted row names no task: never a path
                meta = self.get_meta(family, key[2:])
                if meta is not None:
                    yield key[2:], meta

    def blob_dir(self, family: str) -> Path:
        """The directory of a family's large payloads."""
        return self.root / family / "blobs"

    def blob_ref(self, family: str, meta: Meta) -> BlobRef:
        """Where the payload of an entry stored as a blob lives."""
        return BlobRef(str(self.blob_dir(family) / meta.blob), meta.size, meta.crc, meta.compressed)

    def count_entries(self, family: str) -> int:
        """How many entries a family has, read straight from its index (fast: no diskcache).

        diskcache keeps ``str`` keys as-is in its ``Cache`` table (``raw = 1``), so the
        entries are the rows whose key starts with ``e:``.
        """
        db = self.root / family / "cache.db"
        if not self._root_found() or not self._family_index(family):
            return 0
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute(
                    "SELECT COUNT(*) FROM Cache WHERE raw = 1 AND key >= 'e:' AND key < 'e;'"
                ).fetchone()
            finally:
                con.close()
        except (sqlite3.Error, UnicodeDecodeError):
            return sum(1 for _ in self.entries(family))
        return int(row[0])

    def disk_usage(self, family: str | None = None) -> int:
        """Bytes on disk under a family's directory (or the whole store when ``None``)."""
        return tree_size(self.root if family is None else self.root / family)

    def entry_size(self, family: str, task_id: str, meta: Meta) -> int:
        """Bytes an entry takes: its stored value plus its data directory."""
        path, problem = self._data_path(family, task_id)
        return meta.size + (0 if problem else tree_size(path))

    def data_dir_ids(self, family: str) -> list[str]:
        """The task ids that have a data directory in the family (names that are not task
        ids are left out)."""
        try:
            names = os.listdir(self.root / family / "data")
        except OSError:
            return []
        return [name for name in names if _TASK_ID.fullmatch(name)]

    def data_dir(self, family: str, task_id: str) -> Path:
        """The data directory of a task (not created)."""
        return self.root / family / "data" / task_id

    def _data_path(self, family: str, task_id: str) -> tuple[Path, str]:
        """A task's data directory, and what forbids following it (``""`` when nothing):
        the family's directory or its ``data/`` is a symbolic link or not a directory.
        The data directory itself may be anything (:meth:`_remove_path` removes it)."""
        path = self.data_dir(family, task_id)
        if not _TASK_ID.fullmatch(task_id):
            return path, f"{task_id!r} is not a task id"
        for part in (path.parent.parent, path.parent):
            try:
                mode = os.lstat(part).st_mode
            except FileNotFoundError:
                return path, ""
            except OSError as exc:
                return path, f"{part} cannot be examined: {_describe(exc)}"
            if not stat.S_ISDIR(mode):
                return path, f"{part} is {_kind(mode)}, not a directory"
        return path, ""

    @staticmethod
    def _remove_path(path: Path) -> None:
        """Remove a data directory, or the symbolic link or file in its place (not followed)."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            shutil.rmtree(path)  # never follows the links inside
        else:
            os.unlink(path)

    def _remove_blob(self, family: str, name: str) -> None:
        """Delete a value file of a family, if its name is one the store gives."""
        if not _BLOB_NAME.fullmatch(name):
            return
        blobs = self.blob_dir(family)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(blobs).st_mode):  # not a link to elsewhere
                os.unlink(blobs / name)

    # --- writing --------------------------------------------------------------------

    def put_many(self, records: Iterable[Record]) -> None:
        """Store finished results, one transaction per family."""
        by_family: dict[str, list[Record]] = {}
        for record in records:
            by_family.setdefault(record.family, []).append(record)
        for family, items in by_family.items():
            for attempt in (1, 2):
                cache = self._cache(family)
                try:
                    for r in items:  # blob files first: an index row never names a missing file
                        if r.payload is not None and len(r.payload) > INLINE_MAX and not r.meta.blob:
                            r.meta.blob = write_blob(self.blob_dir(family), r.id, r.payload)
                    with _atomic(cache):
                        for r in items:
                            if r.source is not None and ("fp:" + r.source[0]) not in cache:
                                cache.set("fp:" + r.source[0], r.source[1])
                            cache.set("e:" + r.id, r.meta.to_entry(r.payload))
                            if r.log:
                                cache.set("log:" + r.id, r.log)
                    break
                except _INDEX_ERRORS as exc:
                    if attempt == 1 and not isinstance(exc, OSError) and self._is_damage(family, exc):
                        self._quarantine(family, exc)  # store into a new index
                        continue
                    raise StoreError(
                        f"Cannot write to the cache at {self.root / family}: "
                        f"{getattr(exc, 'strerror', None) or _describe(exc)}. "
                        "Free some space or choose another --cache-dir."
                    ) from None
            for r in items:
                if r.replaces and r.replaces != r.meta.blob:
                    self._remove_blob(family, r.replaces)

    def put_failed_runs(self, runs: Iterable[tuple[str, str, FailedRun]]) -> None:
        """Record failed runs, given as ``(family, task id, run)``; one transaction per family."""
        by_family: dict[str, list[tuple[str, FailedRun]]] = {}
        for family, task_id, run in runs:
            by_family.setdefault(family, []).append((task_id, run))
        for family, items in by_family.items():
            cache = self._cache(family)
            try:
                with _atomic(cache):
                    for task_id, run in items:
                        cache.set("run:" + task_id, run.to_json())
            except _INDEX_ERRORS as exc:
                raise StoreError(
                    f"Cannot write to the cache at {self.root / family}: "
                    f"{getattr(exc, 'strerror', None) or _describe(exc)}. "
                    "Free some space or choose another --cache-dir."
                ) from None

    def get_failed_run(self, family: str, task_id: str) -> FailedRun | None:
        """The task's last failed run, if one is recorded."""
        text = self._get_text(family, "run:" + task_id)
        if text is None:
            return None
        try:
            return FailedRun.from_json(text)
        except (ValueError, TypeError):
            return None

    def failed_run_ids(self, family: str) -> list[str]:
        """Ids of the family's tasks that have a recorded failed run (``run:{id}``).

        One range query over diskcache's key index, so a graph export does not probe every
        task of a large DAG for the few that failed.
        """
        cache = self._cache(family, create=False)
        if cache is None:
            return []
        try:
            sql = getattr(cache, "_sql", None)
            if sql is None:
                return [k[4:] for k in cache.iterkeys() if isinstance(k, str) and k.startswith("run:")]
            rows = sql("SELECT key FROM Cache WHERE key >= 'run:' AND key < 'run;' AND raw = 1").fetchall()
        except _INDEX_ERRORS as exc:
            self._index_error(family, exc)
            return []
        return [key[4:] for (key,) in rows]

    def get_log(self, family: str, task_id: str) -> str | None:
        """The captured output kept for a task's entry (see :attr:`Meta.log`)."""
        return self._get_text(family, "log:" + task_id)

    def put_metas(self, family: str, metas: dict[str, Meta], source: tuple[str, str] | None = None) -> None:
        """Rewrite the metadata of existing entries (``touch``), in one transaction.

        Payloads are kept as they are (an inline payload is copied into the rewritten
        ``e:`` value); an id without an entry is skipped.
        """
        cache = self._existing(family)
        if cache is None:
            return
        try:
            with cache.transact():
                if source is not None and ("fp:" + source[0]) not in cache:
                    cache.set("fp:" + source[0], source[1])
                for task_id, meta in metas.items():
                    entry = cache.get("e:" + task_id)
                    if not isinstance(entry, bytes):
                        continue
                    try:
                        payload = Meta.from_entry(entry).inline
                    except ValueError:
                        continue  # an unreadable row stays as it is (it counts as missing)
                    cache.set("e:" + task_id, meta.to_entry(payload))
        except _INDEX_ERRORS as exc:
            raise StoreError(
                f"Cannot write to the cache at {self.root / family}: "
                f"{getattr(exc, 'strerror', None) or _describe(exc)}. "
                "Free some space or choose another --cache-dir."
            ) from None

    def prepare_data_dir(self, family: str, task_id: str) -> Path:
        """Create an empty data directory for a task about to run.

        Raises:
            StoreError: it cannot be created, or the family's directory or its ``data/`` is
                a symbolic link (never followed: it could lead outside the cache).
        """
        self._ensure_root()
        path, problem = self._data_path(family, task_id)
        if problem:
            raise StoreError(
                f"Cannot create the data directory {path}: {problem}; checkpoint never follows "
                "links inside the cache. Remove it (the results of that family will be "
                f"recomputed): checkpoint clear {family.rsplit('.', 1)[-1]}"
            )
        try:
            self._remove_path(path)
            path.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the data directory {path}: {exc.strerror or exc}. "
                "Free some space or choose another --cache-dir."
            ) from None
        return path

    def delete(self, family: str, task_id: str) -> bool:
        """Remove one entry and its data directory; return whether an entry existed.

        Only files the store made are deleted: a value file whose name the index gives
        wrongly, or a data directory reached through a symbolic link, is left alone (the
        link itself is removed).
        """
        cache = self._existing(family)
        existed = False
        if cache is not None:
            meta = self.get_meta(family, task_id)
            try:
                with _atomic(cache):
                    existed = cache.delete("e:" + task_id)
                    cache.delete("log:" + task_id)
            except _INDEX_ERRORS as exc:
                raise StoreError(
                    f"Cannot write to the cache at {self.root / family}: {_describe(exc)}. "
                    f"{_advice(exc)}"
                ) from None
            if meta is not None and meta.blob:
                self._remove_blob(family, meta.blob)
        path, problem = self._data_path(family, task_id)
        if not problem:
            with contextlib.suppress(OSError):
                self._remove_path(path)
        return bool(existed)

    def verify(self, repair: bool = False) -> tuple[int, list[Problem]]:
        """Check every stored entry (metadata, size, CRC-32, value file, data directory) and
        every file the store made (owner, permissions, no links or special files); return
        how many entries were checked and the problems found. ``repair`` deletes the bad
        entries (their tasks run again next time) and the links and special files (never
        what a link points to)."""
        checked = 0
        problems: list[Problem] = []
        for family in self.families():
            try:
                cache = self._cache(family, create=False)
                keys = [] if cache is None else [
                    k for k in cache.iterkeys() if isinstance(k, str) and k.startswith("e:")
                ]
            except _INDEX_ERRORS as exc:
                self._index_error(family, exc)
                keys = []
            except StoreError as exc:  # e.g. the family's directory is a link: say so, go on
                problems.append(Problem(family, "", "", str(exc)))
                continue
            for notice in self.take_notices():
                problems.append(Problem(family, "", "", notice))
            for key in keys:
                tid = key[2:]
                checked += 1
                meta = self.get_meta(family, tid) if _TASK_ID.fullmatch(tid) else None
                try:
                    if meta is None:
                        raise CorruptEntryError(f"The metadata of entry {tid} ({family}) is unreadable.")
                    self.load_payload(family, tid, meta)
                    path, problem = self._data_path(family, tid)
                    with contextlib.suppress(OSError):
                        mode = os.lstat(path).st_mode
                        if not problem and not stat.S_ISDIR(mode):
                            raise CorruptEntryError(
                                f"The data directory of {meta.expr} ({family}), {path}, is "
                                f"{_kind(mode)}; checkpoint never follows it."
                            )
                except CorruptEntryError as exc:
                    problems.append(Problem(family, tid, meta.expr if meta else "", str(exc)))
                    if repair and _TASK_ID.fullmatch(tid):
                        self.delete(family, tid)
                    elif repair:
                        self._delete_row(family, key)
            for where, message, removable in self._unsafe_files(family):
                problems.append(Problem(family, "", "", message))
                if repair and removable:
                    with contextlib.suppress(OSError):
                        os.unlink(where)
        return checked, problems

    def _delete_row(self, family: str, key: str) -> None:
        """Remove an index row whose key is not a task id (no file is touched)."""
        cache = self._existing(family)
        if cache is not None:
            with _atomic(cache):
                cache.delete(key)

    def _unsafe_files(self, family: str) -> list[tuple[str, str, bool]]:
        """What :meth:`verify` finds wrong with the files of a family, as ``(path, message,
        removable)``: links and special files (removable), files and directories of other
        users or writable by others (see :meth:`_owner_problem`). The files that tasks
        wrote into their data directories are theirs, and not looked at."""
        found = []
        top = self.root / family
        data = top / "data"
        stack = [top]
        with contextlib.suppress(OSError):
            st = os.lstat(top)
            if stat.S_ISLNK(st.st_mode):
                return []  # reported by verify already
            problem = self._owner_problem(top, st, below=True)
            if problem is not None:
                found.append((str(top), problem[0], False))
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError as exc:
                found.append((str(directory), f"{directory} cannot be read: {_describe(exc)}.", False))
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                path = Path(entry.path)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    found.append((entry.path, f"{entry.path} is {_kind(st.st_mode)}; checkpoint "
                                  "never follows or reads it. Remove it.", True))
                    continue
                problem = self._owner_problem(path, st, below=True)
                if problem is not None:
                    found.append((entry.path, problem[0], False))
                if stat.S_ISDIR(st.st_mode) and directory != data:
                    stack.append(path)
        return found

    def clear_family(self, family: str) -> None:
        """Remove a family's whole directory (entries and data directories)."""
        cache = self._caches.pop(family, None)
        if cache is not None:
            cache.close()
        directory = self.root / family
        try:
            if not os.path.lexists(directory):
                return
            self._ensure_root()
            if os.path.islink(directory):
                os.unlink(directory)  # the link, never what it points to
                return
            trash = self.root / f".trash-{secrets.token_hex(6)}"
            os.replace(directory, trash)
        except OSError as exc:
            raise StoreError(
                f"Cannot remove the cache of {family} at {directory}: {_describe(exc)}. "
                f"{_advice(exc)}"
            ) from None
        shutil.rmtree(trash, ignore_errors=True)
