"""A taskfile for the fault-injection tests: a few hundred tasks, values of several sizes.

``leaf(i)`` returns bytes of 8 B to 2 MB (inline SQLite rows and diskcache value files,
some compressed), a few leaves also write a file into their TaskDirectory, ``mid(j)``
combines five leaves and ``main`` combines every ``mid``. Every computation appends its
expression to ``$CP_EXEC_LOG`` (one ``write`` on an ``O_APPEND`` file: safe across
processes), so a test knows exactly which tasks ran. ``expected(...)`` computes the same
values without checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from checkpoint import TaskDirectory, requires, task

N_LEAVES = int(os.environ.get("CP_FAULT_LEAVES", "200"))
SIZES = (8, 1_000, 40_000, 300_000, 2_000_000)
DELAY = float(os.environ.get("CP_FAULT_DELAY", "0.004"))


def _log(text: str) -> None:
    path = os.environ.get("CP_EXEC_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{text} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def leaf_value(i: int) -> bytes:
    size = SIZES[i % len(SIZES)] if i % 7 else SIZES[-1] if i % 14 == 0 else SIZES[1]
    seed = hashlib.sha256(str(i).encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def mid_value(j: int) -> bytes:
    h = hashlib.sha256()
    for i in range(5 * j, 5 * j + 5):
        h.update(leaf_value(i))
    return h.digest() * (1 + j % 3) * 1000


def expected_main() -> str:
    h = hashlib.sha256()
    for j in range(N_LEAVES // 5):
        h.update(mid_value(j))
    return h.hexdigest()


@task(compress_level=1)
def leaf_z(i: int):
    """A compressed leaf (same value as leaf)."""

    def __() -> bytes:
        _log(f"leaf_z({i})")
        time.sleep(DELAY)
        return leaf_value(i)

    return __


@task
def leaf(i: int):
    """A leaf value of 8 B to 2 MB; every tenth also writes a file to its TaskDirectory."""
    if i % 10 == 3:

        @requires(TaskDirectory())
        def __(path: Path) -> bytes:
            _log(f"leaf({i})")
            value = leaf_value(i)
            (path / "value.bin").write_bytes(value)
            time.sleep(DELAY)
            return value

        return __

    def __() -> bytes:  # type: ignore[misc]
        _log(f"leaf({i})")
        time.sleep(DELAY)
        return leaf_value(i)

    return __


@task
def mid(j: int):
    """Combine five leaves (the compressed family for odd j)."""
    family = leaf_z if j % 2 else leaf

    @requires([family(i) for i in range(5 * j, 5 * j + 5)])
    def __(values: list[bytes]) -> bytes:
        _log(f"mid({j})")
        h = hashlib.sha256()
        for v in values:
            h.update(v)
        time.sleep(DELAY)
        return h.digest() * (1 + j % 3) * 1000

    return __


@task
def main():
    """The digest of every mid."""

    @requires([mid(j) for j in range(N_LEAVES // 5)])
    def __(values: list[bytes]) -> str:
        _log("main()")
        h = hashlib.sha256()
        for v in values:
            h.update(v)
        return h.hexdigest()

    return __
