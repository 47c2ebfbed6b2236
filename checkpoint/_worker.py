"""What runs inside a worker: compute a batch of tasks and return their encoded results.

This module is imported by worker processes, so it imports only what a task needs.
A batch is a list of :class:`WorkItem`; prerequisite payloads travel once per batch.
Each task succeeds or fails on its own: one failing task does not fail its batch-mates.

**Output capture.** What a task writes to ``sys.stdout``/``sys.stderr`` is captured into its
outcome (``Outcome.output``), in worker processes and in the coordinator's own threads alike.
Both streams are replaced once per process by a :class:`_CapturingStream`, which sends a write
to the current thread's capture buffer when that thread is running a task and to the original
stream otherwise; so a thread pool captures each task's output apart, and the coordinator's
own writes (the progress display) pass through. The per-task cost is a thread-local
assignment and a join. Output written straight to file descriptors 1 and 2 (C extensions,
child processes) is not captured.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import marshal
import os
import pickle
import signal
import stat
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias, Union, cast

from ._codec import BlobRef, Encoded, Payload, encode_result, load
from ._isolation import attempt_function, enclosing_cells
from ._procs import attempt_start, end_attempt
from ._types import DebugMode
from .errors import CorruptEntryError, TaskTimeoutError
from .files import File, Product, output_digests, without_outputs
from .task import TaskFamily, _Requires, restore_filename

if TYPE_CHECKING:
    import logging

OuterCall: TypeAlias = "tuple[TaskFamily[..., object], tuple[object, ...], dict[str, object]]"
"""``(family, args, kwargs)``: the call of a task's outer function (see :meth:`WorkItem.rebuilding`)."""


@dataclass(frozen=True)
class Ref:
    """Placeholder for a prerequisite's result inside a requirement template."""

    id: str


@dataclass
class WorkItem:
    """One task to compute, in one of two modes (make it with :meth:`running` or
    :meth:`rebuilding`): the inner function itself travels, or the call of the outer
    function that makes it, which the worker repeats (so a task's outer function runs
    twice: on the coordinator while planning, and in the worker)."""

    id: str
    fn: Callable[..., object] | None
    """The inner function (``None`` when the worker rebuilds it from ``call``)."""
    template: list[object]
    """The inner function's arguments, with :class:`Ref` where a prerequisite's value goes."""
    compress_level: int
    call: OuterCall | None = None
    """``(family, args, kwargs)``: call the outer function in the worker to get ``fn``."""
    filename: str = ""
    """Where ``fn`` was defined (cloudpickle drops it from by-value code; tracebacks need it)."""
    blob_dir: str = ""
    """Where to write a large result directly (the family's ``blobs/``), if anywhere."""
    debug: DebugMode | None = None
    """In-process only: run under a debugger (``None``: not)."""
    show_locals: bool = False
    """Include each frame's local variables in the traceback of a failure."""
    timeout: float = 0.0
    """The task's time limit in seconds (0: none); see :func:`run_limited`."""
    label: str = ""
    """How messages name the task (set with ``timeout``)."""
    root: str = ""
    """The store root as this worker sees it: paths under it in values are stored relative
    to it, and resolved against it (see :mod:`checkpoint._relocate`)."""
    hands_on: bool = False
    """Its value goes to a later item of the batch in memory (see :func:`run_batch`)."""
    after: str = ""
    """The id of an earlier item of the batch whose value this task reads in memory; it runs
    only if that item returned and stored its value (otherwise :class:`Unrun`)."""
    enclosing: tuple[int, ...] = ()
    """The indexes of ``fn``'s closure cells from beyond its outer function, not copied for
    an attempt (see :func:`checkpoint._isolation.enclosing_cells`)."""

    @classmethod
    def running(cls, task_id: str, fn: Callable[..., object], template: list[object], compress_level: int,
                filename: str = "") -> WorkItem:
        """The inner function travels to the worker (in-process executors, class tasks,
        tasks whose arguments hold tasks)."""
        return cls(task_id, fn, template, compress_level, filename=filename)

    @classmethod
    def rebuilding(cls, task_id: str, call: OuterCall, template: list[object],
                   compress_level: int) -> WorkItem:
        """The worker calls the outer function ``call = (family, args, kwargs)`` again to
        get the inner one: cheaper to send than a closure (the family pickles by reference
        when importable)."""
        return cls(task_id, None, template, compress_level, call=call)




@dataclass
class Done:
    """A task returned: its encoded value (in ``payload``, or in the file ``blob``)."""

    id: str
    started: float
    duration: float
    payload: bytes | None = None
    """The encoded value, unless the worker wrote it to ``blob``."""
    crc: int = 0
    size: int = 0
    blob: str = ""
    """File name under ``WorkItem.blob_dir`` when the worker wrote the payload itself."""
    stamp: str = ""
    """The stamp of that file's payload (:func:`checkpoint._stamps.checksum_stamp` of
    ``crc``), taken as it was written, so that nobody reads the file again to hash it."""
    outputs: dict[str, str] | None = None
    """``{"out:<path>": digest}`` of the task's declared outputs, hashed after it ran."""
    output: str = ""
    """What the task wrote to stdout and stderr, interleaved."""
    worker: str = ""
    """``hostname:pid`` of the process that ran the task."""
    classes: tuple[str, ...] = ()
    """Classes of the project the value is made of (``module.qualname``; see
    :func:`project_classes`)."""
    unpickled: tuple[str, ...] = ()
    """Classes of the project that the task met by unpickling (its prerequisites' values,
    a model it loaded from a file; see :func:`_unpickling`)."""


