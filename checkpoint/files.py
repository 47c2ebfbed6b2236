"""Files on disk as task inputs and outputs: ``File()``, ``Product()`` and their digests.

``@requires(File("data/raw/paris.csv"))`` declares an input file, ``@requires(Product(
"out/paris.csv"))`` a file the task writes; the inner function receives each as a
:class:`pathlib.Path` (a glob pattern's ``File`` as a sorted list of them). A ``File`` may
name a directory (every file and folder under it) or a glob pattern (``"data/raw/*.csv"``);
either is one input whose *manifest* (sorted relative paths and the files' digests) is
tracked. Hidden files and directories (names starting with ``.``) are left out of an
input's manifest, not of a ``Product`` directory's (its task owns all of it).

**Paths** are relative to the *project root*: the taskfile's directory on the command line
(``checkpoint`` runs there, and so do its workers), the current directory in the library.
Inside the root they are recorded relative to it, so a project can move.

**Freshness without a new store format.** A stored result records its prerequisites in
``Meta.deps`` as ``{task id: stamp}``. Files ride along as pseudo-prerequisites under keys
no task id can take (ids are hex digits): ``"file:<path>"`` with the input's content
digest when the task was planned, ``"out:<path>"`` with the output's digest right after
the task wrote it (hashed by the worker, which also fails the task if a declared output
is missing). :func:`checkpoint.graph.mark` compares them with the digests of the files
now; so an edited input re-runs exactly its dependents, a deleted or hand-edited output
re-runs its producer, and a task that fails records nothing (its outputs are never marked
good). ``checkpoint why`` names the file. The value stamp of a task with declared outputs
names their digests too (:func:`with_outputs`), so early cutoff holds for files: a re-run
that wrote the same files and returned the same value keeps its dependents. Hence a task
that ends after a declared output upstream of it changed (another program, a task writing
into it) records ``"read:<path>"`` with no digest (:func:`changed_outputs`): it may have
read the other content, and must not be kept once the output is written again.

**Digests** are BLAKE2b of the content, streamed. Hashing every input on every run would
cost a read of each; :class:`DigestCache` (a file in the store's root) remembers
``(size, mtime_ns, ctime_ns, inode) -> digest`` per path and project root, so an unchanged file
costs one ``os.stat`` and a ``touch`` costs one re-hash and re-runs nothing. As in git,
a file changed within the timestamp granularity of its hashing (:data:`RACY_NS`) could
change again without changing its stat, so such an entry is not trusted: it is hashed
again next time, until it was hashed long enough after its last change. A directory's
manifest is remembered under one signature of its listing and its files' stats, so an
unchanged directory costs a listing and a ``stat`` per file, without a lookup per file.
So are a plan's input files (those of a plan whose tasks write no declared output), once
a check found every one of them trusted and unchanged: the next check of the same inputs
stats them and compares one signature (:func:`check`).

**Warm path.** Marking a task that reads files and writes none is one comparison of its
stored ``Meta.deps`` with the digests now (:func:`checkpoint.graph.mark`); a ``File``
whose path is in the digest cache is its own key (no normalizing).

**Producers.** Within one run's DAG, a ``File`` input that another task declares as a
``Product`` makes that task a prerequisite (ordering and freshness both go through it),
and a directory or glob input that covers declared outputs (or reaches into a declared
output directory) depends on their producers, their files being tracked through them
(the task's own outputs are left out of its inputs: :func:`without_outputs`). The
DAG is built lazily from task calls, so the producer must be part of the run: require it
(``@requires(clean(city))``, returning the path) or list it among the targets. A ``File``
that no task of the DAG produces is a source file and must exist before anything runs
(:class:`MissingInputError`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import marshal
import operator
import os
import re
import shutil
import stat
import struct
import time
from array import array
from collections.abc import Callable, Iterable
from itertools import chain, starmap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._types import Reason
from .errors import (
    InvalidRequirementError,
    MissingInputError,
    MissingOutputError,
    TaskDefinitionError,
    UnreadableInputError,
)

if TYPE_CHECKING:
    from ._types import TaskId
    from .graph import Node
    from .store import Meta
    from .task import Task

INPUT = "file:"
"""Prefix of an input's key in ``Meta.deps``."""
OUTPUT = "out:"
"""Prefix of a declared output's key in ``Meta.deps``."""
READ = "read:"
"""Prefix of a key in ``Meta.deps`` (with an empty value: never current) that marks a result
computed while a declared output upstream, the path after it, was not what its task wrote
(:func:`changed_outputs`)."""
CAPTURED = "captured:"
"""Prefix of the key in ``Meta.deps`` of a value that the inner function captured from its
outer function (:mod:`checkpoint._captured`): it rides along with the input digests."""
RACY_NS = 3_000_000_000
"""A file whose last change (its ctime; the mtime on Windows) is this close to (or after)
the moment it was hashed is hashed again next time (coarse timestamps: FAT 2 s, plus some
clock skew on NFS)."""
CACHE_NAME = ".file-digests"
"""The digest cache's file name in the store's root."""
_CHUNK = 1 << 20
_UNSEEN: Any = object()
_NONE: frozenset[str] = frozenset()
_NO_OUTPUTS: dict[str, str] = {}
"""``TaskFiles.outputs_now`` of every task without outputs (never written)."""
_GLOB_CHARS = frozenset("*?[")
_NO_FILE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
"""Errors of ``os.stat`` that mean "no file there" (a broken symlink, a link loop)."""
BATCH = "\0files\0"
"""Prefix of a plan's record in :attr:`DigestCache.dirs` (no directory key starts with a
NUL): the digests of all its input files under one signature of their stats (see
:func:`check`)."""
BATCH_KEEP = 4
"""How many plans' records the digest cache keeps (the latest)."""
_DIGEST_LEN = 32
"""Length of a file's digest (:func:`hash_file`)."""
_stat_fields = operator.attrgetter("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino")


class Unreadable(Exception):
    """A path under an input that exists but cannot be read (listed, stat'ed or hashed):
    its content cannot be tracked. Planning turns it into an :class:`UnreadableInputError`
    naming the task."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(path, error.strerror or str(error))
        self.path = path
        """The path that could not be read (relative to the project root, or absolute)."""
        self.reason = error.strerror or str(error)
        """Why, in words (``Permission denied``)."""


def _path_text(path: Any, what: str) -> str:
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidRequirementError(
            f"{what}(...) takes a path (str or pathlib.Path), not {path!r} ({type(path).__name__})."
        ) from None
    if not isinstance(text, str) or not text:
        raise InvalidRequirementError(f"{what}(...) takes a non-empty path, not {path!r}.")
    return text


def key_of(path: str, root: str) -> str:
    """The project-relative, normalized form of ``path`` (absolute when outside ``root``)."""
    # Relative and already normal (a/b.csv: no ".", "..", "//" or trailing "/" to remove),
    # as most paths are: a cheap test first.
    if (
        path[0] != "/" and path[-1] != "/" and "//" not in path
        and not ("." in path and ("/." in path or path[0] == ".")) and os.sep == "/"
    ):
        return path
    norm = os.path.normpath(path)
    if os.path.isabs(norm):
        try:
            rel = os.path.relpath(norm, root)
        except ValueError:  # another drive (Windows)
            rel = os.pardir
        if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            norm = rel
    return norm if os.sep == "/" else norm.replace(os.sep, "/")


class File:
    """Marker for ``@requires(File(path))``: an input file, directory or glob pattern.

    The inner function receives a :class:`pathlib.Path` (relative to the project root when
    the path is), or for a glob pattern the sorted list of matching paths, expanded when
    the task starts. The task re-runs when the content changes (the content of every file
    under a directory, or the set of matches and their content for a pattern); a mere
    ``touch`` does not count. A ``File`` that another task of the run declares as its
    :class:`Product` makes that task a prerequisite.
    """

    __slots__ = ("path", "_key", "_root")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path if type(path) is str and path else _path_text(path, "File")
        """The path as given."""
        # The key (see key_of) and the root it is relative to, made when first asked for:
        # a warm run makes one File per input and finds most of them in the digest cache
        # under the path as given (check), never asking for a key.
        self._key = ""
        self._root = ""

    @property
    def is_glob(self) -> bool:
        """Whether the path is a glob pattern: it contains ``*``, ``?`` or ``[`` and is not
        the name of an existing file or directory (``File("run[1].csv")`` that exists is that
        file)."""
        return not _GLOB_CHARS.isdisjoint(self.path) and not os.path.lexists(self.path)

    def key(self, root: str) -> str:
        """The path relative to ``root`` (see :func:`key_of`), computed once per root."""
        if self._root != root:
            self._key, self._root = key_of(self.path, root), root
        return self._key

    def keyed(self) -> File:
        """This marker with its project-relative path fixed (what a work item carries)."""
        if not self._key:
            self.key(os.getcwd())
        return self

    def value(self) -> Path | list[Path]:
        """What the inner function receives (called where the task runs)."""
        target = self._key or self.path
        if self.is_glob:
            import glob

            return sorted(Path(p) for p in glob.glob(target, recursive=True))
        return Path(target)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))

    def __getstate__(self) -> tuple[str, str, str]:
        return self.path, self._key, self._root

    def __setstate__(self, state: tuple[str, str, str]) -> None:
        self.path, self._key, self._root = state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"


class Product(File):
    """Marker for ``@requires(Product(path))``: a file the task writes (a directory when
    the path ends with ``/``).

    The inner function receives its :class:`pathlib.Path`, whose parent directory (or the
    directory itself) exists. The task must write it on every run; its digest is recorded
    once the task succeeds, and the task runs again when the file is deleted or changed
    by anything else. ``checkpoint clear`` keeps it; before each run (and each retry) of
    its task, a file is removed and a directory emptied (it belongs to the task: what an
    earlier run or a failed attempt wrote must not outlive it).
    """

    __slots__ = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path if type(path) is str and path else _path_text(path, "Product"))
        if self.is_glob:
            raise InvalidRequirementError(
                f"Product({self.path!r}) is a glob pattern; a task declares each file it "
                "writes (or a directory, ending with '/')."
            )

    @property
    def is_dir(self) -> bool:
        """Whether it names a directory (the path ends with a separator)."""
        return self.path.endswith(("/", os.sep))

    def value(self, keep: Iterable[str] = ()) -> Path:
        """The output's path, its directory created (called where the task runs, before
        each attempt). What an earlier run or a failed attempt wrote must not outlive it
        (as snakemake removes outputs before a job): a file is removed, a directory emptied.

        Raises:
            TaskDefinitionError: the directory (links resolved) holds one of ``keep`` (the
                project root, the store root); nothing is deleted then.
        """
        path = Path(self._key or self.path)
        try:
            return self._make_room(path, keep)
        except (FileExistsError, NotADirectoryError):
            blocking = in_the_way(str(path), self.is_dir)
            if blocking is None:
                raise
            raise TaskDefinitionError(in_the_way_message(self, blocking)) from None

    def _make_room(self, path: Path, keep: Iterable[str]) -> Path:
        if self.is_dir:
            real = os.path.realpath(path)
            for kept in keep:
                if _within(os.path.realpath(kept), real):
                    raise TaskDefinitionError(
                        f"{self!r} is the directory {real}, which holds {kept}: a Product "
                        "directory is emptied before its task runs, so nothing was deleted. "
                        "Declare a directory of its own (Product('out/'))."
                    )
            _empty(real)
            path.mkdir(parents=True, exist_ok=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        return path


def in_the_way(key: str, is_dir: bool) -> str | None:
    """The file (not a directory) standing where an output's directory must be: the
    output directory itself (``is_dir``) or one of the folders on its way (``None``: none)."""
    path = key.rstrip("/") if is_dir else os.path.dirname(key)
    while path and path not in (os.curdir, os.sep):
        if os.path.isdir(path):
            return None
        if os.path.exists(path):  # (a broken link: not a file either)
            return path
        path = os.path.dirname(path)
    return None


def in_the_way_message(product: Product, blocking: str, label: str = "") -> str:
    """What to say of an output whose directory a file (``blocking``) stands in for."""
    whose = f"{label} declares {product!r}" if label else f"{product!r} is declared"
    return (
        f"{whose}, but {blocking} is a file, not a directory, so the output cannot be written "
        f"in it. Move or remove the file {blocking} (checkpoint never deletes it), or declare "
        "the output at another path."
    )


def _empty(real: str) -> None:
    """Remove what the directory ``real`` (its real path: no link in it) holds; never
    follows a link inside it, so nothing outside it is deleted."""
    try:
        entries = list(os.scandir(real))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


# --- digests ------------------------------------------------------------------------------


def hash_file(path: str) -> str:
    """BLAKE2b (16 bytes, hex) of a file's content, read in chunks."""
    digest = hashlib.blake2b(digest_size=16)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


