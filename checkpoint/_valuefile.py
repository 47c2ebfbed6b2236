"""Large values in their own files, read and written at disk speed, checked on every read.

A value file holds one of two layouts:

- a **pickle** (what :func:`~checkpoint._codec.encode_value` gives, maybe zlib-compressed).
  It is read by unpickling straight from the file through a reader that checks size and
  checksum as the bytes go by (:func:`read_checked`): a 256 MB ``bytes`` costs one 256 MB
  allocation, not a copy of a copy. A damaged file fails the check after unpickling, and
  the value is dropped before anyone sees it.
- a **pickle with out-of-band buffers** (pickle protocol 5; NumPy arrays and whatever else
  hands its memory to the pickler as a ``PickleBuffer``): the pickle, then each buffer at a
  page boundary, then a trailer that says where they are and ends with :data:`MAGIC`. Its
  checksum is checked first, reading the file in 1 MB pieces, then the buffers are
  memory-mapped copy-on-write: a task that reads a slice of a 1 GB array brings only that
  slice's pages into memory, and the array is writable as before (writes stay private).

A pickle ends with its STOP opcode ``.``; :data:`MAGIC` ends with another byte, so the last
byte tells the layouts apart. Both carry their size and checksum in the entry's
:class:`~checkpoint._format.Meta`, over the whole file.
"""

from __future__ import annotations

import io
import mmap
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Sequence
from queue import SimpleQueue
from typing import IO, Any, Protocol

from . import _relocate
from ._format import Checksum, matches

MAGIC = b"\x00cp-oob1"
"""The last bytes of a value file with out-of-band buffers (never ``.``-terminated)."""
_PAGE = mmap.ALLOCATIONGRANULARITY
_ENTRY = struct.Struct("<QQ")
_TAIL = struct.Struct("<QI8s")  # pickle length, number of buffers, MAGIC
_CHUNK = 1 << 20


class Damaged(Exception):
    """The file does not have its recorded size or checksum."""


OVERLAP_FROM = 4 * _CHUNK
"""The bytes a value's checksum takes in this thread before :class:`Overlapped` moves to a
second one."""


