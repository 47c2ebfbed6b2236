"""Entries of a remote cache: their keys, their manifests, and the signatures on them.

Layout under the remote's URL::

    entries/{family}/{task id}/{key}.json   one manifest per entry (signed JSON)
    packs/{family}/{time}-{token}.pack      the manifests one push uploaded, one per line
    objects/{sha[:2]}/{sha256}              values and data-directory files, by content

**Keys.** An entry's key is a digest of what it was computed from: the family's code
fingerprint and ``Meta.deps`` (each prerequisite's stamp, each input file's digest). The
task id is in the path. Nothing machine-specific takes part (no absolute path, no host),
so two machines that agree on the code and on the values of the prerequisites look up the
same key, and several versions of a task's result (two branches, two code versions) live
side by side.

**Manifests** are small JSON documents: the entry's metadata, the SHA-256 of its value
(the value itself, base64-encoded, when it is at most ``INLINE_MAX`` bytes: one request
per small entry) and of each file of its data directory, and the empty folders of that
directory (``dirs``: a manifest without it, from an older writer, recreates only the
folders that hold files). Objects are named by their
SHA-256, so every download is checked against the name the manifest gives.

**Packs.** A push that uploads many entries of a family also writes their manifests, as
they are, into one pack (after the manifests). A pull that looks up many entries of a
family reads its packs (a request each) instead of a manifest per entry; each manifest
from a pack is checked exactly as one read alone, and one that fails is read alone.

**Signatures.** A manifest carries ``hmac-sha256:{hex}``, an HMAC of its canonical JSON
(sorted keys, no spaces, without the signature) under the team's key (``CP_REMOTE_KEY``).
A value is a pickle, and loading it runs code: only entries signed with the key are
accepted. As the manifest names every object by its digest, the signature covers them too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ._types import FamilyDir, Json

FORMAT = "checkpoint-remote 1"
_SIG = "hmac-sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TASK_ID = re.compile(r"[0-9a-f]{32}")
_FAMILY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
MIN_KEY_LENGTH = 16


class RefusedEntry(Exception):
    """A manifest that must not be used; ``reason`` says why, as a phrase."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def entry_key(fingerprint: str, deps: dict[str, str]) -> str:
    """The key of an entry computed by code ``fingerprint`` from ``deps`` (``Meta.deps``)."""
    text = json.dumps([fingerprint, sorted(deps.items())], separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def entry_path(family: str, task_id: str, key: str) -> str:
    return f"entries/{family}/{task_id}/{key}.json"


def object_path(sha: str) -> str:
    return f"objects/{sha[:2]}/{sha}"


def pack_path(family: str, pushed: float, token: str) -> str:
    return f"packs/{family}/{int(pushed * 1000):013d}-{token}.pack"


def packed_path(line: bytes) -> str | None:
    """The entry path of a manifest read from a pack (``None`` for a line that is not one).
    Not verified: it only says where the manifest claims to belong."""
    try:
        body = json.loads(line)
        return entry_path(body["family"], body["task"], entry_key(body["fingerprint"], body["deps"]))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError):
        return None


def parse_entry_path(relative: str) -> tuple[str, str, str] | None:
    """``(family, task id, key)`` of a manifest's path, or ``None`` for any other file."""
    parts = relative.split("/")
    if (len(parts) != 4 or parts[0] != "entries" or not _FAMILY.fullmatch(parts[1])
            or not _TASK_ID.fullmatch(parts[2]) or not parts[3].endswith(".json")
            or not _TASK_ID.fullmatch(parts[3][:-5])):
        return None
    return parts[1], parts[2], parts[3][:-5]


@dataclass
class DataFile:
    """A file of a task's data directory: its path inside it (``/``-separated)."""

    path: str
    size: int
    sha256: str
    executable: bool = False


