"""``checkpoint cache verify``: check every stored entry and every file the store made."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._format import ENTRY, TASK_ID
from ._storefiles import dir_manifest, kind, manifest_changes
from ._types import FamilyDir
from .errors import CorruptEntryError, StoreError

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True)
class Problem:
    """A stored entry that failed :meth:`Store.verify`."""

    family: FamilyDir
    id: str
    task: str
    """The task as an expression, or ``""`` when its metadata is unreadable."""
    message: str


def verify(store: Store, repair: bool = False) -> tuple[int, list[Problem]]:
    """Check every stored entry (metadata, size, checksum, value file, data directory) and
    every file the store made (owner, permissions, no links or special files); return how
    many entries were checked and the problems found. ``repair`` deletes the bad entries
    (their tasks run again next time) and the links and special files (never what a link
    points to)."""
    checked = 0
    problems: list[Problem] = []
    for family in store.families():
        try:
            keys = store.indexes.keys(family, ENTRY)
        except StoreError as exc:  # e.g. the family's directory is a link: say so, go on
            problems.append(Problem(family, "", "", str(exc)))
            continue
        for notice in store.take_notices():
            problems.append(Problem(family, "", "", notice))
        for key in keys:
            checked += 1
            problem = _check_entry(store, family, key[len(ENTRY):])
            if problem is None:
                continue
            problems.append(problem)
            if repair and TASK_ID.fullmatch(problem.id):
                store.delete(family, problem.id)
            elif repair:
                store.delete_row(family, key)
        for where, message, removable in store.tree.ownership.unsafe_files(store.root / family):
            problems.append(Problem(family, "", "", message))
            if repair and removable:
                with contextlib.suppress(OSError):
                    os.unlink(where)
    return checked, problems


def _check_entry(store: Store, family: FamilyDir, tid: str) -> Problem | None:
    """What is wrong with one entry (``None``: nothing)."""
    meta = store.get_meta(family, tid) if TASK_ID.fullmatch(tid) else None
    try:
        if meta is None:
            raise CorruptEntryError(f"The metadata of entry {tid} ({family}) is unreadable.")
        store.load_payload(family, tid, meta)
        path, problem = store.data.checked(family, tid)
        with contextlib.suppress(OSError):
            mode = os.lstat(path).st_mode
            if not problem and not stat.S_ISDIR(mode):
                raise CorruptEntryError(
                    f"The data directory of {meta.expr} ({family}), {path}, is "
                    f"{kind(mode)}; checkpoint never follows it."
                )
        recorded = None if problem else store.data_manifest(family, tid)
        changes = "" if recorded is None else manifest_changes(recorded, dir_manifest(path))
        if changes:
            raise CorruptEntryError(
                f"The data directory of {meta.expr} ({family}), {path}, no longer holds what "
                f"the task wrote ({changes}). Run `checkpoint clear {shlex.quote(meta.expr)}` "
                "to compute it again (or `cache verify --repair`)."
            )
    except CorruptEntryError as exc:
        return Problem(family, tid, meta.expr if meta else "", str(exc))
    return None