@dataclass
class Failed:
    """A task raised (or could not run, or its result could not be encoded)."""

    id: str
    started: float
    duration: float
    error: BaseException
    """The task's exception (in-process), or a picklable stand-in (from another process)."""
    error_text: str = ""
    """The formatted traceback, as seen where the task ran."""
    unpicklable_result: bool = False
    """The task returned, but its value cannot be pickled (``error`` says why)."""
    abandoned: bool = False
    """It timed out in a thread that runs on: it must not be retried in this run."""
    output: str = ""
    worker: str = ""


@dataclass
class NeedsPrerequisite:
    """A task did not run: the stored value of prerequisite ``dep`` failed its check."""

    id: str
    started: float
    dep: str
    text: str
    """What is wrong with it (a :class:`~checkpoint.errors.CorruptEntryError`'s message)."""
    duration: float = 0.0
    output: str = ""
    worker: str = ""


@dataclass
class Unrun:
    """A task did not run: the item of its batch it reads in memory (``WorkItem.after``)
    gave no value, or could not hand it on; it runs later, as usual."""

    id: str
    started: float
    duration: float = 0.0
    output: str = ""
    worker: str = ""


Outcome = Union[Done, Failed, NeedsPrerequisite, Unrun]
"""What a worker reports for each task of a batch."""


class _CorruptPrerequisite(Exception):
    def __init__(self, dep: str, text: str) -> None:
        super().__init__(text)
        self.dep = dep


class Shared:
    """A value handed on in memory as it is (immutable: nobody can tell it from a copy)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


Handed = dict[str, Union[Shared, Payload]]
"""The values items of a batch hand on to a later item (see :func:`run_batch`), by task id."""


def _fill(template: object, payloads: Mapping[str, Payload | Shared], products: list[Product],
          root: str, matches: list[list[Path]]) -> object:
    if isinstance(template, Ref):
        held = payloads[template.id]
        if isinstance(held, Shared):
            return held.value
        try:
            return load(held, root)
        except CorruptEntryError as exc:
            raise _CorruptPrerequisite(template.id, str(exc)) from None
    if isinstance(template, list):
        return [_fill(t, payloads, products, root, matches) for t in template]
    if isinstance(template, dict):
        return {k: _fill(v, payloads, products, root, matches) for k, v in template.items()}
    if isinstance(template, File):  # File() or Product(): its path, here
        if isinstance(template, Product):
            products.append(template)
            # Never emptied if it (now) holds the project or the cache (planning refused it).
            return template.value((os.getcwd(), root) if root else (os.getcwd(),))
        value = template.value()
        if type(value) is list:  # a pattern's matches
            matches.append(value)
        return value
    return template


def run_one(item: WorkItem, payloads: Mapping[str, Payload | Shared], in_process: bool,
            handed: Handed | None = None) -> Outcome:
    """Compute one task and encode its result. If it fails, the processes it started are
    ended first (Linux, see :func:`_end_attempt`). When ``item.hands_on``, its value goes
    into ``handed`` once encoded (see :func:`run_batch`)."""
    started = time.time()
    t0 = time.perf_counter()
    before = attempt_start()
    try:
        if item.call is None:
            planned, enclosing = item.fn, item.enclosing
        else:
            planned = _inner(item.call)
            enclosing = enclosing_cells(item.call[0].fn, planned)
        assert planned is not None  # (a WorkItem holds the function or the call that makes it)
        fn = attempt_function(planned, enclosing)  # what it holds, copied: its attempt's own
        value, outputs, met = _compute(item, fn, payloads, in_process)
    except _CorruptPrerequisite as exc:
        return NeedsPrerequisite(item.id, started, exc.dep, str(exc))
    except BaseException as exc:  # noqa: BLE001 - a task's failure is data here
        if in_process and isinstance(exc, KeyboardInterrupt):
            raise
        duration = time.perf_counter() - t0
        _end_attempt(before, in_process)
        return _raised(item, started, duration, exc, in_process)
    duration = time.perf_counter() - t0
    try:
        encoded = _encode(value, item)
    except Exception as exc:  # noqa: BLE001
        _end_attempt(before, in_process)
        out = _failure(item.id, started, duration, exc, in_process)
        out.unpicklable_result = True
        out.error_text = _returned_by(fn, exc)
        return out
    if item.hands_on and handed is not None:
        handed[item.id] = _handing(value, encoded, item)
    # A value file written here was digested as it was written (its bytes never reach the
    # coordinator, which then gives the entry its stamp from this one).
    return Done(item.id, started, duration, encoded.payload, encoded.crc, encoded.size,
                blob=encoded.blob, stamp=encoded.stamp, outputs=outputs, classes=project_classes(value),
                unpickled=_project_classes_named(met))


def _compute(item: WorkItem, fn: Callable[..., object], payloads: Mapping[str, Payload | Shared],
             in_process: bool) -> tuple[object, dict[str, str] | None, list[tuple[str, str]]]:
    """Call the task's function with its requirements filled in: its value, the digests
    of the outputs it declared, and the classes met while unpickling its arguments."""
    products: list[Product] = []
    matches: list[list[Path]] = []
    with _unpickling() as met:
        args = [_fill(t, payloads, products, item.root, matches) for t in item.template]
        if products and matches:  # the task's own outputs are not its inputs
            without_outputs(matches, products)
        if item.debug is DebugMode.TRACE and in_process:
            from .debug import trace_call

            with _uncaptured():  # the debugger talks to the terminal
                value = trace_call(fn, *args)
        else:
            value = fn(*args)
    # Hashed here, as soon as written (a failed task records nothing).
    return value, output_digests(products) if products else None, met


def _raised(item: WorkItem, started: float, duration: float, exc: BaseException,
            in_process: bool) -> Failed:
    """The outcome of a task that raised (after the post-mortem debugger, if asked for)."""
    if item.debug and in_process and type(exc).__name__ not in ("BdbQuit", "DebuggerQuitError"):
        from .debug import post_mortem

        with _uncaptured():
            post_mortem(_user_traceback(exc))
    return _failure(item.id, started, duration, exc, in_process, item.show_locals)


def _encode(value: object, item: WorkItem) -> Encoded:
    """The task's value encoded (or written to its value file); raises if it cannot be."""
    if isinstance(value, io.IOBase):  # cloudpickle would store a copy of what is left to read
        with contextlib.suppress(Exception):
            value.close()  # dropped here: nothing else would close it
        raise TypeError(f"cannot store an open file ({value!r}); return its path, or what "
                        "was read from it")
    return encode_result(value, item.compress_level, item.blob_dir, item.id, item.root)


