"""A deterministic pickle, for fingerprinting values: the same value gives the same bytes in
every process, whatever the hash seed (sets and dicts are written in sorted order)."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any, ClassVar


class _Pickler(pickle._Pickler):
    """A pickler whose output depends only on the value: sets and dicts are written sorted,
    and ``reference`` may write any object as a text instead (its persistent id)."""

    dispatch: ClassVar[Any] = dict(pickle._Pickler.dispatch)

    def __init__(self, file: io.BytesIO, reference: Callable[[Any], str | None]) -> None:
        super().__init__(file, protocol=5)
        self.reference = reference

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, (str, int, float, bytes, bool, type(None), tuple, list, dict)):
            return None
        return self.reference(obj)

    def _save_set(self, obj: set[Any] | frozenset[Any]) -> None:
        items = sorted(obj, key=lambda item: pickle_bytes(item, self.reference, fast=True))
        self.save_reduce(type(obj), (items,), obj=obj)  # type: ignore[attr-defined]

    def _save_dict(self, obj: dict[Any, Any]) -> None:
        # Sorted, like sets: a dict filled from a set has a hash-seed-dependent order.
        if all(type(k) is str for k in obj):
            items = sorted(obj.items())
        else:
            items = sorted(obj.items(), key=lambda kv: pickle_bytes(kv[0], self.reference, fast=True))
        self.write(pickle.EMPTY_DICT)  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]
        self._batch_setitems(iter(items))  # type: ignore[attr-defined]

    dispatch[set] = _save_set
    dispatch[frozenset] = _save_set
    dispatch[dict] = _save_dict


def pickle_bytes(value: Any, reference: Callable[[Any], str | None], *, fast: bool) -> bytes:
    """Pickle ``value`` the same way in every process; ``fast`` leaves out the memo, so that
    shared and copied sub-objects pickle alike (a recursive value then needs ``fast=False``)."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, reference)
    pickler.fast = fast  # no memo: shared and copied sub-objects pickle alike
    pickler.dump(value)
    return buffer.getvalue()
