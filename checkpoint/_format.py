"""The stored format: what an entry, a value file and a failed-run record look like.

The one home of this knowledge; the store, the workers, the scheduler, the Dask adapter,
the remote cache and ``touch`` all ask this module rather than knowing it themselves.

Per task id, a family's index holds ``e:{id}``: the entry's metadata (:class:`Meta`) as a
length-prefixed ``marshal``-ed tuple, followed by the payload when it is at most
:data:`INLINE_MAX` bytes. A larger payload is a file of its own under the family's
``blobs/`` (:func:`new_blob_name`: unique per computation), which the metadata names.
``log:{id}`` holds a task's captured output, ``run:{id}`` its last failed run
(:class:`FailedRun`, JSON), ``fp:{digest}`` the normalized source behind a fingerprint,
``dm:{id}`` what the entry's data directory held when it was stored (for ``cache verify``;
optional: an entry without one is not checked, so adding it kept :data:`FORMAT`),
and ``pv:{token}.{digest}`` the versions of the installed packages the code of the entries a
process stored used (:mod:`checkpoint._packages`; optional too: an entry no row covers
reports none).
Every payload carries its size and checksum (:func:`checksum`), checked when it is read.
The checksum is xxh3-128; an entry written before that (``Meta.crc`` below 2**32) carries a
CRC-32 and is checked with it: each checksum names its algorithm, so adding xxh3 kept
:data:`FORMAT`.

Bump :data:`FORMAT` when any of this changes, or when older versions could no longer
decode what is stored (new references in a value, see :mod:`checkpoint._relocate`); if
this version still reads the older format as it is, add that to :data:`READS_AS_IS`.
"""

from __future__ import annotations

import itertools
import json
import marshal
import os
import re
import secrets
import struct
import zlib
from dataclasses import asdict, dataclass, field, replace
from mmap import mmap
from pathlib import Path
from typing import Final, Literal, Union

import xxhash

from ._types import FamilyDir

FORMAT: Final = "checkpoint-store 3"
"""The store format version, written to ``{cache}/checkpoint/FORMAT``. Format 3: a stored
value may hold references that versions of format 2 cannot decode
(:mod:`checkpoint._relocate`'s: paths under the store root or the project kept byte for
byte, paths relative to the project, sets written sorted)."""
READS_AS_IS: Final = frozenset({"checkpoint-store 2"})
"""Older formats whose caches this version reads as they are (each is a subset of
:data:`FORMAT`): opening one marks it :data:`FORMAT`, since this version may store values
there that the older versions could not decode; they then refuse the cache as a whole, with
what to do, instead of failing on such a value."""
FORMAT_FILE: Final = "FORMAT"
INLINE_MAX: Final = 16 * 1024
"""Payloads up to this size are stored in the index row; larger ones in a value file."""
BLOB_DIR: Final = "blobs"
DATA_DIR: Final = "data"
INDEX_FILE: Final = "cache.db"

ENTRY: Final = "e:"
LOG: Final = "log:"
FAILED_RUN: Final = "run:"
SOURCE: Final = "fp:"
DATA_MANIFEST: Final = "dm:"
"""``dm:{id}``: JSON ``{relative path: [size, mtime_ns]}`` of the entry's data directory."""
PACKAGES: Final = "pv:"
"""``pv:{token}.{digest}``: JSON ``{"versions": {package: version}, "workers": [...],
"first": time, "last": time}`` (see :class:`checkpoint._packages.Span`)."""

# Names the store derives from stored data are checked against these before any file is
# read or deleted: a crafted index row must not lead outside the cache.
TASK_ID: Final = re.compile(r"[0-9a-f]{32}")
BLOB_NAME: Final = re.compile(r"[0-9a-f]{32}\.[0-9a-f]{12}\.bin")


Buffer = Union[bytes, bytearray, memoryview, mmap]
"""What a payload can be read from."""


XXH3: Final = 1 << 128
"""Set in every xxh3-128 checksum (above the 128 bits of the digest): a checksum below
``2**32`` is a CRC-32, what entries written before xxh3 carry; anything else is xxh3."""
_CRC_END: Final = 1 << 32


def checksum(data: Buffer) -> int:
    """The checksum of a payload as it is stored now: ``XXH3 | xxh3_128(data)``."""
    return XXH3 | xxhash.xxh3_128_intdigest(data)


def _is_crc(expected: object) -> bool:
    """Whether a stored checksum is an older entry's CRC-32 (anything else is checked as
    xxh3, which a malformed value then fails)."""
    return type(expected) is int and 0 <= expected < _CRC_END


def matches(data: Buffer, expected: int) -> bool:
    """Whether a payload has the stored checksum ``expected`` (of either algorithm)."""
    if _is_crc(expected):
        return zlib.crc32(data) == expected
    return checksum(data) == expected


class Checksum:
    """A payload's checksum, computed as its pieces go by: xxh3-128 (:func:`checksum`), or
    the CRC-32 of an older entry when made by :meth:`like` its stored checksum."""

    __slots__ = ("_xxh3", "_crc")

    def __init__(self) -> None:
        self._xxh3: xxhash.xxh3_128 | None = xxhash.xxh3_128()
        self._crc = 0

    @classmethod
    def like(cls, expected: int) -> Checksum:
        """A running checksum of the algorithm that computed the stored ``expected``."""
        running = cls()
        if _is_crc(expected):
            running._xxh3 = None
        return running

    def update(self, data: Buffer) -> None:
        if self._xxh3 is not None:
            self._xxh3.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def value(self) -> int:
        return self._crc if self._xxh3 is None else XXH3 | self._xxh3.intdigest()


