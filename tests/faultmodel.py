"""A model-based fault test of checkpoint: random DAGs, random edits, random faults.

From a seed, :func:`generate` makes a DAG of 20-200 tasks in several families (fan-in and
fan-out, values from a few bytes to 150 kB, so that some are stored inline in the index and
some as blob files; some families write files into their ``TaskDirectory()``; some have
``@task(retries=N)`` or ``compress_level``), and :func:`render` writes it as a taskfile.
:func:`reference` computes every task's value in memory, without checkpoint, from the same
code (:data:`SHARED` is pasted into the taskfile and executed here).

A :class:`Harness` then takes random steps. Each step makes a few changes (edit a family's
code, which changes its values; ``checkpoint clear`` an entry or a family), may inject one
fault, and runs the real ``checkpoint`` console script in a subprocess (process, thread or
inline executor, ``-j 2``). Fault kinds (:data:`KINDS`), each can be enabled on its own:

``retry``              a task fails once (a marker file), with retries: the run succeeds
``fail``               a task fails once, without retries: the run fails, the next resumes
``die``                a task's worker process dies (``os._exit(1)``) once
``damage-blob``        one value file flipped, truncated or deleted
``damage-many``        several value files damaged, two swapped, or ``blobs/`` deleted
``damage-index``       an index row's payload flipped, a row garbled or deleted, the index replaced by garbage
``concurrent``         a second run joins while the first runs (held in a task until then)
``concurrent-race``    two runs started a random 0-0.4 s apart
``concurrent-damage``  three runs at once, while the first recomputes a damaged prerequisite
``clear-during``       ``checkpoint clear`` of an entry or family while a run is in progress
``force-during``       ``run --force`` of a ``TaskDirectory()`` task while another run reads its files
``kill``               SIGINT, SIGTERM or SIGKILL of a run at a random moment

After every step (:meth:`Harness.check`): each value a run printed equals the reference;
``checkpoint ls main --json`` lists the tasks the model expects to be stale (exactly, when
the step left the cache in a predictable state; otherwise within an upper bound), every
value ``checkpoint cache show --json`` returns for a fresh task equals the reference (a
damaged entry that no run needed must be reported as damaged, never returned), every other
entry passes its size and CRC-32 check, every data directory holds the files its value
describes, no run exceeded its time bound or looped, no output says "Internal error", and
executions (each task appends a line to an ``O_APPEND`` log) stay between two bounds: at
least the tasks whose stored value is missing, damaged or out of date (and the damaged
values they read), at most the tasks the planner lists (early cutoff may keep some) and
those damaged values; each once per run (a worker death may repeat the tasks lost with the
pool, a clear during the run the cleared tasks), once between runs that overlap.

A failure raises :class:`ModelFailure` with the seed, the DAG's size and every step taken,
so it can be replayed (see tests/test_model_faults.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = (
    "retry", "fail", "die", "damage-blob", "damage-many", "damage-index", "concurrent",
    "concurrent-race", "concurrent-damage", "clear-during", "force-during", "kill",
)
EXECUTORS = ("process", "thread", "inline")
MAIN = "main()"
CORE = 60
"""Length of a data-directory task's own value (its files hold the bulk)."""

# The value functions, pasted into the taskfile and executed here for the reference.
SHARED = '''
def _sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _make(fam, i, version, inputs, size):
    """A task's value: its name, code version and a digest of its inputs, padded to size."""
    digest = _sha("|".join([fam, str(i), str(version), *inputs]))
    head = f"{fam}({i})v{version}:{digest[:16]}"
    if size <= len(head):
        return head
    blocks = [head, ":"]
    n = len(head) + 1
    k = 0
    while n < size:  # hex of a hash chain: does not compress to nothing
        blocks.append(_sha(f"{digest}{k}"))
        n += 64
        k += 1
    return "".join(blocks)[:size]


def _parts(core, count, size):
    """The files a data-directory task writes: {name: text}."""
    return {f"part{j}.txt": _make("part", j, core[:40], [core], size) for j in range(count)}


def _parts_digest(parts):
    return _sha("".join(f"{name}={_sha(parts[name])};" for name in sorted(parts)))


def _input(value, read):
    """What a task takes from a prerequisite's value: its digest; for a data-directory
    task's value (``...@path``), the digest of the value and of the files read from path."""
    if "@" in value:
        head, path = value.rsplit("@", 1)
        return _sha(head) + ":" + read(path)
    return _sha(value)
'''

RUNTIME = '''
def _ctl(name):
    return os.path.join(os.environ.get("CP_MODEL_CTL", "."), name)


def _note(text):
    """One line on the O_APPEND execution log: what ran (or which fault fired), where."""
    fd = os.open(_ctl("exec.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{text} {os.getpid()} {os.environ.get('CP_MODEL_RUN', '-')}\\n".encode())
    finally:
        os.close(fd)


def _take(name):
    """Whether a one-shot fault marker was there (this process took it)."""
    try:
        os.unlink(_ctl(name))
    except FileNotFoundError:
        return False
    return True


def _hold(kind, tag):
    """If asked to, say so (at-KIND-TAG holds our pid) and wait for go-KIND-TAG."""
    if not _take(f"{kind}-{tag}"):
        return
    _note(f"!{kind} {tag}")
    tmp = _ctl(f".at-{kind}-{tag}")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, _ctl(f"at-{kind}-{tag}"))
    deadline = time.monotonic() + 120
    while not os.path.exists(_ctl(f"go-{kind}-{tag}")) and time.monotonic() < deadline:
        time.sleep(0.005)


def _faults(tag):
    if _take(f"fail-{tag}"):
        _note(f"!fail {tag}")
        raise RuntimeError(f"injected transient failure of {tag}")
    if _take(f"die-{tag}"):
        _note(f"!die {tag}")
        os._exit(1)
    _hold("hold", tag)


def _read(path, tag):
    """The digest of the files in a data directory (optionally holding before it looks)."""
    if tag:
        _hold("holdread", tag)
    try:
        names = sorted(os.listdir(path))
    except OSError:
        names = []
    parts = {}
    for name in names:
        try:
            with open(os.path.join(path, name)) as f:
                parts[name] = f.read()
        except OSError:
            parts[name] = "<unreadable>"
    return _parts_digest(parts)


def _tasks(pairs):
    found = globals()
    return [found[fam](i) for fam, i in pairs]


def _plain(fam, i, version, inputs, size):
    tag = fam if i is None else f"{fam}-{i}"
    _faults(tag)
    value = _make(fam, i, version, [_input(v, lambda p: _read(p, tag)) for v in inputs], size)
    _note(f"{fam}({'' if i is None else i}) v{version}")
    return value


def _produce(fam, i, version, inputs, size, path):
    tag = f"{fam}-{i}"
    _faults(tag)
    core = _make(fam, i, version, [_input(v, lambda p: _read(p, tag)) for v in inputs], CORE)
    parts = _parts(core, 2 + i % 2, size)
    _hold("holdwrite", tag)
    for name in sorted(parts):
        with open(os.path.join(path, name), "w") as f:
            f.write(parts[name])
    value = f"{core}|files={_read(path, None)}@{path}"
    _note(f"{fam}({i}) v{version}")
    return value
'''

_REF: dict[str, Any] = {"hashlib": hashlib}
exec(SHARED, _REF)  # noqa: S102 - our own code: the reference uses the taskfile's functions


# --- the DAG -----------------------------------------------------------------------------


