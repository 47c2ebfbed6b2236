"""Relocatable caches: a stored value that names a path in its cache (a TaskDirectory()
file, as the README and examples teach) stays valid when the project or the cache moves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest

from checkpoint.store import INLINE_MAX, decode_payload, encode_value

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHECKPOINT = Path(sys.executable).with_name("checkpoint")


def cli(cwd: Path, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `checkpoint` command in ``cwd`` (its cache: ``cache``, else the
    default one next to the taskfile)."""
    env = {k: v for k, v in os.environ.items() if k != "CP_CACHE_DIR"}
    env["NO_COLOR"] = "1"
    if cache is not None:
        env["CP_CACHE_DIR"] = str(cache)
    proc = subprocess.run([str(CHECKPOINT), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run_json(cwd: Path, target: str, cache: Path | None = None) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cli(cwd, "run", target, "--json", cache=cache).stdout)
    return out


def ml_project(where: Path) -> Path:
    where.mkdir()
    shutil.copy(EXAMPLES / "ml_pipeline.py", where / "taskfile.py")
    return where


def test_moving_the_project_keeps_every_result_of_the_ml_pipeline(tmp_path: Path) -> None:
    """After `mv proj proj2`, clearing train and running main should re-run exactly train and
    score (their data directories are found where the cache is now), nothing upstream."""
    proj = ml_project(tmp_path / "proj")
    first = run_json(proj, "main")
    assert first["ran"] == 16
    moved = tmp_path / "proj2"
    proj.rename(moved)
    assert run_json(moved, "main")["ran"] == 0  # a move alone recomputes nothing
    cli(moved, "clear", "train", "-y")
    ls = cli(moved, "ls", "main").stdout
    datasets = [line for line in ls.splitlines() if line.startswith("make_dataset(")]
    assert len(datasets) == 5 and all(" fresh " in line for line in datasets), ls
    again = run_json(moved, "main")
    assert again["ok"] and again["ran"] == 10, again  # 5 train + 5 score; main kept
    assert again["targets"][0]["value"] == first["targets"][0]["value"]
    # A stored path names the cache where it is now, in every way of reading it.
    for value in (run_json(moved, "make_dataset(3)")["targets"][0]["value"],
                  json.loads(cli(moved, "cache", "show", "--json", "make_dataset(3)").stdout)):
        assert value.startswith(str(moved / ".cache" / "checkpoint")), value
        assert (Path(value) / "train.csv").is_file()


def test_a_copy_of_the_cache_works_where_it_is(tmp_path: Path) -> None:
    """CP_CACHE_DIR pointing at a copy of the cache (the original deleted) should reuse every
    result and rebuild a cleared one from the copy's data directories."""
    proj = ml_project(tmp_path / "proj")
    first = run_json(proj, "main", cache=tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    copy = tmp_path / "b"
    assert run_json(proj, "main", cache=copy)["ran"] == 0
    cli(proj, "clear", "train", "-y", cache=copy)
    again = run_json(proj, "main", cache=copy)
    assert again["ran"] == 10 and again["targets"][0]["value"] == first["targets"][0]["value"]
    assert not (tmp_path / "a").exists()


@dataclass
class Saved:
    path: str
    note: str


SOURCE = """
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from checkpoint import TaskDirectory, requires, task


@dataclass
class Saved:
    path: str
    note: str


@task(compress_level={level})
def fit(n: int):
    @requires(TaskDirectory())
    def __(path: Path):
        (path / "model.txt").write_text(str(n))
        root = str(path.parents[2])  # the store root
        return {{
            "model": str(path / "model.txt"),
            "paths": [path, PurePosixPath(path / "model.txt")],
            "saved": Saved(str(path / "model.txt"), "checkpoint"),
            "tuple": (str(path),),
            "root": root,
            "lookalike": root + "2/x",
            "elsewhere": "/elsewhere/checkpoint/x",
            "padding": ["checkpoint"] * {pad},
        }}
    return __


@task
def use(n: int):
    @requires(fit(n))
    def __(value):
        assert Path(value["model"]).read_text() == str(n)
        return value
    return __
"""


@pytest.mark.parametrize(("level", "pad"), [(0, 0), (3, 0), (0, INLINE_MAX)],
                         ids=["inline", "compressed", "blob"])
def test_paths_in_a_value_follow_the_cache_at_any_depth(
    tmp_path: Path, make_module: Callable[[str, str], ModuleType], level: int, pad: int
) -> None:
    """str and pathlib paths under the store root, in lists, tuples, dicts and dataclasses,
    should come back under the store root where the cache is now; other text stays as it is.
    (Small values stored inline, compressed, and large ones in their own file.)"""
    mod = make_module("relocmod", SOURCE.format(level=level, pad=pad))
    old, new = tmp_path / "old", tmp_path / "new"
    mod.use(1).run(cache_dir=str(old), executor="process", max_workers=1)
    assert bool(list((old / "checkpoint" / "relocmod.fit" / "blobs").glob("*.bin"))) == bool(pad)
    shutil.move(old, new)
    value = mod.use(1).run(cache_dir=str(new), executor="process", max_workers=1)  # reused
    data = new / "checkpoint" / "relocmod.fit" / "data" / mod.fit(1).id
    assert value["model"] == str(data / "model.txt")
    assert value["paths"] == [data, PurePosixPath(data / "model.txt")]
    assert type(value["paths"][0]) is type(data)
    assert type(value["paths"][1]) is PurePosixPath
    assert value["saved"].path == str(data / "model.txt") and value["saved"].note == "checkpoint"
    assert value["tuple"] == (str(data),)
    assert value["root"] == str(new / "checkpoint")
    assert value["lookalike"] == str(old / "checkpoint") + "2/x"
    assert value["elsewhere"] == "/elsewhere/checkpoint/x"
    # A dependent computed where the cache is now gets the new paths, and stores them so.
    mod.use.clear(cache_dir=str(new))
    assert mod.use(1).run(cache_dir=str(new), executor="process", max_workers=1) == value
    shutil.move(new, old)
    moved_back = mod.use(1).run(cache_dir=str(old), executor="inline")
    assert moved_back["model"] == str(old / "checkpoint" / "relocmod.fit" / "data"
                                      / mod.fit(1).id / "model.txt")


def test_a_value_without_cache_paths_is_stored_as_before() -> None:
    """The relocation costs nothing in the stored bytes when there is nothing to relocate:
    the payload is the plain pickle, even when the value mentions 'checkpoint'."""
    root = "/some/cache/checkpoint"
    for value in ([1, 2.5, "x"], "checkpoint", {"a": "/other/checkpoint/x"}, Saved("a", "b")):
        for level in (0, 3):
            assert encode_value(value, level, root) == encode_value(value, level)
    payload = encode_value(["/some/cache/checkpoint/f/data/x"], 0, root)
    assert payload != encode_value(["/some/cache/checkpoint/f/data/x"], 0)
    assert decode_payload(payload, False, "/moved/checkpoint") == ["/moved/checkpoint/f/data/x"]


PATHS_TASKFILE = """
from dataclasses import dataclass
from pathlib import Path

from checkpoint import task

HERE = Path(__file__).parent
DATA = HERE / {name!r}
NAMES = [str(HERE / "a.txt"), HERE]
OUTSIDE = Path("/elsewhere/b.txt")


@dataclass
class Cfg:
    where: Path


CFG = Cfg(HERE / "c.txt")


@task
def load():
    def __():
        return [DATA.read_text(), NAMES[0], str(OUTSIDE), str(CFG.where)]
    return __
"""


def test_moving_the_project_leaves_paths_in_its_globals_unchanged(tmp_path: Path) -> None:
    """Module-level paths inside the project (HERE / "data.txt", in lists and dataclasses too)
    should count relative to it: a moved project is fresh, an edited path still counts."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "taskfile.py").write_text(PATHS_TASKFILE.format(name="data.txt"))
    (proj / "data.txt").write_text("hi")
    assert run_json(proj, "load")["ran"] == 1
    moved = tmp_path / "moved"
    proj.rename(moved)
    assert " fresh " in cli(moved, "ls", "load").stdout
    value = run_json(moved, "load")
    assert value["ran"] == 0
    (moved / "taskfile.py").write_text(PATHS_TASKFILE.format(name="data2.txt"))
    (moved / "data2.txt").write_text("hi")
    assert "code changed" in cli(moved, "ls", "load").stdout


def _write_model(path: Path) -> str:
    (path / "model.txt").write_text("fitted")
    return str(path / "model.txt")


def _read_model(model: str) -> str:
    return Path(model).read_text() + " at " + model


def test_a_dask_worker_that_mounts_the_cache_elsewhere_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose CP_CACHE_DIR names the cache at another path than the coordinator's
    should write into the data directory there, return a path that means the coordinator's
    cache, and read prerequisites' paths and value files where it sees them."""
    import cloudpickle

    from checkpoint._dask import probe_marker, run_dask_batch
    from checkpoint._worker import Done, Ref, WorkItem
    from checkpoint.store import BlobRef

    coordinator = "/nonexistent-coordinator/.cache/checkpoint"
    mount = tmp_path / "mnt"
    local = mount / "checkpoint"
    (local / "fam" / "data" / "abc").mkdir(parents=True)
    (local / "FORMAT").write_text("1")
    (local / ".dask-check-tok").write_text("tok")
    monkeypatch.setenv("CP_CACHE_DIR", str(mount))
    assert probe_marker(f"{coordinator}/.dask-check-tok", "tok")[1] == ""

    def item(tid: str, fn: Any, template: list[Any]) -> WorkItem:
        work = WorkItem.running(tid, fn, template, 0)
        work.root, work.blob_dir = coordinator, f"{coordinator}/fam/blobs"
        return work

    writes = item("abc", _write_model, [Path(f"{coordinator}/fam/data/abc")])
    [out] = run_dask_batch(cloudpickle.dumps(([writes], {})))
    assert isinstance(out, Done), out
    assert (local / "fam" / "data" / "abc" / "model.txt").read_text() == "fitted"
    model = decode_payload(out.payload, False, coordinator)
    assert model == f"{coordinator}/fam/data/abc/model.txt"  # as the coordinator sees it

    # The value inline, and the same value in a value file the coordinator names.
    (local / "fam" / "blobs").mkdir()
    blob = local / "fam" / "blobs" / "big.0123456789ab.bin"
    assert out.payload is not None
    blob.write_bytes(out.payload)
    ref = BlobRef(f"{coordinator}/fam/blobs/{blob.name}", out.size, out.crc, False)
    reads = [item("i1", _read_model, [Ref("abc")]), item("i2", _read_model, [Ref("big")])]
    outs = run_dask_batch(cloudpickle.dumps((reads, {"abc": (out.payload, False), "big": ref})))
    for read in outs:
        assert isinstance(read, Done), read
        assert decode_payload(read.payload, False, coordinator) == (
            f"fitted at {local}/fam/data/abc/model.txt")


REMOTE_SOURCE = """
from pathlib import Path

from checkpoint import TaskDirectory, requires, task


@task
def fit():
    @requires(TaskDirectory())
    def __(path: Path) -> str:
        (path / "model.txt").write_text("fitted")
        return str(path / "model.txt")
    return __


@task
def use():
    @requires(fit())
    def __(model: str) -> str:
        return Path(model).read_text()
    return __
"""


def test_a_path_pulled_from_a_remote_names_the_cache_it_was_pulled_into(
    tmp_path: Path, make_module: Callable[[str, str], ModuleType],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A TaskDirectory() path computed on one machine and pulled into another cache should
    name the data directory there: a dependent computed there reads it."""
    pytest.importorskip("fsspec")
    from checkpoint import run
    from checkpoint.remote import push

    monkeypatch.setenv("CP_REMOTE_KEY", "k" * 64)
    mod = make_module("relocremote", REMOTE_SOURCE)
    url = (tmp_path / "remote").as_uri()
    run([mod.fit()], cache_dir=tmp_path / "a", executor="inline")
    push([mod.fit()], url, cache_dir=tmp_path / "a")
    shutil.rmtree(tmp_path / "a")
    second = run([mod.use()], cache_dir=tmp_path / "b", remote=url, executor="inline")
    assert [t.expression() for t in second.pulled] == ["fit()"]
    assert second.values[mod.use().id] == "fitted"
    model = run([mod.fit()], cache_dir=tmp_path / "b", remote=False).values[mod.fit().id]
    assert model.startswith(str(tmp_path / "b" / "checkpoint"))


def test_large_values_are_told_apart_without_a_search_when_their_containers_say() -> None:
    """A large value whose lists and dicts hold only numbers, arrays and text is decided by a
    short walk (a path in it found, no path left as is); other large values are searched."""
    np = pytest.importorskip("numpy")
    root = "/some/cache/checkpoint"
    weights = np.arange(100_000, dtype=np.float64)
    plain = {"w": weights, "names": ["checkpoint", "a"], "n": (1, 2.5, None)}
    assert encode_value(plain, 0, root) == encode_value(plain, 0)
    with_path = {"w": weights, "model": [root + "/f/data/x/m.pkl"]}
    moved = decode_payload(encode_value(with_path, 0, root), False, "/moved/checkpoint")
    assert moved["model"] == ["/moved/checkpoint/f/data/x/m.pkl"]
    assert (moved["w"] == weights).all()
    saved = [Saved(root + "/f/data/x/m.pkl", "n")] + [weights]  # an object: searched
    assert decode_payload(encode_value(saved, 0, root), False, "/m/checkpoint")[0].path == (
        "/m/checkpoint/f/data/x/m.pkl")


def _stored_and_moved(tmp_path: Path, value: Any) -> Any:
    """``value`` encoded as a worker stores it (streamed to its file when large), read back
    after the store root moved."""
    from checkpoint._codec import BlobRef, encode_result

    old, new = tmp_path / "old" / "checkpoint", tmp_path / "new" / "checkpoint"
    blobs = old / "fam" / "blobs"
    out = encode_result(value, 0, str(blobs), "t" * 32, str(old))
    if out.payload is not None:
        return decode_payload(out.payload, False, str(new))
    shutil.move(tmp_path / "old", tmp_path / "new")
    return BlobRef(str(new / "fam" / "blobs" / out.blob), out.size, out.crc, False).load()


@pytest.mark.parametrize("kind", ["str", "categorical", "object"])
def test_a_large_pandas_series_of_paths_follows_the_cache(tmp_path: Path, kind: str) -> None:
    """A large pandas Series (text, categorical) of paths into the cache is not streamed to
    its file as it is (its dtype does not say it holds no path): its paths are relocated
    (adv2 repro 02)."""
    pd = pytest.importorskip("pandas")
    paths = [str(tmp_path / "old" / "checkpoint" / "fam" / "data" / f"s{i}.txt") for i in range(3000)]
    series = {"str": lambda: pd.Series(paths), "object": lambda: pd.Series(paths, dtype=object),
              "categorical": lambda: pd.Series(pd.Categorical(paths))}[kind]()
    moved = _stored_and_moved(tmp_path, series)
    assert list(moved.astype(str)) == [p.replace("/old/", "/new/") for p in paths]


def test_a_numpy_array_of_paths_follows_the_cache(tmp_path: Path) -> None:
    """A NumPy array of text (fixed-width unicode, whose bytes do not spell the paths out as
    UTF-8) holding paths into the cache: relocated, small or large."""
    np = pytest.importorskip("numpy")
    for n in (3, 3000):
        paths = np.array([str(tmp_path / "old" / "checkpoint" / "fam" / f"s{i}") for i in range(n)])
        moved = _stored_and_moved(tmp_path, {"paths": paths.reshape(-1, 1)})["paths"]
        assert moved.shape == (n, 1)
        assert list(moved[:, 0]) == [p.replace("/old/", "/new/") for p in paths]
        shutil.rmtree(tmp_path / "new", ignore_errors=True)


def test_large_numeric_values_are_still_streamed(tmp_path: Path) -> None:
    """Large values that cannot hold a path (bytes, arrays and DataFrames of numbers) still go
    straight to their file."""
    np = pytest.importorskip("numpy")
    pd = pytest.importorskip("pandas")
    from checkpoint._codec import encode_result

    root = str(tmp_path / "checkpoint")
    for value in (np.zeros(100_000), pd.DataFrame({"a": np.zeros(100_000)}),
                  pd.Series(np.zeros(100_000))):
        assert encode_result(value, 0, str(tmp_path / "blobs"), "t" * 32, root).blob


# --- adv5 08: an absolute path into the project in a value ---------------------------------

PROJECT08 = """
from checkpoint import task, requires, File, Product

@task
def make():
    @requires(File("data.txt"))
    @requires(Product("out/data.txt"))
    def __(src, out):
        out.write_text(src.read_text())
        return str(out.resolve())      # where the data is
    return __

@task
def report(title: str):
    @requires(make())
    def __(path):
        return title + ": " + str(sum(int(x) for x in open(path).read().split()))
    return __
"""


def test_a_path_into_the_project_follows_a_copy_of_the_project(tmp_path: Path) -> None:
    """`make()` returns the absolute path of its Product; the project is copied with its
    cache (`cp -a proj exp`) and work goes on in proj. A reader run in the copy must read the
    copy's file, not the original's (which now holds other data)."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "taskfile.py").write_text(PROJECT08)
    (proj / "data.txt").write_text("1 2 3\n")
    assert run_json(proj, "report('v1')")["targets"][0]["value"] == "v1: 6"
    exp = tmp_path / "exp"
    shutil.copytree(proj, exp, symlinks=True)
    (proj / "data.txt").write_text("100\n")
    assert run_json(proj, "report('v1')")["targets"][0]["value"] == "v1: 100"
    out = run_json(exp, "report('v2')")
    assert out["targets"][0]["value"] == "v2: 6", out
    assert out["ran"] == 1  # make() is fresh in the copy: its file is the copy's
    made = json.loads(cli(exp, "cache", "show", "--json", "make()").stdout)
    assert made == str(exp / "out" / "data.txt")


def test_project_paths_are_stored_relative_to_the_project_that_holds_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths under the working directory, when the cache is inside it, come back under the
    project that holds the cache where it is now; text that merely mentions such a path,
    and values stored with a cache outside the project, are kept as they are."""
    proj, moved = tmp_path / "proj", tmp_path / "moved"
    proj.mkdir()
    monkeypatch.chdir(proj)
    root = str(proj / ".cache" / "checkpoint")
    value = {"file": str(proj / "out" / "x.csv"), "dir": proj / "out", "self": str(proj),
             "message": f"saved to {proj}/out/x.csv", "other": str(tmp_path / "projx" / "y")}
    payload = encode_value(value, 0, root)
    assert decode_payload(payload, False, root) == value
    moved.mkdir()
    monkeypatch.chdir(moved)  # the project moved, and is used where it is now
    back = decode_payload(payload, False, str(moved / ".cache" / "checkpoint"))
    assert back == {"file": str(moved / "out" / "x.csv"), "dir": moved / "out", "self": str(moved),
                    "message": value["message"], "other": value["other"]}
    # A cache found elsewhere than in a project (CP_CACHE_DIR at a copy): the paths as stored.
    assert decode_payload(payload, False, str(tmp_path / "copy" / "checkpoint")) == value
    # A cache outside the project: nothing to relocate, the plain pickle.
    outside = str(tmp_path / "shared" / "checkpoint")
    assert encode_value(value, 0, outside) == encode_value(value, 0)
    assert encode_value(b"x" * 1000 + str(proj).encode(), 0, root) == encode_value(b"x" * 1000 + str(proj).encode(), 0)


# --- adv6 01: a value read back is the value stored, byte for byte ---------------------------

def _round_trip(value: Any, root: str, read_root: str | None = None) -> Any:
    return decode_payload(encode_value(value, 0, root), False, read_root or root)


def test_paths_come_back_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the root itself may change when the cache moved: trailing and double slashes,
    `.` and a URL after the path are kept; a sibling directory, `..`, bytes and text that
    merely contains the root are not paths under it."""
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    root = str(proj / ".cache" / "checkpoint")
    p, r = str(proj), root
    texts = [p, p + "/", p + "//", p + "/a/", p + "//a//b", p + "/./a", p + "/a/.",
             f"{p}/site/index.html is served at http://localhost:8000/", p + "/a\n" + p + "//b",
             r, r + "/", r + "//x/", f"{r}/f/data/x/model.pt -> s3://bucket//x",
             p + "2", p + "2/x", p + "/../x", p + "/a/../../x", r + "/../x", "x" + p, f"see {p}//"]
    value = [*texts, [PurePosixPath(t) for t in texts], [t.encode() for t in texts], tuple(texts)]
    assert _round_trip(value, root) == value
    for t in texts:
        assert _round_trip(t, root) == t

    # Moved: the root is replaced, the rest kept as it is; what is not under it is untouched.
    payload = encode_value(texts, 0, root)
    moved = tmp_path / "moved"
    moved.mkdir()
    monkeypatch.chdir(moved)
    new_root = str(moved / ".cache" / "checkpoint")
    expected = [str(moved) + t[len(p):] if (t == p or t.startswith(p + "/")) and
                "/../" not in t[len(p):] + "/" else t for t in texts]
    assert decode_payload(payload, False, new_root) == expected
    assert expected[1] == str(moved) + "/" and expected[9] == new_root  # (checked as meant)


def test_random_texts_around_the_root_come_back_as_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A property: any text made of pieces around the project root and the store root,
    stored and read back in place, is the same text."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    root = str(proj / ".cache" / "checkpoint")
    pieces = st.sampled_from([str(proj), root, "/", "//", ".", "..", "a", " ", ":", "2",
                              "http://x/", "\n", "\x00", "é", "\\"])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(pieces, max_size=8).map("".join), st.booleans())
    def check(text: str, as_path: bool) -> None:
        value = PurePosixPath(text) if as_path and text and "\x00" not in text else text
        assert _round_trip([value, {value: value}], root) == [value, {value: value}]

    check()


# --- adv6 06: a copy of the cache still named .cache -----------------------------------------

def test_a_copy_of_the_cache_named_dotcache_gives_project_paths_as_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the cache used from the project (CP_CACHE_DIR) is not in a project, whatever
    its name: the project's paths come back as stored, not under the copy's parent."""
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    value = str(proj / "data.csv")
    payload = encode_value(value, 0, str(proj / ".cache" / "checkpoint"))
    for copy in ("backup/.cache", "backup/mycache", "other/proj/.cache"):
        assert decode_payload(payload, False, str(tmp_path / copy / "checkpoint")) == value
    # The project itself, moved with its cache and used where it is now: its paths follow.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp").mkdir()
    monkeypatch.chdir(tmp_path / "exp")
    assert decode_payload(payload, False, str(tmp_path / "exp" / ".cache" / "checkpoint")) == (
        str(tmp_path / "exp" / "data.csv"))


def test_references_written_before_are_still_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Payloads stored by earlier versions (parts joined with `/`) load as they did."""
    import io
    import pickle

    from checkpoint import _relocate

    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    root = str(proj / ".cache" / "checkpoint")
    old = {str(proj / "a" / "b"): (_relocate._PROJECT, "a/b", None, ".cache/checkpoint",
                                    tuple(str(proj).split(os.sep))),
           root + "/f/x": (_relocate._MARK, "f/x", None), root: (_relocate._MARK, "", PurePosixPath)}

    class Old(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return old.get(obj) if type(obj) is str else None

    buffer = io.BytesIO()
    buffer.write(_relocate.PREFIX)
    Old(buffer, protocol=5).dump(list(old))
    assert decode_payload(buffer.getvalue(), False, root) == [
        str(proj / "a" / "b"), root + "/f/x", PurePosixPath(root)]
    assert decode_payload(buffer.getvalue(), False, "/else/checkpoint") == [
        str(proj / "a" / "b"), "/else/checkpoint/f/x", PurePosixPath("/else/checkpoint")]
