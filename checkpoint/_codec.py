"""The value codec: a task's value to its stored payload and back, and value files.

Used by the workers (which encode results and read large prerequisites straight from the
cache), the coordinator and the store. It never touches an index. A payload is
``cloudpickle.dumps(value)`` (plain ``pickle`` for builtin scalars: the same bytes),
zlib-compressed when the family has a ``compress_level``; see :mod:`._format` for where
it goes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from . import _relocate
from ._format import BLOB_NAME, INLINE_MAX, Checksum, Meta, checksum, matches, new_blob_name
from ._stamps import checksum_stamp
from ._storefiles import open_stored, why
from ._valuefile import (
    MAGIC,
    Damaged,
    Overlapped,
    decode_in_memory,
    has_buffers,
    read_checked,
    write_buffers,
)
from .errors import CorruptEntryError

if TYPE_CHECKING:
    import mmap

_PLAIN = frozenset({int, float, str, bytes, bool, type(None), complex})


def encode_value(value: object, compress_level: int, root: str = "") -> bytes:
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
    """Inverse of :func:`encode_value` (and of :func:`stream_value`, for a payload held in
    memory: a value file read whole); stored paths under a store root come back under
    ``root`` (default: the store root of the default cache directory)."""
    if compressed:
        payload = zlib.decompress(payload)
    if _relocate.is_portable(payload):
        return _relocate.loads(payload, root or default_root())
    if not compressed and has_buffers(payload[-len(MAGIC):]):
        return decode_in_memory(memoryview(payload))
    return pickle.loads(payload)


def default_root() -> str:
    """The store root of the default cache directory (``$CP_CACHE_DIR`` or ``./.cache``)."""
    return str(Path(os.environ.get("CP_CACHE_DIR") or ".cache").absolute() / "checkpoint")


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
        if len(payload) != self.size or not matches(payload, self.crc):
            raise self._corrupt()
        return payload

    def load(self) -> Any:
        """The verified, decoded value, read at disk speed without a second copy in memory
        (the buffers of a NumPy array are memory-mapped: see :mod:`._valuefile`).

        Raises:
            CorruptEntryError: the file is missing, not a regular file, truncated or fails
                its checksum.
            Exception: what unpickling the (intact) value raised.
        """
        try:
            with os.fdopen(open_stored(self.path), "rb", buffering=0) as f:
                # the file is {store root}/{family}/blobs/{name}
                root = os.path.dirname(os.path.dirname(os.path.dirname(self.path)))
                return read_checked(f, self.size, self.crc, self.compressed, root)
        except Damaged:
            raise self._corrupt() from None
        except OSError as exc:
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: OSError) -> CorruptEntryError:
        text = why(exc)
        return CorruptEntryError(f"The stored value file {self.path} cannot be read: {text}.",
                                 reason=f"its value file cannot be read: {text}")

    def _corrupt(self) -> CorruptEntryError:
        return CorruptEntryError(
            f"The stored value file {self.path} is corrupt (size or checksum mismatch).",
            reason="its value file failed the size or checksum test",
        )


def verified_payload(meta: Meta | None, blob: BlobRef | None, name: str) -> bytes:
    """An entry's payload, checked: read from its value file ``blob``, or kept inline.
    ``name`` names the entry in messages, e.g. ``choose(6, 3) (tasks.choose)``.

    Raises:
        CorruptEntryError: the entry is absent, truncated or fails its checksum.
    """
    if blob is not None:
        try:
            return blob.read()
        except CorruptEntryError as exc:
            raise CorruptEntryError(
                f"The stored result of {name} is missing or corrupt ({exc.reason}); it will be "
                "recomputed.", reason=exc.reason,
            ) from None
    payload = None if meta is None else meta.inline
    if meta is None or not isinstance(payload, bytes):
        raise CorruptEntryError(f"The stored result of {name} is missing its value; it will be "
                                "recomputed.")
    if not meta.checks(payload):
        raise CorruptEntryError(f"The stored result of {name} is corrupt (size or checksum "
                                "mismatch); it will be recomputed.")
    return payload


def decoded(held: Payload, name: str, root: str = "") -> Any:
    """A stored value, checked and decoded.

    Raises:
        CorruptEntryError: it fails its check, or cannot be decoded (say, a class it names
            is gone).
    """
    try:
        return load(held, root)
    except CorruptEntryError as exc:
        raise CorruptEntryError(
            f"The stored result of {name} is missing or corrupt ({exc.reason}); it will be "
            "recomputed.", reason=exc.reason,
        ) from None
    except Exception as exc:
        raise CorruptEntryError(f"The stored result of {name} cannot be decoded: {exc}") from exc


Payload = Union[tuple[bytes, bool], BlobRef]
"""A stored value as handed around: ``(payload, compressed)`` in memory, or a value file."""


def load(held: Payload, root: str = "") -> Any:
    """The value of a payload held in memory or in a value file (checked when read); paths
    under a store root come back under ``root`` (a value file's: the store it is in).

    Raises:
        CorruptEntryError: a value file that is missing or fails its check.
    """
    if isinstance(held, BlobRef):
        return held.load()
    return decode_payload(held[0], held[1], root)


def in_memory(held: Payload) -> tuple[bytes, bool]:
    """A payload held in memory (a value file is read and checked), to send elsewhere.

    Raises:
        CorruptEntryError: a value file that is missing or fails its check.
    """
    return (held.read(), held.compressed) if isinstance(held, BlobRef) else held


_PIECE = 1 << 20


@dataclass(frozen=True)
class Encoded:
    """A task's value as it will be stored."""

    payload: bytes | None
    """The payload, unless it went to the value file ``blob``."""
    crc: int
    size: int
    blob: str = ""
    stamp: str = ""
    """The stamp of the value file's bytes (:func:`checkpoint._stamps.checksum_stamp` of
    ``crc``), taken as it was written; ``""`` for a payload held in memory."""


class _SpillingWriter:
    """A pickler's file: keeps up to ``INLINE_MAX`` bytes in memory, then moves to a new
    value file and writes the rest straight through, with a running size and checksum (which
    also gives the value's stamp): the file is never read back to hash it."""

    def __init__(self, directory: str | os.PathLike[str], task_id: str) -> None:
        self.directory = directory
        self.task_id = task_id
        self.parts: list[bytes] = []
        self.hasher = Overlapped(Checksum())
        self.size = 0
        self.name = ""
        self.file: IO[bytes] | None = None

    def update(self, data: bytes | memoryview) -> None:
        """Count bytes written to the file in its checksum."""
        self.hasher.update(data)

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.size += n
        if self.file is None and self.size <= INLINE_MAX:
            self.hasher.update(view)
            self.parts.append(bytes(view))
            return n
        file = self.spill()
        for start in range(0, n, _PIECE):  # each piece hashed while in the CPU's cache,
            piece = view[start:start + _PIECE]  # and written in steady 1 MB writes
            self.update(piece)
            file.write(piece)
        return n

    def spill(self) -> IO[bytes]:
        """Move to a new value file (if not there yet); return it."""
        if self.file is None:
            os.makedirs(self.directory, exist_ok=True)
            self.name = new_blob_name(self.task_id)
            self.file = open(os.path.join(self.directory, self.name), "wb")
            self.file.writelines(self.parts)
            self.parts = []
        return self.file


def stream_value(value: object, directory: str | os.PathLike[str], task_id: str) -> Encoded:
    """Pickle a value (uncompressed) without building its payload in memory if it is large.

    Large buffers go from the value straight into a new value file in ``directory``: a
    ``bytes`` inside the pickle, a NumPy array's memory after it, page-aligned, so that a
    reader can map it (out-of-band buffers, pickle protocol 5; see :mod:`._valuefile`).
    No copy of the payload is made, and the file is checksummed (which gives its
    :attr:`Encoded.stamp`) as it is written.

    Returns:
        The payload when it came out small after all (no stamp: the coordinator takes it),
        else the value file's name, checksum, size and stamp.

    Raises:
        Whatever pickling or writing raised; a partial file is removed first.
    """
    writer = _SpillingWriter(directory, task_id)
    buffers: list[pickle.PickleBuffer] = []
    try:
        if type(value) in _PLAIN:
            pickle.dump(value, writer, protocol=5)
        else:
            import cloudpickle

            cloudpickle.dump(value, writer, protocol=5, buffer_callback=buffers.append)
        if buffers:
            file = writer.spill()
            writer.size = write_buffers(file, writer.size, buffers, writer, writer.size)
        if writer.file is not None:
            writer.file.close()
    except BaseException:
        writer.hasher.close()  # (what it still hashes is the value's, alive until then)
        if writer.file is not None:  # a partial file would fill a full disk for good
            with contextlib.suppress(OSError):
                writer.file.close()
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, writer.name))
        raise
    crc = writer.hasher.value()
    if writer.file is None:
        return Encoded(b"".join(writer.parts), crc, writer.size)
    return Encoded(None, crc, writer.size, writer.name, checksum_stamp(crc, False))


