"""The data directories of tasks (``TaskDirectory()``): ``{family}/data/{task id}/`` in the
store. Where each is, whether it may be followed (never through a symbolic link), making
an empty one before a task runs, what it held when its entry was stored, its size, and
removing it."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from ._format import DATA_DIR, TASK_ID, Record
from ._storefiles import dir_manifest, remove_path, tree_size, unfollowed
from ._storeroot import StoreRoot
from .errors import StoreError


class DataDirs:
    """The data directories under a store's root."""

    def __init__(self, tree: StoreRoot) -> None:
        self.tree = tree

    def path(self, family: str, task_id: str) -> Path:
        """The data directory of a task (not created)."""
        return self.tree.path / family / DATA_DIR / task_id

    def checked(self, family: str, task_id: str) -> tuple[Path, str]:
        """A task's data directory, and what forbids following it (``""`` when nothing):
        the family's directory or its ``data/`` is a symbolic link or not a directory.
        The data directory itself may be anything (:func:`remove_path` removes it)."""
        path = self.path(family, task_id)
        if not TASK_ID.fullmatch(task_id):
            return path, f"{task_id!r} is not a task id"
        return path, unfollowed(path, (path.parent.parent, path.parent))

    def ids(self, family: str) -> list[str]:
        """The task ids that have a data directory in the family (names that are not task
        ids are left out)."""
        try:
            names = os.listdir(self.tree.path / family / DATA_DIR)
        except OSError:
            return []
        return [name for name in names if TASK_ID.fullmatch(name)]

    def size(self, family: str, task_id: str) -> int:
        """Bytes in a task's data directory (0 when it may not be followed)."""
        path, problem = self.checked(family, task_id)
        return 0 if problem else tree_size(path)

    def prepare(self, family: str, task_id: str) -> Path:
        """Create an empty data directory for a task about to run.

        Raises:
            StoreError: it cannot be created, or the family's directory or its ``data/`` is
                a symbolic link (never followed: it could lead outside the cache).
        """
        self.tree.ensure()
        path, problem = self.checked(family, task_id)
        if problem:
            raise StoreError(
                f"Cannot create the data directory {path}: {problem}; checkpoint never follows "
                "links inside the cache. Remove it (the results of that family will be "
                f"recomputed): checkpoint clear {family.rsplit('.', 1)[-1]}"
            )
        try:
            remove_path(path)
            path.mkdir(parents=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the data directory {path}: {exc.strerror or exc}. "
                "Free some space or choose another --cache-dir."
            ) from None
        return path

    def remove(self, family: str, task_id: str) -> None:
        """Remove a task's data directory, if it may be followed (a symbolic link in its
        place is removed, never followed)."""
        path, problem = self.checked(family, task_id)
        if not problem:
            with contextlib.suppress(OSError):
                remove_path(path)

    def record_manifests(self, family: str, records: Iterable[Record]) -> None:
        """Set ``Record.data`` of the records whose task has a data directory (one ``stat``
        for a family without data directories, one per task otherwise)."""
        data = self.tree.path / family / DATA_DIR
        if not os.path.isdir(data):
            return
        # The family's directory and its data/ are the same for every record: check them once.
        if self.checked(family, "0" * 32)[1]:
            return
        for r in records:
            manifest = dir_manifest(data / r.id) if TASK_ID.fullmatch(r.id) else None
            if manifest is not None:
                r.data = json.dumps(manifest, separators=(",", ":"))


def read_manifest(text: str | None) -> dict[str, list[int]] | None:
    """A manifest that :meth:`DataDirs.record_manifests` wrote (``None``: none, or damaged)."""
    try:
        manifest = json.loads(text) if text else None
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None
