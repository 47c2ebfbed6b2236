"""Expand targets into a DAG and mark each task fresh or in need of a run.

Expansion is an iterative depth-first search with an explicit stack (no recursion, so a
100,000-deep chain is fine). It calls each task's outer function once, deduplicates tasks
by id, detects cycles (a prerequisite that is still on the stack) and yields the tasks in
topological order: every task after all of its prerequisites.

After the walk, a task's ``File`` input that another task of the DAG declares as its
``Product`` gets that task as a prerequisite (:func:`checkpoint.files.link`); the order is
then re-sorted if a producer came after its consumer.

Marking walks that order once. A task needs a run, for the first reason that applies:

``input missing``     a ``File`` input does not exist (the run stops before anything runs)
``forced``            asked for (``force`` on a target, ``force_upstream`` on all)
``missing``           no stored result
``code changed``      its family's code fingerprint differs from the stored one
``input changed``     the content of a ``File`` input differs from the one it was computed from
``output changed``    a declared output (``Product``) is missing or not what the task wrote
``upstream re-run``   a prerequisite runs in this plan
``upstream changed``  a prerequisite's stored result is not the one it was computed from,
                      or the prerequisites are not where they were in its requirements
                      (:func:`arrangement`)

otherwise it is fresh and is reused without loading its value. The plan is plain dicts and
lists (the hot path); :func:`to_networkx` converts it for analysis and export.
"""

from __future__ import annotations

import hashlib
import operator
import os
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from . import _gcpolicy
from . import files as _files
from ._captured import captured_values
from ._captured import plain as _plain_inner
from ._types import FamilyDir, Reason, TaskId
from .errors import CycleError
from .store import Meta, Store
from .task import Requirement, Spec, Task, TaskDirectory, TaskFamily, interning

File = _files.File

if TYPE_CHECKING:
    import networkx

ARRANGEMENT = "arrangement"
"""The key of ``Meta.deps`` that records how a task's prerequisites and files are arranged
in its requirements (:func:`arrangement`)."""


class Node:
    """One task of a plan."""

    __slots__ = ("task", "deps", "reason", "meta", "files", "_shape")

    def __init__(self, task: Task[object], deps: list[TaskId],
                 shape: str | tuple[TaskId, TaskId] | None = None) -> None:
        # (FileLeaf.__init__ and _leaf_node set the same slots without a call of this: keep
        # them alike.)
        self.task = task
        self.deps = deps
        """Ids of the distinct prerequisites, in declaration order (then the producers of
        its ``File`` inputs)."""
        self._shape = shape
        """:attr:`shape`, or the ids of the two prerequisites it is the digest of (a
        lattice's task: digested when asked, which a dry run of nothing stored never does)."""
        self.reason: Reason | None = None
        """Why the task runs, or ``None`` when it is fresh."""
        self.meta: Meta | None = None
        """The stored entry's metadata, if any."""
        self.files: _files.TaskFiles | None = None
        """Its ``File`` inputs and ``Product`` outputs, if any, and what marking found."""

    @property
    def shape(self) -> str | None:
        """The :func:`arrangement` of its requirements (``None``: their set shows it)."""
        shape = self._shape
        if type(shape) is tuple:
            shape = self._shape = _digest(f"[,{shape[0]},{shape[1]},]")  # (as arrangement's)
        return shape  # type: ignore[return-value]

    def recorded_deps(self, given: dict[str, str], outputs: dict[str, str] | None) -> dict[str, str]:
        """What a result of this task records in ``Meta.deps``: the stamps of the values it
        was given (``given``, updated), its input files' digests (as planned) and its
        declared outputs' (as written)."""
        if self.files is not None:
            given.update(self.files.digests)
            if outputs:
                given.update(outputs)
        if self.shape is not None:
            given[ARRANGEMENT] = self.shape
        return given


_new_node = object.__new__
_NO_DEPS: list[TaskId] = []
"""The prerequisites of a task without requirements (never mutated: linking adds
producers only to tasks with ``File`` inputs, which have their own list)."""


def _leaf_node(task: Task[object]) -> Node:
    """``Node(task, [])`` for a task without requirements, without the call of ``__init__``
    (one per task of a sweep)."""
    node = _new_node(Node)
    node.task, node.deps, node._shape = task, _NO_DEPS, None
    node.reason = node.meta = node.files = None
    return node


