"""Output helpers of the command line: stderr messages, JSON, tables, sizes, tracebacks.

Data goes to stdout (values, tables, JSON); messages and errors go to stderr. Nothing here
imports rich: commands that want it import it themselves, so that ``--help`` and shell
completion stay fast.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

_CLICK_DIR = str(Path(click.__file__).resolve().parent)


def err(message: str = "", *, quiet: bool = False) -> None:
    """Print a message to stderr (unless ``quiet``)."""
    if not quiet:
        click.echo(message, err=True)


def emit_json(document: Any) -> None:
    """Print one JSON document to stdout."""
    click.echo(json.dumps(document, indent=2, default=repr))


def human_size(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``0.0123`` -> ``'12ms'``, ``75`` -> ``'1m15s'``, under a millisecond ``'<1ms'``."""
    if seconds < 0.0005:
        return "<1ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def human_time(timestamp: float) -> str:
    """A local date and time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A plain text table; ``right`` lists the columns to right-align."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Option callback: ``90``, ``30m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    if value is None:
        return None
    match = _DURATION.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """Option callback: ``500M``, ``2G``, ``1.5GiB``, ``1000`` -> bytes."""
    if value is None:
        return None
    match = _SIZE.match(value)
    if not match:
        raise click.BadParameter(f"{value!r} is not a size like 500M, 2G or 1000 (bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def trim_traceback(text: str) -> str:
    """Drop the frames of checkpoint and click from a formatted traceback."""
    from .._tracebacks import trim_traceback as trim

    return trim(text, (_CLICK_DIR,))


def format_exception(error: BaseException) -> str:
    """The traceback of an exception (with its cause chain and notes), checkpoint frames trimmed."""
    import traceback

    return trim_traceback("".join(traceback.format_exception(type(error), error, error.__traceback__)))
