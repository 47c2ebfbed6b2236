"""A task's one dependent runs right after it in the same process-pool batch, its value
handed over in memory (see ``Submitter._hand_on``): no read of the stored value, the same
entries, stamps and events as when it is read back, and nothing runs on a value that was
not stored (a failure, a retry, a dead worker)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import checkpoint
import checkpoint._worker as worker
from checkpoint import events as ev
from checkpoint.store import Store

SOURCE = """
import os
from pathlib import Path
from checkpoint import task, requires

CACHE = ["kept"]

def _count(name: str) -> int:
    path = Path("runs") / name
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:
        f.write(".")
    return len(path.read_text())

def _flaky(name: str, how: str) -> None:
    if how == "raise-once" and _count(name + "-failed") == 1:
        raise RuntimeError("transient")
    if how == "raise":
        raise RuntimeError("for good")
    if how == "kill-once" and _count(name + "-killed") == 1:
        os.kill(os.getpid(), 9)

@task(retries=1)
def make(kind: str, how: str = ""):
    def __():
        _count("make")
        _flaky("make", how)
        if kind == "bytes":
            return b"v" * 200_000
        if kind == "bytearray":
            return bytearray(b"w" * 200_000)
        if kind == "list":
            return CACHE
        return "small"
    return __

@task(retries=1)
def use(kind: str, how: str = "", use_how: str = ""):
    @requires(make(kind, how))
    def __(value):
        _count("use")
        _flaky("use", use_how)
        if kind == "list":
            shared = value is CACHE
            value.append("changed by use")
            return (shared, list(value))
        if kind == "bytearray":
            value[0:1] = b"X"
            return (len(value), bytes(value[:2]))
        return (len(value), value[:2])
    return __
