"""The versions of the installed packages a family's code uses, recorded with its results.

Upgrading a package is not a code change (see :mod:`checkpoint.fingerprint`: installed code
is not fingerprinted), so it re-runs nothing; but ``checkpoint why`` says when a package a
stored result's code used has another version now than when the result was stored. The
fingerprint walk notes the packages (:data:`checkpoint.fingerprint.code_packages`); a run
looks their versions up once and records them with the results it stores.

No field of an entry can hold them without a new store format, and a row per entry would
slow every warm run (which reads each row of an index once). So a family's index holds a
row per coordinating process and set of versions (``pv:{token}.{digest}``: a
:class:`Span`), which names the entries it covers by what they record already: the worker
that computed them (``Meta.worker``, ``hostname:pid``) and when they were stored
(``Meta.stored``), widened as the process stores more. No two processes alive at once
share a worker, so an entry is covered by the row of the process that stored it (rows of
processes that stored nothing at that time on that worker cannot cover it); entries
stored by an older checkpoint, pulled from a remote or covered by rows dropped since
(:data:`MAX_ROWS`) report nothing.

A package is named by its top-level module (``numpy``, ``sklearn``); its version is that of
the installed distribution of the same name (:func:`importlib.metadata.version`), else the
module's ``__version__`` when it is imported, else unknown (not recorded, never reported).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._format import PACKAGES

if TYPE_CHECKING:
    from ._diskcache import Index
    from ._format import Meta, Record


@dataclass
class Versions:
    """Package versions, each looked up once (make one per run: an upgrade during a long
    session shows in the next run)."""

    found: dict[str, str | None] = field(default_factory=dict)

    def of(self, package: str) -> str | None:
        """The installed version of ``package`` (a top-level module name), or ``None``."""
        if package not in self.found:
            self.found[package] = _version(package)
        return self.found[package]

    def record(self, packages: Iterable[str]) -> dict[str, str]:
        """``{package: version}`` of those whose version is known."""
        return {p: v for p in packages if (v := self.of(p)) is not None}

    def changes(self, recorded: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """``{package: (recorded version, current version)}`` of the packages whose version
        differs now (one no longer installed, or whose version cannot be told, is left out)."""
        return {p: (old, new) for p, old in sorted(recorded.items())
                if (new := self.of(p)) is not None and new != old}


def _version(package: str) -> str | None:
    from importlib.metadata import distributions

    module = sys.modules.get(package)
    file = getattr(module, "__file__", None)
    # Its distribution is in the directory it was imported from: looking there alone costs
    # one directory listing instead of one per entry of sys.path (~30 ms).
    where = [os.path.dirname(os.path.dirname(file)) if os.path.basename(file).startswith(
        "__init__.") else os.path.dirname(file)] if isinstance(file, str) and file else sys.path
    found: object = None
    try:
        dist = next(iter(distributions(name=package, path=where)), None)
        found = dist.version if dist is not None else None
    except (ValueError, OSError):
        pass
    if not found:
        found = getattr(module, "__version__", None)
    return found if isinstance(found, str) and found else None


def versions_text(versions: Mapping[str, str]) -> str:
    """How a set of versions is written in a row (and told apart from another set)."""
    return json.dumps(versions, separators=(",", ":"), sort_keys=True)


MAX_ROWS = 64
"""``pv:`` rows a family keeps: the oldest go first (their entries then report nothing)."""

_token: list[str | int] = ["", 0]


def row_key(versions: str) -> str:
    """The ``pv:`` row of this process for a set of versions (:func:`versions_text`)."""
    if _token[1] != os.getpid():  # a forked child is another coordinator
        _token[:] = [secrets.token_hex(6), os.getpid()]
    digest = hashlib.blake2b(versions.encode(), digest_size=4).hexdigest()
    return f"{PACKAGES}{_token[0]}.{digest}"


@dataclass
class Span:
    """A ``pv:`` row: the entries of a family that one coordinating process stored while
    these versions were installed: those computed by one of ``workers`` (``Meta.worker``)
    and stored (``Meta.stored``) between ``first`` and ``last``."""

    versions: dict[str, str]
    workers: set[str]
    first: float
    last: float

    def covers(self, meta: Meta) -> bool:
        return meta.worker in self.workers and self.first <= meta.stored <= self.last

    def to_text(self) -> str:
        return json.dumps({"versions": self.versions, "workers": sorted(self.workers),
                           "first": self.first, "last": self.last}, separators=(",", ":"),
                          sort_keys=True)

    @classmethod
    def from_text(cls, text: object) -> Span | None:
        """The span a row holds (``None`` if it is not one)."""
        if not isinstance(text, (str, bytes)):
            return None
        try:
            row: Any = json.loads(text)
            versions, workers = row["versions"], row["workers"]
            first, last = float(row["first"]), float(row["last"])
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(versions, dict) or not isinstance(workers, list):
            return None
        return cls({k: v for k, v in versions.items() if isinstance(k, str) and isinstance(v, str)},
                   {w for w in workers if isinstance(w, str)}, first, last)


def record_spans(records: Sequence[Record], index: Index) -> None:
    """Write (or widen) this process's ``pv:`` rows for the records of a family stored in
    one transaction: one row per set of versions, whatever the number of entries, so that
    a warm run, which reads every row of the index, does not pay for them."""
    by_versions: dict[str, list[Record]] = {}
    for r in records:
        if r.packages:
            by_versions.setdefault(r.packages, []).append(r)
    for versions, rs in by_versions.items():
        key = row_key(versions)
        span = Span.from_text(index.get(key))
        if span is None:
            _make_room(index)
            span = Span(json.loads(versions), set(), rs[0].meta.stored, rs[0].meta.stored)
        for r in rs:
            span.workers.add(r.meta.worker)
            span.first = min(span.first, r.meta.stored)
            span.last = max(span.last, r.meta.stored)
        index.set(key, span.to_text())


def _make_room(index: Index) -> None:
    """Drop the rows of the family that were written to last longest ago, so that a new
    one leaves at most :data:`MAX_ROWS`."""
    keys = index.keys(PACKAGES)
    if len(keys) < MAX_ROWS:
        return
    spans = []
    for key, text in index.values(keys[:500]):
        span = Span.from_text(text)
        spans.append((span.last if span is not None else 0.0, key))
    for _, key in sorted(spans)[:len(spans) - MAX_ROWS + 1]:
        index.delete(key)


def versions_of(spans: Iterable[Span], meta: Meta) -> dict[str, str] | None:
    """The versions recorded for an entry: those of the rows that cover it, when they agree
    (``None``: no row covers it, or rows of two processes whose versions differ do)."""
    found = [s.versions for s in spans if s.covers(meta)]
    if not found or any(v != found[0] for v in found[1:]):
        return None
    return found[0]