class FileLeaf(Node):
    """A leaf task whose one requirement is one ``File`` (a sweep over files has thousands):
    its :class:`~checkpoint.files.TaskFiles` is made when first asked for (``files``). A
    fresh one that :func:`checkpoint.files.check` settles from its plan's record never
    needs one: ``found`` then holds its digests (its entry's ``Meta.deps``, which are
    exactly ``{"file:<path>": digest now}``), and marking reads them there."""

    __slots__ = ("inputs", "found")

    def __init__(self, task: Task[object], inputs: list[File]) -> None:  # noqa: D107
        self.task = task
        self.deps = []
        self._shape = None
        self.reason = None
        self.meta = None
        self.inputs = inputs
        """Its requirements, which are its inputs: ``[File]`` (never mutated)."""
        self.found: dict[str, str] | _files.TaskFiles | None = None
        """``None`` until checked; the digests, when the check settled it from the plan's
        record; its :class:`~checkpoint.files.TaskFiles`, once made."""

    @property
    def files(self) -> _files.TaskFiles:
        """Its inputs and what the check found (made on first use)."""
        found = self.found
        if isinstance(found, _files.TaskFiles):
            return found
        made = _files.one_input(self.inputs)
        if found is not None:
            made.digests = found  # == {key: digest}; never mutated (as check shares it)
        self.found = made
        return made

    @files.setter
    def files(self, value: _files.TaskFiles | None) -> None:
        self.found = value


class Plan:
    """A marked DAG: ``nodes`` in topological order, and the target ids."""

    def __init__(self, nodes: dict[TaskId, Node], targets: list[Task[object]],
                 lacking: list[Node] | None = None) -> None:
        self.nodes = nodes
        self.targets = targets
        self._lacking = lacking
        """The tasks that lack an input or cannot read one, as marking found them (``None``:
        look for them)."""

    @property
    def to_run(self) -> list[TaskId]:
        """Ids of the tasks that need a run, in topological order."""
        return [tid for tid, node in self.nodes.items() if node.reason is not None]

    def __len__(self) -> int:
        return len(self.nodes)

    def check_inputs(self) -> None:
        """Raise if a task of the plan lacks an input file (before anything runs).

        Raises:
            UnreadableInputError: an input exists but cannot be read.
            MissingInputError: naming each such task and file.
        """
        lacking = self._lacking
        if lacking is None:
            lacking = [n for n in self.nodes.values()
                       if n.files is not None and (n.files.missing or n.files.unreadable)]
        if lacking:
            _files.missing_inputs(lacking)


def expand(targets: Iterable[Task[object]], *, keep_specs: bool = True) -> dict[TaskId, Node]:
    """Expand targets into nodes in topological order (prerequisites first).

    ``keep_specs=False`` lets each task forget its spec (inner function, requirements) once
    its node is made: for listings that never run anything, about half the memory of a
    large plan (``Task.spec()`` would call the outer function again).

    Raises:
        CycleError: a task depends on itself, directly or through others.
    """
    return _expand_listing(targets, keep_specs)[0]


def _expand_listing(targets: Iterable[Task[object]], keep_specs: bool = True,
                    ) -> tuple[dict[TaskId, Node], list[Node], list[Node]]:
    """:func:`expand`, and the nodes with files and those that declare outputs (found on
    the way, so that marking need not look for them)."""
    with interning():
        with_files: list[Node] = []
        writing: list[Node] = []
        captured: dict[TaskId, dict[str, str]] = {}
        nodes = _expand(targets, with_files, writing, keep_specs, captured)
        for tid, values in captured.items():  # they ride along with the file digests
            node = nodes[tid]
            if node.files is None:
                node.files = _files.TaskFiles([], [])
            node.files.digests.update(values)
        if writing and _files.link(nodes, with_files, writing):
            nodes = _reorder(nodes)
        return nodes, with_files, writing


def _captured(task: Task[object], spec: Spec, found: dict[TaskId, dict[str, str]]) -> None:
    """Note the values the inner function of ``task`` captured from its outer function that
    count (:mod:`checkpoint._captured`), if any: as they were when the outer function made
    them, before the inner function ran (a spec expanded again keeps its first digests)."""
    values: dict[str, str] | None = getattr(spec, "_captured", None)
    if values is None:
        values = spec._captured = captured_values(task.family, spec.fn) or {}
    if values:
        found[task.id] = values


