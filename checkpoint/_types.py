"""Type aliases shared across checkpoint's modules."""

from __future__ import annotations

TaskId = str
"""Hex digest identifying one task (family + canonical arguments)."""
