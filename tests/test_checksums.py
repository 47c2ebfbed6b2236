"""The value checksum: xxh3-128 for what is stored now, CRC-32 still checked for entries
written before (docs/performance.md, Large values); one pass gives the checksum and the
stamp, the same whichever path stored the value."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import write

from checkpoint import _stamps
from checkpoint._codec import BlobRef, encode_result, verified_payload
from checkpoint._format import XXH3, Checksum, Meta, checksum, matches
from checkpoint.cli import cli
from checkpoint.errors import CorruptEntryError
from checkpoint.store import Store

MB = 1 << 20
TASK_ID = "0" * 32

TASKFILE = """
import os
from checkpoint import requires, task

def _log(name):
    with open("exec.log", "a") as f:
        f.write(name + "\\n")

@task
def small(i: int):
    def __() -> int:
        _log(f"small({i})")
        return i * 10
    return __

@task
def streamed():
    def __() -> bytes:
        _log("streamed()")
        return bytes(range(256)) * 1000
    return __

@task
def pickled():
    def __() -> list[bytes]:
        _log("pickled()")
        return [bytes([i]) * 1000 for i in range(50)]
    return __

@task(compress_level=1)
def packed():
    def __() -> list[str]:
        _log("packed()")
        return [str(i) for i in range(20_000)]
    return __

@task
def main():
    @requires([small(i) for i in range(3)])
    @requires(streamed())
    @requires(pickled())
    @requires(packed())
    def __(smalls: list[int], s: bytes, p: list[bytes], z: list[str]) -> str:
        _log("main()")
        return f"{sum(smalls)}:{len(s)}:{sum(map(len, p))}:{len(z)}"
    return __
