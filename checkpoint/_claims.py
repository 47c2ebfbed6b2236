"""A task against the other runs on the same cache: lock it before computing it, and share
the locks of the tasks upstream of it whose files it may read (see :mod:`checkpoint._runlock`).

A run alone takes no task locks (:class:`~checkpoint._coordination.Coordination` checks
now and then whether another run has arrived). In locking mode, a task another run holds
waits (``Coordination.blocked``); a result another run stored meanwhile is adopted; a
prerequisite another run cleared is recomputed.

A running task may read the files (a data directory, declared outputs) of any task upstream
of it, not only of its prerequisites: a value may be a path to them, passed on by the tasks
in between (``best()`` returning the directory of the model it picked). So it shares the
lock of every task upstream that owns files. Those are counted on the graph, not listed
per task: a task *reads through* each prerequisite that owns files or has such a task
upstream (``_linked``), and such a task is read while a running task or a task read through
counts it (``_active``); its lock is shared from its first count to its last. A chain of
readers (each reading the one before) then shares a new lock per task, not the whole chain
again: the counts of a task that returned are given back only after the tasks that became
ready with it have taken theirs (:meth:`Claims.release`).
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
        """Whether a task, or one upstream of it, owns files (filled as tasks are taken)."""
        self._owners: set[TaskId] = set()
        """The tasks seen by ``_linked`` that own files."""
        self._active: dict[TaskId, int] = {}
        """The linked tasks being read: how many running tasks and tasks read through
        count each (see the module docstring)."""

    def check_others(self, in_flight: list[TaskId], flush: Callable[[], None]) -> None:
        """Alone so far: if another run has arrived, lock the tasks ``in_flight`` (and share
        what they read) and switch to locking mode."""
        def read() -> None:  # no other run has locked anything yet: every share succeeds
            for tid in in_flight:
                roots = self.read_through(tid)
                taken = [root for root in roots if self._activate(root, [])]
                self.coordination.reading[tid] = taken

        self.coordination.check_others(lambda: in_flight, read, flush)

    def read_through(self, tid: TaskId) -> list[TaskId]:
        """The prerequisites of ``tid`` that own files or have such a task upstream."""
        return [dep for dep in self.nodes[tid].deps if self._fill(dep)]

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
            node = self.nodes[top]
            owns = node.task.spec().has_data_dir or (
                node.files is not None and bool(node.files.outputs))
            if owns:
                self._owners.add(top)
            linked[top] = owns or any(linked[dep] for dep in deps)
        return linked[tid]

    def _activate(self, root: TaskId, shared: list[TaskId]) -> bool:
        """Count one more reader of ``root`` (and, the first time, of what it reads
        through), sharing the lock of each task that owns files from its first count;
        ``shared`` gets those whose lock this run did not hold yet. False (nothing
        counted) when another run holds one: it is recomputing it."""
        active, coordination = self._active, self.coordination
        counted: list[TaskId] = []
        mark = len(shared)
        stack = [root]
        while stack:
            tid = stack.pop()
            count = active.get(tid, 0)
            if count == 0 and tid in self._owners:
                known = tid in coordination.readers or tid in coordination.held
                if not coordination.share(tid):
                    for taken in reversed(counted):
                        self._uncount(taken)
                    del shared[mark:]
                    return False
                if not known:
                    shared.append(tid)
            active[tid] = count + 1
            counted.append(tid)
            if count == 0:
                stack.extend(dep for dep in self.nodes[tid].deps if self._linked[dep])
        return True

    def _uncount(self, tid: TaskId) -> bool:
        """One reader less of ``tid``; True when it was the last (its lock is given back)."""
        count = self._active[tid] - 1
        if count:
            self._active[tid] = count
            return False
        del self._active[tid]
        if tid in self._owners:
            self.coordination.unshare(tid)
        return True

    def _deactivate(self, root: TaskId) -> None:
        """Undo one :meth:`_activate` of ``root``."""
        stack = [root]
        while stack:
            tid = stack.pop()
            if self._uncount(tid):
                stack.extend(dep for dep in self.nodes[tid].deps if self._linked[dep])

    def release(self) -> None:
        """Give back the reads of the tasks that returned (``Coordination.ended``), once the
        tasks that became ready since have taken theirs."""
        ended = self.coordination.ended
        while ended:
            self._deactivate(ended.pop())

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
        """Share the locks of every task upstream of ``tid`` whose data directory or
        declared outputs it may read, so that no other run empties or rewrites them
        meanwhile; False (``tid`` blocked) while another run recomputes one. One another
        run stored since is adopted; one it cleared is recomputed first."""
        coordination = self.coordination
        roots = self.read_through(tid)
        shared: list[TaskId] = []  # whose lock this run takes now: read their entries
        for i, root in enumerate(roots):
            if not self._activate(root, shared):
                for taken in roots[:i]:
                    self._deactivate(taken)
                coordination.blocked.append(tid)
                return False
        for dep in shared:
            if self.readiness.get(dep) is not TaskState.DONE:
                continue
            node = self.nodes[dep]
            family = node.task.family.dirname
            self.store.indexes.drop_stale((family,))  # its index deleted with the family?
            meta = self.store.get_meta(family, dep)
            if meta is None:  # cleared by another process: its files are gone
                for taken in roots:
                    self._deactivate(taken)
                if self.flow.damaged(dep, f"The stored result of {node.task!r} "
                                     f"({node.task.family.name}) was removed or replaced "
                                     "while this run needed it; it will be recomputed.", tid):
                    self.readiness.wait_for(tid, [*self.nodes[tid].deps, dep])
                return False
            if meta.stamp != self.values.stamp(dep):
                node.meta = meta
                self.values.adopted(dep, meta)
        coordination.reading[tid] = roots
        return True
