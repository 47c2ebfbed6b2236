"""``python -m checkpoint``: the same CLI as ``checkpoint``.

The seed's form ``python -m checkpoint path/to/taskfile.py [options]`` still works: it
means ``checkpoint -f path/to/taskfile.py run main [options]``.
"""

from __future__ import annotations

import sys

from .cli import main


def _seed_args(argv: list[str]) -> list[str]:
    if argv and argv[0].endswith(".py") and not argv[0].startswith("-"):
        return ["-f", argv[0], "run", *argv[1:]]
    return argv


if __name__ == "__main__":
    main(_seed_args(sys.argv[1:]))
