"""A task against the other runs on the same cache: lock it before computing it, and share
the locks of the prerequisites whose files it reads (see :mod:`checkpoint._runlock`).

A run alone takes no task locks (:class:`~checkpoint._coordination.Coordination` checks
now and then whether another run has arrived). In locking mode, a task another run holds
waits (``Coordination.blocked``); a result another run stored meanwhile is adopted; a
prerequisite another run cleared is recomputed.
"""

from __future__ import annotations

from collections.abc import Callable

from ._flow import RunState, TaskFlow
from ._readiness import TaskState
from ._types import Reason, TaskId
from .graph import entry_is_current


class Claims:
    """Locking mode: what a task takes before it runs."""

    def __init__(self, state: RunState, flow: TaskFlow) -> None:
        self.nodes = state.nodes
        self.readiness = state.readiness
        self.values = state.values
        self.coordination = state.coordination
        self.flow = flow
        self.store = state.store

    def check_others(self, in_flight: list[TaskId], flush: Callable[[], None]) -> None:
        """Alone so far: if another run has arrived, lock the tasks ``in_flight`` (and share
        what they read) and switch to locking mode."""
        reading = self.coordination.reading

        def read() -> list[TaskId]:
            for tid in in_flight:
                reading[tid] = self.file_deps(tid)
            return [dep for tid in in_flight for dep in reading[tid]]

        self.coordination.check_others(lambda: in_flight, read, flush)

    def file_deps(self, tid: TaskId) -> list[TaskId]:
        """The prerequisites of ``tid`` that own files it may read: a data directory, or
        declared outputs (``Product``), which another run would empty or rewrite."""
        deps = []
        for dep in self.nodes[tid].deps:
            node = self.nodes[dep]
            if node.task.spec().has_data_dir or (node.files is not None and node.files.outputs):
                deps.append(dep)
        return deps

    def take(self, tid: TaskId) -> bool:
        """Claim ``tid`` and share what it reads; False if it must not run now."""
        return self.claim(tid) and self.share(tid)

    def claim(self, tid: TaskId) -> bool:
        """Lock a task before computing it; False if it must not run now (another run
        holds it, or stored a current result meanwhile, which is adopted)."""
        if not self.coordination.claim(tid):
            return False
        node = self.nodes[tid]
        if node.reason == Reason.FORCED:
            return True
        family = node.task.family.dirname
        self.store.indexes.drop_stale((family,))  # another process may have cleared it meanwhile
        meta = self.store.get_meta(family, tid)
        if meta is None or self.values.is_damaged(tid, meta):
            return True
        if meta.fingerprint == node.task.family.fingerprint[0] and entry_is_current(
            meta, node.deps, self.values.stamp, node.files, outputs=False, shape=node.shape
        ):
            self.flow.adopt(tid, meta)
            return False
        return True

    def share(self, tid: TaskId) -> bool:
        """Share the locks of the prerequisites whose data directory or declared outputs
        ``tid`` reads, so that no other run empties or rewrites them meanwhile; False
        (``tid`` blocked) while another run recomputes one. A prerequisite another run
        stored since is adopted."""
        coordination = self.coordination
        shared: list[TaskId] = []
        for dep in self.file_deps(tid):
            if not coordination.share(dep):
                for taken in shared:
                    coordination.unshare(taken)
                coordination.blocked.append(tid)
                return False
            shared.append(dep)
            if dep not in coordination.held and self.readiness.get(dep) is TaskState.DONE:
                node = self.nodes[dep]
                family = node.task.family.dirname
                self.store.indexes.drop_stale((family,))  # its index deleted with the family?
                meta = self.store.get_meta(family, dep)
                if meta is None:  # cleared by another process: its directory is gone
                    for taken in shared:
                        coordination.unshare(taken)
                    if self.flow.damaged(dep, f"The stored result of {node.task!r} "
                                         f"({node.task.family.name}) was removed or replaced "
                                         "while this run needed it; it will be recomputed.", tid):
                        self.readiness.wait_for(tid, self.nodes[tid].deps)
                    return False
                if meta.stamp != self.values.stamp(dep):
                    node.meta = meta
                    self.values.adopted(dep, meta)
        coordination.reading[tid] = shared
        return True
