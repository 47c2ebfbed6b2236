"""The engine's semantics: building, reuse, clearing, code changes, failures, limits."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import CHOOSE

import checkpoint
from checkpoint import (
    CycleError,
    InvalidRequirementError,
    TaskArgumentError,
    TaskDefinitionError,
    TaskDirectory,
    UnserializableResultError,
    requires,
    task,
)
from checkpoint.store import Store


@pytest.fixture
def choose(make_module: Any) -> Any:
    return make_module("choosemod", CHOOSE).choose


def _ran(result: checkpoint.RunResult) -> set[str]:
    return {repr(t) for t in result.ran}


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_choose_builds_with_each_executor(choose: Any, executor: str) -> None:
    """choose(6, 3) should be 20 with every built-in executor, and the rerun reuses all."""
    result = checkpoint.run([choose(6, 3)], executor=executor, max_workers=2)
    assert result.values[choose(6, 3).id] == 20
    assert len(result.ran) == 15 and not result.reused
    again = checkpoint.run([choose(6, 3)], executor=executor)
    assert not again.ran and len(again.reused) == 15
    assert again.values[choose(6, 3).id] == 20


def test_user_executors_work(choose: Any) -> None:
    """Any concurrent.futures.Executor should be accepted and left open for its owner."""
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert choose(5, 2).run(executor=pool) == 10
        assert pool.submit(abs, -1).result() == 1
    with ThreadPoolExecutor() as tpool:
        choose.clear()
        assert choose(5, 2).run(executor=tpool) == 10


def test_clear_reruns_exactly_the_task_and_keeps_dependents_of_an_equal_value(choose: Any) -> None:
    """Clearing choose(3, 3) should re-run it alone: its value comes out the same, so the
    tasks downstream of it are kept (early cutoff; a new value re-runs them: test_early_cutoff)."""
    choose(6, 3).run(executor="inline")
    choose(3, 3).clear()
    result = checkpoint.run([choose(6, 3)], executor="inline")
    assert _ran(result) == {"choose(3, 3)"}
    assert {repr(t) for t in result.kept} == {"choose(4, 3)", "choose(5, 3)", "choose(6, 3)"}
    assert result.values[choose(6, 3).id] == 20


def test_family_clear_removes_the_family_directory(choose: Any, cache_dir: Path) -> None:
    """family.clear() should remove {cache}/checkpoint/{module}.{name} entirely."""
    choose(4, 2).run(executor="inline")
    directory = cache_dir / "checkpoint" / "choosemod.choose"
    assert directory.is_dir()
    choose.clear()
    assert not directory.exists()
    assert len(checkpoint.run([choose(4, 2)], executor="inline").ran) == 8


def test_cache_deleted_behind_a_live_process_is_seen(choose: Any, cache_dir: Path) -> None:
    """Deleting the cache (or one family) outside a long-lived process should make it re-run."""
    import shutil

    choose(3, 1).run(executor="inline")
    shutil.rmtree(cache_dir / "checkpoint" / "choosemod.choose")
    assert len(checkpoint.run([choose(3, 1)], executor="inline").ran) == 5
    shutil.rmtree(cache_dir)
    assert len(checkpoint.run([choose(3, 1)], executor="inline").ran) == 5
    assert not checkpoint.run([choose(3, 1)], executor="inline").ran


def test_index_is_opened_while_the_first_tasks_run(make_module: Any, cache_dir: Path) -> None:
    """The index of a family that will store results should be opened while its first batch
    runs, not when the result arrives (that, and fingerprinting, held up thread workers)."""
    mod = make_module("prepmod", """
        import os, time
        from checkpoint import task

        @task
        def sees_its_index(index: str):
            def __() -> bool:
                deadline = time.monotonic() + 3
                while not os.path.exists(index) and time.monotonic() < deadline:
                    time.sleep(0.005)
                return os.path.exists(index)
            return __
    """)
    index = cache_dir / "checkpoint" / "prepmod.sees_its_index" / "cache.db"
    assert mod.sees_its_index(str(index)).run(executor="thread") is True


def test_expansion_shares_one_object_per_task(choose: Any) -> None:
    """Tasks named by several dependents should be one object in the expanded graph."""
    from checkpoint.graph import expand

    nodes = expand([choose(4, 2)])
    (left,) = [n.task for n in nodes.values() if repr(n.task) == "choose(3, 1)"]
    (right,) = [n.task for n in nodes.values() if repr(n.task) == "choose(3, 2)"]
    shared = [d for d in left.spec().dependencies if repr(d) == "choose(2, 1)"]
    assert shared and shared[0] is [d for d in right.spec().dependencies if repr(d) == "choose(2, 1)"][0]
    assert choose(2, 1) is not choose(2, 1)  # outside an expansion, calls make new handles


def test_upstream_recomputed_elsewhere_makes_dependents_stale(choose: Any) -> None:
    """A prerequisite recomputed by another run (to another value: a new stamp) should make
    its dependents re-run."""
    from checkpoint.store import Store, new_stamp

    choose(4, 2).run(executor="inline")
    store = Store.open()
    family, tid = choose(2, 1).family.dirname, choose(2, 1).id
    meta = store.get_meta(family, tid)
    meta.stamp = new_stamp()
    store.put_metas(family, {tid: meta})
    result = checkpoint.run([choose(4, 2)], executor="inline")
    # They give the values they gave before: choose(4, 2) is kept.
    assert _ran(result) == {"choose(3, 1)", "choose(3, 2)"}
    assert [repr(t) for t in result.kept] == ["choose(4, 2)"]
    reasons = {repr(n.task): n.reason for n in result.plan.nodes.values() if n.reason}
    assert reasons["choose(3, 1)"] == "upstream changed"


def test_dropped_prerequisite_makes_the_dependent_stale(make_module: Any) -> None:
    """A task whose prerequisites shrink (a change its pinned fingerprint cannot see) should re-run."""
    source = '''
        import array
        from checkpoint import task, requires

        SEEDS = array.array("i", range({n}))

        @task
        def square(x: int):
            def __() -> int:
                return x * x
            return __

        @task(version="1")  # pinned: the change of SEEDS does not count as a code change
        def total():
            @requires([square(x) for x in SEEDS])
            def __(values: list[int]) -> int:
                return sum(values)
            return __
    '''
    assert make_module("shrinking", source.format(n=4)).total().run(executor="inline") == 14
    mod = make_module("shrinking", source.format(n=3))
    result = checkpoint.run([mod.total()], executor="inline")
    assert result.values[mod.total().id] == 5
    assert _ran(result) == {"total()"}
    assert result.plan.nodes[mod.total().id].reason == "upstream changed"


REARRANGED = '''
import json
from pathlib import Path
from checkpoint import File, task, requires

@task
def score(lr: float):
    def __() -> float:
        return lr * 100
    return __

def config():  # read while expanding: the code fingerprint cannot see it
    return json.loads(Path("config.json").read_text())

@task
def by_label():
    @requires({label: score(lr) for label, lr in config().items()})
    def __(scores: dict[str, float]) -> dict[str, float]:
        return scores
    return __

@task
def in_order():
    @requires([score(lr) for _, lr in sorted(config().items())])
    def __(scores: list[float]) -> list[float]:
        return scores
    return __

@task
def stacked():
    a, b = (score(lr) for _, lr in sorted(config().items()))
    @requires(a)
    @requires(b)
    def __(first: float, second: float) -> list[float]:
        return [first, second]
    return __

@task
def files():
    @requires([File(f"{label}.txt") for label in config()])
    def __(paths: list[Path]) -> list[str]:
        return [p.read_text() for p in paths]
    return __
'''


@pytest.mark.parametrize(("family", "before", "after"), [
    ("by_label", {"base": 10.0, "tuned": 20.0}, {"base": 20.0, "tuned": 10.0}),
    ("in_order", [10.0, 20.0], [20.0, 10.0]),
    ("stacked", [10.0, 20.0], [20.0, 10.0]),
    ("files", ["base", "tuned"], ["tuned", "base"]),
])
def test_rearranged_prerequisites_make_the_dependent_stale(
        make_module: Any, tmp_path: Path, family: str, before: Any, after: Any) -> None:
    """The same prerequisites in other places (swapped dict values, a reordered list, two
    @requires swapped, files reordered) give the inner function other arguments: the entry
    records their arrangement, and the task re-runs instead of returning the old one."""
    for label in ("base", "tuned"):
        (tmp_path / f"{label}.txt").write_text(label)
    (tmp_path / "config.json").write_text('{"base": 0.1, "tuned": 0.2}')
    family_ = getattr(make_module("rearranged", REARRANGED), family)
    assert family_().run(executor="inline") == before
    (tmp_path / "config.json").write_text('{"tuned": 0.1, "base": 0.2}')
    target = family_()  # a new handle expands again
    result = checkpoint.run([target], executor="inline")
    assert result.values[target.id] == after
    assert _ran(result) == {f"{family}()"}
    assert result.plan.nodes[target.id].reason == "upstream changed"
    assert not checkpoint.run([target], executor="inline").ran


PIPE = '''
from checkpoint import task, requires

OFFSET = {offset}

def helper(x):
    return x + OFFSET

@task
def source(n: int):
    def __() -> int:
        return n
    return __

@task
def double(n: int):
    @requires(source(n))
    def __(x: int) -> int:
        return {double_body}
    return __

@task
def total():
    @requires([double(i) for i in range(3)])
    def __(xs: list[int]) -> int:
        return sum(xs)
    return __
'''


def test_code_change_invalidates_one_family_and_dependents(make_module: Any) -> None:
    """Editing double's body should re-run double and total, not source."""
    mod = make_module("pipe", PIPE.format(offset=0, double_body="2 * x"))
    assert mod.total().run(executor="inline") == 6
    mod = make_module("pipe", PIPE.format(offset=0, double_body="2 * x  # comment only"))
    assert not checkpoint.run([mod.total()], executor="inline").ran
    mod = make_module("pipe", PIPE.format(offset=0, double_body="3 * x"))
    result = checkpoint.run([mod.total()], executor="inline")
    assert result.values[mod.total().id] == 9
    assert _ran(result) == {"double(0)", "double(1)", "double(2)", "total()"}
    reasons = {repr(n.task): n.reason for n in result.plan.nodes.values()}
    assert reasons["double(0)"] == "code changed" and reasons["total()"] == "upstream re-run"


