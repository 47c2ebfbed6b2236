"""Files a finished task may have read that changed before its entry is stored.

A task with ``Product`` outputs or ``File`` inputs upstream (the producers that
:class:`~checkpoint._values.StampContext` names in its stamp) may have read them. Those of
its prerequisites are checked when its result arrives (:meth:`ReadChecks.check`), the others
once, for every reader that ended by then, just before entries are stored
(:meth:`ReadChecks.check_readers`, called by the :class:`~checkpoint._recorder.Recorder`).
A file found changed makes the reader's entry stale (a ``read:`` key no task records),
announced with an ``InputChanged`` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from . import events as ev
from ._flow import RunState
from ._text import first_five
from ._types import TaskId
from ._values import StampContext
from ._worker import Done, worker_id
from .files import (
    INPUT,
    READ,
    Checked,
    DigestCache,
    changed_outputs,
    changed_source_inputs,
)
from .graph import Node
from .store import Meta
from .task import Task


class ReadChecks:
    """The checks of the files upstream of the readers, and what they found."""

    def __init__(self, state: RunState, stamp_context: StampContext,
                 digests: Callable[[], DigestCache]) -> None:
        self.nodes = state.nodes
        self.values = state.values
        self.emit = state.emit
        self.stamp_context = stamp_context
        self._digests = digests
        """The project's digest cache (opened on first use)."""
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

    def new_batch(self) -> None:
        """The outcomes of another batch are handled from now on."""
        self.batch_at = time.time()

    def check(self, node: Node, out: Done, meta: Meta) -> None:
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
        shown = first_five([f"{path} of {owner!r}" for path, owner in moved])
        self.emit(ev.InputChanged(node.task, tuple(path for path, _ in moved), (
            f"The input {shown} changed {before}: {reader} may have read either "
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
            shown = first_five([f"{path} of {producer!r}" for path, producer, _ in found])
            what = (f"{len(found)} outputs of tasks upstream of {reader} ({shown}) "
                    f"changed after their tasks wrote them and {before}")
        self.emit(ev.InputChanged(node.task, tuple(path for path, _, _ in found), (
            f"{what}: {reader} may have read either content, so its result is stored as stale "
            "and runs again next time. A Product is written by its task alone: a task "
            "that changes it should write its own Product, and no other program should "
            "write it during a run."
        )))
