"""A remote cache shared by machines: pull instead of compute, push what was computed,
refuse what was damaged or not signed, survive concurrent writers and an unreachable remote.

S3 tests run against moto's S3 server, started by these tests on 127.0.0.1; ``file://``
tests use a directory. "Machines" are separate caches (and, for the CLI, processes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from remotekit import GRAPH, KEY, S3Server, closed_port, machine

from checkpoint import run
from checkpoint.errors import RemoteConfigError, RemoteWarning
from checkpoint.remote import Remote, entries, prune, pull_targets, push

pytest.importorskip("moto")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket of the local S3 server (the environment points s3fs at it)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.bucket()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CP_REMOTE_KEY", KEY)
    return KEY


# --- two machines, one remote -----------------------------------------------------------------


def test_two_machines_share_an_s3_remote(tmp_path: Path, s3: str, s3_server: S3Server) -> None:
    """B's cold run of A's 200-task graph should pull everything and run nothing; after B
    edits one task and pushes, A should pull exactly the changed entries."""
    env = {**s3_server.env(), "CP_REMOTE": s3}
    a = machine(tmp_path / "a", GRAPH, **env)
    b = machine(tmp_path / "b", GRAPH, **env)
    first = a.run_json("--push")
    assert (first["ran"], first["pushed"]) == (200, 200)

    before = s3_server.requests
    cold = b.cli("run", "--executor", "inline", "--no-progress")
    assert "Done in" in cold.stderr and ": 0 ran, 200 pulled, 0 reused," in cold.stderr
    # The 190 leaves come in one pack (a listing and a read), the 10 others one by one.
    assert s3_server.requests - before < 30
    assert cold.stdout.strip() == first["targets"][0]["repr"]
    assert b.run_json()["reused"] == 200  # now local

    edited = GRAPH.replace("return sum(leaves)", "return sum(leaves) + 1")
    b.write(edited)
    after_edit = b.run_json("--push")
    assert (after_edit["ran"], after_edit["pulled"], after_edit["pushed"]) == (10, 0, 10)

    a.write(edited)
    pulled = json.loads(a.cli("pull", "--json").stdout)
    assert sorted(pulled["pulled"]) == sorted([f"group({g})" for g in range(9)] + ["main()"])
    assert pulled["refused"] == [] and pulled["missing"] == 0
    warm = a.run_json()
    assert (warm["ran"], warm["pulled"], warm["reused"]) == (0, 0, 200)
    assert warm["targets"][0]["value"] == after_edit["targets"][0]["value"]


# --- a file:// remote through the library -----------------------------------------------------

PIPELINE = '''
from pathlib import Path

from checkpoint import File, Product, TaskDirectory, requires, task

CALLS = []


@task
def small(i: int):
    def __() -> int:
        CALLS.append(("small", i))
        return i + 1
    return __


@task
def big(n: int):
    def __() -> bytes:
        CALLS.append(("big", n))
        return bytes(range(256)) * (n // 256)
    return __


@task
def model():
    @requires(TaskDirectory())
    def __(d: Path) -> str:
        CALLS.append(("model", 0))
        (d / "weights").mkdir()
        (d / "weights" / "w.bin").write_bytes(b"w" * 300_000)
        (d / "run.sh").write_text("echo hi")
        (d / "run.sh").chmod(0o755)
        return "model"
    return __


@task
def read_input():
    @requires(File("input.txt"))
    def __(path: Path) -> str:
        CALLS.append(("read_input", 0))
        return path.read_text().upper()
    return __


@task
def write_product():
    @requires(Product("out.txt"))
    def __(path: Path) -> str:
        CALLS.append(("write_product", 0))
        path.write_text("product")
        return "written"
    return __


@task
def main():
    @requires([small(i) for i in range(5)])
    @requires(big(50_000))
    @requires(big(400_000))
    @requires(model())
    @requires(read_input())
    @requires(write_product())
    def __(smalls, b1, b2, m, text, w) -> tuple:
        CALLS.append(("main", 0))
        return sum(smalls), len(b1), len(b2), m, text, w
    return __
'''
EXPECTED = (15, 49_920, 399_872, "model", "HELLO", "written")


@pytest.fixture
def pipeline(make_module: Callable[[str, str], ModuleType], tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch, key: str) -> ModuleType:
    (tmp_path / "input.txt").write_text("hello")
    import checkpoint.remote

    monkeypatch.setattr(checkpoint.remote, "STREAM_MIN", 100_000)  # big(400_000) is streamed
    return make_module("pipeline_tasks", PIPELINE)


def test_file_remote_round_trip(pipeline: ModuleType, tmp_path: Path) -> None:
    """Values (inline, object, streamed), data directories (with an executable file) and a
    task with an input file should come back from a file:// remote; a task that declares an
    output file should run on each machine, and its dependents still be pulled."""
    url = (tmp_path / "remote").as_uri()
    first = run([pipeline.main()], cache_dir=tmp_path / "a", remote=url, executor="inline")
    assert first.values[pipeline.main().id] == EXPECTED
    report = push([pipeline.main()], url, cache_dir=tmp_path / "a")
    assert len(report.pushed) == 10
    assert [(t.expression(), why) for t, why in report.skipped] == [
        ("write_product()", "it declares output files (Product), which stay in the project")]

    pipeline.CALLS.clear()
    events: list[Any] = []
    second = run([pipeline.main()], cache_dir=tmp_path / "b", remote=url, executor="inline",
                 subscribers=[events.append])
    assert second.values[pipeline.main().id] == EXPECTED
    # The task with an output file runs here, and so does its dependent (its key names the
    # producer's new stamp); everything else is pulled.
    assert pipeline.CALLS == [("write_product", 0), ("main", 0)]
    assert len(second.pulled) == 9
    assert [t.expression() for t in second.ran] == ["write_product()", "main()"]
    pulled_events = [e for e in events if type(e).__name__ == "TaskPulled"]
    assert {e.task.expression() for e in pulled_events} == {t.expression() for t in second.pulled}
    sizes = {e.task.expression(): e.size for e in pulled_events}
    assert sizes["model()"] == 300_007 + len(pickle_of("model"))  # its data files and value

    from checkpoint.store import Store

    store = Store.open(tmp_path / "b")
    data = store.data_dir(pipeline.model().family.dirname, pipeline.model().id)
    assert (data / "weights" / "w.bin").read_bytes() == b"w" * 300_000
    assert os.access(data / "run.sh", os.X_OK)
    checked, problems = store.verify()
    assert checked == 11 and problems == []
    assert run([pipeline.main()], cache_dir=tmp_path / "b", remote=url).ran == []
    assert store.get_log(pipeline.main().family.dirname, pipeline.main().id) is None


def test_edited_input_file_is_not_pulled(pipeline: ModuleType, tmp_path: Path) -> None:
    """A task whose input file differs here should be computed, not pulled."""
    url = (tmp_path / "remote").as_uri()
    run([pipeline.main()], cache_dir=tmp_path / "a", remote=url, executor="inline")
    push([pipeline.main()], url, cache_dir=tmp_path / "a")
    (tmp_path / "input.txt").write_text("other")
    pipeline.CALLS.clear()
    result = run([pipeline.main()], cache_dir=tmp_path / "b", remote=url, executor="inline")
    assert result.values[pipeline.main().id][4] == "OTHER"
    assert sorted(c[0] for c in pipeline.CALLS) == ["main", "read_input", "write_product"]


def test_forced_task_is_computed_not_pulled(pipeline: ModuleType, tmp_path: Path) -> None:
    """--force asks to compute: a forced target should run even when the remote has it."""
    url = (tmp_path / "remote").as_uri()
    run([pipeline.small(1)], cache_dir=tmp_path / "a", remote=url, executor="inline")
    push([pipeline.small(1)], url, cache_dir=tmp_path / "a")
    result = run([pipeline.small(1)], cache_dir=tmp_path / "b", remote=url, force=True,
                 executor="inline")
    assert [t.expression() for t in result.ran] == ["small(1)"] and result.pulled == []


# --- tampering --------------------------------------------------------------------------------


def _object_of(remote: Path, size: int) -> Path:
    """The object file of the given size."""
    [found] = [p for p in (remote / "objects").rglob("*") if p.is_file() and p.stat().st_size == size]
    return found


def _manifest_of(remote: Path, task: Any) -> Path:
    [found] = list((remote / "entries" / task.family.dirname / task.id).glob("*.json"))
    return found


def _flip(remote: Path, pipeline: ModuleType) -> str:
    path = _object_of(remote, len(pickle_of(bytes(range(256)) * (50_000 // 256))))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "its value failed its SHA-256 check"


def _swap(remote: Path, pipeline: ModuleType) -> str:
    big = _object_of(remote, len(pickle_of(bytes(range(256)) * (50_000 // 256))))
    other = _object_of(remote, 300_000)  # the model's data file
    big.write_bytes(other.read_bytes())
    return "its value failed its SHA-256 check"


def _unsign(remote: Path, pipeline: ModuleType) -> str:
    path = _manifest_of(remote, pipeline.big(50_000))
    body = json.loads(path.read_text())
    del body["signature"]
    path.write_text(json.dumps(body))
    return "it is not signed"


def _resign_other_key(remote: Path, pipeline: ModuleType) -> str:
    from checkpoint._manifest import Manifest

    path = _manifest_of(remote, pipeline.big(50_000))
    body = json.loads(path.read_text())
    body.pop("signature")
    data = body.pop("data")
    manifest = Manifest(**body)
    manifest.data = data
    path.write_bytes(manifest.signed(b"another-key-0123456789"))
    return "its signature does not match"


def _alter(remote: Path, pipeline: ModuleType) -> str:
    path = _manifest_of(remote, pipeline.big(50_000))
    body = json.loads(path.read_text())
    body["stamp"] = "forged"
    path.write_text(json.dumps(body))
    return "its signature does not match"


def _remove_object(remote: Path, pipeline: ModuleType) -> str:
    _object_of(remote, len(pickle_of(bytes(range(256)) * (50_000 // 256)))).unlink()
    return "missing from the remote"


def _move_manifest(remote: Path, pipeline: ModuleType) -> str:
    source = _manifest_of(remote, pipeline.small(1))
    target = _manifest_of(remote, pipeline.small(2))  # the same key: same code, no prerequisites
    shutil.copyfile(source, target)
    return "describes another task"


def _truncate(remote: Path, pipeline: ModuleType) -> str:
    path = _manifest_of(remote, pipeline.big(50_000))
    path.write_bytes(path.read_bytes()[:50])
    return "not valid JSON"


def pickle_of(value: Any) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("tamper", [_flip, _swap, _unsign, _resign_other_key, _alter,
                                    _remove_object, _move_manifest, _truncate])
def test_tampered_entry_is_refused_and_recomputed(
    pipeline: ModuleType, tmp_path: Path, tamper: Callable[[Path, ModuleType], str]
) -> None:
    """A damaged, replaced, unsigned, wrongly signed, altered, incomplete or moved entry
    should be refused with a clear warning and its task computed here: never a wrong value."""
    remote = tmp_path / "remote"
    run([pipeline.main()], cache_dir=tmp_path / "a", remote=remote.as_uri(), executor="inline")
    push([pipeline.main()], remote.as_uri(), cache_dir=tmp_path / "a")
    reason = tamper(remote, pipeline)
    pipeline.CALLS.clear()
    with pytest.warns(RemoteWarning) as caught:
        result = run([pipeline.main()], cache_dir=tmp_path / "b", remote=remote.as_uri(),
                     executor="inline")
    assert result.values[pipeline.main().id] == EXPECTED
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "was refused" in messages[0] and reason in messages[0]
    assert "It is computed here instead." in messages[0]
    ran = {t.expression() for t in result.ran}
    victim = "small(2)" if tamper is _move_manifest else "big(50000)"
    assert victim in ran and "main()" in ran  # its dependent was not pulled either
    from checkpoint.store import Store

    assert Store.open(tmp_path / "b").verify()[1] == []


def _as_written_before_xxh3(cache: Path) -> int:
    """Rewrite every entry of a cache as the older code wrote it (a CRC-32 checksum)."""
    import zlib

    from checkpoint.store import Store

    store = Store.open(cache)
    count = 0
    for family in store.families():
        for tid, meta in list(store.entries(family)):
            payload = (store.blob_dir(family) / meta.blob).read_bytes() if meta.blob \
                else meta.inline
            assert payload is not None
            meta.crc = zlib.crc32(payload)
            store.put_metas(family, {tid: meta})
            count += 1
    store.close()
    return count


def test_entries_written_with_crc32_push_and_pull(pipeline: ModuleType, tmp_path: Path) -> None:
    """Entries an older version stored (CRC-32) should push, pull and load as they are."""
    url = (tmp_path / "remote").as_uri()
    run([pipeline.main()], cache_dir=tmp_path / "a", executor="inline")
    assert _as_written_before_xxh3(tmp_path / "a") == 11
    assert len(push([pipeline.main()], url, cache_dir=tmp_path / "a").pushed) == 10
    manifests = list((tmp_path / "remote" / "entries").rglob("*.json"))
    assert manifests and all(json.loads(m.read_text())["crc"] < 1 << 32 for m in manifests)
    second = run([pipeline.main()], cache_dir=tmp_path / "b", remote=url, executor="inline")
    assert second.values[pipeline.main().id] == EXPECTED and len(second.pulled) == 9
    from checkpoint.store import Store

    store = Store.open(tmp_path / "b")
    assert store.verify() == (11, [])
    pulled = {t.id for t in second.pulled}
    assert all(meta.crc < 1 << 32 for family in store.families()
               for tid, meta in store.entries(family) if tid in pulled)


@pytest.mark.parametrize("written", ["crc32", "xxh3"])
@pytest.mark.parametrize("size", [50_000, 400_000])  # held in memory / streamed to a file
def test_signed_manifest_with_a_wrong_checksum_is_refused(
        pipeline: ModuleType, tmp_path: Path, written: str, size: int) -> None:
    """A manifest whose checksum does not match its value (of either algorithm) should be
    refused even when it is signed with the right key."""
    from checkpoint._manifest import Manifest

    remote = tmp_path / "remote"
    run([pipeline.main()], cache_dir=tmp_path / "a", executor="inline")
    if written == "crc32":
        _as_written_before_xxh3(tmp_path / "a")
    push([pipeline.main()], remote.as_uri(), cache_dir=tmp_path / "a")
    path = _manifest_of(remote, pipeline.big(size))
    body = json.loads(path.read_text())
    body.pop("signature")
    data = body.pop("data")
    assert (body["crc"] < 1 << 32) == (written == "crc32")
    body["crc"] ^= 1 << 7
    manifest = Manifest(**body)
    manifest.data = data
    path.write_bytes(manifest.signed(KEY.encode()))
    with pytest.warns(RemoteWarning, match="does not match the checksum in its manifest"):
        result = run([pipeline.main()], cache_dir=tmp_path / "b", remote=remote.as_uri(),
                     executor="inline")
    assert result.values[pipeline.main().id] == EXPECTED
    assert f"big({size})" in {t.expression() for t in result.ran}


def test_wrong_key_refuses_everything(pipeline: ModuleType, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with another key should pull nothing and compute everything."""
    url = (tmp_path / "remote").as_uri()
    run([pipeline.small(1)], cache_dir=tmp_path / "a", remote=url, executor="inline")
    push([pipeline.small(1)], url, cache_dir=tmp_path / "a")
    monkeypatch.setenv("CP_REMOTE_KEY", "a-different-key-0123456789")
    with pytest.warns(RemoteWarning, match="signed with another key"):
        result = run([pipeline.small(1)], cache_dir=tmp_path / "b", remote=url, executor="inline")
    assert result.pulled == [] and len(result.ran) == 1


