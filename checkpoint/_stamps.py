"""The stamp of a stored value: the xxh3-128 digest of its payload's bytes.

A value's stamp names it, so a recomputation that gives the same bytes (after a clear, a
damaged value file, a code change that changes nothing, a forced run) has the same stamp,
and what was computed from it stays current (early cutoff); two runs on one cache, or two
machines sharing a remote, then agree on which entries are current. One function for every
path a payload takes (kept in memory, written to its file by the worker or by the
coordinator), since which one it takes depends on where the task ran. The digest is the
payload's checksum (:func:`checkpoint._format.checksum`), so the pass that checksums a
value file as it is written stamps it too, and the file is never read back
(:func:`checksum_stamp`). xxh3 is not a cryptographic hash: two values that differ by
accident never share a stamp (a 2**-128 chance), but values crafted to collide could. A
task with a data directory gets a unique stamp instead (its value does not show what the
directory holds): :func:`checkpoint.store.new_stamp`.
"""

from __future__ import annotations

import hashlib

from ._format import XXH3, checksum

_DIGEST = XXH3 - 1


def checksum_stamp(check: int, compressed: bool) -> str:
    """The stamp of a payload whose :func:`~checkpoint._format.checksum` is ``check``: the
    checksum pass names the value too (one pass over the bytes, written or read, for both).

    ``vx`` or ``vz`` (zlib-compressed) and the 128 bits of its xxh3-128 digest: never equal
    to a stamp of the older kind (``v`` and 32 hex digits of a BLAKE2b digest) nor to a
    unique one (hex digits only), so a value re-stamped after an upgrade is at worst new
    to its dependents (they run once more), never taken for another value.

    Raises:
        ValueError: ``check`` is not an xxh3 checksum (an older entry's CRC-32).
    """
    if check < XXH3:
        raise ValueError("a stamp is made from an xxh3 checksum only")
    return f"{'vz' if compressed else 'vx'}{check & _DIGEST:032x}"


def value_stamp(payload: bytes, compressed: bool, check: int = 0) -> str:
    """The stamp of a payload held in memory; taken from its checksum ``check`` when that
    is an xxh3 one (a worker's, which saw the payload), else hashed here."""
    return checksum_stamp(check if check >= XXH3 else checksum(payload), compressed)


def in_context(stamp: str, context: str) -> str:
    """A value's stamp that also names its :class:`checkpoint._values.StampContext` (the
    code upstream, the stamps of file-owning prerequisites): the same bytes from other code
    are another stamp, so early cutoff never keeps what new code would compute otherwise."""
    if not context:
        return stamp
    return "v" + hashlib.blake2b(f"{stamp}\0{context}".encode(), digest_size=16,
                                 person=b"cp-context").hexdigest()
