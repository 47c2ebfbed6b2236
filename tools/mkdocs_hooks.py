"""MkDocs hooks for the checkpoint site (wired in mkdocs.yml under ``hooks:``).

Several engineers add pages concurrently, so the nav in mkdocs.yml may name a page that has
not landed yet, and a page may land before anyone lists it. This hook makes the nav follow
the files: entries whose file is missing are dropped (instead of failing ``--strict``), and
top-level pages that no entry lists are appended under "More", so no page is unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _prune(items: list[Any], docs_dir: Path, listed: set[str]) -> list[Any]:
    kept: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                children = _prune(value, docs_dir, listed)
                if children:
                    kept.append({title: children})
            elif _keep(value, docs_dir, listed):
                kept.append(item)
        elif _keep(item, docs_dir, listed):
            kept.append(item)
    return kept


def _keep(value: str, docs_dir: Path, listed: set[str]) -> bool:
    if "://" in value:
        return True
    listed.add(value)
    return (docs_dir / value).is_file()


def on_config(config: Any) -> Any:
    """Drop nav entries for missing pages; append unlisted top-level pages under "More"."""
    nav = config.get("nav")
    if not nav:
        return config
    docs_dir = Path(config["docs_dir"])
    listed: set[str] = set()
    nav = _prune(list(nav), docs_dir, listed)
    extra = sorted(
        p.name for p in docs_dir.glob("*.md") if p.name not in listed and not p.name.startswith("_")
    )
    if extra:
        nav.append({"More": extra})
    config["nav"] = nav
    return config