def _handing(value: object, encoded: Encoded, item: WorkItem) -> Shared | Payload:
    """How a value, encoded as ``encoded``, goes to the next item of the batch: itself when
    immutable (the reader cannot change what its producer or anyone else holds), else its
    encoding, decoded by the reader as if it had come from the store (a copy of its own:
    the producer may keep the object, say in a cache, and the reader may change it)."""
    if _immutable(value):
        return Shared(value)
    compressed = item.compress_level != 0
    if encoded.payload is not None:
        return (encoded.payload, compressed)
    return BlobRef(os.path.join(item.blob_dir, encoded.blob), encoded.size, encoded.crc, compressed)


def _immutable(value: object, depth: int = 0) -> bool:
    """Whether a value is made of builtin immutable types only (exact types, not subclasses:
    a subclass may add mutable state); a tuple or frozenset of more than 100 items is not
    looked into (decoded instead)."""
    kind = type(value)
    if kind in _PLAIN:
        return True
    if kind in (tuple, frozenset) and depth < 4 and len(value) <= 100:  # type: ignore[arg-type]
        return all(_immutable(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    return False


def _end_attempt(before: frozenset[int], in_process: bool) -> None:
    """End the processes a failed attempt started (not those that ran before it, ``before``),
    whatever group or session they moved to, before its failure is reported: a retry, or
    the next run, makes its outputs again, and they would write into them. In a worker
    process, everything below the worker; in a thread, what the thread started. A task that
    succeeds may leave processes running on purpose."""
    with contextlib.suppress(Exception):
        end_attempt(before, whole_process=not in_process)


_project = ""
"""The project root that this worker's tasks run in (set by :func:`run_batch`)."""
_PLAIN = frozenset({int, float, str, bool, bytes, type(None), complex})


def project_classes(value: object) -> tuple[str, ...]:
    """The classes of the project (files under the project root, not installed packages)
    of a value and of the first ten items of its lists, tuples, sets and dicts: a pickle names
    them without their code (see :meth:`checkpoint._values.StampContext.named_classes`)."""
    kind = type(value)
    if kind in _PLAIN or not _project:
        return ()
    found: dict[str, None] = {}
    stack = [(value, 0)]
    while stack and len(found) < 8:
        obj, depth = stack.pop()
        kind = type(obj)
        if kind in _PLAIN:
            continue
        if kind in (list, tuple, set, frozenset, dict):
            if depth == 0 and isinstance(obj, (list, tuple, set, frozenset, dict)):
                items = obj.values() if isinstance(obj, dict) else obj
                stack.extend((v, 1) for v in itertools.islice(items, 10))
            continue
        if _of_project(kind.__module__):
            found[f"{kind.__module__}.{kind.__qualname__}"] = None
    return tuple(found)


def _of_project(module_name: str) -> bool:
    """Whether a loaded module's file lies under the project root (not an installed package)."""
    file = getattr(sys.modules.get(module_name), "__file__", None)
    return isinstance(file, str) and file.startswith(_project) and "site-packages" not in file


_met = threading.local()
"""``names``: the ``(module, qualname)`` pairs unpickled by this thread's running task."""
_hooked: list[bool] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Called for every audit event of the process: kept minimal, and never raises.
    if event == "pickle.find_class":
        names = getattr(_met, "names", None)
        if names is not None and len(names) < 1000:
            names.append(args)


class _unpickling:  # noqa: N801 - used as a function, in a with statement
    """The globals (``(module, qualname)``) that the unpickler resolves in this thread while
    the block runs: every ``pickle``, ``joblib``, ``cloudpickle`` or ``torch.load`` reports
    them (the ``pickle.find_class`` audit event, Python 3.8+). Only for a task of a project
    (:data:`_project`); the audit hook, once added, stays for the life of the process. (A
    class, not a generator: it wraps every task.)"""

    __slots__ = ("names", "saved", "on")

    def __init__(self) -> None:
        self.names: list[tuple[str, str]] = []
        self.saved: list[tuple[str, str]] | None = None
        self.on = bool(_project)

    def __enter__(self) -> list[tuple[str, str]]:
        if self.on:
            if not _hooked:
                _hooked.append(True)
                sys.addaudithook(_audit)
            self.saved = getattr(_met, "names", None)
            _met.names = self.names
        return self.names

    def __exit__(self, *exc: object) -> None:
        if self.on:
            _met.names = self.saved


def _project_classes_named(names: list[tuple[str, str]]) -> tuple[str, ...]:
    """Of the globals a task unpickled, the classes of the project (as in
    :func:`project_classes`), ``module.qualname``."""
    if not names:
        return ()
    found: dict[str, None] = {}
    for module_name, qualname in names:
        if type(module_name) is not str or type(qualname) is not str:
            continue
        if not _of_project(module_name):
            continue
        obj: Any = sys.modules[module_name]
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type):
            found[f"{module_name}.{qualname}"] = None
    return tuple(found)


def stop_capture() -> None:
    """Stop capturing this thread's output for the rest of the current task (a debugger
    started by ``breakpoint()`` needs the terminal)."""
    _capture.buf = None


@contextlib.contextmanager
def _uncaptured() -> Iterator[None]:
    """Let this thread's writes reach the real streams (for a debugger) for a while."""
    saved = getattr(_capture, "buf", None)
    _capture.buf = None
    try:
        yield
    finally:
        _capture.buf = saved


def _engine_frame(module: str) -> bool:
    return module.startswith("checkpoint.") or module == "bdb"


def _user_traceback(exc: BaseException) -> types.TracebackType | None:
    """The exception's traceback from the task's own frame on (engine frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and _engine_frame(tb.tb_frame.f_globals.get("__name__", "")):
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    return tb


def _returned_by(fn: object, exc: BaseException) -> str:
    """A traceback of a result that cannot be stored: the user's function that returned it
    (the pickler's own frames say nothing to the user)."""
    code = getattr(fn, "__code__", None)
    head = "Traceback (most recent call last):\n"
    if code is not None:
        import linecache

        line = linecache.getline(code.co_filename, code.co_firstlineno).strip()
        head += (f'  File "{code.co_filename}", line {code.co_firstlineno}, in {code.co_name}'
                 f" (the task's function, which returned the value)\n")
        if line:
            head += f"    {line}\n"
    return head + "".join(traceback.format_exception_only(type(exc), exc))


def _failure(
    task_id: str, started: float, duration: float, exc: BaseException, in_process: bool,
    show_locals: bool = False,
) -> Failed:
    tb = _user_traceback(exc)
    text = "".join(
        traceback.TracebackException(type(exc), exc, tb, capture_locals=show_locals).format()
    )
    # Raised again in the caller's process: from the task's own frame on, as the text says.
    error: BaseException = exc.with_traceback(tb)
    if not in_process:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - the exception itself cannot travel
            error = RuntimeError(f"{type(exc).__qualname__}: {exc}")
    return Failed(task_id, started, duration, error, error_text=text)


HAND_ON_SECONDS = 2.0
"""The longest a task may take (computing and storing its value) for its value to be handed
on to the next item of its batch: its result is reported with that item's, so a worker that
dies meanwhile, or an interrupt, loses it too. A longer task's result goes back first (a
read of its value costs little beside it)."""


def run_batch(
    items: list[WorkItem], payloads: dict[str, Payload], in_process: bool, cwd: str = ""
) -> list[Outcome]:
    """Compute a batch of tasks in order, capturing each one's output; each outcome stands
    alone. Each task starts in ``cwd`` (the project root, see :func:`enter_directory`), and
    the working directory is given back after the batch: a task that calls ``os.chdir``
    moves neither the next task on its worker nor, in process, the coordinator.

    **Values handed on.** An item marked ``hands_on`` gives its value, once encoded (and
    written, when large), to the later item whose ``after`` names it, in memory instead of
    through the store: the value itself when immutable, its encoding otherwise (see
    :func:`_handing`). If it gives no value, or took more than :data:`HAND_ON_SECONDS`,
    that item does not run (:class:`Unrun`): its result goes back first."""
    install_capture()
    home = _enter_project(cwd)
    worker = worker_id()
    local = _capture
    outcomes: list[Outcome] = []
    local.buf = buf = _Captured()
    handed: Handed = {}
    noted: list[str] = []
    try:
        for item in items:
            enter_directory(home)
            outcome = _run_item(item, payloads, in_process, handed)
            if outcome is None:  # its producer failed, or did not run: nothing to go on with
                outcome = Unrun(item.id, time.time())
            elif buf.parts:  # a fresh buffer only after a task that wrote something
                outcome.output = buf.text()
                local.buf = buf = _Captured()
            outcome.worker = worker
            outcomes.append(outcome)
            if item.id in handed:  # its reader runs next: the coordinator may need it before
                noted.append(note_handed(cast(Done, outcome)))
    finally:
        local.buf = None
        enter_directory(home)
        for path in noted:  # the batch returns with it
            with contextlib.suppress(OSError):
                os.unlink(path)
    return outcomes


def _enter_project(cwd: str) -> str:
    """Go to ``cwd`` (see :func:`enter_directory`) and note it as the project directory;
    the directory the tasks start in (``""``: this process's directory was removed)."""
    global _project
    enter_directory(cwd)
    try:
        home = os.getcwd()
    except OSError:  # this process's directory was removed
        home = ""
    _project = os.path.join(home, "") if home else ""
    return home


def _run_item(item: WorkItem, payloads: Mapping[str, Payload | Shared], in_process: bool,
              handed: Handed) -> Outcome | None:
    """One item of a batch, given the value handed on to it if it waits for one (``None``:
    none was); its value handed on in turn if it is marked so and took little time."""
    given: Mapping[str, Payload | Shared] = payloads
    if item.after:
        held = handed.pop(item.after, None)
        if held is None:
            return None
        given = {**payloads, item.after: held}
    t0 = time.perf_counter()
    if item.timeout and not item.debug:  # under a debugger the clock does not run
        outcome = run_limited(item, given, in_process, handed)
    else:
        outcome = run_one(item, given, in_process, handed)
    if item.hands_on and (not isinstance(outcome, Done)  # (stopped after it encoded)
                          or time.perf_counter() - t0 > HAND_ON_SECONDS):
        handed.pop(item.id, None)
    return outcome


HANDED = "handed-"
"""What the name of a value's hand-over note starts with (see :func:`note_handed`)."""


def note_handed(out: Done) -> str:
    """Write the result of a task whose value this process worker hands over to its reader,
    as the reader starts, where the coordinator finds it (:func:`read_handed`): reported
    with the reader's, it would be lost with it if the run is interrupted or the worker dies
    meanwhile; and the coordinator shows it done while the reader runs. The note's path
    (``""``: none written, as outside a process pool worker)."""
    directory = os.path.dirname(_records)
    if not _records or not _own_directory(directory, make=True):
        return ""
    path = os.path.join(directory, HANDED + out.id)
    try:
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                     | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps(tuple(getattr(out, field.name) for field in fields(Done))))
        os.replace(path + ".tmp", path)  # whole or not at all, for a worker killed meanwhile
    except OSError:
        return ""
    return path


def read_handed(directory: str, tid: str) -> Done | None:
    """The result of ``tid`` that a worker noted as it handed its value over
    (:func:`note_handed`), taken away; ``None`` if there is none (or it is not ours)."""
    path = os.path.join(directory, HANDED + tid)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read() if os.fstat(fd).st_uid == os.getuid() else b""
    with contextlib.suppress(OSError):
        os.unlink(path)
    if not data or not _own_directory(directory, make=False):
        return None
    try:
        out = Done(*marshal.loads(data))
    except (ValueError, TypeError, EOFError):
        return None
    return out if out.id == tid else None


def _own_directory(directory: str, make: bool) -> bool:
    """Whether ``directory`` is this user's and only theirs (not one planted in /tmp);
    ``make``: made first if missing."""
    try:
        if make:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


# --- time limits -------------------------------------------------------------------------

TIMEOUT_GRACE = 2.0
"""Seconds a task past its time limit has to stop (to run its ``finally`` blocks) before a
process worker ends itself."""

RECORD_BYTES = 128
"""The head of a process worker's time-limit record: ``"<task id> <limit>"`` while a task
with a limit runs, blank otherwise; :mod:`faulthandler`'s report follows it."""

_records = ""
"""This process worker's time-limit record file (set by :func:`init_worker`)."""
_record_fd = -1
_watched: set[threading.Thread] = set()
"""Threads running a task with a time limit, or left running one past it."""


@dataclass(frozen=True)
class Abandoned:
    """An attempt of a task left running in a thread past its time limit."""

    writes: frozenset[str]
    """What it may still write (see :func:`writes_of`)."""
    limit: float
    """Its time limit, in seconds."""
    deadline: float
    """When (:func:`time.monotonic`) it counts as hung: its time limit once more after it
    was given up. A later attempt waits for it until then, and fails after."""


_abandoned: dict[threading.Thread, Abandoned] = {}
"""Threads left running a task past its time limit. Process-wide: a later run in this
process must not run the task again while one runs (:func:`still_writing`)."""
_abandoned_lock = threading.Lock()


class _OverTime(BaseException):
    """Raised inside a task that ran past its time limit: a BaseException, so that a task's
    ``except Exception:`` does not swallow it (``finally`` blocks run as usual)."""


def run_limited(item: WorkItem, payloads: Mapping[str, Payload | Shared], in_process: bool,
                handed: Handed | None = None) -> Outcome:
    """Compute a task that has a time limit (``item.timeout`` seconds).

    In a thread where signals can be used (a worker process's, or the in-process executor's
    main thread when the program has no SIGALRM handler of its own), a timer raises
    :class:`_OverTime` inside the task at its limit, which ends Python code and interrupts
    sleeps, waits and I/O; the task fails with :class:`TaskTimeoutError` and the traceback of
    where it was. In a worker process, if the task has not stopped :data:`TIMEOUT_GRACE`
    seconds later (blocked in C code, or it caught the exception), :mod:`faulthandler`'s
    watchdog, which needs no GIL, records where it was and ends the worker (see
    :mod:`checkpoint._pool`).

    Elsewhere (thread pools, Dask workers) the task runs in a thread of its own, which is
    abandoned at its limit: a thread cannot be stopped. The task fails, the processes it
    started are ended (Linux), and the thread runs on until the task returns; its result is
    discarded.
    """
    if (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and (not in_process or signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None))
    ):
        return _run_alarmed(item, payloads, in_process, handed)
    return _run_watched(item, payloads, in_process, handed)


