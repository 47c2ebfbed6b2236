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
        self._linked: dict[TaskId, bool] = {}
        """Whether a task, or one upstream of it, owns files (see :meth:`file_deps`)."""

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
        """The tasks upstream of ``tid`` that own files it may read: a data directory, or
        declared outputs (``Product``), which another run would empty or rewrite. Not only
        its prerequisites: a value may be a path to such files, passed on by the tasks in
        between (``best()`` returning the directory of one of the models it compares)."""
        linked = self._linked
        stack = [dep for dep in self.nodes[tid].deps if self._fill(dep)]
        owners: list[TaskId] = []
        seen = set(stack)
        while stack:
            dep = stack.pop()
            if self._owns_files(dep):
                owners.append(dep)
            for up in self.nodes[dep].deps:
                if up not in seen and linked[up]:
                    seen.add(up)
                    stack.append(up)
        return owners

    def _owns_files(self, tid: TaskId) -> bool:
        node = self.nodes[tid]
        return node.task.spec().has_data_dir or (node.files is not None and bool(node.files.outputs))

    def _fill(self, tid: TaskId) -> bool:
        """Whether ``tid``, or a task upstream of it, owns files; known (``_linked``) for
        each task once per plan, its upstream included (iterative: a chain may be 100,000
        deep)."""
        linked = self._linked
        known = linked.get(tid)
        if known is not None:
            return known
        stack = [tid]
        while stack:
            top = stack[-1]
            if top in linked:
                stack.pop()
                continue
            deps = self.nodes[top].deps
            todo = [dep for dep in deps if dep not in linked]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            linked[top] = self._owns_files(top) or any(linked[dep] for dep in deps)
        return linked[tid]

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
        """Share the locks of the tasks upstream whose data directory or declared outputs
        ``tid`` may read (:meth:`file_deps`), so that no other run empties or rewrites them
        meanwhile; False (``tid`` blocked) while another run recomputes one. One another
        run stored since is adopted; one it cleared is recomputed first."""
        coordination = self.coordination
        shared: list[TaskId] = []
        for dep in self.file_deps(tid):
            # Already shared (or held) by this run: no other run changed it since.
            checked = dep in coordination.readers or dep in coordination.held
            if not coordination.share(dep):
                for taken in shared:
                    coordination.unshare(taken)
                coordination.blocked.append(tid)
                return False
            shared.append(dep)
            if not checked and self.readiness.get(dep) is TaskState.DONE:
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
                        self.readiness.wait_for(tid, [*self.nodes[tid].deps, dep])
                    return False
                if meta.stamp != self.values.stamp(dep):
                    node.meta = meta
                    self.values.adopted(dep, meta)
        coordination.reading[tid] = shared
        return True