def test_helper_change_reruns_only_its_users(make_module: Any) -> None:
    """Editing a constant used through a helper should re-run the tasks using the helper."""
    mod = make_module("pipe2", PIPE.format(offset=0, double_body="helper(2 * x)"))
    assert mod.total().run(executor="inline") == 6
    mod = make_module("pipe2", PIPE.format(offset=1, double_body="helper(2 * x)"))
    result = checkpoint.run([mod.total()], executor="inline")
    assert result.values[mod.total().id] == 9
    assert "source(0)" not in _ran(result) and "double(0)" in _ran(result)
    # The opt-out reuses results despite the change.
    mod = make_module("pipe2", PIPE.format(offset=5, double_body="helper(2 * x)"))
    assert not checkpoint.run([mod.total()], executor="inline", code_check=False).ran


def test_version_pins_the_fingerprint(make_module: Any) -> None:
    """With @task(version=...), code edits are ignored until the version changes."""
    src = '''
from checkpoint import task
@task(version="{v}")
def f():
    def __():
        return {value}
    return __
'''
    mod = make_module("ver", src.format(v="1", value=1))
    assert mod.f().run(executor="inline") == 1
    mod = make_module("ver", src.format(v="1", value=2))
    assert mod.f().run(executor="inline") == 1
    mod = make_module("ver", src.format(v="2", value=2))
    assert mod.f().run(executor="inline") == 2


