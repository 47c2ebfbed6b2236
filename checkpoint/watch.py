"""What ``checkpoint run --watch`` watches, how it waits, and how it reloads a taskfile.

A run depends on four kinds of files, and a change to any of them starts the next run:

* the taskfile;
* the project's own modules it imported (``import features``): every imported module whose
  source lies under the taskfile's directory, minus installed packages and checkpoint itself
  (the same test as the code fingerprint's, :func:`checkpoint.fingerprint.in_project`), and
  those the code fingerprints took in without their being imported here (an ``import``
  inside a task, run by a worker process);
* the source ``File()`` inputs of the targets' DAG: a file, every file under a directory, or
  the matches of a glob pattern (as ``glob.glob(recursive=True)`` matches). Inputs another
  task of the DAG writes (a ``Product``) and declared outputs (files under a ``Product``
  directory) are left out: the run itself writes them, and watching them would start it
  again and again;
* the files opened for reading while the taskfile (and the modules it imports) was imported
  or an outer function ran (:func:`record_reads`): ``config.json`` read for a captured
  value, a module-level ``CFG = json.load(...)``, both of which count. They are seen through
  Python's ``open`` audit event (a hook added once, for good, that looks at no other event),
  so a file a C library opens by itself is not; installed files are left out, and so are the
  system's (:data:`SYSTEM_DIRS`, outside the project: a cgroup limit, the time zone database,
  read once by a library that caches them: watched after the first run only, they would make
  its count differ from the next runs').

Before the next run, :func:`forget_project_modules` drops the taskfile and those modules from
``sys.modules``, so the taskfile is imported afresh and the code fingerprints see the edit.

Waiting uses the ``watchfiles`` package (the ``watch`` extra), which the rest of checkpoint
never imports. It watches directories, not files: an editor that saves by writing a new file
and renaming it over the old one replaces the file a watch on it would follow. A change
made while a run was going on is caught too: :func:`wait_for_change` first compares the
files with what they were when the run started (:meth:`WatchSet.snapshot`), and a file that
only this run made part of the watch set (a module it imported, an input; the first run
knows only the taskfile) with the time the run started: changed since, it counts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .files import glob_match, is_scratch

if TYPE_CHECKING:
    import types

    from .task import Task

Stat = tuple[int, int, int]
"""``(size, mtime_ns, inode)`` of a file."""

_GLOB_CHARS = frozenset("*?[")

SYSTEM_DIRS = tuple(os.sep + d + os.sep for d in (
    "proc", "sys", "dev", "run", "etc", "usr", "System", "Library", "private/etc")) \
    if os.sep == "/" else ()
"""Directories of the system, not of a project: files read under them are not watched."""


@dataclass(frozen=True)
class WatchSet:
    """The files a run depends on (absolute paths)."""

    files: frozenset[str]
    """Single files: the taskfile, project modules, plain ``File()`` inputs."""
    trees: tuple[tuple[str, str | None], ...] = ()
    """``(directory, pattern)`` of directory inputs (pattern ``None``: every file under it)
    and glob inputs (the directory before the first glob character, and the pattern)."""
    exclude: frozenset[str] = field(default_factory=frozenset)
    """Declared outputs (a directory ending with a separator: what is under it): never a
    reason to run again."""

    def matches(self, path: str) -> bool:
        """Whether a change at ``path`` concerns the run."""
        if path in self.files:
            return True
        if path in self.exclude or any(
                path.startswith(e) for e in self.exclude if e.endswith(os.sep)):
            return False
        prefix = path + os.sep  # a directory on the way to a file not made yet
        if any(f.startswith(prefix) for f in self.files) or any(
                d == path or d.startswith(prefix) for d, _ in self.trees):
            return True
        for directory, pattern in self.trees:
            rel = os.path.relpath(path, directory)
            if rel == os.curdir or rel.startswith(os.pardir):
                continue
            if not _counted(path, rel, pattern):
                continue
            if pattern is None or os.path.isdir(path) or glob_match(
                    pattern.replace(os.sep, "/"), path.replace(os.sep, "/")):
                return True
        return False

    def tree_files(self) -> list[str]:
        """The files now under the directory and glob inputs."""
        out = []
        for directory, _ in self.trees:
            for dirpath, dirs, names in os.walk(directory):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                out += [p for n in names if self.matches(p := os.path.join(dirpath, n))]
        return out

    def __len__(self) -> int:
        """How many files are watched."""
        return len(self.files | set(self.tree_files()))

    def directories(self) -> list[str]:
        """The existing directories to watch (not recursively): each file's directory (or
        its nearest existing ancestor, for a file not made yet) and every directory of the
        trees."""
        found: set[str] = set()
        for path in self.files:
            found.add(_existing(os.path.dirname(path)))
        for directory, _ in self.trees:
            if not os.path.isdir(directory):
                found.add(_existing(directory))
                continue
            for dirpath, dirs, _names in os.walk(directory):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.add(dirpath)
        return sorted(found)

    def snapshot(self) -> dict[str, Stat | None]:
        """``path -> (size, mtime_ns, inode)`` (``None``: missing) of every watched file."""
        return {path: _stat(path) for path in (*self.files, *self.tree_files())}


def _counted(path: str, rel: str, pattern: str | None) -> bool:
    """Whether ``path``, ``rel`` under an input directory, can be part of the input, as
    :mod:`checkpoint.files` counts it: hidden names never match a pattern; a directory
    counts its hidden files but not its hidden folders or scratch files."""
    parts = rel.split(os.sep)
    if pattern is not None:
        return not any(part.startswith(".") for part in parts)
    *folders, name = parts
    return not any(part.startswith(".") for part in folders) and not (
        name.startswith(".") and (is_scratch(name) or os.path.isdir(path)))


def _stat(path: str) -> Stat | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _existing(directory: str) -> str:
    while not os.path.isdir(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    return directory


def project_modules(root: str | Path) -> dict[str, str]:
    """``module name -> source file`` of the imported modules of the project at ``root``."""
    from .fingerprint import in_project

    real = os.path.realpath(root)
    found = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.endswith(".py") and in_project(file, real):
            found[name] = os.path.realpath(file)
    return found


def forget_project_modules(root: str | Path) -> list[str]:
    """Drop the project's modules from ``sys.modules`` (the next import reads them again);
    return their names."""
    import importlib
    import linecache

    names = list(project_modules(root))
    for name in names:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    linecache.clearcache()  # tracebacks show the new source
    return names


_reads: set[str] | None = None
"""The files opened for reading while planning (see :func:`record_reads`) since
:func:`watch_set` last took them; ``None``: not recording."""
_planning: frozenset[types.CodeType] = frozenset()
"""The code of the functions under which an ``open`` is planning's: ``Task.spec`` (it calls
the outer function) and ``load_taskfile``."""


def record_reads() -> None:
    """From now on, note the files this process opens for reading while it imports a
    taskfile or runs an outer function (in a run's planning or in :func:`watch_set`'s), for
    :func:`watch_set` to watch. The watch loop calls it before its first run."""
    global _reads, _planning
    if not _planning:
        from .task import Task
        from .taskfile import load_taskfile

        _planning = frozenset({Task.spec.__code__, load_taskfile.__code__})
        sys.addaudithook(_audit)  # (for good: a hook cannot be removed)
    if _reads is None:
        _reads = set()


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or _reads is None:
        return
    try:
        path, _mode, flags = args
        if not isinstance(path, (str, bytes)) or not isinstance(flags, int) \
                or flags & (os.O_WRONLY | os.O_RDWR):
            return  # a file descriptor, or written (the run's own output: never a reason)
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code in _planning:
                _reads.add(os.path.realpath(os.fsdecode(path)))
                return
            frame = frame.f_back  # type: ignore[assignment]
    except Exception:  # noqa: BLE001 - an exception here would fail the user's open()
        pass


def _planning_reads(root: str, exclude: set[str], own: bool) -> set[str]:
    """The files read while planning, noted since the last call (``own``: this call's
    expansion alone was recorded, stop), that can change: neither installed nor bytecode,
    nor a declared output, nor a directory or a device."""
    from .fingerprint import _installed

    global _reads
    found, _reads = _reads or set(), None if own else set()
    real_root = os.path.realpath(root)
    inside = real_root.rstrip(os.sep) + os.sep
    return {path for path in found
            if not _installed(path, real_root) and "__pycache__" not in path.split(os.sep)
            and (path.startswith(inside) or not path.startswith(SYSTEM_DIRS))
            and path not in exclude and not any(path.startswith(e) for e in exclude if e.endswith(os.sep))
            and (os.path.isfile(path) or not os.path.exists(path))}


def watch_set(taskfile: Path, targets: Iterable[Task[object]] | None) -> WatchSet:
    """What a run of ``targets`` (``None``: the taskfile could not be loaded) depends on.

    Paths of ``File()`` inputs are relative to the working directory (the project root).
    """
    root = str(taskfile.parent)
    files = {os.path.realpath(taskfile), *project_modules(root).values()}
    trees: list[tuple[str, str | None]] = []
    exclude: set[str] = set()
    own = _reads is None  # not recording (no watch loop): record this expansion
    if targets is not None:
        from .fingerprint import followed_files, in_project
        from .graph import expand

        cwd = os.getcwd()
        if own:
            record_reads()
        try:
            nodes = expand(targets)
        except BaseException:
            _planning_reads(root, exclude, own)
            raise
        real = os.path.realpath(root)
        for family in {id(n.task.family): n.task.family for n in nodes.values()}.values():
            family.fingerprint  # noqa: B018 - made (once per run): it follows the imports in tasks
        files.update(os.path.realpath(f) for f in followed_files if in_project(f, real))
        for node in nodes.values():
            if node.files is None:
                continue
            exclude.update(os.path.join(cwd, p.key(cwd)) + (os.sep if p.is_dir else "")
                           for p in node.files.outputs)
            for item in node.files.inputs:
                key = item.key(cwd)
                if key in node.files.produced:
                    continue  # another task writes it: its own inputs are watched
                path = os.path.join(cwd, key)
                if item.is_glob:
                    base = path.split(os.sep)
                    cut = next(i for i, part in enumerate(base) if not _GLOB_CHARS.isdisjoint(part))
                    trees.append((os.sep.join(base[:cut]) or os.sep, path))
                elif os.path.isdir(path):
                    trees.append((path, None))
                else:
                    files.add(path)
    files.update(_planning_reads(root, exclude, own))
    return WatchSet(frozenset(files), tuple(trees), frozenset(exclude))


def changed(watched: WatchSet, before: dict[str, Stat | None], since: int | None = None) -> list[str]:
    """The watched files that differ from ``before`` (a :meth:`WatchSet.snapshot`, maybe of
    an earlier watch set). A file it does not know (the run made it part of the watch set:
    a module it imported, an input) counts when ``since`` (a :func:`time.time_ns` taken
    before the snapshot) is given and the file changed at or after it: the run may have read
    it before the change (see :func:`_changed_since`)."""
    now = watched.snapshot()
    found = {p for p, stat in before.items()
             if (now[p] != stat if p in now else stat is not None and watched.matches(p))}
    if since is not None:
        found.update(p for p, stat in now.items()
                     if p not in before and stat is not None and _changed_since(p, since))
    return sorted(found)


_COARSE_NS = 2_000_000_000
"""How far back a whole-second timestamp may lie from the moment it records (FAT keeps even
seconds); a finer one lags the clock by at most a scheduler tick, :data:`_TICK_NS`."""
_TICK_NS = 100_000_000


def _changed_since(path: str, since: int) -> bool:
    """Whether a file's content or name changed at or after ``since``, by its mtime or its
    ctime (a file renamed over another keeps its mtime), with a margin for timestamps that
    are coarser than the clock: a spurious extra run is better than a missed change."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    stamp = max(st.st_mtime_ns, st.st_ctime_ns)
    coarse = st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0
    return stamp >= since - (_COARSE_NS if coarse else _TICK_NS)


