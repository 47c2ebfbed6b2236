"""Sizes and durations: one parser and one formatter each (checkpoint._units)."""

from __future__ import annotations

import pytest

from checkpoint._units import duration_text, parse_duration, parse_size, size_text


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("1.5m", 90), ("1h30m", 5400), ("500ms", 0.5), ("7d", 604800),
    ("2w", 1209600), (" 12 h ", 43200), ("0", 0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1h30", "3 days", "-5s", "1e400", "h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("1000", 1000), ("500M", 500 << 20), ("2G", 2 << 30), ("1.5GiB", 3 << 29), ("4kb", 4096),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5X", "-1"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_texts() -> None:
    assert [size_text(n) for n in (0, 1023, 1536, 5 << 30)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]
    assert [duration_text(s) for s in (0.0001, 0.012, 5.25, 75, 7320)] == \
        ["<1ms", "12ms", "5.2s", "1m15s", "2h02m"]