Entry = tuple[int, int, int, int, str]
"""A digest cache entry: ``(size, mtime_ns, ctime_ns, inode, digest)``."""


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    mtime, ctime = st.st_mtime_ns, st.st_ctime_ns
    # The same int object when equal (the usual case): marshal then writes it once.
    return st.st_size, mtime, mtime if ctime == mtime else ctime, st.st_ino


def _changed_ns(st: os.stat_result) -> int:
    """When the file last changed, by a clock that no program can set back: the ctime
    (every write updates it; ``os.utime`` sets the mtime to anything). On Windows the
    ctime is the creation time, so the mtime it is."""
    return st.st_ctime_ns if os.name == "posix" else max(st.st_mtime_ns, st.st_ctime_ns)


_clock = time.time_ns
"""The clock that dates a hashing (tests move it forward)."""


class DigestCache:
    """``{path: (size, mtime_ns, ctime_ns, inode, digest)}``: the content digests of files
    whose stat has not changed since they were hashed, for one project root (``root``:
    paths are relative to it, or absolute; the working directory is the root). Only
    trusted digests are kept (hashed long enough after the file's last change, see
    :data:`RACY_NS`): a file without an entry is hashed.

    And ``{directory: (signature, manifest digest)}``: a directory input's manifest, under
    one signature of the stats of all its files (:func:`_dir_digest`), kept when every
    file's digest was trusted. A warm check of a directory stats its files and compares
    one signature: no per-file lookup. Under keys starting with :data:`BATCH` (no
    directory's), the same for the input files of the latest :data:`BATCH_KEEP` plans:
    ``(signature of their stats, their digests joined)`` (see :func:`check`).

    Kept as one ``marshal`` file holding, for each root, the directories and the file
    entries (as marshalled bytes, loaded when first needed: a plan whose inputs are
    directories never loads them; 5,000 entries take ~1 ms), rewritten atomically when
    something changed; a concurrent writer's additions may be lost, which only costs a
    re-hash. With ``path=None`` nothing is kept.
    """

    VERSION = 4

    def __init__(self, path: Path | None, root: str = "") -> None:
        self.path = path
        self.root = root
        self._entries: dict[str, Entry] | None = None
        self._packed = b""
        self.dirs: dict[str, tuple[str, str]] = {}
        """``{directory key: (signature, manifest digest)}`` (see :func:`_dir_digest`)."""
        self.changed: dict[str, Entry | None] = {}
        """Entries added (or removed: ``None``) since loading, for :meth:`save`."""
        self.changed_dirs: dict[str, tuple[str, str]] = {}
        """Directory records added since loading, for :meth:`save`."""
        if path is not None:
            self.dirs, self._packed = _load(path).get(root) or ({}, b"")

    @property
    def entries(self) -> dict[str, Entry]:
        """The file entries (unmarshalled on first use)."""
        if self._entries is None:
            self._entries, self._packed = _unpack(self._packed), b""
        return self._entries

    def lookup(self, path: str) -> str | None:
        """The digest of a file or a directory's manifest (``None``: nothing there); for
        an unchanged file, one ``os.stat`` and a dict lookup."""
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        entry = self.entries.get(path)
        if (
            entry is not None and entry[1] == st.st_mtime_ns
            and entry[2] == st.st_ctime_ns and entry[0] == st.st_size and entry[3] == st.st_ino
        ):
            return entry[4]
        if stat.S_ISDIR(st.st_mode):
            return _dir_digest(path, self, _NONE)
        return self.digest(path, st)

    def digest(self, path: str, st: os.stat_result | None = None) -> str:
        """The digest of the regular file at ``path``, hashing it only when its stat
        differs from the one recorded, or there is no trusted record."""
        if st is None:
            st = os.stat(path)
        entry = self.entries.get(path)
        if (
            entry is not None and entry[1] == st.st_mtime_ns
            and entry[2] == st.st_ctime_ns and entry[0] == st.st_size and entry[3] == st.st_ino
        ):
            return entry[4]
        if not stat.S_ISREG(st.st_mode):  # never read: a named pipe would wait for a writer
            return f"<{_kind(st)}>"
        sig = _signature(st)
        started = _clock()
        try:
            digest = hash_file(path)
            after = os.stat(path)
        except OSError as exc:
            raise Unreadable(path, exc) from None
        if _signature(after) == sig and _changed_ns(st) < started - RACY_NS:
            self.entries[path] = self.changed[path] = (*sig, digest)
        elif path in self.entries:  # changed: its old record must go
            del self.entries[path]
            self.changed[path] = None
        return digest

    def save(self) -> None:
        """Write the entries and directory records that changed (merged with what is on
        disk now)."""
        if self.path is None or not (self.changed or self.changed_dirs):
            return
        roots = _load(self.path)
        dirs, packed = roots.get(self.root) or ({}, b"")
        batches = [key for key in self.changed_dirs if key.startswith(BATCH)]
        for key in batches:  # (re-inserted: the latest last)
            dirs.pop(key, None)
        dirs.update(self.changed_dirs)
        if batches:
            kept = [key for key in dirs if key.startswith(BATCH)]
            for key in kept[:-BATCH_KEEP]:
                del dirs[key]
        if self.changed:
            mine = _unpack(packed)
            for key, entry in self.changed.items():
                if entry is None:
                    mine.pop(key, None)
                else:
                    mine[key] = entry
            packed = marshal.dumps(mine)
        roots[self.root] = (dirs, packed)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}")
        try:
            tmp.write_bytes(marshal.dumps((self.VERSION, roots)))
            os.replace(tmp, self.path)
        except OSError:  # a cache only: the next run hashes again
            tmp.unlink(missing_ok=True)
            return
        self.changed = {}
        self.changed_dirs = {}


def _kind(st: os.stat_result) -> str:
    """What a file that is neither a regular file nor a directory is, in words."""
    mode = st.st_mode
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _load(path: Path) -> dict[str, tuple[dict[str, tuple[str, str]], bytes]]:
    """``{root: (directory records, marshalled file entries)}`` from a cache file (empty
    when it is missing, damaged or of another version)."""
    try:
        data = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    if type(data) is tuple and len(data) == 2 and data[0] == DigestCache.VERSION and type(data[1]) is dict:
        return {root: found for root, found in data[1].items()
                if type(found) is tuple and len(found) == 2 and type(found[0]) is dict
                and type(found[1]) is bytes}
    return {}


def _unpack(packed: bytes) -> dict[str, Entry]:
    if not packed:
        return {}
    try:
        entries = marshal.loads(packed)
    except (EOFError, ValueError, TypeError):
        return {}
    return entries if type(entries) is dict else {}


