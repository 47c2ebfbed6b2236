"""Small text helpers shared by messages."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``"1 task"``, ``"3 tasks"``, ``"1,024 entries"`` (``many`` when adding "s" is wrong)."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"
