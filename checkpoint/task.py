"""Task families, task handles and prerequisite declarations.

A task family is defined in one of two interchangeable ways; both give a
:class:`TaskFamily`, and their tasks share identity, store, CLI and executors.

**Functions.** ``@task`` turns an *outer* function into a family. Calling the family binds
and encodes the arguments and returns a cheap :class:`Task` handle; nothing runs. The outer
function is called only when the DAG is expanded (:meth:`Task.spec`): it declares the
prerequisites with ``@requires(...)`` on an *inner* function and returns that function,
which computes the result from the prerequisites' results.

**Classes.** ``@task`` on a class makes the constructor's parameters the task's arguments::

    @task
    class Choose:
        left: Requires[int] = requires(default=0)
        right: Requires[int] = requires(default=1)

        def __init__(self, n: int, k: int) -> None:
            if 0 < k < n:
                self.left, self.right = Choose(n - 1, k - 1), Choose(n - 1, k)

        def run(self) -> int:
            return self.left + self.right

The spelling, and why:

* Prerequisites are class attributes made with ``requires()`` and annotated
  ``Requires[T]``, T being what the attribute reads as in ``run`` (the precedent is
  SQLAlchemy's ``Mapped[int] = mapped_column()``). ``__init__`` assigns each one a task, a
  list or dict of tasks (read as a list or dict of results: annotate ``Requires[list[T]]``,
  ``Requires[dict[str, T]]``), or ``TaskDirectory()``, ``File(path)`` or ``Product(path)``
  (read as a ``Path``: annotate ``Requires[Path]``); type checkers check the assignment against the annotation.
  ``requires(default=v)`` makes one optional: left unset, it reads as ``v``. A
  ``requires()`` without a default that ``__init__`` leaves unset is an error.
* Values that need no task are plain attributes (``self.n = n``), set in ``__init__`` from
  the JSON-like arguments; they travel to the worker with the instance. A task handle in a
  plain attribute is an error (declare it with ``requires()``).
* The compute method is ``run(self)``, so that, as with functions, ``Choose(6, 3).run()`` has
  the type ``run`` returns: pyright applies the class decorator (``Choose`` is a
  ``TaskFamily[(n: int, k: int), int]``); mypy ignores class decorators (python/mypy#3135)
  and sees the class itself, whose ``run`` has the same result type, and whose instances
  satisfy the same ``run() -> T`` protocol as ``Task[T]`` when assigned to a ``Requires[T]``.

When the DAG is expanded the class is instantiated once per task (``__init__`` declares the
prerequisites). What reaches a worker is a small :class:`_ClassRun`: the family (by
reference when importable), the instance's plain attributes and the prerequisite names,
never the upstream task handles; the worker rebuilds an instance without calling
``__init__``, sets each prerequisite attribute to its result and calls ``run()``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import operator
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FunctionType, MethodType
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    SupportsIndex,
    TypeAlias,
    TypeVar,
    Union,
    cast,
    overload,
)

from ._isolation import attempt_values
from ._text import clip, task_label
from ._types import FamilyDir, FamilyName, TaskId
from .errors import InvalidRequirementError, TaskArgumentError, TaskDefinitionError
from .files import File, Product
from .identity import code_fingerprint, detached, encode_arguments, task_id_hasher

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from typing_extensions import ParamSpec

    from .scheduler import RunResult

    P = ParamSpec("P")
else:
    P = TypeVar("P")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
X = TypeVar("X")
K = TypeVar("K")
F = TypeVar("F", bound=Callable[..., Any])

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


def restore_filename(fn: object, filename: str) -> None:
    """Give by-value code (cloudpickle names it ``<dynamic-code>``) its file back, so that
    tracebacks from worker processes point at the user's file and line."""
    if isinstance(fn, types.FunctionType) and fn.__code__.co_filename != filename:
        fn.__code__ = _with_filename(fn.__code__, filename)


def _pickled_by_value(module: str) -> bool:
    cloudpickle = sys.modules.get("cloudpickle")
    return cloudpickle is not None and module in cloudpickle.list_registry_pickle_by_value()


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _family_by_name(module: str, qualname: str) -> TaskFamily[..., object]:
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, TaskFamily)
    return obj


class _Unset:
    """The marker of "no value given" (pickles as itself)."""

    def __repr__(self) -> str:
        return "<unset>"

    def __reduce__(self) -> str:
        return "_UNSET"


_UNSET = _Unset()

_interned: dict[TaskId, Task[object]] | None = None
"""While a graph expands: the task objects made so far, by id (see :func:`interning`)."""

_NO_KWARGS: dict[str, object] = {}
"""The ``kwargs`` of every task called without keyword arguments (one shared dict instead
of one per task: never changed)."""

_calls: dict[TaskFamily[..., object], dict[tuple[object, ...], Task[object]]] = {}
"""While a graph expands: for a family whose calls repeat (a lattice names each task from
two dependents), the tasks made again by positional calls whose arguments are all ``int``
or ``str``, by ``args``: the next such call gets its task without encoding and hashing
the arguments (equal arguments of these exact types encode alike). A family whose calls
never repeat (a sweep) pays nothing for it."""

_epoch = 0
"""Counts graph expansions: a family's code fingerprint is computed again in each one (once
per run), so that a global re-bound or edited since the last run (a notebook cell run
again) counts."""


def _same_family(known: TaskFamily[..., object], other: TaskFamily[..., object]) -> None:
    """Two family objects of one name met in one graph (a factory made both, or a notebook
    redefined one that another still refers to): they share a cache, which is right only
    when their code and the values it holds are the same."""
    if known.fingerprint[0] != other.fingerprint[0]:
        raise TaskDefinitionError(
            f"Two different task families are named {other.name}: a function that makes task "
            "families (a factory) gave both the same name, or a task handle made before its "
            "family was defined again is still used, so they would share one cache and one "
            "family's results would be handed to the other. Pass what differs between them as "
            "an argument of the task instead, or define each family at module level under "
            "its own name."
        )