def _run_alarmed(item: WorkItem, payloads: Mapping[str, Payload | Shared], in_process: bool,
                 handed: Handed | None) -> Outcome:
    from ._procs import descendants, kill_pids, thread_children

    others: set[int] = set()
    if in_process:  # this thread's processes that are not the task's
        others = set(thread_children([threading.get_native_id()]))
    ended: list[int] = []

    def end_children() -> None:
        # What the task started goes too (Linux), at once: a task waiting for a child in
        # ``with Popen(...)`` would otherwise wait for it in ``__exit__``. All of a worker
        # process's children are its task's.
        if in_process:
            mine = [p for p in thread_children([threading.get_native_id()]) if p not in others]
            children = mine + descendants(mine)
        else:
            children = descendants([os.getpid()])
        kill_pids(children)
        ended.extend(children)

    armed = True

    def alarm(signum: int, frame: types.FrameType | None) -> None:
        nonlocal armed
        if armed:
            armed = False
            end_children()
            raise _OverTime

    started = time.time()
    previous = signal.signal(signal.SIGALRM, alarm)
    hard = not in_process and _arm_hard_stop(item)
    signal.setitimer(signal.ITIMER_REAL, item.timeout)
    try:
        outcome = run_one(item, payloads, in_process, handed)
    except _OverTime as exc:  # past the limit outside the task's code (encoding its result)
        outcome = _failure(item.id, started, time.time() - started, exc, in_process)
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if hard:
            _disarm_hard_stop()
    if isinstance(outcome, Failed) and isinstance(outcome.error, _OverTime):
        end_children()  # any it started while it stopped
        note = ", so it was stopped" + (" with the processes it started" if ended else "")
        return _over_time(item, outcome.started, outcome.duration, outcome.error_text, note)
    return outcome


