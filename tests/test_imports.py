"""`import checkpoint` stays light: no click, rich, networkx or dask."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_checkpoint_does_not_import_heavy_modules() -> None:
    """Importing the library should not import the CLI, display, graph or Dask libraries."""
    code = (
        "import sys, json, checkpoint; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not loaded & {"click", "rich", "networkx", "dask", "distributed", "diskcache",
                         "fsspec", "s3fs", "botocore"}
    code = "import sys, checkpoint; print(sorted(m for m in sys.modules if m.startswith('checkpoint.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "checkpoint.report" not in out.stdout and "checkpoint.runs" not in out.stdout


def test_public_api_is_pinned() -> None:
    """The public names should be exactly the documented ones."""
    import checkpoint

    assert set(checkpoint.__all__) == {
        "CheckpointError", "CorruptEntryError", "CycleError", "File",
        "InvalidRequirementError", "MissingInputError", "MissingOutputError", "Product", "Requires", "RunResult", "StoreError", "Task", "TaskArgumentError",
        "TaskDefinitionError", "TaskDirectory", "TaskFailedError", "TaskFamily", "TaskTimeoutError",
        "UnserializableArgumentError", "UnserializableResultError",
        "UsageError", "WorkerDiedError", "requires", "run", "task",
    }
    for name in checkpoint.__all__:
        assert getattr(checkpoint, name) is not None
