"""What a task reads that the fingerprint and captured values missed, silently (the
adversarial tester's round 6, /tmp/adv6: sections 2, 7, 8 and 9): every value the code
reads counts, and nothing else; what cannot be fingerprinted warns once."""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import checkpoint
from checkpoint.fingerprint import FingerprintWarning, code_fingerprint


def _ran(result: checkpoint.RunResult) -> set[str]:
    return {repr(t) for t in result.ran}


def _rewrite(path: Path, source: str) -> None:
    """Rewrite a file as an editor does, with a new mtime even within one clock tick."""
    path.write_text(textwrap.dedent(source))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


# --- §2: a config loaded lazily into a module global, captured by the inner function -----

LAZY = """
import json
from checkpoint import task

_CFG = None
_ALL = {}


def config():
    global _CFG
    if _CFG is None:
        with open("config.json") as f:
            _CFG = json.load(f)
    return _CFG


def filled():
    if not _ALL:
        with open("config.json") as f:
            _ALL.update(json.load(f))
    return _ALL


@task
def assigned():
    params = config()
    def __():
        return params["lr"]
    return __


@task
def updated():
    params = filled()
    def __():
        return params["lr"]
    return __
"""


def test_a_lazily_loaded_module_global_captured_by_the_inner_function_counts(
        make_module: Any) -> None:
    """A helper assigns (or fills) the global: the fingerprint counts it as state, by its
    assignment; the value the outer function handed on still counts by its content."""
    Path("config.json").write_text(json.dumps({"lr": 0.1}))
    mod = make_module("lazy2", LAZY)
    assert [mod.assigned().run(executor="inline"), mod.updated().run(executor="inline")] == [0.1, 0.1]
    mod = make_module("lazy2", LAZY)  # a new process: loaded again, unchanged
    assert not checkpoint.run([mod.assigned(), mod.updated()], executor="inline").ran
    assert not checkpoint.run([mod.assigned(), mod.updated()], executor="inline").ran
    Path("config.json").write_text(json.dumps({"lr": 0.2}))
    mod = make_module("lazy2", LAZY)
    result = checkpoint.run([mod.assigned(), mod.updated()], executor="inline")
    assert _ran(result) == {"assigned()", "updated()"}
    assert result.values[mod.assigned().id] == result.values[mod.updated().id] == 0.2


# --- §7: a mutable class attribute rebound after the class statement ---------------------

SETTINGS = """
import json


class Config:
    PARAMS = {}
    MEMO = {}


with open("params.json") as f:
    Config.PARAMS = json.load(f)
Config.MEMO = {}


def remember(k):
    Config.MEMO[k] = k * 2
    return Config.MEMO[k]
"""

USES_SETTINGS = """
from checkpoint import task
from settings7 import Config, remember


@task
def main():
    def __():
        return Config.PARAMS["lr"] + remember(1)
    return __
"""


def test_a_mutable_class_attribute_bound_at_module_level_counts_by_value(
        make_module: Any) -> None:
    """``Config.PARAMS = json.load(...)`` after the class statement is the class attribute's
    ``DF = pd.read_csv(...)``: it counts by its value. One the code changes (a memo) is
    state: it counts by its source, and filling it re-runs nothing."""
    Path("params.json").write_text(json.dumps({"lr": 1}))
    make_module("settings7", SETTINGS)
    mod = make_module("tasks7", USES_SETTINGS)
    assert mod.main().run(executor="inline") == 3
    assert "Config.PARAMS = {'lr': 1}" in mod.main.fingerprint[1]
    assert not checkpoint.run([mod.main()], executor="inline").ran  # MEMO filled: state
    Path("params.json").write_text(json.dumps({"lr": 2}))
    make_module("settings7", SETTINGS)
    mod = make_module("tasks7", USES_SETTINGS)
    result = checkpoint.run([mod.main()], executor="inline")
    assert _ran(result) == {"main()"} and result.values[mod.main().id] == 4


# --- §8: a module-level seed statement ---------------------------------------------------

SEEDED = """
import logging
import random

from checkpoint import task

SEED = {seed}
random.seed(SEED)
random.seed({seed})
print({message!r})
logging.basicConfig(level={level})


@task
def draw():
    def __():
        return random.random()
    return __
"""


def test_a_module_level_seed_statement_counts(make_module: Any) -> None:
    """The global random state the workers inherit is what ``random.seed(...)`` at the top
    of the taskfile made it: editing the seed (or a value it reads) is a code change; a
    module-level ``print`` or logging setup is not."""
    def digest(**values: object) -> str:
        fields = {"seed": 0, "message": "hello", "level": "logging.INFO", **values}
        return str(code_fingerprint(make_module("seeded8", SEEDED.format(**fields)).draw.fn)[0])

    first = digest()
    assert digest(message="bye", level="logging.DEBUG") == first
    assert digest(seed=1) != first
    text = code_fingerprint(make_module("seeded8", SEEDED.format(
        seed=0, message="", level="logging.INFO")).draw.fn)[1]
    assert "random.seed(SEED)" in text and "SEED = 0" in text and "print" not in text


# --- §9: code run through eval() and exec() ----------------------------------------------

HELPERS = "def helper(x):\n    return x + {k}\n"

EVALS = """
import helpers9
from checkpoint import task

EXPR = "helpers9.helper(2)"
x = 10


@task
def literal():
    def __():
        x = 1
        exec("import helpers9 as h; y = h.helper(3)")
        return eval("helpers9.helper(1) + x")
    return __


@task
def by_global():
    def __():
        return eval(EXPR)
    return __


@task
def computed(name: str):
    def __():
        return eval(f"helpers9.{name}(1)")
    return __
"""


def test_code_run_through_eval_is_fingerprinted_or_warns(make_module: Any, tmp_path: Path) -> None:
    """A string written out, or a module-level one, is compiled and what it reads counts (a
    local it names is a local); a string computed when the code runs warns once, naming the
    task and ``version=``."""
    make_module("helpers9", HELPERS.format(k=1))
    mod = make_module("evals9", EVALS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = [code_fingerprint(mod.literal.fn)[0], code_fingerprint(mod.by_global.fn)[0]]
        assert "x = 10" not in code_fingerprint(mod.literal.fn)[1]
    with pytest.warns(FingerprintWarning,
                      match=r"evals9\.computed runs code through eval\(\).*@task\(version=\.\.\.\)"):
        mod.computed.fingerprint  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code_fingerprint(mod.computed.fn, family=mod.computed.name)  # once
    _rewrite(tmp_path / "helpers9.py", HELPERS.format(k=100))
    make_module("helpers9", HELPERS.format(k=100))
    mod = make_module("evals9", EVALS)
    after = [code_fingerprint(mod.literal.fn)[0], code_fingerprint(mod.by_global.fn)[0]]
    assert before[0] != after[0] and before[1] != after[1]
    assert mod.literal().run(executor="inline") == 102