@contextlib.contextmanager
def interning() -> Iterator[None]:
    """Make calls of task families return one shared object per task id, for the duration.

    In a lattice most tasks are named by several dependents, each call making its own
    handle; only one of them joins the graph, the others are kept alive by their dependents'
    requirements. Sharing them roughly halves the memory of such a graph.
    """
    global _interned, _calls, _epoch
    previous, previous_calls = _interned, _calls
    if previous is None:
        _interned, _calls = {}, {}
        _epoch += 1
        fingerprint = sys.modules.get("checkpoint.fingerprint")
        if fingerprint is not None:  # the values a run's fingerprints read: this run's only
            fingerprint.read_values.clear()
    try:
        yield
    finally:
        _interned, _calls = previous, previous_calls


class TaskDirectory:
    """Marker for ``@requires(TaskDirectory())``: the inner function receives a fresh, empty
    :class:`pathlib.Path` dedicated to the task, at
    ``{cache}/checkpoint/{module}.{function}/data/{task_id}``. It is emptied each time the
    task runs and kept until the task is cleared."""

    def __repr__(self) -> str:
        return "TaskDirectory()"


Leaf: TypeAlias = Union["Task[object]", TaskDirectory, File]
"""One prerequisite: a task, the task's own directory, or a file (an input ``File`` or an
output ``Product``)."""

Requirement: TypeAlias = Union[Leaf, list["Requirement"], dict[object, "Requirement"]]
"""What one ``@requires(...)`` (or one ``requires()`` attribute) declares: a leaf, or lists
and dicts nesting leaves."""


class Spec:
    """How to compute a task: a function and its requirements.

    For a function family, ``fn`` is the inner function and ``requirements`` holds one entry
    per ``@requires`` (top-most first); for a class family, ``fn`` is a :class:`_ClassRun`
    and ``requirements`` holds the value of each ``requires()`` attribute that ``__init__``
    set, in declaration order. Each entry is a task, a :class:`TaskDirectory`, a
    :class:`~checkpoint.files.File` or :class:`~checkpoint.files.Product`, or a list/dict
    nesting those; ``fn`` receives their results positionally.
    """

    __slots__ = ("fn", "requirements", "_deps", "_files", "_data_dir", "_captured")

    _captured: dict[str, str]
    """The digests of the values ``fn`` captured (:mod:`checkpoint._captured`), taken at the
    first expansion, before ``fn`` ran; unset until then (not set here: most never have one)."""

    def __init__(self, fn: Callable[..., object], requirements: list[Requirement]) -> None:
        self.fn = fn
        self.requirements = requirements
        self._deps: list[Task[object]] | None = None
        self._files: tuple[list[File], list[Product]] | None = None
        self._data_dir: bool | None = None

    @property
    def has_data_dir(self) -> bool:
        """Whether the task asks for a :class:`TaskDirectory` (its value, often a path into
        it, then does not show what the directory holds)."""
        if self._data_dir is None:
            self._data_dir = any(isinstance(leaf, TaskDirectory)
                                 for leaf in _leaves(self.requirements))
        return self._data_dir

    @property
    def dependencies(self) -> list[Task[object]]:
        """The distinct prerequisite tasks, in declaration order."""
        if self._deps is None:
            reqs = self.requirements
            if not reqs:  # a leaf task: nothing to walk
                self._deps = []
                return self._deps
            first = reqs[0]
            if len(reqs) == 2 and type(first) is Task:
                second = reqs[1]
                if type(second) is Task:  # a lattice
                    self._deps = [first, second] if first.id != second.id else [first]
                    return self._deps
            if len(reqs) == 1:  # the common cases, made cheap
                if type(first) is Task:
                    self._deps = [first]
                    return self._deps
                if type(first) is File:
                    self._deps, self._files = [], ([first], [])
                    return self._deps
                if type(first) is list:
                    if not first:  # @requires([]) (an empty sweep)
                        self._deps = []
                        return self._deps
                    kinds = set(map(type, first))
                    if kinds == _ONLY_FILES:  # a task reading many files
                        self._deps, self._files = [], (cast("list[File]", list(first)), [])
                        return self._deps
                    if kinds == _ONLY_TASKS and len(set(map(_task_id, first))) == len(first):
                        self._deps = cast("list[Task[object]]", list(first))  # a sweep's fan-in
                        return self._deps
            seen: dict[TaskId, Task[object]] = {}
            inputs: list[File] = []
            outputs: list[Product] = []
            for leaf in _leaves(reqs):
                if type(leaf) is Task:
                    if leaf.id not in seen:
                        seen[leaf.id] = leaf
                elif type(leaf) is File:
                    inputs.append(leaf)
                elif type(leaf) is Product:
                    outputs.append(leaf)
                elif isinstance(leaf, Task):
                    if leaf.id not in seen:
                        seen[leaf.id] = leaf
                elif isinstance(leaf, Product):  # a subclass
                    outputs.append(leaf)
                elif isinstance(leaf, File):
                    inputs.append(leaf)
            self._deps = list(seen.values())
            if inputs or outputs:
                self._files = (inputs, outputs)
        return self._deps

    @property
    def files(self) -> tuple[list[File], list[Product]] | None:
        """The task's ``File`` inputs and ``Product`` outputs (``None`` when it has none)."""
        self.dependencies  # noqa: B018 - one walk over the requirements finds both
        return self._files


_ONLY_FILES = {File}
_task_id = operator.attrgetter("id")
_NO_REQUIREMENTS: list[Requirement] = []
"""The requirements of every task whose inner function has no ``@requires`` (never mutated)."""