def _manifest(lines: Iterable[tuple[str, str]]) -> str:
    text = "".join([f"{rel}\0{file_digest}\n" for rel, file_digest in lines])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


_EMPTY = _manifest([])
"""The manifest of an empty directory (or one holding only what it leaves out)."""


@functools.lru_cache(maxsize=64)
def _holders(exclude: frozenset[str]) -> frozenset[str]:
    """The folders that hold the keys of ``exclude`` (``data/clean`` for
    ``data/clean/x.csv``): a manifest leaves out their lines (made for an output, such a
    folder appears when its task runs) but not what else is under them."""
    found = set()
    for key in exclude:
        cut = key.rstrip("/").rfind("/")
        while cut > 0:
            key = key[:cut]
            found.add(key)
            cut = key.rfind("/")
    return frozenset(found)


def _dir_digest(directory: str, cache: DigestCache, exclude: frozenset[str],
                hidden: bool = False) -> str:
    """The manifest digest of a directory (``directory``: relative to the working
    directory, or absolute), leaving out the keys in ``exclude`` and, unless ``hidden``,
    hidden folders and scratch files (see :func:`_dir_manifest`).

    The warm path of a directory input: one :func:`_dir_signature` (a listing and a stat per
    file) compared with the one recorded with the manifest (:attr:`DigestCache.dirs`). Only
    when they differ is the manifest made again, file by file; it is recorded when every
    digest in it was trusted and the signature did not change meanwhile."""
    record_key = directory if not exclude else "\0".join([directory, *sorted(exclude)])
    if hidden:
        record_key += "\0."
    signature = _DIR_FORMAT + _dir_signature(directory, exclude, hidden)
    record = cache.dirs.get(record_key)
    if record is not None and record[0] == signature:
        return record[1]
    manifest, trusted = _dir_manifest(directory, cache, exclude, hidden)
    if trusted and _DIR_FORMAT + _dir_signature(directory, exclude, hidden) == signature:
        cache.dirs[record_key] = cache.changed_dirs[record_key] = (signature, manifest)
    return manifest


def is_scratch(name: str) -> bool:
    """Whether a hidden file is what an editor or a desktop leaves beside data (never
    data itself: a Zarr store's ``.zattrs`` and ``.zarray`` are): Finder's ``.DS_Store``
    and ``._*`` files, Vim's swap files, LibreOffice's and Emacs's locks."""
    return (name == ".DS_Store" or name.startswith(("._", ".~lock.", ".#"))
            or name.endswith((".swp", ".swo", ".swx")))


_DIR_FORMAT = "3:"
"""Prefixes the signature of a manifest recorded in the digest cache: a record made before
subdirectories were part of manifests (no prefix) never matches, so the manifest of an
unchanged directory is made again once (from its files' recorded digests: no file is read).
"3:" since hidden files count (a Zarr store's metadata); a directory with some is re-hashed
and its readers run again once."""


def _dir_signature(directory: str, exclude: frozenset[str], hidden: bool = False) -> str:
    """A digest of what a directory's manifest depends on, as cheap as it gets: the names
    under it as listed (unsorted: a listing whose order changed only costs a new manifest)
    and the stat (size, mtime, ctime, inode) of each file the manifest covers, in one
    buffer. Directories are walked as in :func:`_dir_manifest`."""
    digest = hashlib.blake2b(digest_size=16, person=b"cp-dir-sig")
    # Unsigned: an int is converted without a parse (signed ints take one each); the
    # bytes are those of signed ints, which a time before 1970 needs.
    stats = array("Q")
    add = stats.extend
    os_stat = os.stat
    seen: set[str] = set()
    stack = [directory]
    while stack:
        base = stack.pop()
        real = os.path.realpath(base)
        if real in seen:
            continue
        seen.add(real)
        try:
            names = os.listdir(base)
        except OSError:
            continue
        digest.update("\0".join(["", base, *names, ""]).encode(errors="surrogateescape"))
        prefix = "" if base == "." else base + "/"
        for name in names:
            if name[0] == "." and not hidden and is_scratch(name):
                continue
            path = prefix + name
            if exclude and path in exclude:  # another task's output (or output directory)
                continue
            try:
                st = os_stat(path)
            except OSError:  # a broken symlink: no file there
                continue
            if st.st_mode & 0o170000 == 0o040000:  # stat.S_ISDIR, inlined
                if name[0] != "." or hidden:
                    stack.append(path)
                continue
            fields = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            try:
                add(fields)
            except OverflowError:  # a time before 1970: signed from here on
                del stats[len(stats) - len(stats) % 4:]  # (what extend added of this file)
                stats = array("q", stats)
                add = stats.extend
                add(fields)
    digest.update(stats)
    return digest.hexdigest()


def _listing(directory: str) -> list[str] | None:
    """The sorted names in a directory, ``None`` if it is gone.

    Raises:
        Unreadable: it cannot be listed (never counted as empty: that would be stale)."""
    try:
        names = os.listdir(directory)
    except OSError as exc:
        if exc.errno in _NO_FILE:
            return None
        raise Unreadable(directory, exc) from None
    names.sort()
    return names


def _dir_manifest(directory: str, cache: DigestCache, exclude: frozenset[str],
                  hidden: bool = False) -> tuple[str, bool]:
    """The manifest digest of a directory, and whether every file digest in it was trusted.

    A line per file under it, ``relative path\\0digest``, and per directory under it,
    ``relative path/\\0`` (a task that lists folders sees an empty one), each directory's
    entries sorted by name and then its subdirectories walked in the same way, hidden
    folders and scratch files (:func:`is_scratch`; unless ``hidden``: a ``Product``
    directory, which its task owns whole) and the keys in
    ``exclude`` (files, or whole directories: another task's ``Product('dir/')``) and
    what is not there (a broken symlink) left out, and so are the lines of the folders that
    hold them (:func:`_holders`: made for them, what else they hold counts). Symlinked subdirectories are followed (as a
    ``**`` pattern does), each real directory once, so a link loop ends. Per file, one
    ``os.stat`` and a lookup (:meth:`DigestCache.digest` inlined).

    Raises:
        Unreadable: a file or directory under it cannot be read (leaving it out would
            make a manifest that does not change when it does)."""
    entries = cache.entries
    os_stat = os.stat
    holders = _holders
    lines: list[str] = []
    trusted = True
    seen: set[str] = set()
    stack = [(directory, "")]  # (a directory to list, its path in the manifest)
    while stack:
        base, rel = stack.pop()
        real = os.path.realpath(base)
        if real in seen:
            continue
        seen.add(real)
        names = _listing(base)
        if names is None:  # removed since it was listed
            continue
        prefix = "" if base == "." else base + "/"
        subdirs: list[str] = []
        for name in names:
            if name[0] == "." and not hidden and is_scratch(name):
                continue
            path = prefix + name
            if exclude and path in exclude:
                continue
            try:
                st = os_stat(path)
            except OSError as exc:
                if exc.errno in _NO_FILE:  # a broken symlink: no file there
                    continue
                raise Unreadable(path, exc) from None
            if st.st_mode & 0o170000 == 0o040000:  # a line of its own (an empty one counts)
                if name[0] == "." and not hidden:  # .git, .ipynb_checkpoints: not data
                    continue
                if not exclude or path not in holders(exclude):  # (made for an output)
                    lines.append(f"{rel}{name}/\0\n")
                subdirs.append(name)
                continue
            entry = entries.get(path)
            if (
                entry is not None and entry[1] == st.st_mtime_ns
                and entry[2] == st.st_ctime_ns and entry[0] == st.st_size and entry[3] == st.st_ino
            ):
                lines.append(f"{rel}{name}\0{entry[4]}\n")
            else:
                lines.append(f"{rel}{name}\0{cache.digest(path, st)}\n")
                trusted = trusted and path in entries  # digest() keeps trusted digests only
        if subdirs:
            subdirs.reverse()
            stack.extend([(prefix + sub, f"{rel}{sub}/") for sub in subdirs])
    return hashlib.blake2b("".join(lines).encode(), digest_size=16).hexdigest(), trusted


def digest_of(
    key: str, root: str, cache: DigestCache, *, pattern: bool = False,
    exclude: frozenset[str] = frozenset(), listed: bool = False, hidden: bool = False,
) -> str | None:
    """The content digest of a file, a directory's manifest or a glob pattern's manifest
    (``None`` when there is nothing there). ``exclude`` holds keys left out of manifests
    (declared outputs of other tasks, tracked through their producers); ``hidden`` keeps
    hidden names in a directory's manifest (a ``Product`` directory's). A named pipe, a
    socket or a device counts by its name and kind in a manifest (``listed``: a pattern's
    match), and is refused as a ``File`` of its own: its content cannot be tracked.

    Raises:
        InvalidRequirementError: ``key`` names a named pipe, a socket or a device.
        Unreadable: ``key``, or a file or directory under it, cannot be read.
    """
    full = key  # relative to the working directory, which is ``root``
    if pattern:
        import glob

        matches = sorted(glob.glob(key, root_dir=root, recursive=True))
        lines = []
        for match in matches:
            rel = match.replace(os.sep, "/").rstrip("/") or "/"  # 'out/**' yields 'out/'
            if exclude and _excluded(rel, exclude):
                continue
            found = digest_of(rel, root, cache, exclude=exclude, listed=True)
            if found is not None and not (
                found == _EMPTY and exclude and rel in _holders(exclude)
            ):  # (a folder made for outputs only is left out as they are)
                lines.append((rel, found))
        if lines or any(_covers(key, k) for k in exclude):
            return _manifest(lines)
        return None  # matches nothing (and no task of the run writes a match)
    try:
        st = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        prefix = "" if key == "." else key + "/"
        if any(k.startswith(prefix) for k in exclude):  # to be written by their producers
            return _manifest([])
        return None
    except OSError as exc:
        raise Unreadable(key, exc) from None
    if stat.S_ISDIR(st.st_mode):
        return _dir_digest(full, cache, exclude, hidden)
    if not listed and not stat.S_ISREG(st.st_mode):
        raise InvalidRequirementError(
            f"File({key!r}) names a {_kind(st)}, not a file or a directory: its content cannot "
            "be tracked (reading it may wait for ever). Declare the files it comes from, or "
            "its directory (where it counts by name only)."
        )
    return cache.digest(full, st)