"""
VALUE = "30:256000:50000:20000"


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _ran(tmp_path: Path) -> list[str]:
    log = tmp_path / "exec.log"
    ran = sorted(log.read_text().split()) if log.exists() else []
    log.unlink(missing_ok=True)
    return ran


def _entries(store: Store) -> list[tuple[str, str, Meta]]:
    return [(family, tid, meta) for family in store.families()
            for tid, meta in store.entries(family)]


def _payload(store: Store, family: str, meta: Meta) -> bytes:
    if meta.blob:
        return (store.blob_dir(family) / meta.blob).read_bytes()
    assert meta.inline is not None
    return meta.inline


def _as_written_before_xxh3(cache: Path) -> None:
    """Rewrite every entry as the older code wrote it: a CRC-32 checksum."""
    store = Store.open(cache)
    try:
        for family, tid, meta in _entries(store):
            meta.crc = zlib.crc32(_payload(store, family, meta))
            store.put_metas(family, {tid: meta})
    finally:
        store.close()


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "taskfile.py", TASKFILE)
    code, out, err = _invoke("run", "--no-progress")
    assert (code, out.strip()) == (0, VALUE), err
    assert _ran(tmp_path) == ["main()", "packed()", "pickled()", "small(0)", "small(1)",
                              "small(2)", "streamed()"]
    return tmp_path


def test_new_entries_carry_xxh3_and_are_stamped_from_it(project: Path) -> None:
    store = Store.open(project / ".cache")
    try:
        entries = _entries(store)
        assert len(entries) == 7
        for family, _, meta in entries:
            payload = _payload(store, family, meta)
            assert meta.crc == checksum(payload) >= XXH3
        blobs = [meta for _, _, meta in entries if meta.blob]
        assert len(blobs) == 3  # streamed by the worker, pickled in memory, compressed
    finally:
        store.close()


def test_entries_written_with_crc32_still_load_and_verify(project: Path) -> None:
    _as_written_before_xxh3(project / ".cache")
    assert _invoke("cache", "verify")[0] == 0
    assert _invoke("clear", "main()")[0] == 0
    code, out, err = _invoke("run", "--no-progress")  # main() reads every older entry
    assert (code, out.strip()) == (0, VALUE), err
    assert "corrupt" not in err
    assert _ran(project) == ["main()"]


@pytest.mark.parametrize("written", ["crc32", "xxh3"])
@pytest.mark.parametrize("family", ["streamed", "pickled", "packed"])
def test_a_damaged_value_file_is_refused_and_recomputed(project: Path, written: str,
                                                         family: str) -> None:
    if written == "crc32":
        _as_written_before_xxh3(project / ".cache")
    [blob] = (project / ".cache" / "checkpoint" / f"taskfile.{family}" / "blobs").glob("*.bin")
    _flip(blob, blob.stat().st_size // 2)
    code, out, err = _invoke("cache", "verify")
    assert code != 0 and f"{family}()" in out + err
    assert _invoke("clear", "main()")[0] == 0
    code, out, err = _invoke("run", "--no-progress")
    assert (code, out.strip()) == (0, VALUE), err
    assert "warning: The stored value file " in err and f"taskfile.{family}/blobs/" in err
    assert "is corrupt (size or checksum mismatch)" in err, err
    assert _ran(project) == sorted([f"{family}()", "main()"])


@pytest.mark.parametrize("written", ["crc32", "xxh3"])
def test_a_damaged_inline_value_is_refused(written: str) -> None:
    payload = b"\x80\x05" + os.urandom(200)
    crc = zlib.crc32(payload) if written == "crc32" else checksum(payload)
    meta = Meta("small(1)", "{}", "f", "s", size=len(payload), crc=crc)
    meta.inline = payload
    assert verified_payload(meta, None, "small(1)") == payload
    for at in (0, 100, len(payload) - 1):
        damaged = bytearray(payload)
        damaged[at] ^= 1
        meta.inline = bytes(damaged)
        with pytest.raises(CorruptEntryError, match=r"small\(1\) is corrupt"):
            verified_payload(meta, None, "small(1)")


def _values() -> dict[str, tuple[object, int]]:
    np = pytest.importorskip("numpy")
    return {
        "bytes": (os.urandom(3 * MB + 5), 0),  # streamed, read by the checking reader
        "array": (np.arange(MB // 8 + 3, dtype=np.float64), 0),  # out-of-band: mapped
        "list": ([os.urandom(1000) for _ in range(100)], 0),  # pickled in memory, then written
        "compressed": ([str(i) for i in range(30_000)], 1),  # read whole
    }


@pytest.mark.parametrize("written", ["crc32", "xxh3"])
@pytest.mark.parametrize("layout", ["bytes", "array", "list", "compressed"])
def test_value_files_are_checked_with_their_own_algorithm(tmp_path: Path, written: str,
                                                          layout: str) -> None:
    value, level = _values()[layout]
    encoded = encode_result(value, level, str(tmp_path), TASK_ID)
    path = tmp_path / encoded.blob
    data = path.read_bytes()
    assert encoded.crc == checksum(data)
    crc = zlib.crc32(data) if written == "crc32" else encoded.crc
    ref = BlobRef(str(path), encoded.size, crc, level != 0)
    assert ref.read() == data
    _same(ref.load(), value)
    for at in (0, len(data) // 2, len(data) - 1):  # pickle, buffers, trailer
        _flip(path, at)
        for read in (ref.read, ref.load):
            with pytest.raises(CorruptEntryError, match="size or checksum"):
                read()
        _flip(path, at)
    # A stored checksum of neither kind (damaged metadata) checks nothing as intact.
    for bad in (-1, 1 << 32, encoded.crc - XXH3, encoded.crc ^ 1, zlib.crc32(data) ^ 1):
        with pytest.raises(CorruptEntryError):
            BlobRef(str(path), encoded.size, bad, level != 0).load()
        assert not matches(data, bad)


def _same(found: Any, value: object) -> None:
    if type(value).__module__ == "numpy":
        assert (found == value).all()
    else:
        assert found == value


def test_a_running_checksum_is_the_one_shot_checksum() -> None:
    data = os.urandom(3 * MB + 7)
    for expected in (checksum(data), zlib.crc32(data)):
        running = Checksum.like(expected)
        for start in range(0, len(data), MB):
            running.update(memoryview(data)[start:start + MB])
        assert running.value() == expected
        assert matches(data, expected)


@pytest.mark.parametrize("layout", ["bytes", "list"])
def test_equal_values_have_equal_stamps_streamed_or_in_memory(tmp_path: Path, layout: str) -> None:
    # The worker that writes a value file stamps it from the checksum it took while
    # writing; a payload held in memory is stamped by the coordinator from the worker's
    # checksum of it (Results._stamp): the same bytes give the same stamp either way.
    value, _ = _values()[layout]
    on_disk = encode_result(value, 0, str(tmp_path), TASK_ID)
    in_memory = encode_result(value, 0, "", TASK_ID)  # no value directory: kept in memory
    assert on_disk.blob and on_disk.payload is None and on_disk.stamp
    assert in_memory.payload is not None and not in_memory.blob
    assert (tmp_path / on_disk.blob).read_bytes() == in_memory.payload
    assert on_disk.crc == in_memory.crc
    assert on_disk.stamp == _stamps.checksum_stamp(in_memory.crc, False) \
        == _stamps.value_stamp(in_memory.payload, False)


def test_stamps_never_equal_those_of_older_versions_or_unique_ones() -> None:
    payload = os.urandom(100)
    stamp = _stamps.value_stamp(payload, False)
    assert stamp.startswith("vx") and len(stamp) == 34
    assert _stamps.value_stamp(payload, True).startswith("vz")
    with pytest.raises(ValueError, match="xxh3"):
        _stamps.checksum_stamp(zlib.crc32(payload), False)


def test_an_older_stamp_reruns_dependents_once(project: Path) -> None:
    # An entry stamped by an older version (a BLAKE2b digest) keeps its dependents current
    # until it is recomputed; then its stamp is of the new kind, different, and they run
    # once more (never taken for the same value by mistake), and early cutoff works again.
    store = Store.open(project / ".cache")
    try:
        [(family, tid, meta)] = [e for e in _entries(store) if e[2].expr == "small(1)"]
        meta.stamp = "v" + "0123456789abcdef" * 2
        store.put_metas(family, {tid: meta})
    finally:
        store.close()
    assert _invoke("run", "--no-progress")[0] == 0
    assert _ran(project) == ["main()"]  # it records the older stamp it was computed from
    assert _invoke("clear", "small(1)")[0] == 0
    assert _invoke("run", "--no-progress")[1].strip() == VALUE
    assert _ran(project) == ["main()", "small(1)"]
    assert _invoke("clear", "small(1)")[0] == 0
    assert _invoke("run", "--no-progress")[1].strip() == VALUE
    assert _ran(project) == ["small(1)"]


def test_a_payload_is_stamped_from_its_xxh3_checksum_else_hashed() -> None:
    # The coordinator stamps a payload held in memory from the checksum the worker took
    # of it; a CRC-32 (a worker of an older version, say on a Dask cluster) is no digest:
    # the payload is hashed then.
    payload = os.urandom(1000)
    expected = _stamps.value_stamp(payload, False)
    assert _stamps.value_stamp(payload, False, checksum(payload)) == expected
    assert _stamps.value_stamp(payload, False, XXH3 | 5) == "vx" + "0" * 31 + "5"  # not hashed
    assert _stamps.value_stamp(payload, False, zlib.crc32(payload)) == expected
    assert _stamps.value_stamp(payload, True, 0) == _stamps.value_stamp(payload, True)