def _arm_hard_stop(item: WorkItem) -> bool:
    """Write this worker's record and start faulthandler's watchdog; False if it cannot."""
    global _record_fd
    if not _records or not hasattr(os, "pwrite"):
        return False
    try:
        if _record_fd < 0:
            if not _own_directory(os.path.dirname(_records), make=True):
                return False
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            _record_fd = os.open(_records, flags, 0o600)
            os.lseek(_record_fd, RECORD_BYTES, os.SEEK_SET)  # faulthandler writes from here
        os.pwrite(_record_fd, f"{item.id} {item.timeout!r}".encode().ljust(RECORD_BYTES), 0)
    except OSError:
        return False
    import faulthandler

    faulthandler.dump_traceback_later(item.timeout + TIMEOUT_GRACE, exit=True, file=_record_fd)
    return True


def _disarm_hard_stop() -> None:
    import faulthandler

    faulthandler.cancel_dump_traceback_later()
    with contextlib.suppress(OSError):
        os.pwrite(_record_fd, b" " * RECORD_BYTES, 0)


def _run_watched(item: WorkItem, payloads: Mapping[str, Payload | Shared], in_process: bool,
                 handed: Handed | None) -> Outcome:
    buf = _Captured()
    done: list[Outcome] = []
    mine: Handed = {}  # an abandoned thread hands nothing on

    def target() -> None:
        _capture.buf = buf
        try:
            done.append(run_one(item, payloads, in_process, mine))
        finally:
            _capture.buf = None

    started = time.time()
    thread = threading.Thread(target=target, name=f"checkpoint-task-{item.id[:12]}", daemon=True)
    _watched.add(thread)
    thread.start()
    thread.join(item.timeout)
    if done:
        _watched.discard(thread)
        outcome = done[0]
        if handed is not None:
            handed.update(mine)
        if buf.parts:
            outcome.output = buf.text()
        return outcome
    where = _stack_text(thread)
    from ._procs import kill_pids, thread_descendants

    children = thread_descendants([thread.native_id])
    kill_pids(children)
    note = (
        ". It runs in a thread, which cannot be stopped: the thread goes on in the background "
        "until the task returns, and its result will be discarded"
        + (" (the processes it started were ended)" if children else "")
        + "; it may still write files (its data directory), so it is not retried. "
        "The process executor can stop such a task"
    )
    outcome = _over_time(item, started, time.time() - started, where, note)
    outcome.abandoned = True
    abandoned = Abandoned(item_writes(item), item.timeout, time.monotonic() + item.timeout)
    with _abandoned_lock:
        _abandoned[thread] = abandoned
    outcome.output = buf.text() if buf.parts else ""
    return outcome