"""


@pytest.fixture
def mod(make_module: Callable[[str, str], ModuleType]) -> ModuleType:
    return make_module("fused", SOURCE)


@pytest.fixture
def reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """The values the workers read from a payload or a value file (the pool's workers are
    forked from this process, so they inherit the hook)."""
    log = tmp_path / "reads.log"
    original = worker.load

    def load(held: Any, root: str = "") -> Any:
        with open(log, "a") as f:
            f.write(type(held).__name__ + "\n")
        return original(held, root)

    monkeypatch.setattr(worker, "load", load)
    return lambda: log.read_text().split() if log.exists() else []


def _runs(tmp_path: Path, name: str) -> int:
    path = tmp_path / "runs" / name
    return len(path.read_text()) if path.exists() else 0


def test_the_dependent_gets_the_value_without_reading_it(
    mod: ModuleType, reads: Callable[[], list[str]], cache_dir: Path
) -> None:
    result = checkpoint.run([mod.use("bytes")], executor="process", max_workers=2)
    assert result.values[mod.use("bytes").id] == (200_000, b"vv")
    assert reads() == []  # handed over in memory: no value file read, no payload decoded
    # Its entry records the stamp of the value it was given, the one stored.
    store = Store.open(cache_dir)
    made = store.get_meta(mod.make("bytes").family.dirname, mod.make("bytes").id)
    used = store.get_meta(mod.use("bytes").family.dirname, mod.use("bytes").id)
    assert made is not None and used is not None and made.blob
    assert used.deps[mod.make("bytes").id] == made.stamp
    again = checkpoint.run([mod.use("bytes")], executor="inline")
    assert not again.ran and again.values[mod.use("bytes").id] == (200_000, b"vv")


def test_a_mutable_value_is_a_copy_and_what_was_stored_stays(
    mod: ModuleType, reads: Callable[[], list[str]], tmp_path: Path
) -> None:
    result = checkpoint.run([mod.use("list")], executor="process", max_workers=2)
    # Not the producer's own object (its module's list): decoded from its encoding.
    assert result.values[mod.use("list").id] == (False, ["kept", "changed by use"])
    assert reads() == ["tuple"]  # the payload in memory, not a file
    made = checkpoint.run([mod.make("list")], executor="inline")
    assert made.values[mod.make("list").id] == ["kept"] and not made.ran
    big = checkpoint.run([mod.use("bytearray")], executor="process", max_workers=2)
    assert big.values[mod.use("bytearray").id] == (200_000, b"Xw")
    stored = checkpoint.run([mod.make("bytearray")], executor="inline")
    assert stored.values[mod.make("bytearray").id] == bytearray(b"w" * 200_000)


def test_events_the_dependent_starts_when_its_producer_ended(mod: ModuleType) -> None:
    seen: list[tuple[str, str]] = []

    def listen(event: ev.Event) -> None:
        task = getattr(event, "task", None)
        if task is not None:
            seen.append((type(event).__name__, task.family.name.rpartition(".")[2]))

    checkpoint.run([mod.use("bytes")], executor="process", max_workers=2, subscribers=[listen])
    assert seen == [("TaskStarted", "make"), ("TaskFinished", "make"),
                    ("TaskStarted", "use"), ("TaskFinished", "use")]


def test_a_failed_producer_gives_its_dependent_nothing(
    mod: ModuleType, tmp_path: Path, reads: Callable[[], list[str]]
) -> None:
    # Retried: the dependent runs once, on the value of the attempt that succeeded.
    result = checkpoint.run([mod.use("bytes", "raise-once")], executor="process", max_workers=2)
    assert result.values[mod.use("bytes", "raise-once").id] == (200_000, b"vv")
    assert (_runs(tmp_path, "make"), _runs(tmp_path, "use")) == (2, 1)
    # For good: the dependent is skipped (keep going) or not run at all.
    (tmp_path / "runs").rename(tmp_path / "runs-1")
    result = checkpoint.run([mod.use("small", "raise")], executor="process", max_workers=2,
                            keep_going=True, raise_on_failure=False)
    assert [t.id for t in result.skipped] == [mod.use("small", "raise").id]
    assert list(result.failed) == [mod.make("small", "raise").id]
    assert _runs(tmp_path, "use") == 0
    with pytest.raises(RuntimeError, match="for good"):
        checkpoint.run([mod.use("small", "raise")], executor="process", max_workers=2)
    assert _runs(tmp_path, "use") == 0


def test_a_retried_dependent_reads_the_stored_value(
    mod: ModuleType, tmp_path: Path, reads: Callable[[], list[str]]
) -> None:
    target = mod.use("bytes", "", "raise-once")
    result = checkpoint.run([target], executor="process", max_workers=2)
    assert result.values[target.id] == (200_000, b"vv")
    assert (_runs(tmp_path, "make"), _runs(tmp_path, "use")) == (1, 2)
    assert reads() == ["BlobRef"]  # the retry, from the value file


def test_a_long_producer_reports_first(
    mod: ModuleType, reads: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its result would be lost with its reader's worker: it goes back first, and the reader
    # runs as usual (reading the value), started once.
    monkeypatch.setattr(worker, "HAND_ON_SECONDS", 0.0)
    seen: list[tuple[str, str]] = []

    def listen(event: ev.Event) -> None:
        task = getattr(event, "task", None)
        if task is not None:
            seen.append((type(event).__name__, task.family.name.rpartition(".")[2]))

    result = checkpoint.run([mod.use("bytes")], executor="process", max_workers=2,
                            subscribers=[listen])
    assert result.values[mod.use("bytes").id] == (200_000, b"vv")
    assert reads() == ["BlobRef"]
    assert seen == [("TaskStarted", "make"), ("TaskFinished", "make"),
                    ("TaskStarted", "use"), ("TaskFinished", "use")]


def test_two_long_producers_report_first(
    mod: ModuleType, reads: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two chains in flight: the first reader put back (its producer reported first) is no
    # longer fused when its batch's accounting ends, while the other chain still is.
    monkeypatch.setattr(worker, "HAND_ON_SECONDS", 0.0)
    targets = [mod.use("bytes"), mod.use("small")]
    result = checkpoint.run(targets, executor="process", max_workers=2)
    assert result.values[targets[0].id] == (200_000, b"vv")
    assert result.values[targets[1].id] == (5, "sm")
    again = checkpoint.run(targets, executor="inline")
    assert not again.ran


@pytest.mark.parametrize("who", ["make", "use"])
def test_a_worker_killed_mid_batch(mod: ModuleType, tmp_path: Path, who: str) -> None:
    target = mod.use("bytes", "kill-once", "") if who == "make" else mod.use("bytes", "", "kill-once")
    result = checkpoint.run([target], executor="process", max_workers=2)
    assert result.values[target.id] == (200_000, b"vv")
    # What the dead worker had not reported runs again; the producer's result, noted by the
    # worker as its reader started, is kept.
    assert _runs(tmp_path, "make") == (2 if who == "make" else 1)
    assert _runs(tmp_path, "use") == (1 if who == "make" else 2)
    again = checkpoint.run([target], executor="inline")
    assert not again.ran and again.values[target.id] == (200_000, b"vv")


WAITING = """
import os, time
from pathlib import Path
from checkpoint import task, requires