def write_blob(directory: str | os.PathLike[str], task_id: str, payload: bytes) -> str:
    """Write a payload to a new, uniquely named file in ``directory``; return its name."""
    os.makedirs(directory, exist_ok=True)
    name = new_blob_name(task_id)
    path = os.path.join(directory, name)
    try:
        with open(path, "wb") as f:
            f.write(payload)
    except BaseException:
        with contextlib.suppress(OSError):  # a partial file would fill a full disk for good
            os.unlink(path)
        raise
    return name


def remove_blob(directory: Path, name: str) -> None:
    """Delete a value file, if its name is one the store gives and ``directory`` is not a
    symbolic link (a crafted index row must not lead to deleting anything else)."""
    if not BLOB_NAME.fullmatch(name):
        return
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(directory).st_mode):
            os.unlink(directory / name)


def encode_result(value: object, compress_level: int, blob_dir: str, task_id: str,
                  root: str = "") -> Encoded:
    """Encode a task's value where it was computed. A large payload goes straight to a new
    value file in ``blob_dir`` (when given: the family's ``blobs/``), stamped here, so it
    never travels through the coordinator nor is read back; a large buffer is streamed there without a copy in memory. A
    worker that cannot write there (``OSError``) returns the payload instead. With ``root``
    (the store root), paths under it are stored relative to it (:mod:`._relocate`); a
    value that may hold one is encoded in memory, where that is seen.

    Raises:
        Whatever pickling raised (the value cannot be stored).
    """
    if blob_dir and not compress_level and _looks_large(value) and not (
            root and _relocate.may_hold_path(value, root)):
        with contextlib.suppress(OSError):
            return stream_value(value, blob_dir, task_id)
    payload = encode_value(value, compress_level, root)
    crc, size = checksum(payload), len(payload)
    if blob_dir and size > INLINE_MAX:
        with contextlib.suppress(OSError):
            name = write_blob(blob_dir, task_id, payload)
            return Encoded(None, crc, size, name, checksum_stamp(crc, compress_level != 0))
    return Encoded(payload, crc, size)


def _looks_large(value: object) -> bool:
    """Whether a value is a buffer (bytes, str, a NumPy array, ...) whose payload would
    exceed ``INLINE_MAX``: cheap to tell, and where streaming it to its file pays."""
    if isinstance(value, (bytes, bytearray, str, memoryview)):
        return len(value) > INLINE_MAX
    if getattr(type(value), "nbytes", None) is None:
        return False
    try:
        return int(value.nbytes) > INLINE_MAX  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an odd nbytes attribute: encode as usual
        return False
