"""A remote cache on object storage: pull what a run would compute, push what it computed.

A remote cache is a URL that fsspec understands (``s3://bucket/prefix``, ``gs://...``,
``file:///shared/dir``, ``ssh://host/dir``) holding entries that several machines share
(layout and signatures: :mod:`checkpoint._manifest`; transfers: :mod:`checkpoint._remote_io`).

**Pulling** (:func:`pull_plan`) is a phase between planning and scheduling. It walks the
plan in topological order, in waves: each task that must run and whose prerequisites all
have a known current stamp (fresh locally, or pulled in an earlier wave) is looked up under
the key of what it would be computed from now (its family's fingerprint, those stamps, its
input files' digests), all of a wave's manifests in one batch of concurrent requests. A
signed manifest whose fingerprint and prerequisites are exactly those (the rule of
:func:`checkpoint.graph.entry_is_current`) makes the task pulled, with the stamp the
manifest records, and its dependents are looked up in the next wave. A task planned to
re-run only because a prerequisite re-runs is kept, without any download, when its own
entry is current given the pulled values (early cutoff). Then the values and data
directories of the pulled entries are downloaded (concurrently; large ones streamed to
disk), each checked against its SHA-256, and stored through the store's own writing path
(``Store.put_many``: a blob file or data directory is complete before the index row that
names it). A pulled task is fresh for the scheduler, which runs only what is left.

A task downstream of one that must run here (forced, failed a check, not on the remote) is
computed here: its key depends on a value that does not exist yet. A task that declares
output files (``Product()``) is neither pulled nor pushed: its files live in the project,
not in the cache. Its dependents are pulled when it is fresh here (their keys name its
stamp, which names its outputs' digests); when it runs, so do they. A task with ``File()``
inputs is pulled only when the digests of the input files here are the ones its entry was
computed from (they are part of the key).

**Pushing** (:func:`push_plan`) uploads the current entries of a plan that the remote
lacks: objects first, manifests last, so a reader never finds a manifest whose objects
are not all there.

**Trust.** Every entry is signed with ``CP_REMOTE_KEY`` (HMAC-SHA256); an unsigned or
wrongly signed entry, a manifest that does not match the path it was found at, or an object
that fails its checksum is refused with a :class:`~checkpoint.errors.RemoteWarning`, and its
task runs here. A remote that cannot be reached gives one warning; the run goes on locally.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import events as ev
from ._format import Checksum, matches, new_blob_name
from ._manifest import (
    MIN_KEY_LENGTH,
    DataFile,
    Manifest,
    RefusedEntry,
    entry_key,
    entry_path,
    object_path,
    pack_path,
    packed_path,
    parse_entry_path,
)
from ._types import FamilyDir, Reason, TaskId, Word
from .errors import RemoteConfigError, RemoteUnavailableError, RemoteWarning, StoreError
from .graph import Node, Plan, entry_is_current
from .store import INLINE_MAX, Meta, Record, Store, open_stored

if TYPE_CHECKING:
    from ._remote_io import RemoteStorage
    from .task import Task

PULLABLE = frozenset({Reason.MISSING, Reason.CODE_CHANGED, Reason.INPUT_CHANGED,
                      Reason.UPSTREAM_RERUN, Reason.UPSTREAM_CHANGED})
"""Reasons to run for which a task is looked up on the remote (not ``forced``: asked to
compute; not ``input missing`` or ``output changed``)."""
STREAM_MIN = 8 << 20
"""Objects at least this large are streamed between disk and remote, one at a time;
smaller ones move in concurrent batches, held in memory."""
BATCH_BYTES = 64 << 20
"""At most this many bytes of small objects are held in memory at once."""
PACK_MIN = 32
"""A push writes a pack for a family when it uploads at least this many of its entries; a
pull reads a family's packs when it looks up at least this many of its entries."""
PACK_BYTES_PER_ENTRY = 4096
"""A pull reads a family's packs only when they hold at most this many bytes per entry
it looks up (else, many old packs: it reads the manifests one by one)."""
GRACE_SECONDS = 3600.0
"""``prune`` leaves objects and temporary files younger than this (a push in progress)."""
_CHUNK = 1 << 20


# --- configuration ----------------------------------------------------------------------------


