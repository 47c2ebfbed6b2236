"""At exit, the project's modules are released (what they hold is finalized: an open file
keeps the lines a task wrote): which modules are the project's, with symbolic links on the
way, as the code fingerprint sees them (:func:`checkpoint.fingerprint.in_project`)."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from checkpoint._gcpolicy import release_project_modules

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt",
                                reason="needs symbolic links")


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[dict[str, types.ModuleType]]:
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("plain.py", "pkg/inner.py", "target.py"):
        (project / name).write_text("")
    (elsewhere / "outside.py").write_text("")
    (elsewhere / "project-link").symlink_to(project)  # the project reached through a link
    (elsewhere / "linked.py").symlink_to(project / "target.py")  # a file linked out of it
    (project / "shared.py").symlink_to(elsewhere / "outside.py")  # a file linked into it
    files = {
        "plain": project / "plain.py",
        "inner": project / "pkg" / "inner.py",
        "via_dir_link": elsewhere / "project-link" / "pkg" / "inner.py",
        "via_file_link": elsewhere / "linked.py",
        "linked_in": project / "shared.py",
        "outside": elsewhere / "outside.py",
    }
    made = {}
    for name, file in files.items():
        module = types.ModuleType(f"_cp_release_{name}")
        module.__file__ = str(file)
        module.value = name  # type: ignore[attr-defined]
        sys.modules[module.__name__] = made[name] = module
    yield made
    for module in made.values():
        sys.modules.pop(module.__name__, None)


def test_the_project_modules_are_released_however_their_path_is_spelled(
        tmp_path: Path, modules: dict[str, types.ModuleType]) -> None:
    release_project_modules(str((tmp_path / "project").resolve()))
    released = {name for name, module in modules.items() if module.value is None}  # type: ignore[attr-defined]
    assert released == {"plain", "inner", "via_dir_link", "via_file_link", "linked_in"}
