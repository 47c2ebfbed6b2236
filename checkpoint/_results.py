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
from collections.abc import Collection

from . import events as ev
from ._codec import load
from ._flow import RunState, TaskFlow
from ._packages import Versions, versions_text
from ._recovery import Recovery
from ._stamps import in_context, value_stamp
from ._types import TaskId
from ._values import StampContext
from ._worker import Done, Failed, worker_id
from .errors import UnserializableResultError
from .files import (
    CACHE_NAME,
    INPUT,
    READ,
    Checked,
    DigestCache,
    changed_inputs,
    changed_outputs,
    changed_source_inputs,
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
        self.outputs_checked: dict[str, Checked] = {}
        """What the checks of declared outputs found (:func:`changed_outputs`): a check
        made after a reader ended covers it too."""
        self.inputs_checked: dict[tuple[str, frozenset[str]], tuple[str | None, float]] = {}
        """What the checks of ``File`` inputs upstream of a reader found
        (:func:`changed_source_inputs`): the digest and when it was taken."""
        self.batch_at = 0.0
        """When the batch being handled was taken (its tasks had all ended by then)."""
        self.readers_owed: list[tuple[Node, Meta, float, frozenset[TaskId]]] = []
        """The tasks with Products upstream (not only of prerequisites) whose entries wait
        for :meth:`check_readers`: each with its entry, when it ended, and those producers."""
        self.last_check = (0, 0.0)
        """How many producers the last :meth:`check_readers` checked, and in how long."""
        self.producers: list[TaskId] | None = None
        """The tasks of the plan that declare outputs (once a check needs them)."""
        self.recorder.checks_owed = self.checks_owed
        self.recorder.before_store = self.check_readers
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
        self._check_read(node, out, meta)
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
        self.batch_at = time.time()

    def _check_read(self, node: Node, out: Done, meta: Meta) -> None:
        """The task has Products or ``File`` inputs upstream (files it may have read: the
        prerequisites that :class:`StampContext` names in its stamp, and theirs): those of
        its prerequisites are checked now (one ``os.stat`` each when unchanged), the others
        before its entry is stored (:meth:`check_readers`: one check for every reader that
        ended by then). A file found changed makes its entry stale (a ``read:`` key),
        announced. A task with no files upstream costs a lookup."""
        producers = self.stamp_context.producers_upstream(node.task.id)
        if not producers:
            return
        ended = self.batch_at  # (a worker on this machine: its own end, by the same clock)
        if out.worker.rpartition(":")[0] == worker_id().rpartition(":")[0]:
            ended = min(ended, out.started + out.duration + 0.01)
        direct = {dep for dep in node.deps if dep in producers}
        if direct:
            entries = self.values.entries
            found = changed_outputs([(self.nodes[tid], entries.get(tid)) for tid in direct],
                                    self._digests(), self.outputs_checked, ended)
            if found:
                found.sort(key=lambda item: item[0])
                for path, _, _ in found:
                    meta.deps[READ + path] = ""  # never current (no task records the key)
                self._warn_read(node, found, stored=False)
            moved = changed_source_inputs(self._input_owners(direct), self._digests(),
                                          self.inputs_checked, ended)
            if moved:
                for path, _ in moved:
                    meta.deps[READ + path] = ""
                self._warn_inputs(node, moved, stored=False)
        if len(direct) < len(producers):
            self.readers_owed.append((node, meta, ended, producers))

    def checks_owed(self) -> tuple[int, float] | None:
        """While entries wait for :meth:`check_readers`: the size and the duration of the
        last one (the recorder waits for more entries accordingly, see
        :meth:`checkpoint._recorder.Recorder.due`); else ``None``."""
        return (self.last_check[0], self.last_check[1]) if self.readers_owed else None

    def check_readers(self) -> None:
        """Before entries are stored: the declared outputs upstream of the readers among them
        that are no longer what their task wrote, announced; each such reader may have read
        the other content, so its entry is recorded as stale (a ``read:`` key). One check
        of each output (one ``os.stat`` when unchanged) covers every reader that ended
        before it, so a chain of producers costs a check per output and store, not one per
        output and reader (n²/2 for n links)."""
        owed, self.readers_owed = self.readers_owed, []
        if not owed:
            return
        started = time.perf_counter()
        if self.producers is None:
            self.producers = [tid for tid, node in self.nodes.items() if node.files is not None
                              and (node.files.outputs or node.files.inputs)]
        nodes, entries = self.nodes, self.values.entries
        check: Collection[TaskId] = self.producers
        if sum(len(producers) for *_, producers in owed) < len(check):
            check = frozenset().union(*(producers for *_, producers in owed))
        before = dict(self.outputs_checked)  # (when each output was last found unchanged)
        latest = max(ended for _, _, ended, _ in owed)
        found = changed_outputs([(nodes[tid], entries.get(tid)) for tid in check],
                                self._digests(), self.outputs_checked, latest)
        inputs_before = dict(self.inputs_checked)
        moved = changed_source_inputs(self._input_owners(check), self._digests(),
                                      self.inputs_checked, latest)
        self.last_check = (len(check), time.perf_counter() - started)
        if moved:
            self._inputs_owed(owed, moved, inputs_before)
        if not found:
            return
        found.sort(key=lambda item: item[0])
        for node, meta, ended, producers in owed:
            read = []
            for path, producer, gone in found:
                if producer.id not in producers:
                    continue
                if READ + path in meta.deps:
                    continue  # found when it ended
                earlier = before.get(path.rstrip("/"))
                if earlier is not None and earlier[1] == earlier[0] and earlier[2] >= ended:
                    continue  # found unchanged after this reader ended
                read.append((path, producer, gone))
                meta.deps[READ + path] = ""  # never current (a key no task of the plan records)
            if read:
                self._warn_read(node, read, stored=True)

    def _input_owners(self, tids: Collection[TaskId]) -> list[tuple[Node, Meta | None]]:
        """The tasks of ``tids`` with source ``File`` inputs, each with its current entry."""
        nodes, entries = self.nodes, self.values.entries
        return [(nodes[tid], entries.get(tid)) for tid in tids
                if (files := nodes[tid].files) is not None and files.inputs and files.digests]

    def _inputs_owed(self, owed: list[tuple[Node, Meta, float, frozenset[TaskId]]],
                     moved: list[tuple[str, Task[object]]],
                     before: dict[tuple[str, frozenset[str]], tuple[str | None, float]]) -> None:
        """Mark stale the readers in ``owed`` that have an owner of the inputs ``moved``
        upstream and ended after the last check that found that input unchanged."""
        entries = self.values.entries
        for node, meta, ended, producers in owed:
            read = []
            for path, owner in moved:
                if owner.id not in producers or READ + path in meta.deps:
                    continue
                files = self.nodes[owner.id].files
                entry = entries.get(owner.id)
                earlier = before.get((path, files.exclude)) if files is not None else None
                if (earlier is not None and entry is not None
                        and earlier[0] == entry.deps.get(INPUT + path) and earlier[1] >= ended):
                    continue  # found unchanged after this reader ended
                read.append((path, owner))
                meta.deps[READ + path] = ""  # never current (a key no task of the plan records)
            if read:
                self._warn_inputs(node, read, stored=True)

    def _warn_inputs(self, node: Node, moved: list[tuple[str, Task[object]]],
                     stored: bool) -> None:
        """Announce that the ``File`` inputs ``moved`` of tasks upstream changed before
        ``node``'s task finished, or (``stored``) before its result was stored."""
        if self.emit is None:
            return
        reader = repr(node.task)
        before = f"before {reader}'s result was stored" if stored else f"before {reader} finished"
        shown = ", ".join(f"{path} of {owner!r}" for path, owner in moved[:5])
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        self.emit(ev.InputChanged(node.task, tuple(path for path, _ in moved), (
            f"The input {shown}{more} changed {before}: {reader} may have read either "
            "content, so its result is stored as stale and runs again next time."
        )))

    def _warn_read(self, node: Node, found: list[tuple[str, Task[object], bool]],
                   stored: bool) -> None:
        """Announce that the outputs ``found`` changed before ``node``'s task finished, or
        (``stored``: found by a check after it ended) before its result was stored."""
        if self.emit is None:
            return
        reader = repr(node.task)
        before = f"before {reader}'s result was stored" if stored else f"before {reader} finished"
        if len(found) == 1:
            [(path, producer, gone)] = found
            what = (f"{path}, an output of {producer!r}, "
                    f"{'was removed' if gone else 'changed'} after {producer!r} wrote it "
                    f"and {before}")
        else:
            shown = ", ".join(f"{path} of {producer!r}" for path, producer, _ in found[:5])
            more = f" and {len(found) - 5} more" if len(found) > 5 else ""
            what = (f"{len(found)} outputs of tasks upstream of {reader} ({shown}{more}) "
                    f"changed after their tasks wrote them and {before}")
        self.emit(ev.InputChanged(node.task, tuple(path for path, _, _ in found), (
            f"{what}: {reader} may have read either content, so its result is stored as stale "
            "and runs again next time. A Product is written by its task alone: a task "
            "that changes it should write its own Product, and no other program should "
            "write it during a run."
        )))

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