def _products_in(template: Any, found: list[Product]) -> None:
    if isinstance(template, Product):
        found.append(template)
    elif isinstance(template, list):
        for t in template:
            _products_in(t, found)
    elif isinstance(template, dict):
        for t in template.values():
            _products_in(t, found)


def item_writes(item: WorkItem) -> frozenset[str]:
    """What an attempt of ``item`` may write (:func:`writes_of` of its declared outputs)."""
    products: list[Product] = []
    _products_in(item.template, products)
    return writes_of(item.root, item.id, products)


def writes_of(root: str, task_id: str, products: Iterable[Product]) -> frozenset[str]:
    """What an attempt of a task may write, as keys: its data directory (in the store at
    ``root``) and its declared outputs (their paths, as :meth:`Product.value` makes them)."""
    return frozenset([f"{root}\0{task_id}", *(os.path.abspath(p._key or p.path) for p in products)])


def still_writing(root: str, task_id: str, products: Iterable[Product]) -> Abandoned | None:
    """The attempt, abandoned at its time limit in a thread of this process, that still runs
    and may write what an attempt of this task would (see :func:`writes_of`); of several,
    the first to count as hung. ``None`` if there is none."""
    if not _abandoned:  # the usual case, once per task of a run
        return None
    writes = writes_of(root, task_id, products)
    with _abandoned_lock:
        for thread in [t for t in _abandoned if not t.is_alive()]:
            del _abandoned[thread]
        clashing = [a for a in _abandoned.values() if not writes.isdisjoint(a.writes)]
    return min(clashing, key=lambda a: a.deadline, default=None)


def task_threads() -> list[threading.Thread]:
    """The threads running tasks that have a time limit (or left running one past it)."""
    for thread in [t for t in _watched if not t.is_alive()]:
        _watched.discard(thread)
    return list(_watched)


def _stack_text(thread: threading.Thread) -> str:
    """Where a thread is now, from the task's frames on (like a traceback)."""
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return ""
    frames = [f for f, _ in traceback.walk_stack(frame)][::-1]
    while len(frames) > 1 and (
        _engine_frame(name := frames[0].f_globals.get("__name__", "")) or name == "threading"
    ):
        frames.pop(0)
    summary = traceback.StackSummary.extract((f, f.f_lineno) for f in frames)
    return "Where the task was at its time limit (most recent call last):\n" + "".join(
        summary.format()
    )


