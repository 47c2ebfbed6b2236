"""The stamp of a stored value: a digest of its payload's bytes.

A value's stamp names it, so a recomputation that gives the same bytes (after a clear, a
damaged value file, a code change that changes nothing, a forced run) has the same stamp,
and what was computed from it stays current (early cutoff); two runs on one cache, or two
machines sharing a remote, then agree on which entries are current. One function for every
path a payload takes (kept in memory, written to its file by the worker or by the
coordinator), since which one it takes depends on where the task ran: a worker that writes a
value file digests it as it writes it (:func:`new_digest`), never reading it back. A task with a data
directory gets a unique stamp instead (its value does not show what the directory holds):
:func:`checkpoint.store.new_stamp`.
"""

from __future__ import annotations

import hashlib


def new_digest(compressed: bool) -> hashlib.blake2b:
    """A running digest of a payload's bytes; :func:`stamp_of` it once all have gone by.
    (How a value file's writer stamps it in the pass that writes it.)"""
    return hashlib.blake2b(digest_size=16, person=b"cp-zlib" if compressed else b"cp")


def stamp_of(digest: hashlib.blake2b) -> str:
    """The stamp of the bytes a :func:`new_digest` has seen."""
    return "v" + digest.hexdigest()


def value_stamp(payload: bytes, compressed: bool) -> str:
    """The stamp of a payload held in memory."""
    digest = new_digest(compressed)
    digest.update(payload)
    return stamp_of(digest)


def in_context(stamp: str, context: str) -> str:
    """A value's stamp that also names its :class:`checkpoint._values.StampContext` (the
    code upstream, the stamps of file-owning prerequisites): the same bytes from other code
    are another stamp, so early cutoff never keeps what new code would compute otherwise."""
    if not context:
        return stamp
    return "v" + hashlib.blake2b(f"{stamp}\0{context}".encode(), digest_size=16,
                                 person=b"cp-context").hexdigest()
