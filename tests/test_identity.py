"""Canonical argument encoding and code fingerprints."""

from __future__ import annotations

import collections
import copy
import enum
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint import UnserializableArgumentError, task
from checkpoint.identity import code_fingerprint, encode_arguments, task_id

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5)
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
        st.dictionaries(st.integers(), children, max_size=3),
    ),
    max_leaves=10,
)


def _same_value(a: Any, b: Any) -> bool:
    """Structural equality that also tells types apart (1 vs 1.0 vs True, list vs tuple)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return repr(a) == repr(b)  # -0.0 and 0.0 are different arguments
    return bool(a == b)


@given(values, values)
def test_distinct_values_get_distinct_encodings(a: Any, b: Any) -> None:
    """Two arguments should share an encoding only if they are the same value."""
    same = encode_arguments("f", {"x": a}) == encode_arguments("f", {"x": b})
    assert same == _same_value(a, b)


@given(values)
def test_encoding_is_deterministic_json(a: Any) -> None:
    """The encoding should be valid JSON and not depend on dict insertion order."""
    text = encode_arguments("f", {"x": a})
    json.loads(text)
    if isinstance(a, dict):
        reordered = dict(reversed(list(a.items())))
        assert encode_arguments("f", {"x": reordered}) == text


class Split(str, enum.Enum):
    TRAIN = "train"
    TEST = "test"


class Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize(
    ("a", "b"),
    [((1, 2), [1, 2]), ({1: "x"}, {"1": "x"}), (1, 1.0), (1, True), ({"$tuple": [1]}, (1,)),
     (Split.TRAIN, "train"), (Level.LOW, 1), ([Split.TRAIN], ["train"]), ({Level.LOW: 1}, {1: 1}),
     (Split.TRAIN, Split.TEST)],
    ids=["tuple-vs-list", "int-key-vs-str-key", "int-vs-float", "int-vs-bool", "tag-lookalike",
         "str-enum-vs-str", "int-enum-vs-int", "enum-in-list", "enum-key", "two-members"],
)
def test_known_collisions_of_the_original_are_gone(a: Any, b: Any) -> None:
    """Values that plain JSON conflates should get different task ids."""
    ea, eb = encode_arguments("f", {"x": a}), encode_arguments("f", {"x": b})
    assert ea != eb
    assert task_id("f", ea) != task_id("f", eb)


Point = collections.namedtuple("Point", "x y")


class Name(str):
    pass


class Count(int):
    pass


@pytest.mark.parametrize(
    ("a", "b"),
    [(Point(1, 2), (1, 2)),
     (collections.OrderedDict([("b", 1), ("a", 2)]), collections.OrderedDict([("a", 2), ("b", 1)])),
     (collections.OrderedDict(a=1), {"a": 1}),
     (collections.defaultdict(int, a=1), {"a": 1}),
     (collections.defaultdict(int), collections.defaultdict(list)),
     (Name("a"), "a"), (Count(1), 1), ({Name("k"): 1}, {"k": 1}), ([Point(1, 2)], [(1, 2)])],
    ids=["namedtuple-vs-tuple", "ordereddict-order", "ordereddict-vs-dict",
         "defaultdict-vs-dict", "defaultdict-factories", "str-subclass", "int-subclass",
         "str-subclass-key", "nested-namedtuple"],
)
def test_subclasses_are_known_by_their_class(a: Any, b: Any) -> None:
    """A subclass of an argument type (a named tuple, an OrderedDict, whose order counts
    as in ==, a defaultdict) may behave otherwise in the task: another task id, as for
    enums (adv2 repro 01)."""
    assert encode_arguments("f", {"x": a}) != encode_arguments("f", {"x": b})
    assert encode_arguments("f", {"x": a}) == encode_arguments("f", {"x": copy.deepcopy(a)})


def test_a_defaultdict_with_an_anonymous_factory_is_refused() -> None:
    """What a lambda factory gives for a missing key cannot be named: refused, saying what
    to pass instead."""
    with pytest.raises(UnserializableArgumentError, match=r"default_factory.*dict\(value\)"):
        encode_arguments("f", {"x": collections.defaultdict(lambda: 0)})


def test_unserializable_argument_names_task_and_argument() -> None:
    """A set argument should raise a TypeError naming the family and the parameter."""

    @task
    def f(items: Any):  # type: ignore[no-untyped-def]
        return lambda: None

    with pytest.raises(UnserializableArgumentError) as info:
        f({1, 2})
    assert isinstance(info.value, TypeError)
    assert "'items'" in str(info.value) and "f" in str(info.value)
    assert info.value.argument == "items"


def test_task_handles_are_encoded_by_identity() -> None:
    """A task argument should be encoded by its id, so nested handles stay cheap."""

    @task
    def leaf(n: int):  # type: ignore[no-untyped-def]
        return lambda: n

    @task
    def wrap(t: Any):  # type: ignore[no-untyped-def]
        return lambda: None

    a, b = wrap(leaf(1)), wrap(leaf(2))
    assert a.id != b.id
    assert leaf(1).id in a.encoded
    assert wrap(leaf(1)).id == a.id


@given(st.one_of(st.integers(), st.text(max_size=4), st.booleans(), st.none(), st.floats(allow_nan=False)),
       st.one_of(st.integers(), st.text(alphabet="ab1_é", max_size=3)))
def test_a_call_is_encoded_as_its_bound_arguments_are(a: Any, b: Any) -> None:
    # Positional calls with ints and plain strings take a shortcut (a sweep makes 200,000):
    # it must give the canonical encoding (arguments in name order), or task ids change.

    @task
    def f(b: Any, a1: Any, a_: Any, a: Any, B: Any):  # type: ignore[no-untyped-def]
        return lambda: None

    args = (a, b, 3, "x", b)
    bound = dict(zip(["b", "a1", "a_", "a", "B"], args, strict=True))
    made = f(*args)
    assert made.encoded == encode_arguments(f.name, bound)
    assert made.id == task_id(f.name, made.encoded) == f(**bound).id


@given(st.lists(st.integers(), min_size=0, max_size=3))
def test_a_call_of_ints_is_encoded_as_its_bound_arguments_are(values: list[int]) -> None:
    # Only ints (a sweep's, a lattice's): one %-format of a template per family, in name
    # order (one argument alone, several reordered): the canonical encoding, or ids change.

    @task
    def zero():  # type: ignore[no-untyped-def]
        return lambda: None

    @task
    def one(n: int):  # type: ignore[no-untyped-def]
        return lambda: None

    @task
    def two(n: int, k: int):  # type: ignore[no-untyped-def]
        return lambda: None

    @task
    def three(z: int, a: int, m: int):  # type: ignore[no-untyped-def]
        return lambda: None

    family = [zero, one, two, three][len(values)]
    names = list(family.signature.parameters)
    made = family(*values)
    assert made.encoded == encode_arguments(family.name, dict(zip(names, values, strict=True)))
    assert made.id == family(**dict(zip(names, values, strict=True))).id


HELPER_SRC = '''
SCALE = {scale}

def helper(x):
    return x * SCALE

def unrelated(x):
    return x + 1

def f(n):
    # a comment {comment}
    """docstring {comment}"""
    def __():
        return helper(n)
    return __
'''


def _fp(make_module: Any, name: str, **fmt: Any) -> str:
    module = make_module(name, HELPER_SRC.format(**fmt))
    return code_fingerprint(module.f)[0]


def test_fingerprint_ignores_comments_and_docstrings(make_module: Any) -> None:
    """Comments, docstrings and formatting should not change the fingerprint."""
    assert _fp(make_module, "m1", scale=2, comment="a") == _fp(make_module, "m1", scale=2, comment="b")


def test_fingerprint_follows_helpers_and_constants(make_module: Any) -> None:
    """Changing a constant used through a helper should change the fingerprint."""
    assert _fp(make_module, "m2", scale=2, comment="") != _fp(make_module, "m2", scale=3, comment="")
    digest, text = code_fingerprint(make_module("m3", HELPER_SRC.format(scale=2, comment="")).f)
    assert "def helper" in text and "SCALE = 2" in text
    assert "unrelated" not in text


SET_SRC = """
import pathlib
from checkpoint import task

