"""Task families, task handles and prerequisite declarations.

``@task`` turns an *outer* function into a :class:`TaskFamily`. Calling the family binds and
encodes the arguments and returns a cheap :class:`Task` handle; nothing runs. The outer
function is called only when the DAG is expanded (:meth:`Task.spec`): it declares the
prerequisites with ``@requires(...)`` on an *inner* function and returns that function,
which computes the result from the prerequisites' results.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._types import TaskId
from .errors import InvalidRequirementError, TaskArgumentError, TaskDefinitionError
from .identity import code_fingerprint, encode_arguments, task_id

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from typing_extensions import ParamSpec

    from .scheduler import RunResult

    P = ParamSpec("P")
else:
    P = TypeVar("P")

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


def restore_filename(fn: Any, filename: str) -> None:
    """Give by-value code (cloudpickle names it ``<dynamic-code>``) its file back, so that
    tracebacks from worker processes point at the user's file and line."""
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_filename != filename:
        fn.__code__ = _with_filename(code, filename)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    consts = tuple(
        _with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _family_by_name(module: str, qualname: str) -> TaskFamily[Any, Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    assert isinstance(obj, TaskFamily)
    return obj


class TaskDirectory:
    """Marker for ``@requires(TaskDirectory())``: the inner function receives a fresh, empty
    :class:`pathlib.Path` dedicated to the task, at
    ``{cache}/checkpoint/{module}.{function}/data/{task_id}``. It is emptied each time the
    task runs and kept until the task is cleared."""

    def __repr__(self) -> str:
        return "TaskDirectory()"


class Spec:
    """What the outer function returned: the inner function and its requirements.

    ``requirements`` holds one entry per ``@requires`` (top-most first), each a task, a
    :class:`TaskDirectory`, or a list/dict nesting those.
    """

    __slots__ = ("fn", "requirements", "_deps")

    def __init__(self, fn: Callable[..., Any], requirements: list[Any]) -> None:
        self.fn = fn
        self.requirements = requirements
        self._deps: list[Task[Any]] | None = None

    @property
    def dependencies(self) -> list[Task[Any]]:
        """The distinct prerequisite tasks, in declaration order."""
        if self._deps is None:
            seen: dict[TaskId, Task[Any]] = {}
            for leaf in _leaves(self.requirements):
                if isinstance(leaf, Task) and leaf.id not in seen:
                    seen[leaf.id] = leaf
            self._deps = list(seen.values())
        return self._deps


def _leaves(obj: Any) -> Iterator[Any]:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        else:
            yield item


class _Requires:
    """An inner function with the requirements stacked on it so far (not yet a Spec)."""

    __slots__ = ("fn", "requirements")

    def __init__(self, fn: Callable[..., Any], requirements: list[Any]) -> None:
        self.fn = fn
        self.requirements = requirements

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _check_requirement(req: Any) -> None:
    for leaf in _leaves(req):
        if not isinstance(leaf, (Task, TaskDirectory)):
            hint = ""
            if isinstance(leaf, TaskFamily):
                hint = f" Did you mean to call it, e.g. {leaf.name.rsplit('.', 1)[-1]}(...)?"
            elif isinstance(leaf, tuple):
                hint = " Use a list instead of a tuple."
            elif leaf is TaskDirectory:
                hint = " Write TaskDirectory() with parentheses."
            raise InvalidRequirementError(
                f"@requires(...) got {leaf!r} ({type(leaf).__name__}); it accepts a task, "
                f"a list or dict of tasks, or TaskDirectory().{hint}"
            )


def requires(requirement: Any) -> Callable[[F], F]:
    """Declare a prerequisite of the inner function of a task.

    ``requirement`` is a task, a list or dict of tasks (nesting allowed) or
    ``TaskDirectory()``. Stacked ``@requires`` map top-down onto the inner function's
    positional parameters: the top-most one is its first argument. Lists and dicts arrive as
    lists and dicts of results.
    """
    _check_requirement(requirement)

    def decorate(fn: F) -> F:
        if isinstance(fn, _Requires):
            return _Requires(fn.fn, [requirement, *fn.requirements])  # type: ignore[return-value]
        if not callable(fn):
            raise InvalidRequirementError(f"@requires must decorate a function, not {fn!r}")
        return _Requires(fn, [requirement])  # type: ignore[return-value]

    return decorate


class _Annotation:
    """Shows a string annotation (``from __future__ import annotations``) without quotes."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_text(signature: inspect.Signature) -> str:
    """A signature as its source reads, e.g. ``(n: int, k: int = 2)``."""
    params = [
        p.replace(annotation=_Annotation(p.annotation)) if isinstance(p.annotation, str) else p
        for p in signature.parameters.values()
    ]
    return str(signature.replace(parameters=params, return_annotation=inspect.Signature.empty))


class _Binder:
    """Binds call arguments to a signature; a fast path for plain positional signatures."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.simple = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
        self.names = [p.name for p in params]

    def bind(
        self, family: TaskFamily[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        if self.simple and not kwargs and len(args) == len(self.names):
            return dict(zip(self.names, args, strict=True))
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TaskArgumentError(
                f"Wrong arguments for task {family.name}: {exc}. "
                f"Its signature is {family.short_name}{signature_text(self.signature)}."
            ) from None
        ba.apply_defaults()
        return dict(ba.arguments)


class TaskFamily(Generic[P, R]):
    """A family of tasks made by ``@task``; call it to get a :class:`Task` handle."""

    def __init__(
        self,
        fn: Callable[P, Callable[..., R]],
        *,
        compress_level: int = 0,
        queue: str | None = None,
        version: str | None = None,
    ) -> None:
        if not callable(fn):
            raise TaskDefinitionError(f"@task must decorate a function, not {fn!r}")
        if not -1 <= compress_level <= 9:
            raise TaskDefinitionError(
                f"compress_level of task {fn.__qualname__} must be -1..9 (zlib), not {compress_level}"
            )
        self.fn = fn
        self.module: str = fn.__module__
        self.qualname: str = fn.__qualname__
        self.name: str = f"{self.module}.{self.qualname}"
        """``{module}.{qualname}``: the family's identity and its cache directory name."""
        self.short_name: str = self.qualname.rsplit(".", 1)[-1]
        self.dirname: str = _UNSAFE_PATH_CHARS.sub("_", self.name)
        self.compress_level = compress_level
        self.queue: str = queue if queue is not None else self.name
        """The queue whose rate limit applies to this family (default: its own)."""
        self.version = version
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._binder: _Binder | None = None
        self._fingerprint: tuple[str, str] | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        binder = self._binder
        if binder is None:
            binder = self._binder = _Binder(self.fn)
        return Task(self, args, kwargs, binder.bind(self, args, kwargs))

    @property
    def signature(self) -> inspect.Signature:
        """The outer function's signature."""
        if self._binder is None:
            self._binder = _Binder(self.fn)
        return self._binder.signature

    @property
    def fingerprint(self) -> tuple[str, str]:
        """``(digest, normalized source)`` of the family's code, computed once per process."""
        if self._fingerprint is None:
            if self.version is not None:
                text = f"# version {self.version}"
                self._fingerprint = ("v:" + self.version, text)
            else:
                self._fingerprint = code_fingerprint(
                    self.fn, is_task=lambda obj: isinstance(obj, TaskFamily)
                )
        return self._fingerprint

    def __reduce_ex__(self, protocol: Any) -> Any:
        # By reference when the module attribute is this very family (a taskfile, a
        # package); by value (the outer function cloudpickled) for __main__ or notebooks.
        module = sys.modules.get(self.module)
        if module is not None and self.module != "__main__" and "<" not in self.qualname:
            obj: Any = module
            for part in self.qualname.split("."):
                obj = getattr(obj, part, None)
            if obj is self:
                return (_family_by_name, (self.module, self.qualname))
        return super().__reduce_ex__(protocol)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_binder"] = None
        state["_fingerprint"] = None
        code = getattr(self.fn, "__code__", None)
        state["_filename"] = code.co_filename if code is not None else ""
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        filename = state.pop("_filename", "")
        self.__dict__.update(state)
        if filename:
            restore_filename(self.fn, filename)

    def clear(self, *, cache_dir: str | None = None) -> None:
        """Discard every stored result and data directory of this family."""
        from .store import Store

        Store.open(cache_dir).clear_family(self.dirname)

    def __repr__(self) -> str:
        return f"<task family {self.name}>"


class Task(Generic[R]):
    """A lazy handle to one task: a family and bound, encoded arguments.

    Creating it is cheap; :meth:`spec` calls the outer function (once) to learn the
    prerequisites; :meth:`run` builds it and its upstream and returns the result.
    """

    __slots__ = ("family", "args", "kwargs", "arguments", "encoded", "id", "_spec", "__weakref__")

    def __init__(
        self,
        family: TaskFamily[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        arguments: dict[str, Any],
    ) -> None:
        self.family = family
        self.args = args
        self.kwargs = kwargs
        self.arguments = arguments
        """Arguments bound to parameter names, defaults applied."""
        self.encoded = encode_arguments(family.name, arguments)
        """Canonical JSON of the arguments (the task's identity within its family)."""
        self.id: TaskId = task_id(family.name, self.encoded)
        self._spec: Spec | None = None

    @property
    def __checkpoint_identity__(self) -> str:
        return f"{self.family.name}:{self.id}"

    def spec(self) -> Spec:
        """Call the outer function (once) and return the inner function and requirements."""
        spec = self._spec
        if spec is None:
            inner = self.family.fn(*self.args, **self.kwargs)
            if isinstance(inner, _Requires):
                spec = Spec(inner.fn, inner.requirements)
            elif callable(inner):
                spec = Spec(inner, [])
            else:
                raise TaskDefinitionError(
                    f"Task {self!r} must return its inner function (the one that computes the "
                    f"result), but its outer function returned {type(inner).__name__}."
                )
            self._spec = spec
        return spec

    def run(
        self,
        executor: Executor | str | None = None,
        max_workers: int | None = None,
        rate_limits: dict[str, int] | None = None,
        **options: Any,
    ) -> R:
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
        from .scheduler import run

        result: RunResult = run(
            [self], executor=executor, max_workers=max_workers, rate_limits=rate_limits, **options
        )
        value: R = result.values[self.id]
        return value

    def clear(self, *, cache_dir: str | None = None) -> None:
        """Discard this task's stored result and data directory; dependents re-run next time."""
        from .store import Store

        Store.open(cache_dir).delete(self.family.dirname, self.id)

    def expression(self, depth: int = 1) -> str:
        """The task as a call expression, e.g. ``choose(6, 3)``."""
        parts = [_arg_repr(a, depth) for a in self.args]
        parts += [f"{k}={_arg_repr(v, depth)}" for k, v in self.kwargs.items()]
        return f"{self.family.short_name}({', '.join(parts)})"

    def __repr__(self) -> str:
        return self.expression()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task, (self.family, self.args, self.kwargs))


def _rebuild_task(family: TaskFamily[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Task[Any]:
    return family(*args, **kwargs)


def _arg_repr(value: Any, depth: int) -> str:
    if isinstance(value, Task):
        return value.expression(depth - 1) if depth > 0 else f"{value.family.short_name}(...)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@overload
def task(fn: Callable[P, Callable[..., R]], /) -> TaskFamily[P, R]: ...


@overload
def task(
    *, compress_level: int = 0, queue: str | None = None, version: str | None = None
) -> Callable[[Callable[P, Callable[..., R]]], TaskFamily[P, R]]: ...


def task(
    fn: Callable[P, Callable[..., R]] | None = None,
    /,
    *,
    compress_level: int = 0,
    queue: str | None = None,
    version: str | None = None,
) -> TaskFamily[P, R] | Callable[[Callable[P, Callable[..., R]]], TaskFamily[P, R]]:
    """Turn an outer function into a task family.

    Use as ``@task`` or ``@task(compress_level=-1, queue="gpu", version="2")``:

    * ``compress_level``: zlib level for stored results (0: none, -1: zlib's default).
    * ``queue``: the queue whose ``rate_limits`` entry caps this family (default: its own).
    * ``version``: pin the code fingerprint; results are reused across code edits until
      the version string changes.
    """
    if fn is not None:
        return TaskFamily(fn, compress_level=compress_level, queue=queue, version=version)

    def decorate(f: Callable[P, Callable[..., R]]) -> TaskFamily[P, R]:
        return TaskFamily(f, compress_level=compress_level, queue=queue, version=version)

    return decorate