def _leaves(obj: object) -> Iterator[object]:
    """The leaves of nested lists and dicts, depth first, in order (no recursion)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, dict)):
            values = item if isinstance(item, list) else list(item.values())
            if any(issubclass(kind, (list, dict)) for kind in set(map(type, values))):
                stack.extend(reversed(values))
            else:  # flat (the usual case): no trip through the stack
                yield from values
        else:
            yield item


class _Requires(Spec):
    """An inner function with the requirements stacked on it so far: what ``@requires``
    returns, and the task's Spec once its outer function returns it (no copy made)."""

    __slots__ = ()

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        # What it is, without what a Spec learns while planning (a fingerprint of a module
        # global that holds one pickles it: the same before and after a plan).
        return None, {"fn": self.fn, "requirements": self.requirements}

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        Spec.__init__(self, state[1]["fn"], state[1]["requirements"])

    def __call__(self, *args: object, **kwargs: object) -> object:
        return self.fn(*args, **kwargs)

    def _decorate(self, fn: Callable[..., object]) -> _Requires:
        """What ``@requires(x)`` applies to the function below it: this spec, made by
        :func:`requires` with ``[x]`` as its requirements, now holding ``fn`` (the usual
        case: one ``@requires`` on the inner function); or a new spec (a stack of them, a
        decorator used twice)."""
        if self.fn is None and type(fn) is FunctionType:
            self.fn = fn
            return self
        checked = self.requirements[0]
        if isinstance(fn, _Requires):  # stacked (a lattice's two): a new one, as above
            stacked = _new_spec(_Requires)
            stacked.fn = fn.fn
            stacked.requirements = [checked, *fn.requirements]
            stacked._deps = stacked._files = stacked._data_dir = None
            return stacked
        if not callable(fn):
            raise InvalidRequirementError(f"@requires must decorate a function, not {fn!r}")
        return _Requires(fn, [checked])


def _invalid_leaf(req: object) -> tuple[object, str] | None:
    """The first leaf of a requirement that is not a task, TaskDirectory, File or Product,
    with a hint."""
    for leaf in _leaves(req):
        if not isinstance(leaf, (Task, TaskDirectory, File)):
            hint = ""
            if isinstance(leaf, TaskFamily):
                hint = f" Did you mean to call it, e.g. {leaf.short_name}(...)?"
            elif isinstance(leaf, tuple):
                hint = " Use a list instead of a tuple."
            elif leaf is TaskDirectory:
                hint = " Write TaskDirectory() with parentheses."
            elif isinstance(leaf, (str, os.PathLike)):
                hint = (f" For a file on disk, write File({str(leaf)!r}) (an input) or "
                        f"Product({str(leaf)!r}) (an output).")
            return leaf, hint
    return None


def _check_requirement(req: object) -> Requirement:
    """``req`` itself, once it is known to be a :data:`Requirement`."""
    if type(req) is Task or type(req) is File or type(req) is Product:
        return req
    if type(req) is list and _FLAT_LEAVES.issuperset(map(type, req)):
        return req  # a flat list of tasks or inputs (the usual case)
    bad = _invalid_leaf(req)
    if bad is not None:
        leaf, hint = bad
        raise InvalidRequirementError(
            f"@requires(...) got {leaf!r} ({type(leaf).__name__}); it accepts a task, "
            f"a list or dict of tasks, TaskDirectory(), File(path) or Product(path).{hint}"
        )
    return cast(Requirement, req)


@overload
def requires() -> Requires[Any]: ...


@overload
def requires(*, default: Any) -> Requires[Any]: ...


@overload
def requires(requirement: object, /) -> Callable[[F], F]: ...


def requires(requirement: object = _UNSET, /, *,
             default: object = _UNSET) -> Requires[Any] | Callable[[F], F]:
    """Declare a prerequisite: ``@requires(x)`` on an inner function, ``requires()`` in a class.

    On the inner function of a function task, ``requirement`` is a task, a list or dict of
    tasks (nesting allowed), ``TaskDirectory()``, ``File(path)`` (an input file on disk) or
    ``Product(path)`` (a file the task writes); files and directories arrive as
    :class:`pathlib.Path`. Stacked ``@requires`` map top-down onto the inner function's
    positional parameters: the top-most one is its first argument. Lists and dicts arrive
    as lists and dicts of results.

    In the body of a class task, ``name: Requires[T] = requires()`` declares a prerequisite
    attribute (see :class:`Requires`); ``requires(default=v)`` makes it optional.
    """
    if requirement is _UNSET:
        return Requires(default)
    if default is not _UNSET:
        raise TypeError("requires(task) takes no keyword arguments; requires(default=...) "
                        "is the class attribute form")
    kind = type(requirement)  # (_check_requirement's usual cases inline: one per task of a sweep)
    # The spec is made here and its bound method returned as the decorator (no closure and
    # cell per call: a sweep makes one per task); see _Requires._decorate.
    spec = _new_spec(_Requires)  # _Requires(None, [checked]), without a call of __init__
    spec.fn = None  # type: ignore[assignment]
    spec.requirements = [requirement if kind is File or kind is Task  # type: ignore[list-item]
                         else _check_requirement(requirement)]
    spec._deps = spec._files = spec._data_dir = None
    return spec._decorate  # type: ignore[return-value]


_new_spec = object.__new__


