"""Who may have written the store: a stored value is a pickle, and loading a pickle runs
code, so directories and files another user could write are refused (or warned about)."""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from pathlib import Path

from ._storefiles import describe, kind
from .errors import UnsafeCacheError, UnsafeCacheWarning

_SHARED_HINT = ("set CP_SHARED_CACHE=1 if you share this cache with them on purpose "
                "(see the Security page of the docs)")


def _user(uid: int) -> str:
    """A user's name (its number when it has none)."""
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"user {uid}"


def _group(gid: int) -> str:
    """A group's name (its number when it has none)."""
    try:
        import grp

        return f"group {grp.getgrgid(gid).gr_name}"
    except (ImportError, KeyError):
        return f"group {gid}"


def _private_group(gid: int, uid: int) -> bool:
    """Whether a group is a user's own (the user private groups of many Linux systems: named
    after the user, nobody else in it), so that its write permission lets in no one else."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


class Ownership:
    """The store's rule for who may have written its directories and files."""

    def __init__(self) -> None:
        self.shared = os.environ.get("CP_SHARED_CACHE", "") not in ("", "0")
        """``CP_SHARED_CACHE=1``: accept directories and files of other users and directories
        that the group may write to (a cache shared by a group on purpose)."""
        self.private = False
        """Whether the store root grants group and others nothing (then the modes of what is
        below it let no one in; their owners are still checked)."""
        self._warned: set[str] = set()

    def check(self, path: Path, st: os.stat_result, *, top: bool = False, below: bool = False) -> None:
        """Refuse a directory or file of the store that another user could have written,
        and warn (once) about one that its group may write to; see :meth:`problem`.

        Raises:
            UnsafeCacheError: it belongs to another user, or everyone may write to it.
        """
        found = self.problem(path, st, top=top, below=below)
        if found is None:
            return
        message, refused = found
        if refused:
            raise UnsafeCacheError(message)
        if str(path) not in self._warned:
            self._warned.add(str(path))
            warnings.warn(message, UnsafeCacheWarning, stacklevel=4)

    def problem(self, path: Path, st: os.stat_result, *, top: bool = False,
                below: bool = False) -> tuple[str, bool] | None:
        """What is unsafe about a directory or file of the store, and whether it is refused.

        Refused: owned by someone else than you or root (a stored value is a pickle, and
        loading it runs code as you), or writable by everyone. Warned: writable by its group.
        ``CP_SHARED_CACHE=1`` accepts the first and the last, never the second. ``top``: the
        cache directory itself, which may be a shared place such as ``/tmp`` when it has the
        sticky bit (others cannot replace what is yours in it, and everything below is checked).
        ``below``: inside the store, where modes matter only if the store lets others in (with
        the umask 002 of many systems, the directories a store makes are group-writable).
        """
        geteuid = getattr(os, "geteuid", None)
        if geteuid is None:  # Windows: no POSIX ownership to check
            return None
        me = geteuid()
        unreachable = (top and bool(st.st_mode & stat.S_ISVTX)) or (below and self.private)
        if st.st_uid not in (me, 0) and not self.shared:
            return (f"The cache at {path} belongs to {_user(st.st_uid)}, not to you ({_user(me)}): "
                    "a value stored there is a pickle, and loading it runs code as you. Use a cache "
                    f"directory of your own (--cache-dir or CP_CACHE_DIR), or {_SHARED_HINT}."), True
        if st.st_mode & stat.S_IWOTH and not unreachable and not stat.S_ISLNK(st.st_mode):
            return (f"The cache at {path} is writable by every user (mode {stat.filemode(st.st_mode)}): "
                    "anyone could put values there that run as code when you load them. Remove "
                    f"that permission (chmod o-w {path}) or use another cache directory."), True
        if (st.st_mode & stat.S_IWGRP and not unreachable and not self.shared
                and not stat.S_ISLNK(st.st_mode) and not _private_group(st.st_gid, me)):
            return (f"The cache at {path} is writable by {_group(st.st_gid)} (mode "
                    f"{stat.filemode(st.st_mode)}): its members could put values there that run as "
                    f"code when you load them. Remove that permission (chmod g-w {path}), or set "
                    "CP_SHARED_CACHE=1 if the group shares this cache on purpose."), False
        return None

    def unsafe_files(self, top: Path) -> list[tuple[str, str, bool]]:
        """What is wrong with the files of a family's directory ``top``, as ``(path,
        message, removable)``: links and special files (removable), files and directories
        of other users or writable by others (see :meth:`problem`). The files that tasks
        wrote into their data directories are theirs, and not looked at."""
        found = []
        data = top / "data"
        stack = [top]
        with contextlib.suppress(OSError):
            st = os.lstat(top)
            if stat.S_ISLNK(st.st_mode):
                return []  # reported by verify already
            problem = self.problem(top, st, below=True)
            if problem is not None:
                found.append((str(top), problem[0], False))
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError as exc:
                found.append((str(directory), f"{directory} cannot be read: {describe(exc)}.", False))
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                path = Path(entry.path)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    found.append((entry.path, f"{entry.path} is {kind(st.st_mode)}; checkpoint "
                                  "never follows or reads it. Remove it.", True))
                    continue
                problem = self.problem(path, st, below=True)
                if problem is not None:
                    found.append((entry.path, problem[0], False))
                if stat.S_ISDIR(st.st_mode) and directory != data:
                    stack.append(path)
        return found