def test_pull_refusal_exits_1(pipeline: ModuleType, tmp_path: Path) -> None:
    """pull_targets should report refused entries (the CLI exits 1 for them)."""
    remote = tmp_path / "remote"
    run([pipeline.main()], cache_dir=tmp_path / "a", remote=remote.as_uri(), executor="inline")
    push([pipeline.main()], remote.as_uri(), cache_dir=tmp_path / "a")
    _unsign(remote, pipeline)
    with pytest.warns(RemoteWarning):
        report = pull_targets([pipeline.main()], remote.as_uri(), cache_dir=tmp_path / "b")
    assert [t.expression() for t, _ in report.refused] == ["big(50000)"]
    assert "main()" not in {t.expression() for t in report.pulled}


MANY = '''
from checkpoint import requires, task


@task
def item(i: int):
    def __() -> int:
        return i * 3
    return __


@task
def total():
    @requires([item(i) for i in range(40)])
    def __(items: list[int]) -> int:
        return sum(items)
    return __
'''


def test_packs_serve_many_entries_and_fall_back(
    make_module: Callable[[str, str], ModuleType], tmp_path: Path, key: str
) -> None:
    """A push of many entries of a family should write a pack that a pull reads instead of
    one manifest per entry; a damaged pack line should fall back to the manifest itself."""
    mod = make_module("many_tasks", MANY)
    remote = tmp_path / "remote"
    run([mod.total()], cache_dir=tmp_path / "a", remote=remote.as_uri(), executor="inline")
    push([mod.total()], remote.as_uri(), cache_dir=tmp_path / "a")
    [pack] = (remote / "packs" / mod.item.dirname).glob("*.pack")
    assert len(pack.read_bytes().splitlines()) == 40

    counted = Remote(remote.as_uri())
    result = run([mod.total()], cache_dir=tmp_path / "b", remote=counted, executor="inline")
    assert len(result.pulled) == 41 and result.ran == []
    assert counted.requests == 3  # the listing of the packs, the pack, total()'s manifest

    lines = pack.read_bytes().splitlines()
    body = json.loads(lines[5])
    body["stamp"] = "forged"
    pack.write_bytes(b"\n".join([*lines[:5], json.dumps(body).encode(), *lines[6:]]) + b"\n")
    again = run([mod.total()], cache_dir=tmp_path / "c", remote=remote.as_uri(), executor="inline")
    assert len(again.pulled) == 41  # item(5) was read alone: no warning (pytest would fail)

    forged = _manifest_of(remote, mod.item(5))
    forged.write_text(json.dumps({**json.loads(forged.read_text()), "stamp": "forged"}))
    with pytest.warns(RemoteWarning, match="signature does not match"):
        third = run([mod.total()], cache_dir=tmp_path / "d", remote=remote.as_uri(),
                    executor="inline")
    assert [t.expression() for t in third.ran] == ["item(5)", "total()"]
    assert third.values[mod.total().id] == sum(i * 3 for i in range(40))

    gone = prune(Remote(remote.as_uri()), older_than=0, now=time.time() + 7200)
    assert len(gone.packs) == 1 and len(gone.entries) == 41
    assert not list((remote / "packs").rglob("*.pack"))