class _Annotation:
    """Shows a string annotation (``from __future__ import annotations``) without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def binding_problem(signature: inspect.Signature, kwargs: dict[str, Any],
                    exc: TypeError) -> str:
    """What is wrong with arguments that do not bind: a misspelt keyword first (with the
    parameter it resembles), since the missing argument it leads to is only its symptom."""
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for name in kwargs:
            if name not in params:
                import difflib

                close = difflib.get_close_matches(name, list(params), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return f"unknown argument {name!r}{hint}"
    return str(exc)


def signature_text(signature: inspect.Signature) -> str:
    """A signature as its source reads, e.g. ``(n: int, k: int = 2)``."""
    params = [
        p.replace(annotation=_Annotation(p.annotation)) if isinstance(p.annotation, str) else p
        for p in signature.parameters.values()
    ]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


# Set on an instance only while its __init__ runs at expansion time: {attribute: requirement}.
_DECLARED = "__checkpoint_declared__"

_expanding = threading.local()
"""``.tasks``: the stack of class tasks whose ``__init__`` is running (for error messages)."""


class _HasRun(Protocol[R_co]):
    """What can be assigned to a ``Requires[T]``: ``Task[T]`` (and, to mypy, a class task)."""

    def run(self) -> R_co: ...


class Requires(Generic[T]):
    """A prerequisite attribute of a class task; make it with :func:`requires`.

    Annotate it with what it reads as in ``run``: ``left: Requires[int] = requires()``.
    ``__init__`` assigns a task (``Task[T]``), a list or dict of tasks (for
    ``Requires[list[T]]`` / ``Requires[dict[K, T]]``), or ``TaskDirectory()``, ``File(path)``
    or ``Product(path)`` (for ``Requires[Path]``); ``run`` reads the result. Reading it in ``__init__`` is an error:
    the result does not exist yet.
    """

    __slots__ = ("name", "owner", "default")

    def __init__(self, default: object = _UNSET) -> None:
        self.name = ""
        self.owner = ""
        self.default = default
        """The value read when ``__init__`` leaves the attribute unset (else it is an error)."""

    def __set_name__(self, owner: type, name: str) -> None:
        # `a = b = requires()` calls this twice; @task reports it (raising here would be
        # wrapped in a RuntimeError by Python 3.11).
        self.name = name
        self.owner = owner.__qualname__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Requires[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object, owner: type | None = None) -> object:
        if obj is None:
            return self
        state = obj.__dict__
        try:
            return state[self.name]
        except KeyError:
            pass
        declared = state.get(_DECLARED)
        if declared is not None and self.name in declared:
            raise TaskDefinitionError(
                f"{_where()}reads self.{self.name} in __init__, but a prerequisite's result "
                f"exists only in run(). To pass the same task on, keep it in a local variable: "
                f"t = ...; self.{self.name} = t; other = f(t)."
            )
        if self.default is not _UNSET:
            return self.default
        raise AttributeError(
            f"{self.owner}.{self.name} is a prerequisite that has not been set: assign it a "
            "task in __init__"
        )

    @overload
    def __set__(self: Requires[list[X]], obj: object, value: Sequence[_HasRun[X]]) -> None: ...

    @overload
    def __set__(self: Requires[dict[K, X]], obj: object, value: Mapping[K, _HasRun[X]]) -> None: ...

    @overload
    def __set__(self: Requires[Path], obj: object, value: TaskDirectory | File) -> None: ...

    @overload
    def __set__(self: Requires[list[Path]], obj: object, value: File) -> None: ...

    @overload
    def __set__(self, obj: object, value: _HasRun[T]) -> None: ...

    def __set__(self, obj: object, value: object) -> None:
        declared = obj.__dict__.get(_DECLARED)
        if declared is None:
            raise TaskDefinitionError(
                f"{self.owner}.{self.name} is a prerequisite; assign it in __init__ only "
                "(run() reads its result)."
            )
        bad = _invalid_leaf(value)
        if bad is not None:
            leaf, hint = bad
            what = f"{leaf!r} ({type(leaf).__name__})"
            if leaf is not value:
                what += f" inside {type(value).__name__}"
            raise InvalidRequirementError(
                f"{_where()}assigns {what} to self.{self.name}, which is declared with "
                f"requires(): it takes a task, a list or dict of tasks, TaskDirectory(), "
                f"File(path) or Product(path).{hint}"
                " Keep plain values in attributes not declared with requires() "
                "(e.g. self.n = n)."
            )
        declared[self.name] = cast(Requirement, value)

    def __repr__(self) -> str:
        default = "" if self.default is _UNSET else f"default={self.default!r}"
        return f"requires({default})"


def check_timeout(
    value: object, what: str, error: type[Exception] = TaskDefinitionError
) -> float | None:
    """A time limit in seconds (a finite number > 0) or None; else ``error``."""
    if value is None:
        return None
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not 0 < value < float("inf")
    ):
        raise error(f"The {what} must be a number of seconds > 0 (or None), not {value!r}.")
    return float(value)


def _where() -> str:
    stack = getattr(_expanding, "tasks", None)
    return task_label(stack[-1]) + " " if stack else ""


def _requirement_attributes(cls: type) -> list[tuple[str, Requires[object]]]:
    """The class's ``requires()`` attributes (inherited ones first), in definition order."""
    seen: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            seen[name] = None
    out = []
    for name in seen:
        value = inspect.getattr_static(cls, name)
        if isinstance(value, Requires):
            out.append((name, value))
    return out


def _check_task_class(cls: type) -> list[tuple[str, Requires[object]]]:
    name = cls.__name__
    run = inspect.getattr_static(cls, "run", None)
    if run is None or not callable(getattr(cls, "run", None)):
        raise TaskDefinitionError(
            f"Task class {name} (module {cls.__module__}) has no run() method. Define "
            "`def run(self) -> ...:` to compute the task's result from its prerequisites "
            "(declared with requires())."
        )
    if isinstance(run, (staticmethod, classmethod)):
        raise TaskDefinitionError(
            f"{name}.run must be a plain method `def run(self) -> ...:`, not a "
            f"{type(run).__name__}."
        )
    if getattr(cls, "__dictoffset__", 1) == 0:
        raise TaskDefinitionError(
            f"Task class {name} defines __slots__ without __dict__; class tasks keep their "
            "attributes in the instance __dict__. Remove __slots__."
        )
    for klass in cls.__mro__[:-1]:  # (with an undecorated base's)
        for attr, value in vars(klass).items():
            if _is_requires_decorator(value):
                raise _decorator_attribute(name, attr, value)
    attrs = _requirement_attributes(cls)
    for attr, desc in attrs:
        if desc.name != attr:
            raise TaskDefinitionError(
                f"{name}.{attr} and .{desc.name} share one requires(); give each prerequisite "
                "its own requires()."
            )
    return attrs


def _is_requires_decorator(value: object) -> bool:
    """Whether ``value`` is what ``requires(x)`` returns (the decorator of an inner function)."""
    return (isinstance(value, MethodType) and type(value.__self__) is _Requires
            and value.__func__ is _Requires._decorate and value.__self__.fn is None)


def _decorator_attribute(name: str, attr: str, value: Any) -> TaskDefinitionError:
    """The error for a class attribute ``attr`` set to ``requires(x)`` (a decorator)."""
    requirement = value.__self__.requirements[0]
    kind = "Path" if isinstance(requirement, (File, TaskDirectory)) else "T"
    return TaskDefinitionError(
        f"{name}.{attr} = requires({requirement!r}) is the decorator form, for the inner "
        f"function of a function task: in a class it would make {attr} a function. Declare "
        f"`{attr}: Requires[{kind}] = requires()` and assign it in __init__: "
        f"`self.{attr} = {requirement!r}`."
    )