class Overlapped:
    """A running checksum (:class:`~checkpoint._format.Checksum`) whose pieces, once
    :data:`OVERLAP_FROM` bytes have gone by, are hashed in order on a second thread while
    the caller reads or writes the next ones: xxhash and zlib release the GIL, so with a
    core free, checking a large value costs little more than copying it. Small values never
    start the thread.

    A piece must stay as it is, and in memory, until it is hashed: :meth:`drain` (which a
    reader calls before giving back the buffer it read into: the unpickler may free it) or
    :meth:`value` waits for that.
    """

    __slots__ = ("running", "_seen", "_pieces", "_thread", "_error")

    def __init__(self, running: Checksum) -> None:
        self.running = running
        self._seen = 0
        self._pieces: SimpleQueue[bytes | memoryview | threading.Event | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def update(self, data: bytes | memoryview) -> None:
        if self._pieces is None:
            self._seen += data.nbytes if isinstance(data, memoryview) else len(data)
            if self._seen < OVERLAP_FROM:
                self.running.update(data)
                return
            self._pieces = SimpleQueue()
            self._thread = threading.Thread(target=self._hash, args=(self._pieces,),
                                            name="checkpoint-checksum", daemon=True)
            self._thread.start()
        self._pieces.put(data)

    def _hash(self, pieces: SimpleQueue[bytes | memoryview | threading.Event | None]) -> None:
        while (piece := pieces.get()) is not None:
            if isinstance(piece, threading.Event):
                piece.set()
            elif self._error is None:
                try:
                    self.running.update(piece)
                except BaseException as exc:  # noqa: BLE001 - raised by value()
                    self._error = exc
            del piece  # (not held while waiting for the next)

    def drain(self) -> None:
        """Wait until every piece given so far is hashed."""
        if self._thread is not None:
            assert self._pieces is not None
            done = threading.Event()
            self._pieces.put(done)
            done.wait()

    def value(self) -> int:
        """The checksum of every piece (waits for the second thread to hash what is left)."""
        self.close()
        if self._error is not None:
            raise self._error
        return self.running.value()

    def close(self) -> None:
        """Wait for the pieces given so far to be hashed, and end the second thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            assert self._pieces is not None
            self._pieces.put(None)
            thread.join()


class Sink(Protocol):
    """Where a value file's bytes go as they are written (its checksum)."""

    def update(self, data: bytes | memoryview) -> None: ...


def write_buffers(file: IO[bytes], offset: int, buffers: Sequence[pickle.PickleBuffer],
                  hasher: Sink, pickle_length: int) -> int:
    """Append out-of-band buffers and the trailer to a value file whose pickle
    (``pickle_length`` bytes) was written already, ``offset`` bytes into it; return the
    file's size. ``hasher`` runs over all that is written, 1 MB at a time (each piece is
    hashed and written while it is in the CPU's cache)."""
    table = []

    def put(data: bytes | memoryview) -> None:
        nonlocal offset
        view = memoryview(data).cast("B")
        for start in range(0, view.nbytes, _CHUNK):
            piece = view[start:start + _CHUNK]
            hasher.update(piece)
            file.write(piece)
        offset += view.nbytes

    for buffer in buffers:
        raw = buffer.raw()
        put(bytes(-offset % _PAGE))
        table.append(_ENTRY.pack(offset, raw.nbytes))
        put(raw)
    put(b"".join(table) + _TAIL.pack(pickle_length, len(buffers), MAGIC))
    return offset


def has_buffers(tail: bytes) -> bool:
    """Whether a payload whose last bytes are ``tail`` has out-of-band buffers."""
    return tail.endswith(MAGIC)


def split(payload: bytes | memoryview) -> tuple[memoryview, list[memoryview]]:
    """The pickle and the out-of-band buffers of a payload held in memory (views of it).

    Raises:
        ValueError: the trailer is malformed.
    """
    view = memoryview(payload)
    size = view.nbytes
    if size < _TAIL.size:
        raise ValueError("truncated value file")
    length, count, _ = _TAIL.unpack_from(view, size - _TAIL.size)
    start = size - _TAIL.size - count * _ENTRY.size
    if start < length:
        raise ValueError("malformed value file trailer")
    buffers = []
    for i in range(count):
        offset, n = _ENTRY.unpack_from(view, start + i * _ENTRY.size)
        if offset < length or offset + n > start:
            raise ValueError("malformed value file trailer")
        buffers.append(view[offset:offset + n])
    return view[:length], buffers


def decode_in_memory(payload: bytes | memoryview) -> Any:
    """The value of a payload with out-of-band buffers held in memory (the buffers are
    copied into writable memory, as a value read from its file would be)."""
    head, buffers = split(payload)
    return pickle.loads(head, buffers=[bytearray(b) for b in buffers])


class _CheckingReader:
    """A file for the unpickler that counts and checksums what it reads (with the algorithm
    of the expected checksum ``crc``), never past the expected size (a damaged length
    field must not make it allocate gigabytes)."""

    def __init__(self, file: io.FileIO, size: int, crc: int) -> None:
        self.file = file
        self.left = size
        self.hasher = Overlapped(Checksum.like(crc))

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.file.read(n) or b""
        while len(data) < n:  # (a regular file returns less only at its end)
            more = self.file.read(n - len(data))
            if not more:
                break
            data += more
        self.left -= len(data)
        self.hasher.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")[:self.left]
        done = 0
        try:
            while done < len(view):  # in 1 MB pieces, checksummed as the next is read
                n = self.file.readinto(view[done:done + _CHUNK]) or 0
                if not n:
                    break
                self.hasher.update(view[done:done + n])
                done += n
        finally:
            self.hasher.drain()  # the unpickler may free the buffer once this returns
        self.left -= done
        return done

    def readline(self) -> bytes:
        data = self.file.readline(self.left)
        self.left -= len(data)
        self.hasher.update(data)
        return data

    def finish(self) -> int:
        """Read what the unpickler left; return the checksum of the whole file."""
        while self.left > 0 and self.read(_CHUNK):
            pass
        return self.hasher.value()


def read_checked(file: io.FileIO, size: int, crc: int, compressed: bool, root: str) -> Any:
    """The value in a value file of ``size`` bytes whose checksum is ``crc``; paths under a
    store root inside it come back under ``root`` (:mod:`._relocate`).

    Raises:
        Damaged: the file fails its size or checksum test.
        Exception: the file passes it, but its value cannot be unpickled.
    """
    fd = file.fileno()
    if os.fstat(fd).st_size != size or not size:
        raise Damaged
    tail = os.pread(fd, len(MAGIC), size - len(MAGIC)) if size >= len(MAGIC) else b""
    if compressed or _relocate.is_portable(os.pread(fd, len(_relocate.PREFIX), 0)):
        data = file.read()
        if len(data) != size or not matches(data, crc):
            raise Damaged
        if compressed:
            data = zlib.decompress(data)
        return _relocate.loads(data, root) if _relocate.is_portable(data) else pickle.loads(data)
    if has_buffers(tail):
        return _read_mapped(fd, size, crc)
    reader = _CheckingReader(file, size, crc)
    try:
        try:
            value = pickle.load(reader)
        except Exception:
            if reader.finish() != crc or reader.left:
                raise Damaged from None
            raise
        if reader.finish() != crc or reader.left:
            raise Damaged
    finally:
        reader.hasher.close()
    return value


def _read_mapped(fd: int, size: int, crc: int) -> Any:
    """A value with out-of-band buffers: checked in pieces, then its buffers mapped."""
    hasher = Checksum.like(crc)
    piece = bytearray(_CHUNK)
    view = memoryview(piece)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise Damaged
        hasher.update(view[:n])
        offset += n
    if offset != size or hasher.value() != crc:
        raise Damaged
    mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    try:
        head, buffers = split(memoryview(mapped))
        return pickle.loads(bytes(head), buffers=buffers)
    except ValueError:
        raise Damaged from None