def _expand(targets: Iterable[Task[object]], with_files: list[Node], writing: list[Node],
            keep_specs: bool, captured: dict[TaskId, dict[str, str]]) -> dict[TaskId, Node]:
    nodes: dict[TaskId, Node] = {}
    for target in targets:
        if target.id in nodes:
            continue
        spec = target.spec()
        fn = spec.fn
        if type(fn) is not types.FunctionType or fn.__code__ not in _plain_inner \
                or fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
            _captured(target, spec, captured)
        on_stack = {target.id}
        stack: list[tuple[Task[object], Spec, Iterator[Task[object]]]] = [
            (target, spec, iter(spec.dependencies))]
        while stack:
            task, spec, pending = stack[-1]
            for dep in pending:
                dep_id = dep.id
                if dep_id in nodes:
                    continue
                if dep_id in on_stack:
                    _raise_cycle([frame[0] for frame in stack], dep)
                dep_spec = dep.spec()
                fn = dep_spec.fn  # (the usual closure, over the parameters alone: nothing)
                if type(fn) is not types.FunctionType or fn.__code__ not in _plain_inner \
                        or fn.__defaults__ is not None or fn.__kwdefaults__ is not None:
                    _captured(dep, dep_spec, captured)
                reqs = dep_spec.requirements
                if not reqs:  # a leaf (most tasks of a sweep): no stack trip
                    nodes[dep_id] = _leaf_node(dep)
                    if not keep_specs:
                        dep._spec = None
                    continue
                if len(reqs) == 1 and type(reqs[0]) is File:  # a leaf reading one file: at once
                    # (Its requirements are its inputs: [File]; its arrangement: None.)
                    node = nodes[dep_id] = FileLeaf(dep, reqs)  # type: ignore[arg-type]
                    with_files.append(node)
                    if not keep_specs:
                        dep._spec = None
                    continue
                if not dep_spec.dependencies:  # only files
                    _add_node(nodes, dep, dep_spec, [], with_files, writing)
                    if not keep_specs:
                        dep._spec = None
                    continue
                on_stack.add(dep_id)
                stack.append((dep, dep_spec, iter(dep_spec.dependencies)))
                break
            else:
                stack.pop()
                task_id = task.id
                on_stack.discard(task_id)
                if spec._files is None:
                    nodes[task_id] = Node(task, [d.id for d in spec.dependencies],
                                          _shape(spec.requirements))
                else:
                    _add_node(nodes, task, spec, [d.id for d in spec.dependencies], with_files,
                              writing)
                if not keep_specs:
                    task._spec = None
    return nodes


def _add_node(nodes: dict[TaskId, Node], task: Task[object], spec: Spec, deps: list[TaskId],
              with_files: list[Node], writing: list[Node]) -> None:
    node = nodes[task.id] = Node(task, deps, _shape(spec.requirements))
    if spec._files is not None:  # per plan: marking fills it in
        node.files = _files.TaskFiles(*spec._files)
        with_files.append(node)
        if spec._files[1]:
            writing.append(node)


def _shape(requirements: list[Requirement]) -> str | tuple[TaskId, TaskId] | None:
    """:func:`arrangement`, with the commonest cases first: none, one task or file, or
    ``@requires([])`` (all ``None``), or two tasks (their ids: :attr:`Node.shape` digests
    them when asked)."""
    if len(requirements) == 2:
        first, second = requirements
        if type(first) is Task and type(second) is Task:
            return first.id, second.id
    elif len(requirements) < 2:
        if not requirements:
            return None
        first = requirements[0]
        kind = type(first)
        if kind is Task or kind is File or (kind is list and not first):
            return None
    return arrangement(requirements)


class _Key:
    __slots__ = ("key",)

    def __init__(self, key: object) -> None:
        self.key = key


_END = object()
_FLAT_LEAVES = frozenset({Task, _files.File})