def _class_spec(task: Task[object]) -> Spec:
    """Instantiate a class task (``__init__`` declares the prerequisites) and make its Spec."""
    family = task.family
    obj = _new_instance(family.fn, task.args, task.kwargs)
    declared: dict[str, Requirement] = {}
    state = obj.__dict__
    state[_DECLARED] = declared
    stack = getattr(_expanding, "tasks", None)
    if stack is None:
        stack = _expanding.tasks = []
    stack.append(task)
    try:
        obj.__init__(*task.args, **task.kwargs)
    finally:
        stack.pop()
        state.pop(_DECLARED, None)
    names: list[str] = []
    requirements: list[Requirement] = []
    attrs = family._requirement_attrs
    if attrs is None:
        attrs = family._requirement_attrs = _requirement_attributes(cast(type, family.fn))
    for name, desc in attrs:
        if name in declared:
            names.append(name)
            requirements.append(declared[name])
        elif desc.default is _UNSET:
            raise TaskDefinitionError(
                f"{task_label(task)} did not set its prerequisite self.{name} in "
                "__init__. Assign it a task (or a list or dict of tasks, TaskDirectory(), "
                f"File(path) or Product(path)) on every path through __init__, or declare it "
                f"`{name} = requires(default=...)` if this task does not need it."
            )
    for key, value in state.items():
        if isinstance(value, (list, dict, Task)):
            for leaf in _leaves(value):
                if isinstance(leaf, Task):
                    raise TaskDefinitionError(
                        f"{task_label(task)} keeps the task {leaf!r} in self.{key}, "
                        f"which is not declared with requires(), so it would not run first. "
                        f"Declare `{key}: Requires[...] = requires()` in the class body "
                        "(plain attributes are for JSON-like values)."
                    )
    return Spec(_ClassRun(family, dict(state), tuple(names)), requirements)