def new_blob_name(task_id: str) -> str:
    """A new value file's name: unique, so a re-run never overwrites a file being read."""
    return f"{task_id}.{secrets.token_hex(6)}.bin"


def store_root_of(blob_dir: str) -> str:
    """The store root (``{cache}/checkpoint``) that holds a family's value directory."""
    return os.path.dirname(os.path.dirname(blob_dir))


def is_store_root(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like a store root from here (a worker host may not see it)."""
    return os.path.isfile(os.path.join(path, FORMAT_FILE))


def blob_dir(root: Path, family: str) -> Path:
    """The directory of a family's value files."""
    return root / family / BLOB_DIR


_META_FIELDS = (
    "expr", "args", "fingerprint", "stamp", "deps", "size", "crc", "compressed", "started",
    "duration", "stored", "blob", "worker", "log",
)
_HEAD = struct.Struct("<I")
_new_meta = object.__new__


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
    """``{prerequisite id: its stamp}`` at the time this result was computed; also the
    digests of its ``File`` inputs (``file:{path}``) and ``Product`` outputs (``out:{path}``),
    and where its prerequisites were in its requirements (``arrangement``, see
    :func:`checkpoint.graph.arrangement`)."""
    size: int = 0
    crc: int = 0
    """The payload's :func:`checksum` (xxh3-128; a CRC-32 in entries written before it:
    :func:`matches` checks either)."""
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

    def to_dict(self) -> dict[str, object]:
        """The stored fields as a JSON-friendly dict (for display and ``--json``)."""
        return {name: getattr(self, name) for name in _META_FIELDS}

    def touched(self, fingerprint: str, deps: dict[str, str] | None = None) -> Meta:
        """This entry accepted as computed by the current code (``checkpoint touch``): the
        same value and stamp, a new code fingerprint and, when given, new prerequisite
        stamps."""
        return replace(self, fingerprint=fingerprint, deps=self.deps if deps is None else deps)

    def checks(self, payload: Buffer) -> bool:
        """Whether a payload has this entry's size and checksum."""
        return len(payload) == self.size and matches(payload, self.crc)

    @classmethod
    def from_entry(cls, entry: bytes) -> Meta:
        """Parse an ``e:{id}`` value: the length of the header, the header, the payload if any.

        The header is a ``marshal``-ed tuple of the fields in a fixed order: a warm run reads
        one per task of its DAG, and this decodes ~8x faster than a JSON object.

        Raises:
            ValueError: the value is not a well-formed entry.
        """
        try:
            length = _HEAD.unpack_from(entry)[0]
            fields = marshal.loads(entry[4:4 + length])
        except (struct.error, EOFError, TypeError) as exc:
            raise ValueError(f"malformed entry: {exc}") from None
        if type(fields) is not tuple or len(fields) != 14:  # (len(_META_FIELDS))
            raise ValueError("malformed entry: unexpected header")
        meta = _new_meta(cls)  # cls(*fields), without the call of __init__ (one per task)
        (meta.expr, meta.args, meta.fingerprint, meta.stamp, meta.deps, meta.size, meta.crc,
         meta.compressed, meta.started, meta.duration, meta.stored, meta.blob, meta.worker,
         meta.log) = fields
        blob = meta.blob
        if not blob:
            meta.inline = entry[4 + length:]
            return meta
        if type(blob) is not str or not BLOB_NAME.fullmatch(blob):
            raise ValueError("malformed entry: bad value file name")  # never a path elsewhere
        meta.inline = None
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


@dataclass
class Record:
    """A finished result on its way into the store."""

    family: FamilyDir
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
    data: str = ""
    """JSON manifest of the task's data directory (``""``: it has none)."""
    packages: str = ""
    """The versions of the installed packages its code used, as JSON (``""``: none)."""

    @property
    def needs_blob(self) -> bool:
        """Whether the store must write the payload to a value file (nobody did yet)."""
        return self.payload is not None and len(self.payload) > INLINE_MAX and not self.meta.blob


@dataclass
class FailedRun:
    """The record of a task's last failed run (``run:{id}``)."""

    expr: str
    started: float
    duration: float
    worker: str
    output: str = ""
    traceback: str = ""
    status: Literal["failed"] = "failed"
    """What the record is of (its one word; kept in the stored JSON, which history reads as
    :attr:`checkpoint.history.LastRunStatus.FAILED`)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FailedRun | None:
        """The record ``to_json`` wrote (``None`` when the text is not one)."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


_STAMP_PREFIX: list[str | int] = [secrets.token_hex(6), os.getpid()]
_stamp_counter = itertools.count()


def new_stamp() -> str:
    """Return a fresh, unique computation stamp (a random per-process prefix and a counter)."""
    if _STAMP_PREFIX[1] != os.getpid():  # a forked child must not repeat its parent's stamps
        _STAMP_PREFIX[:] = [secrets.token_hex(6), os.getpid()]
    return f"{_STAMP_PREFIX[0]}{next(_stamp_counter):x}"
