"""A task's :class:`~checkpoint._worker.WorkItem`: what a worker is sent to run it.

:class:`WorkItems` makes one per task submitted: the inner function itself or the call that
rebuilds it in a process worker (:func:`rebuildable`), the template of its requirements
(references to prerequisites, its emptied data directory, its files), its value file
directory and its time limit.
"""

from __future__ import annotations

from ._captured import only_arguments
from ._flow import RunState
from ._isolation import enclosing_cells
from ._text import task_label
from ._types import DebugMode, ExecutorKind, FamilyDir
from ._worker import Ref, WorkItem
from .files import File
from .task import Task, TaskDirectory


class WorkItems:
    """Makes the work items of one run's tasks (with the run's debug mode and time limit)."""

    def __init__(self, state: RunState, kind: ExecutorKind, *, debug: DebugMode | None,
                 show_locals: bool, timeout: float | None, manifests: bool = False) -> None:
        self.values = state.values
        self.coordination = state.coordination
        self.store = state.store
        self.pickled = kind is ExecutorKind.PICKLED
        self.manifests = manifests
        """Whether batches carry the module values their tasks' fingerprints read (a family
        is fingerprinted before its first batch is sent, or that batch's manifest lacks it)."""
        self.debug = debug
        """Debug mode of every task (in-process runs only)."""
        self.show_locals = show_locals
        self.timeout = timeout
        self.store_root = str(state.store.root)
        self.blob_dirs: dict[FamilyDir, str] = {}

    def make(self, task: Task[object]) -> WorkItem:
        """The work item of ``task`` (its data directory, if it has one, emptied now)."""
        spec = task.spec()
        template = [self._template(req, task) for req in spec.requirements]
        family = task.family
        if self.manifests:  # what it reads goes into this batch's manifest
            family.fingerprint  # noqa: B018 - computed once per run, then cached
        if self.pickled and rebuildable(task) and only_arguments(family, spec.fn):
            item = WorkItem.rebuilding(task.id, (family, task.args, task.kwargs), template,
                                       family.compress_level)
        else:
            code = getattr(spec.fn, "__code__", None)
            item = WorkItem.running(task.id, spec.fn, template, family.compress_level,
                                    filename=code.co_filename if self.pickled and code else "")
            item.enclosing = enclosing_cells(family.fn, spec.fn)
        item.blob_dir = self._blob_dir(family.dirname)
        item.root = self.store_root
        item.debug = self.debug
        item.show_locals = self.show_locals
        limit = family.timeout if family.timeout is not None else self.timeout
        if limit:
            item.timeout, item.label = limit, task_label(task)
        return item

    def _template(self, req: object, task: Task[object]) -> object:
        if isinstance(req, Task):
            return Ref(req.id)
        if isinstance(req, TaskDirectory):
            if task.id in self.values.entries or self.coordination.locking:
                # Its directory is about to be emptied: the stored entry that goes with it
                # must not outlive it (a failure, an interrupt, or another run adopting it
                # would leave a fresh entry with an empty directory). Alone, this run knows
                # every entry there is; with others, one may have stored it since the plan.
                # So an entry found later was stored after this emptying, by a run that
                # filled the directory again: it is adopted like any other.
                self.store.delete(task.family.dirname, task.id)
            return self.store.prepare_data_dir(task.family.dirname, task.id)
        if isinstance(req, File):  # File or Product: resolved where the task runs
            return req.keyed()
        if isinstance(req, list):
            return [self._template(r, task) for r in req]
        if isinstance(req, dict):
            return {k: self._template(v, task) for k, v in req.items()}
        raise AssertionError(f"unexpected requirement {req!r}")

    def _blob_dir(self, family: FamilyDir) -> str:
        path = self.blob_dirs.get(family)
        if path is None:
            path = self.blob_dirs[family] = str(self.store.blob_dir(family))
        return path


def rebuildable(task: Task[object]) -> bool:
    """Whether a process worker can rebuild the task's inner function by calling its outer
    function again (:meth:`WorkItem.rebuilding`): not for a class task (its ``spec.fn`` is
    already small: its plain attributes, no handles) nor for one whose arguments hold
    tasks (``$task`` in its encoding), which would be planned again in the worker. It is
    done only for an inner function that holds its arguments alone
    (:func:`~checkpoint._captured.only_arguments`): what else the outer function computed
    (a config it read, an environment variable) travels as it was planned, or a worker
    would compute with its own, under the planned value's digest; but one that cannot be
    pickled (a lock, a client) is made again in the worker
    (:meth:`Submitter._unpicklable <checkpoint._submission.Submitter._unpicklable>`)."""
    return not task.family.is_class and "$task" not in task.encoded