def _new_instance(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if cls.__new__ is object.__new__:
        return object.__new__(cls)
    return cls.__new__(cls, *args, **kwargs)


class _ClassRun:
    """The compute function of a class task, as shipped to a worker.

    It holds the family (pickled by reference when importable), the instance's plain
    attributes and the names of the prerequisites that were set, never the upstream task
    handles. Called with the prerequisites' results, it rebuilds the instance without
    ``__init__`` and returns ``run()``.
    """

    __slots__ = ("family", "state", "names")

    def __init__(
        self, family: TaskFamily[..., object], state: dict[str, object], names: tuple[str, ...]
    ) -> None:
        self.family = family
        self.state = state
        self.names = names

    def __call__(self, *results: object) -> object:
        obj = _new_instance(self.family.fn, (), {})
        state = obj.__dict__
        state.update(attempt_values(self.state))  # each attempt's own (see _isolation)
        for name, value in zip(self.names, results, strict=True):
            state[name] = value
        return obj.run()

    def __reduce__(self) -> tuple[object, ...]:
        return (_ClassRun, (self.family, self.state, self.names))

    def __repr__(self) -> str:
        return f"<run() of {self.family.name}>"


class _Binder:
    """Binds call arguments to a signature; a fast path for plain positional signatures."""

    def __init__(self, fn: Callable[..., object]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.simple = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self.names = [p.name for p in params]
        self.count = len(params)
        self.keys: list[tuple[str, int]] | None = None
        """``('"name":', position)`` in the order :func:`encode_arguments` writes them (by
        name), when every parameter is plain (positional, an ASCII identifier)."""
        if self.simple and all(n.isidentifier() and n.isascii() for n in self.names):
            self.keys = [(f'"{n}":', i) for i, n in sorted(enumerate(self.names), key=lambda p: p[1])]
        self.ints: str | None = None
        """The encoding of a call with only ``int`` arguments, as a ``%``-format of
        :attr:`order`'s tuple (``None``: no parameters, or not plain)."""
        self.order: Callable[[tuple[object, ...]], object] = tuple
        """The arguments in the order of :attr:`keys` (one alone when there is one)."""
        if self.keys:
            self.ints = "{" + ",".join(key + "%d" for key, _ in self.keys) + "}"
            self.order = operator.itemgetter(*[i for _, i in self.keys])

    def bind(
        self, family: TaskFamily[..., object], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> dict[str, object]:
        if self.simple and not kwargs and len(args) == len(self.names):
            return dict(zip(self.names, args, strict=True))
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(
                f"Wrong arguments for task {family.name}: "
                f"{binding_problem(self.signature, kwargs, exc)}. "
                f"Its signature is {family.short_name}{signature_text(self.signature)}."
            ) from None
        ba.apply_defaults()
        return dict(ba.arguments)


def _dirname(module: str, qualname: str) -> str:
    """``{module}.{qualname}``; for a script run as ``__main__``, ``__main__.{script}.{qualname}``.

    Two scripts in one folder may both define ``load``: each gets its own family directory.
    The script's path is taken relative to the default cache's parent (the working directory,
    or the parent of ``$CP_CACHE_DIR``) when it lies below, so that a moved project keeps its
    cache; else it is absolute. A notebook, ``python -c`` and the REPL have no script: theirs
    stays ``__main__.{qualname}``.
    """
    main = sys.modules.get("__main__") if module == "__main__" else None
    script = getattr(main, "__file__", None)
    if not isinstance(script, str) or not script:
        return f"{module}.{qualname}"
    path = os.path.abspath(script)
    cache = os.path.abspath(os.environ.get("CP_CACHE_DIR") or ".cache")
    base = os.path.dirname(cache)
    if path.startswith(base.rstrip(os.sep) + os.sep):
        path = os.path.relpath(path, base)
    stem = os.path.splitext(path)[0].strip(os.sep).replace(os.sep, ".")
    return f"__main__.{stem}.{qualname}"


class TaskFamily(Generic[P, R_co]):
    """A family of tasks made by ``@task`` (on a function or a class); call it to get a
    :class:`Task` handle."""

    def __init__(
        self,
        fn: Callable[P, object],
        *,
        compress_level: int = 0,
        queue: str | None = None,
        version: str | None = None,
        retries: int = 0,
        timeout: float | None = None,
    ) -> None:
        if not callable(fn):
            raise TaskDefinitionError(f"@task must decorate a function or a class, not {fn!r}")
        if not -1 <= compress_level <= 9:
            raise TaskDefinitionError(
                f"compress_level of task {fn.__qualname__} must be -1..9 (zlib), not {compress_level}"
            )
        self.fn = fn
        self.is_class: bool = isinstance(fn, type)
        """Whether the family was defined by a class (else by an outer function)."""
        self._requirement_attrs: list[tuple[str, Requires[object]]] | None = (
            _check_task_class(fn) if isinstance(fn, type) else None
        )
        self.module: str = fn.__module__
        self.qualname: str = fn.__qualname__
        self.name = FamilyName(f"{self.module}.{self.qualname}")
        """``{module}.{qualname}``: the family's identity (its directory in the cache is
        :attr:`dirname`)."""
        self.short_name: str = self.qualname.rsplit(".", 1)[-1]
        self.dirname = FamilyDir(_UNSAFE_PATH_CHARS.sub("_", _dirname(self.module, self.qualname)))
        """The family's directory in the cache: its name, with the script's path for one
        defined in a script run as ``__main__`` (see :func:`_dirname`)."""
        self.compress_level = compress_level
        self.queue: str = queue if queue is not None else self.name
        """The queue whose rate limit applies to this family (default: its own)."""
        self.version = version
        if not isinstance(retries, int) or retries < 0:
            raise TaskDefinitionError(
                f"retries of task {fn.__qualname__} must be a whole number >= 0, not {retries!r}"
            )
        self.retries = retries
        """How many more times a failing task of this family is run before it counts as failed."""
        self.timeout: float | None = check_timeout(timeout, f"timeout of task {fn.__qualname__}")
        """This family's time limit per task in seconds (None: the run's, if any)."""
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._binder: _Binder | None = None
        self._id_hasher: Any = None
        """:func:`~checkpoint.identity.task_id_hasher` of the name, made on first use."""
        self._fingerprint: tuple[str, str] | None = None
        self._fingerprint_epoch = -1

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Task[R_co]:
        table = _interned
        calls = _calls.get(self) if table is not None and not kwargs else None
        if calls is not None:  # made by this call before?
            try:
                made = calls.get(args)
            except TypeError:  # an unhashable argument
                made = None
            if made is not None:  # (of ints and strs: equal only if of the same types too)
                for arg in args:
                    if type(arg) is not int and type(arg) is not str:
                        break
                else:  # (one id, one family: so one result type)
                    return made  # type: ignore[return-value]
        encoded = self._encode(args, kwargs)
        plain = encoded is not None  # (then all are ints and plain strs, passed positionally)
        if encoded is None:  # not only ints and plain strings: a copy no later change reaches
            encoded = encode_arguments(self.name, self._bind(args, kwargs))
            args = detached(args)
            kept = {k: detached(v) for k, v in kwargs.items()} if kwargs else _NO_KWARGS
        else:
            kept = _NO_KWARGS
        task = Task(self, args, kept, encoded)
        if table is not None:  # expanding a graph: one object per task id
            made = table.setdefault(task.id, task)
            if made.family is not self:
                _same_family(made.family, self)
            calls = _calls.get(self)
            if made is not task and calls is None:  # this family's calls repeat: remember them
                calls = _calls[self] = {}
            if calls is not None and plain and made.args is args:
                calls[args] = made
            return made  # type: ignore[return-value]
        return task

    def _encode(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str | None:
        """The canonical encoding of a call's arguments when they are ints and plain strings
        passed positionally, written straight from a template (the hot path of a sweep);
        ``None`` for other arguments, which :func:`encode_arguments` encodes bound, and which
        the task keeps a :func:`~checkpoint.identity.detached` copy of: the caller may change
        a list or a dict after the call (``cfg["lr"] = lr`` in a loop), and the task must
        compute with the values its id names."""
        binder = self._binder
        if binder is None:
            binder = self._binder = _Binder(self.fn)
        keys = binder.keys
        if keys is not None and not kwargs and len(args) == binder.count:
            ints = binder.ints
            if ints is not None:  # only ints (a sweep's, a lattice's): one %-format
                for value in args:
                    if type(value) is not int:
                        break
                else:
                    return ints % binder.order(args)  # (%d of an int: its str)
            parts = []
            for key, i in keys:
                value = args[i]
                if type(value) is int:
                    parts.append(f"{key}{value}")
                elif type(value) is str and value.isalnum() and value.isascii():
                    parts.append(f'{key}"{value}"')
                else:
                    break
            else:
                return "{" + ",".join(parts) + "}"
        return None

    def _bind(self, args: tuple[object, ...], kwargs: Mapping[str, object]) -> dict[str, object]:
        """Call arguments bound to parameter names, defaults applied.

        Raises:
            TaskArgumentError: they do not fit the signature.
        """
        binder = self._binder
        if binder is None:
            binder = self._binder = _Binder(self.fn)
        if binder.simple and not kwargs and len(args) == binder.count:  # the hot path of a sweep
            return dict(zip(binder.names, args, strict=True))
        return binder.bind(self, args, dict(kwargs))

    @property
    def signature(self) -> inspect.Signature:
        """The task's parameters: the outer function's or the class constructor's."""
        if self._binder is None:
            self._binder = _Binder(self.fn)
        return self._binder.signature

    @property
    def fingerprint(self) -> tuple[str, str]:
        """``(digest, normalized source)`` of the family's code and of everything it reads,
        computed once per run (see :mod:`checkpoint.fingerprint`)."""
        fingerprint = self._fingerprint
        if fingerprint is None or (self._fingerprint_epoch != _epoch and self.version is None):
            if self.version is not None:
                fingerprint = ("v:" + self.version, f"# version {self.version}")
            else:
                fingerprint = code_fingerprint(
                    self.fn, is_task=lambda obj: isinstance(obj, TaskFamily), family=self.name
                )
            self._fingerprint, self._fingerprint_epoch = fingerprint, _epoch
        return fingerprint

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[object, ...]:
        # By reference when the module attribute is this very family (a taskfile, a
        # package); by value (the outer function cloudpickled) for __main__ or notebooks.
        # Also by value when the module is registered with cloudpickle.register_pickle_by_value
        # (the Dask executor does that for the taskfile: remote workers cannot import it).
        module = sys.modules.get(self.module)
        if (
            module is not None
            and self.module != "__main__"
            and "<" not in self.qualname
            and not _pickled_by_value(self.module)
        ):
            obj: object = module
            for part in self.qualname.split("."):
                obj = getattr(obj, part, None)
            if obj is self:
                return (_family_by_name, (self.module, self.qualname))
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_binder"] = None
        state["_id_hasher"] = None
        state["_fingerprint"] = None
        code = getattr(getattr(self.fn, "run", None) if self.is_class else self.fn, "__code__", None)
        state["_filename"] = code.co_filename if code is not None else ""
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        filename = str(state.pop("_filename", ""))
        state.setdefault("_id_hasher", None)
        self.__dict__.update(state)
        if filename:
            if isinstance(self.fn, type):
                for value in vars(self.fn).values():
                    if inspect.isfunction(value):
                        restore_filename(value, filename)
            else:
                restore_filename(self.fn, filename)

    def __mro_entries__(self, bases: tuple[object, ...]) -> tuple[type, ...]:
        """``class Child(Base)`` with ``Base`` a task class: a clear error (Python would
        otherwise call the family itself with the new class's name, bases and body)."""
        raise TaskDefinitionError(
            f"The task class {self.name} cannot be subclassed: @task made it a task family, "
            "not a class. Put what the classes share in an undecorated base class and "
            "decorate each subclass with @task."
        )

    def clear(self, *, cache_dir: str | None = None) -> None:
        """Discard every stored result and data directory of this family."""
        from .store import Store

        Store.open(cache_dir).clear_family(self.dirname)

    def __repr__(self) -> str:
        return f"<task family {self.name}>"


if TYPE_CHECKING:

    class ClassTaskFamily(type):
        """What a class decorated with ``@task`` is, to mypy with the ``checkpoint.mypy``
        plugin (mypy ignores what a class decorator returns): the class object gets its
        family's attributes. Exists for type checking only; at run time the class *is* a
        :class:`TaskFamily`."""

        name: FamilyName
        short_name: str
        module: str
        qualname: str
        dirname: FamilyDir
        queue: str
        version: str | None
        retries: int
        timeout: float | None
        is_class: bool

        @property
        def signature(self) -> inspect.Signature: ...

        @property
        def fingerprint(self) -> tuple[str, str]: ...

        def clear(self, *, cache_dir: str | None = None) -> None: ...


class Task(Generic[R_co]):
    """A lazy handle to one task: a family and bound, encoded arguments.

    Creating it is cheap; :meth:`spec` calls the outer function (once) to learn the
    prerequisites; :meth:`run` builds it and its upstream and returns the result.
    """

    __slots__ = ("family", "args", "kwargs", "encoded", "id", "_spec", "__weakref__")

    def __init__(
        self,
        family: TaskFamily[..., R_co],
        args: tuple[object, ...],
        kwargs: dict[str, object],
        encoded: str,
    ) -> None:
        self.family = family
        """The task family (what ``@task`` made) this task belongs to."""
        self.args = args
        self.kwargs = kwargs
        self.encoded = encoded
        """Canonical JSON of the arguments (the task's identity within its family)."""
        hasher = family._id_hasher
        if hasher is None:
            hasher = family._id_hasher = task_id_hasher(family.name)
        hasher = hasher.copy()
        hasher.update(encoded.encode("utf-8", "surrogatepass"))
        self.id: TaskId = hasher.hexdigest()
        """Hash of the family name and the encoded arguments (:func:`~checkpoint.identity.
        task_id`): names the task's cache entry and its data directory."""
        self._spec: Spec | None = None

    @property
    def arguments(self) -> dict[str, Any]:
        """Arguments bound to parameter names, defaults applied (made again on each
        access: a task keeps only its call's arguments and their encoding)."""
        return self.family._bind(self.args, self.kwargs)

    @property
    def __checkpoint_identity__(self) -> str:
        return f"{self.family.name}:{self.id}"

    def spec(self) -> Spec:
        """Learn (once) how to compute the task: call the outer function, or instantiate
        the class, and return the compute function and its requirements."""
        spec = self._spec
        if spec is None:
            if self.family.is_class:
                spec = self._spec = _class_spec(self)
                return spec
            kwargs = self.kwargs
            inner = self.family.fn(*self.args, **kwargs) if kwargs else self.family.fn(*self.args)
            if isinstance(inner, _Requires):
                spec = inner
            elif callable(inner):  # a leaf (most tasks of a sweep): Spec(inner, []), no __init__ call
                spec = _new_spec(Spec)
                spec.fn, spec.requirements = inner, _NO_REQUIREMENTS
                spec._deps = spec._files = spec._data_dir = None
            else:
                raise TaskDefinitionError(
                    f"Task {self!r} must return its inner function (the one that computes the "
                    f"result), but its outer function returned {type(inner).__name__}."
                )
            # The arity check, its usual case inline: bounds known, and met (a bound method's
            # code counts its `self`).
            code = getattr(spec.fn, "__code__", None)
            if code is not None:
                bounds = _arity.get(code)
                if bounds is None or not bounds[0] <= len(spec.requirements) <= bounds[1] \
                        or type(spec.fn) is types.MethodType:
                    _check_arity(self, spec)
            self._spec = spec
        return spec

    def run(
        self,
        executor: Executor | str | None = None,
        max_workers: int | None = None,
        rate_limits: dict[str, int] | None = None,
        **options: Any,
    ) -> R_co:
        """Build this task and everything it needs, reusing stored results; return its value.

        Args:
            executor: any :class:`concurrent.futures.Executor`, or ``"process"`` (default,
                sized to the CPU count), ``"thread"`` or ``"inline"`` (sequential, in this
                process: breakpoints work).
            max_workers: worker count when checkpoint creates the executor.
            rate_limits: ``{queue: n}`` caps on concurrently running tasks per queue.
            **options: further options of :func:`checkpoint.run` (``keep_going``,
                ``force``, ``code_check``, ``cache_dir``, ``progress=True`` for a progress
                display on stderr, ...).

        Raises:
            Exception: the failing task's own exception, re-raised.
        """
        __tracebackhide__ = True  # IPython and pytest leave this frame out of tracebacks
        from .scheduler import run

        result: RunResult = run(
            [self], executor=executor, max_workers=max_workers, rate_limits=rate_limits, **options
        )
        value: R_co = result.values[self.id]
        return value

    def clear(self, *, cache_dir: str | None = None) -> None:
        """Discard this task's stored result and data directory; dependents re-run next time."""
        from .store import Store

        Store.open(cache_dir).delete(self.family.dirname, self.id)

    def expression(self, depth: int = 1) -> str:
        """The task as a call expression, e.g. ``choose(6, 3)``."""
        args = self.args
        if not self.kwargs:  # ints only (a sweep's, a lattice's: `ls`, a dry run), at once
            for arg in args:
                if type(arg) is not int:
                    break
            else:
                text = ", ".join(map(repr, args))
                if len(text) <= 60:  # (each within _arg_repr's limit)
                    return f"{self.family.short_name}({text})"
        parts = [_arg_repr(a, depth) for a in args]
        if self.kwargs:
            parts += [f"{k}={_arg_repr(v, depth)}" for k, v in self.kwargs.items()]
        return f"{self.family.short_name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.expression()

    def _repr_html_(self) -> str:
        """Jupyter's view: expression, state, stored size and last run."""
        from .notebook import task_html

        return task_html(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_task, (self.family, self.args, self.kwargs))

    def __deepcopy__(self, memo: dict[int, object]) -> Task[R_co]:
        return self  # a handle names its task: a copy of an argument holding one keeps it


_ONLY_TASKS: set[type] = {Task}
_arity: dict[types.CodeType, tuple[int, int]] = {}
"""Code object -> (fewest, most) positional arguments its function accepts."""


def _check_arity(task: Task[object], spec: Spec) -> None:
    """Refuse, while the graph is built, an inner function that cannot take one argument
    per ``@requires`` (it would fail only once its prerequisites had run)."""
    code = getattr(spec.fn, "__code__", None)
    if code is None:
        return
    bounds = _arity.get(code)
    if bounds is None:
        defaults = len(getattr(spec.fn, "__defaults__", None) or ())
        most = 1 << 30 if code.co_flags & inspect.CO_VARARGS else code.co_argcount
        bounds = _arity[code] = (code.co_argcount - defaults, most)
    if isinstance(spec.fn, types.MethodType):  # bound: `self` is given already
        bounds = (max(bounds[0] - 1, 0), bounds[1] - 1)
    given = len(spec.requirements)
    if not bounds[0] <= given <= bounds[1]:
        low, high = bounds
        wants = (f"{low} to {high} arguments" if low != high
                 else "no arguments" if low == 0 else "1 argument" if low == 1 else f"{low} arguments")
        raise TaskDefinitionError(
            f"{task_label(task)}: its inner function {spec.fn.__name__}"
            f"{signature_text(inspect.signature(spec.fn))} takes {wants}, one per prerequisite, "
            f"but {given} {'is' if given == 1 else 'are'} declared with @requires(...). Give it "
            "one parameter per @requires, in order from the top."
        )


def _rebuild_task(
    family: TaskFamily[..., object], args: tuple[object, ...], kwargs: dict[str, object]
) -> Task[object]:
    return family(*args, **kwargs)


def _arg_repr(value: object, depth: int) -> str:
    if type(value) is int:  # the common case: no Task, no NumPy scalar
        return clip(repr(value), 60)
    if isinstance(value, Task):
        return value.expression(depth - 1) if depth > 0 else f"{value.family.short_name}(...)"
    return clip(repr(_literal(value)), 60)


def _literal(value: object) -> object:
    """A value as the literal a user types: NumPy scalars (``np.float64(0.001)`` from a
    sweep over ``np.logspace``) as the Python numbers they equal, inside containers too."""
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        item = getattr(value, "item", None)
        if callable(item):
            return item()
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_literal(v) for v in value)
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    return value


class _TaskDecorator(Protocol):
    """What ``@task(...)`` with options returns: applies to a function or a class."""

    @overload
    def __call__(self, fn: Callable[P, Callable[..., R]], /) -> TaskFamily[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, _HasRun[R]], /) -> TaskFamily[P, R]: ...

    def __call__(self, fn: Callable[P, Any], /) -> TaskFamily[P, Any]: ...


@overload
def task(fn: Callable[P, Callable[..., R]], /) -> TaskFamily[P, R]: ...


@overload
def task(fn: Callable[P, _HasRun[R]], /) -> TaskFamily[P, R]: ...


@overload
def task(
    *, compress_level: int = 0, queue: str | None = None, version: str | None = None,
    retries: int = 0, timeout: float | None = None,
) -> _TaskDecorator: ...


def task(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    compress_level: int = 0,
    queue: str | None = None,
    version: str | None = None,
    retries: int = 0,
    timeout: float | None = None,
) -> TaskFamily[P, Any] | _TaskDecorator:
    """Turn an outer function, or a class, into a task family.

    Use as ``@task`` or ``@task(compress_level=-1, queue="gpu", version="2")``:

    * ``compress_level``: zlib level for stored results (0: none, -1: zlib's default).
    * ``queue``: the queue whose ``rate_limits`` entry caps this family (default: its own).
    * ``version``: pin the code fingerprint; results are reused across code edits until
      the version string changes.
    * ``retries``: run a failing task up to this many more times before it counts as failed
      (each attempt's output and traceback stay in its log).
    * ``timeout``: seconds a task may run; past that it is stopped and fails with
      :class:`~checkpoint.errors.TaskTimeoutError` (retries apply). It takes precedence over
      the run's ``timeout``/``--timeout``. What stopping means per executor: docs/concepts.md.

    On a class, the constructor's parameters are the task's arguments, ``requires()``
    attributes assigned in ``__init__`` are its prerequisites and ``run(self)`` computes the
    result (see the module docstring).
    """
    if fn is not None:
        return TaskFamily(fn, compress_level=compress_level, queue=queue, version=version,
                          retries=retries, timeout=timeout)

    def decorate(f: Callable[P, Any]) -> TaskFamily[P, Any]:
        return TaskFamily(f, compress_level=compress_level, queue=queue, version=version,
                          retries=retries, timeout=timeout)

    return cast(_TaskDecorator, decorate)


_FLAT_LEAVES = frozenset({Task, File})
"""The leaves of a flat list that :func:`_check_requirement` takes at once."""
