"""Type aliases shared across checkpoint's modules."""

from __future__ import annotations

from typing import Union

TaskId = str
"""Hex digest identifying one task (family + canonical arguments)."""

FamilyName = str
"""``{module}.{qualname}`` of a task family."""

JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]