@dataclass
class Manifest:
    """One entry of a remote cache (see the module docstring)."""

    task: str
    family: FamilyDir
    expr: str
    args: str
    fingerprint: str
    deps: dict[str, str]
    stamp: str
    size: int
    crc: int
    compressed: bool
    sha256: str
    """SHA-256 of the value's payload (as stored: pickled, maybe zlib-compressed)."""
    inline: str | None = None
    """The payload, base64-encoded, when small; else it is the object ``sha256``."""
    data: list[DataFile] | None = None
    """The files of the task's data directory, or ``None`` when it has none."""
    dirs: list[str] | None = None
    """The empty folders of its data directory (``/``-separated), with ``data``; ``None``
    without a data directory (or from a writer that did not record them)."""
    log: str = ""
    started: float = 0.0
    duration: float = 0.0
    worker: str = ""
    pushed: float = 0.0
    format: str = FORMAT
    extra: dict[str, Json] = field(default_factory=dict)
    """Fields of a newer writer, kept so that the signature still checks."""

    @property
    def key(self) -> str:
        return entry_key(self.fingerprint, self.deps)

    def payload(self) -> bytes | None:
        """The inline payload, decoded (``None`` when the value is an object)."""
        return None if self.inline is None else base64.b64decode(self.inline)

    def objects(self) -> dict[str, int]:
        """``{sha256: size}`` of the objects this entry needs."""
        needed = {} if self.inline is not None else {self.sha256: self.size}
        for f in self.data or ():
            needed[f.sha256] = f.size
        return needed

    def _body(self) -> dict[str, Json]:
        body = asdict(self)
        extra = body.pop("extra")
        body.update(extra)
        if self.data is None:
            body["data"] = None
        if self.dirs is None:
            del body["dirs"]  # the manifest as an older writer wrote it
        return body

    def signed(self, key: bytes) -> bytes:
        """The manifest as stored: canonical JSON with its signature."""
        body = self._body()
        body["signature"] = _SIG + _mac(key, body)
        return _canonical(body)

    @classmethod
    def verified(cls, raw: bytes, key: bytes) -> Manifest:
        """Parse and check a stored manifest.

        Raises:
            RefusedEntry: it is not a manifest, is unsigned, or its signature is wrong.
        """
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RefusedEntry("its manifest is not valid JSON (damaged or cut short)") from None
        if not isinstance(body, dict):
            raise RefusedEntry("its manifest is not a JSON object")
        signature = body.pop("signature", None)
        if not isinstance(signature, str) or not signature.startswith(_SIG):
            raise RefusedEntry("it is not signed (no signature in its manifest)")
        if not hmac.compare_digest(signature[len(_SIG):], _mac(key, body)):
            raise RefusedEntry("its signature does not match: it was signed with another key "
                               "(CP_REMOTE_KEY) or altered after it was signed")
        if body.get("format") != FORMAT:
            raise RefusedEntry(f"its format {body.get('format')!r} is not {FORMAT!r} "
                               "(written by another version of checkpoint)")
        known = {name for name in cls.__dataclass_fields__ if name != "extra"}
        extra = {k: v for k, v in body.items() if k not in known}
        fields = {k: v for k, v in body.items() if k in known}
        try:
            data = fields.pop("data", None)
            manifest = cls(**fields, extra=extra)
            if data is not None:
                manifest.data = [DataFile(**f) for f in data]
        except TypeError as exc:
            raise RefusedEntry(f"its manifest lacks a field or has a wrong one ({exc})") from None
        manifest._check_shape()
        return manifest

    def _check_shape(self) -> None:
        """Refuse what could lead a download astray even when signed (a key leaked to an
        attacker still must not make checkpoint write outside a data directory)."""
        if not _HEX64.fullmatch(str(self.sha256)):
            raise RefusedEntry("its manifest names an object that is not a SHA-256 digest")
        for f in self.data or ():
            if not _HEX64.fullmatch(str(f.sha256)) or not safe_relative(f.path):
                raise RefusedEntry(f"its data directory names an unsafe path {f.path!r}")
        if self.dirs is not None and not isinstance(self.dirs, list):
            raise RefusedEntry("its manifest lacks a field or has a wrong one (dirs)")
        for path in self.dirs or ():
            if not safe_relative(path):
                raise RefusedEntry(f"its data directory names an unsafe path {path!r}")


def safe_relative(path: object) -> bool:
    """Whether a path from a manifest stays inside the directory it is joined to."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        return False
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _canonical(body: Mapping[str, Json]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, body: Mapping[str, Json]) -> str:
    return hmac.new(key, FORMAT.encode() + b"\n" + _canonical(body), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short, public name of a signing key (to tell which key signed what)."""
    return hashlib.sha256(b"checkpoint-remote key id\n" + key).hexdigest()[:8]
