"""Shared fixtures: an isolated cache and working directory for every test."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

CHOOSE = '''
from checkpoint import task, requires

@task
def choose(n: int, k: int):
    if 0 < k < n:
        @requires(choose(n - 1, k - 1))
        @requires(choose(n - 1, k))
        def __(a: int, b: int) -> int:
            return a + b
    elif k == 0 or k == n:
        def __() -> int:
            return 1
    else:
        raise ValueError(f'{(n, k)}')
    return __
'''
"""The README's binomial coefficient as a module's source, for tests that need a real graph."""


def pytest_configure(config: pytest.Config) -> None:
    """Run as a background job of a shell without job control (``cmd &`` in a script), the
    suite starts with SIGINT ignored, and every process it starts inherits that: the tests
    that send Ctrl-C to a real ``checkpoint run`` would see it ignored, as checkpoint rightly
    keeps an ignored SIGINT ignored. Those tests are about a terminal's Ctrl-C, so the suite
    takes SIGINT back as Python's default handler (its children then start with SIGINT on)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test runs in its own directory with its own cache; global state is restored."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CP_CACHE_DIR", str(tmp_path / ".cache"))
    for name in ("NO_COLOR", "FORCE_COLOR", "CP_REMOTE", "CP_REMOTE_KEY"):
        monkeypatch.delenv(name, raising=False)
    modules = dict(sys.modules)
    path = list(sys.path)
    yield
    _forget_test_modules(tmp_path, modules)
    sys.path[:] = path
    from checkpoint.store import Store

    for store in Store._open_stores.values():
        store.close()
    Store._open_stores.clear()


def _forget_test_modules(tmp_path: Path, before: dict[str, ModuleType]) -> None:
    """Drop the modules a test imported from its own directory (taskfiles, ``make_module``).

    Only those: library modules imported lazily during a test (``checkpoint._worker``, the
    process-pool machinery, ``distributed``) stay loaded, since a second copy of a module
    breaks pickling by reference (a class no longer is the class its name resolves to).
    A test module that replaced an earlier one under the same name gives the name back.
    """
    root = str(tmp_path.resolve()) + os.sep
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", ())), None)
        if not isinstance(file, str) or not os.path.realpath(file).startswith(root):
            continue
        previous = before.get(name)
        if previous is None:
            del sys.modules[name]
        elif previous is not module:
            sys.modules[name] = previous


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """The test's cache directory (also in $CP_CACHE_DIR)."""
    return tmp_path / ".cache"


@pytest.fixture
def runner() -> CliRunner:
    """A click CliRunner (stdout and stderr kept apart)."""
    return CliRunner()


@pytest.fixture
def make_module(tmp_path: Path) -> Callable[[str, str], ModuleType]:
    """Write a module into the test directory and import it (re-importing replaces it)."""
    import importlib

    def make(name: str, source: str) -> ModuleType:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        if str(tmp_path) not in sys.path:
            sys.path.insert(0, str(tmp_path))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        # Bytecode caches compare mtimes at one-second resolution: bypass them.
        sys.dont_write_bytecode = True
        try:
            return importlib.import_module(name)
        finally:
            sys.dont_write_bytecode = False

    return make


def write(path: Path, source: str) -> Path:
    """Write dedented source to a file and return its path."""
    path.write_text(textwrap.dedent(source))
    return path


PYTHON = sys.executable
ENV = dict(os.environ)
