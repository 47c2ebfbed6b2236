"""The README's Python examples run as written (the seed's API is the contract)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_examples_run_as_a_script(tmp_path: Path) -> None:
    """Every README Python block, run in order as one script, should give the documented values."""
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 10
    checks = """
assert ans == 20, ans
assert result == 7, result
assert score_task.run() == -5.0
assert summarize_scores({'a': score_task}).run() == -5.0
assert len(large_output_task().run()) == 10_000_000
p = write_model(16).run()
assert Path(p).read_bytes() == b'\\0' * 16, p
assert Path(p).parent.name == write_model(16).id
assert my_task().run() == 42
assert some_downstream().run(rate_limits={'gpu': 1}) == 6
print("README OK")
"""
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(blocks) + checks)
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "README OK" in proc.stdout
    assert "-5.0" in proc.stdout
    # The seed's layout: one directory per family under ./.cache/checkpoint (CP_CACHE_DIR here).
    families = {p.name for p in (tmp_path / ".cache" / "checkpoint").iterdir()}
    assert {"__main__.choose", "__main__.f3", "__main__.write_model"} <= families
    # choose.clear() removed the whole family directory.
    assert not (tmp_path / ".cache" / "checkpoint" / "__main__.choose" / "data").exists()
