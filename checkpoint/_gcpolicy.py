"""Whether planning's objects leave the garbage collector's walks for good (a tiny module:
the command line sets it before importing anything heavy)."""

from __future__ import annotations

from collections.abc import Callable

for_good = False
"""Read by :func:`checkpoint.graph.plan`; set by :func:`freeze_plans`."""

_left: list[tuple[object, Callable[[], None] | None]] = []
"""What :func:`leave_at_exit` holds: objects, each with what to do before leaving it."""


def freeze_plans() -> None:
    """From now on, leave each plan's objects (and all others alive then) out of the
    garbage collector's walks for good (``gc.freeze``), for a process that ends after its
    command: the command line's (:func:`checkpoint.cli.console`).

    Otherwise :func:`checkpoint.graph.plan` moves them to the oldest generation, where
    millions of objects still cost a full collection as soon as the command allocates
    after planning (the collector judges by the oldest generation's size at its last full
    collection): 2.6 s of a 14 s dry run of a 1,000,000-task lattice, 0.25 s of ``ls`` of a
    200,000-task sweep. A plan holds no reference cycles, so nothing of it is kept once it
    is dropped; what is garbage when a later plan starts is collected first.
    """
    global for_good
    for_good = True


def leave_at_exit(obj: object, release: Callable[[], None] | None = None) -> None:
    """In a process that ends after its command (:func:`freeze_plans`), hold ``obj`` (the
    latest plan) until :func:`abandon` leaves it to the operating system instead of freeing
    it object by object (0.1-0.2 s for a 200,000-task plan). ``release`` runs first at
    exit: it drops what could hold the user's own objects (a task's inner function and
    what it captured), which are freed as before. Elsewhere, nothing is held."""
    if for_good:
        _left.append((obj, release))


def forget_left() -> None:
    """Stop holding what :func:`leave_at_exit` held (freed as usual once unreferenced): a
    new plan replaces the previous one (``--watch``)."""
    _left.clear()


def abandon() -> None:
    """At the end of the command line's process: run each held object's ``release`` and
    make the objects unreachable without freeing them: a reference cycle, frozen
    (``gc.freeze``) out of the collector's reach (Python does not promise to finalize
    objects still alive at exit; output is flushed as usual)."""
    global _left
    if not _left:
        return
    import gc

    for _, release in _left:
        if release is not None:
            release()
    cell: list[object] = [_left]
    cell.append(cell)
    _left = []
    gc.freeze()  # (cell still referenced here: no collection can take it first)


def release_project_modules(root: str) -> None:
    """Drop what the modules of the project at ``root`` hold, as Python's own shutdown does
    (each name set to ``None``, those with one leading underscore first), so that what only they hold is
    finalized: a module-level open file flushes the lines a task wrote. Python would do it
    later, but not to a module kept alive by its own functions (a reference cycle) in a
    process whose objects are frozen out of the last collection (the command line's), nor
    in a worker process, which ends by ``os._exit``. Run at exit, after the project's own
    exit handlers."""
    import os
    import sys

    inside = root.rstrip(os.sep) + os.sep
    resolved: dict[str, str] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not (isinstance(file, str) and _maybe_inside(file, inside, resolved)):
            continue
        from .fingerprint import in_project

        if not in_project(file, root):
            continue
        names = vars(module)
        for name in [n for n in names if n.startswith("_") and not n.startswith("__")]:
            names[name] = None
        for name in [n for n in names if n != "__builtins__"]:
            names[name] = None


def _maybe_inside(file: str, inside: str, resolved: dict[str, str]) -> bool:
    """Whether ``file`` may lie in the directory ``inside`` (which ends with a separator),
    as :func:`checkpoint.fingerprint.in_project` sees it: as it is spelled or resolved. A
    file that is no symbolic link resolves to its resolved directory's entry, so the
    directories of hundreds of modules are resolved once each (``resolved`` keeps them)."""
    import os

    path = os.path.abspath(file)
    if path.startswith(inside):
        return True
    directory = os.path.dirname(path)
    real = resolved.get(directory)
    if real is None:
        real = resolved[directory] = os.path.join(os.path.realpath(directory), "")
    return real.startswith(inside) or os.path.islink(path)


def release_taskfile_projects() -> None:
    """:func:`release_project_modules` of the project of each taskfile loaded (at exit)."""
    import os
    import sys

    roots: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if getattr(module, "__checkpoint_taskfile__", False) and isinstance(file, str):
            roots.add(os.path.dirname(os.path.realpath(file)))
    for root in roots:
        release_project_modules(root)
