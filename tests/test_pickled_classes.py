"""A class of the project that a task meets only by unpickling (a model loaded from a
``File`` and used inside the task, its class in a module that no task code names): its
code is in no fingerprint, so the run says so (FingerprintWarning), even when the task
returns a plain number."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ENV, PYTHON

MODELS = "class Linear:\n    def __init__(self, w):\n        self.w = w\n\n    def predict(self, x):\n        return self.w * x\n"
TASKFILE = """
import pickle
from pathlib import Path
from checkpoint import task, requires, File
{extra}

@task
def score(x: float):
    @requires(File("model.pkl"))
    def __(p: Path) -> float:
        m = pickle.loads(p.read_bytes())
        {check}
        return m.predict(x)
    return __
"""


@pytest.mark.parametrize("executor", ["process", "inline", "thread"])
@pytest.mark.parametrize("named", [False, True], ids=["unnamed", "named"])
def test_a_project_class_met_while_unpickling_is_named_in_a_warning(
    tmp_path: Path, named: bool, executor: str
) -> None:
    """The task returns a float made by a model unpickled from a file: the class is named
    in a warning with the fix, unless the task's code names it."""
    (tmp_path / "mymodels.py").write_text(MODELS)
    subprocess.run([PYTHON, "-c", "import pickle, mymodels; "
                    "open('model.pkl', 'wb').write(pickle.dumps(mymodels.Linear(3)))"],
                   cwd=tmp_path, env=ENV, check=True)
    (tmp_path / "taskfile.py").write_text(TASKFILE.format(
        extra="from mymodels import Linear" if named else "",
        check="assert isinstance(m, Linear)" if named else "pass"))
    env = {**ENV, "CP_CACHE_DIR": str(tmp_path / ".cache")}
    out = subprocess.run([PYTHON, "-m", "checkpoint", "-q", "run", "--executor", executor,
                          "score(2.0)"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert (out.returncode, out.stdout.strip()) == (0, "6.0"), out.stderr
    warned = "FingerprintWarning: Task taskfile.score unpickled mymodels.Linear, a class of your project"
    assert (warned in out.stderr) is not named, out.stderr
    if not named:
        assert "from mymodels import Linear" in out.stderr
