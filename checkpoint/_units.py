"""Sizes and durations as people write and read them: one parser and one formatter each.

Used by the command line (options such as ``--timeout 1h30m``, ``--max-size 2G``; tables),
the notebook view and the run report, so ``12ms`` and ``1.5 KiB`` mean the same everywhere.
"""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d|w)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``1.5m``, ``1h30m``, ``500ms``, ``7d``, ``2w``.

    Raises:
        ValueError: not such a duration (``"1h30"`` is ambiguous, so it is not one either).
    """
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(text)
    if len(parts) > 1 and not all(u for _, u in parts):
        raise ValueError(text)
    seconds = sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)
    if seconds == float("inf"):
        raise ValueError(text)
    return seconds


def parse_size(text: str) -> int:
    """Bytes in ``500M``, ``2G``, ``1.5GiB``, ``1000`` (units of 1024).

    Raises:
        ValueError: not such a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(text)
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def size_text(n: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def duration_text(seconds: float) -> str:
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