def _over_time(item: WorkItem, started: float, duration: float, where: str, note: str) -> Failed:
    """The failure of a task that ran past its time limit; ``where``: its traceback."""
    message = (
        f"{item.label or 'The task'} timed out: still running after its time limit of "
        f"{item.timeout:g} s{note}."
    )
    lines = where.rstrip("\n").split("\n")
    if lines and lines[-1].startswith(_OverTime.__module__):  # "checkpoint._worker._OverTime"
        lines.pop()
    text = "\n".join([*lines, f"checkpoint.errors.TaskTimeoutError: {message}"]).lstrip("\n")
    error = TaskTimeoutError(message, limit=item.timeout)
    return Failed(item.id, started, duration, error, error_text=text + "\n")


def hard_timeout_outcome(task_id: str, label: str, limit: float, report: str) -> Failed:
    """The failure of a task whose worker process ended itself at its limit plus grace
    (``report``: faulthandler's account of where each thread was)."""
    item = WorkItem(task_id, None, [], 0, timeout=limit, label=label)
    lines = ["Where the worker's threads were when it was ended (most recent call first):"]
    engine = False
    for line in report.splitlines()[1:]:  # after "Timeout (0:00:03)!"
        if line.startswith(("Thread ", "Current thread ")):
            engine = False
        elif f'"{__file__}"' in line:  # the worker's own frames, and the coordinator's
            engine = True  # from before the fork, lie below the task's
        if not engine and line.strip():
            lines.append(line)
    return _over_time(
        item, time.time(), limit, "\n".join(lines),
        f", and did not stop within {TIMEOUT_GRACE:g} s more, so its worker process was ended",
    )


OUTPUT_LIMIT = 1_000_000
"""Characters of output kept per task: the last ones (a task printing in a hot loop for hours
must not exhaust the coordinator's memory)."""


class _Captured:
    """One task's captured output, bounded to about :data:`OUTPUT_LIMIT` characters."""

    __slots__ = ("parts", "size", "dropped")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > 2 * OUTPUT_LIMIT:
            kept = "".join(self.parts)[-OUTPUT_LIMIT:]
            self.dropped += self.size - len(kept)
            self.parts = [kept]
            self.size = len(kept)

    def text(self) -> str:
        text = "".join(self.parts)
        if len(text) > OUTPUT_LIMIT:
            self.dropped += len(text) - OUTPUT_LIMIT
            text = text[-OUTPUT_LIMIT:]
        if self.dropped:
            text = f"[checkpoint: the first {self.dropped:,} characters of output were dropped]\n" + text
        return text


_capture = threading.local()
_install_lock = threading.Lock()
_hostname: str | None = None


class _CapturingStream:
    """Stands in for ``sys.stdout``/``sys.stderr``: a task's writes go to its thread's buffer."""

    def __init__(self, wrapped: TextIO) -> None:
        self._wrapped = wrapped

    def write(self, text: str) -> int:
        buf = getattr(_capture, "buf", None)
        if buf is None:
            return int(self._wrapped.write(text))
        buf.add(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_capture, "buf", None) is None:
            self._wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


