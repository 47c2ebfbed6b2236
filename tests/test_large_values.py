"""Large values: read without a second copy in memory, a NumPy array memory-mapped (a task
that reads a slice does not bring the array into memory), and every damaged byte still
detected (docs/performance.md, Large values)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checkpoint._codec import BlobRef, decode_payload, stream_value
from checkpoint.errors import CorruptEntryError

MB = 1 << 20
TASK_ID = "0" * 32


def _stored(value: object, directory: Path) -> BlobRef:
    payload, name, crc, size = stream_value(value, directory, TASK_ID)
    assert payload is None and name
    return BlobRef(str(directory / name), size, crc, False)


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