@dataclass
class Family:
    """One generated task family ``name(i)`` for ``i`` in ``range(n)``."""

    name: str
    deps: list[tuple[tuple[str, int], ...]]
    """The prerequisites of each task, as ``(family, i)``."""
    sizes: list[int]
    """Each task's value size (for a data-directory family: the size of each file)."""
    directory: bool = False
    """Whether the family writes files into its TaskDirectory() (and returns their digest)."""
    retries: int = 0
    compress: int = 0

    @property
    def n(self) -> int:
        return len(self.deps)


@dataclass
class Spec:
    """A generated DAG: families in topological order, then ``main()``."""

    seed: int
    families: list[Family]
    main_deps: tuple[tuple[str, int], ...]
    deps: dict[str, list[str]] = field(init=False)
    """Prerequisites of each task, by expression (``f2(3)``, ``main()``)."""
    dependents: dict[str, list[str]] = field(init=False)
    family_of: dict[str, Family] = field(init=False)

    def __post_init__(self) -> None:
        self.deps, self.family_of = {}, {}
        for fam in self.families:
            for i, pairs in enumerate(fam.deps):
                self.deps[f"{fam.name}({i})"] = [f"{f}({j})" for f, j in pairs]
                self.family_of[f"{fam.name}({i})"] = fam
        self.deps[MAIN] = [f"{f}({j})" for f, j in self.main_deps]
        self.dependents = {expr: [] for expr in self.deps}
        for expr, deps in self.deps.items():
            for dep in deps:
                self.dependents[dep].append(expr)

    @property
    def exprs(self) -> list[str]:
        """Every task, prerequisites first."""
        return list(self.deps)

    def tasks_of(self, family: str) -> list[str]:
        if family == "main":
            return [MAIN]
        fam = next(f for f in self.families if f.name == family)
        return [f"{fam.name}({i})" for i in range(fam.n)]

    def down(self, exprs: Iterable[str]) -> set[str]:
        """The tasks and everything downstream of them."""
        seen: set[str] = set()
        stack = list(exprs)
        while stack:
            expr = stack.pop()
            if expr not in seen:
                seen.add(expr)
                stack.extend(self.dependents[expr])
        return seen

    def is_directory(self, expr: str) -> bool:
        fam = self.family_of.get(expr)
        return fam is not None and fam.directory

    def describe(self) -> str:
        fams = ", ".join(
            f"{f.name}: {f.n}" + (" dir" if f.directory else "") + (f" retries={f.retries}" if f.retries else "")
            + (" compressed" if f.compress else "") for f in self.families
        )
        return f"{len(self.deps)} tasks ({fams}, main)"


def generate(seed: int, min_tasks: int = 20, max_tasks: int = 200) -> Spec:
    """A random DAG of ``min_tasks`` to ``max_tasks`` tasks (``main()`` included)."""
    rng = random.Random(seed)
    total = rng.randint(min_tasks, max_tasks) - 1
    n_fam = rng.randint(4, 7) if total >= 40 else rng.randint(3, 4)
    counts = [2] * n_fam
    for _ in range(total - 2 * n_fam):
        counts[rng.randrange(n_fam)] += 1
    families: list[Family] = []
    for k, count in enumerate(counts):
        big = rng.random() * 0.6  # this family's share of large (blob) values
        directory = k > 0 and rng.random() < 0.3
        deps: list[tuple[tuple[str, int], ...]] = []
        sizes: list[int] = []
        for _ in range(count):
            if k == 0 or rng.random() < 0.08:
                pairs: tuple[tuple[str, int], ...] = ()
            else:  # fan-in from lower families; low indices are shared more (fan-out)
                chosen = {(kk, min(rng.randrange(counts[kk]), rng.randrange(counts[kk])))
                          for kk in (rng.randrange(k) for _ in range(rng.randint(1, 4)))}
                pairs = tuple((f"f{kk}", i) for kk, i in sorted(chosen))
            deps.append(pairs)
            large = rng.random() < big
            sizes.append(rng.randint(20_000, 150_000) if large else rng.randint(10, 3_000))
        families.append(Family(
            f"f{k}", deps, sizes, directory=directory,
            retries=rng.choice((0, 0, 0, 1, 2)), compress=1 if rng.random() < 0.2 else 0,
        ))
    used = {(f, i) for fam in families for pairs in fam.deps for f, i in pairs}
    sinks = [(fam.name, i) for fam in families for i in range(fam.n) if (fam.name, i) not in used]
    extra = [(fam.name, i) for fam in families for i in range(fam.n) if (fam.name, i) in used]
    main_deps = tuple(sorted(set(sinks) | set(rng.sample(extra, min(3, len(extra))))))
    return Spec(seed, families, main_deps)


def render(spec: Spec, versions: dict[str, int]) -> str:
    """The taskfile of a DAG, each family at its code version."""
    out = [
        f'"""Generated by tests/faultmodel.py from seed {spec.seed}: {spec.describe()}."""',
        "",
        "from __future__ import annotations",
        "",
        "import hashlib",
        "import os",
        "import time",
        "from pathlib import Path",
        "",
        "from checkpoint import TaskDirectory, requires, task",
        "",
        f"CORE = {CORE}",
        SHARED,
        RUNTIME,
    ]
    for fam in spec.families:
        upper = fam.name.upper()
        out.append(f"{upper}_DEPS = {fam.deps!r}")
        out.append(f"{upper}_SIZES = {tuple(fam.sizes)!r}")
        options = [f"retries={fam.retries}"] if fam.retries else []
        if fam.compress:
            options.append(f"compress_level={fam.compress}")
        decorator = f"@task({', '.join(options)})" if options else "@task"
        version = versions[fam.name]
        if fam.directory:
            inner = f'''
    @requires(_tasks({upper}_DEPS[i]))
    @requires(TaskDirectory())
    def __(inputs: list[str], path: Path) -> str:
        version = {version}
        return _produce("{fam.name}", i, version, inputs, {upper}_SIZES[i], str(path))'''
        else:
            inner = f'''
    @requires(_tasks({upper}_DEPS[i]))
    def __(inputs: list[str]) -> str:
        version = {version}
        return _plain("{fam.name}", i, version, inputs, {upper}_SIZES[i])'''
        out.append(f'''

{decorator}
def {fam.name}(i: int):
    """Family {fam.name}: {fam.n} tasks."""
{inner}

    return __
''')
    out.append(f'''
MAIN_DEPS = {spec.main_deps!r}


@task
def main():
    """Every sink of the DAG (and a few others)."""

    @requires(_tasks(MAIN_DEPS))
    def __(inputs: list[str]) -> str:
        version = {versions["main"]}
        return _plain("main", None, version, inputs, 80)

    return __
''')
    return "\n".join(out)


def reference(spec: Spec, versions: dict[str, int]) -> dict[str, str]:
    """Every task's value, computed in memory; a data-directory task's without ``@path``."""
    make, parts, digest, take = _REF["_make"], _REF["_parts"], _REF["_parts_digest"], _REF["_input"]
    values: dict[str, str] = {}

    def inputs(expr: str) -> list[str]:
        found = []
        for dep in spec.deps[expr]:
            value = values[dep]
            if spec.is_directory(dep):  # the dependent reads the files the value describes
                files = value.rsplit("|files=", 1)[1]
                found.append(take(value + "@-", lambda _p, files=files: files))
            else:
                found.append(take(value, None))
        return found

    for fam in spec.families:
        for i in range(fam.n):
            expr = f"{fam.name}({i})"
            if fam.directory:
                core = make(fam.name, i, versions[fam.name], inputs(expr), CORE)
                values[expr] = f"{core}|files={digest(parts(core, 2 + i % 2, fam.sizes[i]))}"
            else:
                values[expr] = make(fam.name, i, versions[fam.name], inputs(expr), fam.sizes[i])
    values[MAIN] = make("main", None, versions["main"], inputs(MAIN), 80)
    return values