def wait_for_change(watched: WatchSet, baseline: dict[str, Stat | None],
                    since: int | None = None) -> list[str]:
    """Block until a watched file changes; return the changed paths.

    ``baseline`` is a snapshot taken before the run, at time ``since``: a file that differs
    from it already counts, and so does a file it does not know that changed since then
    (see :func:`changed`), so a change made while the run went on, or before the watch
    began, is not missed. Ctrl-C raises :class:`KeyboardInterrupt`.

    Raises:
        UsageError: the ``watchfiles`` package is not installed.
    """
    try:
        import watchfiles
    except ImportError:
        raise UsageError(
            "--watch needs the watchfiles package: pip install 'checkpoint-tool[watch]' "
            "(or pip install watchfiles)."
        ) from None

    found = changed(watched, baseline, since)
    if found:
        return found
    checked = False
    for changes in watchfiles.watch(
        *watched.directories(),
        watch_filter=lambda _change, path: watched.matches(path),
        recursive=False,
        rust_timeout=300,
        yield_on_timeout=True,
        raise_interrupt=True,
    ):
        if changes:
            return sorted({path for _, path in changes})
        if not checked:  # the first timeout: the watch is up, look once at what it missed
            checked = True
            found = changed(watched, baseline, since)
            if found:
                return found
    raise AssertionError("unreachable: watchfiles.watch only ends on a stop event")
