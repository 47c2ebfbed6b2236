"""Large values: read without a second copy in memory, a NumPy array memory-mapped (a task
that reads a slice does not bring the array into memory), and every damaged byte still
detected (docs/performance.md, Large values)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from checkpoint import _codec, _stamps
from checkpoint._codec import BlobRef, decode_payload, encode_result, stream_value
from checkpoint._worker import Done, WorkItem, run_one
from checkpoint.errors import CorruptEntryError

MB = 1 << 20
TASK_ID = "0" * 32


def _stored(value: object, directory: Path) -> BlobRef:
    encoded = stream_value(value, directory, TASK_ID)
    assert encoded.payload is None and encoded.blob
    return BlobRef(str(directory / encoded.blob), encoded.size, encoded.crc, False)


def _in_subprocess(code: str, tmp_path: Path) -> dict[str, float]:
    """Run ``code`` in a fresh interpreter; it prints ``name=value`` lines."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    return {k: float(v) for k, v in (line.split("=") for line in out.split())}


RSS = '''
import os, sys
sys.path.insert(0, {root!r})
from checkpoint._codec import BlobRef, stream_value

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / {MB}

def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
'''


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_a_large_bytes_value_is_read_without_a_second_copy(tmp_path: Path) -> None:
    ref = _stored(os.urandom(64 * MB), tmp_path)
    found = _in_subprocess(RSS.format(root=str(Path(__file__).parents[1]), MB=MB) + f'''
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (a forked process starts with its parent's)
before = peak_mb()
value = BlobRef({ref.path!r}, {ref.size}, {ref.crc}, False).load()
print(f"grew={{peak_mb() - before}}", f"size={{len(value)}}")
''', tmp_path)
    assert found["size"] == 64 * MB
    assert found["grew"] < 64 * 1.25  # the value once, not the file mapped and a copy of it


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_a_task_reading_a_slice_of_a_large_array_does_not_load_it(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    array = np.arange(8 * MB, dtype=np.float64)  # 64 MB
    ref = _stored(array, tmp_path)
    found = _in_subprocess(RSS.format(root=str(Path(__file__).parents[1]), MB=MB) + f'''
import numpy
numpy.zeros(1)  # numpy's own memory is not the array's
before = rss_mb()
value = BlobRef({ref.path!r}, {ref.size}, {ref.crc}, False).load()
head = float(value[:1000].sum())
grew = rss_mb() - before
value[0] = 7.0  # writable, as a loaded value always was
print(f"grew={{grew}}", f"head={{head}}", f"first={{value[0]}}", f"n={{value.size}}")
''', tmp_path)
    assert found["head"] == float(sum(range(1000))) and found["first"] == 7.0
    assert found["n"] == 8 * MB
    assert found["grew"] < 8  # MB: a few pages of a 64 MB array (was a full copy)
    assert np.array_equal(ref.load(), array)
    assert np.array_equal(decode_payload(ref.read(), False), array)  # held in memory too


@pytest.mark.parametrize("layout", ["pickle", "buffers"])
def test_every_damaged_byte_of_a_value_file_is_detected(tmp_path: Path, layout: str) -> None:
    np = pytest.importorskip("numpy")
    value = os.urandom(MB) if layout == "pickle" else np.arange(MB // 8 + 3, dtype=np.float64)
    ref = _stored(value, tmp_path)
    data = Path(ref.path).read_bytes()
    for where in (0, 3, 40, len(data) // 2, len(data) - 20, len(data) - 1):
        damaged = bytearray(data)
        damaged[where] ^= 0x10
        Path(ref.path).write_bytes(damaged)
        with pytest.raises(CorruptEntryError, match="corrupt"):
            ref.load()
    Path(ref.path).write_bytes(data[:-1])  # truncated
    with pytest.raises(CorruptEntryError):
        ref.load()
    Path(ref.path).write_bytes(data)
    loaded = ref.load()
    assert loaded == value if layout == "pickle" else np.array_equal(loaded, value)


def _no_reads_under(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make opening a file under ``directory`` for reading fail the test."""
    import builtins

    real = builtins.open

    def guarded(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        assert "r" not in mode or not str(file).startswith(str(directory)), f"{file} read back"
        return real(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", guarded)


@pytest.mark.parametrize("kind", ["bytes", "array", "object"])
def test_a_value_file_is_stamped_as_written_never_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # The worker's stamp of a value file is the digest of its bytes (what a payload held in
    # memory gets: early cutoff compares them), taken while writing: the file is not opened
    # again to hash it (a 256 MB value cost 0.4-0.5 s of CPU more when it was).
    np = pytest.importorskip("numpy")
    value: object = {"bytes": lambda: os.urandom(3 * MB + 5),
                     "array": lambda: np.arange(MB // 8 + 3, dtype=np.float64),
                     "object": lambda: [os.urandom(100) for _ in range(400)]}[kind]()
    item = WorkItem(id=TASK_ID, fn=lambda: value, template=[], compress_level=0,
                    blob_dir=str(tmp_path))
    _no_reads_under(tmp_path, monkeypatch)
    done = run_one(item, {}, in_process=True)
    monkeypatch.undo()
    assert isinstance(done, Done) and done.blob and done.payload is None
    data = (tmp_path / done.blob).read_bytes()
    assert (done.size, done.crc) == (len(data), _codec.checksum(data))
    assert done.stamp == _stamps.value_stamp(data, False)
    assert BlobRef(str(tmp_path / done.blob), done.size, done.crc, False).load() is not None


def test_equal_bytes_have_equal_stamps_streamed_or_not(tmp_path: Path) -> None:
    value = os.urandom(2 * MB)
    streamed = encode_result(value, 0, str(tmp_path), TASK_ID)
    written = encode_result([value], 0, str(tmp_path), TASK_ID)  # pickled in memory first
    inline = encode_result(value, 0, "", TASK_ID)  # the coordinator stores it
    assert inline.payload is not None and not inline.stamp
    assert streamed.stamp == _stamps.value_stamp(inline.payload, False)
    assert written.blob and written.stamp == _stamps.value_stamp(
        (tmp_path / written.blob).read_bytes(), False)
    compressed = encode_result([value], 6, str(tmp_path), TASK_ID)
    assert compressed.blob and compressed.stamp == _stamps.value_stamp(
        (tmp_path / compressed.blob).read_bytes(), True) != written.stamp


def _hashing_threads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the bytes each thread checksums (by thread name), from now on."""
    from checkpoint._format import Checksum

    seen: dict[str, int] = {}
    real = Checksum.update

    def update(self: Checksum, data: bytes | memoryview) -> None:
        name = threading.current_thread().name
        seen[name] = seen.get(name, 0) + memoryview(data).nbytes
        real(self, data)

    monkeypatch.setattr(Checksum, "update", update)
    return seen


@pytest.mark.parametrize("kind", ["bytes", "array"])
def test_a_large_value_is_checksummed_on_a_second_thread_as_it_is_written_and_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    # The copy (into the page cache, or into the value read) and the hash of each 1 MB piece
    # overlap: xxhash releases the GIL (docs/performance.md, Large values).
    np = pytest.importorskip("numpy")
    value: object = os.urandom(12 * MB) if kind == "bytes" else np.arange(
        12 * MB // 8, dtype=np.float64)
    seen = _hashing_threads(monkeypatch)
    ref = _stored(value, tmp_path)
    assert seen.get("checkpoint-checksum", 0) >= 8 * MB, seen
    assert ref.crc == _codec.checksum(Path(ref.path).read_bytes())
    if kind == "bytes":
        seen.clear()
        assert ref.load() == value
        assert seen.get("checkpoint-checksum", 0) >= 8 * MB, seen
    assert "checkpoint-checksum" not in [t.name for t in threading.enumerate()]  # (each ends with its value)


def test_every_damaged_byte_of_a_value_checksummed_on_a_second_thread_is_detected(
        tmp_path: Path) -> None:
    from checkpoint._valuefile import OVERLAP_FROM

    value = os.urandom(OVERLAP_FROM + 5 * MB + 3)
    ref = _stored(value, tmp_path)
    data = Path(ref.path).read_bytes()
    for where in (0, 40, OVERLAP_FROM - 1, OVERLAP_FROM, OVERLAP_FROM + 1, len(data) // 2,
                  len(data) - MB, len(data) - 1):
        damaged = bytearray(data)
        damaged[where] ^= 0x01
        Path(ref.path).write_bytes(damaged)
        with pytest.raises(CorruptEntryError, match="corrupt"):
            ref.load()
    Path(ref.path).write_bytes(data)
    assert ref.load() == value


def test_a_read_that_fails_midway_has_checksummed_what_it_read_before_it_returns() -> None:
    # The unpickler frees the buffer it reads into when a read fails: no piece of it may
    # still wait for the second thread then.
    import io

    from checkpoint._valuefile import _CheckingReader

    data = os.urandom(9 * MB)

    class Failing(io.BytesIO):
        def readinto(self, buffer: Any) -> int:
            if self.tell() >= 7 * MB:
                raise OSError("the disk went away")
            return super().readinto(buffer)

    reader = _CheckingReader(Failing(data), len(data), _codec.checksum(data))  # type: ignore[arg-type]
    with pytest.raises(OSError, match="went away"):
        reader.readinto(bytearray(len(data)))
    assert reader.hasher.value() == _codec.checksum(data[:7 * MB])