def output_digests(products: list[Product]) -> dict[str, str]:
    """``{"out:<key>": digest}`` of a task's declared outputs, right after it ran (in the
    worker: relative paths resolve against its working directory, the project root).

    Raises:
        MissingOutputError: a declared output does not exist, or cannot be read.
    """
    cache = DigestCache(None)
    found = {}
    for product in products:
        key = product._key or key_of(product.path, os.getcwd())
        if not product.is_dir and os.path.isdir(key):
            # A file output is removed before a run, never emptied: what an earlier run
            # left in a directory there would outlive it, as if written by this one.
            raise MissingOutputError(
                f"The task's declared output {key} is a directory, but Product("
                f"{product.path!r}) declares a file. Declare a directory output, with a "
                f"trailing '/': Product({product.path + '/'!r}) (emptied before each run)."
            )
        try:
            digest = digest_of(key, os.getcwd(), cache, hidden=True)
        except Unreadable as exc:
            raise MissingOutputError(
                f"The task wrote its declared output {key} (Product({product.path!r})), but "
                f"{exc.path} cannot be read ({exc.reason}), so what it holds cannot be "
                "recorded. Write outputs that the task's own user can read."
            ) from None
        if digest is None:
            raise MissingOutputError(
                f"The task did not write its declared output {key} (Product({product.path!r})). "
                "Write it on every run, or remove the Product from its requirements."
            )
        found[OUTPUT + key] = digest
    return found


def without_outputs(matches: list[list[Path]], products: list[Product]) -> None:
    """Remove a task's own declared outputs (and what lies under its output directories,
    and the folders made to hold them, if they hold nothing else) from the lists of paths
    its patterns matched, in place: planning left them out of the patterns' manifests (see
    :func:`_link_inputs`)."""
    own: set[str] = set()
    for product in products:
        key = (product._key or product.path).rstrip("/")
        own.add(key)
        if product.is_dir:
            own.add(key + "/")
    keys = frozenset(own)
    holders = _holders(keys)
    for paths in matches:
        paths[:] = [path for path in paths if not _excluded(path.as_posix(), keys)
                    and not (path.as_posix() in holders and _holds_only(path, keys, holders))]


def _holds_only(folder: Path, keys: frozenset[str], holders: frozenset[str]) -> bool:
    """Whether the folder ``folder`` holds nothing but the ``keys`` and the folders on
    their way (``holders``)."""
    for entry in folder.iterdir():
        path = entry.as_posix()
        if _excluded(path, keys):
            continue
        if path not in holders or not entry.is_dir() or not _holds_only(entry, keys, holders):
            return False
    return True


def with_outputs(stamp: str, outputs: dict[str, str]) -> str:
    """A task's stamp that names its declared outputs too (``outputs``: their digests), so
    that a re-run that wrote other content is a new value, one that wrote the same content
    and returned the same value is the same (early cutoff). A stamp that does not name a
    value (a unique one) stays as it is."""
    if not stamp.startswith("v"):
        return stamp
    digest = hashlib.blake2b(stamp.encode(), digest_size=16, person=b"cp-outputs")
    for key in sorted(outputs):
        digest.update(f"\0{key}\0{outputs[key]}".encode())
    return "v" + digest.hexdigest()


# --- the files of one task of a plan ----------------------------------------------------