def install_capture() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` capturing (once; again if someone replaced them),
    and the ``logging`` handlers that write to them (see :func:`_route_logging`)."""
    if not (isinstance(sys.stdout, _CapturingStream) and isinstance(sys.stderr, _CapturingStream)):
        with _install_lock:
            if not isinstance(sys.stdout, _CapturingStream):
                sys.stdout = _CapturingStream(sys.stdout)
            if not isinstance(sys.stderr, _CapturingStream):
                sys.stderr = _CapturingStream(sys.stderr)
    if "logging" in sys.modules:
        _route_logging()


_routed_handlers = -1
"""How many logging handlers existed when :func:`_route_logging` last looked."""


def _logging_handlers() -> list[logging.Handler]:
    import logging

    refs = getattr(logging, "_handlerList", [])  # weak references to every handler made
    return [h for h in (ref() for ref in list(refs)) if h is not None]


def _route_logging() -> None:
    """Point the logging handlers that write to the real stdout or stderr (made before the
    capture, e.g. by ``logging.basicConfig`` in the taskfile) at the capturing streams: a
    task's log records are then captured with its prints, not written over the display."""
    import logging

    global _routed_handlers
    refs = getattr(logging, "_handlerList", ())
    if len(refs) == _routed_handlers:
        return  # no handler was made since (the common case: a look per batch)
    _routed_handlers = len(refs)
    streams = {id(s._wrapped): s for s in (sys.stdout, sys.stderr) if isinstance(s, _CapturingStream)}
    for handler in _logging_handlers():
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and id(stream) in streams:
            with contextlib.suppress(AttributeError):  # logging.lastResort follows sys.stderr
                handler.setStream(streams[id(stream)])


def uninstall_capture() -> None:
    """Put back the streams :func:`install_capture` wrapped (if nobody replaced them since),
    in ``sys`` and in the logging handlers it pointed at them."""
    global _routed_handlers
    if "logging" in sys.modules:
        import logging

        _routed_handlers = -1
        for handler in _logging_handlers():
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and isinstance(stream, _CapturingStream):
                with contextlib.suppress(AttributeError):
                    handler.setStream(stream._wrapped)
    with _install_lock:
        if isinstance(sys.stdout, _CapturingStream):
            sys.stdout = sys.stdout._wrapped
        if isinstance(sys.stderr, _CapturingStream):
            sys.stderr = sys.stderr._wrapped


def worker_id() -> str:
    """``hostname:pid`` of this process."""
    global _hostname
    if _hostname is None:
        if hasattr(os, "uname"):  # what gethostname() returns, without importing socket (~3 ms)
            _hostname = os.uname().nodename
        else:
            import socket

            _hostname = socket.gethostname()
    return f"{_hostname}:{os.getpid()}"


def enter_directory(cwd: str) -> None:
    """Work in the coordinator's working directory (the project root), where relative paths
    in tasks resolve, if this process is elsewhere and the directory exists here."""
    if cwd:
        with contextlib.suppress(OSError):
            if os.getcwd() != cwd:
                os.chdir(cwd)


def run_pickled_batch(blob: bytes, cwd: str = "", code: dict[str, str] | None = None) -> list[Outcome]:
    """Entry point in worker processes: the batch arrives cloudpickled (functions by value).
    ``code`` is the coordinator's manifest of project modules (see :mod:`checkpoint._workercode`):
    a worker that outlived an earlier run imports them again if they changed since."""
    enter_directory(cwd)
    if code:
        from ._workercode import refresh

        refresh(code, cwd)
    items, payloads = pickle.loads(blob)
    if code:
        stale = stale_outcomes(items, code)
        if stale is not None:
            return stale
    for item in items:
        if item.filename:
            restore_filename(item.fn, item.filename)
    return run_batch(items, payloads, in_process=False, cwd=cwd)


def stale_outcomes(items: list[WorkItem], code: dict[str, str]) -> list[Outcome] | None:
    """Each task failed, when this worker's project modules are not the coordinator's."""
    from ._workercode import stale_error

    error = stale_error(code, worker_id())
    if error is None:
        return None
    now = time.time()
    return [Failed(item.id, now, 0.0, error, worker=worker_id()) for item in items]


def _inner(call: OuterCall) -> Callable[..., object]:
    family, args, kwargs = call
    inner = family.fn(*args, **kwargs)  # (a function: planning checked it)
    return inner.fn if isinstance(inner, _Requires) else cast("Callable[..., object]", inner)


def init_worker(parent_pid: int, records: str = "", generation: int = 0, mark: str = "") -> None:
    """Pool initializer: signals are the coordinator's business, and a worker never outlives it.

    The worker leads its own process group, so the terminal's Ctrl-C and Ctrl-Z reach only
    the coordinator, which stops or ends each worker's group -- the worker and the processes
    its tasks started (see :mod:`checkpoint._pool`). SIGINT gets a handler that does nothing
    rather than ``SIG_IGN``: a handler is reset to the default in programs a task starts, an
    ignored signal would stay ignored there. Standard input is ``/dev/null``: a background
    process group cannot read the terminal. SIGTERM gets its default action back (a forked
    worker inherits the coordinator's handler). If the coordinator dies (even by
    ``kill -9``) the worker is killed too (Linux ``PR_SET_PDEATHSIG``), and a guard process
    then ends the rest of its group (:func:`checkpoint._procs.guard_group`) and the processes
    its tasks started that left the group (found by the worker's mark in their environment,
    ``mark`` followed by its pid; the worker is a child subreaper, so they also stay its
    descendants while it lives); elsewhere the worker ends its group at its next check of its
    parent. ``records`` and ``generation`` name this worker's time-limit record (see
    :func:`run_limited`). When the pool shuts down, the worker ends what its tasks left
    running in its group before it exits (:func:`checkpoint._procs.end_leftovers`).
    """
    import os

    global _records
    _leave_the_terminal()
    if records:
        _records = os.path.join(records, f"{generation}-{os.getpid()}")
    from .debug import forbid_breakpoints_in_process

    forbid_breakpoints_in_process()
    _end_with_parent(parent_pid, mark)
    if os.getppid() != parent_pid:
        os._exit(1)  # the coordinator died before the line above took effect
    _prepare_exit()


def _prepare_exit() -> None:
    """What the worker does as it exits normally (the pool shuts down), before
    :mod:`multiprocessing` joins its children: the handlers it runs are its tasks' only."""
    import atexit
    from multiprocessing.util import Finalize

    atexit._clear()  # the coordinator's, inherited by the fork
    # A pool worker ends by os._exit: what the project's modules hold (an open file with
    # lines a task wrote) is finalized only if released first, when the pool shuts down.
    Finalize(None, _release_project, exitpriority=0)
    # Before the worker's exit joins its multiprocessing children, and before the guard
    # (exitpriority 0) goes, what its tasks left running ends (ux6 2.0): first as the
    # libraries shut it down at exit (before their pools' and queues' finalizers, 10-15,
    # as at a program's exit), then what is left of it.
    Finalize(None, _run_exit_hooks, exitpriority=20)
    Finalize(None, _end_leftovers, exitpriority=1)


def _run_exit_hooks() -> None:
    from ._procs import run_exit_hooks

    run_exit_hooks()


def _end_leftovers() -> None:
    from ._procs import end_leftovers

    end_leftovers()


def _leave_the_terminal() -> None:
    """Signals to the coordinator, the worker in its own process group, no standard input
    (see :func:`init_worker`)."""
    import os
    import signal

    signal.signal(signal.SIGINT, _no_op)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):  # (no process groups on Windows)
        os.setpgid(0, 0)
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)


def _end_with_parent(parent_pid: int, mark: str) -> None:
    """The worker, its group and the processes marked as its tasks' end when the
    coordinator does (see :func:`init_worker`)."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            _watch_parent(parent_pid)
        else:
            from ._procs import guard_group, mark_worker, set_subreaper

            own = mark_worker(mark) if mark else ""
            with contextlib.suppress(OSError, AttributeError):
                set_subreaper(libc.prctl)
            guard_group(libc.prctl, own)
    else:
        _watch_parent(parent_pid)


def _release_project() -> None:
    if _project:
        from ._gcpolicy import release_project_modules

        release_project_modules(_project.rstrip(os.sep))


def _no_op(signum: int, frame: types.FrameType | None) -> None:
    pass


def _watch_parent(parent_pid: int) -> None:
    import os
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        if os.getpgrp() == os.getpid():  # the processes its tasks started go too
            with contextlib.suppress(OSError):
                os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="checkpoint-parent-watch", daemon=True).start()
