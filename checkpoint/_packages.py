"""The versions of the installed packages a family's code uses, recorded with its results.

Upgrading a package is not a code change (see :mod:`checkpoint.fingerprint`: installed code
is not fingerprinted), so it re-runs nothing; but ``checkpoint why`` says when a package a
stored result's code used has another version now than when the result was stored. The
fingerprint walk notes the packages (:data:`checkpoint.fingerprint.code_packages`); a run
records their versions with each result it stores (``pv:{id}``, see
:mod:`checkpoint._format`), looked up once per run.

A package is named by its top-level module (``numpy``, ``sklearn``); its version is that of
the installed distribution of the same name (:func:`importlib.metadata.version`), else the
module's ``__version__`` when it is imported, else unknown (not recorded, never reported).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Versions:
    """Package versions, each looked up once (make one per run: an upgrade during a long
    session shows in the next run)."""

    found: dict[str, str | None] = field(default_factory=dict)

    def of(self, package: str) -> str | None:
        """The installed version of ``package`` (a top-level module name), or ``None``."""
        if package not in self.found:
            self.found[package] = _version(package)
        return self.found[package]

    def record(self, packages: Iterable[str]) -> dict[str, str]:
        """``{package: version}`` of those whose version is known."""
        return {p: v for p in packages if (v := self.of(p)) is not None}

    def changes(self, recorded: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """``{package: (recorded version, current version)}`` of the packages whose version
        differs now (one no longer installed, or whose version cannot be told, is left out)."""
        return {p: (old, new) for p, old in sorted(recorded.items())
                if (new := self.of(p)) is not None and new != old}


def _version(package: str) -> str | None:
    from importlib.metadata import distributions

    module = sys.modules.get(package)
    file = getattr(module, "__file__", None)
    # Its distribution is in the directory it was imported from: looking there alone costs
    # one directory listing instead of one per entry of sys.path (~30 ms).
    where = [os.path.dirname(os.path.dirname(file)) if os.path.basename(file).startswith(
        "__init__.") else os.path.dirname(file)] if isinstance(file, str) and file else sys.path
    found: object = None
    try:
        dist = next(iter(distributions(name=package, path=where)), None)
        found = dist.version if dist is not None else None
    except (ValueError, OSError):
        pass
    if not found:
        found = getattr(module, "__version__", None)
    return found if isinstance(found, str) and found else None


def encode(stored: float, versions: str) -> str:
    """The ``pv:{id}`` row of an entry stored at ``stored`` (its ``Meta.stored``), from the
    versions as :func:`versions_text` wrote them."""
    return f'{{"stored":{stored!r},"versions":{versions}}}'


def versions_text(versions: Mapping[str, str]) -> str:
    return json.dumps(versions, separators=(",", ":"), sort_keys=True)


def decode(text: str | None, stored: float) -> dict[str, str] | None:
    """The versions in a ``pv:{id}`` row, if it was written with the entry stored at
    ``stored`` (a row left by another entry of the same task is not that entry's)."""
    if text is None:
        return None
    try:
        row = json.loads(text)
    except ValueError:
        return None
    if not isinstance(row, dict) or row.get("stored") != stored:
        return None
    versions = row.get("versions")
    if not isinstance(versions, dict):
        return None
    return {k: v for k, v in versions.items() if isinstance(k, str) and isinstance(v, str)}