def test_fingerprint_source_is_kept_in_the_store(choose: Any) -> None:
    """The normalized source behind a stored fingerprint should be retrievable."""
    choose(2, 1).run(executor="inline")
    store = Store.open()
    meta = store.get_meta(choose.dirname, choose(2, 1).id)
    assert meta is not None and meta.expr == "choose(2, 1)"
    source = store.get_source(choose.dirname, meta.fingerprint)
    assert source is not None and "def choose(n: int, k: int)" in source


def test_warm_run_loads_only_the_target_value(choose: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A warm rerun should run nothing and load no stored value except the target's."""
    choose(8, 4).run(executor="inline")
    loads: list[str] = []
    original = Store.load_payload

    def spy(self: Store, family: str, tid: str, meta: Any = None) -> bytes:
        loads.append(tid)
        return original(self, family, tid, meta)

    monkeypatch.setattr(Store, "load_payload", spy)
    assert choose(8, 4).run() == 70
    assert loads == [choose(8, 4).id]


def test_deep_chain_builds_without_recursion_error() -> None:
    """A 20,000-deep chain should expand and run in-process without RecursionError."""

    @task
    def chain(i: int):  # type: ignore[no-untyped-def]
        if i == 0:
            return lambda: 0

        @requires(chain(i - 1))
        def __(prev: int) -> int:
            return prev + 1

        return __

    assert chain(20_000).run(executor="inline") == 20_000


def test_cycle_is_reported_with_task_names() -> None:
    """A cycle should raise CycleError naming the tasks in it."""

    @task
    def ping(n: int):  # type: ignore[no-untyped-def]
        @requires(pong(n))
        def __(x: int) -> int:
            return x
        return __

    @task
    def pong(n: int):  # type: ignore[no-untyped-def]
        @requires(ping(n))
        def __(x: int) -> int:
            return x
        return __

    with pytest.raises(CycleError) as info:
        ping(1).run(executor="inline")
    assert "ping(1) -> pong(1) -> ping(1)" in str(info.value)


def test_requires_maps_top_down_with_lists_dicts_and_directories(tmp_path: Path) -> None:
    """Stacked @requires should map top-down; lists/dicts arrive as results; dirs as Paths."""

    @task
    def num(i: int):  # type: ignore[no-untyped-def]
        return lambda: i

    @task
    def combine():  # type: ignore[no-untyped-def]
        @requires(num(1))
        @requires([num(2), num(3)])
        @requires({"a": num(4), "b": [num(5)]})
        @requires(TaskDirectory())
        def __(one: int, many: list[int], named: dict[str, Any], path: Path) -> tuple[Any, ...]:
            assert path.is_dir() and not any(path.iterdir())
            (path / "out.txt").write_text("hello")
            return one, many, named, str(path)

        return __

    one, many, named, path = combine().run(executor="process", max_workers=2)
    assert (one, many, named) == (1, [2, 3], {"a": 4, "b": [5]})
    assert Path(path).name == combine().id and Path(path).parts[-2] == "data"
    assert (Path(path) / "out.txt").read_text() == "hello"
    combine().clear()
    assert not Path(path).exists()


def test_invalid_requirements_and_arguments_are_clear() -> None:
    """Bad @requires targets, wrong arguments and a missing inner function raise clear errors."""

    @task
    def f(n: int):  # type: ignore[no-untyped-def]
        return lambda: n

    with pytest.raises(InvalidRequirementError, match="Did you mean to call it"):
        requires(f)
    with pytest.raises(InvalidRequirementError, match="list instead of a tuple"):
        requires((f(1), f(2)))
    with pytest.raises(TaskArgumentError, match=r"Its signature is f\(n: int\)"):
        f(1, 2)

    @task
    def no_inner():  # type: ignore[no-untyped-def]
        return 3

    with pytest.raises(TaskDefinitionError, match="must return its inner function"):
        no_inner().run(executor="inline")


class Boom(Exception):
    pass


FAILING = '''
from checkpoint import task, requires

class Boom(Exception):
    pass

@task
def ok(i: int):
    def __() -> int:
        return i
    return __

@task
def bad():
    @requires(ok(0))
    def __(x: int) -> int:
        raise Boom("boom in bad")
    return __

@task
def after_bad():
    @requires(bad())
    def __(x: int) -> int:
        return x
    return __

@task
def top():
    @requires([after_bad(), ok(1), ok(2)])
    def __(xs):
        return xs
    return __
'''


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_failure_reraises_the_original_exception(make_module: Any, executor: str) -> None:
    """run() should re-raise the task's own exception, keep finished results, and point at user code."""
    mod = make_module("failing", FAILING)
    with pytest.raises(mod.Boom, match="boom in bad") as info:
        mod.top().run(executor=executor, max_workers=2)
    text = "".join(__import__("traceback").format_exception(info.value))
    assert "failing.py" in text and 'raise Boom("boom in bad")' in text
    assert Store.open().get_meta(mod.ok.dirname, mod.ok(0).id) is not None


def test_keep_going_runs_independent_branches(make_module: Any) -> None:
    """With keep_going, independent tasks should finish and dependents of the failure be skipped."""
    mod = make_module("failing2", FAILING)
    result = checkpoint.run([mod.top()], executor="inline", keep_going=True, raise_on_failure=False)
    assert {repr(t) for t in result.failed and [result.plan.nodes[i].task for i in result.failed]} == {"bad()"}
    assert {repr(t) for t in result.skipped} == {"after_bad()", "top()"}
    assert {"ok(1)", "ok(2)"} <= _ran(result)


def test_unpicklable_result_names_the_task() -> None:
    """A result cloudpickle cannot serialize should fail with the task's name."""

    @task
    def lock():  # type: ignore[no-untyped-def]
        import threading

        return lambda: threading.Lock()

    with pytest.raises(UnserializableResultError, match=r"result of task lock\(\)"):
        lock().run(executor="inline")


def test_rate_limits_are_never_exceeded() -> None:
    """At most rate_limits[q] tasks of a queue should run at once (measured with timestamps)."""

    @task(queue="gpu")
    def sleepy(i: int):  # type: ignore[no-untyped-def]
        def __() -> tuple[float, float]:
            start = time.time()
            time.sleep(0.15)
            return start, time.time()

        return __

    @task
    def gather():  # type: ignore[no-untyped-def]
        @requires([sleepy(i) for i in range(6)])
        def __(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
            return spans

        return __

    spans = gather().run(executor="thread", max_workers=6, rate_limits={"gpu": 2})
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert 1 <= peak <= 2  # the promise is "at most 2"; how many overlap depends on the load


def test_run_reports_statistics(choose: Any) -> None:
    """RunResult should list ran/reused tasks and durations."""
    first = checkpoint.run([choose(4, 2)], executor="inline")
    assert len(first.ran) == 8 and set(first.durations) == {t.id for t in first.ran}
    second = checkpoint.run([choose(4, 2), choose(5, 2)], executor="inline")
    assert {repr(t) for t in second.ran} == {"choose(5, 2)", "choose(4, 1)", "choose(3, 0)"}
    assert second.values[choose(5, 2).id] == 10 and second.values[choose(4, 2).id] == 6


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_large_values_live_in_blob_files(executor: str, cache_dir: Path) -> None:
    """A large result should be written as one blob file, read by dependents, and replaced on re-run."""

    @task
    def big(n: int):  # type: ignore[no-untyped-def]
        return lambda: bytes(range(256)) * n

    @task
    def size_of():  # type: ignore[no-untyped-def]
        @requires(big(1000))
        def __(data: bytes) -> int:
            return len(data)

        return __

    assert size_of().run(executor=executor, max_workers=2) == 256_000
    blobs = cache_dir / "checkpoint" / big.dirname / "blobs"
    first = sorted(blobs.iterdir())
    assert len(first) == 1 and first[0].name.startswith(big(1000).id)
    assert big(1000).run(executor=executor) == bytes(range(256)) * 1000
    checkpoint.run([big(1000)], executor=executor, force=True)
    second = sorted(blobs.iterdir())
    assert len(second) == 1 and second != first  # the old file went with the old entry
    big(1000).clear()
    assert not any(blobs.iterdir())


class _Frame:
    """A buffer-like result (``nbytes``, as NumPy arrays have) that fails to pickle only
    after its large part has been written."""

    nbytes = 1 << 20

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import threading

        return (_Frame, (b"x" * self.nbytes, threading.Lock()))


@pytest.mark.parametrize("executor", ["inline", "thread", "process"])
def test_large_buffers_stream_into_their_file(
    executor: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large buffer result should go straight into its blob file (its payload never built
    in memory), byte for byte what pickling it whole gives; one that fails to pickle halfway
    should leave no partial file and fail as UnserializableResultError."""
    import checkpoint._codec as codec
    from checkpoint.store import INLINE_MAX, encode_value

    def small_only(value: Any, level: int) -> bytes:
        payload = encode_value(value, level)
        assert len(payload) <= INLINE_MAX, "a large buffer's payload was built in memory"
        return payload

    monkeypatch.setattr(codec, "encode_value", small_only)  # seen by in-process workers
    value = bytes(range(256)) * 4096  # 1 MB

    @task
    def blob():  # type: ignore[no-untyped-def]
        return lambda: value

    @task
    def frame():  # type: ignore[no-untyped-def]
        return lambda: _Frame()

    assert blob().run(executor=executor) == value
    files = list((cache_dir / "checkpoint" / blob.dirname / "blobs").iterdir())
    assert len(files) == 1 and files[0].read_bytes() == encode_value(value, 0)
    meta = Store.open().get_meta(blob.dirname, blob().id)
    assert meta is not None and meta.size == files[0].stat().st_size
    with pytest.raises(UnserializableResultError, match=r"result of task frame\(\)"):
        frame().run(executor=executor)
    blobs = cache_dir / "checkpoint" / frame.dirname / "blobs"
    assert not blobs.exists() or not any(blobs.iterdir())


def test_truncated_blob_is_corrupt_when_loaded(tmp_path: Path) -> None:
    """BlobRef.load should reject a file of the wrong size or checksum (and an empty one)."""
    import zlib

    from checkpoint.errors import CorruptEntryError
    from checkpoint.store import BlobRef, encode_value

    payload = encode_value(list(range(10_000)), 0)
    path = tmp_path / "v.bin"
    path.write_bytes(payload)
    good = BlobRef(str(path), len(payload), zlib.crc32(payload), False)
    assert good.load() == list(range(10_000))
    path.write_bytes(payload[:-1] + b"\x00")
    with pytest.raises(CorruptEntryError, match="corrupt"):
        good.load()
    path.write_bytes(b"")
    with pytest.raises(CorruptEntryError, match="corrupt"):
        good.load()
    path.unlink()
    with pytest.raises(CorruptEntryError, match="cannot be read"):
        good.load()


def test_inner_function_arity_is_checked_when_the_graph_is_built(make_module: Any) -> None:
    """A missing parameter fails before any prerequisite runs, naming the task."""
    mod = make_module("arity", """
        from checkpoint import requires, task

        CALLS = []

        @task
        def a():
            def __():
                CALLS.append("a")
                return 1
            return __

        @task
        def b():
            @requires(a())
            @requires(a())
            def __(x):
                return x
            return __
    """)
    from checkpoint.errors import TaskDefinitionError

    with pytest.raises(TaskDefinitionError, match=r"takes 1 argument, one per prerequisite, but 2"):
        checkpoint.run([mod.b()], executor="inline")
    assert mod.CALLS == []


def test_arity_is_checked_for_each_task_of_an_inner_function_already_seen(
        make_module: Any) -> None:
    """One inner function (one code object) given one, then two prerequisites: the second
    task should still be refused when the graph is built (its bounds are known by then)."""
    mod = make_module("arity_seen", """
        from checkpoint import requires, task

        @task
        def a():
            def __():
                return 1
            return __

        @task
        def b(n: int):
            def __(x):
                return x
            inner = __
            for _ in range(n):
                inner = requires(a())(inner)
            return inner
    """)
    from checkpoint.errors import TaskDefinitionError

    assert mod.b(1).run(executor="inline") == 1
    with pytest.raises(TaskDefinitionError, match=r"takes 1 argument, one per prerequisite, but 2"):
        checkpoint.run([mod.b(2)], executor="inline")
    with pytest.raises(TaskDefinitionError, match=r"takes 1 argument, one per prerequisite, but 0"):
        checkpoint.run([mod.b(0)], executor="inline")


def test_one_decorated_inner_function_serves_many_tasks(make_module: Any) -> None:
    """An outer function may return one module-level ``@requires`` function for every
    task of its family (what ``@requires`` returns is the tasks' shared spec)."""
    mod = make_module("shared_inner", """
        from checkpoint import requires, task

        @task
        def a():
            def __():
                return 1
            return __

        @requires(a())
        @requires([a(), a()])
        def shared(x, xs):
            return x + sum(xs)

        @task
        def b(n: int):
            return shared

        @task
        def c():
            @requires([b(1), b(2)])
            def __(values):
                return values
            return __
    """)
    result = checkpoint.run([mod.c()], executor="inline")
    assert result.values[mod.c().id] == [3, 3]
    assert {"b(1)", "b(2)"} <= _ran(result)
    assert mod.shared(1, [2]) == 3  # still the function, when called
    assert not checkpoint.run([mod.c()], executor="inline").ran


@pytest.mark.parametrize("requirements", [
    [], [[]], [{}], [[], []], ["T"], ["T", "T"], ["T", "U"], [["T"]], [["T", "U"]], [{"k": "T"}],
    ["F"], ["P"], [["F"]], ["F", "F"], ["F", "T"], [TaskDirectory()], [TaskDirectory(), "T"],
])
def test_the_arrangement_shortcut_agrees_with_the_arrangement(
        choose: Any, requirements: list[Any]) -> None:
    """What a node records as its arrangement (graph._shape, with shortcuts for the common
    cases, a lattice's digested only when asked) should be what graph.arrangement gives,
    for every form of requirements."""
    from checkpoint import File, Product
    from checkpoint.graph import Node, _shape, arrangement

    leaves = {"T": choose(2, 1), "U": choose(3, 1), "F": File("x.txt"), "P": Product("y.txt")}

    def build(item: Any) -> Any:
        if isinstance(item, list):
            return [build(x) for x in item]
        if isinstance(item, dict):
            return {k: build(v) for k, v in item.items()}
        return leaves.get(item, item) if isinstance(item, str) else item

    reqs = build(requirements)
    assert Node(choose(4, 2), [], _shape(reqs)).shape == arrangement(reqs)


@pytest.mark.parametrize("picks", [[0, 1, 2], [2, 0, 1], [0, 1, 0, 2, 1]])
def test_a_list_of_tasks_gives_its_distinct_tasks_in_declared_order(
        choose: Any, picks: list[int]) -> None:
    """A flat list of tasks (a sweep's fan-in, taken at once when its tasks are distinct)
    gives the distinct tasks in the order of their first mention, as any requirement does."""
    from checkpoint.task import Spec

    leaves = [choose(5, 1), choose(5, 2), choose(5, 3)]
    handles = [choose(5, 1 + i) for i in picks]  # (other handle objects, the same tasks)
    deps = Spec(lambda values: values, [handles]).dependencies
    first = [handles[picks.index(i)] for i in dict.fromkeys(picks)]  # each one's first mention
    assert [t.id for t in deps] == [leaves[i].id for i in dict.fromkeys(picks)]
    assert all(dep is handle for dep, handle in zip(deps, first, strict=True))


FAILS_IN_WORKER = """
from checkpoint import task

@task
def fails(i):
    def __():
        if i == 1:
            raise ValueError(f"bad {i}")
        try:
            {}["key"]
        except KeyError as exc:
            raise ValueError("chained") from exc
    return __
"""


@pytest.mark.skipif(not hasattr(BaseException, "add_note"), reason="exception notes: Python 3.11+")
def test_an_error_from_a_worker_process_carries_the_tasks_frames_once(make_module: Any) -> None:
    """An exception raised in a worker process comes back without frames: the task's frames
    are in its note, under the one statement of the error (a RemoteTraceback cause stated it
    twice); a chained exception keeps the worker's whole traceback as its cause. (Once
    distributed is imported, tblib pickles tracebacks: the frames come back as frames.)"""
    import traceback

    mod = make_module("failing_mod", FAILS_IN_WORKER)
    with pytest.raises(ValueError, match="bad 1") as raised:
        checkpoint.run([mod.fails(1)], executor="process", max_workers=1)
    text = "".join(traceback.format_exception(raised.value))
    assert text.count("ValueError: bad 1") == 1 and "RemoteTraceback" not in text, text
    assert text.count('failing_mod.py", line 8, in __\n    raise ValueError(f"bad {i}")') == 1, text
    [note] = raised.value.__notes__
    assert note.startswith("while running task fails(1) (failing_mod.fails)")
    if raised.value.__traceback__ is None or raised.value.__traceback__.tb_next is None:
        assert note.startswith("while running task fails(1) (failing_mod.fails), in a worker process:\n")
    with pytest.raises(ValueError, match="chained") as chained:
        checkpoint.run([mod.fails(2)], executor="process", max_workers=1)
    text = "".join(traceback.format_exception(chained.value))
    assert "KeyError" in text and 'raise ValueError("chained") from exc' in text, text
    assert chained.value.__notes__ == ["while running task fails(2) (failing_mod.fails)"]


def test_one_requires_decorator_on_two_functions_makes_two_specs() -> None:
    """``@requires(x)`` kept and applied to two functions (or to a stack) should give each
    its own spec: the first one applied takes the spec the call made, the others new ones."""
    from checkpoint.task import Spec

    deco = checkpoint.requires(checkpoint.File("a.csv"))

    def first(path: Path) -> int:
        return 1

    def second(path: Path) -> int:
        return 2

    one, two = deco(first), deco(second)
    assert isinstance(one, Spec) and isinstance(two, Spec) and one is not two
    assert (one.fn, two.fn) == (first, second)
    assert one.requirements == two.requirements == [checkpoint.File("a.csv")]
    both = checkpoint.requires(checkpoint.File("b.csv"))(one)
    assert both.fn is first  # type: ignore[attr-defined]
    assert both.requirements == [checkpoint.File("b.csv"), checkpoint.File("a.csv")]  # type: ignore[attr-defined]
    assert one.requirements == [checkpoint.File("a.csv")]
