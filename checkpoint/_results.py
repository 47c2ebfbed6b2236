"""What a task's outcome becomes: a result its stored entry, a failure its error.

A result (:class:`~checkpoint._worker.Done`) gets its stamp (a digest of its value in its
context, :mod:`checkpoint._stamps`), its metadata (:class:`~checkpoint.store.Meta`: the
stamps of the values it was given, its input files, the files it wrote) and a record for
the :class:`~checkpoint._recorder.Recorder`; its value then serves its dependents
(:class:`~checkpoint._values.RunValues`). A failure (:class:`~checkpoint._worker.Failed`)
becomes the task's exception, retried while it has attempts left
(:class:`~checkpoint._recovery.Recovery`).
"""

from __future__ import annotations

import os
import time

from . import events as ev
from ._codec import load
from ._flow import RunState, TaskFlow
from ._packages import Versions, versions_text
from ._readchecks import ReadChecks
from ._recovery import Recovery
from ._stamps import in_context, value_stamp
from ._types import TaskId
from ._values import StampContext
from ._worker import Done, Failed, worker_id
from .errors import UnserializableResultError
from .files import (
    CACHE_NAME,
    INPUT,
    DigestCache,
    changed_inputs,
    with_outputs,
)
from .graph import Node
from .store import Meta, Record, new_stamp
from .task import Task