class Remote:
    """A remote cache: its URL and the key its entries are signed with.

    Args:
        url: an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file:///dir``, ...).
        key: the signing key (default: ``$CP_REMOTE_KEY``); pulling and pushing need it.
    """

    def __init__(self, url: str, key: str | bytes | None = None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise RemoteConfigError(f"A remote cache URL must be a non-empty string, not {url!r}.")
        self.url = url.strip()
        if key is None:
            key = os.environ.get("CP_REMOTE_KEY") or None
        self.key: bytes | None = key.encode() if isinstance(key, str) else key
        self._storage: RemoteStorage | None = None
        self.unavailable = ""
        """Why a run went on without this remote (empty while it has not)."""

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    @property
    def storage(self) -> RemoteStorage:
        """The remote's files (fsspec is imported here, on first use)."""
        if self._storage is None:
            from ._remote_io import RemoteStorage

            self._storage = RemoteStorage(self.url)
        return self._storage

    @property
    def requests(self) -> int:
        """Requests sent to the remote so far."""
        return 0 if self._storage is None else self._storage.requests

    def signing_key(self) -> bytes:
        """The key, checked.

        Raises:
            RemoteConfigError: there is none, or it is too short to be a secret.
        """
        if not self.key:
            raise RemoteConfigError(
                f"The remote cache {self.url} needs a signing key: set CP_REMOTE_KEY to the "
                "secret your team shares (make one with: python -c 'import secrets; "
                "print(secrets.token_hex(32))'). Values are pickles, so checkpoint loads only "
                "entries signed with it; see the Security page of the docs."
            )
        if len(self.key) < MIN_KEY_LENGTH:
            raise RemoteConfigError(
                f"CP_REMOTE_KEY is {len(self.key)} characters long; a signing key needs at least "
                f"{MIN_KEY_LENGTH} (make one with: python -c 'import secrets; "
                "print(secrets.token_hex(32))')."
            )
        return self.key


def resolve(remote: Remote | str | bool | None) -> Remote | None:
    """The remote a run uses: ``remote`` itself, a URL, ``None`` for ``$CP_REMOTE`` (if
    set), ``False`` for none."""
    if remote is False or remote is True:
        return None if remote is False else resolve(None)
    if isinstance(remote, Remote):
        return remote
    if remote is None:
        remote = os.environ.get("CP_REMOTE") or None
        if remote is None:
            return None
    return Remote(remote)


def _warn(message: str) -> None:
    warnings.warn(message, RemoteWarning, stacklevel=3)


# --- pulling ----------------------------------------------------------------------------------


@dataclass
class PullReport:
    """What a pull did."""

    pulled: list[Task[object]] = field(default_factory=list)
    kept: list[Task[object]] = field(default_factory=list)
    """Tasks planned to re-run whose own entries are current given the pulled values."""
    missing: list[Task[object]] = field(default_factory=list)
    """Tasks looked up that the remote does not have."""
    refused: list[tuple[Task[object], str]] = field(default_factory=list)
    """Entries refused (damaged, unsigned, wrongly signed), with the reason."""
    bytes: int = 0
    requests: int = 0


def pull_plan(
    the_plan: Plan, store: Store, remote: Remote | str | bool | None = None,
    emit: Callable[[ev.Event], None] | None = None,
) -> list[Task[object]]:
    """The pull phase of a run (see the module docstring): pull what the remote has of the
    tasks that must run, mark them fresh in ``the_plan``, and return them.

    Never raises for the remote's sake: a remote that cannot be used (not reachable, no
    key) or an entry that is refused gives a :class:`~checkpoint.errors.RemoteWarning`,
    and the tasks concerned run here.
    """
    if not any(_pullable(node) for node in the_plan.nodes.values()):
        return []  # a warm run never contacts the remote
    try:
        resolved = resolve(remote)
        if resolved is None:
            return []
        resolved.signing_key()
        resolved.storage  # noqa: B018 - imports fsspec and parses the URL: a config error here
    except RemoteConfigError as exc:
        _warn(f"{exc} Running without the remote cache.")
        return []
    try:
        return pull(the_plan, store, resolved, emit).pulled
    except RemoteUnavailableError as exc:
        resolved.unavailable = str(exc)
        _warn(f"{exc} Running without it: the tasks it would have given are computed here.")
        return []


def pull(
    the_plan: Plan, store: Store, remote: Remote,
    emit: Callable[[ev.Event], None] | None = None,
) -> PullReport:
    """Pull the entries of ``the_plan``'s tasks that must run (see :func:`pull_plan`).

    Raises:
        RemoteConfigError: no signing key.
        RemoteUnavailableError: the remote cannot be reached (nothing was stored).
    """
    report = PullReport()
    key = remote.signing_key()
    before = remote.requests
    puller = _Pull(the_plan, store, remote, key, report)
    try:
        puller.run()
    finally:
        puller.fetch.cleanup()
    report.requests = remote.requests - before
    if emit is not None:
        for task in report.pulled:
            emit(ev.TaskPulled(task, puller.fetch.sizes.get(task.id, 0),
                                 puller.fetch.durations.get(task.id, 0.0)))
    return report


def _pullable(node: Node) -> bool:
    return node.reason in PULLABLE and (node.files is None or not node.files.outputs)


class _Found(Word):
    """What the lookup decided for a task of the plan."""

    FRESH = "fresh"
    """Fresh here: nothing to pull."""
    KEPT = "kept"
    """Its entry here is current with the stamps its prerequisites have once pulled."""
    PULLED = "pulled"
    """The remote has its entry, computed from the current prerequisites."""
    RUN = "run"
    """Computed here."""


class _Lookup:
    """Which of a plan's tasks the remote gives: their verified manifests, looked up in
    waves (see the module docstring)."""

    def __init__(self, the_plan: Plan, remote: Remote, key: bytes, report: PullReport) -> None:
        self.nodes = the_plan.nodes
        self.remote = remote
        self.key = key
        self.report = report
        self.status: dict[TaskId, _Found] = {}
        self.manifests: dict[TaskId, Manifest] = {}
        self.packed: dict[str, bytes] = {}
        """Manifests read from packs, by the entry path they claim (not yet checked)."""

    def stamp(self, tid: TaskId) -> str | None:
        status = self.status.get(tid)
        if status is _Found.PULLED:
            return self.manifests[tid].stamp
        if status in (_Found.FRESH, _Found.KEPT):
            meta = self.nodes[tid].meta
            return None if meta is None else meta.stamp
        return None

    def run(self) -> None:
        pending: list[TaskId] = []
        for tid, node in self.nodes.items():
            if node.reason is None:
                self.status[tid] = _Found.FRESH
            elif _pullable(node):
                pending.append(tid)
            else:
                self.status[tid] = _Found.RUN
        self._read_packs(pending)
        while pending:
            wave: dict[TaskId, str] = {}
            later: list[TaskId] = []
            for tid in pending:
                node = self.nodes[tid]
                states = [self.status.get(d) for d in node.deps]
                if _Found.RUN in states:
                    self.status[tid] = _Found.RUN
                elif None in states:
                    later.append(tid)  # a prerequisite is looked up in this wave
                elif (node.reason == Reason.UPSTREAM_RERUN and node.meta is not None
                      and entry_is_current(node.meta, node.deps, self.stamp, node.files,
                                           shape=node.shape)):
                    self.status[tid] = _Found.KEPT
                else:
                    deps = node.recorded_deps({d: self.stamp(d) or "" for d in node.deps}, None)
                    key = entry_key(node.task.family.fingerprint[0], deps)
                    wave[tid] = entry_path(node.task.family.dirname, tid, key)
            self._look_up(wave)
            pending = later

    def _read_packs(self, pending: list[TaskId]) -> None:
        """Read the packs of the families with many entries to look up (see
        :mod:`checkpoint._manifest`): a request per pack instead of one per entry."""
        by_family: dict[FamilyDir, int] = {}
        for tid in pending:
            family = self.nodes[tid].task.family.dirname
            by_family[family] = by_family.get(family, 0) + 1
        storage = self.remote.storage
        wanted: list[str] = []
        for family, count in by_family.items():
            if count < PACK_MIN:
                continue
            packs = storage.listing(f"packs/{family}/")
            packs = {p: v for p, v in packs.items() if p.endswith(".pack")}
            if sum(size for size, _ in packs.values()) <= PACK_BYTES_PER_ENTRY * count:
                wanted += packs
        for content in storage.read_many(wanted).values():
            for line in (content or b"").splitlines():
                path = packed_path(line)
                if path is not None:
                    self.packed[path] = line

    def _look_up(self, wave: dict[TaskId, str]) -> None:
        """Fetch and check a wave's manifests: from the packs read, else in one batch of
        concurrent requests."""
        alone: dict[TaskId, str] = {}
        for tid, path in wave.items():
            raw = self.packed.pop(path, None)
            if raw is None or not self._accept(tid, path, raw, refuse=False):
                alone[tid] = path  # not in a pack, or its copy there failed: read it alone
        found = self.remote.storage.read_many(list(alone.values()))
        for tid, path in alone.items():
            raw = found.get(path)
            if raw is None:
                self.status[tid] = _Found.RUN
                self.report.missing.append(self.nodes[tid].task)
            else:
                self._accept(tid, path, raw, refuse=True)

    def _accept(self, tid: TaskId, path: str, raw: bytes, refuse: bool) -> bool:
        """Check a manifest; if good, the task is pulled. A bad one is refused (a warning,
        the task runs here) when ``refuse``."""
        node = self.nodes[tid]
        try:
            manifest = Manifest.verified(raw, self.key)
            self._check_match(manifest, node, tid)
        except RefusedEntry as exc:
            if refuse:
                self.refuse(node.task, path, exc.reason)
            return False
        self.manifests[tid] = manifest
        self.status[tid] = _Found.PULLED
        return True

    def _check_match(self, manifest: Manifest, node: Node, tid: TaskId) -> None:
        """Refuse a (signed) manifest that is not the entry its path promises: the rule of
        ``entry_is_current``, and the same task and family."""
        family = node.task.family
        if manifest.task != tid or manifest.family != family.dirname:
            raise RefusedEntry("its manifest describes another task (moved or copied from "
                               "another path)")
        if manifest.fingerprint != family.fingerprint[0]:
            raise RefusedEntry("its manifest was computed by other code than this path says")
        meta = Meta(expr="", args="", fingerprint=manifest.fingerprint, stamp=manifest.stamp,
                    deps=manifest.deps)
        if not entry_is_current(meta, node.deps, self.stamp, node.files, outputs=False,
                                shape=node.shape):
            raise RefusedEntry("its manifest was computed from other prerequisites than this "
                               "path says")

    def refuse(self, task: Task[object], where: str, reason: str) -> None:
        self.status[task.id] = _Found.RUN
        self.report.refused.append((task, reason))
        _warn(f"The remote cache's entry of {task!r} ({self.remote.url}/{where}) was refused: "
              f"{reason}. It is computed here instead.")


class _Fetch:
    """Download the objects of looked-up entries and check each against its manifest:
    values in memory or as blob files in place, data directories staged in the store."""

    def __init__(self, nodes: dict[TaskId, Node], store: Store, remote: Remote) -> None:
        self.nodes = nodes
        self.store = store
        self.remote = remote
        self.payloads: dict[TaskId, bytes] = {}
        """Downloaded payloads (small ones; large ones are already blob files)."""
        self.blobs: dict[TaskId, str] = {}
        """Blob files downloaded for an entry, by task id (file name in its family's blobs/)."""
        self.staged: dict[TaskId, Path] = {}
        """Data directories downloaded for an entry, not yet in place."""
        self.staging: list[Path] = []
        self.uses: dict[str, int] = {}
        """How many pulled entries need each object (a shared large one is copied)."""
        self.sizes: dict[TaskId, int] = {}
        self.durations: dict[TaskId, float] = {}

    def run(self, lookup: _Lookup) -> None:
        """Fetch the objects of the pulled entries: small ones in concurrent batches, large
        ones streamed to disk; every one checked against its SHA-256."""
        storage = self.remote.storage
        small: dict[str, int] = {}
        large: dict[str, int] = {}
        for manifest in lookup.manifests.values():
            for sha, size in manifest.objects().items():
                (large if size >= STREAM_MIN else small)[sha] = size
        contents: dict[str, bytes | None] = {}
        batch: list[str] = []
        held = 0
        for sha, size in [*small.items(), ("", 0)]:
            if batch and (not sha or held + size > BATCH_BYTES):
                got = storage.read_many([object_path(s) for s in batch])
                for s in batch:
                    contents[s] = got[object_path(s)]
                batch, held = [], 0
            if sha:
                batch.append(sha)
                held += size
        files: dict[str, Path] = {}
        self.uses = {}
        for manifest in lookup.manifests.values():
            for sha in manifest.objects():
                self.uses[sha] = self.uses.get(sha, 0) + 1
        for sha in large:
            target = self._staging() / f"object-{sha}"
            if storage.download(object_path(sha), str(target)):
                files[sha] = target
        for tid, manifest in list(lookup.manifests.items()):
            task = self.nodes[tid].task
            try:
                self._take(tid, manifest, contents, files)
            except RefusedEntry as exc:
                del lookup.manifests[tid]
                lookup.refuse(task, entry_path(manifest.family, tid, manifest.key), exc.reason)

    def _staging(self) -> Path:
        """A directory of the store for downloads not yet stored (on its filesystem, so
        they move into place by renaming). Those of pulls killed a day ago are removed."""
        if not self.staging:
            self.store.tree.ensure()
            for old in self.store.root.glob(".pull-*"):
                with contextlib.suppress(OSError):
                    if time.time() - os.lstat(old).st_mtime > 86400 and not old.is_symlink():
                        shutil.rmtree(old, ignore_errors=True)
            path = self.store.root / f".pull-{secrets.token_hex(6)}"
            path.mkdir(mode=0o700)
            self.staging.append(path)
        return self.staging[0]

    def _take(self, tid: TaskId, manifest: Manifest, contents: dict[str, bytes | None],
              files: dict[str, Path]) -> None:
        """Check an entry's value and data files and put them where storing needs them."""
        family = manifest.family
        payload = manifest.payload() if manifest.inline is not None else contents.get(manifest.sha256)
        if payload is not None:
            _check_bytes(payload, manifest.sha256, manifest.size, "its value")
            if not matches(payload, manifest.crc):
                raise RefusedEntry("its value does not match the checksum in its manifest")
            self.payloads[tid] = payload
        elif manifest.sha256 in files:
            source = files[manifest.sha256]
            crc = _check_file(source, manifest.sha256, manifest.size, "its value", manifest.crc)
            if crc != manifest.crc:
                raise RefusedEntry("its value does not match the checksum in its manifest")
            blobs = self.store.blob_dir(family)
            blobs.mkdir(parents=True, exist_ok=True)
            name = new_blob_name(tid)
            self.uses[manifest.sha256] -= 1
            if self.uses[manifest.sha256] > 0:  # a value that another entry has too
                shutil.copyfile(source, blobs / name)
            else:
                os.replace(source, blobs / name)
                del files[manifest.sha256]
            self.blobs[tid] = name
        else:
            raise RefusedEntry("its value is missing from the remote (the manifest names an "
                               "object that is not there)")
        if manifest.data is not None:
            self.staged[tid] = self._stage_data(tid, manifest.data, manifest.dirs or [],
                                                contents, files)
        self.sizes[tid] = manifest.size + sum(f.size for f in manifest.data or ())
        self.durations[tid] = manifest.duration

    def _stage_data(self, tid: TaskId, data: list[DataFile], dirs: list[str],
                    contents: dict[str, bytes | None], files: dict[str, Path]) -> Path:
        """An entry's data directory, checked file by file, with its empty folders, in the
        staging directory."""
        staged = self._staging() / f"data-{tid}"
        staged.mkdir()
        for f in data:
            target = staged / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            content = contents.get(f.sha256)
            if content is not None:
                _check_bytes(content, f.sha256, f.size, f"its data file {f.path}")
                target.write_bytes(content)
            elif f.sha256 in files:
                _check_file(files[f.sha256], f.sha256, f.size, f"its data file {f.path}")
                shutil.copyfile(files[f.sha256], target)
            else:
                raise RefusedEntry(f"its data file {f.path} is missing from the remote")
            if f.executable:
                target.chmod(target.stat().st_mode | 0o111)
        for folder in dirs:
            try:
                (staged / folder).mkdir(parents=True, exist_ok=True)
            except OSError:
                raise RefusedEntry(f"its data directory names the folder {folder}, where it "
                                   "has a file") from None
        return staged

    def cleanup(self) -> None:
        """Remove what was downloaded and not stored."""
        for tid, name in self.blobs.items():
            family = self.nodes[tid].task.family.dirname
            with contextlib.suppress(OSError):
                os.unlink(self.store.blob_dir(family) / name)
        for path in self.staging:
            shutil.rmtree(path, ignore_errors=True)


class _Pull:
    """One pull phase: look up, download, then store what is complete (see the module
    docstring)."""

    def __init__(self, the_plan: Plan, store: Store, remote: Remote, key: bytes,
                 report: PullReport) -> None:
        self.nodes = the_plan.nodes
        self.store = store
        self.remote = remote
        self.report = report
        self.lookup = _Lookup(the_plan, remote, key, report)
        self.fetch = _Fetch(self.nodes, store, remote)
        self.sourced: set[str] = set()
        """Families whose normalized source goes with a stored record already."""

    def run(self) -> None:
        self.lookup.run()
        self.fetch.run(self.lookup)
        self._commit()

    def _commit(self) -> None:
        """Store the pulled entries whose prerequisites are all current (a prerequisite that
        was refused on download takes its dependents' pulls with it), and mark the plan."""
        from ._runlock import RunLock

        good: set[TaskId] = {tid for tid, s in self.lookup.status.items() if s is _Found.FRESH}
        kept: list[TaskId] = []
        chosen: list[TaskId] = []
        if self.lookup.manifests:
            self.store.tree.ensure()
        lock = RunLock(self.store.root) if self.lookup.manifests else None
        try:
            for tid, node in self.nodes.items():
                status = self.lookup.status.get(tid)
                if status not in (_Found.KEPT, _Found.PULLED) or not all(d in good for d in node.deps):
                    continue
                if status is _Found.PULLED:
                    if tid not in self.lookup.manifests:
                        continue
                    # Another run on this cache computes it now: let the scheduler wait for it.
                    if lock is not None and not lock.solo and not lock.try_task(tid):
                        continue
                    chosen.append(tid)
                else:
                    kept.append(tid)
                good.add(tid)
            records = [self._record(tid) for tid in chosen]
            try:
                self.store.put_many(records)
            except StoreError as exc:
                _warn(f"Cannot store the entries pulled from {self.remote.url}: {exc}")
                return
        finally:
            if lock is not None:
                lock.close()
        for tid in kept:
            self.nodes[tid].reason = None
            self.report.kept.append(self.nodes[tid].task)
        by_family: dict[FamilyDir, list[TaskId]] = {}
        for tid in chosen:
            by_family.setdefault(self.nodes[tid].task.family.dirname, []).append(tid)
            self.fetch.blobs.pop(tid, None)
        for family, ids in by_family.items():
            metas = self.store.get_metas(family, ids)
            for tid in ids:
                node = self.nodes[tid]
                node.meta = metas.get(tid, node.meta)
                node.reason = None
                self.report.pulled.append(node.task)
                self.report.bytes += self.fetch.sizes.get(tid, 0)

    def _record(self, tid: TaskId) -> Record:
        node = self.nodes[tid]
        task = node.task
        manifest = self.lookup.manifests[tid]
        family = task.family
        staged = self.fetch.staged.pop(tid, None)
        if staged is not None:  # complete before the index row that makes it current
            path = self.store.prepare_data_dir(family.dirname, tid)
            os.replace(staged, path)
        meta = Meta(
            expr=task.expression(), args=task.encoded, fingerprint=manifest.fingerprint,
            stamp=manifest.stamp, deps=dict(manifest.deps), size=manifest.size,
            crc=manifest.crc, compressed=manifest.compressed, started=manifest.started,
            duration=manifest.duration, stored=time.time(), blob=self.fetch.blobs.get(tid, ""),
            worker=manifest.worker, log=bool(manifest.log),
        )
        previous = node.meta
        source = None
        if family.dirname not in self.sourced:  # once a family: put_many checks it per record
            self.sourced.add(family.dirname)
            source = family.fingerprint
        return Record(family.dirname, tid, meta, self.fetch.payloads.pop(tid, None),
                      source=source, log=manifest.log,
                      replaces=previous.blob if previous is not None else "")


def _check_bytes(content: bytes, sha: str, size: int, what: str) -> None:
    if len(content) != size or hashlib.sha256(content).hexdigest() != sha:
        raise RefusedEntry(f"{what} failed its SHA-256 check (damaged or replaced on the remote)")


def _running(expected: int | None) -> Checksum:
    """A running checksum like the stored ``expected`` one (a data file has none: xxh3)."""
    return Checksum() if expected is None else Checksum.like(expected)


def _check_file(path: Path, sha: str, size: int, what: str, expected: int | None = None) -> int:
    """Check a downloaded file's size and SHA-256; return its checksum, of the algorithm
    of the ``expected`` one."""
    digest = hashlib.sha256()
    crc = _running(expected)
    total = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            crc.update(chunk)
            total += len(chunk)
    if total != size or digest.hexdigest() != sha:
        raise RefusedEntry(f"{what} failed its SHA-256 check (damaged or replaced on the remote)")
    return crc.value()


# --- pushing ----------------------------------------------------------------------------------


@dataclass
class PushReport:
    """What a push did."""

    pushed: list[Task[object]] = field(default_factory=list)
    present: list[Task[object]] = field(default_factory=list)
    """Current entries the remote already had."""
    skipped: list[tuple[Task[object], str]] = field(default_factory=list)
    """Tasks not pushed, with the reason (no current entry here, declares output files...)."""
    bytes: int = 0
    requests: int = 0


def push_plan(the_plan: Plan, store: Store, remote: Remote) -> PushReport:
    """Upload the current entries of ``the_plan`` that the remote lacks (objects first,
    manifests last).

    Raises:
        RemoteConfigError: no signing key.
        RemoteUnavailableError: the remote cannot be reached.
    """
    key = remote.signing_key()
    report = PushReport()
    before = remote.requests
    current = _current_entries(the_plan, store, report)
    storage = remote.storage
    families = {the_plan.nodes[tid].task.family.dirname for tid in current}
    existing: set[str] = set()
    for family in sorted(families):
        existing.update(storage.listing(f"entries/{family}/"))
    manifests: dict[str, bytes] = {}
    packs: dict[str, list[bytes]] = {}
    objects: dict[str, tuple[str, int]] = {}
    """sha256 -> (local file, size) of the objects to upload."""
    pushed: list[Task[object]] = []
    for tid, meta in current.items():
        task = the_plan.nodes[tid].task
        family = task.family.dirname
        path = entry_path(family, tid, entry_key(meta.fingerprint, meta.deps))
        if path in existing:
            report.present.append(task)
            continue
        try:
            manifest, needed = _manifest_of(store, task, tid, meta)
        except _NotPushable as exc:
            report.skipped.append((task, str(exc)))
            continue
        manifests[path] = manifest.signed(key)
        packs.setdefault(family, []).append(manifests[path])
        objects.update(needed)
        pushed.append(task)
        report.bytes += manifest.size + sum(f.size for f in manifest.data or ())
    _upload_objects(storage, objects)
    storage.write_many(manifests)  # last: a manifest is never visible before its objects
    token = secrets.token_hex(4)
    storage.write_many({pack_path(family, time.time(), token): b"\n".join(lines) + b"\n"
                        for family, lines in packs.items() if len(lines) >= PACK_MIN})
    report.pushed = pushed
    report.requests = remote.requests - before
    return report


class _NotPushable(Exception):
    pass


def _current_entries(the_plan: Plan, store: Store, report: PushReport) -> dict[TaskId, Meta]:
    """The plan's entries that are current here (computed by the current code from the
    current entries of their prerequisites), in topological order; the others go to
    ``report.skipped``."""
    by_family: dict[FamilyDir, list[TaskId]] = {}
    for tid, node in the_plan.nodes.items():
        by_family.setdefault(node.task.family.dirname, []).append(tid)
    metas: dict[TaskId, Meta] = {}
    for family, ids in by_family.items():
        metas.update(store.get_metas(family, ids))
    valid: dict[TaskId, Meta] = {}

    def stamp(tid: TaskId) -> str | None:
        meta = valid.get(tid)
        return None if meta is None else meta.stamp

    current: dict[TaskId, Meta] = {}
    for tid, node in the_plan.nodes.items():
        meta = metas.get(tid)
        task = node.task
        if meta is None:
            report.skipped.append((task, "no stored result here"))
        elif meta.fingerprint != task.family.fingerprint[0]:
            report.skipped.append((task, "its stored result is stale (code changed)"))
        elif not entry_is_current(meta, node.deps, stamp, node.files, outputs=False,
                                  shape=node.shape):
            report.skipped.append((task, "its stored result is stale (run it first)"))
        elif node.files is not None and node.files.outputs:
            valid[tid] = meta  # its dependents may be pushed: their keys name its outputs
            report.skipped.append((task, "it declares output files (Product), which stay in "
                                         "the project"))
        else:
            valid[tid] = meta
            current[tid] = meta
    return current


def _manifest_of(store: Store, task: Task[object], tid: TaskId,
                 meta: Meta) -> tuple[Manifest, dict[str, tuple[str, int]]]:
    """The manifest of a stored entry and the objects it needs (``sha -> (file, size)``)."""
    family = task.family.dirname
    objects: dict[str, tuple[str, int]] = {}
    inline: str | None = None
    if meta.blob:
        path = str(store.blob_dir(family) / meta.blob)
        sha, crc, size = _hash_file(path, meta.crc)
        if size != meta.size or crc != meta.crc:
            raise _NotPushable("its stored value is damaged (size or checksum mismatch)")
        if size <= INLINE_MAX:
            with open(path, "rb") as f:
                inline = base64.b64encode(f.read()).decode()
        else:
            objects[sha] = (path, size)
    else:
        payload = meta.inline
        if payload is None or len(payload) != meta.size or not matches(payload, meta.crc):
            raise _NotPushable("its stored value is damaged (size or checksum mismatch)")
        sha = hashlib.sha256(payload).hexdigest()
        inline = base64.b64encode(payload).decode()
    data, dirs = _data_files(store, family, tid, objects) or (None, None)
    log = (store.get_log(family, tid) or "") if meta.log else ""
    manifest = Manifest(
        task=tid, family=family, expr=meta.expr, args=meta.args, fingerprint=meta.fingerprint,
        deps=dict(meta.deps), stamp=meta.stamp, size=meta.size, crc=meta.crc,
        compressed=meta.compressed, sha256=sha, inline=inline, data=data, dirs=dirs, log=log,
        started=meta.started, duration=meta.duration, worker=meta.worker, pushed=time.time(),
    )
    return manifest, objects


def _data_files(store: Store, family: FamilyDir, tid: TaskId, objects: dict[str, tuple[str, int]]
                ) -> tuple[list[DataFile], list[str]] | None:
    """The files of a task's data directory and its empty folders (``None`` when it has
    none)."""
    root = store.data_dir(family, tid)
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            return None
    except FileNotFoundError:
        return None
    files: list[DataFile] = []
    empty: list[str] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        if not entries and directory != root:
            empty.append(directory.relative_to(root).as_posix())
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            relative = Path(entry.path).relative_to(root).as_posix()
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode):
                sha, _, size = _hash_file(entry.path)
                objects[sha] = (entry.path, size)
                files.append(DataFile(relative, size, sha, bool(st.st_mode & stat.S_IXUSR)))
            else:
                raise _NotPushable(f"its data directory holds {relative}, which is not a regular "
                                   "file (a link or a special file)")
    return files, sorted(empty)


