"""The stamp of a stored value: a digest of its payload's bytes.

A value's stamp names it, so a recomputation that gives the same bytes (after a clear, a
damaged value file, a code change that changes nothing, a forced run) has the same stamp,
and what was computed from it stays current (early cutoff); two runs on one cache, or two
machines sharing a remote, then agree on which entries are current. One function for every
path a payload takes (kept in memory, written to its file by the worker or by the
coordinator), since which one it takes depends on where the task ran. A task with a data
directory gets a unique stamp instead (its value does not show what the directory holds):
:func:`checkpoint.store.new_stamp`.
"""

from __future__ import annotations

import hashlib
import mmap
import os


def _hasher(compressed: bool) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16, person=b"cp-zlib" if compressed else b"cp")


def value_stamp(payload: bytes, compressed: bool) -> str:
    """The stamp of a payload held in memory."""
    digest = _hasher(compressed)
    digest.update(payload)
    return "v" + digest.hexdigest()


def file_stamp(path: str | os.PathLike[str], compressed: bool) -> str:
    """The stamp of a payload written to a value file (the same as :func:`value_stamp`'s
    of those bytes)."""
    digest = _hasher(compressed)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digest.update(view)
    return "v" + digest.hexdigest()


def in_context(stamp: str, context: str) -> str:
    """A value's stamp that also names its :class:`checkpoint._values.StampContext` (the
    code upstream, the stamps of file-owning prerequisites): the same bytes from other code
    are another stamp, so early cutoff never keeps what new code would compute otherwise."""
    if not context:
        return stamp
    return "v" + hashlib.blake2b(f"{stamp}\0{context}".encode(), digest_size=16,
                                 person=b"cp-context").hexdigest()