def arrangement(requirements: list[Requirement]) -> str | None:
    """A digest of where each prerequisite and file is in a task's requirements: the nested
    lists and dicts the inner function receives, with each task's id, each file's path
    (and each dict's keys, in order) in its place. A task's entry records it, so a task
    that gets the same prerequisites in other places (swapped dict keys, a reordered list,
    two ``@requires`` swapped) is stale. ``None`` when the set of prerequisites and files
    already shows it: none, or a single task or file."""
    if len(requirements) == 2 and type(requirements[0]) is Task and type(requirements[1]) is Task:
        return _digest(f"[,{requirements[0].id},{requirements[1].id},]")  # a lattice: as below
    if len(requirements) == 1 and type(requirements[0]) in (Task, _files.File, _files.Product):
        return None
    parts: list[str] = []
    found = False
    root = ""
    stack: list[object] = [requirements]
    while stack:
        item = stack.pop()
        if isinstance(item, Task):
            parts.append(item.id)
            found = True
        elif isinstance(item, list):
            parts.append("[")
            kinds = set(map(type, item)) if type(item) is list else None
            if kinds is not None and kinds <= _FLAT_LEAVES:
                # A flat list of tasks and input files (a task reading many files): in
                # place, as the stack would give them.
                if kinds == _ONLY_FILES:
                    paths = list(map(_file_path, item))
                    if _plain_keys(paths):  # (each is its own key: as key_of gives it)
                        parts.extend(map("F".__add__, map(repr, paths)))
                        parts.append("]")
                        found = found or bool(item)
                        continue
                root = root or os.getcwd()
                key_of = _files.key_of
                for leaf in item:
                    if type(leaf) is Task:
                        parts.append(leaf.id)
                    else:  # (File.key, not kept: only linking asks again)
                        parts.append("F" + repr(key_of(leaf.path, root)))
                parts.append("]")
                found = found or bool(item)
                continue
            stack.append(_END)
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            parts.append("{")
            stack.append(_END)
            for key, value in reversed(item.items()):
                stack.append(value)
                stack.append(_Key(key))
        elif item is _END:
            parts.append("]")
        elif type(item) is _Key:
            parts.append(f"{type(item.key).__qualname__}:{item.key!r}=")
        elif isinstance(item, _files.File):
            root = root or os.getcwd()
            kind = "P" if isinstance(item, _files.Product) else "F"
            parts.append(f"{kind}{item.key(root)!r}")
            found = True
        elif isinstance(item, TaskDirectory):
            parts.append("D")
        else:  # a class task's optional prerequisite left at its default
            parts.append(f"={type(item).__qualname__}:{item!r}")
    return _digest(",".join(parts)) if found else None


_ONLY_FILES = {_files.File}
_file_path = operator.attrgetter("path")


def _plain_keys(paths: list[str]) -> bool:
    """Whether each path is relative and already normal (no ``.``, ``..`` or empty part, no
    trailing ``/``), so that :func:`checkpoint.files.key_of` gives it back as it is: the
    test of ``key_of``, for all of them at once."""
    if os.sep != "/":
        return False
    text = "\0" + "\0".join(paths) + "\0"  # each between NULs (one holding a NUL: the long way)
    return not any(bad in text for bad in ("\0/", "/\0", "//", "/.", "\0."))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _reorder(nodes: dict[TaskId, Node]) -> dict[TaskId, Node]:
    """``nodes`` in a topological order again, after producers were linked to consumers
    (the existing order kept where it can be: each task as soon as its prerequisites are)."""
    ordered: dict[TaskId, Node] = {}
    for tid in nodes:
        if tid in ordered:
            continue
        on_stack = {tid}
        stack = [(tid, iter(nodes[tid].deps))]
        while stack:
            current, pending = stack[-1]
            for dep in pending:
                if dep in ordered:
                    continue
                if dep in on_stack:
                    _raise_cycle([nodes[t].task for t, _ in stack], nodes[dep].task)
                on_stack.add(dep)
                stack.append((dep, iter(nodes[dep].deps)))
                break
            else:
                stack.pop()
                on_stack.discard(current)
                ordered[current] = nodes[current]
    return ordered


def _raise_cycle(stack: Sequence[Task[object]], dep: Task[object]) -> None:
    """Raise :class:`CycleError` for ``dep``, found on ``stack`` (the tasks being expanded)."""
    ids = [task.id for task in stack]
    cycle = [*stack[ids.index(dep.id):], dep]
    names = [t.expression() for t in cycle]
    raise CycleError(
        "The prerequisites form a cycle: " + " -> ".join(names) + ". A task cannot require itself; "
        "check the @requires(...) of these tasks.",
        cycle=names,
    )