def _hash_file(path: str, expected: int | None = None) -> tuple[str, int, int]:
    """SHA-256, checksum (of the algorithm of the ``expected`` one) and size of a local
    file (only a regular file is opened)."""
    digest = hashlib.sha256()
    crc = _running(expected)
    size = 0
    with os.fdopen(open_stored(path), "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            crc.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), crc.value(), size


def _upload_objects(storage: RemoteStorage, objects: dict[str, tuple[str, int]]) -> None:
    """Upload objects: small ones in concurrent batches, large ones streamed (skipped when
    the remote has them already: objects are named by their content)."""
    batch: dict[str, bytes] = {}
    held = 0
    for sha, (path, size) in sorted(objects.items(), key=lambda item: item[1][1]):
        if size >= STREAM_MIN:
            if not storage.exists(object_path(sha)):
                storage.upload(path, object_path(sha))
            continue
        with open(path, "rb") as f:
            batch[object_path(sha)] = f.read()
        held += size
        if held >= BATCH_BYTES:
            storage.write_many(batch)
            batch, held = {}, 0
    storage.write_many(batch)


# --- targets ----------------------------------------------------------------------------------


def push(targets: Sequence[Task[object]], remote: Remote | str | None = None, *,
         cache_dir: str | os.PathLike[str] | None = None) -> PushReport:
    """Upload the current entries of ``targets``' DAG that the remote lacks.

    Raises:
        RemoteConfigError: no remote (``remote`` or ``$CP_REMOTE``) or no signing key.
        RemoteUnavailableError: the remote cannot be reached.
    """
    from .graph import plan

    resolved = configured(remote)
    store = Store.open(cache_dir)
    return push_plan(plan(targets, store), store, resolved)


def pull_targets(targets: Sequence[Task[object]], remote: Remote | str | None = None, *,
                 cache_dir: str | os.PathLike[str] | None = None,
                 emit: Callable[[ev.Event], None] | None = None) -> PullReport:
    """Download what the remote has of the tasks of ``targets``' DAG that are missing or
    stale here, computing nothing.

    Raises:
        RemoteConfigError: no remote or no signing key.
        RemoteUnavailableError: the remote cannot be reached.
    """
    from .graph import plan

    resolved = configured(remote)
    resolved.signing_key()
    store = Store.open(cache_dir)
    the_plan = plan(targets, store)
    the_plan.check_inputs()
    return pull(the_plan, store, resolved, emit)


def configured(remote: Remote | str | None) -> Remote:
    """The remote to use (``$CP_REMOTE`` when ``remote`` is ``None``).

    Raises:
        RemoteConfigError: there is none.
    """
    resolved = resolve(remote)
    if resolved is None:
        raise RemoteConfigError(
            "No remote cache is configured: give --remote URL, set CP_REMOTE, or add "
            "remote = \"s3://bucket/prefix\" under [tool.checkpoint] in pyproject.toml."
        )
    return resolved


# --- looking after the remote -----------------------------------------------------------------


@dataclass
class RemoteEntry:
    """One entry found on the remote (from its manifest's path and file)."""

    family: str
    task: str
    key: str
    path: str
    modified: float
    manifest_size: int


def entries(remote: Remote, family: str | None = None) -> list[RemoteEntry]:
    """The remote's entries (of one family directory name, or all), from one listing."""
    prefix = f"entries/{family}/" if family else "entries/"
    found = []
    for path, (size, modified) in remote.storage.listing(prefix).items():
        parsed = parse_entry_path(path)
        if parsed is not None:
            found.append(RemoteEntry(*parsed, path=path, modified=modified, manifest_size=size))
    return sorted(found, key=lambda e: (e.family, e.task, e.modified))


def read_manifests(remote: Remote, found: list[RemoteEntry],
                   verify: bool = True) -> dict[str, Manifest | str]:
    """The manifests of entries (by path), checked with the key when there is one (and
    ``verify``), else parsed unverified; a string says why one could not be read."""
    import json

    raw = remote.storage.read_many([e.path for e in found])
    out: dict[str, Manifest | str] = {}
    for path, data in raw.items():
        if data is None:
            out[path] = "gone"
            continue
        try:
            if remote.key and verify:
                out[path] = Manifest.verified(data, remote.key)
            else:
                body = json.loads(data)
                body.pop("signature", None)
                files = body.pop("data", None)
                known = {n for n in Manifest.__dataclass_fields__ if n != "extra"}
                manifest = Manifest(**{k: v for k, v in body.items() if k in known})
                manifest.data = None if files is None else [DataFile(**f) for f in files]
                out[path] = manifest
        except RefusedEntry as exc:
            out[path] = exc.reason
        except (ValueError, TypeError) as exc:
            out[path] = f"unreadable manifest ({exc})"
    return out


@dataclass
class Usage:
    """What a remote holds."""

    entries: int = 0
    objects: int = 0
    bytes: int = 0
    """Bytes of all its files (manifests, packs and objects)."""
    by_family: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``{family: (entries, bytes of their values and data files)}``."""


def usage(remote: Remote) -> Usage:
    """Count a remote's entries, objects and bytes (one listing, plus its manifests)."""
    found = entries(remote)
    objects = remote.storage.listing("objects/")
    result = Usage(entries=len(found), objects=len(objects))
    packs = remote.storage.listing("packs/")
    result.bytes = (sum(size for size, _ in objects.values()) + sum(e.manifest_size for e in found)
                    + sum(size for size, _ in packs.values()))
    for path, manifest in read_manifests(remote, found).items():
        family = path.split("/")[1]
        count, total = result.by_family.get(family, (0, 0))
        size = manifest.size + sum(f.size for f in manifest.data or ()) \
            if isinstance(manifest, Manifest) else 0
        result.by_family[family] = (count + 1, total + size)
    return result


@dataclass
class PrunePlan:
    """What :func:`prune` removes (or would remove)."""

    entries: list[RemoteEntry] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    """Objects no remaining manifest names (older than the grace period)."""
    temporary: list[str] = field(default_factory=list)
    packs: list[str] = field(default_factory=list)
    """Packs pushed before ``older_than`` (their entries' manifests go too)."""
    bytes: int = 0


def prune(remote: Remote, *, older_than: float | None = None, family: str | None = None,
          dry_run: bool = False, now: float | None = None) -> PrunePlan:
    """Remove entries and packs last pushed more than ``older_than`` seconds ago (of one
    family directory name, or all) and damaged manifests, then the objects no manifest or
    pack names any more and leftover temporary files. Objects and temporary files younger than ``GRACE_SECONDS`` stay: a
    push in progress uploads its objects before its manifests."""
    now = time.time() if now is None else now
    result = PrunePlan()
    found = entries(remote)
    for e in found:
        if older_than is not None and now - e.modified > older_than and family in (None, e.family):
            result.entries.append(e)
    removed = {e.path for e in result.entries}
    keep = [e for e in found if e.path not in removed]
    referenced: set[str] = set()
    # Signed with any key: what another key's users pushed is theirs to prune.
    for path, manifest in read_manifests(remote, keep, verify=False).items():
        if isinstance(manifest, Manifest):
            referenced.update(manifest.objects())
            referenced.add(manifest.sha256)
        elif manifest != "gone" and family in (None, path.split("/")[1]):
            result.entries.append(next(e for e in keep if e.path == path))  # damaged
    packs = remote.storage.listing("packs/")
    kept_packs = []
    for path, (size, modified) in packs.items():
        if path.rsplit("/", 1)[-1].startswith(".tmp-"):
            continue  # below
        if older_than is not None and now - modified > older_than \
                and family in (None, path.split("/")[1]):
            result.packs.append(path)
            result.bytes += size
        else:
            kept_packs.append(path)
    for content in remote.storage.read_many(kept_packs).values():
        for line in (content or b"").splitlines():
            referenced.update(_references(line))
    listing = remote.storage.listing("objects/")
    for path, (size, modified) in listing.items():
        name = path.rsplit("/", 1)[-1]
        young = now - modified < GRACE_SECONDS
        if name.startswith(".tmp-"):
            if not young:
                result.temporary.append(path)
        elif name not in referenced and not young:
            result.objects.append(path)
            result.bytes += size
    for path, (_size, modified) in [*remote.storage.listing("entries/").items(), *packs.items()]:
        if path.rsplit("/", 1)[-1].startswith(".tmp-") and now - modified >= GRACE_SECONDS:
            result.temporary.append(path)
    result.bytes += sum(e.manifest_size for e in result.entries)
    if not dry_run:
        remote.storage.delete([e.path for e in result.entries] + result.packs)
        remote.storage.delete(result.objects + result.temporary)
    return result


def _references(line: bytes) -> set[str]:
    """The objects a manifest names (read unverified: for keeping objects, not loading)."""
    import json

    try:
        body = json.loads(line)
        found = {str(f["sha256"]) for f in body.get("data") or ()}
        if body.get("inline") is None:
            found.add(str(body["sha256"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return set()
    return found