# --- running the CLI ---------------------------------------------------------------------


def checkpoint_command() -> list[str]:
    """The console script of this environment (``python -m checkpoint`` if there is none)."""
    script = Path(sys.executable).with_name("checkpoint")
    return [str(script)] if script.exists() else [sys.executable, "-m", "checkpoint"]


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored: undo that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


class ModelFailure(AssertionError):
    """A check failed; the message says which, with the seed and the steps so far."""


@dataclass
class Proc:
    """A CLI process of this step."""

    tag: str
    args: list[str]
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    rc: int | None = None

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@dataclass
class Line:
    """One line of the execution log."""

    what: str
    """A task expression, or ``!fail``/``!die``/``!hold``... for a fault that fired."""
    arg: str
    pid: int
    tag: str


# --- the harness -------------------------------------------------------------------------


class Harness:
    """Random steps on one DAG and cache, checked against the model after each.

    Args:
        root: an empty directory (the taskfile, the cache, markers and logs go there).
        seed: picks the DAG and every step.
        kinds: the fault kinds to inject (see :data:`KINDS`).
        executors: the executors runs choose from.
        show_all: check every fresh task with ``cache show`` (else a sample of 8).
        timing: also inject faults at random times (else only at deterministic points:
            while a chosen task runs).
        timeout: seconds a step's processes may take.
    """

    def __init__(
        self, root: Path, seed: int, kinds: Iterable[str], *, min_tasks: int = 20,
        max_tasks: int = 200, executors: Iterable[str] = EXECUTORS, show_all: bool = True,
        timing: bool = True, timeout: float = 120.0, fault_rate: float = 0.7,
    ) -> None:
        self.root = root
        self.seed = seed
        self.kinds = [k for k in KINDS if k in set(kinds)]
        unknown = set(kinds) - set(KINDS)
        assert not unknown, f"unknown fault kinds: {sorted(unknown)}"
        self.executors = list(executors)
        self.show_all = show_all
        self.timing = timing
        self.timeout = timeout
        self.fault_rate = fault_rate
        self.rng = random.Random(f"steps-{seed}")
        self.sample_rng = random.Random(f"checks-{seed}")
        """Picks what the checks sample: the steps do not depend on what the checks find."""
        self.spec = generate(seed, min_tasks, max_tasks)
        self.versions = {f.name: 0 for f in self.spec.families} | {"main": 0}
        self.taskfile = root / "taskfile.py"
        self.cache = root / ".cache"
        self.ctl = root / "ctl"
        self.logs = root / "logs"
        self.ctl.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self._write_taskfile()
        self.ref = reference(self.spec, self.versions)
        self.dirty: set[str] = set(self.spec.exprs)
        """Tasks the planner must list as needing a run (closed downstream)."""
        self.damaged: set[str] = set()
        """Entries whose stored value was damaged (no planner can see it)."""
        self.history: list[str] = []
        self.counts: Counter[str] = Counter()
        self.nruns = 0
        self.log_pos = 0
        self.step_lines: list[Line] = []
        """The execution log lines read during the current step."""
        self.fell_back = False
        """Whether the current step's fault found no target (a plain run instead)."""

    # --- replay information ----------------------------------------------------------

    def fail(self, message: str) -> ModelFailure:
        steps = "\n".join(f"  {line}" for line in self.history)
        return ModelFailure(
            f"{message}\n\nseed {self.seed}, fault kinds {','.join(self.kinds) or 'none'}; "
            f"DAG: {self.spec.describe()}\nsteps (the last one failed):\n{steps}\n"
            f"files: {self.root} (taskfile.py, ctl/exec.log, logs/)"
        )

    def note(self, text: str) -> None:
        self.history[-1] += "; " + text

    # --- the model's changes --------------------------------------------------------------

    def _write_taskfile(self) -> None:
        tmp = self.taskfile.with_suffix(".tmp")
        tmp.write_text(render(self.spec, self.versions))
        os.replace(tmp, self.taskfile)

    def edit(self, family: str) -> None:
        """A code change in a family: its values change, it and its downstream are stale."""
        self.versions[family] += 1
        self._write_taskfile()
        self.ref = reference(self.spec, self.versions)
        self.dirty |= self.spec.down(self.spec.tasks_of(family))
        self.note(f"edit {family} -> v{self.versions[family]}")
        self.counts["edits"] += 1

    def clear(self, target: str, during: bool = False) -> set[str]:
        """``checkpoint clear`` of an entry or family (in this process, between runs)."""
        gone = {target} if "(" in target else set(self.spec.tasks_of(target))
        if not during:
            code, _, err = self.invoke(["clear", "-y", target])
            if code != 0:
                raise self.fail(f"checkpoint clear {target} exited {code}:\n{err}")
            self.dirty |= self.spec.down(gone)
            self.damaged -= gone
            self.note(f"clear {target}")
            self.counts["clears"] += 1
        return gone

    # --- the store, read directly (for damage and for stamps) ----------------------------

    def entries(self) -> dict[str, tuple[str, str, Any]]:
        """``{expr: (family dir, task id, Meta)}`` of every readable entry (read-only SQL)."""
        from checkpoint.store import Meta

        found: dict[str, tuple[str, str, Any]] = {}
        root = self.cache / "checkpoint"
        if not root.is_dir():
            return found
        for db in sorted(root.glob("*/cache.db")):
            family = db.parent.name
            try:
                con = sqlite3.connect(db, timeout=30)
                try:
                    rows = con.execute(
                        "SELECT key, mode, value, filename FROM Cache WHERE raw = 1 "
                        "AND key >= 'e:' AND key < 'e;'").fetchall()
                finally:
                    con.close()
            except sqlite3.DatabaseError:
                continue
            for key, mode, value, filename in rows:
                try:
                    entry = bytes(value) if mode == 1 else (db.parent / filename).read_bytes()
                    meta = Meta.from_entry(entry)
                except (OSError, ValueError, TypeError):
                    continue
                found[meta.expr] = (family, key[2:], meta)
        return found

    def _sql(self, family: str, statement: str, params: tuple[Any, ...]) -> None:
        con = sqlite3.connect(self.cache / "checkpoint" / family / "cache.db", timeout=30)
        try:
            with con:
                con.execute(statement, params)
        finally:
            con.close()

    def scan(self) -> dict[str, tuple[bool, Any]]:
        """``{expr: (intact, value)}`` of every readable entry: ``intact`` when its payload
        (inline, or its value file) has the recorded size and CRC-32 and decodes."""
        from checkpoint.store import decode_payload

        found: dict[str, tuple[bool, Any]] = {}
        for expr, (family, _, meta) in self.entries().items():
            payload = meta.inline
            if meta.blob:
                try:
                    payload = (self.cache / "checkpoint" / family / "blobs" / meta.blob).read_bytes()
                except OSError:
                    payload = None
            intact, value = False, None
            if payload is not None and meta.checks(payload):
                with contextlib.suppress(Exception):
                    value, intact = decode_payload(payload, meta.compressed), True
            found[expr] = (intact, value)
        return found

    def _refresh_damaged(self) -> None:
        """Forget damaged entries that were replaced or removed; fail if an entry is damaged
        that no fault damaged (the engine stored a corrupt entry)."""
        found = self.scan()
        corrupt = {e for e, (intact, _) in found.items() if not intact and e in self.spec.deps}
        if corrupt - self.damaged:
            raise self.fail(f"stored entries fail their checks that no fault damaged: "
                            f"{sorted(corrupt - self.damaged)}")
        self.damaged &= corrupt

    def must_run(self, targets: Iterable[str] = (MAIN,)) -> set[str]:
        """What a run must compute, whatever it may skip: the tasks whose stored value is
        missing or not the reference value, and the damaged entries that a target or such
        a task reads (early cutoff may spare the others the planner lists)."""
        found = self.scan()
        must = set()
        for expr in self.spec.exprs:
            intact, value = found.get(expr, (False, None))
            if expr not in self.damaged and (not intact or not self._equal(expr, value)):
                must.add(expr)
        targets = set(targets)
        changed = True
        while changed:
            changed = False
            for expr in self.damaged - must:
                if expr in targets or any(d in must for d in self.spec.dependents[expr]):
                    must.add(expr)
                    changed = True
        return must

    def _equal(self, expr: str, value: Any) -> bool:
        if isinstance(value, str) and self.spec.is_directory(expr):
            value = value.rsplit("@", 1)[0]
        return bool(value == self.ref[expr])

    # --- damage ------------------------------------------------------------------------

    def _damage_pick(self, candidates: list[str], wanted: int = 1) -> list[str]:
        """Prefer entries that a stale dependent will read (that is when damage matters)."""
        read = [e for e in candidates if any(d in self.dirty for d in self.spec.dependents[e])]
        pool = read if read and self.rng.random() < 0.8 else candidates
        return self.rng.sample(pool, min(wanted, len(pool)))

    def damage(self, kind: str) -> bool:
        """Damage stored values or index rows; False if there is nothing to damage."""
        rng = self.rng
        entries = self.entries()
        blob_dir = self.cache / "checkpoint"

        def path(expr: str) -> Path:
            family, _, meta = entries[expr]
            return blob_dir / family / "blobs" / meta.blob

        blobs = sorted(e for e, (_, _, m) in entries.items()
                       if m.blob and e in self.spec.deps and path(e).exists())
        inline = sorted(e for e, (_, _, m) in entries.items() if not m.blob and e in self.spec.deps)

        def mark(exprs: Iterable[str]) -> None:
            self.damaged.update(exprs)

        if kind == "damage-blob":
            if not blobs:
                return False
            (expr,) = self._damage_pick(blobs)
            how = rng.choice(("flip", "truncate", "delete"))
            _damage_file(path(expr), how, rng)
            mark([expr])
            self.note(f"damage {how} value file of {expr}")
            self.counts[f"value files damaged ({how})"] += 1
            return True
        if kind in ("damage-many", "concurrent-damage"):
            if kind == "concurrent-damage":  # one that the runs will have to recompute
                blobs = [e for e in blobs if e not in self.dirty]
            families = sorted({entries[e][0] for e in blobs})
            if not blobs:
                return False
            how = rng.choice(("several", "swap", "rmtree")) if kind == "damage-many" else "flip"
            if how == "swap":
                by_family: dict[str, list[str]] = {}
                for e in blobs:
                    by_family.setdefault(entries[e][0], []).append(e)
                pairs = [v for v in by_family.values() if len(v) >= 2]
                if not pairs:
                    how = "several"
                else:
                    a, b = rng.sample(rng.choice(pairs), 2)
                    pa, pb = path(a), path(b)
                    tmp = pa.with_suffix(".swap")
                    os.replace(pa, tmp)
                    os.replace(pb, pa)
                    os.replace(tmp, pb)
                    mark([a, b])
                    self.note(f"damage: swap the value files of {a} and {b}")
                    self.counts["value files damaged (swapped)"] += 2
                    return True
            if how == "rmtree":
                family = rng.choice(families)
                gone = [e for e in blobs if entries[e][0] == family]
                import shutil

                shutil.rmtree(blob_dir / family / "blobs")
                mark(gone)
                self.note(f"damage: delete {family}/blobs/ ({len(gone)} value files)")
                self.counts["value files damaged (blobs/ deleted)"] += len(gone)
                return True
            chosen = self._damage_pick(blobs, 1 if how == "flip" else rng.randint(2, 3))
            for expr in chosen:
                _damage_file(path(expr), "flip", rng)
            mark(chosen)
            self.note(f"damage: flip a byte in the value files of {', '.join(chosen)}")
            self.counts["value files damaged (flip)"] += len(chosen)
            return True
        if kind == "damage-index":
            how = rng.choice(("flip", "flip", "garble", "delete", "index"))
            if how != "index" and not inline:
                how = "index"
            if how == "index":
                families = sorted({f for f, _, _ in entries.values()})
                if not families:
                    return False
                family = rng.choice(families)
                db = blob_dir / family / "cache.db"
                db.write_bytes(b"this is not an SQLite database " * 64)
                for suffix in ("-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                gone = [e for e, (f, _, _) in entries.items() if f == family and e in self.spec.deps]
                self.dirty |= self.spec.down(gone)
                self.damaged -= set(gone)
                self.note(f"damage: replace the index of {family} with garbage")
                self.counts["indexes replaced by garbage"] += 1
                return True
            (expr,) = self._damage_pick(inline)
            family, tid, meta = entries[expr]
            if how == "flip":
                con = sqlite3.connect(blob_dir / family / "cache.db", timeout=30)
                try:
                    (value,) = con.execute("SELECT value FROM Cache WHERE key = ?", ("e:" + tid,)).fetchone()
                finally:
                    con.close()
                value = bytes(value)
                value = value[:-1] + bytes([value[-1] ^ 0x20])
                self._sql(family, "UPDATE Cache SET value = ? WHERE key = ?", (value, "e:" + tid))
                mark([expr])
            elif how == "garble":
                self._sql(family, "UPDATE Cache SET value = ? WHERE key = ?",
                          (b"\x07\x00\x00\x00garbage", "e:" + tid))
            else:
                self._sql(family, "DELETE FROM Cache WHERE key = ?", ("e:" + tid,))
            if how != "flip":  # the planner sees it as missing
                self.dirty |= self.spec.down([expr])
                self.damaged.discard(expr)
            self.note(f"damage: {how} the index row of {expr}")
            self.counts[f"index rows damaged ({how})"] += 1
            return True
        raise AssertionError(kind)

    # --- the CLI ----------------------------------------------------------------------

    def invoke(self, args: list[str]) -> tuple[int, str, str]:
        """Run a CLI command in this process (click's CliRunner); returns (code, out, err)."""
        from click.testing import CliRunner

        from checkpoint.cli import cli
        from checkpoint.store import Store

        # No bytecode cache: an edit keeps the taskfile's size, and a .pyc written in the
        # same second would make a later run use the old code.
        sys.dont_write_bytecode = True
        try:
            result = CliRunner().invoke(
                cli, ["-f", str(self.taskfile), "--cache-dir", str(self.cache), *args])
        finally:
            sys.dont_write_bytecode = False
            for store in Store._open_stores.values():
                store.close()
            Store._open_stores.clear()
        self._no_internal_error(f"checkpoint {' '.join(args)}", result.stdout + result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise self.fail(f"checkpoint {' '.join(args)} raised {result.exception!r}") from result.exception
        return result.exit_code, result.stdout, result.stderr

    def _no_internal_error(self, what: str, text: str) -> None:
        if "Internal error" in text:
            raise self.fail(f"{what} printed 'Internal error':\n{text[-4000:]}")

    def start(self, args: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start the console script in its own session; its output goes to files."""
        self.nruns += 1
        tag = f"r{self.nruns}"
        out, err = self.logs / f"{tag}.out", self.logs / f"{tag}.err"
        # PYTHONFAULTHANDLER: a hung run killed with SIGABRT prints where each thread was.
        environ = dict(os.environ, CP_MODEL_CTL=str(self.ctl), CP_MODEL_RUN=tag,
                       PYTHONDONTWRITEBYTECODE="1", PYTHONFAULTHANDLER="1", **(env or {}))
        for name in ("NO_COLOR", "FORCE_COLOR", "CP_CACHE_DIR"):
            environ.pop(name, None)
        cmd = [*checkpoint_command(), "-f", str(self.taskfile), "--cache-dir", str(self.cache), *args]
        with open(out, "wb") as fo, open(err, "wb") as fe:
            popen = subprocess.Popen(cmd, cwd=self.root, env=environ, stdout=fo, stderr=fe,
                                     start_new_session=True, preexec_fn=_default_sigint)
        return Proc(tag, args, popen, out, err)

    def run_args(self, executor: str, extra: list[str] | None = None) -> list[str]:
        args = ["run", "--no-progress", "-j", "2", "--executor", executor]
        if self.rng.random() < 0.3:
            args.append("--json")
        return [*args, *(extra or [])]

    def wait(self, procs: list[Proc], limit: float | None = None) -> None:
        """Wait for processes; fail if one takes longer than the bound or loops."""
        deadline = time.monotonic() + (limit or self.timeout)
        next_scan = 0.0
        while any(p.popen.poll() is None for p in procs):
            now = time.monotonic()
            if now > deadline or now > next_scan:
                next_scan = now + 0.25
                counts = Counter((line.tag, line.what) for line in self.read_log(peek=True)
                                 if not line.what.startswith("!"))
                looping = [(t, w, n) for (t, w), n in counts.items() if n > 3 and t in {p.tag for p in procs}]
                if looping or now > deadline:
                    state = self._stuck(procs)
                    if looping:
                        tag, what, n = looping[0]
                        raise self.fail(f"run {tag} computed {what} {n} times and was still going "
                                        f"(a recompute loop); killed it\n{state}")
                    raise self.fail(f"{', '.join(p.tag for p in procs)} did not finish within "
                                    f"{limit or self.timeout:.0f} s; killed\n{state}")
            time.sleep(0.01)
        for p in procs:
            p.rc = p.popen.returncode
            self._no_internal_error(f"{p.tag} (checkpoint {' '.join(p.args)})", p.stdout + p.stderr)

    def _stuck(self, procs: list[Proc]) -> str:
        """Kill processes that do not end, and say where they were: the run lock's table,
        then each one's stderr, ending with its threads' tracebacks (SIGABRT)."""
        lockfile = self.cache / "checkpoint" / ".lock"
        locks = _lock_table(lockfile)
        for p in procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.popen.pid, signal.SIGABRT)
        time.sleep(1.0)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.popen.pid, signal.SIGKILL)
            p.popen.wait()
        parts = [f"locks on {lockfile} (pid, first byte, length, kind): {locks}"]
        parts += [f"--- {p.tag} (pid {p.popen.pid}, checkpoint {' '.join(p.args)}):\n{p.stderr[-6000:]}"
                  for p in procs]
        return "\n".join(parts)

    def read_log(self, peek: bool = False) -> list[Line]:
        """Lines of the execution log since the last (non-peek) call."""
        log = self.ctl / "exec.log"
        if not log.exists():
            return []
        with open(log, "rb") as f:
            f.seek(self.log_pos)
            data = f.read()
        end = data.rfind(b"\n") + 1
        lines = []
        for raw in data[:end].decode().splitlines():
            what, arg, pid, tag = raw.split(" ")
            lines.append(Line(what, arg, int(pid), tag))
        if not peek:
            self.log_pos += end
            self.step_lines.extend(lines)
        return lines

    # --- predictions -------------------------------------------------------------------

    def predict(self, targets: Iterable[str] = (MAIN,)) -> set[str]:
        """The tasks a solo run must compute: the stale ones, and the damaged entries it
        reads (a target's, or a prerequisite of a task that runs)."""
        run = set(self.dirty)
        targets = set(targets)
        changed = True
        while changed:
            changed = False
            for expr in self.damaged:
                if expr not in run and (expr in targets or any(d in run for d in self.spec.dependents[expr])):
                    run.add(expr)
                    changed = True
        return run

    def cascade(self, ran: set[str], before: set[str]) -> set[str]:
        """Tasks that may be left stale by a run that recomputed damaged entries: their
        dependents that did not run now depend on a new result, and so does everything
        downstream of those (even what ran in this run)."""
        redone = (ran & set(self.damaged)) - before
        return self.spec.down(x for d in redone for x in self.spec.dependents[d] if x not in ran)

    def executions(self, lines: list[Line], tags: set[str]) -> Counter[str]:
        return Counter(line.what for line in lines if line.tag in tags and not line.what.startswith("!"))

    def check_executions(
        self, lines: list[Line], tags: set[str], *, exact: set[str] | None, allowed: set[str],
        repeatable: bool = False, again: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> set[str]:
        """Each task ran at most once in these runs together (twice if a worker death lost
        it, or if it is in ``again``: cleared during the run), only tasks in ``allowed``,
        and all of ``exact`` if given; returns what ran."""
        ran = self.executions(lines, tags)
        twice = {e for e, n in ran.items() if n > 2 or n == 2 and e not in again}
        if twice and repeatable:
            twice = self._lost_with_pool(lines, tags, twice)
        if twice:
            raise self.fail(f"computed more than once: {sorted((e, ran[e]) for e in twice)}")
        extra = set(ran) - allowed
        if extra:
            raise self.fail(f"computed tasks that were fresh: {sorted(extra)}")
        if exact is not None and set(ran) != exact:
            raise self.fail(f"did not compute stale tasks: {sorted(exact - set(ran))}")
        return set(ran)

    def _lost_with_pool(self, lines: list[Line], tags: set[str], twice: set[str]) -> set[str]:
        """Of the tasks computed twice, those not explained by the worker death: a task
        computed by a worker of the pool that broke (it died with it) may run once more."""
        bad = set()
        for tag in tags:
            mine = [line for line in lines if line.tag == tag]
            deaths = [n for n, line in enumerate(mine) if line.what == "!die"]
            if not deaths:
                continue
            old = {line.pid for line in mine[:deaths[0] + 1]}
            for expr in twice:
                pids = [line.pid for line in mine if line.what == expr]
                if len(pids) > 2 or sum(p in old for p in pids) != 1:
                    bad.add(expr)
        return bad | {e for e in twice if not any(line.what == "!die" for line in lines)}

    # --- checks after a step -------------------------------------------------------------

    def check_printed(self, proc: Proc, targets: list[str]) -> None:
        """The values a successful run printed equal the reference."""
        if "--json" in proc.args:
            try:
                doc = json.loads(proc.stdout)
            except ValueError:
                raise self.fail(f"{proc.tag}: --json output is not JSON:\n{proc.stdout[-2000:]}") from None
            printed = [t.get("value") for t in doc["targets"]]
        else:
            printed = proc.stdout.splitlines()
        if len(printed) != len(targets):
            raise self.fail(f"{proc.tag} printed {len(printed)} values for {len(targets)} targets:\n"
                            f"{proc.stdout[-2000:]}")
        for target, value in zip(targets, printed, strict=True):
            self._same(f"{proc.tag} printed for {target}", target, value)

    def _same(self, what: str, expr: str, value: Any) -> None:
        want = self.ref[expr]
        got = value.rsplit("@", 1)[0] if isinstance(value, str) and self.spec.is_directory(expr) else value
        if got != want:
            raise self.fail(f"{what}: {_short(got)}, but the reference says {_short(want)}")

    def check(self, *, exact: bool, bound: set[str] | None = None) -> None:
        """After a step: planner states (against the model), stored values, data directories."""
        code, out, err = self.invoke(["ls", "main", "--json"])
        if code != 0:
            raise self.fail(f"checkpoint ls main --json exited {code}:\n{err}")
        states = {row["task"]: row["state"] for row in json.loads(out)["tasks"]}
        if set(states) != set(self.spec.exprs):
            raise self.fail(f"ls lists other tasks than the DAG's: {sorted(set(states) ^ set(self.spec.exprs))}")
        stale = {e for e, s in states.items() if s != "fresh"}
        self._refresh_damaged()
        if exact and stale != self.dirty:
            raise self.fail(
                f"ls: stale tasks differ from the model's: unexpectedly stale {sorted(stale - self.dirty)}, "
                f"unexpectedly fresh {sorted(self.dirty - stale)}")
        if not exact:
            if bound is not None and not stale <= bound:
                raise self.fail(f"ls: tasks stale that no change or fault touched: {sorted(stale - bound)}")
            self.dirty = stale
        fresh = [e for e in self.spec.exprs if e not in stale]
        shown = fresh if self.show_all else sorted(
            set(self.sample_rng.sample(fresh, min(8, len(fresh)))) | ({MAIN} & set(fresh)) | (set(self.damaged) & set(fresh)))
        for expr in shown:
            code, out, err = self.invoke(["cache", "show", "--json", expr])
            if expr in self.damaged:
                if code == 0:
                    raise self.fail(f"cache show {expr} returned a damaged entry's value: {_short(out)}")
                if not any(w in err for w in ("corrupt", "missing", "cannot be read")):
                    raise self.fail(f"cache show {expr} (damaged) exited {code} without saying why:\n{err}")
                continue
            if code != 0:
                raise self.fail(f"cache show {expr} (fresh) exited {code}:\n{err}")
            value = json.loads(out)
            self._same(f"cache show {expr}", expr, value)
            if self.spec.is_directory(expr):
                head, path = value.rsplit("@", 1)
                files = _REF["_parts_digest"]({p.name: p.read_text() for p in Path(path).iterdir()}
                                              if Path(path).is_dir() else {})
                if not head.endswith(f"|files={files}"):
                    raise self.fail(f"the data directory of {expr} ({path}) does not hold the files "
                                    "its value describes")
        self.counts["values checked"] += len(shown)
        self.counts["checks"] += 1

    # --- steps -------------------------------------------------------------------------

    def steps(self, n: int) -> None:
        for _ in range(n):
            self.step()

    def step(self) -> None:
        """One step: random changes, maybe a fault, one or more runs, then the checks."""
        rng = self.rng
        self.history.append(f"step {len(self.history) + 1}:")
        self.counts["steps"] += 1
        self.step_lines = []
        self._clean_markers()
        if len(self.history) > 1:
            for _ in range(rng.choice((0, 1, 1, 2))):
                what = rng.choice(("edit", "edit", "edit", "clear-entry", "clear-family"))
                if what == "edit":
                    self.edit(rng.choice([f.name for f in self.spec.families] + ["main"]))
                elif what == "clear-entry":
                    self.clear(rng.choice(self.spec.exprs))
                else:
                    self.clear(rng.choice([f.name for f in self.spec.families]))
        kind = rng.choice(self.kinds) if self.kinds and rng.random() < self.fault_rate else "none"
        executor = rng.choice(self.executors)
        if kind == "die":
            executor = "process" if "process" in self.executors else executor
        self.note(f"fault {kind}, executor {executor}")
        self.fell_back = False
        if kind.startswith("damage") and not self.damage(kind):
            self.note("nothing to damage")
            self.fell_back = True
        getattr(self, "_step_" + kind.replace("-", "_"))(executor)
        self.counts["steps survived"] += 1
        if kind != "none" and not self.fell_back:
            self.counts[f"fault steps: {kind}"] += 1

    def _clean_markers(self) -> None:
        for marker in self.ctl.iterdir():
            if marker.name != "exec.log":
                marker.unlink()

    def _targets(self) -> list[str]:
        targets = [MAIN]
        if self.rng.random() < 0.2:
            targets.append(self.rng.choice(self.spec.exprs[:-1]))
        return targets

    def _solo(self, executor: str, extra: list[str] | None = None, targets: list[str] | None = None,
              expect: int = 0, repeatable: bool = False) -> tuple[Proc, set[str]]:
        targets = targets or self._targets()
        before = set(self.dirty)
        planned = self.predict(targets)
        must = self.must_run(targets)
        proc = self.start(self.run_args(executor, [*(extra or []), *targets]))
        self.wait([proc])
        if proc.rc != expect:
            raise self.fail(f"{proc.tag} exited {proc.rc}, expected {expect}:\n{proc.stderr[-4000:]}")
        lines = self.read_log()
        self.note(f"{proc.tag}: checkpoint {' '.join(proc.args)} -> {proc.rc}")
        self.counts["runs"] += 1
        if expect != 0:
            ran = self.check_executions(lines, {proc.tag}, exact=None, allowed=planned)
            self.counts["executions"] += len(ran)
            self.check(exact=False, bound=self.spec.down(planned))
            return proc, ran
        self.check_printed(proc, targets)
        cascade = self.cascade(planned, before)
        ran = self.check_executions(lines, {proc.tag}, exact=None, allowed=planned | cascade,
                                    repeatable=repeatable)
        self._computed_what_changed(ran, must, proc.tag)
        self.counts["executions"] += len(ran)
        self.counts["tasks kept by early cutoff"] += len(planned - ran)
        if cascade:  # which of them stay stale depends on the engine: within the bound
            self.check(exact=False, bound=cascade)
        else:
            self.dirty = set()
            self.check(exact=True)
        return proc, ran

    def _computed_what_changed(self, ran: set[str], must: set[str], what: str) -> None:
        if not must <= ran:
            raise self.fail(f"{what} did not compute tasks whose stored value was missing, "
                            f"damaged or out of date: {sorted(must - ran)}")

    def _step_none(self, executor: str) -> None:
        self._solo(executor)

    def _fall_back(self, executor: str, why: str) -> None:
        """No target for this step's fault: a plain run instead."""
        self.note(f"({why}: a plain run)")
        self.fell_back = True
        self._solo(executor)

    _step_damage_blob = _step_damage_many = _step_damage_index = _step_none

    def _victim(self, planned: set[str], retryable: bool | None = None) -> str | None:
        """A task of ``planned`` (tasks that must run: early cutoff may keep the others),
        preferring ones with a prerequisite that runs too."""
        pool = sorted(planned)
        if retryable is False:
            pool = [e for e in pool if not (e != MAIN and self.spec.family_of[e].retries)]
        if not pool:
            return None
        upstream = [e for e in pool if any(d in planned for d in self.spec.deps[e])]
        return self.rng.choice(upstream if upstream and self.rng.random() < 0.8 else pool)

    @staticmethod
    def _tag(expr: str) -> str:
        name, _, arg = expr.rstrip(")").partition("(")
        return f"{name}-{arg}" if arg else name

    def _step_retry(self, executor: str) -> None:
        victim = self._victim(self.must_run())
        if victim is None:
            return self._fall_back(executor, "nothing to run")
        (self.ctl / f"fail-{self._tag(victim)}").touch()
        family_retries = 0 if victim == MAIN else self.spec.family_of[victim].retries
        extra = ["--retries", "1"] if not family_retries or self.rng.random() < 0.3 else []
        self.note(f"{victim} fails once" + (" (--retries 1)" if extra else f" (retries={family_retries})"))
        self._solo(executor, extra)
        self._fired("!fail", victim, "transient failures retried")

    def _step_fail(self, executor: str) -> None:
        victim = self._victim(self.must_run(), retryable=False)
        if victim is None:
            return self._fall_back(executor, "nothing to run without retries")
        (self.ctl / f"fail-{self._tag(victim)}").touch()
        self.note(f"{victim} fails once, no retries")
        proc, _ = self._solo(executor, expect=1)
        if "injected transient failure" not in proc.stderr:
            raise self.fail(f"{proc.tag} failed without reporting the task's error:\n{proc.stderr[-3000:]}")
        self._fired("!fail", victim, "failed runs resumed")

    def _step_die(self, executor: str) -> None:
        victim = self._victim(self.must_run())
        if victim is None or executor != "process":
            return self._fall_back(executor, "nothing to run" if victim is None else "no worker process")
        (self.ctl / f"die-{self._tag(victim)}").touch()
        self.note(f"the worker running {victim} dies once")
        self._solo(executor, repeatable=True)
        self._fired("!die", victim, "worker deaths")

    def _fired(self, what: str, victim: str, counter: str) -> None:
        """Count a fault that fired in this step (its marker was taken)."""
        if any(line.what == what and line.arg == self._tag(victim) for line in self.step_lines):
            self.counts[counter] += 1

    def _wait_for(self, marker: Path, procs: list[Proc], limit: float) -> bool:
        """Wait for a hold marker (a task reached its hold point); False if the runs ended
        first or ``limit`` passed."""
        deadline = time.monotonic() + limit
        while not marker.exists():
            if time.monotonic() > deadline or all(p.popen.poll() is not None for p in procs):
                return False
            time.sleep(0.005)
        return True

    def _step_kill(self, executor: str) -> None:
        rng = self.rng
        planned = self.predict()
        if not planned:
            return self._fall_back(executor, "nothing to run, nothing to kill")
        sig = rng.choice((signal.SIGINT, signal.SIGTERM, signal.SIGKILL))
        victim = rng.choice(sorted(self.must_run() or planned))
        at_random = self.timing and rng.random() < 0.5
        if not at_random:
            (self.ctl / f"hold-{self._tag(victim)}").touch()
        proc = self.start(self.run_args(executor, [MAIN]))
        if not at_random:
            self._wait_for(self.ctl / f"at-hold-{self._tag(victim)}", [proc], self.timeout)
            moment = f"while {victim} runs"
        else:
            delay = rng.uniform(0.05, 2.0)
            time.sleep(delay)
            moment = f"after {delay:.2f} s"
        group = sig == signal.SIGINT and rng.random() < 0.5  # Ctrl-C reaches the whole group
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.popen.pid, sig)
            else:
                os.kill(proc.popen.pid, sig)
        self._release()
        self.wait([proc])
        name = signal.Signals(sig).name
        self.note(f"{proc.tag}: {name}{' to its process group' if group else ''} {moment} -> {proc.rc}")
        expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[sig]
        lines = self.read_log()
        # Before the command line has started (still importing), a signal ends Python as
        # it does any program: nothing has run then.
        starting = proc.rc == -sig and not any(line.tag == proc.tag for line in lines)
        if proc.rc not in (expected, 0) and not starting:
            raise self.fail(f"{proc.tag} exited {proc.rc} after {name}, expected {expected}:\n"
                            f"{proc.stderr[-3000:]}")
        if proc.rc == 0:
            self.check_printed(proc, [MAIN])
        elif sig != signal.SIGKILL and not starting and "interrupted" not in proc.stderr.lower():
            raise self.fail(f"{proc.tag} did not say it was interrupted:\n{proc.stderr[-3000:]}")
        pids = {line.pid for line in lines if line.tag == proc.tag} - {proc.popen.pid}
        left = _wait_dead(pids, 30)
        if left:
            raise self.fail(f"{proc.tag}: processes left running after {name}: {sorted(left)}")
        self.counts["runs"] += 1
        self.counts[f"runs killed ({name})" if proc.rc else "runs that finished before the signal"] += 1
        ran = self.check_executions(lines, {proc.tag}, exact=None,
                                    allowed=planned | self.cascade(planned, self.dirty))
        self.counts["executions"] += len(ran)
        self.check(exact=False, bound=self.spec.down(planned))

    def _step_concurrent(self, executor: str, runs: int = 2, hold: str | None = None) -> None:
        """Runs at once: the first is held in a task (``hold``, else a random one) until
        the others have joined the cache's run lock, so that they really overlap."""
        planned, must = self.predict(), self.must_run()
        hold = hold or (self.rng.choice(sorted(must)) if must else None)
        if hold is None:
            self.fell_back = True  # nothing to run: the runs cannot overlap
        first = self._held_run(executor, hold)
        others = [self.start(self.run_args(self.rng.choice(self.executors), [MAIN]))
                  for _ in range(runs - 1)]
        joined = self._joined([first, *others])
        self._release()
        self._concurrent_end([first, *others], planned, must, f"the others joined while {hold} ran"
                             if joined else "(they did not overlap)")

    def _step_concurrent_race(self, executor: str) -> None:
        """Two runs started a random 0-0.4 s apart (no holding)."""
        planned, must = self.predict(), self.must_run()
        first = self.start(self.run_args(executor, [MAIN]))
        delay = self.rng.uniform(0.0, 0.4)
        time.sleep(delay)
        second = self.start(self.run_args(self.rng.choice(self.executors), [MAIN]))
        self._concurrent_end([first, second], planned, must, f"{delay:.2f} s apart")

    def _step_concurrent_damage(self, executor: str) -> None:
        """Three runs that all find a damaged prerequisite: the first is held while it
        recomputes it, until the others have planned and joined."""
        if not self.damage("concurrent-damage"):
            self.note("(nothing to damage)")
            self.fell_back = True
            return self._step_concurrent(executor)
        damaged = sorted(self.damaged)[0]
        readers = [d for d in self.spec.dependents[damaged] if d not in self.dirty]
        if readers and not any(d in self.dirty for d in self.spec.dependents[damaged]):
            self.clear(self.rng.choice(readers))  # a stale dependent makes the runs read it
        self._step_concurrent(executor, runs=3, hold=damaged)

    def _held_run(self, executor: str, hold: str | None) -> Proc:
        """Start a run held in ``hold`` (if it runs); return once it is held (or done)."""
        if hold is not None:
            (self.ctl / f"hold-{self._tag(hold)}").touch()
        proc = self.start(self.run_args(executor, [MAIN]))
        if hold is not None:
            self._wait_for(self.ctl / f"at-hold-{self._tag(hold)}", [proc], self.timeout)
        return proc

    def _release(self) -> None:
        """Let every held task go on."""
        for marker in self.ctl.glob("at-*"):
            (self.ctl / ("go-" + marker.name[3:])).touch()

    def _joined(self, procs: list[Proc], limit: float = 60.0) -> bool:
        """Wait until every process that is still running holds a lock on the cache's
        run lock file (it has planned and joined); False if that cannot be seen."""
        lockfile = self.cache / "checkpoint" / ".lock"
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            running = {p.popen.pid for p in procs if p.popen.poll() is None}
            if not running:
                return False
            if lockfile.exists() and running <= _lock_holders(lockfile):
                return True
            time.sleep(0.005)
        return False

    def _concurrent_end(self, procs: list[Proc], planned: set[str], must: set[str], how: str) -> None:
        self.wait(procs)
        runs = len(procs)
        self.note(f"{runs} runs at once ({how}): "
                  + ", ".join(f"{p.tag} {p.args[5]} -> {p.rc}" for p in procs))
        for p in procs:
            if p.rc != 0:
                raise self.fail(f"{p.tag} (one of {runs} concurrent runs) exited {p.rc}:\n{p.stderr[-3000:]}")
            self.check_printed(p, [MAIN])
        lines = self.read_log()
        cascade = self.cascade(planned, self.dirty)
        ran = self.check_executions(lines, {p.tag for p in procs}, exact=None, allowed=planned | cascade)
        self._computed_what_changed(ran, must, "the concurrent runs")
        self.counts["runs"] += runs
        self.counts["concurrent runs"] += runs
        self.counts["executions"] += len(ran)
        self.check(exact=False, bound=cascade)

    def _step_clear_during(self, executor: str) -> None:
        rng = self.rng
        planned, must = self.predict(), self.must_run()
        victim = rng.choice(sorted(must)) if must else None
        at_random = self.timing and rng.random() < 0.5 or victim is None
        if not at_random:
            (self.ctl / f"hold-{self._tag(victim)}").touch()  # type: ignore[arg-type]
        proc = self.start(self.run_args(executor, [MAIN]))
        if at_random:
            time.sleep(rng.uniform(0.05, 1.5))
        else:
            self._wait_for(self.ctl / f"at-hold-{self._tag(victim)}", [proc], self.timeout)  # type: ignore[arg-type]
        target = rng.choice(self.spec.exprs if rng.random() < 0.6 else [f.name for f in self.spec.families])
        gone = self.clear(target, during=True)
        clear = self.start(["clear", "-y", target])
        # clear waits for a run computing (or reading) what it removes: give it 2 s to finish
        # on its own, then let the held run go on, and both end.
        deadline = time.monotonic() + 2.0
        while clear.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self._release()
        self.wait([clear, proc])
        moment = "at a random moment" if at_random else f"while {victim} runs"
        self.note(f"{clear.tag}: checkpoint clear {target} {moment} -> {clear.rc}; {proc.tag} -> {proc.rc}")
        if clear.rc != 0:
            raise self.fail(f"{clear.tag}: checkpoint clear {target} during a run exited {clear.rc}:\n{clear.stderr}")
        # The run may recompute what was cleared, or report it (naming it), never crash.
        reported = proc.rc == 1 and any(expr in proc.stderr for expr in gone)
        if proc.rc != 0 and not reported:
            raise self.fail(f"{proc.tag} exited {proc.rc} after a clear during the run:\n{proc.stderr[-3000:]}")
        if proc.rc == 0:
            self.check_printed(proc, [MAIN])
        lines = self.read_log()
        self.counts["runs"] += 1
        self.counts["clears during a run"] += 1
        bound = self.spec.down(planned | gone)
        ran = self.check_executions(lines, {proc.tag}, exact=None, allowed=planned | bound, again=gone)
        self.counts["executions"] += len(ran)
        self.damaged -= gone
        self.check(exact=False, bound=bound)

    def _step_force_during(self, executor: str) -> None:
        """``run --force`` of a data-directory task while another run reads its files."""
        rng = self.rng
        # The reader holds before it reads its first data-directory prerequisite: that one.
        pairs = [(next(d for d in self.spec.deps[x] if self.spec.is_directory(d)), x)
                 for x in self.spec.exprs if any(self.spec.is_directory(d) for d in self.spec.deps[x])]
        if not pairs:
            return self._fall_back(executor, "no data-directory task with a dependent")
        producer, reader = rng.choice(sorted(pairs))
        self.clear(reader)  # so that the first run reads the producer's files (not kept)
        planned = self.predict()
        rtag, ptag = self._tag(reader), self._tag(producer)
        (self.ctl / f"holdread-{rtag}").touch()
        first = self.start(self.run_args(executor, [MAIN]))
        if not self._wait_for(self.ctl / f"at-holdread-{rtag}", [first], self.timeout):
            raise self.fail(f"{first.tag} never read the files of {producer} in {reader} (exit {first.popen.poll()})")
        (self.ctl / f"holdwrite-{ptag}").touch()
        second = self.start(["run", "--no-progress", "-j", "2", "--executor",
                             rng.choice(self.executors), "--force", producer])
        # Until the forced run has emptied the directory (or it waits for the reader, as it
        # should, and then 2 s have passed); the reader goes on first.
        written = self._wait_for(self.ctl / f"at-holdwrite-{ptag}", [second], 2.0)
        (self.ctl / f"go-holdread-{rtag}").touch()
        if written:  # the directory was emptied under the reader: it reads it before refill
            while first.popen.poll() is None and not any(
                    line.what == reader and line.tag == first.tag for line in self.read_log(peek=True)):
                time.sleep(0.005)
        # (Else the forced run waits for the reader, then may hold the producer's lock while
        # this run's other readers of it wait: it must go on.)
        (self.ctl / f"go-holdwrite-{ptag}").touch()
        self.wait([first, second])
        self.note(f"{second.tag}: run --force {producer} while {first.tag} reads its files in {reader} "
                  f"({'it emptied the directory meanwhile' if written else 'it waited'}) -> {first.rc}, {second.rc}")
        for p, targets in ((first, [MAIN]), (second, [producer])):
            if p.rc != 0:
                raise self.fail(f"{p.tag} exited {p.rc}:\n{p.stderr[-3000:]}")
            self.check_printed(p, targets)
        lines = self.read_log()
        self.counts["runs"] += 2
        self.counts["forced runs during a run"] += 1
        bound = self.spec.down(planned | {producer})
        ran = self.check_executions(lines, {first.tag}, exact=None, allowed=planned | bound)
        self.check_executions(lines, {second.tag}, exact={producer}, allowed={producer})
        self.counts["executions"] += len(ran) + 1
        self.check(exact=False, bound=bound)

    def summary(self) -> str:
        order = ["steps", "steps survived", "runs", "executions", "edits", "clears"]
        keys = order + sorted(k for k in self.counts if k not in order)
        return ", ".join(f"{k}: {self.counts[k]}" for k in keys if self.counts[k])


def _damage_file(path: Path, how: str, rng: random.Random) -> None:
    if how == "delete":
        path.unlink()
        return
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
        return
    at = rng.randrange(len(data))
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x40]) + data[at + 1:])


def _lock_table(path: Path) -> list[tuple[int, str, str, str]]:
    """``(pid, start, end, kind)`` of every POSIX lock on a file (``->``: waiting for it)."""
    try:
        inode = f":{path.stat().st_ino} "
        text = Path("/proc/locks").read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        if "POSIX" in line and inode in line + " ":
            f = line.split()
            waiting = "->" in f
            if waiting:
                f.remove("->")
            rows.append((int(f[4]), f[6], f[7], ("waits " if waiting else "") + f[3]))
    return rows


def _lock_holders(path: Path) -> set[int]:
    """Pids holding a POSIX lock on a file, from /proc/locks (Linux)."""
    try:
        inode = f":{path.stat().st_ino} "
        text = Path("/proc/locks").read_text()
    except OSError:
        return set()
    return {int(line.split()[4]) for line in text.splitlines()
            if "POSIX" in line and "->" not in line and inode in line + " "}


def _wait_dead(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < deadline:
        left = {p for p in left if _alive(p)}
        if left:
            time.sleep(0.02)
    return left


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + f"... ({len(text)} chars)"


@contextlib.contextmanager
def replaying(harness: Harness) -> Iterator[Harness]:
    """Print the figures of a harness when the block ends (also on failure)."""
    try:
        yield harness
    finally:
        print(f"\nseed {harness.seed}: {harness.summary()}")