def mark(
    nodes: dict[TaskId, Node],
    store: Store,
    *,
    forced: Sequence[TaskId] = (),
    force_all: bool = False,
    code_check: bool = True,
    listing: tuple[list[Node], list[Node]] | None = None,
) -> list[Node]:
    """Set each node's ``meta`` and ``reason`` (see the module docstring); return the nodes
    that lack an input file or cannot read one (``listing``: the nodes with files and
    those that declare outputs, as :func:`_expand_listing` found them)."""
    forced_ids = set(forced)
    _read_metas(nodes, store)
    planned_stamp = _planned_stamp(nodes)
    if listing is None:
        with_files = [node for node in nodes.values() if node.files is not None]
        writing = [node for node in with_files if node.files.outputs]  # type: ignore[union-attr]
    else:
        with_files, writing = listing
    lacking: list[Node] = []
    if with_files:
        _files.check_cache_apart(writing, store.root)
        _files.check(with_files, store.root / _files.CACHE_NAME, batch=not writing,
                     leaf=FileLeaf)
    fingerprints: dict[TaskFamily[..., object], str] = {}  # (a property that checks its epoch: asked once here)
    for tid, node in nodes.items():
        family = node.task.family
        meta = node.meta
        if type(node) is FileLeaf and type(node.found) is dict:
            # Settled by the check: its entry records exactly these input digests (what
            # the leaf case below compares), so only the task's code may still count.
            node.reason = (Reason.FORCED if force_all or tid in forced_ids else
                           Reason.MISSING if meta is None else
                           Reason.CODE_CHANGED if code_check and meta.fingerprint != (
                               fingerprints.get(family)
                               or fingerprints.setdefault(family, family.fingerprint[0]))
                           else None)
            continue
        files = node.files
        if files is not None and (files.missing or files.unreadable):
            node.reason = Reason.INPUT_MISSING
            lacking.append(node)
            files.details += tuple(f"input file {path} does not exist" for path in files.missing)
            files.details += tuple(
                f"{problem.path} cannot be read ({problem.reason})"
                + ("" if problem.path == key else f", under the input {key}")
                for key, problem in files.unreadable)
        elif force_all or tid in forced_ids:
            node.reason = Reason.FORCED
        elif meta is None:
            node.reason = Reason.MISSING
        elif code_check and meta.fingerprint != (fingerprints.get(family)
                                                 or fingerprints.setdefault(family, family.fingerprint[0])):
            node.reason = Reason.CODE_CHANGED
        elif files is None:
            if not node.deps:  # a leaf (most of a sweep)
                node.reason = None if not meta.deps else Reason.UPSTREAM_CHANGED
            else:
                node.reason = _upstream_reason(node, meta, nodes)
        elif not node.deps and not files.outputs:
            # A leaf reading files and writing none (a sweep over them): current when its
            # entry records exactly these input digests (entry_is_current, in one comparison).
            expected = files.digests if node.shape is None else {
                **files.digests, ARRANGEMENT: node.shape}  # several files: where each one is
            node.reason = None if meta.deps == expected else (
                files.reason(meta) or Reason.UPSTREAM_CHANGED)
        else:
            node.reason = _files_reason(node, meta, files, nodes, planned_stamp)
    return lacking


def _read_metas(nodes: dict[TaskId, Node], store: Store) -> None:
    """Set each node's ``meta`` to its stored entry's metadata (``None`` when there is
    none), read family by family."""
    by_family: dict[TaskFamily[..., object], list[Node]] = {}
    for node in nodes.values():
        family = node.task.family
        group = by_family.get(family)
        if group is None:
            group = by_family[family] = []
        group.append(node)
    dirnames: dict[FamilyDir, list[Node]] = {}  # (two family objects may share a directory)
    for family, group in by_family.items():
        dirnames.setdefault(family.dirname, []).extend(group)
    for dirname, group in dirnames.items():
        metas = store.metas_in_order(dirname, [node.task.id for node in group])
        for node, meta in zip(group, metas, strict=True):
            node.meta = meta


def _upstream_reason(node: Node, meta: Meta, nodes: dict[TaskId, Node]) -> Reason | None:
    """Why a task with prerequisites and no files runs: :func:`entry_is_current`, inline (a
    sweep's target has 200,000 prerequisites), an upstream re-run found in the same pass
    coming first."""
    deps = node.deps
    recorded = meta.deps
    shape = node.shape  # the same prerequisites in other places count too
    current = len(recorded) == len(deps) if shape is None else (
        len(recorded) == len(deps) + 1 and recorded.get(ARRANGEMENT) == shape)
    for dep_id in deps:
        dep = nodes[dep_id]
        if dep.reason is not None:
            return Reason.UPSTREAM_RERUN
        if current:
            dep_meta = dep.meta
            if dep_meta is None or recorded.get(dep_id) != dep_meta.stamp:
                current = False
    return None if current else Reason.UPSTREAM_CHANGED


