"""The store's directory tree: ``{cache_dir}/checkpoint`` with its ``FORMAT`` file and one
directory per family. Made, checked (owner, format, no links followed) and listed here;
the indexes inside are :mod:`._index`'s, the data directories of tasks
:mod:`._datadirs`'s."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path

from ._format import FORMAT, FORMAT_FILE, INDEX_FILE, READS_AS_IS
from ._storefiles import (
    NotRegularFile,
    advice,
    describe,
    identity,
    kind,
    lexists,
    open_stored,
    why,
)
from ._storetrust import Ownership
from .errors import StoreError, StoreVersionError


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$CP_CACHE_DIR``, else ``./.cache``."""
    if cache_dir is None:
        cache_dir = os.environ.get("CP_CACHE_DIR") or ".cache"
    return Path(cache_dir).absolute()


class StoreRoot:
    """The store's root directory, checked once before anything in it is used."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.path = cache_dir / "checkpoint"
        self.ownership = Ownership()
        self.checked = False
        self.identity: tuple[int, int] | None = None
        """(device, inode) of the FORMAT file when it was checked."""

    def ensure(self) -> None:
        """Create the store (mode 0700) or check the one there: owner, format; remove the
        leftovers of interrupted clears.

        Raises:
            StoreError: it cannot be made or used.
            StoreVersionError: it was written by another version of checkpoint.
            UnsafeCacheError: see :class:`~checkpoint._storetrust.Ownership`.
        """
        if self.checked:
            return
        fmt = self.path / FORMAT_FILE
        try:
            if self.cache_dir.exists():
                self.ownership.check(self.cache_dir, os.stat(self.cache_dir), top=True)
            found = self._read_format(fmt)
            if found is None:
                self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.path.mkdir(mode=0o700, exist_ok=True)
            st = os.stat(self.path)
            self.ownership.check(self.path, st)
            self.ownership.private = not st.st_mode & 0o077
            if found is None:
                self._write_format(fmt)
            elif found in READS_AS_IS:
                with contextlib.suppress(OSError):  # read-only: it gets no new entries
                    self._write_format(fmt)
            elif found != FORMAT:
                raise StoreVersionError(self._version_message(fmt, found))
            self._remove_trash()
        except OSError as exc:
            hint = advice(exc) if exc.errno in (errno.EACCES, errno.EPERM) else (
                "Choose a writable location with --cache-dir or CP_CACHE_DIR.")
            text = describe(exc) if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror or exc
            raise StoreError(f"Cannot use the cache directory {self.cache_dir}: {text}. {hint}") from None
        self.identity = identity(fmt)
        self.checked = True

    def _write_format(self, fmt: Path) -> None:
        tmp = self.path / f".FORMAT.{secrets.token_hex(4)}"
        tmp.write_text(FORMAT + "\n")
        os.replace(tmp, fmt)

    def _version_message(self, fmt: Path, found: str) -> str:
        if not re.fullmatch(r"checkpoint-store \d+", found):
            return (f"The cache at {self.path} has a damaged FORMAT file ({fmt}: {found!r}), "
                    f"so checkpoint cannot tell how it was written. Use another --cache-dir, "
                    f"or delete {self.path} to start afresh.")
        return (f"The cache at {self.path} was written by another version of checkpoint "
                f"({found!r}; this version reads {FORMAT!r}). Use another --cache-dir, or "
                f"delete {self.path} to start afresh.")

    def _remove_trash(self) -> None:
        for trash in self.path.glob(".trash-*"):
            if trash.is_symlink():
                trash.unlink()
            else:
                shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _read_format(fmt: Path) -> str | None:
        """The text of the FORMAT file (``None`` when there is none)."""
        try:
            fd = open_stored(fmt)
        except FileNotFoundError:
            return None
        except NotRegularFile as exc:
            return f"<{why(exc)}>"
        with os.fdopen(fd, "rb") as f:
            return f.read(200).decode("utf-8", errors="replace").strip()

    def still_there(self) -> bool:
        """Whether the store checked earlier is still the one on disk (not deleted or
        replaced behind a long-lived process's back)."""
        return not self.checked or identity(self.path / FORMAT_FILE) == self.identity

    def found(self) -> bool:
        """Whether the store exists; if so, check it (:meth:`ensure`) before any of its
        families, so that a problem of the whole store is reported as such."""
        if self.checked:
            return True
        try:
            if not lexists(self.path):
                return False
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {describe(exc)}. {advice(exc)}"
            ) from None
        self.ensure()
        return True

    def family_index(self, family: str) -> tuple[bool, str]:
        """Check a family's directory and index file before opening them; return whether
        the index exists, and what is wrong with it (``""``: nothing; else it is not a
        regular file, and must be moved aside).

        Raises:
            StoreError: the directory is a symbolic link or cannot be examined.
            UnsafeCacheError: see :class:`~checkpoint._storetrust.Ownership`.
        """
        directory = self.path / family
        db = directory / INDEX_FILE
        try:
            try:
                st = os.lstat(directory)
            except FileNotFoundError:
                return False, ""
            if not stat.S_ISDIR(st.st_mode):
                raise StoreError(
                    f"The cache of {family} at {directory} is {kind(st.st_mode)}, not a directory; "
                    "checkpoint never follows links inside the cache. Remove it (its results "
                    "will be recomputed): checkpoint clear " + family.rsplit(".", 1)[-1]
                )
            self.ownership.check(directory, st, below=True)
            try:
                st = os.lstat(db)
            except FileNotFoundError:
                return False, ""
        except OSError as exc:
            raise StoreError(
                f"Cannot open the cache of {family} at {directory}: {describe(exc)}. {advice(exc)}"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            return False, f"it is {kind(st.st_mode)}"
        self.ownership.check(db, st, below=True)
        return True, ""

    def families(self) -> list[str]:
        """Directory names of the families that have a store."""
        try:
            if not self.path.is_dir():
                return []
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {describe(exc)}. {advice(exc)}"
            ) from None
        self.ensure()  # a cache of another format is refused, not listed
        names = []
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.is_symlink() or (entry.is_dir(follow_symlinks=False)
                                                  and lexists(Path(entry.path, INDEX_FILE))):
                            names.append(entry.name)
                    except PermissionError:
                        names.append(entry.name)  # opening it says what is wrong
        except OSError as exc:
            raise StoreError(
                f"Cannot use the cache directory {self.cache_dir}: {describe(exc)}. {advice(exc)}"
            ) from None
        return sorted(names)

    def check_writable(self, families: list[str]) -> None:
        """Check that results of these families can be stored.

        Raises:
            StoreError: a directory or index that must be written is not writable.
        """
        self.ensure()
        for family in families:
            directory = self.path / family
            try:
                exists = lexists(directory)
                db = directory / INDEX_FILE
                target = (db if lexists(db) else directory) if exists else self.path
                mode = os.W_OK if target == db else os.W_OK | os.X_OK
                if os.access(target, mode) and (target != db or os.access(directory, os.W_OK | os.X_OK)):
                    continue
                readonly = hasattr(os, "statvfs") and bool(os.statvfs(target).f_flag & os.ST_RDONLY)
            except OSError:
                continue  # the run will say what it is when it opens the family
            why_not = "it is on a read-only file system" if readonly else "you may not write there"
            raise StoreError(
                f"Cannot store the results of {family}: the cache at {target} is read-only "
                f"({why_not}), and tasks of that family need to run; nothing was run. Fresh results "
                "can be read from a read-only cache, but new ones must be stored: make it "
                "writable, or choose a writable location with --cache-dir or CP_CACHE_DIR."
            )

    def remove_family(self, family: str) -> None:
        """Remove a family's whole directory: renamed into ``.trash-*`` (atomic), then
        deleted (a symbolic link in its place is removed, never followed).

        Raises:
            StoreError: it cannot be removed.
        """
        directory = self.path / family
        try:
            if not os.path.lexists(directory):
                return
            self.ensure()
            if os.path.islink(directory):
                os.unlink(directory)  # the link, never what it points to
                return
            trash = self.path / f".trash-{secrets.token_hex(6)}"
            os.replace(directory, trash)
        except OSError as exc:
            raise StoreError(
                f"Cannot remove the cache of {family} at {directory}: {describe(exc)}. "
                f"{advice(exc)}"
            ) from None
        shutil.rmtree(trash, ignore_errors=True)
