"""A task submitted again (a retry, a dead worker, a damaged prerequisite) gets the values this
run computed, never the entries as planned; a damaged value is recomputed at most once a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import checkpoint
from checkpoint.errors import CorruptEntryError

SOURCE = """
import os
from pathlib import Path
from checkpoint import task, requires

VERSION = {version!r}

@task
def m():
    def __() -> str:
        return VERSION
    return __

@task
def big():
    def __() -> bytes:
        return b"x" * 100_000
    return __

@task
def other():
    def __() -> bytes:
        return b"y" * 100_000
    return __

def _flaky(how: str) -> None:
    marker = Path("failed-once")
    if how and not marker.exists():
        marker.touch()
        if how == "raise":
            raise RuntimeError("transient")
        os._exit(1)

@task(retries=1)
def main(how: str = ""):
    @requires(m())
    def __(mv: str) -> str:
        _flaky(how)
        return mv
    return __

@task
def both():
    @requires(m())
    @requires(big())
    def __(mv: str, b: bytes) -> str:
        return f"{{mv}}:{{len(b)}}"
    return __

@task
def three():
    @requires(m())
    @requires(big())
    @requires(other())
    def __(mv: str, b: bytes, o: bytes) -> str:
        return f"{{mv}}:{{len(b)}}:{{len(o)}}"
    return __
"""


@pytest.fixture
def load(make_module: Callable[[str, str], ModuleType]) -> Callable[[str], ModuleType]:
    return lambda version: make_module("resub", SOURCE.format(version=version))


def _blob_files(cache: Path, name: str) -> list[Path]:
    return sorted((cache / "checkpoint").glob(f"resub.{name}/blobs/*.bin"))


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_retried_task_gets_the_prerequisite_computed_in_this_run(
    load: Callable[[str], ModuleType], executor: str, how: str, tmp_path: Path
) -> None:
    if how == "exit" and executor != "process":
        pytest.skip("a worker that exits takes an in-process run with it")
    mod = load("OLD")
    assert checkpoint.run([mod.main()], executor="inline").values == {mod.main().id: "OLD"}
    mod = load("NEW")
    result = checkpoint.run([mod.main(how)], executor=executor)
    assert result.values[mod.main(how).id] == "NEW"
    assert (tmp_path / "failed-once").exists()
    # What was stored is right, and called fresh only when it is.
    again = checkpoint.run([mod.main(how)], executor="inline")
    assert again.values[mod.main(how).id] == "NEW"
    assert not again.ran


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_retry_on_an_empty_cache(load: Callable[[str], ModuleType], executor: str) -> None:
    mod = load("V")
    result = checkpoint.run([mod.main("raise")], executor=executor)
    assert result.values[mod.main("raise").id] == "V"


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_damaged_sibling_and_a_rerun_prerequisite(
    load: Callable[[str], ModuleType], executor: str, cache_dir: Path
) -> None:
    mod = load("OLD")
    checkpoint.run([mod.both()], executor="inline")
    mod = load("NEW")
    (blob,) = _blob_files(cache_dir, "big")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    result = checkpoint.run([mod.both()], executor=executor)
    assert result.values[mod.both().id] == "NEW:100000"
    again = checkpoint.run([mod.both()], executor="inline")
    assert again.values[mod.both().id] == "NEW:100000" and not again.ran


@pytest.mark.parametrize("damage", ["flip", "delete-all", "swap"])
def test_several_damaged_values_are_each_recomputed_once(
    load: Callable[[str], ModuleType], damage: str, cache_dir: Path
) -> None:
    mod = load("V")
    checkpoint.run([mod.three()], executor="inline")
    blobs = _blob_files(cache_dir, "big") + _blob_files(cache_dir, "other")
    assert len(blobs) == 2
    if damage == "flip":
        for blob in blobs:
            data = bytearray(blob.read_bytes())
            data[10] ^= 0xFF
            blob.write_bytes(bytes(data))
    elif damage == "delete-all":
        for blob in blobs:
            blob.unlink()
    else:
        a, b = (p.read_bytes() for p in blobs)
        blobs[0].write_bytes(b)
        blobs[1].write_bytes(a)
    mod = load("W")  # three() runs again, and reads both damaged values
    result = checkpoint.run([mod.three()], executor="inline", raise_on_failure=False)
    assert result.values[mod.three().id] == "W:100000:100000"
    ran = sorted(t.expression() for t in result.ran)
    assert ran == ["big()", "m()", "other()", "three()"]
    again = checkpoint.run([mod.three()], executor="inline")
    assert not again.ran


def test_a_value_damaged_again_after_its_recompute_fails_with_a_store_error(
    load: Callable[[str], ModuleType], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that damages every value it stores: the run ends, naming the problem."""
    mod = load("V")
    checkpoint.run([mod.both()], executor="inline")
    from checkpoint import store as store_module

    real = store_module.BlobRef.load

    def always_damaged(self: store_module.BlobRef) -> object:
        raise self._corrupt()

    monkeypatch.setattr(store_module.BlobRef, "load", always_damaged)
    mod = load("W")
    result = checkpoint.run([mod.both()], executor="inline", raise_on_failure=False)
    monkeypatch.setattr(store_module.BlobRef, "load", real)
    assert sorted(t.expression() for t in result.ran) == ["big()", "m()"]
    (error,) = result.failed.values()
    assert isinstance(error, CorruptEntryError)
    assert "again" in str(error) and "big()" in str(error)