def _files_reason(node: Node, meta: Meta, files: _files.TaskFiles, nodes: dict[TaskId, Node],
                  planned_stamp: Callable[[TaskId], str | None]) -> Reason | None:
    """Why a task with files and prerequisites (or outputs) runs."""
    reason = files.reason(meta)
    if reason is None:
        for dep_id in node.deps:
            if nodes[dep_id].reason is not None:
                return Reason.UPSTREAM_RERUN
        if not entry_is_current(meta, node.deps, planned_stamp, files, shape=node.shape):
            return Reason.UPSTREAM_CHANGED
    return reason


def _planned_stamp(nodes: dict[TaskId, Node]) -> Callable[[TaskId], str | None]:
    def stamp(tid: TaskId) -> str | None:
        meta = nodes[tid].meta
        return None if meta is None else meta.stamp

    return stamp


def entry_is_current(
    meta: Meta, deps: Sequence[TaskId], stamp: Callable[[TaskId], str | None],
    files: _files.TaskFiles | None = None, *, outputs: bool = True, shape: str | None = None,
) -> bool:
    """Whether a stored entry was computed from exactly the current values of ``deps``
    (``stamp`` gives each one's current stamp): the same prerequisites, none of them since
    recomputed to another value, in the same places (``shape``: the node's
    :func:`arrangement`); and, for a task with files, from the same input files, its
    declared outputs being as it wrote them (unless ``outputs`` is false: another run just
    wrote them). Planning and the scheduler (early cutoff, results another run stored)
    decide with this one rule."""
    recorded = meta.deps
    expected = len(deps)
    if shape is not None:
        if recorded.get(ARRANGEMENT) != shape:
            return False
        expected += 1
    if files is not None:
        if not files.current(recorded, outputs):
            return False
        expected += len(files.digests) + len(files.outputs)
    # A dropped prerequisite counts too (e.g. a shorter list of seeds from a module constant).
    if len(recorded) != expected:
        return False
    for dep in deps:
        current = stamp(dep)
        if current is None or recorded.get(dep) != current:
            return False
    return True


def plan(
    targets: Sequence[Task[object]],
    store: Store,
    *,
    force: bool = False,
    force_upstream: bool = False,
    code_check: bool = True,
    keep_specs: bool = True,
) -> Plan:
    """Expand and mark: the plan for building ``targets`` (``keep_specs``: see
    :func:`expand`)."""
    import gc

    # Planning allocates millions of long-lived objects and few cycles: the cyclic
    # collector's repeated passes over them cost ~30% of planning.
    was_enabled = gc.isenabled()
    _gcpolicy.forget_left()  # the previous plan (--watch) is freed as usual
    if was_enabled and _gcpolicy.for_good and gc.get_freeze_count():
        gc.collect()  # garbage left since the last plan froze all: not frozen with this one
    gc.disable()
    try:
        nodes, with_files, writing = _expand_listing(targets, keep_specs)
        lacking = mark(
            nodes,
            store,
            forced=[t.id for t in targets] if force else (),
            force_all=force_upstream,
            code_check=code_check,
            listing=(with_files, writing),
        )
    finally:
        if was_enabled:
            if _gcpolicy.for_good:  # (the command line's process)
                gc.freeze()
            else:
                _promote_young(gc)
            gc.enable()
    the_plan = Plan(nodes, list(targets), lacking)
    # The command line's process ends after its command: the plan is left to the operating
    # system then, not freed; a task's inner function (what it captured is the user's) is.
    _gcpolicy.leave_at_exit(the_plan, (lambda: _drop_specs(nodes)) if keep_specs else None)
    return the_plan


def _drop_specs(nodes: dict[TaskId, Node]) -> None:
    for node in nodes.values():
        node.task._spec = None


def _promote_young(gc: types.ModuleType) -> None:
    """Move the objects planning made (millions for a large DAG, all in the youngest
    generation while the collector was off) to the oldest generation without examining
    them: otherwise the next two collections each walk all of them (0.5 s for 200,000 tasks).
    Done only when nothing is frozen (``gc.freeze`` then ``gc.unfreeze`` thaws it all)."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


def to_networkx(plan_or_nodes: Plan | dict[TaskId, Node]) -> networkx.DiGraph:
    """The plan as a ``networkx.DiGraph`` (edges point from prerequisite to dependent)."""
    import networkx

    nodes = plan_or_nodes.nodes if isinstance(plan_or_nodes, Plan) else plan_or_nodes
    graph = networkx.DiGraph()
    for tid, node in nodes.items():
        graph.add_node(tid, task=node.task, reason=node.reason)
        for dep in node.deps:
            graph.add_edge(dep, tid)
    return graph