NAMES = frozenset({{"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}})
BY_KIND = {{"kinds": {{"x", "y", "z", "w"}}}}
SEEDS = range({n})
DATA = pathlib.Path("data")

@task
def f():
    def __():
        return sorted(NAMES), BY_KIND, list(SEEDS), DATA
    return __
"""


def test_fingerprint_of_set_constants_does_not_depend_on_the_hash_seed(tmp_path: Any) -> None:
    """Sets print in hash order, which changes with PYTHONHASHSEED: the fingerprint must not
    (it did, and a task using a frozenset of strings re-ran on every run)."""
    import os
    import subprocess
    import sys
    import textwrap

    (tmp_path / "setmod.py").write_text(textwrap.dedent(SET_SRC.format(n=5)))
    probe = "import setmod; print(setmod.f.fingerprint)"
    digests = {
        subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=True, text=True,
                       capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3", "4")
    }
    assert len(digests) == 1, digests


def test_fingerprint_includes_ranges_and_paths(make_module: Any) -> None:
    """`SEEDS = range(5)` and `DATA = Path("data")` are constants: editing them is a code change."""
    five = make_module("rng5", SET_SRC.format(n=5)).f
    _, text = five.fingerprint
    assert "SEEDS = range(0, 5)" in text and "DATA = PosixPath('data')" in text
    assert "NAMES = frozenset({'alpha', 'beta', 'delta', 'epsilon', 'gamma', 'zeta'})" in text
    assert "BY_KIND = {'kinds': {'w', 'x', 'y', 'z'}}" in text
    six = make_module("rng6", SET_SRC.format(n=6)).f
    assert five.fingerprint[0] != six.fingerprint[0]


def test_numpy_scalars_show_as_the_literal_a_user_types() -> None:
    """A sweep over np.logspace gives np.float64 arguments: ls and the display show
    `fit(0.001)`, which pasted back names the same task."""
    np = pytest.importorskip("numpy")
    from checkpoint import task

    @task
    def fit(lr: float, grid: list = []):  # type: ignore[no-untyped-def]  # noqa: B006
        def __() -> float:
            return lr

        return __

    swept = fit(np.float64(0.001), [np.float64(0.5)])
    assert repr(swept) == "fit(0.001, [0.5])"
    assert swept.id == fit(0.001, [0.5]).id