@task
def made():
    def __():
        with open("made-runs", "a") as f:
            f.write(".")
        return b"m" * 200_000
    return __

@task
def reader():
    @requires(made())
    def __(value):
        Path("reading").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not Path("go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(value), Path("go").exists()
    return __
"""


def test_the_producer_is_done_while_its_reader_runs(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path
) -> None:
    """Shown done (and recorded) as its reader starts, not when the reader ends: the
    reader waits until the run has said so."""
    mod = make_module("waiting", WAITING)

    def listen(event: ev.Event) -> None:
        if isinstance(event, ev.TaskFinished) and event.task == mod.made():
            (tmp_path / "go").touch()

    result = checkpoint.run([mod.reader()], executor="process", max_workers=2,
                            subscribers=[listen])
    assert result.values[mod.reader().id] == (200_000, True)
    assert {t.id for t in result.ran} == {mod.made().id, mod.reader().id}


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_the_producer_is_kept_when_its_reader_is_lost(tmp_path: Path, how: str) -> None:
    """A Ctrl-C, or the worker killed, while the reader runs in its producer's batch: the
    producer's result is stored all the same (the next run computes the reader only)."""
    import os
    import signal
    import time

    from conftest import write
    from faultkit import env_for, start

    from checkpoint.taskfile import load_taskfile

    write(tmp_path / "taskfile.py", WAITING)
    proc = start(["run", "reader", "-j", "2"], tmp_path, env_for(tmp_path))
    deadline = time.monotonic() + 120
    while not (tmp_path / "reading").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    if how == "kill":
        os.kill(int((tmp_path / "reading").read_text()), signal.SIGKILL)
        (tmp_path / "go").touch()  # its second attempt returns at once
    else:  # the note is written before the reader starts: kept if Ctrl-C comes at once
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == (0 if how == "kill" else 130), err
    store = Store.open(tmp_path / ".cache")
    try:
        assert [meta.expr for _, meta in store.entries("taskfile.made")] == ["made()"]
    finally:
        store.close()
    (tmp_path / "go").touch()
    again = checkpoint.run([load_taskfile(tmp_path / "taskfile.py").reader()], executor="inline")
    assert [t.expression() for t in again.ran] == (["reader()"] if how == "interrupt" else [])
    assert (tmp_path / "made-runs").read_text() == "."  # computed once


# --- a model: random DAGs, random failures, against a plain evaluation ---------------------

MODEL = """
import hashlib
from pathlib import Path
from checkpoint import task, requires

SPEC = {spec!r}
"""

MODEL_BODY = """
def _first(name):
    path = Path("attempts") / name
    path.parent.mkdir(exist_ok=True)
    seen = path.exists()
    path.touch()
    return not seen

def value_of(i, values):
    digest = hashlib.sha256(str(i).encode())
    for v in values:
        digest.update(repr(v).encode() if not isinstance(v, (bytes, bytearray)) else bytes(v))
    kind = SPEC[i][1]
    if kind == "big":
        return digest.digest() * 1000
    if kind == "list":
        return [digest.hexdigest(), i]
    if kind == "tuple":
        return (i, digest.hexdigest(), (1.5, None))
    if kind == "bigarray":
        return bytearray(digest.digest() * 1000)
    return digest.hexdigest()

def pure(i, memo):
    if i not in memo:
        memo[i] = value_of(i, [pure(j, memo) for j in SPEC[i][0]])
    return memo[i]

@task(retries=1)
def node(i: int):
    deps, kind, fail = SPEC[i]
    @requires([node(j) for j in deps])
    def __(values):
        if fail == "once" and _first(str(i)):
            raise RuntimeError("transient")
        if fail == "always":
            raise RuntimeError("for good")
        value = value_of(i, values)
        for v in values:  # a reader that changes what it was given
            if isinstance(v, (list, bytearray)):
                v.append(0)
        return value
    return __
"""


def _spec(rng: random.Random, n: int) -> dict[int, tuple[list[int], str, str]]:
    spec: dict[int, tuple[list[int], str, str]] = {}
    for i in range(n):
        width = rng.choices([0, 1, 2], weights=[1, 6, 3])[0] if i else 0
        deps = sorted(rng.sample(range(i), min(width, i)))
        kind = rng.choice(["big", "small", "list", "tuple", "bigarray"])
        fail = rng.choices(["", "once", "always"], weights=[14, 4, 1])[0]
        spec[i] = (deps, kind, fail)
    return spec


@pytest.mark.parametrize("seed", range(4))
def test_model_random_dags_against_a_plain_evaluation(
    make_module: Callable[[str, str], ModuleType], seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from checkpoint._submission import Submitter

    fused: list[str] = []
    hand_on = Submitter._hand_on

    def counted(self: Submitter, items: list[Any], payloads: Any) -> None:
        hand_on(self, items, payloads)
        fused.extend(item.id for item in items if item.after)

    monkeypatch.setattr(Submitter, "_hand_on", counted)
    # Odd seeds: every producer "took long" and reports before its reader runs (put back).
    monkeypatch.setattr(worker, "HAND_ON_SECONDS", 0.0 if seed % 2 else 2.0)
    rng = random.Random(seed)
    spec = _spec(rng, 24)
    model = make_module(f"fusedmodel{seed}", MODEL.format(spec=spec) + MODEL_BODY)
    readers = {j for deps, _, _ in spec.values() for j in deps}
    sinks = [i for i in spec if i not in readers]
    result = checkpoint.run([model.node(i) for i in sinks], executor="process", max_workers=2,
                            keep_going=True, raise_on_failure=False)
    broken: set[int] = set()
    failed, skipped = set(), set()
    for i, (deps, _, fail) in spec.items():  # (in order: a task's prerequisites come first)
        if any(j in broken for j in deps):
            skipped.add(model.node(i).id)
        elif fail == "always":
            failed.add(model.node(i).id)
        else:
            continue
        broken.add(i)
    memo: dict[int, object] = {}
    expected = {model.node(i).id: model.pure(i, memo) for i in sinks if i not in broken}
    assert result.values == expected
    assert set(result.failed) == failed
    assert {t.id for t in result.skipped} == skipped
    assert fused  # (the model exercises the hand-over)
    # Every stored value is what a plain evaluation gives, and fresh.
    ok = [i for i in spec if i not in broken]
    again = checkpoint.run([model.node(i) for i in ok], executor="inline")
    assert not again.ran
    assert again.values == {model.node(i).id: model.pure(i, {}) for i in ok}


def test_the_hand_over_is_process_pool_only() -> None:
    from checkpoint._adapter import InlineAdapter
    from checkpoint._pool import ProcessPoolAdapter
    from checkpoint.executors import resolve_executor

    assert ProcessPoolAdapter.hands_on and not InlineAdapter.hands_on
    thread = resolve_executor("thread", 2)
    try:
        assert not thread.hands_on
    finally:
        thread.shutdown()