class TaskFiles:
    """The ``File`` and ``Product`` requirements of one task, and what planning found."""

    __slots__ = ("inputs", "outputs", "produced", "exclude", "digests", "outputs_now",
                 "missing", "unreadable", "details", "_agrees")

    def __init__(self, inputs: list[File], outputs: list[Product]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        # (Empty values are shared: a warm run makes one of these per task with files.)
        self.produced: frozenset[str] | set[str] = _NONE
        """Keys of inputs that a task of the DAG declares as output (tracked through it)."""
        self.exclude: frozenset[str] = _NONE
        """Declared outputs of the DAG under this task's directory and glob inputs."""
        self.digests: dict[str, str] = {}
        """``{"file:<key>": digest}`` of the source inputs, when planned (what a run records);
        also ``{"captured:<name>": digest}`` of the values the inner function captured."""
        self.outputs_now: dict[str, str] = {} if outputs else _NO_OUTPUTS
        """``{"out:<key>": digest or ""}`` of the outputs on disk, for a stored task."""
        self.missing: tuple[str, ...] = ()
        """Source inputs that do not exist."""
        self.unreadable: tuple[tuple[str, Unreadable], ...] = ()
        """``(input key, what could not be read)`` of the source inputs that exist but
        cannot be read (a file under a directory input, or the input itself)."""
        self.details: tuple[str, ...] = ()
        """What changed, in words (for ``why``)."""
        self._agrees: dict[str, str] | None = None
        """The ``Meta.deps`` that :meth:`reason` found in agreement (inputs and outputs),
        so that :meth:`current` on it right after costs an identity test."""

    def note_produced(self, key: str) -> None:
        """The input ``key`` is an output of a task of the DAG (tracked through that task)."""
        if isinstance(self.produced, frozenset):  # the shared empty one
            self.produced = set()
        self.produced.add(key)

    @property
    def recorded(self) -> int:
        """How many keys a result of this task records in ``Meta.deps`` besides task ids."""
        return len(self.digests) + len(self.outputs)

    def current(self, recorded: dict[str, str], outputs: bool = True) -> bool:
        """Whether an entry's ``Meta.deps`` has this task's input digests (and, with
        ``outputs``, the digests of its outputs on disk now)."""
        if recorded is self._agrees:
            return True
        if not self.digests.items() <= recorded.items():
            return False
        if not outputs or not self.outputs_now:
            return True
        return all(now and recorded.get(k) == now for k, now in self.outputs_now.items())

    def reason(self, meta: Meta) -> Reason | None:
        """``"input changed"``, ``"output changed"`` or ``None``, comparing the stored
        result's digests with the files now (and noting the details)."""
        recorded = meta.deps
        if self.digests.items() <= recorded.items() and not self.outputs_now:
            self._agrees = recorded
            return None  # the usual case, checked in C
        details: list[str] = []
        for key, digest in self.digests.items():
            old = recorded.get(key)
            if old != digest:
                name = key[len(INPUT):]
                if key.startswith(CAPTURED):
                    name = key[len(CAPTURED):]
                    details.append(f"captured value {name} changed" if old is not None else
                                   f"captured value {name} is new (not recorded by the stored result)")
                elif old is None:
                    details.append(f"new input {name} (not used by the stored result)")
                elif not _GLOB_CHARS.isdisjoint(name) and not os.path.lexists(name):
                    details.append(f"input pattern {name} changed (a match was added, removed "
                                   "or edited)")
                elif os.path.isdir(name):
                    details.append(f"input directory {name} changed (a file under it was "
                                   "added, removed or edited)")
                else:
                    details.append(f"input file {name} changed")
        if details:
            self.details += tuple(details)
            return Reason.INPUT_CHANGED
        for key, now in self.outputs_now.items():
            old = recorded.get(key)
            name = key[len(OUTPUT):]
            if not now:
                details.append(f"output file {name} cannot be read" if os.path.lexists(name)
                               else f"output file {name} is missing")
            elif old is None:
                details.append(f"output file {name} was not declared by the stored result")
            elif old != now:
                details.append(f"output file {name} changed since the task wrote it")
        self.details += tuple(details)
        return Reason.OUTPUT_CHANGED if details else None


def one_input(inputs: list[File]) -> TaskFiles:
    """The :class:`TaskFiles` of a task whose one requirement is one ``File`` (``inputs``:
    that requirement list, never mutated): a sweep over files makes one per task."""
    files = _new_files(TaskFiles)  # TaskFiles(inputs, []) without the call of __init__
    files.inputs = inputs
    files.outputs = _NO_PRODUCTS
    files.produced = files.exclude = _NONE
    files.digests = {}
    files.outputs_now = _NO_OUTPUTS
    files.missing = files.details = ()
    files.unreadable = ()
    files._agrees = None
    return files


_new_files = object.__new__
_NO_PRODUCTS: list[Product] = []
"""The outputs of every task that declares none (never mutated)."""


def link(nodes: dict[TaskId, Node], with_files: list[Node], producing: list[Node]) -> bool:
    """Make the producer of each declared output (``producing``: the tasks that declare
    any) a prerequisite of the tasks whose ``File`` inputs name it (or a directory or
    pattern covering it). Return whether a producer now comes after one of its consumers
    in ``nodes`` (which then needs re-ordering). Paths are matched as they really are,
    links resolved (:class:`_Real`): ``out/x.txt`` is ``build/x.txt`` when ``out -> build``.

    Raises:
        TaskDefinitionError: two tasks declare the same output, or a task reads its own.
    """
    root = os.getcwd()
    real = _Real(root)
    producers, dirs, named = _producers(nodes, producing, root, real)
    order = {tid: i for i, tid in enumerate(nodes)}
    keys = sorted(producers)
    late = False
    for node in with_files:
        found = _link_inputs(node, (producers, dirs, named), keys, root, real)
        tid = node.task.id
        for producer in found:
            if producer not in node.deps:
                node.deps.append(producer)
                late = late or order[producer] > order[tid]
    return late


class _Real:
    """Where paths really are, links resolved, as keys (relative to the project's real
    path when under it): what matching outputs with inputs compares. Each directory is
    resolved once; a path's own name costs one ``lstat`` when it is followed."""

    __slots__ = ("asked", "dirs", "links", "real_root")

    def __init__(self, root: str) -> None:
        self.real_root = os.path.realpath(root)
        self.dirs: dict[str, str] = {}  # {directory key: its real key}
        self.links: dict[str, set[str]] = {}  # {directory key: the names of links in it}
        self.asked: dict[str, int] = {}  # {directory key: links asked for, not listed}

    def key(self, key: str, follow: bool = False) -> str:
        """The real key of ``key``: its directory resolved, and its own name too when
        ``follow`` (a directory, or a file that is read: a file output's own link is
        removed before its task runs, never followed)."""
        head, _, name = key.rpartition("/")
        if name in (".", "..") or (not head and key[:1] == "/"):
            return self._key(os.path.realpath(key))
        parent = self.dirs.get(head)
        if parent is None:
            parent = self.dirs[head] = self._key(os.path.realpath(head)) if head else "."
        if follow and self._is_link(key, head, name):
            return self._key(os.path.realpath(key))
        if parent == head:  # (no link on the way: the usual case)
            return key
        return name if parent == "." else f"{parent}/{name}"

    def followed(self, key: str, real_key: str) -> str:
        """``self.key(key, follow=True)``, knowing ``real_key`` (``self.key(key)``)."""
        head, _, name = key.rpartition("/")
        if name in (".", "..") or (not head and key[:1] == "/"):
            return real_key  # (resolved whole)
        return self._key(os.path.realpath(key)) if self._is_link(key, head, name) else real_key

    def _is_link(self, key: str, head: str, name: str) -> bool:
        """Whether ``key`` is a symbolic link: an ``lstat`` for the first few names of a
        directory, then one listing of it (a sweep reads thousands of files of one)."""
        links = self.links.get(head)
        if links is None:
            seen = self.asked[head] = self.asked.get(head, 0) + 1
            if seen <= 16:
                return os.path.islink(key)
            try:
                with os.scandir(head or os.curdir) as entries:
                    links = self.links[head] = {e.name for e in entries if e.is_symlink()}
            except OSError:
                links = self.links[head] = set()
        return name in links

    def pattern(self, pattern: str) -> tuple[str, str]:
        """``(real pattern, the literal directory it starts with)``: the directories before
        the first part with a wildcard resolved."""
        parts = pattern.split("/")
        cut = next(i for i, part in enumerate(parts) if not _GLOB_CHARS.isdisjoint(part))
        head = "/".join(parts[:cut])
        if not head and pattern[:1] != "/":
            return pattern, ""
        real = self.key(head, follow=True)
        return ("" if real == "." else real + "/") + "/".join(parts[cut:]), head

    def _key(self, path: str) -> str:
        root = self.real_root
        if path == root:
            return "."
        if path.startswith(root) and path[len(root)] == "/":
            return path[len(root) + 1:]
        return path


def _as_given(real: str, given_dir: str, real_dir: str) -> str:
    """The path of what really is at ``real`` as a manifest of the input directory
    ``given_dir`` (whose real key is ``real_dir``) names it."""
    if real_dir == given_dir or not real_dir:
        return real
    if real_dir == ".":
        return real if given_dir in ("", ".") else f"{given_dir}/{real}"
    if real == real_dir:
        return given_dir
    if real.startswith(real_dir + "/"):
        return given_dir + real[len(real_dir):]
    return real


def _producers(nodes: dict[TaskId, Node], producing: list[Node], root: str, real: _Real,
               ) -> tuple[dict[str, TaskId], dict[str, TaskId], dict[str, str]]:
    """``({output key: producer}, {output directory key: producer}, {output key: key as
    declared})`` of the tasks that declare outputs, their keys real (:class:`_Real`).

    Raises:
        TaskDefinitionError: two tasks declare the same output (or one a file inside the
            other's directory), links resolved.
    """
    import bisect

    producers: dict[str, TaskId] = {}
    dirs: dict[str, TaskId] = {}
    named: dict[str, str] = {}
    for node in producing:
        assert node.files is not None
        for product in node.files.outputs:
            given = product.key(root)
            key = real.key(given, follow=product.is_dir)
            if product.is_dir:
                dirs[key] = node.task.id
            other = producers.setdefault(key, node.task.id)
            if other != node.task.id:
                raise _two_producers(nodes[other].task, node.task, named[key], given, key)
            named.setdefault(key, given)
    keys = sorted(producers)
    for key, owner in dirs.items():  # a directory's files have its task as their producer
        for k in keys[bisect.bisect_left(keys, key + "/"):]:
            if not k.startswith(key + "/"):
                break
            if producers[k] != owner:
                raise _two_producers(nodes[owner].task, nodes[producers[k]].task,
                                     named[key] + "/", named[k], k)
    return producers, dirs, named


def _in_matched_folders(match: Callable[[str], object], producers: dict[str, TaskId],
                        dirs: dict[str, TaskId], covered: list[str]) -> list[str]:
    """The output files (keys of ``producers``, not in ``covered``) inside a folder that a
    pattern matches (``match``): that folder's manifest holds them."""
    folders: dict[str, bool] = {}
    found = []
    for k in producers:
        if k in dirs or k[0] == "/":
            continue
        cut = k.find("/")
        while cut > 0:
            folder = k[:cut]
            hit = folders.get(folder)
            if hit is None:
                hit = folders[folder] = bool(match(folder))
            if hit:
                found.append(k)
                break
            cut = k.find("/", cut + 1)
    if covered:
        known = set(covered)
        return [k for k in found if k not in known]
    return found


def _two_producers(first: Task[Any], second: Task[Any], one: str, other: str,
                   real: str) -> TaskDefinitionError:
    """The error for two declared outputs with one file (``one`` of ``first``, ``other`` of
    ``second``, as declared; ``real``: where they really are)."""
    from ._text import task_label

    a, b = task_label(first), task_label(second)
    if one.endswith("/"):
        what = f"{a} declares the directory {one} as its output (Product) and {b} declares {other}"
        linked = not (other + "/").startswith(one)
        what += " inside it" if not linked else ", a file inside it"
    else:
        what = f"{a} and {b} both declare the output {one}"
        linked = one != other
        what += f" and {other}, one file" if linked else ""
    via = f" through a symbolic link (it is {real})" if linked else ""
    return TaskDefinitionError(
        f"{what}{via}; a file has one producer. Give each its own path."
    )


def _link_inputs(node: Node, found_outputs: tuple[dict[str, TaskId], dict[str, TaskId],
                 dict[str, str]], keys: list[str], root: str, real: _Real) -> list[TaskId]:
    """The producers of a task's ``File`` inputs (``found_outputs``: what
    :func:`_producers` found; ``keys``: the sorted output keys); note in its
    :class:`TaskFiles` the inputs they produce (``produced``) and the outputs its
    directories and patterns leave out of their manifests (``exclude``, as the manifests
    name them): other tasks' outputs (tracked through their producers) and the task's own
    (never its inputs).

    Raises:
        TaskDefinitionError: the task names its own output as an input, or reads inside
            its own output directory.
    """
    producers, dirs, named = found_outputs
    files = node.files
    assert files is not None
    tid = node.task.id
    found: list[TaskId] = []
    exclude: set[str] = set()
    for item in files.inputs:
        given = item.key(root)
        if item.is_glob:
            key, head = real.pattern(given)
            base = real.key(head, follow=True) if head else ""
            match = glob_matcher(key)
            covered = [k for k in producers if (_reaches(key, k) if k in dirs else match(k))]
            covered += _in_matched_folders(match, producers, dirs, covered)
        else:
            key = base = real.key(given)
            head = given
            hit = _covered(item, given, key, (producers, dirs), keys, tid, node)
            if hit is None and (linked := real.followed(given, key)) != key:
                key = base = linked  # a link (to a directory holding outputs?)
                hit = _covered(item, given, key, (producers, dirs), keys, tid, node)
            covered = hit or []
        for k in covered:
            if producers[k] == tid:
                if key == k or (k in dirs and key.startswith(k + "/")):
                    raise _own_output(node, named[k])
                # A pattern or directory that covers its own output (out/*.csv writing
                # out/summary.csv): left out, as make drops a circular dependency. The
                # output is removed before the task runs, so it never reads it anyway.
            else:
                found.append(producers[k])
            seen = _as_given(k, head, base)
            exclude.add(seen)
            if k in dirs:  # and every file under it
                exclude.add(seen + "/")
    if exclude:
        files.exclude = frozenset(exclude)
    return found


def _covered(item: File, given: str, key: str, outputs: tuple[dict[str, TaskId],
             dict[str, TaskId]], keys: list[str], tid: TaskId, node: Node) -> list[str] | None:
    """The output keys that the input ``item`` (``given``; ``key``: its real key) covers:
    itself, the output directory holding it, or the outputs under it (``None``: none; it
    is not an output or inside an output directory)."""
    import bisect

    producers, dirs = outputs
    files = node.files
    assert files is not None
    if key in producers:
        files.note_produced(given)
        return [key]
    if dirs and (holder := _owning_dir(key, dirs)) is not None:
        # Inside a Product directory: its task writes it.
        if dirs[holder] == tid:
            raise _own_output(node, given, holder)
        files.note_produced(given)
        return [holder]
    prefix = "" if key == "." else key + "/"
    covered = []
    for k in keys[bisect.bisect_left(keys, prefix):]:
        if not k.startswith(prefix):
            break
        covered.append(k)
    return covered or None


def _own_output(node: Node, key: str, holder: str | None = None) -> TaskDefinitionError:
    """The error for a task that reads its own output (``key``), or inside its own output
    directory (``holder``)."""
    from ._text import task_label

    if holder is None:
        return TaskDefinitionError(
            f"{task_label(node.task)} declares {key} both as an input (File) and "
            "as its output (Product). Write the result to another path."
        )
    return TaskDefinitionError(
        f"{task_label(node.task)} declares {key} both as an input (File) and "
        f"inside its output directory {holder}/ (Product), which is emptied "
        "before it runs. Read the input from another path."
    )


def glob_match(pattern: str, key: str) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` yields the path ``key`` (both
    ``/``-separated, relative to the same root), if it exists: ``**`` is zero or more
    directories, ``*`` and ``?`` stay within a name, and a hidden name (``.x``) matches only
    a part of the pattern that starts with ``.``. (:func:`fnmatch.fnmatchcase` on the
    whole path differs: its ``*`` crosses ``/``, its ``**`` is not optional.)"""
    return bool(glob_matcher(pattern)(key))


def glob_matcher(pattern: str) -> Callable[[str], object]:
    """:func:`glob_match` for one pattern, as a function of the path (true: it matches)."""
    regex = _glob_regex(pattern)
    if regex is not None:
        return regex.fullmatch
    parts = pattern.split("/")
    return lambda key: _match_parts(parts, 0, key.split("/"), 0)


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    """:func:`glob_match` as one compiled regex (a pattern compared with thousands of
    declared outputs), for a pattern without ``[`` or ``**/**`` (``None``: match it part
    by part)."""
    if "[" in pattern or "**/**" in pattern:
        return None
    out = []
    start = True  # no separator before the next part
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "**":  # zero or more names, none hidden
            if i == len(parts) - 1:
                out.append(r"(?:(?!\.)[^/]+(?:/(?!\.)[^/]+)*)?" if start else r"(?:/(?!\.)[^/]+)*")
            else:
                out.append(("" if start else "/") + r"(?:(?!\.)[^/]+/)*")
                start = True
            continue
        if not start:
            out.append("/")
        start = False
        if _GLOB_CHARS.isdisjoint(part):
            out.append(re.escape(part))
            continue
        if part[0] != ".":
            out.append(r"(?!\.)")
        out.extend("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
    return re.compile("".join(out), re.DOTALL)


def _match_parts(pattern: list[str], i: int, parts: list[str], j: int) -> bool:
    while i < len(pattern):
        part = pattern[i]
        if part == "**":
            if i == len(pattern) - 1:  # the last part: everything below, hidden names aside
                return not any(name[:1] == "." for name in parts[j:])
            for k in range(j, len(parts) + 1):  # it takes parts[j:k], the rest must match
                if _match_parts(pattern, i + 1, parts, k):
                    return True
                if k < len(parts) and parts[k][:1] == ".":
                    return False
            return False
        if j == len(parts) or not _name_match(part, parts[j]):
            return False
        i += 1
        j += 1
    return j == len(parts)


def _name_match(part: str, name: str) -> bool:
    """Whether one part of a pattern (not ``**``) matches one name, as glob decides."""
    import fnmatch

    if _GLOB_CHARS.isdisjoint(part):
        return name == part
    return fnmatch.fnmatchcase(name, part) and (name[:1] != "." or part[:1] == ".")


def _reaches(pattern: str, directory: str) -> bool:
    """Whether a glob pattern may match ``directory`` or a path under it (a loose test: a
    ``**`` on the way counts as yes)."""
    pattern_parts = pattern.split("/")
    for i, name in enumerate(directory.split("/")):
        if i == len(pattern_parts):
            return False
        part = pattern_parts[i]
        if part == "**":
            return True
        if not _name_match(part, name):
            return False
    return True


def _covers(pattern: str, excluded: str) -> bool:
    """Whether a pattern covers an entry of ``TaskFiles.exclude``: a declared output, or
    a declared output directory (``"dir/"``)."""
    if excluded.endswith("/"):
        return _reaches(pattern, excluded[:-1])
    return glob_match(pattern, excluded)


def _excluded(path: str, exclude: frozenset[str]) -> bool:
    """Whether ``path`` is in ``exclude`` or lies under a directory there (``"dir/"``)."""
    if path in exclude:
        return True
    cut = path.find("/")
    while cut != -1:
        if path[:cut + 1] in exclude:
            return True
        cut = path.find("/", cut + 1)
    return False


def _owning_dir(key: str, dirs: dict[str, TaskId]) -> str | None:
    """The declared output directory (a key of ``dirs``) that holds the path ``key``."""
    cut = key.rfind("/")
    while cut > 0:
        key = key[:cut]
        if key in dirs:
            return key
        cut = key.rfind("/")
    return None


def check_cache_apart(writing: list[Node], store_root: Path) -> None:
    """Refuse declared outputs (of ``writing``: the tasks that declare any) that would
    destroy the project or the cache: a ``Product`` directory that holds either (emptied
    before its task runs) or an output inside the cache; and those that a file stands in
    the way of (:func:`in_the_way`). Paths are compared as they really are, links resolved: emptying a directory
    follows a link given as the directory itself (``results -> ..``).

    Raises:
        TaskDefinitionError: naming the task, the output and what it would destroy.
    """
    from ._text import task_label

    if not writing:  # (a sweep over source files)
        return
    root = os.getcwd()
    real_root = os.path.realpath(root)
    real_cache = os.path.realpath(os.path.join(root, store_root))
    parents: dict[str, str] = {}  # the real path of each output's directory, once
    fine: set[str] = set()  # real folders where outputs can be written
    for node in writing:
        assert node.files is not None
        for product in node.files.outputs:
            key = product.key(root)
            real = _real_path(key, product.is_dir, parents)
            lexical = os.path.normpath(os.path.join(root, key))
            via = "" if real == lexical else f" (through a symbolic link, it is {real})"
            label = task_label(node.task)
            if product.is_dir and _within(real_root, real):
                raise TaskDefinitionError(
                    f"{label} declares the directory {key} as its output (Product), which "
                    f"holds the project{via}: a Product directory is emptied before its task "
                    "runs. Declare a directory of its own (Product('out/'))."
                )
            if product.is_dir and _within(real_cache, real):
                raise TaskDefinitionError(
                    f"{label} declares the directory {key} as its output (Product), which "
                    f"holds the cache ({store_root}){via}: a Product directory is emptied "
                    "before its task runs. Declare a directory of its own, or keep the cache "
                    "elsewhere (--cache-dir, CP_CACHE_DIR)."
                )
            if _within(real, real_cache):
                what = "the directory " if product.is_dir else ""
                raise TaskDefinitionError(
                    f"{label} declares {what}{key} as its output (Product), which is inside "
                    f"the cache ({store_root}){via}. Write outputs outside the cache (a "
                    "TaskDirectory() is a task's own directory in it)."
                )
            _check_room(product, key, real, label, fine)


def _check_room(product: Product, key: str, real: str, label: str, fine: set[str]) -> None:
    """Refuse an output (``real``: its real path) where a file stands in the way of its
    directory; ``fine``: the real folders found fine (a stat per folder).

    Raises:
        TaskDefinitionError: naming the task (``label``), the output and the file.
    """
    folder = real if product.is_dir else os.path.dirname(real)
    if folder in fine:
        return
    if not os.path.isdir(folder) and (blocking := in_the_way(key, product.is_dir)):
        raise TaskDefinitionError(in_the_way_message(product, blocking, label))
    fine.add(folder)


def _real_path(key: str, is_dir: bool, parents: dict[str, str]) -> str:
    """The real path of an output (``key``, relative to the working directory or absolute):
    its directory's real path, looked up once per directory, joined with its name, unless
    the name is a directory that is itself a link (a file's own link is unlinked, never
    followed, before its task runs)."""
    head, name = os.path.split(key)
    if name in ("", os.curdir, os.pardir) or (is_dir and os.path.islink(key)):
        return os.path.realpath(key)
    parent = parents.get(head)
    if parent is None:
        parent = parents[head] = os.path.realpath(head or os.curdir)
    return os.path.join(parent, name)


def _within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (both absolute and normal)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def check(with_files: list[Node], cache_file: Path | None, batch: bool = True,
          leaf: type[Node] | None = None) -> None:
    """Digest the source inputs of every task, and the outputs of the stored ones (those
    whose ``meta`` is set).

    Inputs that another task produces are skipped: they are tracked through their producer.
    The warm run's per-file cost (a stat and a lookup when unchanged): plain loops. A
    stored task whose entry records exactly its one input's digest now (a sweep over files,
    fresh) shares that record as its ``digests``: no dict of its own.

    ``batch`` (a plan whose tasks declare no outputs, so no input is produced): when every
    input was a file whose trusted digest this check found in the cache, the plan's inputs
    are recorded under one signature of their stats (:func:`_check_batch`); the next check
    of the same inputs stats them all and compares that one signature, without a lookup
    per file (or reading the cache's per-file entries).

    ``leaf``: the type of the nodes that make their :class:`TaskFiles` when first asked
    (:class:`checkpoint.graph.FileLeaf`, one ``File`` each): a plan of only those, fresh, is
    settled without making any (:func:`_settle_leaves`)."""
    root = os.getcwd()
    cache = DigestCache(
        cache_file if cache_file is not None and cache_file.parent.is_dir() else None, root
    )
    if batch and cache.path is not None:
        if leaf is not None and _settle_leaves(with_files, leaf, cache):
            return
        task_files: list[TaskFiles] = [node.files for node in with_files]  # type: ignore[misc]
        paths = [item.path for files in task_files for item in files.inputs]
        record_key = BATCH + _text_digest("\0".join(paths))
        if _check_batch(with_files, paths, cache.dirs.get(record_key), task_files):
            return
        recorded: array[int] | None = array("Q")  # the stats behind each digest found
    else:
        recorded = None
    seen: dict[str, str | Unreadable | None] = {}
    entries: dict[str, Entry] | None = None  # loaded for the first input not a known directory
    dirs = cache.dirs
    os_stat = os.stat
    for node in with_files:
        files = node.files
        assert files is not None
        produced = files.produced
        inputs = files.inputs
        for item in inputs:
            path = item.path
            if produced and path in produced:  # a key (see below): its producer tracks it
                continue
            # The usual case first: a file hashed before and unchanged since (one stat, the
            # working directory being the root). The cache holds keys only, so a path found
            # there is its own key: no key_of for it.
            if entries is None and path not in dirs:
                entries = cache.entries
            entry = None if entries is None else entries.get(path)
            if entry is not None:
                try:
                    st = os_stat(path)
                except OSError:
                    pass
                else:
                    if (entry[1] == st.st_mtime_ns and entry[2] == st.st_ctime_ns
                            and entry[0] == st.st_size and entry[3] == st.st_ino):
                        key = INPUT + path
                        digest = entry[4]
                        if recorded is not None:
                            try:
                                recorded.extend((entry[0], entry[1], entry[2], entry[3]))
                            except OverflowError:  # a time before 1970: not recorded
                                recorded = None
                        meta = node.meta
                        if meta is not None and len(inputs) == 1:
                            deps = meta.deps
                            if len(deps) == 1 and deps.get(key) == digest and not files.digests:
                                files.digests = deps  # == {key: digest}; never mutated
                                continue
                        files.digests[key] = digest
                        continue
            recorded = None  # not all trusted digests of files: no record of the plan
            _digest_input(item, files, root, cache, seen)  # new, changed, missing, a pattern...
        if files.outputs and node.meta is not None:
            _digest_outputs(files, root, cache, seen)
    if recorded:
        _record_batch(with_files, paths, recorded, cache, record_key)
    cache.save()


def _settle_leaves(with_files: list[Node], leaf: type[Node], cache: DigestCache) -> bool:
    """For a plan whose tasks with files are all ``leaf`` nodes not checked yet (a sweep over
    files), when the plan's record matches the files' stats now and every task's entry
    records exactly ``{"file:<its path>": its digest}``: note each entry's record as its
    task's digests (``found``; no :class:`TaskFiles` made) and return true. Otherwise
    nothing is noted (the general check follows)."""
    if set(map(type, with_files)) != {leaf}:
        return False
    # (Not one whose TaskFiles was made already: captured values.)
    paths = [node.inputs[0].path for node in with_files  # type: ignore[attr-defined]
             if node.found is None]  # type: ignore[attr-defined]
    if len(paths) != len(with_files):
        return False
    try:
        recorded = [node.meta.deps for node in with_files]  # type: ignore[union-attr]
    except AttributeError:  # a task without a stored entry
        return False
    record = cache.dirs.get(BATCH + _text_digest("\0".join(paths)))
    if record is None or len(record[1]) != (_DIGEST_LEN + 1) * len(paths) - 1:
        return False
    if not _fresh(recorded, paths, record[1]):
        return False
    try:
        if _stats_signature(paths) != record[0]:
            return False
    except (OSError, ValueError):  # a file is gone (or a path is not one)
        return False
    for node, deps in zip(with_files, recorded, strict=True):
        node.found = deps  # type: ignore[attr-defined]  # == {key: digest}; never mutated
    return True


def _fresh(recorded: list[dict[str, str]], paths: list[str], digests: str) -> bool:
    """Whether each entry's ``Meta.deps`` (``recorded``) is exactly ``{"file:<its path>":
    its digest}`` (``digests``: joined by NULs), compared all at once: the recorded keys
    joined by NULs against the paths' keys joined so, and the recorded digests likewise;
    each entry holding exactly one key, and no path or digest holding a NUL (``os.stat``
    refused such a path), the joined texts are equal exactly when each entry's key and
    digest are."""
    return (set(map(len, recorded)) == {1}
            and "\0".join(chain.from_iterable(recorded)) == INPUT + ("\0" + INPUT).join(paths)
            and "\0".join(chain.from_iterable(map(dict.values, recorded))) == digests)


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode(errors="surrogateescape"), digest_size=16).hexdigest()


def _stats_signature(paths: list[str]) -> str:
    """One digest of the (size, mtime, ctime, inode) of each file, in order, as
    :func:`_signature_of` makes it; each stat dropped once read (none kept alive).

    Raises:
        OSError: a file cannot be stat'ed (it is gone)."""
    try:  # unsigned: the same bytes as signed (and as array("Q")) for every time after 1970
        packed = b"".join(starmap(_PACK_STAT, map(_stat_fields, map(os.stat, paths))))
    except struct.error:  # a time before 1970
        packed = array("q", chain.from_iterable(map(_stat_fields, map(os.stat, paths)))).tobytes()
    return _signature_of(packed)


def _signature_of(packed: array[int] | bytes) -> str:
    return hashlib.blake2b(packed, digest_size=16, person=b"cp-files-sig").hexdigest()


def _record_batch(with_files: list[Node], paths: list[str], stats: array[int],
                  cache: DigestCache, record_key: str) -> None:
    """Record a plan's inputs (``paths``, every one a file found in the cache with a
    trusted digest; ``stats``: the (size, mtime, ctime, inode) of each, as found then):
    their digests in order, joined by NULs, under the signature of those stats. Not when a
    digest is not of the usual length (or holds a NUL: :func:`_all_fresh_leaves` counts on
    none)."""
    digests = []
    for node in with_files:
        files = node.files
        assert files is not None
        digests.extend([files.digests[INPUT + item.path] for item in files.inputs])
    text = "\0".join(digests)
    if (len(stats) == 4 * len(paths) and len(digests) == len(paths)
            and set(map(len, digests)) == {_DIGEST_LEN} and text.count("\0") == len(paths) - 1):
        record = (_signature_of(stats), text)
        cache.dirs[record_key] = cache.changed_dirs[record_key] = record


def _check_batch(with_files: list[Node], paths: list[str], record: tuple[str, str] | None,
                 task_files: list[TaskFiles]) -> bool:
    """Settle every input of the plan (``paths``: those of each task in order;
    ``task_files``: each task's :class:`TaskFiles`) from its record, if there is one and
    the files' stats are exactly those it was made with: their digests were trusted then,
    so they still are (the per-file rule, for all at once). Return whether it did; if not,
    nothing was noted."""
    if record is None or not paths:
        return False
    signature, digests = record
    if len(digests) != (_DIGEST_LEN + 1) * len(paths) - 1:  # (joined by NULs)
        return False
    try:
        if _stats_signature(paths) != signature:
            return False
    except (OSError, ValueError):  # a file is gone (or a path is not one)
        return False
    if len(paths) == len(with_files) and _all_fresh_leaves(with_files, paths, digests, task_files):
        return True
    keys: list[str] = []  # (made once a task's entry does not settle it)
    found: list[str] = []
    i = 0
    for node, files in zip(with_files, task_files, strict=True):
        count = len(files.inputs)
        if count > 1 and _same_inputs(node, files, paths[i:i + count],
                                      digests[i * (_DIGEST_LEN + 1):(i + count) * (_DIGEST_LEN + 1) - 1]):
            i += count
            continue
        if not keys:
            keys = list(map(INPUT.__add__, paths))
            found = digests.split("\0")
        if count == 1:
            key = keys[i]
            digest = found[i]
            i += 1
            meta = node.meta
            if meta is not None:
                deps = meta.deps
                if len(deps) == 1 and deps.get(key) == digest and not files.digests:
                    files.digests = deps  # == {key: digest}; never mutated
                    continue
            files.digests[key] = digest
        else:
            files.digests.update(zip(keys[i:i + count], found[i:i + count], strict=True))
            i += count
    return True


def _same_inputs(node: Node, files: TaskFiles, paths: list[str], digests: str) -> bool:
    """For a task reading several files (``paths``; ``digests``: theirs now, joined by
    NULs) whose entry records exactly their keys and digests, in order, then its
    arrangement: note them as its digests (their keys taken from the entry: none made) and
    return true. Compared as :func:`_all_fresh_leaves` does, the keys and the digests each
    joined by NULs (none holds one)."""
    meta = node.meta
    shape = node.shape
    if meta is None or shape is None or files.digests:
        return False
    deps = meta.deps
    if len(deps) != len(paths) + 1:
        return False
    if "\0".join(deps) != INPUT + ("\0" + INPUT).join(paths) + "\0" + _ARRANGEMENT:
        return False
    if "\0".join(deps.values()) != digests + "\0" + shape:
        return False
    mine = dict(deps)
    del mine[_ARRANGEMENT]
    files.digests = mine
    return True


_ARRANGEMENT = "arrangement"
"""The key under which an entry records its task's arrangement
(:data:`checkpoint.graph.ARRANGEMENT`, which imports this module)."""


def _all_fresh_leaves(with_files: list[Node], paths: list[str], digests: str,
                      task_files: list[TaskFiles]) -> bool:
    """For a plan whose tasks read one file each (``paths``, in order; ``digests``: their
    digests now, joined by NULs): when every task's entry records exactly ``{"file:<its
    path>": its digest}`` (fresh as far as files go: a sweep's usual case), share each
    entry's record as its task's digests and return true; otherwise note nothing
    (compared all at once: :func:`_fresh`)."""
    try:
        recorded = [node.meta.deps for node in with_files]  # type: ignore[union-attr]
    except AttributeError:  # a task without a stored entry
        return False
    if not _fresh(recorded, paths, digests):
        return False
    for files, deps in zip(task_files, recorded, strict=True):
        if files.digests:  # captured values: its own dict (which the entry lacks: stale)
            files.digests.update(deps)
        else:
            files.digests = deps  # == {key: digest}; never mutated
    return True


_PACK_STAT = struct.Struct("QQQQ").pack
"""The (size, mtime, ctime, inode) of a file in 32 bytes, as ``array("Q")`` packs them."""


def _digest_input(item: File, files: TaskFiles, root: str, cache: DigestCache,
                  seen: dict[str, str | Unreadable | None]) -> None:
    """Note the digest of an input :func:`check`'s usual case did not settle (new, changed,
    missing, a directory, a pattern, a path to normalize): the long way."""
    key = item.key(root)
    if key in files.produced:
        return
    digest = seen.get(key, _UNSEEN)
    if digest is _UNSEEN:
        try:
            digest = digest_of(key, root, cache, pattern=item.is_glob, exclude=files.exclude)
        except Unreadable as exc:
            digest = exc
        seen[key] = digest
    if digest is None:
        files.missing += (key,)
    elif type(digest) is Unreadable:
        files.unreadable += ((key, digest),)
    else:
        files.digests[INPUT + key] = digest


def _digest_outputs(files: TaskFiles, root: str, cache: DigestCache,
                    seen: dict[str, str | Unreadable | None]) -> None:
    """Note the digests of a stored task's outputs as they are on disk now (``seen``: the
    digests of the paths digested so far). One that cannot be read counts as missing: its
    task runs and writes it again."""
    for product in files.outputs:
        key = OUTPUT + product.key(root)
        digest = seen.get(key, _UNSEEN)
        if digest is _UNSEEN:
            try:
                digest = digest_of(product._key, root, cache, hidden=True)
            except Unreadable:
                digest = None
            seen[key] = digest
        files.outputs_now[key] = digest if type(digest) is str else ""


def changed_inputs(files: TaskFiles, cache: DigestCache) -> list[str]:
    """The source inputs of a task whose content is no longer what planning digested
    (edited while the task ran: what it read may be either)."""
    root = os.getcwd()
    changed = []
    for item in files.inputs:
        key = item.key(root)
        planned = files.digests.get(INPUT + key)
        if planned is None:
            continue
        try:
            now = digest_of(key, root, cache, pattern=item.is_glob, exclude=files.exclude)
        except Unreadable:  # no longer readable: not what the task was planned with
            now = None
        if planned != now:
            changed.append(key)
    return changed


def changed_outputs(
    producers: list[tuple[Node, Meta | None]], cache: DigestCache,
    checked: dict[str, Checked], ended: float,
) -> list[tuple[str, Task[object], bool]]:
    """The declared outputs of ``producers`` (tasks with outputs, each with its current
    entry) that no longer have the digest the entry records, as ``(key, producer, removed)``
    (a directory's key ending with ``/``), for a reader that ended at ``ended`` (by
    ``time.time()``). ``checked``: what the checks so far found, by key (updated): a check
    made since ``ended`` holds; a file whose stat is the one it had when a check hashed it,
    long enough after its last change, costs that ``os.stat`` (see :data:`Checked`)."""
    root = os.getcwd()
    found = []
    for node, meta in producers:
        if meta is None or node.files is None:
            continue
        deps = meta.deps
        for product in node.files.outputs:
            key = product.key(root)
            recorded = deps.get(OUTPUT + key)
            if not recorded:
                continue
            known = checked.get(key)
            if known is None or known[0] != recorded:
                now = _check_output(key, recorded, product.is_dir, None, root, cache, checked)
            elif known[2] >= ended:
                now = known[1]
            else:
                now = _check_output(key, recorded, product.is_dir, known, root, cache, checked)
            if now != recorded:
                found.append((key + "/" if product.is_dir else key, node.task, now is None))
    return found


def changed_source_inputs(
    owners: list[tuple[Node, Meta | None]], cache: DigestCache,
    checked: dict[tuple[str, frozenset[str]], tuple[str | None, float]], ended: float,
) -> list[tuple[str, Task[object]]]:
    """The source inputs of ``owners`` (tasks with ``File`` inputs, each with its current
    entry) that no longer have the digest the entry records, as ``(key, owner)`` sorted,
    for a task downstream that ended at ``ended`` (by ``time.time()``). ``checked``: the
    digests found so far, with when each was taken (updated): one taken since ``ended``
    holds."""
    root = os.getcwd()
    found = []
    for node, meta in owners:
        if meta is None or node.files is None:
            continue
        files = node.files
        for item in files.inputs:
            key = item.key(root)
            recorded = meta.deps.get(INPUT + key)
            if not recorded:  # produced by a task of the plan (tracked through it), or
                continue      # edited while its task ran (its new stamp re-runs the reader)
            known = checked.get((key, files.exclude))
            if known is not None and known[1] >= ended:
                now = known[0]
            else:
                at = time.time()
                try:
                    now = digest_of(key, root, cache, pattern=item.is_glob, exclude=files.exclude)
                except Unreadable:
                    now = None
                checked[(key, files.exclude)] = (now, at)
            if now != recorded:
                found.append((key, node.task))
    found.sort(key=lambda item: item[0])
    return found


Checked = tuple[str, str | None, float, tuple[int, int, int, int] | None]
"""What a check of a declared output found: the digest its entry records, the digest of
the file then (``None``: gone; ``""``: unreadable), when (``time.time()``, before it
looked), and the file's stat signature when it was hashed with a stable stat long enough
after its last change (``None`` otherwise: a directory, or a file that could still change
without changing its stat)."""

_SETTLED_NS = 50_000_000
"""How long after its last change a file with fine timestamps (not whole milliseconds) is
trusted by its stat within a run: longer than a tick of the clock that dates changes on
the filesystems that keep such timestamps (Linux: 1-10 ms; coarse ones take
:data:`RACY_NS`)."""


def _check_output(key: str, recorded: str, is_dir: bool, known: Checked | None, root: str,
                  cache: DigestCache, checked: dict[str, Checked]) -> str | None:
    """The digest of the output ``key`` now, noted in ``checked``: by its stat when it is the
    one a check of this run found settled (``known``: that check, of the same recorded
    digest), else hashed (the digest cache's rules)."""
    at = time.time()
    st = None
    if not is_dir:
        with contextlib.suppress(OSError):
            st = os.stat(key)
        if st is not None and known is not None and known[3] is not None \
                and known[3] == _signature(st):
            checked[key] = (recorded, known[1], at, known[3])
            return known[1]
    started = _clock()
    try:
        now = digest_of(key, root, cache, hidden=True)
    except (Unreadable, InvalidRequirementError):  # (a named pipe now)
        now = ""
    settled = None
    if st is not None and now:
        fine = st.st_mtime_ns % 1_000_000 and st.st_ctime_ns % 1_000_000
        with contextlib.suppress(OSError):
            if (_signature(os.stat(key)) == _signature(st)
                    and _changed_ns(st) < started - (_SETTLED_NS if fine else RACY_NS)):
                settled = _signature(st)
    checked[key] = (recorded, now, at, settled)
    return now


def missing_inputs(with_files: Iterable[Node]) -> None:
    """Raise if a task of the plan lacks a source input file or cannot read one
    (``with_files``: the tasks with files, or only those that lack or cannot read one).

    Raises:
        UnreadableInputError: an input exists but cannot be read, naming each such task
            and path.
        MissingInputError: naming each such task and file.
    """
    from ._text import paths_relative, plural, task_label

    nodes = list(with_files)
    _unreadable_inputs(nodes)
    lines = [
        f"{path}, needed by {task_label(node.task)}"
        for node in nodes if node.files is not None for path in node.files.missing
    ]
    if not lines:
        return
    raise MissingInputError(
        f"{plural(len(lines), 'missing input file')}, so nothing was run:\n  "
        + _first_ten(lines) + "\n"
        f"{paths_relative()} Create the files or fix the paths given to File(); a file that another task writes must come from a task "
        "of this run: require that task.",
        paths=[line.split(", needed by ", 1)[0] for line in lines],
    )


def _first_ten(lines: list[str]) -> str:
    """The first ten lines of a list of problems (and how many more), one per line."""
    more = [f"... and {len(lines) - 10} more"] if len(lines) > 10 else []
    return "\n  ".join(lines[:10] + more)


def _unreadable_inputs(with_files: list[Node]) -> None:
    """Raise if a source input of a task of the plan exists but cannot be read.

    Raises:
        UnreadableInputError: naming each such task and path.
    """
    from ._text import paths_relative, plural, task_label

    found = [
        (problem.path, f"{problem.path} ({problem.reason}), "
         + ("" if problem.path == key else f"under File({key!r}), ")
         + f"needed by {task_label(node.task)}")
        for node in with_files if node.files is not None
        for key, problem in node.files.unreadable
    ]
    if not found:
        return
    lines = [line for _, line in found]
    raise UnreadableInputError(
        f"{plural(len(lines), 'unreadable input file')}, so nothing was run:\n  "
        + _first_ten(lines) + "\n"
        f"{paths_relative()} Their content cannot be tracked: make them readable (check the permissions: ls -l), or move them out of "
        "the directories given to File().",
        paths=[path for path, _ in found],
    )