# --- adv6 09: the folders of a data directory, empty ones too --------------------------------

FOLDERS = '''
import os

from checkpoint import TaskDirectory, requires, task


@task
def gen():
    @requires(TaskDirectory())
    def __(d) -> str:
        for name in ("cat", "dog", "empty/nested", "logs"):
            (d / name).mkdir(parents=True)  # one per class, not yet filled
        (d / "cat" / "1.txt").write_text("meow")
        return str(d)
    return __


@task
def main():
    @requires(gen())
    def __(d: str) -> list:
        return sorted(os.path.relpath(os.path.join(top, name), d)
                      for top, dirs, files in os.walk(d) for name in dirs + files)
    return __
'''
FOLDERS_SEEN = ["cat", "cat/1.txt", "dog", "empty", "empty/nested", "logs"]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_empty_folders_of_a_data_directory_are_pulled(
        make_module: Callable[[str, str], ModuleType], tmp_path: Path, key: str,
        s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A data directory pulled from a remote should hold the folders the task made, empty
    ones too: its dependents, pulled or computed, see what they see on the first machine."""
    if kind == "s3":
        for name, value in s3_server.env().items():
            monkeypatch.setenv(name, value)
    url = s3_server.bucket() if kind == "s3" else (tmp_path / "remote").as_uri()
    mod = make_module("folder_tasks", FOLDERS)
    first = run([mod.main()], cache_dir=tmp_path / "a", executor="inline")
    assert first.values[mod.main().id] == FOLDERS_SEEN
    assert len(push([mod.gen()], url, cache_dir=tmp_path / "a").pushed) == 1
    second = run([mod.main()], cache_dir=tmp_path / "b", remote=url, executor="inline")
    assert [t.expression() for t in second.pulled] == ["gen()"]
    assert second.values[mod.main().id] == FOLDERS_SEEN
    if kind == "s3":
        return
    # An entry an older checkpoint pushed (no "dirs"): read as it was written then.
    path = _manifest_of(tmp_path / "remote", mod.gen())
    body = json.loads(path.read_text())
    assert body["dirs"] == ["dog", "empty/nested", "logs"]
    _resign(path, {k: v for k, v in body.items() if k != "dirs"})
    third = run([mod.main()], cache_dir=tmp_path / "c", remote=url, executor="inline")
    assert [t.expression() for t in third.pulled] == ["gen()"]
    assert third.values[mod.main().id] == ["cat", "cat/1.txt"]
    # A folder where the entry has a file: refused, computed here.
    _resign(path, {**body, "dirs": ["cat/1.txt"]})
    with pytest.warns(RemoteWarning, match="names the folder cat/1.txt, where it has a file"):
        fourth = run([mod.main()], cache_dir=tmp_path / "d", remote=url, executor="inline")
    assert fourth.pulled == [] and fourth.values[mod.main().id] == FOLDERS_SEEN


def _resign(path: Path, body: dict[str, Any]) -> None:
    """Write a manifest with ``body`` (its signature replaced), signed with the key."""
    from checkpoint._manifest import DataFile, Manifest

    body = dict(body)
    body.pop("signature", None)
    data = body.pop("data")
    manifest = Manifest(**body)
    manifest.data = [DataFile(**f) for f in data]
    path.write_bytes(manifest.signed(KEY.encode()))


def test_a_manifest_naming_an_unsafe_folder_is_refused() -> None:
    """Folders of a data directory are checked as its files are."""
    from checkpoint._manifest import DataFile, Manifest, RefusedEntry

    for bad in ("../x", "/abs", "a//b", ".", ""):
        manifest = Manifest(task="0" * 32, family="f", expr="", args="", fingerprint="", deps={},
                            stamp="", size=0, crc=0, compressed=False, sha256="0" * 64,
                            data=[DataFile("a", 0, "0" * 64)], dirs=[bad])
        with pytest.raises(RefusedEntry, match="unsafe path"):
            Manifest.verified(manifest.signed(b"k" * 16), b"k" * 16)


# --- keys and reachability --------------------------------------------------------------------


def test_no_key(tmp_path: Path) -> None:
    """Without CP_REMOTE_KEY a run should warn once and go on locally; push and pull should
    exit 2 saying how to make a key."""
    m = machine(tmp_path / "m", GRAPH, CP_REMOTE=(tmp_path / "remote").as_uri(), CP_REMOTE_KEY="")
    proc = m.cli("run", "--executor", "inline", "group(1)")
    assert proc.stderr.count("warning:") == 1 and "needs a signing key" in proc.stderr
    assert proc.stdout.strip() == str(sum(i * i for i in range(190) if i % 9 == 1))
    for command in ("push", "pull"):
        failed = m.cli(command, check=False)
        assert failed.returncode == 2
        assert "set CP_REMOTE_KEY" in failed.stderr and "secrets.token_hex(32)" in failed.stderr
    with pytest.raises(RemoteConfigError, match="at least 16"):
        Remote("file:///x", key="short").signing_key()


def test_unreachable_remote_warns_once(tmp_path: Path, s3_server: S3Server) -> None:
    """A remote nobody answers at should give one warning, and the run should finish
    locally (also with --push); a warm run should not contact it at all."""
    env = {**s3_server.env(), "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{closed_port()}",
           "CP_REMOTE": "s3://nowhere/cache"}
    m = machine(tmp_path / "m", GRAPH, **env)
    proc = m.cli("run", "--executor", "inline", "--push", "group(1)")
    assert proc.stderr.count("warning:") == 1, proc.stderr
    assert "cannot be reached" in proc.stderr and "Running without it" in proc.stderr
    assert proc.stdout.strip() == str(sum(i * i for i in range(190) if i % 9 == 1))
    started = time.perf_counter()
    warm = m.cli("run", "--executor", "inline", "group(1)")
    assert "warning" not in warm.stderr and "Nothing to run" in warm.stderr
    assert time.perf_counter() - started < 30
    failed = m.cli("pull", "group(2)", check=False)
    assert failed.returncode == 1 and "cannot be reached" in failed.stderr


def test_library_warm_run_makes_no_request(pipeline: ModuleType, tmp_path: Path) -> None:
    """Nothing to run means nothing to look up: the remote is not even opened."""
    remote = Remote((tmp_path / "remote").as_uri())
    run([pipeline.small(3)], cache_dir=tmp_path / "a", remote=remote, executor="inline")
    assert remote.requests == 1  # the one lookup of the cold run
    run([pipeline.small(3)], cache_dir=tmp_path / "a", remote=remote, executor="inline")
    assert remote.requests == 1


# --- concurrency ------------------------------------------------------------------------------

OVERLAP = '''
from checkpoint import TaskDirectory, requires, task


@task
def leaf(i: int):
    def __() -> bytes:
        return bytes([i % 256]) * (2_000 + i)
    return __


@task
def notes(k: int):
    @requires(TaskDirectory())
    def __(d) -> bytes:
        (d / "notes.txt").write_text(str(k) * 50_000)
        return bytes([k]) * 100_000
    return __


@task
def main(k: int):
    @requires([leaf(i) for i in range(k * 10, k * 10 + 40)])
    @requires(notes(k))
    def __(leaves: list[bytes], n: bytes) -> int:
        return sum(len(v) for v in leaves) + len(n)
    return __


@task
def everything():
    @requires([main(k) for k in range(4)])
    def __(totals: list[int]) -> int:
        return sum(totals)
    return __
'''
# Leaves: their stamps are digests of their values, so overlapping leaves computed by two
# machines match. (A task with a data directory gets a random stamp: its dependents then
# match only the machine that computed it, and the others recompute them; see
# docs/remote.md.)


def _expected_overlap() -> int:
    return sum(sum(2_000 + i for i in range(k * 10, k * 10 + 40)) + 100_000 for k in range(4))


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_parallel_pushes_and_a_pull_during_a_push(
    tmp_path: Path, s3_server: S3Server, kind: str
) -> None:
    """Several processes pushing overlapping graphs at once, and a process pulling while
    they push, should leave only complete entries: nothing refused, every value right."""
    url = s3_server.bucket() if kind == "s3" else (tmp_path / "remote").as_uri()
    env = {**s3_server.env(), "CP_REMOTE": url}
    pushers = [machine(tmp_path / f"p{k}", OVERLAP, **env) for k in range(4)]
    for k, m in enumerate(pushers):
        m.cli("run", "--executor", "inline", f"main({k})")  # computed, not yet pushed
    reader = machine(tmp_path / "reader", OVERLAP, **env)
    procs = [m.start("push", f"main({k})") for k, m in enumerate(pushers)]
    pulls = []
    while any(p.poll() is None for p in procs) or not pulls:
        pulls.append(reader.cli("pull", "everything", check=False))
    for p in procs:
        out, errors = p.communicate(timeout=120)
        assert p.returncode == 0, errors
    for proc in pulls:
        assert proc.returncode == 0 and "refused" not in proc.stderr.replace("0 refused", ""), proc.stderr
    final = reader.run_json("everything")
    assert final["targets"][0]["value"] == _expected_overlap()
    assert final["ran"] == 1  # only everything() itself: all the others were pulled
    assert reader.cli("cache", "verify").returncode == 0
    fresh = machine(tmp_path / "fresh", OVERLAP, **env)
    cold = fresh.run_json("everything")
    assert (cold["ran"], cold["pulled"]) == (1, 78)  # 70 leaves, 4 notes, 4 mains


# --- the CLI around the remote ----------------------------------------------------------------


def test_pyproject_configures_remote_and_push(tmp_path: Path) -> None:
    """remote and remote_push under [tool.checkpoint] should make run pull and push."""
    url = (tmp_path / "remote").as_uri()
    a = machine(tmp_path / "a", GRAPH)
    (a.root / "pyproject.toml").write_text(
        f'[tool.checkpoint]\nremote = "{url}"\nremote_push = true\n')
    doc = a.run_json("group(0)")
    assert doc["pushed"] == 23
    b = machine(tmp_path / "b", GRAPH)
    (b.root / "pyproject.toml").write_text(f'[tool.checkpoint]\nremote = "{url}"\n')
    assert b.run_json("group(0)")["pulled"] == 23
    (b.root / "pyproject.toml").write_text('[tool.checkpoint]\nremote = 3\n')
    bad = b.cli("run", "group(4)", check=False)
    assert bad.returncode == 2 and "must be a string" in bad.stderr
    off = b.cli("run", "--no-remote", "--executor", "inline", "--json", "group(5)")
    assert json.loads(off.stdout)["pulled"] == 0


def test_remote_ls_du_prune(tmp_path: Path) -> None:
    """remote ls, du and prune should show and trim what the remote holds."""
    url = (tmp_path / "remote").as_uri()
    m = machine(tmp_path / "m", GRAPH, CP_REMOTE=url)
    m.cli("run", "--executor", "inline", "--push", "group(0)")
    listing = m.cli("remote", "ls").stdout.splitlines()
    assert listing[0].split() == ["FAMILY", "ENTRIES", "LAST", "PUSHED"]
    assert [line.split()[:2] for line in listing[1:]] == [["taskfile.group", "1"], ["taskfile.leaf", "22"]]
    entries_doc = json.loads(m.cli("remote", "ls", "group", "--json").stdout)["entries"]
    assert [(e["task"], e["status"]) for e in entries_doc] == [("group(0)", "signed")]
    du = json.loads(m.cli("remote", "du", "--json").stdout)
    assert du["entries"] == 23 and du["objects"] == 0 and du["bytes"] > 0
    dry = m.cli("remote", "prune", "--older-than", "0s", "--family", "group")
    assert "Would remove 1 entry" in dry.stderr
    m.cli("remote", "prune", "--older-than", "0s", "--family", "group", "-y")
    assert [e.family for e in entries(Remote(url))].count("taskfile.group") == 0
    assert m.cli("remote", "prune", "--family", "nope", check=False).returncode == 2


def test_prune_collects_unused_objects(pipeline: ModuleType, tmp_path: Path) -> None:
    """Objects no manifest names should go once older than the grace period, never before."""
    url = (tmp_path / "remote").as_uri()
    run([pipeline.model()], cache_dir=tmp_path / "a", remote=url, executor="inline")
    push([pipeline.model()], url, cache_dir=tmp_path / "a")
    remote = Remote(url)
    later = prune(remote, now=time.time() + 7200, dry_run=True)
    assert later.objects == [] and later.entries == []  # still used by the entry
    young = prune(remote, older_than=0)
    assert len(young.entries) == 1 and young.objects == []  # pushed within the grace period
    gone = prune(remote, now=time.time() + 7200)
    assert gone.entries == [] and len(gone.objects) == 2
    assert not any(p.is_file() for p in (tmp_path / "remote" / "objects").rglob("*"))


def test_import_checkpoint_does_not_import_fsspec() -> None:
    """The remote's libraries should load only when a remote is used."""
    import subprocess
    import sys

    code = "import sys, checkpoint, checkpoint.remote; print(sorted(m for m in ('fsspec', 's3fs', 'botocore') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_progress_counts_pulled() -> None:
    """The summary should say how many tasks were pulled, apart from the reused ones."""
    from checkpoint import events as ev
    from checkpoint.progress import Tally, summary_lines

    class T:
        def __init__(self, i: int) -> None:
            self.id = str(i)
            self.family = type("F", (), {"name": "f", "dirname": "f"})()

    tally = Tally()
    tally.update(ev.TaskPulled(T(1), 10, 0.5))  # type: ignore[arg-type]
    tally.update(ev.RunPlanned(2, 0))
    tally.update(ev.TaskReused(T(1)))  # type: ignore[arg-type]
    tally.update(ev.TaskReused(T(2)))  # type: ignore[arg-type]
    tally.update(ev.RunFinished(0, 2, 0, 0, 0.1))
    assert (tally.pulled, tally.reused, tally.settled) == (1, 1, 2)
    assert summary_lines(tally)[0] == "Done in 0.100s: 0 ran, 1 pulled, 1 reused, 0 failed, 0 skipped."
