"""Output helpers of the command line: stderr messages, JSON, tables, sizes, tracebacks.

Data goes to stdout (values, tables, JSON); messages and errors go to stderr. Nothing here
imports rich: commands that want it import it themselves, so that ``--help`` and shell
completion stay fast.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._units import parse_duration, parse_size

_CLICK_DIR = str(Path(click.__file__).resolve().parent)


def err(message: str = "", *, quiet: bool = False) -> None:
    """Print a message to stderr (unless ``quiet``)."""
    if not quiet:
        click.echo(message, err=True)


def emit_json(document: Any) -> None:
    """Print one JSON document to stdout."""
    click.echo(json.dumps(document, indent=2, default=repr))


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


if TYPE_CHECKING:  # click >= 8.2 types its ParamType by what it converts to
    _FloatType = click.ParamType[float]
    _IntType = click.ParamType[int]
else:
    _FloatType = _IntType = click.ParamType


class Duration(_FloatType):
    """An option's duration: ``90``, ``30m``, ``1h30m``, ``7d``, ``2w`` -> seconds."""

    name = "duration"

    def __init__(self, *, positive: bool = False) -> None:
        self.positive = positive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(str(value))
            if self.positive and seconds <= 0:
                raise ValueError(value)
        except ValueError:
            if self.positive:
                self.fail(f"{value!r} is not a duration > 0; use seconds or units, e.g. 90, "
                          "90s, 15m, 1h30m", param, ctx)
            self.fail(f"{value!r} is not a duration like 90s, 30m, 12h, 7d or 2w", param, ctx)
        return seconds


class Size(_IntType):
    """An option's size: ``500M``, ``2G``, ``1.5GiB``, ``1000`` -> bytes."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a size like 500M, 2G or 1000 (bytes)", param, ctx)


def trim_traceback(text: str) -> str:
    """Drop the frames of checkpoint and click from a formatted traceback."""
    from .._tracebacks import trim_traceback as trim

    return trim(text, (_CLICK_DIR,))


def format_exception(error: BaseException) -> str:
    """The traceback of an exception (with its cause chain and notes), checkpoint frames trimmed."""
    import traceback

    return trim_traceback("".join(traceback.format_exception(type(error), error, error.__traceback__)))
