"""Output helpers of the command line: stderr messages, JSON, tables, sizes, tracebacks.

Data goes to stdout (values, tables, JSON); messages and errors go to stderr. Nothing here
imports rich: commands that want it import it themselves, so that ``--help`` and shell
completion stay fast.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .._units import parse_duration, parse_size

_CLICK_DIR = str(Path(click.__file__).resolve().parent)


def err(message: str = "", *, quiet: bool = False) -> None:
    """Print a message to stderr (unless ``quiet``)."""
    if not quiet:
        click.echo(message, err=True)


def echo_text(text: str) -> None:
    """Print text to stdout as it is, but for characters stdout cannot encode (a lone
    surrogate from ``json.loads``, text a Latin-1 terminal lacks): those are escaped
    (``\\ud800``), as ``repr`` does, instead of failing the command."""
    stream = sys.stdout
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding, getattr(stream, "errors", None) or "strict")
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # an encoding Python does not know: let the stream decide
        pass
    click.echo(text)


def safe_repr(value: object) -> str:
    """``repr(value)``, or ``<repr-error '...'>`` when the value's ``__repr__`` raises (as
    ``checkpoint cache show`` prints it, through rich): a stored value is shown whatever its
    class's bugs."""
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - the value's own code, after the run
        try:
            text = str(exc)
        except Exception:  # noqa: BLE001
            text = type(exc).__name__
        return f"<repr-error {text!r}>"


def emit_json(document: object) -> None:
    """Print one JSON document to stdout."""
    click.echo(json.dumps(document, indent=2, default=safe_repr))


_ESCAPE = json.encoder.encode_basestring_ascii  # what json.dumps writes a str with (C)


def emit_json_stream(fields: Iterable[tuple[str, object]]) -> None:
    """Print one JSON object to stdout, exactly as :func:`emit_json` prints it, field by
    field: a field whose value is an iterator is written as a list, item by item as the
    iterator makes them, so memory stays flat in its length. ``fields`` is consumed
    lazily too: a later field (counts) may be computed while an earlier one was written."""
    pending: list[str] = ["{"]
    size = 0
    first = True
    for key, value in fields:
        pending.append(("\n  " if first else ",\n  ") + _ESCAPE(key) + ": ")
        first = False
        if not isinstance(value, Iterator):
            pending.append(_indented(value, "  "))
            continue
        empty = True
        for item in value:
            pending.append(("[\n    " if empty else ",\n    ") + _indented(item, "    "))
            empty = False
            size += 1
            if size >= 2000:  # write in chunks: a few hundred KB at most in memory
                click.echo("".join(pending), nl=False)
                pending.clear()
                size = 0
        pending.append("[]" if empty else "\n  ]")
    pending.append("}" if first else "\n}")
    click.echo("".join(pending))


def _indented(obj: Any, pad: str) -> str:
    """``json.dumps(obj, indent=2, default=repr)`` as written at indentation ``pad``; the
    common types by hand (json's indenting encoder is pure Python: 5x slower)."""
    kind = type(obj)
    if kind is str:
        return _ESCAPE(obj)
    if obj is None:
        return "null"
    if kind is bool:
        return "true" if obj else "false"
    if kind is int:
        return int.__repr__(obj)
    if kind is float and math.isfinite(obj):
        return float.__repr__(obj)
    if isinstance(obj, str):  # a str enum (a task's reason)
        return _ESCAPE(obj)
    inner = pad + "  "
    if kind is dict and obj and all(type(k) is str for k in obj):
        head = inner + '"'
        return ("{\n" + ",\n".join([
            (head + k + '": ' if k.isalnum() and k.isascii() else inner + _ESCAPE(k) + ": ")
            + (_ESCAPE(v) if type(v) is str else _indented(v, inner)) for k, v in obj.items()])
            + "\n" + pad + "}")
    if kind is list and obj:
        return "[\n" + ",\n".join([inner + _indented(v, inner) for v in obj]) + "\n" + pad + "]"
    # Anything else as json writes it (a str never holds a raw newline once encoded).
    return json.dumps(obj, indent=2, default=safe_repr).replace("\n", "\n" + pad)


def quote_target(expr: str) -> str:
    """Quote a target for a shell, readably: ``"f('a')"`` rather than shlex's ``'f('"'"'a'"'"')'``."""
    import shlex

    if "'" in expr and not any(c in expr for c in '"$`\\!'):
        return f'"{expr}"'
    return shlex.quote(expr)


def human_time(timestamp: float) -> str:
    """A local date and time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """A plain text table; ``right`` lists the columns to right-align."""
    return "\n".join(_table_lines(headers, rows, right))


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> None:
    """Print :func:`table` to stdout, a few thousand lines at a time (a 200,000-row
    listing is never one string)."""
    lines = _table_lines(headers, rows, right)
    while True:
        chunk = list(itertools.islice(lines, 2000))
        if not chunk:
            return
        click.echo("\n".join(chunk))


def _table_lines(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> Iterator[str]:
    widths = [len(h) for h in headers]
    for i, column in enumerate(zip(*rows, strict=False)):
        widths[i] = max(widths[i], max(map(len, column)))
    # One %-format per line (a 200,000-row listing): the last column unpadded unless it is
    # right-aligned, each line stripped on the right as before.
    last = len(widths) - 1
    row_format = "  ".join(
        f"%{w}s" if i in right else "%s" if i == last else f"%-{w}s" for i, w in enumerate(widths))
    justify = [str.rjust if i in right else str.ljust for i in range(len(widths))]
    for row in itertools.chain([headers], rows):
        try:
            yield (row_format % tuple(row)).rstrip()
        except TypeError:  # a row shorter than the headers
            yield "  ".join([justify[i](cell, widths[i]) for i, cell in enumerate(row)]).rstrip()


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
