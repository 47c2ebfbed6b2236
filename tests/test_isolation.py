"""Each attempt of a task starts from its own copy of what its inner function holds
(checkpoint._isolation): which values are copied, which are kept, and that the copy
behaves as the function it copies (adversarial round 6: 04, 07)."""

from __future__ import annotations

import argparse
import dataclasses
import threading
import types
from collections import OrderedDict, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import checkpoint
from checkpoint._isolation import attempt_function, attempt_values, enclosing_cells


def _cells(fn: Any) -> dict[str, Any]:
    return {name: cell.cell_contents for name, cell in zip(fn.__code__.co_freevars, fn.__closure__, strict=True)}


@dataclasses.dataclass
class Config:
    layers: list[str]
    weights: np.ndarray


@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    opts: dict[str, int]


def test_containers_are_copied_at_any_depth_and_other_objects_kept() -> None:
    """Lists, dicts, sets, their subclasses, dataclasses and namespaces are copied (through
    tuples too); a NumPy array, a lock and a task-like object are the same objects."""
    array = np.zeros(1000)
    lock = threading.Lock()
    cfg = {"a": [1, {"b": 2}], "t": (3, [4]), "o": OrderedDict(x=[5]), "d": defaultdict(list),
           "s": {1, 2}, "arr": array, "lock": lock, "dc": Config(["dense"], array),
           "ns": types.SimpleNamespace(k=[1]), "args": argparse.Namespace(k=[2]),
           "frozen": Frozen({"n": 1})}

    def outer() -> Any:
        def __() -> Any:
            return cfg
        return __

    fn = outer()
    got = attempt_function(fn)()
    assert got == cfg and got is not cfg
    for key in ("a", "o", "d", "s", "dc", "ns", "args", "frozen"):
        assert got[key] is not cfg[key], key
    assert got["a"][1] is not cfg["a"][1] and got["t"][1] is not cfg["t"][1]
    assert type(got["o"]) is OrderedDict and type(got["d"]) is defaultdict and got["d"].default_factory is list
    assert got["dc"].layers is not cfg["dc"].layers and got["frozen"].opts is not cfg["frozen"].opts
    assert got["arr"] is array and got["dc"].weights is array and got["lock"] is lock
    assert got["ns"].k is not cfg["ns"].k and got["args"].k is not cfg["args"].k


def test_scalars_only_is_the_function_itself() -> None:
    """The usual closure (a sweep's parameters) costs nothing: no copy is made."""
    def outer(i: int, name: str) -> Any:
        def __() -> Any:
            return i, name
        return __

    fn = outer(1, "x")
    assert attempt_function(fn) is fn


def test_cells_rebound_and_shared_helpers_are_one_copy() -> None:
    """A `nonlocal` counter starts again each attempt; the inner function and a helper it
    calls share the copy of a cell they share, and a recursive helper still recurses."""
    def outer() -> Any:
        count = 0
        seen: list[int] = []

        def bump() -> int:
            nonlocal count
            count += 1
            seen.append(count)
            return count

        def depth(n: int) -> int:
            return 0 if n == 0 else 1 + depth(n - 1)

        def __(x: int = 1, *, y: list[int] = [0]) -> Any:  # noqa: B006 - a mutable default on purpose
            bump()
            y.append(bump())
            return count, list(seen), y, depth(3), x
        return __

    fn = outer()
    first, second = attempt_function(fn)(), attempt_function(fn)()
    assert first == second == (2, [1, 2], [0, 2], 3, 1)
    assert _cells(fn)["count"] == 0 and _cells(fn)["seen"] == [] and fn.__kwdefaults__ == {"y": [0]}
    assert attempt_function(fn).__qualname__ == fn.__qualname__


def test_partials_methods_and_cycles() -> None:
    """A partial's arguments and a bound method's dataclass object are copied; a dict that
    holds itself is copied as one."""
    cyclic: dict[str, Any] = {"n": [1]}
    cyclic["self"] = cyclic

    def fit(cfg: dict[str, Any], extra: list[int]) -> Any:
        cfg["n"].append(2)
        extra.append(3)
        return cfg, extra

    part = partial(fit, cyclic, extra=[0])
    cfg, extra = attempt_function(part)()
    assert cfg["self"] is cfg and cfg is not cyclic and cyclic["n"] == [1] and part.keywords["extra"] == [0]

    @dataclasses.dataclass
    class Model:
        layers: list[str]

        def run(self) -> list[str]:
            self.layers.append("softmax")
            return self.layers

    model = Model(["dense"])
    assert attempt_function(model.run)() == ["dense", "softmax"] and model.layers == ["dense"]


def test_a_value_that_cannot_be_copied_is_used_as_it_is() -> None:
    """A subclass whose copy fails is the same object (as before), not an error."""
    class Odd(dict):  # type: ignore[type-arg]
        def __reduce_ex__(self, protocol: Any) -> Any:
            raise TypeError("no copies")

    odd = Odd(a=1)
    cfg = {"odd": odd, "l": [1]}

    def outer() -> Any:
        def __() -> Any:
            return cfg
        return __

    got = attempt_function(outer())()
    assert got["odd"] is odd and got["l"] is not cfg["l"]
    assert attempt_values({"odd": odd})["odd"] is odd


CLASS_TASK = '''
import os
from checkpoint import task

@task(retries=1)
class Stack:
    def __init__(self, layers: list) -> None:
        self.layers = layers

    def run(self) -> list:
        self.layers.append("softmax")
        if not os.path.exists("attempt1"):
            open("attempt1", "w").close()
            raise RuntimeError("transient")
        return self.layers
'''


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_a_class_task_retries_from_its_attributes_as_planned(
        make_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    monkeypatch.chdir(tmp_path)
    mod = make_module("stack_retry", CLASS_TASK)
    handle = mod.Stack(["dense"])
    assert handle.run(executor=executor) == ["dense", "softmax"]
    assert handle.args == (["dense"],)


ENCLOSED = '''
from checkpoint import task

def make(seen):
    @task
    def note(i: int):
        def __():
            seen.append(i)          # the enclosing function's list: as a global would be
            return i
        return __
    return note
'''


@pytest.mark.parametrize("executor", ["inline", "thread"])
def test_a_variable_from_beyond_the_outer_function_is_not_copied(
        make_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    """What the outer function did not make (a variable of a function enclosing the task's
    definition) is read as a global is: the same object, in process."""
    monkeypatch.chdir(tmp_path)
    seen: list[int] = []
    note = make_module("enclosed", ENCLOSED).make(seen)
    checkpoint.run([note(1), note(2)], executor=executor)
    assert sorted(seen) == [1, 2]


def test_enclosing_cells_are_those_of_the_outer_function() -> None:
    kept: list[int] = []

    def outer(n: int) -> Any:
        mine = [n]

        def __() -> Any:
            kept.append(n)
            mine.append(n)
            return kept, mine
        return __

    fn = outer(1)
    enclosing = enclosing_cells(outer, fn)
    assert [fn.__code__.co_freevars[i] for i in enclosing] == ["kept"]
    got_kept, got_mine = attempt_function(fn, enclosing)()
    assert got_kept is kept and kept == [1] and got_mine == [1, 1] and _cells(fn)["mine"] == [1]
