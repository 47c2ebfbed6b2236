"""``python -m checkpoint``: the same CLI as ``checkpoint``.

The original checkpoint-tool's form, ``python -m checkpoint path/to/taskfile.py [options]``,
still works: it means ``checkpoint -f path/to/taskfile.py run [options]``, and its own options are
translated: ``-e/--entrypoint NAME`` (the target, default ``main``), ``-t/--exec-type
process|thread`` (``--executor``), ``-w/--max-workers N`` (``-j``; a negative N counts back
from the CPU count, -1 meaning all of them), ``--cache-dir DIR``, ``--rate-limits JSON``
(``{"gpu": 1}``: one ``--rate-limit gpu=1`` each) and ``-D/--detect-source-change``
(accepted and ignored: code changes are always detected; ``--no-code-check`` turns that off).
"""

from __future__ import annotations

import json
import os
import sys

from .cli import console
from .errors import ExitCode

_SEED_VALUE_OPTIONS = {
    "-e": "entrypoint", "--entrypoint": "entrypoint",
    "-t": "exec-type", "--exec-type": "exec-type",
    "-w": "max-workers", "--max-workers": "max-workers",
    "--cache-dir": "cache-dir",
    "--rate-limits": "rate-limits",
}


class SeedUsageError(Exception):
    """An option of the original form with a value it would not have accepted either."""


def _seed_args(argv: list[str]) -> list[str]:
    """Translate the original ``TASKFILE [options]`` form into ``-f TASKFILE run ...``."""
    if not argv or not argv[0].endswith(".py") or argv[0].startswith("-"):
        return argv
    front = ["-f", argv[0]]
    run: list[str] = []
    targets: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, inline = arg.partition("=")
        if arg in ("-D", "--detect-source-change"):
            i += 1
            continue
        option = _SEED_VALUE_OPTIONS.get(name if eq and name.startswith("--") else arg)
        if option is None:
            run.append(arg)
            i += 1
            continue
        if eq and name.startswith("--"):
            value, i = inline, i + 1
        elif i + 1 < len(rest):
            value, i = rest[i + 1], i + 2
        else:
            raise SeedUsageError(f"Option {arg} needs a value.")
        if option == "entrypoint":
            targets.append(value)
        elif option == "exec-type":
            run += ["--executor", value]
        elif option == "cache-dir":
            front += ["--cache-dir", value]
        elif option == "max-workers":
            run += ["-j", _workers(value)]
        else:
            run += _rate_limits(value)
    return [*front, "run", *targets, *run]


def _workers(value: str) -> str:
    try:
        n = int(value)
    except ValueError:
        raise SeedUsageError(f"-w/--max-workers wants a whole number, not {value!r}.") from None
    if n < 0:
        n = max(1, (os.cpu_count() or 1) + 1 + n)
    return str(n)


def _rate_limits(value: str) -> list[str]:
    try:
        limits = json.loads(value)
    except ValueError:
        limits = None
    if not isinstance(limits, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in limits.values()
    ):
        raise SeedUsageError(
            f"--rate-limits wants a JSON object of queue limits like '{{\"gpu\": 1}}', not {value!r}."
        )
    return [arg for queue, n in limits.items() for arg in ("--rate-limit", f"{queue}={n}")]


if __name__ == "__main__":
    try:
        args = _seed_args(sys.argv[1:])
    except SeedUsageError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        sys.exit(ExitCode.USAGE)
    console(args)