class Results:
    """Outcomes into entries and errors."""

    def __init__(self, state: RunState, flow: TaskFlow, recovery: Recovery,
                 targets: set[TaskId]) -> None:
        self.nodes = state.nodes
        self.admission = state.admission
        self.values = state.values
        self.recorder = state.recorder
        self.result = state.result
        self.emit = state.emit
        self.flow = flow
        self.recovery = recovery
        self.store = state.store
        self.store_root = str(state.store.root)
        self.targets = targets
        self.stamp_context = StampContext(state.nodes)
        self.input_digests: DigestCache | None = None
        self.reads = ReadChecks(state, self.stamp_context, self._digests)
        self.recorder.checks_owed = self.reads.checks_owed
        self.recorder.before_store = self.reads.check_readers
        self.sources_sent: set[str] = set()
        """The code fingerprints whose source went with a record already."""
        self.versions = Versions()
        self.package_versions: dict[str, str] = {}
        """Code fingerprint -> the versions of the installed packages its code uses (JSON;
        ``""``: none known)."""

    def finished(self, out: Done) -> None:
        """A task returned: record its entry, keep its value for its readers, settle it."""
        tid = out.id
        node = self.nodes[tid]
        task, family = node.task, node.task.family
        out.output = self.recovery.earlier_output(tid) + out.output
        fingerprint = self._code_edited(node, family.fingerprint, out)
        meta = self._entry(out, node, self.values.given.pop(tid), fingerprint[0])
        previous = self.values.entries.get(tid)
        self.recorder.add(Record(
            family.dirname, tid, meta, out.payload, source=self._source(fingerprint),
            log=out.output, replaces=previous.blob if previous is not None else "",
            packages=self._packages(family.fingerprint[0]),
        ))
        held = self.values.stored(tid, meta, out.payload)
        if tid in self.targets:
            self.result.values[tid] = load(held, self.store_root)
        self.result.ran.append(task)
        self.result.durations[tid] = out.duration
        self.admission.observe(family.queue, out.duration)
        if self.emit:
            self.emit(ev.TaskFinished(task, time.time(), out.duration, out.size,
                                      out.output, out.worker, out.started))
        self.flow.settled(tid, done=True)

    def _entry(self, out: Done, node: Node, given: dict[TaskId, str], code: str) -> Meta:
        """The stored entry of ``out``, computed by the code whose fingerprint is ``code``
        from the values whose stamps are ``given``."""
        task, family = node.task, node.task.family
        moved = self._inputs_moved(node)
        stamp = self._stamp(out, task, given)  # before recorded_deps adds to ``given``
        meta = Meta(
            expr=task.expression(),
            args=task.encoded,
            fingerprint=code,
            stamp=stamp,
            deps=node.recorded_deps(given, out.outputs),
            size=out.size,
            crc=out.crc,
            compressed=family.compress_level != 0,
            blob=out.blob,
            started=out.started,
            duration=out.duration,
            stored=time.time(),
            worker=out.worker,
            log=bool(out.output),
        )
        for path in moved:  # never current: it runs again next time
            meta.deps[INPUT + path] = ""
        # The stamp names the files the task read (as planned; "" for one edited while it
        # ran) and wrote: a dependent may be handed their paths, or name them in its code.
        files: dict[str, str] = {}
        if node.files is not None and node.files.digests:
            deps = meta.deps
            files = {key: deps[key] for key in node.files.digests if key.startswith(INPUT)}
        if out.outputs:
            files.update(out.outputs)
        if files:
            meta.stamp = with_outputs(meta.stamp, files)
        self.reads.check(node, out, meta)
        return meta

    def _stamp(self, out: Done, task: Task[object], given: dict[TaskId, str]) -> str:
        """A task's stamp names its value and the code that made it (StampContext): a
        recomputation that gives the same value from the same code keeps its dependents
        current (early cutoff; see checkpoint._stamps), and new code upstream never does.
        Not for a task with a data directory: its value (often a path) does not show what
        the directory holds."""
        if out.classes:
            self.stamp_context.named_classes(out.id, out.classes)
        if out.unpickled:
            self.stamp_context.named_classes(out.id, out.unpickled, unpickled=True)
        if task.spec().has_data_dir:
            return new_stamp()
        compressed = task.family.compress_level != 0
        context = self.stamp_context.digest(out.id, given, out.payload, compressed)
        if out.payload is not None:  # from the worker's checksum of it: not hashed again
            return in_context(value_stamp(out.payload, compressed, out.crc), context)
        if out.stamp:  # written to its file by the worker, which hashed it
            return in_context(out.stamp, context)
        return new_stamp()

    def _packages(self, code: str) -> str:
        """The versions of the installed packages that the code of fingerprint ``code``
        uses (``""``: none), looked up once per run (see :mod:`checkpoint._packages`)."""
        versions = self.package_versions.get(code)
        if versions is None:
            from .fingerprint import code_packages

            packages = code_packages.get(code)
            recorded = self.versions.record(packages) if packages else {}
            versions = self.package_versions[code] = versions_text(recorded) if recorded else ""
        return versions

    def _source(self, fingerprint: tuple[str, str]) -> tuple[str, str] | None:
        """A family's code fingerprint and source, with its first record of the run."""
        if fingerprint[0] in self.sources_sent:
            return None
        self.sources_sent.add(fingerprint[0])
        return fingerprint

    def _code_edited(self, node: Node, fingerprint: tuple[str, str], out: Done) -> tuple[str, str]:
        """The fingerprint to record for ``out``: the family's, or, when the file of a module
        its code imports as it runs was edited since the fingerprint was taken (the task may
        have loaded either version), one that no code has, announced: the result is stale
        and runs again next time, and ``why`` shows the files."""
        from .fingerprint import code_files, edited_since

        if not code_files.get(fingerprint[0]):
            return fingerprint
        local = out.worker.rpartition(":")[0] == worker_id().rpartition(":")[0]
        edited = edited_since(fingerprint[0], out.started + out.duration if local else None)
        if not edited:
            return fingerprint
        names = ", ".join(_shown(f) for f in edited)
        if self.emit:
            self.emit(ev.InputChanged(node.task, tuple(edited), (
                f"The code of {node.task!r} changed while it ran ({names}): its result may "
                "come from either version, so it is stored as stale and runs again next time."
            )))
        return (fingerprint[0] + "~edited",
                f"{fingerprint[1]}\n\n# edited while the task ran: {names}")

    def _digests(self) -> DigestCache:
        """The project's digest cache, opened on first use (a run without files never does)."""
        if self.input_digests is None:
            self.input_digests = DigestCache(self.store.root / CACHE_NAME, os.getcwd())
        return self.input_digests

    def _inputs_moved(self, node: Node) -> list[str]:
        """The ``File`` inputs of the task edited while it ran (one ``os.stat`` each when
        unchanged), announced: its result is then recorded as stale."""
        if node.files is None or not node.files.digests:
            return []
        moved = changed_inputs(node.files, self._digests())
        if moved and self.emit:
            names = ", ".join(moved)
            self.emit(ev.InputChanged(node.task, tuple(moved), (
                f"The input {names} of {node.task!r} changed while it ran: its result may "
                "come from either content, so it is stored as stale and runs again next time."
            )))
        return moved

    def new_batch(self) -> None:
        """The outcomes of another batch are handled from now on."""
        self.reads.new_batch()

    def failed(self, out: Failed) -> None:
        """A task raised: retry it, or it fails for good."""
        error = self._error(out)
        self.values.given.pop(out.id, None)
        if self.recovery.retry(out, error):
            return
        out.output = self.recovery.earlier_output(out.id) + out.output
        self.flow.fail_now(out.id, error, out)

    def _error(self, out: Failed) -> BaseException:
        """The exception a failure reports: its own, or an
        :class:`UnserializableResultError` around it."""
        error = out.error
        if out.unpicklable_result:
            task = self.nodes[out.id].task
            wrapped = UnserializableResultError(
                f"The result of task {task!r} cannot be pickled, so it cannot be stored: "
                f"{type(error).__name__}: {error}. Return picklable data (or save the object "
                "to a TaskDirectory() and return its path).",
                task=repr(task), family=task.family.name,
            )
            wrapped.__cause__ = error
            return wrapped
        return error


def _shown(path: str) -> str:
    """``path`` relative to the working directory (the project root) when inside it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
