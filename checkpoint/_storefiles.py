"""Files of the store, handled safely: open only regular files, never follow a link,
and say what went wrong in words a person can act on."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class NotRegularFile(OSError):
    """A stored file that is a FIFO, a device, a socket, a directory or a symbolic link."""


_KINDS = ((stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def kind(mode: int) -> str:
    """What a file is, from its ``st_mode``: 'a FIFO', 'a symbolic link', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_stored(path: str | os.PathLike[str]) -> int:
    """Open a file of the store for reading; return its descriptor.

    Only a regular file is opened: a FIFO would block the reader forever, and a symbolic
    link could lead outside the cache (``O_NONBLOCK | O_NOFOLLOW``, then ``fstat``).

    Raises:
        OSError: it cannot be opened, or it is not a regular file (``str(exc)`` says why).
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise NotRegularFile(errno.ELOOP, "it is a symbolic link, not a regular file") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"it is {kind(mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def why(exc: OSError) -> str:
    """An OSError as a short phrase: 'it is a FIFO, not a regular file', 'No such file ...'."""
    return exc.strerror or str(exc)


def describe(exc: BaseException) -> str:
    """An error of the file system or of an index, as a phrase for a message."""
    if isinstance(exc, UnicodeDecodeError) or str(exc).startswith("Could not decode to UTF-8"):
        return "text in it is not valid UTF-8"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror if exc.filename is None else f"{exc.strerror} ({exc.filename})"
    return str(exc)


def advice(exc: BaseException) -> str:
    """What to do about an error opening a family's cache: a full disk, no permission, damage."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in text:
        return "Free some space or choose another --cache-dir."
    if code in (errno.EACCES, errno.EPERM):
        filename = getattr(exc, "filename", None)
        where = f" {os.path.dirname(filename)}" if isinstance(filename, str) else ""
        return (f"Check the permissions (ls -l{where}): the cache must be yours, readable and "
                "writable by you. Or choose another location with --cache-dir or CP_CACHE_DIR.")
    if code == errno.EROFS or "readonly" in text:
        return "Choose a writable location with --cache-dir or CP_CACHE_DIR."
    return "If the index is damaged, remove that directory (its results will be recomputed)."


def tree_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it does not exist)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def dir_manifest(path: Path) -> dict[str, list[int]] | None:
    """What a data directory holds: ``{relative path: [size, mtime_ns]}`` of every file under
    it (links and special files by their own ``lstat``, never followed); ``None`` when
    ``path`` is not a directory. One ``scandir`` per directory: cheap enough to record with
    every entry, and ``cache verify`` compares it with what the directory holds now."""
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    files: dict[str, list[int]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            with os.scandir(os.path.join(path, rel) if rel else path) as it:
                for entry in it:
                    name = f"{rel}/{entry.name}" if rel else entry.name
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(name)
                        else:
                            st = entry.stat(follow_symlinks=False)
                            files[name] = [st.st_size, st.st_mtime_ns]
                    except OSError:
                        continue
        except OSError:
            continue
    return files


def manifest_changes(recorded: dict[str, list[int]], now: dict[str, list[int]] | None) -> str:
    """How a data directory differs from its manifest, in words (``""``: it does not)."""
    if now is None:
        return "it is gone"
    parts = []
    for label, names in (
        ("missing", sorted(recorded.keys() - now.keys())),
        ("changed", sorted(n for n in recorded.keys() & now.keys() if list(recorded[n]) != now[n])),
        ("extra", sorted(now.keys() - recorded.keys())),
    ):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            parts.append(f"{label}: {', '.join(names[:3])}{more}")
    return "; ".join(parts)


def lexists(path: Path) -> bool:
    """Whether a path exists (a link counts as itself).

    Raises:
        OSError: it cannot be examined (e.g. no permission), unlike ``os.path.lexists``.
    """
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True


def identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of a file, or ``None`` when it does not exist."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def remove_path(path: Path) -> None:
    """Remove a directory, or the symbolic link or file in its place (never followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # never follows the links inside
    else:
        os.unlink(path)


def unfollowed(path: Path, parents: tuple[Path, ...]) -> str:
    """What forbids following ``path`` (``""`` when nothing): one of ``parents`` is a
    symbolic link or not a directory, or cannot be examined."""
    for part in parents:
        try:
            mode = os.lstat(part).st_mode
        except FileNotFoundError:
            return ""
        except OSError as exc:
            return f"{part} cannot be examined: {describe(exc)}"
        if not stat.S_ISDIR(mode):
            return f"{part} is {kind(mode)}, not a directory"
    return ""
